"""Answer every kept question R times with the responder and mark the most common trajectory."""

from __future__ import annotations

from typing import Any

from prefect import flow

from magv.flows.common import run_stage, session


@flow(name="magv-respond", log_prints=True)
def respond_flow(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    with session(settings, "respond") as sess:
        run_stage(sess, "respond")
        return {"run_id": sess.run_id, "stages": sess.stages, "summary": sess.summary()}
