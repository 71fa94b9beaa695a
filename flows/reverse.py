"""Reverse-engineer k alternate questions from each MCT's response and answer them R' times."""

from __future__ import annotations

from typing import Any

from prefect import flow

from magv.flows.common import run_stage, session


@flow(name="magv-reverse", log_prints=True)
def reverse_flow(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    with session(settings, "reverse") as sess:
        run_stage(sess, "reverse")
        run_stage(sess, "respond_alternates")
        return {"run_id": sess.run_id, "stages": sess.stages, "summary": sess.summary()}
