"""ROC, precision-recall and calibration curves and the confusion matrix of one binary scorer."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve


def confusion(y: list[int], proba: list[float], threshold: float = 0.5) -> list[list[int]]:
    """[[tn, fp], [fn, tp]], the layout of sklearn's confusion_matrix."""
    t = np.asarray(y, dtype=int)
    p = (np.asarray(proba, dtype=float) >= threshold).astype(int)
    return [[int(((t == 0) & (p == 0)).sum()), int(((t == 0) & (p == 1)).sum())],
            [int(((t == 1) & (p == 0)).sum()), int(((t == 1) & (p == 1)).sum())]]  # fmt: skip


def binary_curves(y: list[int], proba: list[float]) -> dict[str, Any] | None:
    """Curves as plain lists; None when there is nothing to draw (fewer than two classes)."""
    if len(y) != len(proba) or len(set(y)) < 2:
        return None
    t, p = np.asarray(y, dtype=int), np.asarray(proba, dtype=float)
    fpr, tpr, _ = roc_curve(t, p)
    precision, recall, _ = precision_recall_curve(t, p)
    # few labelled rows (the paper had 45): coarse bins keep each point meaningful
    bins = int(min(10, max(3, len(t) // 8)))
    frac_pos, mean_pred = calibration_curve(t, p, n_bins=bins, strategy="uniform")
    return {
        "n": len(t),
        "positives": int(t.sum()),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(auc(fpr, tpr))},
        "pr": {"recall": recall.tolist(), "precision": precision.tolist(),
               "average_precision": float(average_precision_score(t, p))},
        "calibration": {"mean_predicted": mean_pred.tolist(), "fraction_positive": frac_pos.tolist(),
                        "brier": float(np.mean((p - t) ** 2))},
    }  # fmt: skip
