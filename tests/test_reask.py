"""Re-asking the user's agent about a conversation the verifier is unsure of (magv/pipeline/reask.py):
a lone conversation gets the agent's runs as siblings, its agreement features stop being neutral,
the budget, band and rate limit hold, a failing agent is recorded and not fatal; through
`magv verify score --input --reask` and `POST /v1/verify` of a service given an agent."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from magv.cli import main
from magv.config import settings_from_dict
from magv.errors import BadInput
from magv.messages import messages_to_trajectory
from magv.pipeline.reask import RateLimit, Reasker, ReaskOptions, parse_band
from magv.pipeline.worker import close_resources
from magv.service.app import create_app, entry_inputs
from magv.service.payload import parse_request
from magv.verify import FEATURE_NAMES
from magv.verify.features import NEUTRAL
from magv.verify.scoring import load_scorer
from tests.fake_agents import AgentScript
from tests.fakellm import FakeLLMServer
from tests.service_helpers import ServedApp, messages, train_model
from tests.verify_helpers import HashEmbedder

QUESTION = "where is my order 7?"

AGENTS = '''
import json

CALLS = ["find_customer", "get_order"]

def _messages(question, names):
    out = [{"role": "user", "content": question}]
    for i, name in enumerate(names):
        out.append({"role": "assistant", "content": None, "tool_calls": [{"id": f"c{i}", "type": "function",
                    "function": {"name": name, "arguments": json.dumps({"order_id": i})}}]})
        out.append({"role": "tool", "tool_call_id": f"c{i}", "content": json.dumps({"ok": True, "i": i})})
    out.append({"role": "assistant", "content": "All done."})
    return out

def agree(task):
    """Answers as the conversation did: the same calls."""
    return {"messages": _messages(task.question, CALLS), "prompt_tokens": 10, "completion_tokens": 3,
             "cost_usd": 0.001}

def scatter(task):
    """Answers each run differently."""
    names = [["refund"], ["cancel_order", "get_product"], ["list_orders"]][task.run_index % 3]
    return _messages(task.question, names)

def broken(task):
    raise RuntimeError("the assistant is down")

async def slow(task):
    """Takes half a minute, and notes in $REASK_CANCELLED_FILE a run cancelled before it answered."""
    import asyncio, os
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        with open(os.environ["REASK_CANCELLED_FILE"], "a") as f:
            f.write(f"{task.run_index}\\n")
        raise
    return _messages(task.question, CALLS)
'''


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return train_model(tmp_path_factory.mktemp("model") / "verifier.skops")


@pytest.fixture(scope="module")
def agents(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("agents") / "reask_agents.py"
    path.write_text(AGENTS)
    return path


@pytest.fixture(scope="module")
def llm():
    """The model endpoints (the reverse engineer's; the agents here call none), so no model is started."""
    with FakeLLMServer(AgentScript()) as srv:
        yield srv.base_url


def _settings(agents: Path, fn: str, llm: str, **extra):
    close_resources()  # a fresh agent per test (the worker's cache is keyed by the settings)
    return settings_from_dict(
        {"responder": {"agent": f"{agents}:{fn}"}, "llm": {"endpoints": [llm]}, "domain": "retail", **extra}
    )


@pytest.fixture(scope="module")
def scorer(model_file):
    return load_scorer(settings_from_dict({}), model_file=model_file, embedder=HashEmbedder())


def _lone(n: int = 1) -> tuple[list, list, dict]:
    ts = [
        messages_to_trajectory(messages(f"{QUESTION} ({i})", ["find_customer", "get_order"]))[0]
        for i in range(n)
    ]
    groups = [("entry", i) for i in range(n)]
    return ts, groups, {g: f"{QUESTION} ({i})" for i, g in enumerate(groups)}


def test_a_lone_conversation_gets_the_agents_runs_as_siblings(scorer, agents, llm):
    ts, groups, questions = _lone()
    before = scorer.score(ts, groups, questions)
    asker = Reasker(_settings(agents, "agree", llm), ReaskOptions(runs=3))
    out = asker.run(scorer, ts, groups, questions, None, before)
    siblings = out.siblings[groups[0]]
    assert len(siblings) == 3 and all(t.tool_names() == ["find_customer", "get_order"] for t in siblings)
    # Alone, the agreement features are neutral; with the agent's runs they are measured.
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    alone = scorer.featurizer.transform(ts, groups, questions=questions)[0]
    together = scorer.featurizer.transform(ts + siblings, groups * 4, questions=questions, rows=[0])[0]
    assert alone[col["n_runs"]] == 1 and alone[col["sibling_em_mean"]] == NEUTRAL
    assert together[col["n_runs"]] == 4 and together[col["sibling_em_mean"]] == 1.0
    note = out.notes[0]
    assert note["reasked"] and note["evidence"] == ["siblings"] and (note["asked"], note["runs"]) == (3, 3)
    assert note["before"]["probability"] == before[0].probability
    assert out.verdicts[0].probability != before[0].probability
    s = out.summary
    assert (s["reasked"], s["questions"], s["agent_runs"], s["agent_failures"]) == (1, 1, 3, 0)
    assert (s["prompt_tokens"], s["completion_tokens"], s["cost_usd"]) == (30, 9, 0.003)
    assert s["agent"]["kind"] == "callable" and s["agent"]["name"].endswith("reask_agents.py:agree")
    # Each run is one call of role agent, for the caller's call log.
    assert len(out.calls) == 3 and {c.role for c in out.calls} == {"agent"}
    assert sorted(c.request["run_index"] for c in out.calls) == [0, 1, 2]
    assert {c.request["question"] for c in out.calls} == {questions[groups[0]]}


def test_alternates_are_written_from_the_answer_asked_of_the_agent_and_scored(scorer, agents, llm):
    ts, groups, questions = _lone()
    before = scorer.score(ts, groups, questions)
    out = Reasker(_settings(agents, "agree", llm), ReaskOptions(runs=2, alternates=2)).run(
        scorer, ts, groups, questions, None, before
    )
    (key,) = groups
    alternates = out.alternates[key]
    assert len(alternates) == 2 and all(a.question.startswith("Alternate") for a in alternates)
    assert all(len(a.trajectories) == 1 for a in alternates)  # pipeline.alternate_runs
    note = out.notes[0]
    assert note["evidence"] == ["siblings", "alternates"] and (
        note["alternates"],
        note["alternate_runs"],
    ) == (2, 2)
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    x = scorer.featurizer.transform(ts + out.siblings[key], groups * 3, questions=questions, rows=[0],
                                    alternates={key: alternates})[0]  # fmt: skip
    assert x[col["n_alternates"]] == 2 and x[col["em_mean"]] == 1.0
    assert x[col["question_sim_mean"]] != NEUTRAL
    roles = sorted(c.role for c in out.calls)
    assert roles == ["agent"] * 4 + ["reverse"]
    assert out.summary["reverse"]["calls"] == 1 and out.summary["reverse"]["alternates"] == 2
    assert out.summary["agent_runs"] == 4 and out.summary["cost_usd"] == 0.004


def test_runs_that_disagree_lower_the_probability(scorer, agents, llm):
    ts, groups, questions = _lone()
    before = scorer.score(ts, groups, questions)
    agreed = Reasker(_settings(agents, "agree", llm), ReaskOptions(runs=3)).run(
        scorer, ts, groups, questions, None, before
    )
    split = Reasker(_settings(agents, "scatter", llm), ReaskOptions(runs=3)).run(
        scorer, ts, groups, questions, None, before
    )
    assert split.verdicts[0].probability < agreed.verdicts[0].probability
    assert split.summary["cost_usd"] is None  # the agent said nothing of its cost


def test_the_budget_and_the_band_are_respected(scorer, agents, llm):
    ts, groups, questions = _lone(3)
    before = scorer.score(ts, groups, questions)
    out = Reasker(_settings(agents, "agree", llm), ReaskOptions(runs=2, max_conversations=2)).run(
        scorer, ts, groups, questions, None, before
    )
    assert [n["reasked"] for n in out.notes].count(True) == 2 and len(out.calls) == 4
    (skipped,) = [n for n in out.notes if not n["reasked"]]
    assert "budget of 2" in skipped["reason"]
    assert out.summary["not_reasked"] == 1
    p = before[0].probability
    low, high = (p + 0.01, 1.0) if p < 0.99 else (0.0, p - 0.01)
    outside = Reasker(_settings(agents, "agree", llm), ReaskOptions(runs=2, band=(low, high))).run(
        scorer, ts, groups, questions, None, before
    )
    assert outside.calls == [] and not any(n["reasked"] for n in outside.notes)
    assert all("outside the band" in n["reason"] for n in outside.notes)
    assert [v.probability for v in outside.verdicts] == [v.probability for v in before]


def test_conversations_of_one_question_are_asked_once_for_all(scorer, agents, llm):
    ts, _, _ = _lone(2)
    groups, questions = ["g", "g"], {"g": QUESTION}
    before = scorer.score(ts, groups, questions)
    out = Reasker(_settings(agents, "agree", llm), ReaskOptions(runs=2)).run(
        scorer, ts, groups, questions, None, before
    )
    assert len(out.calls) == 2 and all(n["reasked"] and n["runs"] == 2 for n in out.notes)
    assert out.summary["questions"] == 1 and out.summary["reasked"] == 2


def test_the_rate_limit_is_shared_across_calls(scorer, agents, llm):
    ts, groups, questions = _lone()
    before = scorer.score(ts, groups, questions)
    rate = RateLimit(per_minute=1)
    asker = Reasker(_settings(agents, "agree", llm), ReaskOptions(runs=1), rate=rate)
    first = asker.run(scorer, ts, groups, questions, None, before)
    second = asker.run(scorer, ts, groups, questions, None, before)
    assert first.notes[0]["reasked"] and not second.notes[0]["reasked"]
    assert "rate limit of 1" in second.notes[0]["reason"] and second.calls == []


def test_an_agent_that_fails_is_recorded_and_the_verdict_says_it_was_not_reasked(scorer, agents, llm):
    ts, groups, questions = _lone()
    before = scorer.score(ts, groups, questions)
    out = Reasker(_settings(agents, "broken", llm), ReaskOptions(runs=2)).run(
        scorer, ts, groups, questions, None, before
    )
    note = out.notes[0]
    assert not note["reasked"] and (note["asked"], note["runs"], note["failed"]) == (2, 0, 2)
    assert "the assistant is down" in note["reason"] and "the agent gave no run" in note["reason"]
    assert out.verdicts[0] == before[0]
    assert out.summary["agent_failures"] == 2 and out.summary["changed"] == 0
    assert len(out.calls) == 2 and all("the assistant is down" in c.error for c in out.calls)


def test_reask_needs_an_agent_and_a_sound_band():
    with pytest.raises(BadInput, match="--agent or --agent-url"):
        Reasker(settings_from_dict({}), ReaskOptions())
    assert parse_band("0.3,0.7") == (0.3, 0.7)
    for bad in ("0.7,0.3", "x", "0.1,0.2,0.3", "0,2"):
        with pytest.raises(BadInput, match="--reask-band"):
            parse_band(bad)


# -- the commands ---------------------------------------------------------------------------------


def _lines(n: int) -> list[dict]:
    return [{"question_id": f"c{i}", "run": 0, "messages": messages(f"{QUESTION} ({i})", ["find_customer", "get_order"])}
            for i in range(n)]  # fmt: skip


def test_score_input_reask_writes_each_conversations_note_and_the_cost(model_file, agents, llm, tmp_path, capsys,
                                                                      monkeypatch):  # fmt: skip
    monkeypatch.setenv("MAGV_LLM__ENDPOINTS", json.dumps([llm]))
    monkeypatch.setenv("MAGV_EMBEDDINGS__BACKEND", "endpoint")
    monkeypatch.setenv("MAGV_EMBEDDINGS__ENDPOINT", llm)
    src = tmp_path / "lone.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in _lines(3)))
    out = tmp_path / "verdicts.jsonl"
    base = [
        "verify",
        "score",
        "--input",
        str(src),
        "--output",
        str(out),
        "--model-file",
        str(model_file),
        "--json",
    ]
    code = main([*base, "--reask", "2", "--reask-max", "2", "--agent", f"{agents}:agree"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["reask"]["reasked"] for r in rows].count(True) == 2
    assert summary["reask"]["reasked"] == 2 and summary["reask"]["agent_runs"] == 4
    assert summary["reask"]["cost_usd"] == 0.004 and summary["reask"]["prompt_tokens"] == 40
    # Without an agent, --reask is refused before any work.
    out.unlink()
    assert main([*base, "--reask", "2"]) == 2
    assert "--agent or --agent-url" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--reask-alternates", "2", "--agent", f"{agents}:agree"]) == 2
    assert "--reask-alternates goes with --reask" in capsys.readouterr().err and not out.exists()


def test_the_service_given_an_agent_scores_a_lone_conversation_with_its_runs(scorer, agents, llm):
    asker = Reasker(_settings(agents, "agree", llm), ReaskOptions(runs=2))
    body = {"messages": messages(QUESTION, ["find_customer", "get_order"])}
    with ServedApp(create_app(scorer)) as plain, ServedApp(create_app(scorer, reasker=asker)) as srv:
        alone = httpx.post(f"{plain.url}/v1/verify", json=body, timeout=30).json()
        asked = httpx.post(f"{srv.url}/v1/verify", json=body, timeout=60).json()
    assert "reask" not in alone
    assert asked["reask"]["reasked"] and asked["reask"]["runs"] == 2
    assert asked["reask"]["before"]["probability"] == alone["probability"]
    assert asked["reask_summary"]["agent_runs"] == 2 and asked["reask_summary"]["prompt_tokens"] == 20
    # The same verdict as scoring the conversation with those runs sent as its siblings.
    entries, _ = parse_request(json.dumps(body).encode(), 10)
    trajectories, _, _, _ = entry_inputs(entries)
    sent = {**body, "siblings": [messages(QUESTION, ["find_customer", "get_order"])] * 2}
    with ServedApp(create_app(scorer)) as plain:
        given = httpx.post(f"{plain.url}/v1/verify", json=sent, timeout=30).json()
    assert asked["probability"] == given["probability"] and len(trajectories) == 1


def test_the_service_stops_asking_the_agent_when_the_client_leaves(scorer, agents, llm, tmp_path, monkeypatch,
                                                                  caplog):  # fmt: skip
    marker = tmp_path / "cancelled.txt"
    monkeypatch.setenv("REASK_CANCELLED_FILE", str(marker))
    asker = Reasker(_settings(agents, "slow", llm), ReaskOptions(runs=2))
    body = {"messages": messages(QUESTION, ["find_customer", "get_order"])}
    with ServedApp(create_app(scorer, reasker=asker)) as srv, caplog.at_level("INFO", logger="magv.service"):
        started = time.perf_counter()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{srv.url}/v1/verify", json=body, timeout=2)
        while (
            len(marker.read_text().split() if marker.exists() else []) < 2
            and time.perf_counter() - started < 20
        ):
            time.sleep(0.05)
        took = time.perf_counter() - started
    # Both runs in flight were cancelled once the client left, long before the agent's 30 s.
    assert sorted(marker.read_text().split()) == ["0", "1"] and took < 20, took
    assert any("client left" in rec.message for rec in caplog.records)


def _scored_store_with_lone_conversations(
    model_file, llm, tmp_path, capsys, monkeypatch
) -> tuple[Path, set[str], set[str]]:
    """A store of 16 labelled imported conversations scored by the tests' verifier, and two lone
    ones (one run each: no siblings, so no row); their question and run ids."""
    from magv.store import Store
    from tests.service_helpers import import_lines

    for key, value in {"MAGV_LLM__ENDPOINTS": json.dumps([llm]), "MAGV_EMBEDDINGS__BACKEND": "endpoint",
                       "MAGV_EMBEDDINGS__ENDPOINT": llm, "MAGV_VERIFY__MODELS_DIR": str(tmp_path / "models"),
                       "MAGV_DOMAIN_DATA_DIR": str(tmp_path / "domains")}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    db = tmp_path / "m.duckdb"
    labelled = [{**x, "label": int(x["question_id"][1:]) % 2 == 0} for x in import_lines(16)]
    src = tmp_path / "logs.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in [*labelled, *_lines(2)]))
    assert main(["--database", str(db), "import", "trajectories", str(src), "--json"]) == 0
    assert main(["--database", str(db), "verify", "features", "--json"]) == 0
    # The verifier of these tests, registered as `magv verify train` would (training here takes minutes).
    from magv.verify import FEATURE_VERSION

    (tmp_path / "models").mkdir()
    path = shutil.copy(model_file, tmp_path / "models" / "test-model.skops")
    with Store(db) as store:
        store.add_verifier_model({"id": "test-model", "name": "logreg", "path": str(path), "metrics": {},
                                  "feature_version": FEATURE_VERSION, "features": list(FEATURE_NAMES)})  # fmt: skip
    assert main(["--database", str(db), "verify", "score", "--model", "test-model", "--json"]) == 0
    capsys.readouterr()
    with Store(db, read_only=True) as store:
        lone = {q.id for q in store.questions(origin="import") if q.text.startswith(QUESTION)}
        lone_runs = {r.id for r in store.runs(list(lone))}
        assert len(lone) == 2 and not (
            {p.run_id for p in store.predictions()} & lone_runs
        )  # no siblings, no row
    return db, lone, lone_runs


def test_the_cascade_reasks_lone_imported_conversations_and_decides_them(model_file, agents, llm, tmp_path, capsys,
                                                                         monkeypatch):  # fmt: skip
    from magv.store import Store

    db, lone, lone_runs = _scored_store_with_lone_conversations(
        model_file, llm, tmp_path, capsys, monkeypatch
    )
    code = main(["--database", str(db), "verify", "cascade", "--reask", "2", "--agent", f"{agents}:agree",
                 "--no-judge", "--no-alternates", "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["reask"]["questions"] == 2 and out["reask"]["runs"] == 4 and out["reask"]["failed"] == 0
    with Store(db, read_only=True) as store:
        runs = store.runs(list(lone))
        assert len(runs) == 6 and sum((r.agent or {}).get("kind") == "callable" for r in runs) == 4
        mct = {m["question_id"]: m["run_id"] for m in store.mct()}
        assert {mct[q] for q in lone} == lone_runs  # the imported conversation stays the one decided
        decided = {d["run_id"] for d in store.cascade_decisions()}
        assert lone_runs <= decided and lone_runs <= {p.run_id for p in store.predictions()}
    # A second cascade finds no lone conversation left to ask.
    assert main(["--database", str(db), "verify", "cascade", "--reask", "2", "--agent", f"{agents}:agree",
                 "--no-judge", "--no-alternates", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["reask"]["questions"] == 0


def test_the_cascade_writes_alternates_of_an_imported_conversation_and_asks_the_agent_them(
    model_file, agents, llm, tmp_path, capsys, monkeypatch
):
    """With --reask, an imported conversation the verifier is unsure of gets alternates written
    from its answer, answered by the user's agent (not magv's responder), and is scored with them."""
    from magv.store import Store
    from magv.verify import FEATURE_VERSION

    db, lone, lone_runs = _scored_store_with_lone_conversations(
        model_file, llm, tmp_path, capsys, monkeypatch
    )
    # margin 0.5 and rule confidence 1.0: neither the verifier nor a rule decides, so alternates are tried
    code = main(["--database", str(db), "verify", "cascade", "--reask", "2", "--agent", f"{agents}:agree",
                 "--no-judge", "--margin", "0.5", "--rule-confidence", "1.0", "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    with Store(db, read_only=True) as store:
        alternates = store.questions(origin="alternate")
        parents = {q.parent_id for q in alternates}
        assert lone <= parents, (parents, lone)
        runs = store.runs([q.id for q in alternates])
        assert runs and all((r.agent or {}).get("kind") == "callable" for r in runs)
        ids, X = store.feature_matrix(FEATURE_VERSION, ["n_alternates"])
        n_alternates = dict(zip(ids, X[:, 0]))
    assert all(n_alternates[r] >= 1 for r in lone_runs), n_alternates  # scored again with them
    assert out["tokens_spent"] > 0 and out["queued_for_human"] == out["trajectories"]
