"""Classical verifiers as one scikit-learn estimator, grouped cross-validation, and safe model files.

    v = Verifier("xgboost").fit(X, y)      # y: 1 = correct trajectory (any two labels work)
    v.predict(X)                           # the predicted label of each row
    v.predict_proba(X)                     # shape (n, 2): columns follow v.classes_
    v.contributions(X)                     # per-feature contribution, shape (n, d)

`Verifier` is a scikit-learn classifier (BaseEstimator + ClassifierMixin): `clone`, pipelines,
`cross_val_score` and grid search work on it. Its hyper-parameters are the model kind, that model's
parameters (merged over magv's defaults), whether to calibrate, and the random state.

A text model (`text="stack"` or `"only"`): X then carries each trajectory's document
(magv.verify.document) as its last column (`with_documents`). The text model is TF-IDF over the
document (words and word bigrams) and a logistic regression, fitted in `fit`, so cross-validation
fits it on the training folds only and a saved model carries it. "stack" appends its log-odds as
one more feature (`text_score`) of the numeric model, computed out of fold on the training rows
(grouped folds when `fit` gets groups, so siblings never score each other); "only" is the text
model alone and ignores the numeric columns (the TF-IDF baseline).

Contributions: XGBoost's exact TreeSHAP values (its own `pred_contribs`) and logistic regression's
linear terms coef * standardised x are exact in the models' log-odds. Random forest, SVM and k-NN
have no cheap exact form, so they use a linear surrogate: a ridge regression, fitted at training
time, of the model's own log-odds on the standardised features; its terms approximate the direction
and size of each feature's effect and cost one matrix product at scoring time.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
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
from magv.verify.metrics import ScoreColumns, point_metrics
from magv.verify.skops_import import sio

MODEL_NAMES: tuple[str, ...] = ("logreg", "svm", "random_forest", "knn", "xgboost")
ROWS_PER_THREAD = 1000  # XGBoost predicts fewer rows than this on one thread
TEXT_MODES: tuple[str | None, ...] = (None, "stack", "only")
TEXT_FEATURE = "text_score"  # the stacked text model's log-odds, the last column the model sees
TEXT_FOLDS = 5  # inner folds of the out-of-fold text scores the stacked model trains on
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
    defaults = {
        "n_estimators": 200,
        "max_depth": 3,
        "learning_rate": 0.1,
        "n_jobs": 1,
        "random_state": seed,
        "eval_metric": "logloss",
        "verbosity": 0,
    }
    return XGBClassifier(**{**defaults, **params})


def text_model(params: dict[str, Any] | None = None, seed: int = 0) -> Pipeline:
    """TF-IDF over a document's words and word bigrams (binary: a token's presence, weighted by
    its rarity; a term must occur in two documents) and a balanced logistic regression; `params`
    over these defaults, by step (`tfidf__min_df`, `logreg__C`). Binary beat sublinear counts on
    the airline logs (AUROC 0.829 against 0.809). liblinear fits these small sparse problems about
    four times faster than lbfgs, to the same out-of-fold AUROC there (0.828 against 0.829)."""
    pipe = Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), min_df=2, binary=True)),
            (
                "logreg",
                LogisticRegression(
                    C=10.0, solver="liblinear", max_iter=2000, class_weight="balanced", random_state=seed
                ),
            ),
        ]
    )
    return pipe.set_params(**(params or {}))


def _log_odds(model: Pipeline, docs: np.ndarray) -> np.ndarray:
    """The text model's decision function, shape (n, 1): the TF-IDF rows times the regression's
    weights, without the pipeline's per-call validation (most of a lone conversation's time)."""
    vectorizer, lr = model[0], model[-1]
    return np.asarray(vectorizer.transform(docs) @ lr.coef_.T + lr.intercept_).reshape(-1, 1)


def _text_oof(
    docs: np.ndarray, y: np.ndarray, groups: np.ndarray | None, params: dict | None, seed: int
) -> np.ndarray:
    """Out-of-fold log-odds of the text model on the training rows: grouped folds when there are
    groups, so a trajectory is never scored by a model that saw its siblings."""
    k = min(TEXT_FOLDS, _min_class(y))
    if groups is not None and len(np.unique(groups)) >= 2:
        splits = grouped_splits(y, groups, TEXT_FOLDS, seed)
    elif k >= 2:
        splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(docs, y))
    else:
        splits = []
    out = np.zeros((len(y), 1))
    for tr, te in splits:
        if len(np.unique(y[tr])) < 2:
            out[te] = 0.0 if not len(tr) else (1.0 if y[tr][0] == 1 else -1.0)
            continue
        out[te] = _log_odds(_fitted_text(docs[tr], y[tr], params, seed), docs[te])
    if not splits:  # too few rows to hold any out: in-sample scores
        out = _log_odds(_fitted_text(docs, y, params, seed), docs)
    return out


class _TextFits:
    """Fitted text models by their training data. Model selection fits every stacked candidate on
    the same training rows (each outer and inner fold, each candidate), and each of them would
    otherwise fit the same text models again: on the airline logs that was most of the time of
    `verify train`. A fit is a pure function of (documents, labels, parameters, seed), and the
    models are only read after fitting, so sharing them changes no result."""

    def __init__(self, size: int = 64):
        self.size = size
        self._fits: OrderedDict[str, Pipeline] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, docs: np.ndarray, y: np.ndarray, params: dict | None, seed: int) -> Pipeline:
        h = hashlib.sha256(repr((sorted((params or {}).items()), seed)).encode())
        h.update(np.asarray(y, dtype=np.int64).tobytes())
        for d in docs:
            h.update(d.encode())
            h.update(b"\0")
        key = h.hexdigest()
        with self._lock:
            if key in self._fits:
                self._fits.move_to_end(key)
                return self._fits[key]
        if not any(d.strip() for d in docs):
            raise RunFailed(
                f"none of the {len(docs)} runs the text model is trained on called a tool: it has nothing "
                "to read; train without it (`magv verify train --no-text`, or verify.text = false)"
            )
        try:
            model = text_model(params, seed).fit(docs, y)
        except ValueError as exc:
            # On a few runs no token may be in two documents: one occurrence is then enough.
            if "no terms remain" not in str(exc):
                raise
            model = text_model({**(params or {}), "tfidf__min_df": 1}, seed).fit(docs, y)
        # the pruned terms, kept by scikit-learn for introspection only: the bulk of a kept fit
        model[0].stop_words_ = None
        with self._lock:
            self._fits[key] = model
            while len(self._fits) > self.size:
                self._fits.popitem(last=False)
        return model


_TEXT_FITS = _TextFits()


def _fitted_text(docs: np.ndarray, y: np.ndarray, params: dict | None, seed: int) -> Pipeline:
    """text_model(params, seed) fitted on (docs, y), shared with earlier identical fits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _TEXT_FITS.get(docs, y, params, seed)


class Verifier(ClassifierMixin, BaseEstimator):
    """A binary classifier of trajectories: one model of MODEL_NAMES behind the scikit-learn API.

    model: "logreg" | "svm" | "random_forest" | "knn" | "xgboost".
    random_state: seeds the model and the calibration folds.
    params: that model's own parameters, over magv's defaults (e.g. {"n_estimators": 50}).
    calibrate: fit a sigmoid on out-of-fold predictions (grouped when `fit` gets groups) once
        there are MIN_CALIBRATION_ROWS rows with MIN_CALIBRATION_CLASS of each class; calibrated_
        says whether it did. SVM is always sigmoid-calibrated (it has no probabilities of its own).

    text: None (X is the numeric feature matrix), "stack" or "only" (X's last column is the
        document; see the module docstring).
    text_params: the text model's parameters over its defaults (`text_model`).

    A training set of one class predicts that class (predict_proba then has one column)."""

    def __init__(
        self,
        model: str = "xgboost",
        random_state: int = 0,
        params: dict[str, Any] | None = None,
        calibrate: bool = False,
        text: str | None = None,
        text_params: dict[str, Any] | None = None,
    ):
        self.model = model
        self.random_state = random_state
        self.params = params
        self.calibrate = calibrate
        self.text = text
        self.text_params = text_params

    @property
    def uses_document(self) -> bool:
        """Whether X must carry the document as its last column."""
        return self.text is not None

    @property
    def label(self) -> str:
        """The model's name in tables: "xgboost", "xgboost + text", "text"."""
        return {None: self.model, "stack": f"{self.model} + text", "only": "text"}[self.text]

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
        if self.text not in TEXT_MODES:
            raise ValueError(f"unknown text mode {self.text!r}; expected one of {TEXT_MODES}")
        X, y = validate_data(self, X, y, dtype=None if self.uses_document else np.float64)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) > 2:
            raise ValueError(f"Only binary classification is supported; y has {len(self.classes_)} classes")
        params = dict(self.params or {})
        self.calibrated_ = False
        self.text_model_ = None
        if self.uses_document:
            docs, X = _documents(X), _numeric(X)
            if len(self.classes_) == 2:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.text_model_ = _fitted_text(docs, encoded, self.text_params, self.random_state)
                    if self.text == "stack":
                        g = None if groups is None else np.asarray(groups)
                        X = np.hstack([X, _text_oof(docs, encoded, g, self.text_params, self.random_state)])
        if len(self.classes_) < 2:
            # A training fold of one class: the honest prediction is that class.
            self.estimator_ = self.model_ = DummyClassifier(strategy="prior").fit(X, encoded)
            return self
        if self.text == "only":
            # The text model's own probabilities: no second model over its single score.
            self.estimator_ = self.model_ = self.text_model_
            self.calibrated_ = False
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
        """X as the fitted model reads it: the numeric columns, then the text model's log-odds
        (stack), or the documents alone (only)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=None if self.uses_document else np.float64)
        if not self.uses_document:
            return X
        if self.text_model_ is None:  # fitted on one class: the dummy ignores X
            return _numeric(X)
        docs = _documents(X)
        if self.text == "only":
            return docs
        return np.hstack([_numeric(X), _log_odds(self.text_model_, docs)])

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
        return self._proba(self._checked(X))

    def _proba(self, X: np.ndarray) -> np.ndarray:
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
        return self._correct(self.predict_proba(X))

    def _correct(self, proba: np.ndarray) -> np.ndarray:
        if len(self.classes_) == 1:
            return np.full(len(proba), float(self.classes_[0] == 1))
        positive = np.flatnonzero(self.classes_ == 1)
        return proba[:, positive[0] if len(positive) else 1]

    def contributions(self, X: Any, method: str = "exact") -> np.ndarray:
        """Per-feature contributions to the log-odds of the second class (see the module
        docstring). For XGBoost `method` "approx" takes Saabas path attribution instead of exact
        TreeSHAP. With a stacked text model the last column is `text_score`'s; the text model
        alone gives its log-odds as the one column."""
        return self._contributions(self._checked(X), method)

    def explain(self, X: Any, method: str | None = "exact") -> tuple[np.ndarray, np.ndarray]:
        """(proba_correct(X), contributions(X, method)), reading X once (a text model's documents
        are vectorised once); `method` None: no contributions (shape (n, 0))."""
        # The fitted models' parameters were validated when they were fitted; validating them
        # again on every call is a third of a lone conversation's time.
        with config_context(skip_parameter_validation=True):
            Xc = self._checked(X)
            proba = self._correct(self._proba(Xc))
            return proba, np.zeros((len(Xc), 0)) if method is None else self._contributions(Xc, method)

    def _contributions(self, X: np.ndarray, method: str) -> np.ndarray:
        if self.text == "only" and self.text_model_ is not None:
            return _log_odds(self.text_model_, X)
        if isinstance(self.estimator_, DummyClassifier):
            return np.zeros(X.shape, dtype=np.float64)
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


def _numeric(X: np.ndarray) -> np.ndarray:
    return np.asarray(X[:, :-1], dtype=np.float64)


def _documents(X: np.ndarray) -> np.ndarray:
    docs = X[:, -1]
    if not all(isinstance(d, str) for d in docs):
        raise ValueError("a Verifier with a text model needs the document (a string) as X's last column")
    return docs.astype(object)


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
    return point_metrics(np.asarray(y), ScoreColumns.from_proba(proba, threshold))


TEXT_LABEL = "text"  # the text model alone; "<model> + text" is a model with it stacked
# The models training stacks the text model on. Any model can be stacked (make_verifier), but
# stacked SVM and k-NN were never near the best (task-disjoint CV, 3 seeds: airline logs 0.779
# and 0.697 against 0.865; real-model set 0.703 and 0.596 against 0.857), at a third of the time
# of model selection.
STACKED_MODELS: tuple[str, ...] = ("logreg", "random_forest", "xgboost")
# A logistic regression over the write agreement with the siblings and the text model's log-odds:
# with ~100 labelled runs the models over every feature overfit (airline logs: xgboost + text 0.792
# AUROC against 0.863 for this one).
AGREEMENT_LABEL = "agreement + text"
AGREEMENT_FEATURES = ("sibling_write_agreement_mean", "sibling_same_writes")


def candidate_names(names: Sequence[str] = MODEL_NAMES, text: bool = True) -> list[str]:
    """The verifiers training compares: each model on the features and, with `text`, the text
    model alone, each of STACKED_MODELS with the text model stacked, and AGREEMENT_LABEL."""
    if not text:
        return list(names)
    stacked = [f"{n} + {TEXT_LABEL}" for n in names if n in STACKED_MODELS]
    return [*names, TEXT_LABEL, *stacked, AGREEMENT_LABEL]


def make_verifier(label: str, seed: int = 0, calibrate: bool = False) -> Verifier:
    """The unfitted Verifier a candidate name stands for (`candidate_names`, Verifier.label)."""
    if label == TEXT_LABEL:
        return Verifier("logreg", seed, calibrate=calibrate, text="only")
    if label == AGREEMENT_LABEL:
        return Verifier("logreg", seed, calibrate=calibrate, text="stack")
    model, _, text = label.partition(f" + {TEXT_LABEL}")
    if model not in MODEL_NAMES or text:
        raise ValueError(
            f"unknown verifier {label!r}; expected a model of {', '.join(MODEL_NAMES)}, "
            f"'{TEXT_LABEL}', '<model> + {TEXT_LABEL}' or '{AGREEMENT_LABEL}'"
        )
    return Verifier(model, seed, calibrate=calibrate, text="stack" if label != model else None)


def candidate_features(label: str, features: Sequence[str]) -> list[str]:
    """The feature columns candidate `label` reads, of `features`: none for the text model alone
    (it reads the document only, so scoring with it computes no features), AGREEMENT_FEATURES for
    the agreement candidate, all for the others."""
    if label == TEXT_LABEL:
        return []
    if label != AGREEMENT_LABEL:
        return list(features)
    missing = [f for f in AGREEMENT_FEATURES if f not in features]
    if missing:
        raise ValueError(f"verifier {label!r} needs the features {', '.join(missing)}")
    return list(AGREEMENT_FEATURES)


def model_input(verifier: Verifier, X: np.ndarray, documents: Sequence[str] | None) -> np.ndarray:
    """X as `verifier` reads it: the features, with the documents as the last column for a text
    model (magv.verify.document.with_documents)."""
    if not verifier.uses_document:
        return np.asarray(X, dtype=np.float64)
    if documents is None:
        raise ValueError(f"verifier {verifier.label!r} reads documents; none were given")
    from magv.verify.document import with_documents

    return with_documents(X, documents)


def _columns(X: np.ndarray, label: str, features: Sequence[str] | None) -> np.ndarray:
    if label == TEXT_LABEL:
        return X[:, :0]
    if label != AGREEMENT_LABEL:
        return X
    if features is None:
        raise ValueError(f"verifier {label!r} needs the feature names of X")
    return X[:, [list(features).index(f) for f in candidate_features(label, features)]]


def cross_validate_models(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    names: Sequence[str] = MODEL_NAMES,
    documents: Sequence[str] | None = None,
    features: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Out-of-fold metrics per model (`names`: candidate names, `candidate_names`; the text ones
    need `documents`, one per row; AGREEMENT_LABEL needs the column names, `features`). Predictions of all folds are pooled before scoring, so tiny
    folds (one class, two rows) still give defined numbers. Each result keeps its out-of-fold
    predictions, `oof`: {"y": labels, "proba": P(correct)} in row order."""
    X, y, groups = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64), np.asarray(groups)
    check_trainable(y, groups)
    splits = grouped_splits(y, groups, folds, seed)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        verifier = make_verifier(name, seed)
        Xin = model_input(verifier, _columns(X, name, features), documents)
        oof = np.zeros(len(y))
        for tr, te in splits:
            oof[te] = clone(verifier).fit(Xin[tr], y[tr], groups=groups[tr]).proba_correct(Xin[te])
        results[name] = {
            **metrics(y, oof),
            "folds": len(splits),
            "n": int(len(y)),
            "positives": int(y.sum()),
            "oof": {"y": y.tolist(), "proba": oof.round(6).tolist()},
        }
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
