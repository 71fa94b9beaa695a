"""The LLM-judge baseline against the fake OpenAI-compatible server (real HTTP)."""

from __future__ import annotations

import json

import pytest

from magv.agents.judge import parse_verdict, pending_judgements, render
from magv.cli import main
from magv.config import load_settings
from magv.store import Store
from magv.verify.labels import gold_labels
from tests.fakellm import FakeLLMServer
from tests.verify_helpers import synthetic_store, traj


@pytest.mark.parametrize(
    ("text", "correct", "error"),
    [
        ('{"verdict": "correct", "reason": "right tools"}', True, None),
        ('{"verdict": "Incorrect", "reason": "wrong order"}', False, None),
        ('Sure! ```json\n{"verdict": "incorrect", "reason": "x"}\n```', False, None),
        ('{"verdict": "maybe", "reason": "x"}', None, "not correct/incorrect"),
        ("I think it is fine", None, "not a JSON object"),
        ("", None, "empty reply"),
    ],
)
def test_parse_verdict(text, correct, error):
    got, _, err = parse_verdict(text)
    assert got is correct
    assert (err is None) if error is None else (error in err)


def test_prompt_shows_question_calls_results_and_response():
    text, name, digest = render("Where is order 5?", traj("get_order", order_id=5, response="It shipped."))
    assert name == "judge" and len(digest) == 16
    assert "Where is order 5?" in text and 'get_order({"order_id":5})' in text and "It shipped." in text


def _by_question(req: dict) -> str:
    prompt = req["messages"][-1]["content"]
    if "customer question 1 " in prompt:
        return "no idea"  # unparsable: stored with correct=None and the error
    return json.dumps({"verdict": "correct" if "get_order" in prompt else "incorrect", "reason": "checked"})


def _judge(store: Store, cfg, url: str) -> list:
    """The judge stage as `magv verify judge` runs it, on every pending trajectory: the verdicts it
    returned (failed ones too; the stage stores the others)."""
    from magv.pipeline import judge as stage
    from magv.pipeline.runner import run_stage
    from magv.pipeline.session import local_session
    from magv.pipeline.worker import close_resources

    got: list = []

    def keep(store, ctx, results, report) -> None:
        stage.write(store, ctx, results, report)
        got.extend(results)

    try:
        with local_session(cfg, store, {"judge": [url]}, "test-judge") as sess:
            run_stage(sess, stage.STAGE, write=keep)
    finally:
        close_resources()
    return got


def test_judge_on_fake_server_stores_verdicts_with_tokens_and_latency(tmp_store):
    synthetic_store(tmp_store, n_questions=6)
    cfg = load_settings(None, pipeline={"concurrency": 3})
    items = pending_judgements(tmp_store, cfg.llm.role("judge")["model"])
    assert len(items) == 6
    with FakeLLMServer(handler=_by_question, latency_s=0.01) as srv:
        assert len(_judge(tmp_store, cfg, srv.base_url)) == 6
        body = srv.requests[0]
    assert body["response_format"]["json_schema"]["name"] == "verdict" and body["temperature"] == 0.0
    stored = {v.run_id: v for v in tmp_store.judge_verdicts()}
    assert len(stored) == 6
    runs = {r.id: r for r in tmp_store.runs()}
    for v in stored.values():
        assert v.prompt_tokens > 0 and v.completion_tokens > 0 and v.latency_s >= 0.01
        if runs[v.run_id].question_id == "q0001":
            assert v.correct is None and "unparsable verdict" in v.error
        else:
            assert v.correct == ("get_order" in runs[v.run_id].trajectory.tool_names()) and v.error is None
    calls = tmp_store.llm_calls(role="judge")
    assert len(calls) == 6 and all(c["template"] == "judge" and c["template_hash"] for c in calls)
    assert pending_judgements(tmp_store, cfg.llm.role("judge")["model"]) == []


def test_llm_failure_is_a_recorded_verdict_not_a_crash(tmp_store):
    synthetic_store(tmp_store, n_questions=2)
    cfg = load_settings(None, llm={"retries": 0})
    with FakeLLMServer(faults={"500": 1.0}) as srv:
        verdicts = _judge(tmp_store, cfg, srv.base_url)
    assert [v.correct for v in verdicts] == [None, None]
    assert all(v.error.startswith("LLM error: HTTP 500") for v in verdicts)
    assert tmp_store.judge_verdicts() == []  # no verdict: both stay pending for the next run


def test_cli_judge_reports_accuracy_and_cost(tmp_path, monkeypatch, capsys):
    store = Store(tmp_path / "data" / "magv.duckdb")
    synthetic_store(store, n_questions=8)
    gold_labels(store)
    store.close()
    with FakeLLMServer(handler=_by_question) as srv:
        monkeypatch.setenv("MAGV_LLM__ENDPOINTS", json.dumps([srv.base_url]))
        assert main(["verify", "judge", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["judged"] == 8 and out["unparsed"] == 1 and out["correct"] + out["incorrect"] == 7
        assert out["prompt_tokens"] > 0 and 0.0 <= out["accuracy_vs_labels"] <= 1.0
        assert main(["verify", "judge", "--json"]) == 0  # everything judged already
        assert json.loads(capsys.readouterr().out)["judged"] == 0
        assert srv.counts["chat"] == 8
    with Store(tmp_path / "data" / "magv.duckdb", read_only=True) as store:
        calls = [c for c in store.llm_calls() if c["role"] == "judge"]
        assert len(calls) == 8  # logged through the store, as every stage's calls are
        assert store.pipeline_runs() == []  # not a pipeline run: the report keeps describing the last one


@pytest.mark.slow
def test_judge_on_the_embedded_model(tmp_store, llama_server):
    """The real gemma-3-270m behind llama.cpp: its verdicts are not good, but they arrive
    schema-constrained, parse, and carry real token counts and latency."""
    synthetic_store(tmp_store, n_questions=2)
    cfg = load_settings(None, llm={"max_tokens": 96}, pipeline={"concurrency": 1})
    verdicts = _judge(tmp_store, cfg, llama_server.url)
    assert len(verdicts) == 2
    for v in verdicts:
        assert v.prompt_tokens > 50 and v.completion_tokens > 0 and v.latency_s > 0
        assert v.correct is not None, v.error  # constrained decoding gives a parsable verdict
