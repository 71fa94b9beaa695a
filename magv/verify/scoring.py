"""The one scorer: a saved verifier's probability, verdict and top feature contributions, for the
feature rows of the store (`score`, the stage), for trajectories of a file (`magv verify score
--input`) and over HTTP (`magv serve verifier`).

    scorer = load_scorer(settings, model_file=Path("model.skops"), tools=log_tools(domain="retail"))
    scorer.score(trajectories, groups, questions)  # one Verdict per trajectory

Trajectories with the same group key are siblings (runs of one question or task), as in
`TrajectoryFeaturizer.transform`; `rows` limits which of them get a verdict (the others are
context). Production traffic has no alternates, so the alternate features are NEUTRAL, as for a
pipeline question whose alternates gave no runs, unless re-asking the user's agent gave some
(`magv.pipeline.reask`). The featurizer computes only what the model
reads: no text is embedded for a model without embedding features.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from magv.config import Settings
from magv.errors import BadInput, RunFailed
from magv.models import Trajectory

if TYPE_CHECKING:
    from magv.store import Store

TOP_REASONS = 5


@dataclass(frozen=True)
class Verdict:
    correct: bool
    probability: float
    threshold: float
    reasons: list[dict[str, Any]]  # the top contributions: feature, its value, contribution

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": "correct" if self.correct else "incorrect",
            "probability": self.probability,
            "threshold": self.threshold,
            "reasons": self.reasons,
        }


@dataclass
class MatrixPrediction:
    """A scorer's answer for rows of a feature matrix: P(correct), the verdict at the threshold and
    each row's top contributions (column indices into the model's features, values)."""

    proba: np.ndarray
    correct: np.ndarray
    top_index: np.ndarray
    top_values: np.ndarray


@dataclass
class ScoreResult:
    model_id: str
    model_name: str
    n: int
    n_correct: int
    threshold: float
    seconds: dict[str, float] = field(default_factory=dict)


def top_contributions(C: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """(column indices, values) of each row's `top` largest contributions by magnitude, largest
    first; values rounded to 6 places, NaN as 0 (JSON has no NaN)."""
    k = min(top, C.shape[1])
    idx = np.argsort(-np.abs(C), axis=1, kind="stable")[:, :k]
    return idx, np.nan_to_num(np.take_along_axis(C, idx, axis=1)).round(6)


class Scorer:
    """A loaded model bundle (`magv.verify.models.load_model`) with the featurizer it scores through.

    model_id: what names the model in answers (the registry id, or the file's name).
    featurizer: a TrajectoryFeaturizer (None: the scorer takes feature matrices only, `predict`).
    contributions: "exact" | "approx" | "none" (verify.contributions)."""

    def __init__(
        self,
        bundle: dict[str, Any],
        featurizer: Any = None,
        *,
        model_id: str,
        threshold: float = 0.5,
        contributions: str = "exact",
        top: int = TOP_REASONS,
    ):
        from magv.verify.features import FEATURE_NAMES
        from magv.verify.training import input_names

        self.verifier = bundle["verifier"]
        self.names: list[str] = list(bundle["features"])
        self.inputs = input_names(self.verifier, self.names)  # the columns of its contributions
        self.numeric = 0 if self.verifier.text == "only" else len(self.names)
        self.columns = [FEATURE_NAMES.index(n) for n in self.names]
        self.featurizer = featurizer
        self.model_id = model_id
        self.model_name = str(bundle.get("name") or self.verifier.model)
        self.threshold = threshold
        self.contributions = contributions
        self.top = top
        # XGBoost's booster takes parameters on every contributions call: one scoring at a time.
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {
            "id": self.model_id,
            "name": self.model_name,
            "threshold": self.threshold,
            "features": len(self.names),
        }

    def predict(self, X: np.ndarray) -> MatrixPrediction:
        """The model's answer for feature rows (columns: the model's features, in its order)."""
        with self._lock:
            proba, C = self.verifier.explain(X, None if self.contributions == "none" else self.contributions)
            proba = np.asarray(proba, dtype=np.float64)
        index, values = top_contributions(C, self.top)
        return MatrixPrediction(proba, proba >= self.threshold, index, values)

    def features(
        self,
        trajectories: Sequence[Trajectory],
        groups: Sequence[Hashable],
        questions: Mapping[Hashable, str] | None = None,
        rows: Sequence[int] | None = None,
        alternates: Mapping[Hashable, Sequence[Any]] | None = None,
    ) -> np.ndarray:
        """The model's input rows for `rows` of the trajectories: the featurizer's features in the
        model's columns, and each run's document as the last column for a model that reads text."""
        from magv.verify.document import documents
        from magv.verify.models import model_input

        wanted = range(len(trajectories)) if rows is None else rows
        if self.columns:
            X = self.featurizer.transform(
                trajectories, groups, questions=questions, rows=rows, alternates=alternates
            )[:, self.columns]
        else:  # the text model alone reads no feature: nothing to compute
            X = np.zeros((len(wanted), 0))
        if self.verifier.uses_document:
            X = model_input(self.verifier, X, documents([_trajectory(trajectories[i]) for i in wanted]))
        return X

    def score(
        self,
        trajectories: Sequence[Trajectory],
        groups: Sequence[Hashable],
        questions: Mapping[Hashable, str] | None = None,
        rows: Sequence[int] | None = None,
        alternates: Mapping[Hashable, Sequence[Any]] | None = None,
    ) -> list[Verdict]:
        """A verdict for each trajectory of `rows` (default all), in that order; `alternates`: group
        -> its alternates (`magv.verify.features.Alternate`) where there are any."""
        if not trajectories:
            return []
        X = self.features(trajectories, groups, questions, rows, alternates)
        p = self.predict(X)
        out = []
        for i, prob in enumerate(p.proba):
            reasons = [
                {"feature": self.inputs[j], "value": _value(X, i, j, self.numeric), "contribution": float(v)}
                for j, v in zip(p.top_index[i], p.top_values[i], strict=True)
            ]
            out.append(Verdict(bool(p.correct[i]), round(float(prob), 6), self.threshold, reasons))
        return out


def _trajectory(t: Any) -> Trajectory:
    return t if isinstance(t, Trajectory) else Trajectory.model_validate(t)


def _value(X: np.ndarray, i: int, j: int, numeric: int) -> float | None:
    """A reason's value: its feature's; None for the text model's column, which has no value
    beside its contribution."""
    return round(float(X[i, j]), 6) if j < numeric else None


def check_scorable(row: dict[str, Any], bundle: dict[str, Any]) -> None:
    """A model that can score what this magv computes: of this feature set, and fitted."""
    from magv.verify.training import check_feature_set

    check_feature_set(row, bundle)
    if not hasattr(bundle["verifier"], "classes_"):
        raise RunFailed(f"model {row['id']} ({row['path']}) is not fitted: run `magv verify train` again")


def load_bundle(
    settings: Settings, model_file: Path | None = None, model_id: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(registry row, bundle): the named file (trusted, as the user named it), else the registered
    model (`model_id`, or the latest) of the settings' database, which must exist; it is opened read
    only. Either way the file passes load_model's type checks and `check_scorable`."""
    from magv.store import Store
    from magv.verify.models import check_model_path, load_model
    from magv.verify.training import load_registered

    if model_file is not None and model_id is None:
        path = check_model_path(Path(model_file), Path("."), explicit=True)
        bundle = load_model(path)
        row: dict[str, Any] = {"id": bundle.get("model_id") or path.name, "path": str(path), "features": None}
    else:
        database = Path(settings.database)
        if not database.is_file():
            raise BadInput(
                f"--model-file: needed, as there is no database at {database} to find the registered "
                "model in (train one with `magv verify train`, or name a model file)"
            )
        store = Store(database, read_only=True)
        try:
            row, bundle = load_registered(store, model_id, Path(settings.verify.models_dir), model_file)
        finally:
            store.close()
    check_scorable(row, bundle)
    return row, bundle


def load_scorer(
    settings: Settings,
    *,
    model_file: Path | None = None,
    model_id: str | None = None,
    threshold: float | None = None,
    embedder: Any = None,
    tools: Any = None,
) -> Scorer:
    """A Scorer whose featurizer computes the model's features only: it embeds texts (through the
    settings' embedder, built on first use, unless `embedder` is given) only when the model reads
    an embedding feature; the write features compare the write tools of `tools` (a LogTools; none
    known without)."""
    from magv.llm.embeddings import lazy_embedder
    from magv.verify.features import TrajectoryFeaturizer, needs_embeddings
    from magv.verify.training import model_threshold

    row, bundle = load_bundle(settings, model_file, model_id)
    embeds = needs_embeddings(bundle["features"])
    featurizer = TrajectoryFeaturizer(
        (lazy_embedder(settings) if embedder is None else embedder) if embeds else None,
        tools.writes if tools is not None else (),
    )
    return Scorer(
        bundle,
        featurizer,
        model_id=str(row["id"]),
        threshold=model_threshold(bundle, settings) if threshold is None else threshold,
        contributions=settings.verify.contributions,
    )


def score(
    store: Store,
    settings: Settings,
    *,
    model_id: str | None = None,
    threshold: float | None = None,
    top: int = TOP_REASONS,
    model_file: Path | None = None,
) -> ScoreResult:
    """The score stage: predict every run that has a feature row of the model's feature version,
    and store the predictions in one statement."""
    from magv.verify.models import model_input
    from magv.verify.training import checked_matrix, load_registered, model_threshold, run_documents

    t0 = time.perf_counter()
    row, bundle = load_registered(store, model_id, Path(settings.verify.models_dir), model_file)
    check_scorable(row, bundle)
    threshold = model_threshold(bundle, settings) if threshold is None else threshold
    scorer = Scorer(
        bundle, model_id=row["id"], threshold=threshold, contributions=settings.verify.contributions, top=top
    )
    run_ids, X = checked_matrix(store, bundle["feature_version"], scorer.names)
    if scorer.verifier.uses_document:
        X = model_input(scorer.verifier, X, run_documents(store, run_ids))
    t1 = time.perf_counter()
    p = scorer.predict(X)
    t2 = time.perf_counter()
    store.bulk_add_predictions(
        row["id"], threshold, run_ids, p.proba, p.correct, scorer.inputs, p.top_index, p.top_values
    )
    t3 = time.perf_counter()
    return ScoreResult(
        model_id=row["id"],
        model_name=row["name"],
        n=len(run_ids),
        n_correct=int(p.correct.sum()),
        threshold=threshold,
        seconds={"load": t1 - t0, "predict": t2 - t1, "write": t3 - t2},
    )
