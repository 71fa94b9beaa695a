"""train: cross-validate the verifier models, refit and register the best (magv.verify.training)."""

from __future__ import annotations

from magv.errors import MagvError, RunFailed
from magv.pipeline.base import StageReport


def run(store, settings, **options) -> StageReport:
    """Train; a failure is raised as a MagvError with its reason, for the runner to record."""
    from magv.verify.training import train

    try:
        result = train(store, settings, **options)
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
    report = StageReport("train", planned=1, done=1, written=1, result=result)
    return report
