"""Active learning: which trajectory a human should label next, and what labels buy.

`uncertain_order` puts the verifier's least certain trajectories (|p - threshold| smallest) first
and spreads them over question groups: round-robin over the groups, each group's most uncertain
first, so a session does not spend its labels on the runs of one question. `learning_curve`
replays that choice on rows that are labelled already, to show accuracy against the number of
human labels.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from magv.store import Store


def uncertain_order(
    keys: Sequence[Hashable],
    probabilities: Sequence[float | None],
    groups: Sequence[Hashable],
    threshold: float,
) -> list[Hashable]:
    """`keys` in labelling order: uncertainty first, diversity over groups. A key without a
    probability is least urgent (it is not scored; the verifier has no opinion to correct)."""

    def uncertainty(i: int) -> float:
        p = probabilities[i]
        return float("inf") if p is None else abs(float(p) - threshold)

    ranked = sorted(range(len(keys)), key=lambda i: (uncertainty(i), str(keys[i])))
    scored = [i for i in ranked if probabilities[i] is not None]
    return _round_robin(scored, keys, groups) + _round_robin(
        [i for i in ranked if probabilities[i] is None], keys, groups
    )


def _round_robin(ranked: list[int], keys: Sequence[Hashable], groups: Sequence[Hashable]) -> list[Hashable]:
    """Round-robin over the groups, each group's members in `ranked` order, the groups ordered by
    their first member."""
    buckets: dict[Hashable, list[int]] = {}
    for i in ranked:
        buckets.setdefault(groups[i], []).append(i)
    out: list[Hashable] = []
    depth = 0
    while len(out) < len(ranked):
        out += [keys[q[depth]] for q in buckets.values() if depth < len(q)]
        depth += 1
    return out


def _fit_predict(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, seed: int) -> np.ndarray:
    """P(correct) from logistic regression on the picked rows; one class only: that class."""
    if len(np.unique(y_train)) < 2:
        return np.full(len(X_test), float(y_train[0]) if len(y_train) else 0.5)
    from magv.verify.models import Verifier

    return Verifier("logreg", random_state=seed).fit(X_train, y_train).proba_correct(X_test)


def learning_curve(
    X: np.ndarray,
    y: np.ndarray,
    groups: Sequence[Hashable],
    sizes: Sequence[int] | None = None,
    threshold: float = 0.5,
    seed: int = 0,
    start: int = 4,
) -> dict[str, Any]:
    """Accuracy on the rows not yet picked against the number picked (human labels), for the
    uncertainty-first order and for a random order.

    Uncertainty-first: `start` rows picked at random (the same for both orders), then repeatedly
    logistic regression on the picked rows scores the rest and the next batch (up to the next
    size) is taken by `uncertain_order`. Random: the same first rows, then a seeded shuffle. The
    test rows shrink as n grows; a point needs at least 2 test rows."""
    n = len(y)
    groups = list(groups)
    if sizes is None:
        sizes = sorted(
            {s for s in (start, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256) if start <= s <= n - 2}
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    first = list(order[:start])
    random_order = first + [i for i in order if i not in set(first)]
    picked = list(first)
    points = []
    for size in sizes:
        while len(picked) < size:
            rest = [i for i in range(n) if i not in set(picked)]
            proba = _fit_predict(X[picked], y[picked], X[rest], seed)
            ranked = uncertain_order(rest, list(proba), [groups[i] for i in rest], threshold)
            picked += ranked[: size - len(picked)]
        point = {"labels": size}
        for name, chosen in (("uncertain", picked[:size]), ("random", random_order[:size])):
            test = [i for i in range(n) if i not in set(chosen)]
            if len(test) < 2:
                point[name] = None
                continue
            proba = _fit_predict(X[chosen], y[chosen], X[test], seed)
            point[name] = round(float(np.mean((proba >= threshold) == (y[test] == 1))), 4)
        point["test_rows"] = n - size
        points.append(point)
    return {
        "rows": n,
        "points": points,
        "method": f"simulated on {n} labelled rows: {start} picked at random, then logistic regression on "
        "the picked rows chooses the next by uncertainty (|p - threshold|) round-robin over "
        "question groups; accuracy on the rows not picked; random order for comparison",
    }


def uncertain_annotations(
    store: Store, limit: int | None = None, threshold: float | None = None
) -> list[Any]:
    """What `magv verify annotate --uncertain` shows: the trajectories without a human label, the
    cascade's human queue first, each part in `uncertain_order` of the latest scored verifier's
    probabilities."""
    from magv.verify.labels import pending_annotations

    items = pending_annotations(store)
    model_id = store.scored_model_id()
    preds = {p.run_id: p for p in store.predictions(model_id)} if model_id else {}
    if threshold is None:
        threshold = next((p.threshold for p in preds.values()), 0.5)
    queued = {d["run_id"] for d in store.human_queue()}
    by_run = {item.run.id: item for item in items}
    ordered: list[Any] = []
    for part in ([i for i in items if i.run.id in queued], [i for i in items if i.run.id not in queued]):
        keys = [i.run.id for i in part]
        probabilities = [preds[k].probability if k in preds else None for k in keys]
        groups = [i.question.group_id or i.question.id for i in part]
        ordered += [by_run[k] for k in uncertain_order(keys, probabilities, groups, threshold)]
    return ordered[:limit] if limit is not None else ordered
