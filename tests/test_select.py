import numpy as np

from magv.pipeline.select import quotas, select


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_quotas_balance_and_redistribute():
    assert quotas({"a": 10, "b": 10}, 6) == {"a": 3, "b": 3}
    # a small group gives its leftover to the others
    assert quotas({"a": 1, "b": 10, "c": 10}, 9) == {"a": 1, "b": 4, "c": 4}
    assert sum(quotas({"a": 2, "b": 2}, 10).values()) == 4


def test_near_duplicates_are_dropped_with_the_reason():
    emb = _unit([[1, 0, 0], [0.999, 0.01, 0], [0, 1, 0], [0, 0, 1]])
    rows = select(["q0", "q1", "q2", "q3"], ["t"] * 4, emb, target_count=10, threshold=0.95)
    by_id = {r["question_id"]: r for r in rows}
    assert not by_id["q1"]["kept"] and "near-duplicate of q0" in by_id["q1"]["reason"]
    assert all(by_id[q]["kept"] for q in ("q0", "q2", "q3"))


def test_keeps_one_per_cluster_balanced_across_targets():
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(4, 16)))
    emb, ids, groups = [], [], []
    for g in range(2):  # two target trajectories, two tight clusters each, 5 questions per cluster
        for c in range(2):
            for i in range(5):
                emb.append(centres[2 * g + c] + 0.05 * rng.normal(size=16))
                ids.append(f"g{g}c{c}i{i}")
                groups.append(f"target{g}")
    rows = select(ids, groups, _unit(emb), target_count=4, threshold=0.999, seed=1)
    kept = [r["question_id"] for r in rows if r["kept"]]
    assert len(kept) == 4
    # each target gets 2, one from each of its clusters
    assert sorted(k[:4] for k in kept) == ["g0c0", "g0c1", "g1c0", "g1c1"]
    assert all(r["reason"] for r in rows)
    assert all(isinstance(r["x"], float) for r in rows)
