"""20 % of the model's replies are faults, of every kind the fake server knows; the pipeline still
completes, every fault is retried to success or recorded on its row, and the summary counts them.

Faults are dealt round-robin (every fifth request, the kinds in turn) rather than drawn at random,
so that each kind is certain to occur a few times in a small run.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter

import pytest

from magv.config import Settings
from tests.fake_agents import AgentScript
from tests.fakellm import FAULT_KINDS
from tests.reliability_helpers import (
    StageServer,
    duplicate_keys,
    magv_env,
    paid_twice,
    query,
    run_here,
    runs_per_question,
    successful_keys,
)

TRANSPORT = {"timeout", "500", "429", "400", "truncated"}  # the HTTP exchange fails
CONTENT = {"invalid_json", "unknown_tool", "wrong_types", "empty"}  # a reply arrives, unusable
assert set(FAULT_KINDS) == TRANSPORT | CONTENT

# What the responder records for an unusable reply (magv.llm.actions), by fault kind.
INVALID_STEP_ERROR = {
    "invalid_json": "reply is not valid JSON",
    "unknown_tool": "unknown tool 'no_such_tool'",
    "wrong_types": "arguments of ",
    "empty": "empty reply",
}
R = 3
ARGS = ["run", "--json", "--targets", "4", "--per-target", "3", "--questions", "8", "--runs", str(R),
        "--alternates", "2"]  # fmt: skip


class EveryFifth:
    """The scripted agents, with every fifth request answered by a fault, kinds in turn."""

    def __init__(self, inner):
        self.inner = inner
        self.enabled = True
        self.n = itertools.count(1)
        self.kinds = itertools.cycle(FAULT_KINDS)
        self.lock = threading.Lock()

    def __call__(self, body):
        with self.lock:
            kind = next(self.kinds) if self.enabled and next(self.n) % 5 == 0 else None
        reply = self.inner(body)
        return {"fault": kind} if kind else reply


def _step_of(body) -> int:
    """The responder step a request asks for: one assistant message per earlier step."""
    return sum(1 for m in body["messages"] if m["role"] == "assistant")


def _first_user(body) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


@pytest.mark.integration
def test_twenty_percent_faults_of_every_kind_are_retried_or_recorded(
    tmp_path, prefect_harness, monkeypatch, capsys
):
    handler = EveryFifth(AgentScript("retail"))
    with StageServer(handler, latency_s=0.01, timeout_sleep_s=6) as srv:
        env = magv_env(tmp_path, srv.base_url, llm__timeout_s=3, pipeline__chunk_size=4)
        code, out, err = run_here(ARGS, env, monkeypatch, capsys)
        sent = list(srv.faults_sent)
        requests = srv.counts["chat"]
        assert code == 0, err[-3000:]
        _check_faults_are_retried_or_recorded(tmp_path / "magv.duckdb", json.loads(out), sent, requests)

        # A rerun on a healthy server redoes what failed on the model and pays nothing twice.
        db = tmp_path / "magv.duckdb"
        answered = successful_keys(db)
        handler.enabled = False
        srv.reset()
        sent_before = srv.counts["chat"]
        code, out, err = run_here(ARGS, env, monkeypatch, capsys)
        assert code == 0, err[-3000:]
        resent = srv.counts["chat"] - sent_before
    assert query(db, "SELECT count(*) FROM runs WHERE status = 'llm_error'")[0][0] == 0
    failed = query(db, "SELECT error FROM generations WHERE status = 'failed'")
    assert all(e.startswith("unparsable reply") for (e,) in failed)  # same replies again: still unusable
    assert query(db, "SELECT count(*) FROM questions WHERE status = 'failed'")[0][0] == 0
    assert paid_twice(db) == [] and answered < successful_keys(db)
    assert len(successful_keys(db)) - len(answered) == resent  # only unanswered calls were sent
    assert all(n == (1 if origin == "alternate" else R) for origin, n in runs_per_question(db).values())
    # The verifier's rows follow the redone runs: a row for each of a base question's R runs (they are
    # siblings), none for another run; gold labels on the base runs that are stored now.
    mct_runs = {r for (r,) in query(db, "SELECT run_id FROM mct JOIN questions q ON q.id = question_id "
                                        "WHERE q.origin <> 'alternate'")}  # fmt: skip
    base_runs = {r for (r,) in query(db, "SELECT r.id FROM runs r JOIN questions q ON q.id = r.question_id "
                                         "WHERE q.origin <> 'alternate'")}  # fmt: skip
    assert {r for (r,) in query(db, "SELECT run_id FROM features")} == base_runs
    assert {r for (r,) in query(db, "SELECT run_id FROM labels WHERE source = 'gold'")} <= base_runs
    assert mct_runs <= base_runs


def _check_faults_are_retried_or_recorded(db, result, sent, requests) -> None:
    summary = result["summary"]

    kinds = Counter(kind for kind, _ in sent)
    assert set(kinds) == set(FAULT_KINDS) and min(kinds.values()) >= 3, kinds
    assert len(sent) == requests // 5

    # Transport faults: each failed attempt was retried (llm_calls.retries) or is the call's error.
    transport = sum(kinds[k] for k in TRANSPORT)
    retries, errors = query(db, "SELECT sum(retries), count(error) FROM llm_calls")[0]
    assert retries + errors == transport
    assert summary["llm_calls"]["retries"] + summary["llm_calls"]["errors"] == transport
    assert errors >= kinds["400"]  # a refused request is not worth retrying: recorded at once
    refused = query(db, "SELECT count(*) FROM llm_calls WHERE error LIKE 'HTTP 400%' AND retries = 0")[0][0]
    assert refused >= 1

    # Unusable replies to the responder: an invalid step on the run, at the step that asked.
    runs = {}
    for text, index, trajectory in query(
        db, "SELECT q.text, r.run_index, r.trajectory FROM runs r JOIN questions q ON q.id = r.question_id"
    ):
        runs.setdefault((text, index), []).append(json.loads(trajectory)["steps"])
    wanted: Counter = Counter()
    for kind, body in sent:
        if kind in CONTENT and "questions" not in json.dumps(body.get("response_format") or {}):
            wanted[(_first_user(body), body["seed"], _step_of(body), kind)] += 1
    assert sum(wanted.values()) >= 4
    for (text, index, step, kind), n in wanted.items():
        matching = [
            steps for steps in runs[(text, index)]
            if len(steps) > step and steps[step]["kind"] == "invalid"
            and steps[step]["error"].startswith(INVALID_STEP_ERROR[kind])
        ]  # fmt: skip
        assert len(matching) >= n, (text, index, step, kind)

    # Unusable lists of questions: asked again once with the reason; a second one fails the
    # generation, recorded on its row.
    retried_prompts = {
        json.loads(r[0])["messages"][0]["content"]
        for r in query(db, "SELECT request FROM llm_calls WHERE role IN ('investigator', 'reverse')")
        if len(json.loads(r[0])["messages"]) == 3
    }
    second_tries = 0
    for kind, body in sent:
        if kind in CONTENT and "questions" in json.dumps(body.get("response_format") or {}):
            if len(body["messages"]) == 1:
                assert body["messages"][0]["content"] in retried_prompts
            else:
                second_tries += 1
    unparsable = query(db, "SELECT count(*) FROM generations WHERE error LIKE 'unparsable reply%'")[0][0]
    assert unparsable == second_tries

    # The summary counts what the rows record.
    n_invalid, n_tool_errors, llm_error_runs = query(
        db, "SELECT sum(n_invalid), sum(n_tool_errors), count(*) FILTER (status = 'llm_error') FROM runs"
    )[0]
    llm_error_generations = query(db, "SELECT count(*) FROM generations WHERE error LIKE 'LLM error%'")[0][0]
    faults = summary["faults"]
    assert faults["invalid_steps"] == n_invalid >= sum(wanted.values())
    assert faults["tool_errors"] == n_tool_errors
    assert faults["llm_errors"] == llm_error_runs + llm_error_generations
    assert (
        llm_error_runs
        == query(db, "SELECT count(*) FROM runs WHERE status = 'llm_error' AND trajectory IS NOT NULL")[0][0]
    )

    # And the pipeline finished: every question answered R (alternates R') times, nothing twice.
    assert all(n == (1 if origin == "alternate" else R) for origin, n in runs_per_question(db).values())
    assert not any(duplicate_keys(db).values())
    stages = result["stages"]
    assert all(s["done"] > 0 for s in stages.values()), stages


def test_a_redone_run_replaces_the_failed_one_and_stale_verdicts_go(tmp_store):
    from magv.models import Label, Question, Run, ToolCall, Trajectory
    from magv.pipeline.base import StageReport
    from magv.pipeline.respond import RespondResult, RunOutcome
    from magv.pipeline.respond import plan as plan_respond
    from magv.pipeline.respond import write as write_respond

    def run(index: int, tool: str | None) -> Run:
        if tool is None:
            t = Trajectory(status="llm_error")
        else:
            t = Trajectory.from_calls([ToolCall(name=tool, arguments={})], "done")
        return Run(id=Run.derive_id("q", index), question_id="q", run_index=index, trajectory=t)

    q = Question(id="q", domain="retail", text="Where is my order?", origin="seed", group_id="g")
    tmp_store.add_questions([q])
    tmp_store.add_selections(
        [{"question_id": "q", "kept": True, "reason": "seed", "cluster": None, "x": 0, "y": 0}]
    )
    outcomes = [
        RunOutcome(run(0, "a"), []),
        RunOutcome(run(1, None), ["HTTP 500"]),
        RunOutcome(run(2, "b"), []),
    ]
    write_respond(tmp_store, None, [RespondResult(q, outcomes)], StageReport("respond"))
    first = Run.derive_id("q", 0)
    assert tmp_store.mct()[0]["run_id"] == first  # a tie between a and b: the earlier run
    tmp_store.write_feature_matrix("1", [first], ["em_mean"], [[1.0]])
    tmp_store.add_labels([Label(run_id=first, source="gold", correct=True),
                          Label(run_id=first, source="human", correct=False)])  # fmt: skip

    class Ctx:  # what plan_respond reads
        settings = Settings(pipeline={"runs": 3})

        @staticmethod
        def domain():
            from magv.domains import load_domain

            return load_domain("retail")

    [item] = plan_respond(tmp_store, Ctx(), alternates=False)
    assert item.run_indices == [1] and item.redo
    write_respond(
        tmp_store, None, [RespondResult(q, [RunOutcome(run(1, "b"), [])], redo=True)], StageReport("respond")
    )
    runs = {r.run_index: r.trajectory.status for r in tmp_store.runs(["q"])}
    assert runs == {0: "ok", 1: "ok", 2: "ok"}
    assert tmp_store.mct()[0]["run_id"] == Run.derive_id("q", 1)  # b now has two of three
    assert tmp_store.features() == []
    assert [(lb.run_id, lb.source) for lb in tmp_store.labels()] == [(first, "human")]
    assert plan_respond(tmp_store, Ctx(), alternates=False) == []
