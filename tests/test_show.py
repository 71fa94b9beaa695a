"""`magv show ID` on the report fixture store: a question, a run, a call and a pipeline run."""

from __future__ import annotations

import json

import pytest

from magv.cli import main
from magv.store import Store
from tests.report_fixtures import build_report_store


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("show") / "magv.duckdb"
    info = build_report_store(path)
    with Store(path, read_only=True) as store:
        row = store.query(
            "SELECT m.question_id, m.run_id FROM mct m JOIN runs r ON r.id = m.run_id "
            "WHERE r.n_tool_errors > 0 ORDER BY m.run_id LIMIT 1"
        )[0]
        call = store.query("SELECT id FROM llm_calls WHERE role = 'judge' ORDER BY id LIMIT 1")[0]["id"]
    return path, info, row["question_id"], row["run_id"], call


def test_show_question_has_target_runs_and_verdicts(db, capsys):
    path, _, qid, run_id, _ = db
    assert main(["--database", str(path), "show", qid, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "question" and d["id"] == qid and d["target"]
    assert d["mct"]["run_id"] == run_id
    mct = next(r for r in d["runs"] if r["id"] == run_id)
    assert mct["is_mct"] and mct["tool_errors"] and mct["conversation"][0]["text"] == d["text"]
    assert main(["--database", str(path), "show", qid[:10]]) == 0  # a prefix is enough
    out = capsys.readouterr().out
    assert (
        d["text"] in out
        and f"run {run_id}" in out
        and "← tool error: " + mct["tool_errors"][0]["message"] in out
    )


def test_show_run_and_call_and_pipeline_run(db, capsys):
    path, info, qid, run_id, call = db
    assert main(["--database", str(path), "show", run_id]) == 0
    out = capsys.readouterr().out
    assert f"question {qid}" in out and "→ " in out and "answer:" in out and "verifier:" in out
    assert main(["--database", str(path), "show", call, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "call" and d["role"] == "judge" and d["request"]["messages"]
    assert main(["--database", str(path), "show", info.pipeline_run_id]) == 0
    out = capsys.readouterr().out
    assert "generate" in out and "error: reply is not a JSON list" in out


def test_show_unknown_or_ambiguous_id_exits_2(db, capsys):
    path, *_ = db
    assert main(["--database", str(path), "show", "zzzz-nothing"]) == 2
    assert "not the id of a question, run" in capsys.readouterr().err
    assert main(["--database", str(path), "show", ""]) == 2
    assert "several ids" in capsys.readouterr().err
