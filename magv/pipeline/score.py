"""score: the registered verifier's probability and verdict for every trajectory with features."""

from __future__ import annotations

from magv.pipeline.base import StageReport


def run(
    store, settings, model_id: str | None = None, threshold: float | None = None, model_file=None
) -> StageReport:
    from magv.verify.scoring import score

    result = score(store, settings, model_id=model_id, threshold=threshold, model_file=model_file)
    report = StageReport("score", planned=1, done=1, written=result.n, result=result)
    return report
