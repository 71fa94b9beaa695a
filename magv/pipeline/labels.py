"""gold_labels: each run (or, with verify.mct_only, each MCT) compared with its question's target
trajectory (magv.verify.labels)."""

from __future__ import annotations

from magv.pipeline.base import StageReport


def run(store, settings, mode: str | None = None, arguments: bool | str | None = None) -> StageReport:
    from magv.verify.labels import gold_labels

    v = settings.verify
    written = gold_labels(
        store,
        mode or v.gold_match,
        v.gold_arguments if arguments is None else arguments,
        v.gold_overrides,
        mct_only=v.mct_only,
    )
    return StageReport("gold_labels", planned=1, done=1, written=written)
