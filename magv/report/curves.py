"""ROC, precision-recall and calibration curves of one binary scorer (its confusion matrix is
magv.verify.metrics.confusion)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve


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
        "pr": {
            "recall": recall.tolist(),
            "precision": precision.tolist(),
            "average_precision": float(average_precision_score(t, p)),
        },
        "calibration": {
            "mean_predicted": mean_pred.tolist(),
            "fraction_positive": frac_pos.tolist(),
            "brier": float(np.mean((p - t) ** 2)),
        },
    }
