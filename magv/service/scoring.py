"""A saved verifier scoring trajectories with no database: what `magv verify score --input` and
`magv serve verifier` share.

    scorer = load_scorer(settings, model_file=Path("model.skops"))
    scorer.score(trajectories, groups, questions)  # one Verdict per trajectory

Trajectories with the same group key are siblings (runs of one question or task), as in
`TrajectoryFeaturizer.transform`; `rows` limits which of them get a verdict (the others are
context). Production traffic has no alternates, so the alternate features are NEUTRAL, as for a
pipeline question whose alternates gave no runs.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from magv.config import Settings
from magv.errors import BadInput, RunFailed
from magv.models import Trajectory

TOP_REASONS = 5


@dataclass(frozen=True)
class Verdict:
    correct: bool
    probability: float
    threshold: float
    reasons: list[dict[str, Any]]  # the top contributions: feature, its value, contribution

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": "correct" if self.correct else "incorrect", "probability": self.probability,
                "threshold": self.threshold, "reasons": self.reasons}  # fmt: skip


class Scorer:
    """A loaded model bundle (`magv.verify.models.load_model`) with the featurizer it scores through.

    model_id: what names the model in answers (the registry id, or the file's name).
    contributions: "exact" | "approx" | "none" (verify.contributions)."""

    def __init__(
        self,
        bundle: dict[str, Any],
        featurizer: Any,
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
        return {"id": self.model_id, "name": self.model_name, "threshold": self.threshold,
                "features": len(self.names)}  # fmt: skip

    def score(
        self,
        trajectories: Sequence[Trajectory],
        groups: Sequence[Hashable],
        questions: Mapping[Hashable, str] | None = None,
        rows: Sequence[int] | None = None,
    ) -> list[Verdict]:
        """A verdict for each trajectory of `rows` (default all), in that order."""
        from magv.verify.document import documents
        from magv.verify.models import model_input
        from magv.verify.training import top_contributions

        if not trajectories:
            return []
        X = self.featurizer.transform(trajectories, groups, questions=questions, rows=rows)[:, self.columns]
        if self.verifier.uses_document:
            wanted = range(len(trajectories)) if rows is None else rows
            X = model_input(self.verifier, X, documents([_trajectory(trajectories[i]) for i in wanted]))
        with self._lock:
            proba = self.verifier.proba_correct(X)
            if self.contributions == "none":
                C = np.zeros((len(X), 0))
            else:
                C = self.verifier.contributions(X, self.contributions)
        index, values = top_contributions(C, self.top)
        out = []
        for i, p in enumerate(proba):
            reasons = [{"feature": self.inputs[j], "value": _value(X, i, j, self.numeric), "contribution": float(v)}
                       for j, v in zip(index[i], values[i], strict=True)]  # fmt: skip
            p = float(p)
            out.append(Verdict(p >= self.threshold, round(p, 6), self.threshold, reasons))
        return out


def _trajectory(t: Any) -> Trajectory:
    return t if isinstance(t, Trajectory) else Trajectory.model_validate(t)


def _value(X: np.ndarray, i: int, j: int, numeric: int) -> float | None:
    """A reason's value: its feature's; None for the text model's column, which has no value
    beside its contribution."""
    return round(float(X[i, j]), 6) if j < numeric else None


def load_bundle(
    settings: Settings, model_file: Path | None = None, model_id: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(registry row, bundle): the named file (trusted, as the user named it), else the registered
    model (`model_id`, or the latest) of the settings' database, which must exist; it is opened read
    only. Either way the file passes load_model's type checks and the feature-set check."""
    from magv.store import Store
    from magv.verify.models import check_model_path, load_model
    from magv.verify.training import check_feature_set, load_registered

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
    check_feature_set(row, bundle)
    if not hasattr(bundle["verifier"], "classes_"):
        raise RunFailed(f"model {row['id']} ({row['path']}) is not fitted: run `magv verify train` again")
    return row, bundle


def load_scorer(
    settings: Settings,
    *,
    model_file: Path | None = None,
    model_id: str | None = None,
    threshold: float | None = None,
    embedder: Any = None,
    domain: str | None = None,
) -> Scorer:
    """A Scorer over the settings' embedder (built on first use unless `embedder` is given) and the
    write tools of `domain` (none known without one)."""
    from magv.llm.embeddings import lazy_embedder
    from magv.verify.features import TrajectoryFeaturizer, write_tools_of
    from magv.verify.training import model_threshold

    row, bundle = load_bundle(settings, model_file, model_id)
    featurizer = TrajectoryFeaturizer(
        lazy_embedder(settings) if embedder is None else embedder,
        write_tools_of(domain) if domain else (),
    )
    return Scorer(bundle, featurizer, model_id=str(row["id"]),
                  threshold=model_threshold(bundle, settings) if threshold is None else threshold,
                  contributions=settings.verify.contributions)  # fmt: skip
