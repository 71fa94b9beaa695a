"""Feature values pinned on hand-built trajectories, and the feature stage over a store."""

from __future__ import annotations

import numpy as np
import pytest

from magv.errors import RunFailed
from magv.models import Question, Run, Step, ToolCall, Trajectory
from magv.store import Store
from magv.verify import features as F
from tests.verify_helpers import HashEmbedder, synthetic_store, traj


def test_identical_trajectories_give_em_1_and_zero_distances():
    a = traj("find_customer", "get_order", "refund", order_id=3)
    b = traj("find_customer", "get_order", "refund", order_id=3)
    values, exact = F.pair_features(a, b, write_tools=frozenset({"refund"}), ss=1.0, response_sim=1.0)
    assert exact
    assert values["em"] == 1.0
    assert values["edit"] == values["call_edit"] == values["gedit"] == 0.0
    assert values["jaccard"] == values["lcs"] == values["arg_agreement"] == values["write_agreement"] == 1.0
    assert F.graph_edit_distance(a, b) == (0.0, True)


def test_known_pair_gives_known_edit_distance_and_ged():
    a, b = traj("A", "B", "C"), traj("A", "C")
    # One deletion turns A B C into A C.
    assert F.name_edit_distance(a, b) == pytest.approx(1 / 3)
    # Graphs START->A->B->C and START->A->C. Cheapest edit: relabel B as C (1), delete node C (1),
    # delete edge B->C (1); A->B then maps onto A->C. Deleting B instead costs 4.
    assert F.graph_edit_distance(a, b) == (3.0, True)
    values, _ = F.pair_features(a, b, ss=0.5, response_sim=0.5)
    # Sizes: 4 nodes + 3 edges and 3 nodes + 2 edges.
    assert values["gedit"] == pytest.approx(3 / 12)
    assert values["em"] == 0.0
    assert values["lcs"] == pytest.approx(2 / 3)
    assert values["jaccard"] == pytest.approx(2 / 3)


def test_argument_and_write_features():
    a = traj("get_order", "refund", order_id=1)
    b = Trajectory.from_calls([ToolCall(name="get_order", arguments={"order_id": 1}),
                               ToolCall(name="refund", arguments={"order_id": 2})])  # fmt: skip
    assert F.call_edit_distance(a, b) == pytest.approx(1 / 2)
    assert F.name_edit_distance(a, b) == 0.0
    assert F.argument_agreement(a, b) == pytest.approx(0.5)  # get_order agrees, refund does not
    assert F.write_agreement(a, b, frozenset({"refund"})) == 0.0
    assert F.write_agreement(a, b, frozenset()) == 1.0  # no writes known: nothing to disagree on
    assert F.argument_agreement(traj("x"), traj("y")) == 0.0
    assert F.argument_agreement(Trajectory(), Trajectory()) == 1.0


def test_large_graphs_use_the_bounded_approximation_and_say_so():
    names = [f"tool_{i}" for i in range(12)]
    a, b = traj(*names), traj(*reversed(names))
    cost, exact = F.graph_edit_distance(a, b)
    assert not exact
    # Every edge is reversed: at least the 11 non-START edges differ; at most rebuild everything.
    assert 11 <= cost <= F.graph_size(a) + F.graph_size(b)
    values, exact = F.pair_features(a, b, ss=0.0, response_sim=0.0)
    assert not exact and 0.0 < values["gedit"] <= 1.0


def test_base_features_count_steps_errors_and_self_consistency():
    t = Trajectory(
        steps=[Step(call=ToolCall(name="a")), Step(call=ToolCall(name="b"), error="boom"), Step(kind="invalid", raw="?")],
        response="ok",
    )  # fmt: skip
    runs = [Run(id=f"r{i}", question_id="q", run_index=i, trajectory=t) for i in range(2)]
    runs.append(Run(id="r2", question_id="q", run_index=2, trajectory=traj("a", "c")))
    v = F.base_features(runs[0], runs)
    assert (v["n_steps"], v["n_calls"], v["n_tool_errors"], v["n_invalid"]) == (3, 2, 1, 1)
    assert v["mct_share"] == pytest.approx(2 / 3) and v["n_distinct"] == 2 and v["n_runs"] == 3
    # Against its twin 0, against a->c 1/2.
    assert v["self_edit_mean"] == pytest.approx(0.25)


def test_aggregate_and_neutral_values():
    rows = [{"em": 1.0}, {"em": 0.0}, {"em": 1.0}]
    assert F.aggregate(rows, ["em"]) == {"em_mean": pytest.approx(2 / 3), "em_min": 0.0, "em_max": 1.0}
    assert F.aggregate([], ["em"]) == {"em_mean": F.NEUTRAL, "em_min": F.NEUTRAL, "em_max": F.NEUTRAL}


def test_verified_features_cover_every_name_and_use_embeddings():
    base_q = Question(id="b", domain="x", text="where is order 5", origin="investigator", group_id="g")
    alt_q = Question(
        id="a", domain="x", text="where is order 5", origin="alternate", parent_id="b", group_id="g"
    )
    mct = Run(id="r", question_id="b", run_index=0, trajectory=traj("get_order", response="shipped"))
    alt = Run(id="ra", question_id="a", run_index=0, trajectory=traj("get_order", response="shipped"))
    emb = F._Embeddings(HashEmbedder(), F._texts(base_q, mct, [(alt_q, [alt])]))
    values = F.verified_features(base_q, mct, [mct], [(alt_q, [alt])], emb)
    assert list(values) == list(F.FEATURE_NAMES)
    assert values["ss_mean"] == pytest.approx(1.0) and values["question_sim_max"] == pytest.approx(1.0)
    assert values["response_sim_min"] == pytest.approx(1.0)
    assert values["n_alternates"] == 1 and values["em_min"] == 1.0


def test_compute_features_stage_writes_one_row_per_verified_trajectory(tmp_store):
    synthetic_store(tmp_store, n_questions=12)
    embedder = HashEmbedder()
    assert F.compute_features(tmp_store, embedder) == 12
    rows = tmp_store.features(F.FEATURE_VERSION)
    assert {r.run_id for r in rows} == {m["run_id"] for m in tmp_store.mct()}
    assert all(r.values["n_alternates"] == 2 for r in rows)
    assert all(0.0 <= r.values["gedit_mean"] <= 1.0 for r in rows)
    # A rerun has nothing to do; --replace recomputes everything.
    calls = embedder.calls
    assert F.compute_features(tmp_store, embedder) == 0 and embedder.calls == calls
    assert F.compute_features(tmp_store, embedder, replace=True) == 12
    # Without alternates no embedder is needed and alternate features are neutral.
    assert F.compute_features(tmp_store, None, alternates=False) == 12
    row = tmp_store.features(F.FEATURE_VERSION)[0].values
    assert row["n_alternates"] == 0 and row["ss_mean"] == F.NEUTRAL and row["gedit_exact"] == 1.0


def test_features_follow_the_distant_supervision_signal(tmp_store):
    truth = synthetic_store(tmp_store, n_questions=60)
    F.compute_features(tmp_store, HashEmbedder())
    mct = {m["run_id"]: m["question_id"] for m in tmp_store.mct()}
    em = {True: [], False: []}
    for f in tmp_store.features(F.FEATURE_VERSION):
        em[truth[mct[f.run_id]]].append(f.values["em_mean"])
    assert np.mean(em[True]) > np.mean(em[False]) + 0.2


@pytest.mark.slow
def test_semantic_similarity_with_the_real_sentence_model():
    from magv.config import Settings
    from magv.llm.embeddings import Embedder

    embedder = Embedder(Settings())
    base_q = Question(id="b", domain="x", text="Where is my order 1042?", origin="investigator", group_id="g")
    near = Question(id="a1", domain="x", text="Can you tell me where order 1042 is?", origin="alternate",
                    parent_id="b", group_id="g")  # fmt: skip
    far = Question(id="a2", domain="x", text="I want to reset my password.", origin="alternate",
                   parent_id="b", group_id="g")  # fmt: skip
    mct = Run(id="r", question_id="b", run_index=0, trajectory=traj("get_order", order_id=1042))
    runs = {a.id: [Run(id=f"r{a.id}", question_id=a.id, run_index=0, trajectory=traj("get_order", order_id=1042))]
            for a in (near, far)}  # fmt: skip
    sims = {}
    for alt in (near, far):
        alts = [(alt, runs[alt.id])]
        emb = F._Embeddings(embedder, F._texts(base_q, mct, alts))
        sims[alt.id] = F.verified_features(base_q, mct, [mct], alts, emb)
    assert sims["a1"]["question_sim_mean"] > sims["a2"]["question_sim_mean"] + 0.2
    assert sims["a1"]["ss_mean"] == pytest.approx(1.0, abs=1e-5)


def _reference_rows(store, embedder) -> dict[str, dict[str, float]]:
    """Every verified trajectory's row from verified_features, one trajectory at a time: the
    readable definition the bulk stage must reproduce."""
    from magv.verify.importer import most_common

    questions = store.questions()
    runs_of: dict[str, list[Run]] = {}
    for run in store.runs():
        runs_of.setdefault(run.question_id, []).append(run)
    mct = {m["question_id"]: m for m in store.mct()}
    out = {}
    for q in questions:
        runs = runs_of.get(q.id, [])
        if q.origin == "alternate" or not runs:
            continue
        row = mct.get(q.id)
        if row is None or row["run_id"] not in {r.id for r in runs}:
            row = most_common(runs)
        chosen = next(r for r in runs if r.id == row["run_id"])
        alts = [(a, runs_of[a.id]) for a in questions if a.parent_id == q.id and a.origin == "alternate"
                and runs_of.get(a.id)]  # fmt: skip
        emb = F._Embeddings(embedder, F._texts(q, chosen, alts)) if alts else None
        out[chosen.id] = F.verified_features(q, chosen, runs, alts, emb, share=row["share"],
                                             write_tools=F.write_tools_of(q.domain))  # fmt: skip
    return out


@pytest.mark.parametrize("stored_calls", ["all", "older store"])
def test_bulk_stage_reproduces_the_per_trajectory_definition(tmp_store, stored_calls):
    """The stage's rows equal verified_features' on a store with every awkward case: several
    alternates with several runs, an alternate without runs, a base without an MCT row, a blank
    response, tool errors and invalid steps, write tools, shared texts and signatures. "older
    store": a store made before runs kept their calls and texts their hashes, reopened; its old runs
    are parsed and its old texts hashed instead."""
    if stored_calls == "older store":
        synthetic_store(tmp_store, n_questions=15, alternates=3)
        tmp_store.con.execute(
            "ALTER TABLE runs DROP COLUMN tools; ALTER TABLE runs DROP COLUMN calls; "
            "ALTER TABLE runs DROP COLUMN response_hash; ALTER TABLE runs DROP COLUMN calls_hash; "
            "ALTER TABLE questions DROP COLUMN text_hash; UPDATE meta SET value = '1' WHERE key = 'schema_version'"
        )  # a file of schema version 1 as magv wrote it before these columns: reopening migrates it
        tmp_store.close()
        tmp_store = Store(tmp_store.path)
        assert tmp_store.scalar("SELECT count(*) FROM runs WHERE calls IS NULL AND response_hash IS NULL") > 0
        assert tmp_store.scalar("SELECT count(*) FROM questions WHERE text_hash IS NULL") > 0
    synthetic_store(tmp_store, n_questions=30, alternates=3)
    extra_q = [
        Question(id="x1", domain="retail", text="cancel order 7", origin="investigator", group_id="gx"),
        Question(id="x1_a0", domain="retail", text="please cancel order 7", origin="alternate", parent_id="x1",
                 group_id="gx"),
        Question(id="x1_a1", domain="retail", text="cancel order 7", origin="alternate", parent_id="x1",
                 group_id="gx"),
        Question(id="x1_a2", domain="retail", text="no runs here", origin="alternate", parent_id="x1",
                 group_id="gx"),
        Question(id="x2", domain="retail", text="nothing voted", origin="investigator", group_id="gy"),
    ]  # fmt: skip
    errors = Trajectory(steps=[Step(call=ToolCall(name="get_order", arguments={"order_id": 7}), error="boom"),
                               Step(kind="invalid", raw="{oops"),
                               Step(call=ToolCall(name="cancel_order", arguments={"order_id": 7}))],
                        response=" \u00a0\n")  # fmt: skip
    extra_runs = [
        Run(id="x1r0", question_id="x1", run_index=0, trajectory=errors),
        Run(
            id="x1r1", question_id="x1", run_index=1, trajectory=traj("get_order", "cancel_order", order_id=7)
        ),
        Run(id="x1r2", question_id="x1", run_index=2, trajectory=errors),
        Run(id="x1a0r0", question_id="x1_a0", run_index=0, trajectory=traj("cancel_order", order_id=7)),
        Run(id="x1a0r1", question_id="x1_a0", run_index=1, trajectory=errors),
        Run(id="x1a1r0", question_id="x1_a1", run_index=0, trajectory=traj(response="sorry")),
        Run(id="x2r0", question_id="x2", run_index=0, trajectory=traj("find_customer", response=None)),
        Run(id="x2r1", question_id="x2", run_index=1, trajectory=traj("find_customer", "get_order")),
    ]
    tmp_store.add_questions(extra_q)
    tmp_store.add_runs(extra_runs)
    from magv.mct import most_common_trajectory

    tmp_store.set_mct([most_common_trajectory(extra_runs[:3])])  # x2 gets no MCT row

    embedder = HashEmbedder()
    expected = _reference_rows(tmp_store, embedder)
    assert F.compute_features(tmp_store, embedder) == len(expected) == 32
    got = {f.run_id: f.values for f in tmp_store.features(F.FEATURE_VERSION)}
    assert set(got) == set(expected)
    assert got["x1r0"]["has_response"] == 0.0 and got["x1r0"]["n_alternates"] == 2
    assert got["x1r0"]["n_alternate_runs"] == 3 and got["x1r0"]["n_tool_errors"] == 1
    for run_id, row in expected.items():
        for name in F.FEATURE_NAMES:
            assert got[run_id][name] == pytest.approx(row[name], abs=1e-6), (run_id, name)
    if stored_calls == "older store":
        tmp_store.close()


class KeyedHashEmbedder(HashEmbedder):
    key = "test:hash-64"


def test_texts_are_embedded_once_per_model_through_the_store(tmp_store):
    synthetic_store(tmp_store, n_questions=12)
    embedder = KeyedHashEmbedder()
    F.compute_features(tmp_store, embedder)
    first = {f.run_id: f.values for f in tmp_store.features(F.FEATURE_VERSION)}
    stored = tmp_store.counts()["embeddings"]
    assert embedder.calls == 1 and stored > 0
    # Recomputing every row needs no new vector: the model is not asked again.
    assert F.compute_features(tmp_store, embedder, replace=True) == 12
    assert embedder.calls == 1 and tmp_store.counts()["embeddings"] == stored
    again = {f.run_id: f.values for f in tmp_store.features(F.FEATURE_VERSION)}
    assert all(again[r][n] == pytest.approx(first[r][n], abs=1e-6) for r in first for n in F.FEATURE_NAMES)
    # An embedder without a key is never cached (its vectors are not known to be stable).
    other = HashEmbedder()
    F.compute_features(tmp_store, other, replace=True)
    assert other.calls == 1 and tmp_store.counts()["embeddings"] == stored


def test_a_stored_vector_of_another_size_is_an_error_not_a_wrong_feature(tmp_store):
    synthetic_store(tmp_store, n_questions=4)
    F.compute_features(tmp_store, KeyedHashEmbedder())
    smaller = KeyedHashEmbedder(dim=8)
    tmp_store.con.execute("DELETE FROM embeddings WHERE rowid % 2 = 0")
    with pytest.raises(RunFailed, match="size"):
        F.compute_features(tmp_store, smaller, replace=True)


def test_graph_edit_distance_enumeration_equals_networkx_on_loop_free_graphs():
    """The exact enumeration used for small tool graphs agrees with networkx's exact search
    wherever networkx is right (graphs without self-loops), on random sequences."""
    import random

    rng = random.Random(7)
    tools = [f"t{i}" for i in range(7)]

    def seq(k):
        out = []
        while len(out) < k:
            t = rng.choice(tools)
            if not out or out[-1] != t:
                out.append(t)
        return tuple(out)

    for _ in range(60):
        a, b = seq(rng.randint(0, 6)), seq(rng.randint(0, 6))
        ga, gb = F.tool_graph(F.Calls(a, a)), F.tool_graph(F.Calls(b, b))
        expected, exact = F._ged(ga, gb, F.GED_EXACT_NODES)
        assert exact and F.graph_edit_distance(F.Calls(a, a), F.Calls(b, b)) == (expected, True), (a, b)


def test_graph_edit_distance_counts_a_repeated_call_as_an_edge():
    """A -> B -> B vs B -> A -> B: START->A, A->B, B->B against START->B, B->A, A->B. Mapping A and
    B to themselves keeps A->B only (4 edge edits); swapping them costs 2 substitutions and keeps
    START->x and x->y (2 edge edits + 2): 4 either way. networkx says 2 (it matches the self-loop
    with another edge), the reason for FEATURE_VERSION 2."""
    a, b = ("A", "B", "B"), ("B", "A", "B")
    assert F.graph_edit_distance(F.Calls(a, a), F.Calls(b, b)) == (4.0, True)


def test_forget_embeddings_command_drops_stored_vectors(tmp_path, capsys, monkeypatch):
    import json

    from magv.cli import main
    from magv.store import Store

    db = tmp_path / "magv.duckdb"
    monkeypatch.setenv("MAGV_DATABASE", str(db))
    with Store(db) as store:
        synthetic_store(store, n_questions=4)
        F.compute_features(store, KeyedHashEmbedder())
        assert store.counts()["embeddings"] > 0
    assert main(["db", "forget-embeddings", "--model", "other:key", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dropped"] == 0
    assert main(["db", "forget-embeddings", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dropped"] > 0
    with Store(db) as store:
        assert store.counts()["embeddings"] == 0
