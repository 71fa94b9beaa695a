"""Exports load back with the same row counts: JSONL through the import path, Parquet into DuckDB,
the OpenAI chat format as valid conversations with every called tool declared."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from magv.cli import main
from magv.definitions import is_verified
from magv.errors import BadInput
from magv.export import PARQUET_COLUMNS, export
from magv.interchange import LINE_FIELDS
from magv.models import Run
from magv.store import Store
from magv.verify.importer import import_trajectories
from tests.report_fixtures import build_report_store


@pytest.fixture(scope="module")
def fixture_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "magv.duckdb"
    info = build_report_store(path, with_eval=False)
    return path, info


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _check_conversation(messages: list[dict]) -> None:
    """OpenAI chat structure: a user question, each tool call answered by its tool message."""
    roles = [m["role"] for m in messages]
    assert roles[roles[0] == "system"] == "user"
    pending: set[str] = set()
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            for call in m["tool_calls"]:
                assert call["type"] == "function" and call["id"] not in pending
                assert isinstance(json.loads(call["function"]["arguments"]), dict)
                pending.add(call["id"])
        elif m["role"] == "tool":
            assert m["tool_call_id"] in pending
            pending.remove(m["tool_call_id"])
            json.loads(m["content"])
    assert not pending


def test_jsonl_is_the_import_format_and_round_trips(fixture_store, tmp_path):
    path, info = fixture_store
    out = tmp_path / "x.jsonl"
    with Store(path, read_only=True) as store:
        result = export(store, "jsonl", out)
        original = {(r.question_id, r.run_index): r.trajectory for r in store.runs()}
    lines = _lines(out)
    # one line per run: the base questions' runs and the alternates' (one run each)
    assert result.rows == len(lines) == info.base_runs + len(info.alternates)
    assert result.questions == len(info.base_questions) and result.alternates == len(info.alternates)
    alternate_lines = [line for line in lines if line["meta"]["origin"] == "alternate"]
    assert {line["question_id"] for line in alternate_lines} == set(info.alternates)
    assert {line["meta"]["parent_question_id"] for line in alternate_lines} <= set(info.base_questions)
    assert all("parent_question_id" not in line["meta"] for line in lines if line not in alternate_lines)
    labelled = 0
    for line in lines:
        assert set(line) == LINE_FIELDS
        _check_conversation(line["messages"])
        trajectory = original[(line["question_id"], line["run"])]
        if trajectory.response is not None and trajectory.status == "ok":
            assert line["messages"][-1] == {"role": "assistant", "content": trajectory.response}
        assert line["meta"]["status"] == trajectory.status
        if line["meta"]["mct"] and line["meta"]["run_id"] in info.labels:
            assert line["label"] == info.labels[line["meta"]["run_id"]]
            assert line["meta"]["score"] == info.predictions[line["meta"]["run_id"]]
            labelled += 1
    assert labelled == len(info.labels)

    with Store(tmp_path / "imported.duckdb") as target:
        imported = import_trajectories(target, out, domain="retail")
        assert imported.runs == len(lines) and imported.labels == len(info.labels)
        assert target.counts()["runs"] == info.base_runs + len(info.alternates)
        assert len(target.questions(origin="alternate")) == len(info.alternates)
        back = {(r.question_id, r.run_index): r.trajectory for r in target.runs()}
        for line in lines:
            got = back[(imported.question_ids[line["question_id"]], line["run"])]
            want = original[(line["question_id"], line["run"])]
            assert [(s.kind, s.call, s.result, s.error, s.raw) for s in got.steps] == \
                   [(s.kind, s.call, s.result, s.error, s.raw) for s in want.steps]  # fmt: skip
            assert (got.response, got.status) == (want.response, want.status)
        # and out again: an imported store exports the lines it was given
        again = tmp_path / "again.jsonl"
        export(target, "jsonl", again)
    by_key = {(x["question_id"], x["run"]): x for x in _lines(again)}
    assert len(by_key) == len(lines)
    for line in lines:
        assert by_key[(line["question_id"], line["run"])]["messages"] == line["messages"]


def test_jsonl_round_trip_restores_the_judge_verdicts_with_their_tokens(fixture_store, tmp_path):
    path, info = fixture_store
    out = tmp_path / "x.jsonl"
    with Store(path, read_only=True) as store:
        export(store, "jsonl", out)
        stored = {v.run_id: v for v in store.judge_verdicts()}
    lines = _lines(out)
    judged = [x for x in lines if x["meta"]["run_id"] in stored]
    assert len(judged) == len(info.judge) > 0
    for line in judged:
        v, meta = stored[line["meta"]["run_id"]], line["meta"]
        assert (meta["judge_correct"], meta["judge_model"]) == (v.correct, v.model)
        tokens = (meta["judge_prompt_tokens"], meta["judge_completion_tokens"])
        assert tokens == (v.prompt_tokens, v.completion_tokens)
        assert v.prompt_tokens > 0
    with_verdict = [x for x in judged if isinstance(x["meta"]["judge_correct"], bool)]
    assert 0 < len(with_verdict) < len(judged)  # the unparsed reply (correct None) is no verdict

    with Store(tmp_path / "imported.duckdb") as target:
        imported = import_trajectories(target, out, domain="retail")
        assert imported.judge_verdicts == len(with_verdict)
        back = {v.run_id: v for v in target.judge_verdicts()}
        assert len(back) == len(with_verdict)
        for line in with_verdict:
            v = back[Run.derive_id(imported.question_ids[line["question_id"]], line["run"])]
            want = stored[line["meta"]["run_id"]]
            assert (v.model, v.correct, v.prompt_tokens, v.completion_tokens) == (
                want.model, want.correct, want.prompt_tokens, want.completion_tokens)  # fmt: skip
        # importing the file again adds nothing, and the store exports the same verdicts
        assert import_trajectories(target, out, domain="retail").judge_verdicts == 0
        again = tmp_path / "again.jsonl"
        export(target, "jsonl", again)
    keys = ("judge_correct", "judge_model", "judge_prompt_tokens", "judge_completion_tokens")
    by_key = {(x["question_id"], x["run"]): x["meta"] for x in _lines(again)}
    for line in with_verdict:
        got = by_key[(line["question_id"], line["run"])]
        assert {k: got[k] for k in keys} == {k: line["meta"][k] for k in keys}


def test_a_judge_verdict_without_tokens_imports_with_zero_and_bad_fields_are_refused(tmp_path):
    line = {"question_id": "q1", "question": "Cancel order 7", "run": 0, "label": True,
            "messages": [{"role": "user", "content": "Cancel order 7"}, {"role": "assistant", "content": "done"}],
            "meta": {"judge_correct": False}}  # fmt: skip
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(line) + "\n")
    with Store(tmp_path / "a.duckdb") as store:
        assert import_trajectories(store, good).judge_verdicts == 1
        [v] = store.judge_verdicts()
        assert (v.model, v.correct, v.prompt_tokens, v.completion_tokens) == ("judge", False, 0, 0)
    for meta, field in (({"judge_correct": True, "judge_prompt_tokens": -3}, "meta.judge_prompt_tokens"),
                        ({"judge_correct": True, "judge_completion_tokens": "9"}, "meta.judge_completion_tokens"),
                        ({"judge_correct": True, "judge_model": 4}, "meta.judge_model")):  # fmt: skip
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({**line, "meta": meta}) + "\n")
        with Store(tmp_path / "b.duckdb") as store:
            with pytest.raises(BadInput, match=rf"bad.jsonl:1: {field}"):
                import_trajectories(store, bad)
            assert store.counts()["runs"] == 0


def test_parquet_loads_into_duckdb_with_the_same_rows(fixture_store, tmp_path):
    path, info = fixture_store
    out = tmp_path / "x.parquet"
    with Store(path, read_only=True) as store:
        result = export(store, "parquet", out)
    con = duckdb.connect()
    total, scored, labelled, mct = con.execute(
        "SELECT count(*), count(score), count(label), count(*) FILTER (WHERE is_mct) FROM read_parquet(?)",
        [str(out)],
    ).fetchone()
    assert result.rows == total == info.base_runs + len(info.alternates)
    links = con.execute(
        "SELECT origin = 'alternate' AS alt, count(*), count(parent_question_id) FROM read_parquet(?) GROUP BY ALL",
        [str(out)],
    ).fetchall()
    assert sorted(links) == [(False, info.base_runs, 0), (True, len(info.alternates), len(info.alternates))]
    assert scored == len(info.predictions) and labelled == len(info.labels) and mct == len(info.mct_runs)
    columns = [r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(out)]).fetchall()]
    assert columns == list(PARQUET_COLUMNS)
    first = con.execute("SELECT messages, tools, n_steps FROM read_parquet(?) LIMIT 1", [str(out)]).fetchone()
    assert json.loads(first[0])[0]["role"] == "user" and isinstance(first[1], list)


def test_openai_format_is_ready_for_fine_tuning(fixture_store, tmp_path):
    path, info = fixture_store
    out = tmp_path / "ft.jsonl"
    with Store(path, read_only=True) as store:
        result = export(store, "openai", out)
    lines = _lines(out)
    with Store(path, read_only=True) as store:
        alternates = store.runs_with_verdicts(store.scored_model_id(), alternates=True)
    verified_alternates = sum(
        bool(is_verified(r["label"], r["score"], r["threshold"]))
        for r in alternates
        if r["origin"] == "alternate"
    )
    # an alternate's run is a training example only where it is verified
    assert result.rows == len(lines) and result.rows + result.skipped == info.base_runs + verified_alternates
    assert result.skipped > 0  # runs that ran out of steps or failed have no final answer
    for line in lines:
        assert set(line) == {"messages", "tools"}
        _check_conversation(line["messages"])
        assert line["messages"][-1]["role"] == "assistant" and line["messages"][-1]["content"]
        declared = {t["function"]["name"] for t in line["tools"]}
        called = {c["function"]["name"] for m in line["messages"] for c in m.get("tool_calls") or []}
        assert called <= declared
        assert "x-magv-grounded" not in json.dumps(line["tools"])  # magv's own keyword stays home
        assert all(m["role"] != "assistant" or m.get("tool_calls") or m is line["messages"][-1]
                   for m in line["messages"])  # fmt: skip


def test_filters_verified_only_and_min_score(fixture_store, tmp_path):
    path, info = fixture_store
    with Store(path, read_only=True) as store:
        verified = export(store, "jsonl", tmp_path / "v.jsonl", verified_only=True)
        scored = export(store, "jsonl", tmp_path / "s.jsonl", min_score=0.6)
        both = export(store, "parquet", tmp_path / "b.parquet", verified_only=True, min_score=0.6)
    # every scored run is labelled in the fixture, so "verified" is its label
    assert verified.rows == sum(info.labels.values())
    assert all(line["label"] for line in _lines(tmp_path / "v.jsonl"))
    assert scored.rows == sum(p >= 0.6 for p in info.predictions.values())
    assert all(line["meta"]["score"] >= 0.6 for line in _lines(tmp_path / "s.jsonl"))
    assert both.rows == sum(info.labels[r] and p >= 0.6 for r, p in info.predictions.items())


def test_a_failed_export_leaves_the_old_file_and_no_temporary(fixture_store, tmp_path, monkeypatch):
    path, _ = fixture_store
    out = tmp_path / "x.jsonl"
    out.write_text("previous export\n")
    import magv.export as module

    calls = {"n": 0}
    real = module._record

    def failing(row, trajectory):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("disk full")
        return real(row, trajectory)

    monkeypatch.setattr(module, "_record", failing)
    with Store(path, read_only=True) as store, pytest.raises(RuntimeError):
        export(store, "jsonl", out)
    assert out.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]


def test_bad_input_names_the_option(fixture_store, tmp_path):
    path, _ = fixture_store
    (tmp_path / "adir").mkdir()
    with Store(path, read_only=True) as store:
        with pytest.raises(BadInput, match="--format: 'csv'"):
            export(store, "csv", tmp_path / "x.csv")
        with pytest.raises(BadInput, match="--min-score: 1.5"):
            export(store, "jsonl", tmp_path / "x.jsonl", min_score=1.5)
        with pytest.raises(BadInput, match="is a directory"):
            export(store, "jsonl", tmp_path / "adir")


def test_command_exports_and_prints_the_path(fixture_store, tmp_path, monkeypatch, capsys):
    path, info = fixture_store
    monkeypatch.setenv("MAGV_DATABASE", str(path))
    assert main(["export", "--format", "parquet", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"] == info.base_runs + len(info.alternates)
    assert Path(printed["path"]) == path.parent / "export" / "magv.parquet"
    assert main(["export", "-f", "jsonl", "--out", "out.jsonl", "--verified-only"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "out.jsonl"
    assert main(["export", "--format", "xml"]) == 2
    assert "--format: 'xml'" in capsys.readouterr().err
