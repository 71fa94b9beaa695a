"""Classical verifiers as one scikit-learn estimator, grouped cross-validation, and safe model files.

    v = Verifier("xgboost").fit(X, y)      # y: 1 = correct trajectory (any two labels work)
    v.predict(X)                           # the predicted label of each row
    v.predict_proba(X)                     # shape (n, 2): columns follow v.classes_
    v.contributions(X)                     # per-feature contribution, shape (n, d)

`Verifier` is a scikit-learn classifier (BaseEstimator + ClassifierMixin): `clone`, pipelines,
`cross_val_score` and grid search work on it. Its hyper-parameters are the model kind, that model's
parameters (merged over magv's defaults), whether to calibrate, and the random state.

Contributions: XGBoost's exact TreeSHAP values (its own `pred_contribs`) and logistic regression's
linear terms coef * standardised x are exact in the models' log-odds. Random forest, SVM and k-NN
have no cheap exact form, so they use a linear surrogate: a ridge regression, fitted at training
time, of the model's own log-odds on the standardised features; its terms approximate the direction
and size of each feature's effect and cost one matrix product at scoring time.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from xgboost import DMatrix, XGBClassifier

from magv import outputs
from magv.definitions import SELECT_BY, best_model  # noqa: F401  (best_model: re-exported)
from magv.errors import BadInput, RunFailed
from magv.verify.metrics import Scorer, point_metrics

MODEL_NAMES: tuple[str, ...] = ("logreg", "svm", "random_forest", "knn", "xgboost")
ROWS_PER_THREAD = 1000  # XGBoost predicts fewer rows than this on one thread
METRICS: tuple[str, ...] = SELECT_BY  # what `best_model` (magv.definitions) can select by

# Calibrating needs held-out rows of both classes in every calibration fold; below this the model's
# own probabilities are kept (and calibrated_ says False).
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


def _model(name: str, params: dict[str, Any], seed: int, y: np.ndarray) -> Any:
    """An unfitted model of kind `name`: magv's defaults with `params` over them. Scale-sensitive
    models get a StandardScaler in front; SVC, which has no probabilities, is Platt-scaled."""
    if name == "logreg":
        lr = LogisticRegression(**{"max_iter": 2000, "class_weight": "balanced", **params})
        return make_pipeline(StandardScaler(), lr)
    if name == "svm":
        svc = make_pipeline(
            StandardScaler(), SVC(**{"class_weight": "balanced", "random_state": seed, **params})
        )
        k = min(3, _min_class(y))
        if k >= 2:
            cv = StratifiedKFold(k, shuffle=True, random_state=seed)
            return CalibratedClassifierCV(svc, method="sigmoid", ensemble=False, cv=cv)
        return _InSamplePlatt(svc)
    if name == "random_forest":
        defaults = {"n_estimators": 200, "class_weight": "balanced", "n_jobs": 1, "random_state": seed}
        return RandomForestClassifier(**{**defaults, **params})
    if name == "knn":
        knn = KNeighborsClassifier(**{"n_neighbors": min(5, len(y)), "weights": "distance", **params})
        return make_pipeline(StandardScaler(), knn)
    defaults = {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.1, "n_jobs": 1, "random_state": seed,
                "eval_metric": "logloss", "verbosity": 0}  # fmt: skip
    return XGBClassifier(**{**defaults, **params})


class Verifier(ClassifierMixin, BaseEstimator):
    """A binary classifier of trajectories: one model of MODEL_NAMES behind the scikit-learn API.

    model: "logreg" | "svm" | "random_forest" | "knn" | "xgboost".
    random_state: seeds the model and the calibration folds.
    params: that model's own parameters, over magv's defaults (e.g. {"n_estimators": 50}).
    calibrate: fit a sigmoid on out-of-fold predictions (grouped when `fit` gets groups) once
        there are MIN_CALIBRATION_ROWS rows with MIN_CALIBRATION_CLASS of each class; calibrated_
        says whether it did. SVM is always sigmoid-calibrated (it has no probabilities of its own).

    A training set of one class predicts that class (predict_proba then has one column)."""

    def __init__(
        self,
        model: str = "xgboost",
        random_state: int = 0,
        params: dict[str, Any] | None = None,
        calibrate: bool = False,
    ):
        self.model = model
        self.random_state = random_state
        self.params = params
        self.calibrate = calibrate

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    @property
    def contribution_method(self) -> str:
        return {"xgboost": "pred_contribs", "logreg": "linear_terms"}.get(self.model, "linear_surrogate")

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any, groups: Any = None) -> Verifier:
        """Fit on rows X with labels y; `groups` (one per row: question or task) keeps a group on
        one side of every calibration split."""
        if self.model not in MODEL_NAMES:
            raise ValueError(
                f"unknown verifier model {self.model!r}; expected one of {', '.join(MODEL_NAMES)}"
            )
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) > 2:
            raise ValueError(f"Only binary classification is supported; y has {len(self.classes_)} classes")
        params = dict(self.params or {})
        self.calibrated_ = False
        if len(self.classes_) < 2:
            # A training fold of one class: the honest prediction is that class.
            self.estimator_ = self.model_ = DummyClassifier(strategy="prior").fit(X, encoded)
            return self
        splits = None
        enough = len(encoded) >= MIN_CALIBRATION_ROWS and _min_class(encoded) >= MIN_CALIBRATION_CLASS
        if self.calibrate and enough and self.model != "svm":
            splits = _calibration_splits(
                encoded, None if groups is None else np.asarray(groups), self.random_state
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _model(self.model, params, self.random_state, encoded)
            if splits is None:
                self.estimator_ = self.model_ = model.fit(X, encoded)
                self.calibrated_ = self.model == "svm"  # its own Platt scaling
            else:
                # ensemble=False: one model refit on all rows plus a sigmoid fitted on out-of-fold
                # predictions, so scoring costs one model, not one per fold.
                self.model_ = CalibratedClassifierCV(model, method="sigmoid", cv=splits, ensemble=False)
                self.model_.fit(X, encoded)
                self.estimator_ = self.model_.calibrated_classifiers_[0].estimator
                self.calibrated_ = True
            # estimator_ is the model contributions come from
            if self.contribution_method == "linear_surrogate":
                self.surrogate_ = _fit_surrogate(X, self.estimator_.predict_proba(X)[:, 1])
        return self

    # -- predicting ----------------------------------------------------------------------------

    def _checked(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float64)

    def _threads(self, n_rows: int) -> int:
        """XGBoost's threads for predicting n rows, set on its booster: one for a few rows (a
        service's lone conversation: waking threads costs more than the rows, and on a busy
        machine a lot more), every core for many."""
        threads = 1 if n_rows < ROWS_PER_THREAD else os.cpu_count() or 1
        if self.model == "xgboost" and not isinstance(self.estimator_, DummyClassifier):
            self.estimator_.get_booster().set_param({"nthread": threads})
        return threads

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities of each class in the order of classes_, shape (n, 2)."""
        X = self._checked(X)
        self._threads(len(X))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.model_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def proba_correct(self, X: Any) -> np.ndarray:
        """P(correct) of each row, shape (n,): the probability of label 1 (True), or of the second
        class when the labels are others."""
        proba = self.predict_proba(X)
        if len(self.classes_) == 1:
            return np.full(len(proba), float(self.classes_[0] == 1))
        positive = np.flatnonzero(self.classes_ == 1)
        return proba[:, positive[0] if len(positive) else 1]

    def contributions(self, X: Any, method: str = "exact") -> np.ndarray:
        """Per-feature contributions to the log-odds of the second class (see the module
        docstring). For XGBoost `method` "approx" takes Saabas path attribution instead of exact
        TreeSHAP."""
        X = self._checked(X)
        if isinstance(self.estimator_, DummyClassifier):
            return np.zeros_like(X)
        if self.model == "xgboost":
            threads = self._threads(len(X))  # trained on one thread for CV
            booster = self.estimator_.get_booster()
            return booster.predict(
                DMatrix(X, nthread=threads), pred_contribs=True, approx_contribs=method == "approx"
            )[:, :-1]
        if self.model == "logreg":
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
    """Out-of-fold metrics of probabilities (magv.verify.metrics: accuracy, balanced accuracy,
    ROC AUC, MCC, Brier, precision, recall, F1; positive = correct, verdict = proba >= threshold)."""
    return point_metrics(np.asarray(y), Scorer.from_proba(proba, threshold))


def cross_validate_models(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    names: Sequence[str] = MODEL_NAMES,
) -> dict[str, dict[str, Any]]:
    """Out-of-fold metrics per model. Predictions of all folds are pooled before scoring, so tiny
    folds (one class, two rows) still give defined numbers. Each result keeps its out-of-fold
    predictions, `oof`: {"y": labels, "proba": P(correct)} in row order."""
    X, y, groups = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64), np.asarray(groups)
    check_trainable(y, groups)
    splits = grouped_splits(y, groups, folds, seed)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        oof = np.zeros(len(y))
        for train_idx, test_idx in splits:
            oof[test_idx] = Verifier(name, seed).fit(X[train_idx], y[train_idx]).proba_correct(X[test_idx])
        results[name] = {**metrics(y, oof), "folds": len(splits), "n": int(len(y)), "positives": int(y.sum()),
                         "oof": {"y": y.tolist(), "proba": oof.round(6).tolist()}}  # fmt: skip
    return results


# -- files -----------------------------------------------------------------------------------


def save_model(
    path: Path, verifier: Verifier, features: Sequence[str], feature_version: str, **meta: Any
) -> Path:
    """A skops file holding the verifier, its feature list (column order) and feature version."""
    bundle = {"verifier": verifier, "features": list(features), "feature_version": feature_version, **meta}
    # A kill or a failing write mid-way leaves the file that was there (a registered model) whole.
    with outputs.atomic_output(path, "model file") as tmp:
        sio.dump(bundle, tmp)
    return path


def load_model(path: Path) -> dict[str, Any]:
    """Load a model file, trusting only the types magv itself saves (TRUSTED_TYPES). A file holding
    anything else is refused before skops builds a single object of it."""
    if not path.is_file():
        raise RunFailed(f"model file {path} is missing; run `magv verify train` again")
    outputs.protect(path, "the model file")
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
