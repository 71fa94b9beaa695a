"""features: a feature row for every run with siblings or alternates, or each question's MCT only
(computed by magv.verify.features)."""

from __future__ import annotations

from magv.pipeline.base import StageReport


def run(
    store, settings, alternates: bool = True, replace: bool = False, mct_only: bool | None = None
) -> StageReport:
    from magv.llm.embeddings import lazy_embedder
    from magv.verify.features import compute_features

    if mct_only is None:
        mct_only = settings.verify.mct_only
    written = compute_features(
        store, lazy_embedder(settings), alternates=alternates, replace=replace, mct_only=mct_only
    )
    return StageReport("features", planned=1, done=1, written=written)
