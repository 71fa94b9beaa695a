"""Model objects into a store through the writers the stages use (the store has no second,
test-only path): feature rows as a matrix, predictions column-wise."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from magv.models import Features, Prediction


def write_features(store, features: Iterable[Features]) -> int:
    """Feature rows, grouped by version and feature names, through `write_feature_matrix`."""
    groups: dict[tuple[str, tuple[str, ...]], list[Features]] = defaultdict(list)
    for f in features:
        groups[(f.version, tuple(f.values))].append(f)
    written = 0
    for (version, names), rows in groups.items():
        X = np.array([[f.values[n] for n in names] for f in rows], dtype=np.float64).reshape(
            len(rows), len(names)
        )
        written += store.write_feature_matrix(version, [f.run_id for f in rows], list(names), X)
    return written


def write_predictions(store, predictions: Iterable[Prediction]) -> int:
    """Predictions, grouped by model, threshold and contribution names, through
    `bulk_add_predictions` (every contribution kept, in the given order)."""
    groups: dict[tuple[str, float, tuple[str, ...]], list[Prediction]] = defaultdict(list)
    for p in predictions:
        groups[(p.model_id, p.threshold, tuple(p.contributions))].append(p)
    written = 0
    for (model_id, threshold, names), rows in groups.items():
        top_index = np.tile(np.arange(len(names)), (len(rows), 1))
        top_values = np.array([[p.contributions[n] for n in names] for p in rows], dtype=np.float64)
        written += store.bulk_add_predictions(
            model_id, threshold, [p.run_id for p in rows], [p.probability for p in rows],
            [p.verdict for p in rows], list(names), top_index, top_values.reshape(top_index.shape),
        )  # fmt: skip
    return written
