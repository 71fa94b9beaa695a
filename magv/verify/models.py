"""Classical verifiers behind one interface, grouped cross-validation, and safe model files.

    v = Verifier("xgboost").fit(X, y)      # y: 1 = correct trajectory
    v.predict_proba(X)                     # P(correct), shape (n,)
    v.contributions(X)                     # per-feature contribution, shape (n, d)

Contributions: XGBoost's exact TreeSHAP values (pred_contribs; for shallow trees read from per-tree
tables built once per saved model, see treeshap.py) and logistic regression's linear terms coef * standardised
x are exact in the models' log-odds. Random forest, SVM and k-NN have no cheap exact form, so they use
a linear surrogate: a ridge regression, fitted at training time, of the model's own log-odds on the
standardised features; its terms approximate the direction and size of each feature's effect and
cost one matrix product at scoring time.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from xgboost import DMatrix, XGBClassifier

from magv.errors import BadInput, RunFailed
from magv.verify.treeshap import build_tables, table_contributions

MODEL_NAMES: tuple[str, ...] = ("logreg", "svm", "random_forest", "knn", "xgboost")
METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "roc_auc")

# Calibrating needs held-out rows of both classes in every calibration fold; below this the model's
# own probabilities are kept (and the file says calibrated=False).
MIN_CALIBRATION_ROWS = 30
MIN_CALIBRATION_CLASS = 6
CALIBRATION_FOLDS = 3

# The types beyond skops' own defaults that a model file may hold: exactly what `save_model` writes
# for the five verifiers, calibrated or not (listed with `skops.io.get_untrusted_types` on files of
# each; tests/security/test_model_files.py checks the list). Whole names, never prefixes: a prefix
# such as "builtins." admits `builtins.exec`, which skops would call while loading.
TRUSTED_TYPES = frozenset({
    "magv.verify.models.Verifier",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.tree._tree.Tree",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
})  # fmt: skip


def _min_class(y: np.ndarray) -> int:
    return int(min(np.sum(y == 1), np.sum(y == 0)))


class Verifier:
    """One classifier of MODEL_NAMES with fit / predict_proba / score / contributions."""

    def __init__(self, name: str, seed: int = 0):
        if name not in MODEL_NAMES:
            raise ValueError(f"unknown verifier model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
        self.name = name
        self.seed = seed
        self.constant_: float | None = None
        self.estimator_: Any = None  # the model fitted on all rows (contributions come from it)
        self.model_: Any = None  # what predict_proba uses: estimator_ or its calibrated form
        self.calibrated_ = False
        self.surrogate_: dict[str, np.ndarray] | None = None

    @property
    def contribution_method(self) -> str:
        return {"xgboost": "pred_contribs", "logreg": "linear_terms"}.get(self.name, "linear_surrogate")

    # -- building ----------------------------------------------------------------------------

    def _new(self, y: np.ndarray) -> Any:
        n = len(y)
        if self.name == "logreg":
            return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
        if self.name == "svm":
            # SVC gives no probabilities itself (probability=True is deprecated): Platt-scale it.
            svc = make_pipeline(StandardScaler(), SVC(class_weight="balanced", random_state=self.seed))
            k = min(3, _min_class(y))
            if k >= 2:
                cv = StratifiedKFold(k, shuffle=True, random_state=self.seed)
                return CalibratedClassifierCV(svc, method="sigmoid", ensemble=False, cv=cv)
            return _InSamplePlatt(svc)
        if self.name == "random_forest":
            return RandomForestClassifier(
                n_estimators=200, class_weight="balanced", n_jobs=1, random_state=self.seed
            )
        if self.name == "knn":
            return make_pipeline(
                StandardScaler(), KNeighborsClassifier(n_neighbors=min(5, n), weights="distance")
            )
        return XGBClassifier(
            n_estimators=200, max_depth=3, learning_rate=0.1, n_jobs=1, random_state=self.seed,
            eval_metric="logloss", verbosity=0,
        )  # fmt: skip

    def fit(
        self, X: np.ndarray, y: np.ndarray, *, groups: np.ndarray | None = None, calibrate: bool = False
    ) -> Verifier:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64)
        self.__dict__.pop("shap_tables_", None)  # tables of the previous fit
        if len(np.unique(y)) < 2:
            # A training fold of one class: the honest prediction is that class.
            self.constant_ = float(y[0]) if len(y) else 0.5
            return self
        self.constant_ = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = self._new(y)
            if isinstance(est, _InSamplePlatt):
                est = est.fit(X, y)
            else:
                est.fit(X, y)
            self.estimator_ = self.model_ = est
            self.calibrated_ = self.name == "svm"
            enough = len(y) >= MIN_CALIBRATION_ROWS and _min_class(y) >= MIN_CALIBRATION_CLASS
            cv = (
                _calibration_splits(y, groups, self.seed)
                if calibrate and enough and self.name != "svm"
                else None
            )
            if cv is not None:
                # ensemble=False: one model refit on all rows plus a sigmoid fitted on out-of-fold
                # predictions, so scoring costs one model, not one per fold.
                self.model_ = CalibratedClassifierCV(
                    self._new(y), method="sigmoid", cv=cv, ensemble=False
                ).fit(X, y)
                self.estimator_ = self.model_.calibrated_classifiers_[0].estimator
                self.calibrated_ = True
            if self.contribution_method == "linear_surrogate":
                self.surrogate_ = _fit_surrogate(X, self._raw_proba(X))
        return self

    # -- predicting ----------------------------------------------------------------------------

    def _raw_proba(self, X: np.ndarray) -> np.ndarray:
        return self.estimator_.predict_proba(X)[:, 1]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self.constant_ is not None:
            return np.full(len(X), self.constant_)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.model_.predict_proba(X)[:, 1]

    def score(self, X: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> float:
        return float(accuracy_score(np.asarray(y), self.predict_proba(X) >= threshold))

    def shap_tables(self) -> dict[str, np.ndarray] | None:
        """XGBoost's per-tree TreeSHAP tables (None: not an XGBoost model, or trees too deep for
        them), built on first use and kept: save_model builds them, so a model file holds them
        and cross-validation folds, which never explain, do not pay for them."""
        if self.name != "xgboost" or self.constant_ is not None:
            return None
        if not hasattr(self, "shap_tables_"):
            self.shap_tables_ = build_tables(self.estimator_.get_booster())
        return self.shap_tables_

    def contributions(self, X: np.ndarray, method: str = "exact") -> np.ndarray:
        """Per-feature contributions to the log-odds of 'correct' (see the module docstring).
        For XGBoost `method` "approx" takes Saabas path attribution instead of exact TreeSHAP."""
        X = np.asarray(X, dtype=np.float64)
        if self.constant_ is not None:
            return np.zeros_like(X)
        if self.name == "xgboost":
            booster = self.estimator_.get_booster()
            tables = self.shap_tables() if method != "approx" else None
            if tables is not None:
                return table_contributions(tables, X)
            booster.set_param({"nthread": os.cpu_count() or 1})  # trained on one thread for CV; score on all
            return booster.predict(DMatrix(X), pred_contribs=True, approx_contribs=method == "approx")[:, :-1]
        if self.name == "logreg":
            scaler, lr = self.estimator_[0], self.estimator_[-1]
            return scaler.transform(X) * lr.coef_[0]
        s = self.surrogate_
        return (X - s["mean"]) / s["scale"] * s["coef"]


class _InSamplePlatt:
    """Platt scaling on the training rows themselves, for data too small to hold any out."""

    def __init__(self, estimator: Pipeline):
        self.estimator = estimator

    def fit(self, X: np.ndarray, y: np.ndarray) -> CalibratedClassifierCV:
        self.estimator.fit(X, y)
        every = np.arange(len(y))  # one "split" of all rows: the sigmoid is fitted in-sample
        return CalibratedClassifierCV(
            FrozenEstimator(self.estimator), method="sigmoid", cv=[(every, every)]
        ).fit(X, y)


def _fit_surrogate(X: np.ndarray, proba: np.ndarray) -> dict[str, np.ndarray]:
    p = np.clip(proba, 1e-4, 1 - 1e-4)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    ridge = Ridge(alpha=1.0).fit((X - mean) / scale, np.log(p / (1 - p)))
    return {"mean": mean, "scale": scale, "coef": ridge.coef_.astype(np.float64)}


def _calibration_splits(y: np.ndarray, groups: np.ndarray | None, seed: int) -> list | None:
    if groups is None:
        return list(StratifiedKFold(CALIBRATION_FOLDS, shuffle=True, random_state=seed).split(y, y))
    if len(np.unique(groups)) < CALIBRATION_FOLDS:
        return None
    splits = grouped_splits(y, groups, CALIBRATION_FOLDS, seed)
    # Every calibration fold must train on both classes.
    return splits if all(len(np.unique(y[tr])) == 2 for tr, _ in splits) else None


# -- cross-validation ----------------------------------------------------------------------------


def check_trainable(y: np.ndarray, groups: np.ndarray) -> None:
    n = len(y)
    if n == 0:
        raise RunFailed(
            "no labelled trajectories with features: run `magv verify features` and `magv verify label`"
        )
    positives = int(np.sum(y == 1))
    if positives in (0, n):
        which = "correct" if positives == n else "incorrect"
        raise RunFailed(
            f"all {n} labelled trajectories are {which}: training needs both correct and incorrect "
            "labels (add labels with `magv verify annotate` or `magv verify label --from FILE`)"
        )
    if len(np.unique(groups)) < 2:
        raise RunFailed(
            f"all {n} labelled trajectories belong to one question group: grouped cross-validation "
            "needs at least 2 groups"
        )


def grouped_splits(
    y: np.ndarray, groups: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified group k-fold: a group (seed family / question) is never on both sides. With fewer
    groups than folds, one fold per group."""
    y, groups = np.asarray(y), np.asarray(groups)
    n_splits = max(2, min(folds, len(np.unique(groups))))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "least populated class has fewer members than n_splits"
        try:
            splits = list(cv.split(np.zeros(len(y)), y, groups))
        except ValueError:
            # Too few rows of a class to stratify: keep the groups apart, give up stratification.
            splits = list(GroupKFold(n_splits=n_splits).split(np.zeros(len(y)), y, groups))
    return [(tr, te) for tr, te in splits if len(te) and len(tr)]


def metrics(y: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    pred = proba >= threshold
    auc = roc_auc_score(y, proba) if len(np.unique(y)) == 2 else float("nan")
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "roc_auc": float(auc),
    }


def cross_validate_models(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    names: Sequence[str] = MODEL_NAMES,
) -> dict[str, dict[str, Any]]:
    """Out-of-fold metrics per model. Predictions of all folds are pooled before scoring, so tiny
    folds (one class, two rows) still give defined numbers."""
    X, y, groups = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64), np.asarray(groups)
    check_trainable(y, groups)
    splits = grouped_splits(y, groups, folds, seed)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        oof = np.zeros(len(y))
        for train_idx, test_idx in splits:
            oof[test_idx] = Verifier(name, seed).fit(X[train_idx], y[train_idx]).predict_proba(X[test_idx])
        results[name] = {**metrics(y, oof), "folds": len(splits), "n": int(len(y)), "positives": int(y.sum())}
    return results


def best_model(results: dict[str, dict[str, Any]], select_by: str = "roc_auc") -> str:
    """Highest `select_by`, then accuracy, then f1; NaN counts as lowest."""
    if select_by not in METRICS:
        raise ValueError(f"select_by {select_by!r}: expected one of {', '.join(METRICS)}")

    def key(name: str) -> tuple[float, ...]:
        m = results[name]
        return tuple(-1.0 if np.isnan(m[k]) else m[k] for k in (select_by, "accuracy", "f1"))

    return max(results, key=key)


# -- files -----------------------------------------------------------------------------------


def save_model(
    path: Path, verifier: Verifier, features: Sequence[str], feature_version: str, **meta: Any
) -> Path:
    """A skops file holding the verifier, its feature list (column order) and feature version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    verifier.shap_tables()  # built once here rather than at every scoring
    bundle = {"verifier": verifier, "features": list(features), "feature_version": feature_version, **meta}
    sio.dump(bundle, path)
    return path


def load_model(path: Path) -> dict[str, Any]:
    """Load a model file, trusting only the types magv itself saves (TRUSTED_TYPES). A file holding
    anything else is refused before skops builds a single object of it."""
    if not path.is_file():
        raise RunFailed(f"model file {path} is missing; run `magv verify train` again")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # not a zip, no schema, truncated: skops raises many kinds
        raise RunFailed(
            f"model file {path} is damaged or not a skops file ({type(exc).__name__}: {exc}); "
            "run `magv verify train` again"
        ) from None
    unknown = sorted(set(untrusted) - TRUSTED_TYPES)
    if unknown:
        raise RunFailed(
            f"model file {path} holds types magv does not trust and was not loaded: {', '.join(unknown)}"
        )
    try:
        bundle = sio.load(path, trusted=sorted(TRUSTED_TYPES))
    except Exception as exc:
        raise RunFailed(
            f"model file {path} cannot be loaded ({type(exc).__name__}: {exc}); run `magv verify train` again"
        ) from None
    if not isinstance(bundle, dict) or not isinstance(bundle.get("verifier"), Verifier):
        raise RunFailed(f"model file {path} does not hold a magv verifier; run `magv verify train` again")
    return bundle


def check_model_path(path: Path, models_dir: Path, explicit: bool = False) -> Path:
    """A model path read from the database must lie inside `verify.models_dir`: a database handed
    over by someone else must not make magv open files elsewhere. A path the user names on the
    command line (`explicit`) is theirs to trust."""
    if explicit:
        return path
    root = Path(models_dir).resolve()
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(root):
        raise BadInput(
            f"model file {path} is outside verify.models_dir ({models_dir}); magv loads registered "
            f"models only from there: move it there, or name it with --model-file to trust it"
        )
    return path
