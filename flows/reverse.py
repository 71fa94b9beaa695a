"""Reverse-engineer k alternate questions from each MCT's response and answer them R' times."""

from __future__ import annotations

from typing import Any

from prefect import flow

from magv.pipeline.runner import run_stage
from magv.pipeline.session import session


@flow(name="magv-reverse", log_prints=True)
def reverse_flow(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    with session(settings, "reverse") as sess:
        run_stage(sess, "reverse")
        run_stage(sess, "respond_alternates")
        return sess.result()
