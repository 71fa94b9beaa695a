"""The verifier as a library: trajectories -> feature matrix -> a scikit-learn classifier.

    from magv.verify import TrajectoryFeaturizer, Verifier

    X = TrajectoryFeaturizer().transform(trajectories, groups=task_ids)
    verifier = Verifier("logreg").fit(X, labels)
    verifier.predict_proba(X)[:, 1]  # P(correct) of each trajectory

Neither needs a database; the pipeline's stages (`features.compute_features`, `training.train` and
`scoring.score`) use the same two over the store.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Loaded on first use: importing magv.verify.labels (say) should not load scikit-learn and XGBoost.
_EXPORTS = {
    "TrajectoryFeaturizer": "magv.verify.features", "Alternate": "magv.verify.features",
    "FEATURE_NAMES": "magv.verify.features", "FEATURE_VERSION": "magv.verify.features",
    "Verifier": "magv.verify.models", "MODEL_NAMES": "magv.verify.models",
}  # fmt: skip
__all__ = ["FEATURE_NAMES", "FEATURE_VERSION", "MODEL_NAMES", "Alternate", "TrajectoryFeaturizer", "Verifier"]

if TYPE_CHECKING:
    from magv.verify.features import FEATURE_NAMES, FEATURE_VERSION, Alternate, TrajectoryFeaturizer
    from magv.verify.models import MODEL_NAMES, Verifier


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'magv.verify' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
