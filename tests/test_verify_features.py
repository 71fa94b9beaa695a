"""Feature values pinned on hand-built trajectories, and the feature stage over a store."""

from __future__ import annotations

import numpy as np
import pytest

from magv.errors import BadInput, RunFailed
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


def test_own_features_count_steps_errors_and_invalid_replies():
    t = Trajectory(
        steps=[Step(call=ToolCall(name="a")), Step(call=ToolCall(name="b"), error="boom"), Step(kind="invalid", raw="?")],
        response=" \u00a0\n",
    )  # fmt: skip
    v = F.own_features(t)
    assert (v["n_steps"], v["n_calls"], v["n_tool_errors"], v["n_invalid"]) == (3, 2, 1, 1)
    assert v["has_response"] == 0.0 and v["status_ok"] == 1.0


def test_aggregate_and_neutral_values():
    rows = [{"em": 1.0}, {"em": 0.0}, {"em": 1.0}]
    assert F.aggregate(rows, ["em"]) == {"em_mean": pytest.approx(2 / 3), "em_min": 0.0, "em_max": 1.0}
    assert F.aggregate([], ["em"], "sibling_") == {
        f"sibling_em_{a}": F.NEUTRAL for a in ("mean", "min", "max")
    }


def _reference_row(i, ts, keys, embedder, questions=None, alternates=None, write_tools=frozenset()):
    """Row i spelled out with the readable definitions, one pair at a time: what the featurizer's
    batched computation must give."""
    from collections import Counter

    def sim(a, b):
        if embedder is None:
            return F.NEUTRAL
        u, v = embedder.embed([a, b])
        norms = np.linalg.norm(u) * np.linalg.norm(v)
        return float(np.clip(np.dot(u, v) / norms, -1, 1)) if norms else 0.0  # a blank text: 0

    def pairs(t, others):
        out = []
        for o in others:
            row, exact = F.pair_features(t, o, write_tools=write_tools, ss=sim(F.serialise(t), F.serialise(o)),
                                         response_sim=sim(t.response or "", o.response or ""))  # fmt: skip
            out.append((row, exact))
        return out

    t, key = ts[i], keys[i]
    group = [ts[j] for j in range(len(ts)) if keys[j] == key]
    siblings = [ts[j] for j in range(len(ts)) if keys[j] == key and j != i]
    signatures = Counter(g.signature() for g in group)
    usable = Counter(g.signature() for g in group if g.status != "llm_error")
    top = max(usable.values())
    mct = min(s for s, n in usable.items() if n == top)  # a tie: the smallest signature
    sib = pairs(t, siblings)
    alts = [a for a in (alternates or {}).get(key, []) if a.trajectories]
    alt = pairs(t, [o for a in alts for o in a.trajectories])
    row = {**F.own_features(t, write_tools), "n_runs": len(group), "n_distinct": len(signatures),
           "distinct_ratio": len(signatures) / len(group), "is_mct": float(t.signature() == mct),
           "mct_share": top / len(group), "signature_share": signatures[t.signature()] / len(group)}  # fmt: skip
    for name, test in (("calls", lambda r: r["edit"] == 0), ("arguments", lambda r: r["arg_agreement"] == 1),
                       ("writes", lambda r: r["write_agreement"] == 1)):  # fmt: skip
        row[f"sibling_same_{name}"] = float(np.mean([test(r) for r, _ in sib])) if sib else F.NEUTRAL

    def writes(x):
        return [c.canonical() for c in x.calls if c.name in write_tools]

    row["sibling_same_write_sequence"] = (
        float(np.mean([writes(o) == writes(t) for o in siblings])) if siblings else F.NEUTRAL
    )
    write_sets = Counter(tuple(sorted(writes(g))) for g in group)
    mode = min(w for w, n in write_sets.items() if n == max(write_sets.values()))
    row["is_write_mode"] = float(tuple(sorted(writes(t))) == mode) if siblings else F.NEUTRAL
    row.update(F.aggregate([r for r, _ in sib], F.PAIR_FEATURES, "sibling_"))
    row.update(F.aggregate([r for r, _ in alt], F.PAIR_FEATURES))
    question = (questions or {}).get(key)
    q_rows = [{"question_sim": sim(question, a.question)} for a in alts] if question is not None else []
    row.update(F.aggregate(q_rows, ["question_sim"]))
    row.update(
        n_alternates=len(alts), n_alternate_runs=len(alt), gedit_exact=float(all(e for _, e in sib + alt))
    )
    return [row[name] for name in F.FEATURE_NAMES]


def _plain_case():
    errors = Trajectory(steps=[Step(call=ToolCall(name="get_order", arguments={"order_id": 7}), error="boom"),
                               Step(kind="invalid", raw="{oops"),
                               Step(call=ToolCall(name="cancel_order", arguments={"order_id": 7}))],
                        response=" \u00a0\n")  # fmt: skip
    ts = [
        traj("get_order", "cancel_order", order_id=7),
        errors,
        traj("get_order", "cancel_order", order_id=7),
        traj("get_order", "cancel_order", order_id=8, response="cancelled 8"),
        traj("find_customer", response=None),
        traj("find_customer", "get_order"),
        traj("list_orders"),
    ]
    keys = ["t1", "t1", "t1", "t1", "t2", "t2", "t3"]
    questions = {"t1": "cancel order 7", "t2": "who am I"}
    alternates = {
        "t1": [F.Alternate("please cancel order 7", [traj("cancel_order", order_id=7), errors]),
               F.Alternate("stop order 7", [traj("get_order", "cancel_order", order_id=7)]),
               F.Alternate("no runs", [])],
        "t3": [F.Alternate("list my orders", [traj("list_orders")])],
    }  # fmt: skip
    return ts, keys, questions, alternates


@pytest.mark.parametrize("with_embedder", [True, False])
def test_featurizer_on_plain_trajectories_matches_the_readable_definition(with_embedder):
    """No store: trajectories, their groups, questions and alternates in, a row per trajectory out,
    equal to the pair-at-a-time definition (siblings, alternates, write tools, NEUTRAL where there
    is nothing to compare with)."""
    ts, keys, questions, alternates = _plain_case()
    embedder = HashEmbedder() if with_embedder else None
    writes = frozenset({"cancel_order"})
    X = F.TrajectoryFeaturizer(embedder, write_tools=writes).transform(
        ts, keys, questions=questions, alternates=alternates
    )
    assert X.shape == (len(ts), len(F.FEATURE_NAMES))
    assert list(F.TrajectoryFeaturizer().get_feature_names_out()) == list(F.FEATURE_NAMES)
    assert len(set(F.FEATURE_NAMES)) == len(F.FEATURE_NAMES)
    for i in range(len(ts)):
        expected = _reference_row(i, ts, keys, embedder, questions, alternates, writes)
        for name, got, want in zip(F.FEATURE_NAMES, X[i], expected, strict=True):
            assert got == pytest.approx(want, abs=1e-6), (i, name)
    col = {n: k for k, n in enumerate(F.FEATURE_NAMES)}
    assert X[1, col["is_mct"]] == 1.0 and X[3, col["is_mct"]] == 0.0  # 1 makes the same calls as 0
    assert X[0, col["n_alternates"]] == 2 and X[0, col["n_alternate_runs"]] == 3
    assert (
        X[6, col["n_runs"]] == 1 and X[6, col["sibling_em_mean"]] == F.NEUTRAL and X[6, col["em_min"]] == 1.0
    )
    # dicts in the shape of a Trajectory work as well; rows picks and orders the rows computed
    as_dicts = [t.model_dump() for t in ts]
    rows = F.TrajectoryFeaturizer(embedder, write_tools=writes).transform(
        as_dicts, keys, questions=questions, alternates=alternates, rows=[5, 0]
    )
    np.testing.assert_allclose(rows, X[[5, 0]])


def test_featurizer_refuses_mismatched_input():
    with pytest.raises(BadInput, match="2 keys for 1 trajectories"):
        F.TrajectoryFeaturizer().transform([traj("a")], ["x", "y"])
    with pytest.raises(BadInput, match=r"trajectories\[0\]: expected a Trajectory"):
        F.TrajectoryFeaturizer().transform(["get_order"])
    with pytest.raises(BadInput, match=r"trajectories\[0\]: not a trajectory"):
        F.TrajectoryFeaturizer().transform([{"steps": "none"}])


def test_verifier_trains_on_featurized_plain_trajectories():
    """The README's use: own trajectories and labels, no database."""
    from magv.verify import TrajectoryFeaturizer, Verifier

    rng = np.random.default_rng(0)
    ts, keys, labels = [], [], []
    for task in range(40):
        good = rng.random() < 0.5
        for trial in range(4):
            wrong = not good and trial == 0  # a run its siblings disagree with
            ts.append(traj("find_customer", "refund" if wrong else "get_order", order_id=task))
            keys.append(f"task{task}")
            labels.append(int(not wrong))
    X = TrajectoryFeaturizer().transform(ts, groups=keys)
    v = Verifier("logreg").fit(X, labels)
    assert v.predict_proba(X).shape == (len(ts), 2) and v.score(X, labels) > 0.9


def test_compute_features_writes_one_row_per_run_with_siblings(tmp_store):
    synthetic_store(tmp_store, n_questions=12)
    embedder = HashEmbedder()
    # 12 questions x 3 runs; alternates have one run each and no siblings: no row for them
    assert F.compute_features(tmp_store, embedder) == 36
    rows = {r.run_id: r.values for r in tmp_store.features(F.FEATURE_VERSION)}
    base_runs = {r.id for r in tmp_store.runs() if "_a" not in r.question_id}
    assert set(rows) == base_runs
    assert all(r["n_alternates"] == 2 and r["n_runs"] == 3 for r in rows.values())
    assert all(0.0 <= r["gedit_mean"] <= 1.0 for r in rows.values())
    mct = {m["run_id"] for m in tmp_store.mct()}
    assert all(rows[r]["is_mct"] == 1.0 for r in mct)
    # A rerun has nothing to do; --replace recomputes everything.
    calls = embedder.calls
    assert F.compute_features(tmp_store, embedder) == 0 and embedder.calls == calls
    assert F.compute_features(tmp_store, embedder, replace=True) == 36
    # Without alternates no embedder is needed and the alternate and embedding features are neutral.
    assert F.compute_features(tmp_store, None, alternates=False) == 36
    row = tmp_store.features(F.FEATURE_VERSION)[0].values
    assert row["n_alternates"] == 0 and row["ss_mean"] == F.NEUTRAL and row["sibling_ss_mean"] == F.NEUTRAL
    assert row["gedit_exact"] == 1.0


def test_mct_only_writes_the_papers_rows(tmp_store):
    synthetic_store(tmp_store, n_questions=12)
    assert F.compute_features(tmp_store, HashEmbedder(), mct_only=True) == 12
    assert {f.run_id for f in tmp_store.features(F.FEATURE_VERSION)} == {m["run_id"] for m in tmp_store.mct()}
    # the other runs' rows come later without changing the MCTs' (the same definitions)
    before = {f.run_id: f.values for f in tmp_store.features(F.FEATURE_VERSION)}
    assert F.compute_features(tmp_store, HashEmbedder()) == 24
    after = {f.run_id: f.values for f in tmp_store.features(F.FEATURE_VERSION)}
    assert all(after[r] == pytest.approx(before[r]) for r in before)


def test_features_follow_the_distant_supervision_signal(tmp_store):
    truth = synthetic_store(tmp_store, n_questions=60)
    F.compute_features(tmp_store, HashEmbedder())
    mct = {m["run_id"]: m["question_id"] for m in tmp_store.mct()}
    em = {True: [], False: []}
    for f in tmp_store.features(F.FEATURE_VERSION):
        if f.run_id in mct:
            em[truth[mct[f.run_id]]].append(f.values["em_mean"])
    assert np.mean(em[True]) > np.mean(em[False]) + 0.2


@pytest.mark.slow
def test_semantic_similarity_with_the_real_sentence_model():
    from magv.config import Settings
    from magv.llm.embeddings import Embedder

    featurizer = F.TrajectoryFeaturizer(Embedder(Settings()))
    base = traj("get_order", order_id=1042)
    alternates = {"q": [F.Alternate("Can you tell me where order 1042 is?", [traj("get_order", order_id=1042)])],
                  "far": [F.Alternate("I want to reset my password.", [traj("get_order", order_id=1042)])]}  # fmt: skip
    X = featurizer.transform([base, base], ["q", "far"], alternates=alternates,
                             questions={"q": "Where is my order 1042?", "far": "Where is my order 1042?"})  # fmt: skip
    col = {n: k for k, n in enumerate(F.FEATURE_NAMES)}
    assert X[0, col["question_sim_mean"]] > X[1, col["question_sim_mean"]] + 0.2
    assert X[0, col["ss_mean"]] == pytest.approx(1.0, abs=1e-5)


def test_stage_rows_equal_the_featurizer_on_a_store_with_awkward_cases(tmp_store):
    """The stage's rows equal the readable definition on a store with several alternates with
    several runs, an alternate without runs, a question without an MCT row, a blank response,
    tool errors and invalid steps, write tools, and imported trials of one task grouped by
    group_id."""
    synthetic_store(tmp_store, n_questions=6, alternates=3)
    ts, _, _, _ = _plain_case()
    extra_q = [
        Question(id="x1", domain="retail", text="cancel order 7", origin="investigator", group_id="gx"),
        Question(id="x1_a0", domain="retail", text="please cancel order 7", origin="alternate", parent_id="x1",
                 group_id="gx"),
        Question(id="x1_a1", domain="retail", text="stop order 7", origin="alternate", parent_id="x1", group_id="gx"),
        Question(id="x1_a2", domain="retail", text="no runs", origin="alternate", parent_id="x1", group_id="gx"),
        Question(id="i1", domain="elsewhere", text="who am I", origin="import", group_id="task"),
        Question(id="i2", domain="elsewhere", text="tell me who I am", origin="import", group_id="task"),
    ]  # fmt: skip
    extra_runs = [Run(id=f"x1r{k}", question_id="x1", run_index=k, trajectory=ts[k]) for k in range(4)] + [
        Run(id="x1a0r0", question_id="x1_a0", run_index=0, trajectory=traj("cancel_order", order_id=7)),
        Run(id="x1a0r1", question_id="x1_a0", run_index=1, trajectory=ts[1]),
        Run(id="x1a1r0", question_id="x1_a1", run_index=0, trajectory=ts[0]),
        Run(id="i1r0", question_id="i1", run_index=0, trajectory=ts[4]),
        Run(id="i2r0", question_id="i2", run_index=0, trajectory=ts[5]),
    ]
    tmp_store.add_questions(extra_q)
    tmp_store.add_runs(extra_runs)
    embedder = HashEmbedder()
    # 6 x 3 base runs, x1's 4, x1_a0's 2 (siblings of each other), the task's 2
    assert F.compute_features(tmp_store, embedder) == 18 + 4 + 2 + 2
    got = {f.run_id: f.values for f in tmp_store.features(F.FEATURE_VERSION)}
    writes = F.write_tools_of("retail")
    x1 = [r.trajectory for r in extra_runs[:4]]
    alts = {"x1": [F.Alternate("please cancel order 7", [extra_runs[4].trajectory, extra_runs[5].trajectory]),
                   F.Alternate("stop order 7", [extra_runs[6].trajectory])]}  # fmt: skip
    for k in range(4):
        want = _reference_row(k, x1, ["x1"] * 4, embedder, {"x1": "cancel order 7"}, alts, writes)
        assert [got[f"x1r{k}"][n] for n in F.FEATURE_NAMES] == pytest.approx(want, abs=1e-6), k
    task = [ts[4], ts[5]]
    for k, run_id in enumerate(("i1r0", "i2r0")):
        assert [got[run_id][n] for n in F.FEATURE_NAMES] == pytest.approx(
            _reference_row(k, task, ["task", "task"], embedder), abs=1e-6
        )
    assert got["x1r1"]["has_response"] == 0.0 and got["x1r1"]["n_tool_errors"] == 1
    assert got["x1a0r0"]["n_runs"] == 2 and got["x1a0r0"]["n_alternates"] == 0


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
    assert F.compute_features(tmp_store, embedder, replace=True) == 36
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


def test_own_content_features_count_errors_retries_repeats_writes_and_calls_after_the_response():
    def get(n):
        return ToolCall(name="get_order", arguments={"order_id": n})

    refund = ToolCall(name="refund", arguments={"order_id": 1})
    t = Trajectory(
        steps=[
            Step(call=get(1), result={"id": 1}),
            Step(call=get(1), result={"id": 1}),  # the same call, the same answer: repeated and stagnant
            Step(call=refund, error="Error: amount too large"),
            Step(
                call=ToolCall(name="refund", arguments={"order_id": 1, "amount": 5}), result="ok"
            ),  # a retry
            Step(call=get(1), result={"id": 1, "refunded": 5}),  # repeated, but new information
            Step(call=ToolCall(name="transfer"), error="Error: nobody there"),  # after the response, failed
        ],
        response="I refunded five dollars.",
        response_at=5,
    )
    v = F.own_features(t, frozenset({"refund"}))
    assert (v["n_calls"], v["n_tool_errors"], v["tool_error_share"]) == (6, 2, 2 / 6)
    assert v["error_at_end"] == 1.0 and v["n_retries"] == 1.0
    assert (v["n_repeated_calls"], v["n_stagnant_calls"], v["n_distinct_tools"]) == (2, 1, 3)
    assert (v["n_writes"], v["n_write_errors"]) == (2, 1)
    assert v["calls_after_response"] == 1.0 and v["response_words"] == pytest.approx(np.log1p(4))
    # no writes known: nothing counts as one; a plain run has none of the signals
    assert F.own_features(t)["n_writes"] == 0.0
    plain = F.own_features(traj("get_order", order_id=1, response="here it is"))
    assert [plain[k] for k in ("tool_error_share", "error_at_end", "n_retries", "n_repeated_calls",
                               "n_stagnant_calls", "calls_after_response")] == [0.0] * 6  # fmt: skip


def _writes_group():
    cancel = {"cancel_order"}
    ts = [
        traj("get_order", "cancel_order", order_id=7, response="cancelled"),
        traj("get_order", "cancel_order", order_id=7, response="done, cancelled"),
        traj("get_order", "cancel_order", order_id=8, response="cancelled 8"),
        traj("get_order", order_id=7, response="it is shipped"),
    ]
    return ts, cancel


def test_write_set_agreement_with_siblings_by_hand():
    ts, writes = _writes_group()
    X = F.TrajectoryFeaturizer(write_tools=writes).transform(ts, ["g"] * 4)
    col = {n: X[:, F.FEATURE_NAMES.index(n)] for n in F.FEATURE_NAMES}
    # run 0 writes cancel(7): run 1 does the same, run 2 cancels 8, run 3 writes nothing
    assert col["sibling_same_writes"].tolist() == [1 / 3, 1 / 3, 0.0, 0.0]
    assert col["sibling_same_write_sequence"].tolist() == [1 / 3, 1 / 3, 0.0, 0.0]
    assert col["is_write_mode"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert col["n_writes"].tolist() == [1.0, 1.0, 1.0, 0.0]
    # a lone conversation has nobody to agree with
    lone = F.TrajectoryFeaturizer(write_tools=writes).transform(ts[:1])
    assert lone[0, F.FEATURE_NAMES.index("is_write_mode")] == F.NEUTRAL
    assert lone[0, F.FEATURE_NAMES.index("sibling_same_write_sequence")] == F.NEUTRAL


def test_rows_do_not_depend_on_the_order_siblings_are_listed_in():
    """Two signatures tie 2-2: the MCT is the one with the smaller signature, whichever run is
    listed first, and every row is the same bit for bit in any order."""
    a = [traj("get_order", "cancel_order", order_id=7, response=f"cancelled ({i})") for i in range(2)]
    b = [traj("get_order", "refund", order_id=7, response=f"refunded ({i})") for i in range(2)]
    c = traj("list_orders", response="here are your orders")
    ts = [*a, *b, c, traj("get_order", order_id=1), traj("get_order", order_id=2)]
    keys = ["g"] * 5 + ["h"] * 2
    featurizer = F.TrajectoryFeaturizer(HashEmbedder(), write_tools={"cancel_order", "refund"})
    X = featurizer.transform(ts, keys)
    smaller = min(a[0].signature(), b[0].signature())
    is_mct = X[:, F.FEATURE_NAMES.index("is_mct")]
    assert is_mct[:5].tolist() == [float(t.signature() == smaller) for t in ts[:5]]
    assert is_mct[:4].sum() == 2.0
    rng = np.random.default_rng(0)
    for _ in range(6):
        order = rng.permutation(len(ts))
        again = featurizer.transform([ts[i] for i in order], [keys[i] for i in order])
        back = np.empty_like(again)
        back[order] = again
        assert np.array_equal(back, X)


def test_a_model_without_embedding_features_needs_no_embedder():
    assert F.needs_embeddings(["n_calls", "sibling_ss_mean"])
    assert F.needs_embeddings(["question_sim_max"]) and F.needs_embeddings(["response_sim_min"])
    assert not F.needs_embeddings(["n_calls", "sibling_edit_mean", "response_words", "sibling_same_writes"])
