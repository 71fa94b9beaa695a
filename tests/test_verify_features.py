"""Feature values pinned on hand-built trajectories, and the feature stage over a store."""

from __future__ import annotations

import numpy as np
import pytest

from magv.models import Question, Run, Step, ToolCall, Trajectory
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
