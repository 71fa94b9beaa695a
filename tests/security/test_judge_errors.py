"""An LLM failure of the judge is never a verdict: not stored, counted as an error (exit 1), asked
again on the next run, and never part of the judge's accuracy."""

from __future__ import annotations

import json

import pytest

from magv.cli import main
from magv.config import DEFAULT_MODEL
from magv.models import JudgeVerdict
from magv.store import Store
from magv.verify.labels import gold_labels
from tests.fakellm import FakeLLMServer
from tests.reliability_helpers import query
from tests.verify_helpers import synthetic_store


def _verdict(req: dict) -> str:
    prompt = req["messages"][-1]["content"]
    return json.dumps({"verdict": "correct" if "get_order" in prompt else "incorrect", "reason": "checked"})


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "data" / "magv.duckdb"
    store = Store(path)
    synthetic_store(store, n_questions=6)
    gold_labels(store)
    store.close()
    monkeypatch.setenv("MAGV_DATABASE", str(path))
    monkeypatch.setenv("MAGV_LLM__RETRIES", "0")
    return path


def _judge(capsys) -> tuple[int, dict, str]:
    capsys.readouterr()
    code = main(["verify", "judge", "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), " ".join(err.split())


def test_a_dead_judge_server_stops_the_judge_names_it_and_saves_no_verdict(db, monkeypatch, capsys):
    """Nobody listens on the judge's endpoint: the judge stops at once saying the server is not
    answering (not that the verdicts are wrong), stores no verdict, and logs the failed call; a
    rerun with a live server judges everything."""
    monkeypatch.setenv("MAGV_LLM__ENDPOINTS", '["http://127.0.0.1:9/v1"]')  # nobody listens
    capsys.readouterr()
    code = main(["verify", "judge", "--json"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "not answering (connection refused) at http://127.0.0.1:9/v1" in err, err
    assert query(db, "SELECT count(*) FROM judge_verdicts") == [(0,)]
    assert query(db, "SELECT count(*) FROM llm_calls WHERE role = 'judge' AND error IS NOT NULL")[0][0] >= 1

    with FakeLLMServer(handler=_verdict) as srv:
        monkeypatch.setenv("MAGV_LLM__ENDPOINTS", json.dumps([srv.base_url]))
        code, out, err = _judge(capsys)
    assert (
        code == 0 and out["judged"] == 6 and out["llm_errors"] == 0 and out["accuracy_vs_labels"] is not None
    )
    assert query(db, "SELECT count(*) FROM judge_verdicts WHERE correct IS NOT NULL AND error IS NULL") == [
        (6,)
    ]


def test_some_failures_keep_the_good_verdicts_and_retry_the_rest(db, monkeypatch, capsys):
    with FakeLLMServer(handler=_verdict, faults={"500": 0.5}, seed=3) as srv:
        monkeypatch.setenv("MAGV_LLM__ENDPOINTS", json.dumps([srv.base_url]))
        code, out, err = _judge(capsys)
    failed = out["llm_errors"]
    assert 0 < failed < 6, out
    assert code == 1 and out["judged"] == 6 - failed and f"{failed} of 6 judgements failed on the LLM" in err
    # The failures are not wrong answers: accuracy is over the answered judgements only.
    with Store(db, read_only=True) as store:
        labels = store.effective_labels()
        stored = store.judge_verdicts()
    right = sum(v.correct == labels[v.run_id].correct for v in stored)
    assert len(stored) == 6 - failed and out["accuracy_vs_labels"] == right / len(stored)
    assert query(db, "SELECT count(*) FROM judge_verdicts") == [(6 - failed,)]
    with FakeLLMServer(handler=_verdict) as srv:
        monkeypatch.setenv("MAGV_LLM__ENDPOINTS", json.dumps([srv.base_url]))
        code, out, _ = _judge(capsys)
        assert srv.counts["chat"] == failed  # only the failed ones are asked again
    assert code == 0 and out["judged"] == failed


def test_a_stored_llm_failure_of_an_older_version_is_retried_and_replaced(db, monkeypatch, capsys):
    with Store(db) as store:
        run_id = store.mct()[0]["run_id"]
        store.add_judge_verdicts([JudgeVerdict(run_id=run_id, model=DEFAULT_MODEL, correct=None, reason="",
                                               error="LLM error: connection refused")])  # fmt: skip
    with FakeLLMServer(handler=_verdict) as srv:
        monkeypatch.setenv("MAGV_LLM__ENDPOINTS", json.dumps([srv.base_url]))
        code, out, _ = _judge(capsys)
    assert code == 0 and out["judged"] == 6
    assert query(db, "SELECT correct IS NOT NULL, error FROM judge_verdicts WHERE run_id = ?", [run_id]) == [
        (True, None)
    ]
