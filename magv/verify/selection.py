"""Model selection and decision thresholds measured without peeking at the test rows.

- `nested_cv`: in each outer grouped fold, every candidate is cross-validated on the training
  rows only (inner grouped folds), the best by `select_by` is refitted on them, and the decision
  threshold for the user's `objective` is chosen on that candidate's inner out-of-fold
  probabilities; the outer test rows are then scored once. Its out-of-fold predictions are the
  honest headline: the choice of model and threshold is part of what is tested.
- `repeated`: a measurement over several CV seeds, as mean and spread (sample standard deviation,
  min, max).
- `choose_threshold`: the threshold that maximises accuracy or balanced accuracy, or the lowest
  one that reaches a target precision on "correct".
- `abstention`: coverage against accuracy when verdicts within a band around the threshold are
  left to a human.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone

from magv.definitions import best_model
from magv.verify.metrics import ScoreColumns, point_metrics
from magv.verify.models import grouped_splits

OBJECTIVES: tuple[str, ...] = ("accuracy", "balanced_accuracy", "precision")
BANDS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def oof_proba(
    estimator: Any,
    X: Any,
    y: np.ndarray,
    groups: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    X_test: Any = None,
) -> np.ndarray:
    """P(correct) of every row from a clone of `estimator` fitted on the other folds (with their
    groups, for the estimator's own inner folds); the held-out rows are read from `X_test` when
    given (the same rows in another form: featurised alone, say), else from X."""
    X_test = X if X_test is None else X_test
    out = np.zeros(len(y))
    for tr, te in splits:
        out[te] = clone(estimator).fit(X[tr], y[tr], groups=groups[tr]).proba_correct(X_test[te])
    return out


def choose_threshold(
    y: np.ndarray, proba: np.ndarray, objective: str = "accuracy", target_precision: float = 0.9
) -> float:
    """The decision threshold (correct when proba >= it) that is best for `objective` on (y, proba):
    the highest accuracy or balanced accuracy (ties: the one nearest 0.5), or for "precision" the
    lowest threshold whose precision on "correct" reaches `target_precision` (none does: above
    every probability, so nothing is called correct)."""
    if objective not in OBJECTIVES:
        raise ValueError(
            f"unknown threshold objective {objective!r}; expected one of {', '.join(OBJECTIVES)}"
        )
    y, proba = np.asarray(y), np.asarray(proba, dtype=np.float64)
    levels = np.unique(proba)
    # midpoints between neighbouring probabilities, so a threshold never sits on a training value
    candidates = np.r_[levels[0] - 1e-9, (levels[1:] + levels[:-1]) / 2, levels[-1] + 1e-9]
    pred = proba[None, :] >= candidates[:, None]
    tp = (pred & (y == 1)).sum(axis=1)
    fp = (pred & (y == 0)).sum(axis=1)
    tn = (~pred & (y == 0)).sum(axis=1)
    pos, neg = max(1, int(np.sum(y == 1))), max(1, int(np.sum(y == 0)))
    if objective == "precision":
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        ok = np.flatnonzero(precision >= target_precision)
        return float(candidates[ok[0]]) if len(ok) else float(levels[-1] + 1e-9)
    score = (tp + tn) / len(y) if objective == "accuracy" else (tp / pos + tn / neg) / 2
    best = np.flatnonzero(np.isclose(score, score.max()))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def nested_cv(
    candidates: Mapping[str, tuple[Any, Any]],
    y: np.ndarray,
    groups: np.ndarray,
    *,
    folds: int = 5,
    inner_folds: int = 3,
    seed: int = 0,
    select_by: str = "roc_auc",
    objective: str = "accuracy",
    target_precision: float = 0.9,
) -> dict[str, Any]:
    """Outer out-of-fold predictions of the candidate selected inside each training fold (see the
    module docstring): {"proba", "threshold" (per row: its fold's), "pred", "chosen" (per fold:
    the candidate and its threshold)}. candidates: name -> (unfitted estimator, its X), as the
    models read different inputs (a text model needs the documents)."""
    y, groups = np.asarray(y, dtype=np.int64), np.asarray(groups)
    proba, threshold = np.zeros(len(y)), np.zeros(len(y))
    chosen = []
    for tr, te in grouped_splits(y, groups, folds, seed):
        inner = grouped_splits(y[tr], groups[tr], inner_folds, seed)
        inner_oof = {
            name: oof_proba(est, X[tr], y[tr], groups[tr], inner) for name, (est, X) in candidates.items()
        }
        scores = {name: point_metrics(y[tr], ScoreColumns.from_proba(p)) for name, p in inner_oof.items()}
        name = best_model(scores, select_by)
        t = choose_threshold(y[tr], inner_oof[name], objective, target_precision)
        est, X = candidates[name]
        model = clone(est).fit(X[tr], y[tr], groups=groups[tr])
        proba[te], threshold[te] = model.proba_correct(X[te]), t
        chosen.append(
            {"model": name, "threshold": round(t, 6), f"inner_{select_by}": scores[name][select_by]}
        )
    return {
        "proba": proba,
        "threshold": threshold,
        "pred": (proba >= threshold).astype(np.int64),
        "chosen": chosen,
    }


def abstention(
    y: np.ndarray, proba: np.ndarray, threshold: float | np.ndarray = 0.5, bands: Sequence[float] = BANDS
) -> list[dict[str, Any]]:
    """Per band width: the share of rows given a verdict (|proba - threshold| >= band; the rest go
    to a human) and the accuracy on them."""
    y, proba = np.asarray(y), np.asarray(proba, dtype=np.float64)
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), proba.shape)
    correct = (proba >= t).astype(np.int64) == y
    out = []
    for band in bands:
        keep = np.abs(proba - t) >= band
        out.append(
            {
                "band": band,
                "coverage": float(keep.mean()),
                "accuracy": float(correct[keep].mean()) if keep.any() else None,
            }
        )
    return out


def repeated(measure: Callable[[int], Mapping[str, float | None]], seeds: Sequence[int]) -> dict[str, dict]:
    """metric -> {"mean", "sd", "min", "max", "values"} of `measure(seed)` over the seeds."""
    runs = [measure(s) for s in seeds]
    out: dict[str, dict] = {}
    for k in runs[0]:
        values = [r[k] for r in runs if r.get(k) is not None]
        if not values:
            continue
        a = np.asarray(values, dtype=np.float64)
        out[k] = {
            "mean": float(a.mean()),
            "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()),
            "max": float(a.max()),
            "values": [round(v, 6) for v in values],
        }
    return out
