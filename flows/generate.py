"""Generate questions with the investigator, then select a diverse, balanced subset."""

from __future__ import annotations

from typing import Any

from prefect import flow

from magv.pipeline.runner import run_select, run_stage
from magv.pipeline.session import session


@flow(name="magv-generate", log_prints=True)
def generate_flow(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    with session(settings, "generate") as sess:
        run_stage(sess, "generate")
        run_select(sess)
        return sess.result()
