"""The verifier's stages for the runner (`verify_stages`, the live cascade's rescoring): each calls
magv.verify and returns a `StageReport`.

`magv verify features|label|score` call magv.verify directly; `magv verify train` comes through
`train` here for its failures: a model library failing on odd data, or labels of runs that never
reached the model, become a `MagvError` that says why, for the command as for the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magv.config import Settings
from magv.errors import MagvError, RunFailed
from magv.pipeline.base import StageReport

if TYPE_CHECKING:
    from magv.store import Store


def features(
    store: Store,
    settings: Settings,
    alternates: bool = True,
    replace: bool = False,
    mct_only: bool | None = None,
) -> StageReport:
    """A feature row for every run with siblings or alternates, or each question's MCT only
    (`mct_only`, default verify.mct_only)."""
    from magv.llm.embeddings import lazy_embedder
    from magv.verify.features import compute_features

    if mct_only is None:
        mct_only = settings.verify.mct_only
    written = compute_features(
        store, lazy_embedder(settings), alternates=alternates, replace=replace, mct_only=mct_only
    )
    return StageReport("features", planned=1, done=1, written=written)


def gold_labels(
    store: Store, settings: Settings, mode: str | None = None, arguments: bool | str | None = None
) -> StageReport:
    """Each run (or, with verify.mct_only, each MCT) compared with its question's target
    trajectory."""
    from magv.verify import labels

    v = settings.verify
    arguments = v.gold_arguments if arguments is None else arguments
    written = labels.gold_labels(
        store, mode or v.gold_match, arguments, v.gold_overrides, mct_only=v.mct_only
    )
    return StageReport("gold_labels", planned=1, done=1, written=written)


def train(store: Store, settings: Settings, **options: Any) -> StageReport:
    """Cross-validate the verifier models, refit and register the best; a failure is raised as a
    MagvError with its reason, for the runner to record."""
    from magv.verify import training

    try:
        result = training.train(store, settings, **options)
    except MagvError as exc:
        # Expected on small or one-sided data: a recorded outcome, not a traceback. Runs that never
        # reached the model look like wrong answers; say so rather than blame the labels.
        statuses = store.labelled_run_statuses()
        unreached = statuses.get("llm_error", 0)
        if unreached:
            raise RunFailed(
                f"{unreached} of {sum(statuses.values())} labelled runs never got an answer from the model "
                f"(status llm_error: see `magv llm stats`, `magv doctor`); {exc}"
            ) from exc
        raise
    except Exception as exc:  # a model library failing on odd data must not end the pipeline
        raise RunFailed(f"training failed: {type(exc).__name__}: {exc}") from exc
    return StageReport("train", planned=1, done=1, written=1, result=result)


def score(
    store: Store,
    settings: Settings,
    model_id: str | None = None,
    threshold: float | None = None,
    model_file: Path | None = None,
) -> StageReport:
    """The registered verifier's probability and verdict for every trajectory with features."""
    from magv.verify import scoring

    result = scoring.score(store, settings, model_id=model_id, threshold=threshold, model_file=model_file)
    return StageReport("score", planned=1, done=1, written=result.n, result=result)
