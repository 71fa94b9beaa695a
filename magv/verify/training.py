"""The verifier's train and score stages over the store.

train: labelled feature rows -> grouped CV of every model -> the best refit on all rows, calibrated,
saved (skops) and registered; the registry's reads and checks that scoring shares
(`load_registered`, `check_feature_set`, `checked_matrix`). Scoring itself is magv.verify.scoring.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from magv.config import Settings
from magv.errors import BadInput, RunFailed
from magv.models import make_id
from magv.verify.evaluation import evaluate, without_oof
from magv.verify.features import FEATURE_NAMES, FEATURE_VERSION
from magv.verify.metrics import ALL_METRICS, N_BOOTSTRAP
from magv.verify.models import (
    MODEL_NAMES,
    TEXT_FEATURE,
    Verifier,
    best_model,
    candidate_features,
    candidate_names,
    check_model_path,
    cross_validate_models,
    grouped_splits,
    load_model,
    make_verifier,
    model_input,
    save_model,
)
from magv.verify.selection import choose_threshold, oof_proba

if TYPE_CHECKING:
    from magv.store import Store

# Fewer labelled rows than this (or of a class) give a model whose CV metrics mean nothing: such a
# training is refused rather than registered.
MIN_TRAINING_ROWS = 8
MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's random_state
MIN_CLASS_ROWS = 2


@dataclass
class TrainingData:
    run_ids: list[str]
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    features: list[str]


def run_documents(store: Store, run_ids: Sequence[str], errors: bool = True) -> list[str]:
    """The text model's document of each run (magv.verify.document), in the order of run_ids."""
    from magv.models import Trajectory
    from magv.verify.document import document

    rows = store.trajectories_json(run_ids)
    by_id = {r["id"]: document(Trajectory.model_validate_json(r["trajectory"]), errors) for r in rows}
    return [by_id[r] for r in run_ids]


@dataclass
class TrainResult:
    training_id: str
    model_id: str
    best: str
    path: Path
    results: dict[str, dict[str, Any]]
    calibrated: bool
    n_rows: int
    evaluation: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The shape `magv verify train --json` prints: per model its metrics with `intervals`
        (metric -> [low, high]) and `confusion`; the baselines, judges, differences and ablation of
        `magv.verify.evaluation` beside them."""
        keep = (*ALL_METRICS, "intervals", "confusion", "n", "positives", "folds")
        rows = [{"name": n, **{k: m[k] for k in keep if k in m}} for n, m in self.results.items()]
        ev = self.evaluation
        return {
            "models": rows,
            "best": self.best,
            "select_by": ev.get("select_by"),
            "n": self.n_rows,
            "groups": ev.get("groups"),
            "bootstrap": ev.get("bootstrap"),
            "baselines": ev.get("baselines", {}),
            "judges": ev.get("judges", []),
            "differences": ev.get("differences", {}),
            "ablation": ev.get("ablation", []),
            "selected": ev.get("selected"),
        }


def checked_matrix(store: Store, version: str, names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(run_ids, X) of every feature row of a version; a row that lacks a feature is an error."""
    run_ids, X = store.feature_matrix(version, names)
    bad = np.isnan(X)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise RunFailed(
            f"features of run {run_ids[i]} (version {version}) lack {names[j]!r}; "
            "recompute them with `magv verify features --replace`"
        )
    return run_ids, X


def training_data(store: Store, version: str = FEATURE_VERSION) -> TrainingData:
    """Feature rows of every run that has an effective label (an MCT or any other run), with the
    CV group of its question: its group_id, else the question id."""
    labels = store.effective_labels()
    names = list(FEATURE_NAMES)
    run_ids, X = checked_matrix(store, version, names)
    info = store.run_questions([r for r in run_ids if r in labels])
    keep = [i for i, r in enumerate(run_ids) if r in info]
    run_ids = [run_ids[i] for i in keep]
    y = np.array([int(labels[r].correct) for r in run_ids], dtype=np.int64)
    groups = np.array([info[r]["group_id"] or info[r]["question_id"] for r in run_ids])
    return TrainingData(run_ids, X[keep], y, groups, names)


def train(
    store: Store,
    settings: Settings,
    *,
    folds: int | None = None,
    seed: int | None = None,
    select_by: str = "roc_auc",
    names: Sequence[str] = MODEL_NAMES,
    bootstrap: int = N_BOOTSTRAP,
    ablation: bool = True,
    text: bool | None = None,
    objective: str | None = None,
    repeats: int = 3,
) -> TrainResult:
    """Cross-validate `names` (with `text`, default verify.text, the text model alone and stacked
    on each too), evaluate them against the baselines and judges (magv.verify.evaluation:
    `bootstrap` replicates for the intervals, 0 for none; `ablation` the feature families; the
    selection nested in the folds), refit the best (magv.definitions.best_model) calibrated, set its
    threshold for `objective` (default verify.threshold_objective) on its out-of-fold
    predictions, save and register it. `repeats`: CV seeds of the nested selection's figures."""
    folds = folds or settings.verify.cv_folds
    seed = settings.pipeline.seed if seed is None else seed
    text = settings.verify.text if text is None else text
    objective = objective or settings.verify.threshold_objective
    check_seed(seed)
    check_models_dir(Path(settings.verify.models_dir))
    data = training_data(store)
    check_enough_rows(data.y)
    docs = run_documents(store, data.run_ids) if text else None
    names = candidate_names(names, text=text)
    results = cross_validate_models(
        data.X,
        data.y,
        data.groups,
        folds=folds,
        seed=seed,
        names=names,
        documents=docs,
        features=data.features,
    )
    evaluation = evaluate(
        data.X,
        data.y,
        data.groups,
        data.features,
        results,
        run_ids=data.run_ids,
        judge_verdicts=store.judge_verdicts(),
        folds=folds,
        seed=seed,
        n_bootstrap=bootstrap,
        select_by=select_by,
        ablation=ablation,
        documents=docs,
        call_documents=run_documents(store, data.run_ids, errors=False),
        objective=objective,
        target_precision=settings.verify.target_precision,
        repeats=repeats,
    )
    best = best_model(results, select_by)
    features = candidate_features(best, data.features)
    verifier = make_verifier(best, seed, calibrate=True)
    Xin = model_input(verifier, data.X[:, [data.features.index(f) for f in features]], docs)
    verifier.fit(Xin, data.y, groups=data.groups)
    threshold = None
    if objective != "fixed":
        # chosen on out-of-fold probabilities of the model as it is saved (calibrated), on this
        # training's folds, as the deployed model's probabilities are what it will cut
        oof = oof_proba(
            make_verifier(best, seed, calibrate=True),
            Xin,
            data.y,
            data.groups,
            grouped_splits(data.y, data.groups, folds, seed),
        )
        threshold = choose_threshold(data.y, oof, objective, settings.verify.target_precision)

    # Same labelled rows, same settings -> same ids: retraining unchanged data registers nothing new.
    training_id = make_id(
        "training", FEATURE_VERSION, sorted(zip(data.run_ids, data.y.tolist())), folds, seed, list(names)
    )
    model_id = make_id("verifier", training_id, best, select_by, objective)
    path = Path(settings.verify.models_dir) / f"{model_id}.skops"
    save_model(
        path,
        verifier,
        features,
        FEATURE_VERSION,
        model_id=model_id,
        name=best,
        calibrated=verifier.calibrated_,
        threshold=threshold,
        objective=objective,
        inputs=model_inputs(verifier, features),
    )
    with store.transaction():
        store.add_cv_results(training_id, results)  # with each model's out-of-fold predictions
        store.add_verifier_model(
            {
                "id": model_id,
                "name": best,
                "path": str(path),
                "feature_version": FEATURE_VERSION,
                "features": features,
                "metrics": {
                    **without_oof(results)[best],
                    "calibrated": verifier.calibrated_,
                    "select_by": select_by,
                    "training_id": training_id,
                    "contributions": verifier.contribution_method,
                    "threshold": threshold,
                    "objective": objective,
                    "evaluation": evaluation,
                },
            }
        )
    return TrainResult(
        training_id, model_id, best, path, results, verifier.calibrated_, len(data.y), evaluation
    )


def check_feature_set(row: dict[str, Any], bundle: dict[str, Any]) -> None:
    """A model file of another feature set (another magv version, or a file swapped in for the
    registered one) would score columns it was not trained on."""
    version, names = bundle.get("feature_version"), bundle.get("features")
    where = f"model {row['id']} ({row['path']})"
    if version != FEATURE_VERSION:
        raise RunFailed(
            f"{where} was trained on feature version {version!r}; this magv computes version "
            f"{FEATURE_VERSION}: run `magv verify train` again"
        )
    if not isinstance(names, list) or not set(names) <= set(FEATURE_NAMES):
        unknown = sorted(set(names or []) - set(FEATURE_NAMES))[:5] if isinstance(names, list) else names
        raise RunFailed(
            f"{where} holds features this magv does not compute ({unknown}): run `magv verify train` again"
        )
    registered = row.get("features")
    registered = json.loads(registered) if isinstance(registered, str) else registered
    if registered is not None and list(registered) != names:
        raise RunFailed(
            f"{where}: the file's feature list differs from the registered one; the file was replaced: "
            "run `magv verify train` again"
        )


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise BadInput(f"pipeline.seed: expected an integer from 0 to {MAX_SEED} for training, got {seed}")


def check_models_dir(models_dir: Path) -> None:
    """Checked before any CV: a models_dir that cannot hold files would fail only after it."""
    if models_dir.exists() and not models_dir.is_dir():
        raise BadInput(
            f"verify.models_dir: {models_dir} is not a directory; expected a folder for model files"
        )
    parent = next((p for p in models_dir.parents if p.exists()), None)
    if not models_dir.exists() and parent is not None and not parent.is_dir():
        raise BadInput(f"verify.models_dir: {parent} is a file, so {models_dir} cannot be created")


def check_enough_rows(y: np.ndarray) -> None:
    n, positives = len(y), int(np.sum(y == 1))
    smallest = min(positives, n - positives)
    if n and (n < MIN_TRAINING_ROWS or smallest < MIN_CLASS_ROWS) and 0 < positives < n:
        raise RunFailed(
            f"only {n} labelled trajectories ({positives} correct, {n - positives} incorrect): training "
            f"needs at least {MIN_TRAINING_ROWS}, with {MIN_CLASS_ROWS} of each class; nothing was trained "
            "(label more with `magv verify annotate` or `magv verify label --from FILE`)"
        )


def load_registered(
    store: Store,
    model_id: str | None = None,
    models_dir: Path | None = None,
    model_file: Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(registry row, loaded bundle) of a model id, or of the latest model. The registered path must
    lie in `models_dir` (when given); `model_file`, named by the user, replaces it and is trusted."""
    row = store.verifier_model(model_id) if model_id else store.latest_verifier_model()
    if row is None:
        if model_id:
            raise BadInput(f"--model {model_id}: no such verifier model (see `magv verify train`)")
        raise RunFailed("no trained verifier: run `magv verify train` first")
    if model_file is not None:
        return row, load_model(check_model_path(Path(model_file), Path("."), explicit=True))
    path = Path(row["path"])
    if models_dir is not None:
        check_model_path(path, models_dir)
    return row, load_model(path)


def model_inputs(verifier: Verifier, features: Sequence[str]) -> dict[str, bool]:
    """What a model reads besides its feature columns: the documents (a text model), and whether
    any of its features needs an embedder (so scoring can skip embedding for a model that does not)."""
    from magv.verify.features import needs_embeddings

    embedded = needs_embeddings(features)
    return {"document": verifier.uses_document, "embeddings": embedded and verifier.text != "only"}


def model_threshold(bundle: dict[str, Any], settings: Settings) -> float:
    """The decision threshold a saved model scores with: the one its training chose for an
    objective (verify.threshold_objective), else verify.threshold."""
    chosen = bundle.get("threshold")
    return float(chosen) if isinstance(chosen, int | float) else settings.verify.threshold


def input_names(verifier: Verifier, names: Sequence[str]) -> list[str]:
    """The names of the columns `verifier.contributions` returns for feature columns `names`."""
    if verifier.text == "only":
        return [TEXT_FEATURE]
    return [*names, TEXT_FEATURE] if verifier.text == "stack" else list(names)
