"""Demonstrations: which trajectories count as verified, nearest-neighbour lookup without leakage,
and the respond stage putting them into the responder's prompt (over real HTTP)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from magv.config import Settings
from magv.demonstrations import DemonstrationIndex, Example, seed_examples, verified_examples
from magv.domains import load_domain
from magv.models import Label, Prediction, Question, Run, ToolCall, Trajectory
from magv.pipeline.respond import RespondItem
from magv.pipeline.respond import plan as plan_respond
from magv.pipeline.respond import work as work_respond
from magv.pipeline.worker import WorkerContext, close_resources, run_chunk, use_local_recorder
from tests.fakellm import FakeLLMServer
from tests.store_helpers import write_predictions
from tests.verify_helpers import HashEmbedder

DEMO_BLOCK = re.compile(r"Solved examples of similar questions:\n(.*)\Z", re.S)


def demo_questions(system_prompt: str) -> list[str]:
    """The questions of the demonstrations a rendered responder prompt shows."""
    match = DEMO_BLOCK.search(system_prompt)
    if not match:
        return []
    return [
        line[len("Question: ") :] for line in match.group(1).splitlines() if line.startswith("Question: ")
    ]


def _question(
    qid: str, group: str, text: str, origin: str = "investigator", domain: str = "retail"
) -> Question:
    return Question(id=qid, domain=domain, text=text, origin=origin, group_id=group,
                    parent_id="qa" if origin == "alternate" else None)  # fmt: skip


def _run(qid: str, index: int = 0, tool: str = "find_customer_by_email") -> Run:
    calls = [ToolCall(name=tool, arguments={"email": f"{qid}@example.com"})]
    return Run(id=Run.derive_id(qid, index), question_id=qid, run_index=index,
               trajectory=Trajectory.from_calls(calls, response="ok"))  # fmt: skip


def _verified_store(store) -> None:
    """q-ver: verifier yes; q-low: verifier no; q-human: verifier no but a person says correct;
    q-veto: verifier yes but a person says wrong; q-gold: only a gold label; an alternate, a
    question of another domain and a non-MCT run, all scored high; q-empty: scored high, no calls."""
    questions = [
        _question("q-ver", "g1", "Where is my order?"), _question("q-low", "g2", "Cancel my order"),
        _question("q-human", "g3", "Change my address"), _question("q-veto", "g4", "Refund my boots"),
        _question("q-gold", "g5", "Track my parcel"), _question("q-alt", "g1", "Where's the order?", "alternate"),
        _question("q-other", "g6", "Find the error logs", domain="logs"),
        _question("q-empty", "g7", "Just say hello"),
    ]  # fmt: skip
    store.add_questions(questions)
    runs = [_run(q.id) for q in questions] + [_run("q-low", 1)]
    runs[-2] = Run(id=Run.derive_id("q-empty", 0), question_id="q-empty", run_index=0,
                   trajectory=Trajectory(response="hello"))  # fmt: skip
    store.add_runs(runs)
    store.set_mct([{"question_id": q.id, "run_id": Run.derive_id(q.id, 0), "signature": "s", "share": 1.0,
                    "n_runs": 1, "n_distinct": 1} for q in questions])  # fmt: skip
    probability = {"q-ver": 0.9, "q-low": 0.2, "q-human": 0.1, "q-veto": 0.95, "q-alt": 0.99, "q-other": 0.99,
                   "q-empty": 0.99}  # fmt: skip
    preds = [Prediction(run_id=Run.derive_id(q, 0), model_id="m1", probability=p, verdict=p >= 0.5, threshold=0.5)
             for q, p in probability.items()]  # fmt: skip
    preds.append(Prediction(run_id=Run.derive_id("q-low", 1), model_id="m1", probability=0.99, verdict=True,
                            threshold=0.5))  # fmt: skip
    write_predictions(store, preds)
    store.add_labels([
        Label(run_id=Run.derive_id("q-human", 0), source="human", correct=True),
        Label(run_id=Run.derive_id("q-veto", 0), source="human", correct=False),
        Label(run_id=Run.derive_id("q-veto", 0), source="gold", correct=True),
        Label(run_id=Run.derive_id("q-gold", 0), source="gold", correct=True),
    ])  # fmt: skip


def test_verified_means_the_effective_label_or_else_the_verifier_above_threshold(tmp_store):
    _verified_store(tmp_store)
    found = {e.question_id: e for e in verified_examples(tmp_store, "retail")}
    # q-veto: the human "wrong" beats both the verifier and the gold match; q-gold: a label, no score
    assert set(found) == {"q-ver", "q-human", "q-gold"}
    assert found["q-ver"].source == "verifier" and found["q-ver"].score == pytest.approx(0.9)
    assert found["q-human"].source == "human" and found["q-human"].group_id == "g3"
    assert found["q-gold"].source == "gold" and found["q-gold"].score is None
    assert found["q-ver"].calls == [
        ToolCall(name="find_customer_by_email", arguments={"email": "q-ver@example.com"})
    ]
    # a stricter threshold than the one the verifier used drops the 0.9 example
    stricter = verified_examples(tmp_store, "retail", threshold=0.95)
    assert {e.question_id for e in stricter} == {"q-human", "q-gold"}


def _examples() -> list[Example]:
    texts = {
        "g-order": "where is my order it has not arrived",
        "g-cancel": "please cancel my order i do not need it",
        "g-boots": "do you sell hiking boots in size 42",
        "g-address": "change the shipping address of my order",
        "g-refund": "i want a refund for the broken lamp",
    }
    return [Example(question=t, calls=[ToolCall(name="search_products", arguments={"query": g})], question_id=g,
                    group_id=g, source="seed") for g, t in texts.items()]  # fmt: skip


def test_nearest_ranks_by_similarity_and_never_returns_an_excluded_group():
    store = DemonstrationIndex(_examples(), HashEmbedder())
    question = "where is my order it has not arrived yet"
    # without exclusion the question's own family is the nearest: leakage is a real risk here
    assert store.nearest(question, 1)[0].group_id == "g-order"
    picked = store.nearest(question, 3, exclude_groups={"g-order"})
    assert len(picked) == 3 and "g-order" not in {e.group_id for e in picked}
    assert all(isinstance(e, Example) for e in picked)
    # all but one group excluded: only that one is left, however many are asked for
    others = {e.group_id for e in _examples()} - {"g-boots"}
    assert [e.group_id for e in store.nearest(question, 4, exclude_groups=others)] == ["g-boots"]


def test_same_text_is_never_its_own_demo_and_duplicates_fill_one_slot():
    examples = _examples()
    examples.append(Example(question="Where is my order  it has NOT arrived", calls=[], question_id="dup",
                            group_id="other", source="seed"))  # fmt: skip
    store = DemonstrationIndex(examples, HashEmbedder())
    assert len(store) == 5  # the copy with other spacing and case is the same question
    picked = store.nearest("where is my order it has not arrived", 5, exclude_groups=())
    assert "g-order" not in {e.group_id for e in picked} and len(picked) == 4


def test_nothing_is_embedded_without_examples_or_demos():
    embedder = HashEmbedder()
    assert DemonstrationIndex([], embedder).nearest("anything", 3) == []
    assert DemonstrationIndex(_examples(), embedder).nearest("anything", 0) == []
    assert embedder.calls == 0


def test_seed_examples_are_their_own_groups():
    seeds = load_domain("retail").seeds()
    examples = seed_examples(seeds)
    assert [e.group_id for e in examples] == [s.id for s in seeds]
    assert examples[0].calls == seeds[0].trajectory


# -- the respond stage -------------------------------------------------------------------------


def _answer(body: dict) -> dict:
    return {"json": {"answer": "done"}}


def _respond_store(store) -> None:
    """Verified examples in groups g1..g4 and one kept question of group g1 to answer."""
    texts = ["where is my order W1 it is late", "where is my parcel W2 it is late", "cancel order W3 please",
             "where is my order W4 it is late"]  # fmt: skip
    questions = [_question(f"v{i}", f"g{i + 1}", t) for i, t in enumerate(texts)]
    store.add_questions(questions)
    store.add_runs([_run(q.id) for q in questions])
    store.set_mct([{"question_id": q.id, "run_id": Run.derive_id(q.id, 0), "signature": "s", "share": 1.0,
                    "n_runs": 1, "n_distinct": 1} for q in questions])  # fmt: skip
    write_predictions(store, [Prediction(run_id=Run.derive_id(q.id, 0), model_id="m1", probability=0.9, verdict=True,
                                      threshold=0.5) for q in questions])  # fmt: skip
    new = _question("new", "g1", "where is my order W9 it is late")
    store.add_questions([new])
    store.add_selections([{"question_id": q.id, "kept": True, "reason": "kept", "cluster": 0, "x": 0.0, "y": 0.0}
                          for q in [*questions, new]])  # fmt: skip
    store.add_runs([_run("v0", 1), _run("v1", 1), _run("v2", 1), _run("v3", 1)])


def _respond(store, ctx: WorkerContext, items: list[RespondItem]) -> None:
    """The respond stage's work on `items` in this process, its calls logged to `store`."""
    use_local_recorder(store)
    try:
        run_chunk(ctx, items, work_respond)
    finally:
        use_local_recorder(None)
        close_resources()


def test_respond_stage_puts_demos_outside_the_group_into_the_prompt(tmp_store, tmp_path: Path):
    _respond_store(tmp_store)
    with FakeLLMServer(_answer) as srv:
        settings = Settings(database=tmp_store.path, domain_data_dir=tmp_path / "domains",
                            llm={"endpoints": [srv.base_url]},
                            embeddings={"backend": "endpoint", "endpoint": srv.base_url},
                            pipeline={"runs": 2, "demos": 2})  # fmt: skip
        ctx = WorkerContext(settings)
        items = plan_respond(tmp_store, ctx, alternates=False)
        assert [i.question.id for i in items] == ["new"]  # v0..v3 already have their 2 runs
        chosen = items[0].demos
        assert len(chosen) == 2 and "g1" not in {d.group_id for d in chosen}
        _respond(tmp_store, ctx, items)
    assert len(srv.requests) == 2  # two runs, each answers at once
    by_text = {q.text: q.group_id for q in tmp_store.questions()}
    for body in srv.requests:
        shown = demo_questions(body["messages"][0]["content"])
        assert shown == [d.question for d in chosen]
        assert "g1" not in {by_text[t] for t in shown}
        assert body["messages"][1]["content"] == "where is my order W9 it is late"


def test_respond_without_demos_sends_none(tmp_store, tmp_path: Path):
    _respond_store(tmp_store)
    with FakeLLMServer(_answer) as srv:
        settings = Settings(database=tmp_store.path, domain_data_dir=tmp_path / "domains",
                            llm={"endpoints": [srv.base_url]}, pipeline={"runs": 2})  # fmt: skip
        ctx = WorkerContext(settings)
        items = plan_respond(tmp_store, ctx, alternates=False)
        assert items[0].demos == []
        _respond(tmp_store, ctx, items)
        assert srv.counts["embeddings"] == 0
    assert all(demo_questions(b["messages"][0]["content"]) == [] for b in srv.requests)


@pytest.mark.integration
def test_magv_respond_demos_option_reaches_the_prompt(prefect_harness, tmp_path: Path, monkeypatch):
    from magv.cli import main
    from magv.store import Store

    db = tmp_path / "magv.duckdb"
    with Store(db) as store:
        _respond_store(store)
    with FakeLLMServer(_answer) as srv:
        for key, value in {
            "MAGV_LLM__ENDPOINTS": json.dumps([srv.base_url]),
            "MAGV_DATABASE": str(db),
            "MAGV_EMBEDDINGS__BACKEND": "endpoint",
            "MAGV_EMBEDDINGS__ENDPOINT": srv.base_url,
            "MAGV_DOMAIN_DATA_DIR": str(tmp_path / "domains"),
            "MAGV_PIPELINE__RUNS": "2",
        }.items():
            monkeypatch.setenv(key, value)  # fmt: skip
        assert main(["respond", "--demos", "3", "--json"]) == 0
    shown = [demo_questions(b["messages"][0]["content"]) for b in srv.requests]
    assert len(shown) == 2 and all(len(s) == 3 for s in shown)
    assert "where is my order W1 it is late" not in shown[0]  # v0 is in the question's group g1
