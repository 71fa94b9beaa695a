"""The verifier half as a Prefect flow: features -> gold labels -> train -> score on the configured
database (for stores filled by imports or by runs elsewhere). No model server is started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from magv.config import load_settings
from magv.pipeline.base import StageReport
from magv.pipeline.runner import verify_stages
from magv.pipeline.session import session


@flow(name="magv-verify", log_prints=True)
def verify_flow(
    settings: dict[str, Any] | None = None, settings_path: str | None = None, alternates: bool = True
) -> dict[str, Any]:
    cfg = settings or load_settings(Path(settings_path) if settings_path else None)
    with session(cfg, "verify", endpoints=False) as sess:
        reports = verify_stages(sess, alternates=alternates)
        return sess.result(results={name: outcome(r) for name, r in reports.items()})


def outcome(report: StageReport) -> dict[str, Any]:
    """A stage's outcome as JSON: its error, or what it wrote (and the model it trained or used)."""
    if report.failed:
        return {"error": report.errors[0] if report.errors else f"{report.name} failed"}
    out: dict[str, Any] = {"written": report.written}
    if report.name == "train":
        out.update(model_id=report.result.model_id, **report.result.summary())
    elif report.name == "score":
        out.update(model_id=report.result.model_id, correct=report.result.n_correct)
    return out
