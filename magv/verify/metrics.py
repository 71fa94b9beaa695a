"""Classifier metrics with 95 % intervals from a bootstrap over groups.

Every metric is computed from row weights: the point estimate weighs each row once; a bootstrap
replicate draws the CV groups (question families, tasks) with replacement and weighs each row by how
often its group was drawn. Rows of one group rise and fall together, as they should: they are not
independent evidence. One weight matrix (replicates x rows) serves every scorer evaluated on the
same rows, so differences between two scorers are paired (`difference`).

A scorer is described by three columns over the rows:
- `pred`: its verdict (1 = correct),
- `proba`: its probability of correct (the Brier score's input),
- `score`: what AUROC ranks (the probability for a model; a feature's raw value for a threshold
  rule; the verdict itself for a judge, whose AUROC is then its balanced accuracy).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# The metrics every scorer gets with an interval; precision, recall and F1 are kept as points.
INTERVAL_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "roc_auc", "mcc", "brier")
POINT_METRICS: tuple[str, ...] = ("precision", "recall", "f1")
ALL_METRICS: tuple[str, ...] = (*INTERVAL_METRICS, *POINT_METRICS)
N_BOOTSTRAP = 1000
LEVEL = 0.95
_CELLS = 2_000_000  # replicates x rows weighed at once (16 MB a matrix): memory stays flat on large stores


@dataclass
class ScoreColumns:
    """The columns metrics are computed from, one entry per row (see the module docstring)."""

    pred: np.ndarray
    proba: np.ndarray
    score: np.ndarray

    @classmethod
    def from_proba(cls, proba: np.ndarray, threshold: float = 0.5) -> ScoreColumns:
        p = np.asarray(proba, dtype=np.float64)
        return cls((p >= threshold).astype(np.int64), p, p)

    def take(self, idx: np.ndarray) -> ScoreColumns:
        return ScoreColumns(self.pred[idx], self.proba[idx], self.score[idx])


def confusion(y: list[int], proba: list[float], threshold: float = 0.5) -> list[list[int]]:
    """[[tn, fp], [fn, tp]], the layout of sklearn's confusion_matrix."""
    t = np.asarray(y, dtype=int)
    p = (np.asarray(proba, dtype=float) >= threshold).astype(int)
    return [
        [int(((t == 0) & (p == 0)).sum()), int(((t == 0) & (p == 1)).sum())],
        [int(((t == 1) & (p == 0)).sum()), int(((t == 1) & (p == 1)).sum())],
    ]


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def weighted_metrics(
    y: np.ndarray, s: ScoreColumns, w: np.ndarray, presorted: bool = False
) -> dict[str, np.ndarray]:
    """Every metric of ALL_METRICS for each row of weights `w` (shape (k, n)); arrays of length k.
    NaN where a metric is undefined (AUROC and balanced accuracy of a replicate with one class).
    Conventions follow scikit-learn: precision, recall, F1 are 0 when undefined, MCC is 0 when a
    margin is empty. `presorted`: the rows are in ascending order of `s.score` (saves a sort)."""
    y = np.asarray(y, dtype=np.int64)
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    pos, pred = y == 1, np.asarray(s.pred) == 1
    tp = w[:, pos & pred].sum(axis=1)
    fn = w[:, pos & ~pred].sum(axis=1)
    fp = w[:, ~pos & pred].sum(axis=1)
    tn = w[:, ~pos & ~pred].sum(axis=1)
    total = tp + fn + fp + tn
    tpr, tnr = _div(tp, tp + fn), _div(tn, tn + fp)
    precision = np.nan_to_num(_div(tp, tp + fp))
    recall = np.nan_to_num(tpr)
    f1 = np.nan_to_num(_div(2 * tp, 2 * tp + fp + fn))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = np.nan_to_num(_div(tp * tn - fp * fn, denom))
    brier = _div(w @ (np.asarray(s.proba, dtype=np.float64) - y) ** 2, total)
    return {
        "accuracy": _div(tp + tn, total),
        "balanced_accuracy": (tpr + tnr) / 2,
        "roc_auc": _weighted_auc(y, np.asarray(s.score, dtype=np.float64), w, presorted),
        "mcc": mcc,
        "brier": brier,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def _weighted_auc(y: np.ndarray, score: np.ndarray, w: np.ndarray, presorted: bool = False) -> np.ndarray:
    """AUROC as the weighted Mann-Whitney statistic: the chance that a positive outranks a negative,
    ties counting half; one pass over the distinct scores for all weight rows at once."""
    if not presorted:
        order = np.argsort(score, kind="stable")
        y, score, w = y[order], score[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, score[1:] != score[:-1]])  # first row of each score level
    T = np.add.reduceat(w, starts, axis=1)  # weight per score level
    P = np.add.reduceat(w * (y == 1), starts, axis=1)  # positive weight per level
    N = T - P
    below = np.cumsum(N, axis=1) - N
    wins = (P * (below + 0.5 * N)).sum(axis=1)
    return _div(wins, P.sum(axis=1) * N.sum(axis=1))


def point_metrics(y: np.ndarray, s: ScoreColumns) -> dict[str, float | None]:
    """Every metric on the rows, each weighed once; None where undefined (JSON has no NaN)."""
    if len(y) == 0:
        return dict.fromkeys(ALL_METRICS)
    values = weighted_metrics(y, s, np.ones((1, len(y))))
    return {k: None if np.isnan(v[0]) else float(v[0]) for k, v in values.items()}


class GroupBootstrap:
    """Replicate weights: each replicate draws the distinct groups with replacement (as many as
    there are) and weighs each row by its group's count. Seeded, so a training is reproducible."""

    def __init__(self, groups: np.ndarray, n: int = N_BOOTSTRAP, seed: int = 0):
        self.keys, self.index = np.unique(np.asarray(groups), return_inverse=True)
        self.n, self.seed = n, seed

    def batches(self, rows: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Weights of every replicate, in batches of shape (k, rows); `rows` (indices) restricts
        them to a subset, keeping the same draws, so subsets are compared on the same replicates."""
        rng = np.random.default_rng(self.seed)
        index = self.index if rows is None else self.index[rows]
        g = len(self.keys)
        batch = max(1, min(200, _CELLS // max(1, len(index))))
        for start in range(0, self.n, batch):
            k = min(batch, self.n - start)
            draws = rng.integers(0, g, size=(k, g))
            counts = np.zeros((k, g))
            np.add.at(counts, (np.repeat(np.arange(k), g), draws.ravel()), 1.0)
            yield counts[:, index]


def _bounds(samples: np.ndarray, level: float = LEVEL) -> list[float] | None:
    ok = samples[~np.isnan(samples)]
    if len(ok) == 0:
        return None
    alpha = (1 - level) / 2
    lo, hi = np.quantile(ok, [alpha, 1 - alpha])
    return [float(lo), float(hi)]


def evaluate_scorer(
    y: np.ndarray, s: ScoreColumns, boot: GroupBootstrap | None, rows: np.ndarray | None = None
) -> dict[str, object]:
    """Point metrics of a scorer on `rows` (default all) and, with a bootstrap, `intervals`:
    metric -> [low, high] (percentile, LEVEL), None when no replicate defines it."""
    rows = np.arange(len(y)) if rows is None else np.asarray(rows)
    y, s = np.asarray(y)[rows], s.take(rows)
    out: dict[str, object] = dict(point_metrics(y, s))
    if boot is not None and boot.n > 0 and len(y):
        order = np.argsort(s.score, kind="stable")  # sorted once, the weights drawn in that order
        y, s, rows = y[order], s.take(order), rows[order]
        samples = {k: [] for k in INTERVAL_METRICS}
        for w in boot.batches(rows):
            values = weighted_metrics(y, s, w, presorted=True)
            for k in INTERVAL_METRICS:
                samples[k].append(values[k])
        out["intervals"] = {k: _bounds(np.concatenate(v)) for k, v in samples.items()}
    return out


def difference(
    y: np.ndarray,
    a: ScoreColumns,
    b: ScoreColumns,
    boot: GroupBootstrap,
    rows: np.ndarray | None = None,
    metric: str = "accuracy",
) -> dict[str, object]:
    """`metric` of a minus that of b on the same rows, with the paired bootstrap interval (both
    scored on each replicate's draw)."""
    y = np.asarray(y)
    if rows is not None:
        y, a, b = y[rows], a.take(rows), b.take(rows)
    va, vb = point_metrics(y, a)[metric], point_metrics(y, b)[metric]
    value = None if va is None or vb is None else va - vb
    samples = [
        weighted_metrics(y, a, w)[metric] - weighted_metrics(y, b, w)[metric] for w in boot.batches(rows)
    ]
    interval = _bounds(np.concatenate(samples)) if samples else None
    return {"metric": metric, "value": value, "interval": interval, "n": int(len(y))}
