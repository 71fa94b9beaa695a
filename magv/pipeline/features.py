"""features: the feature row of every verified trajectory (computed by magv.verify.features)."""

from __future__ import annotations

from magv.pipeline.base import StageReport


def run(store, settings, alternates: bool = True, replace: bool = False) -> StageReport:
    from magv.llm.embeddings import lazy_embedder
    from magv.verify.features import compute_features

    written = compute_features(store, lazy_embedder(settings), alternates=alternates, replace=replace)
    return StageReport("features", planned=1, done=1, written=written)
