"""Answer every kept question R times with the responder and mark the most common trajectory."""

from __future__ import annotations

from typing import Any

from prefect import flow

from magv.pipeline.runner import run_stage
from magv.pipeline.session import session


@flow(name="magv-respond", log_prints=True)
def respond_flow(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    with session(settings, "respond") as sess:
        run_stage(sess, "respond")
        return sess.result()
