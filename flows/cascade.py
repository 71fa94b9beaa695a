"""The verifier cascade as a Prefect flow: agreement rules, the verifier, alternates for the
uncertain, the LLM judge, a human queue (magv.cascade), under a token and judge budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from magv.cascade.live import run as run_cascade
from magv.cascade.loop import CascadeOptions
from magv.config import load_settings
from magv.pipeline.runner import run_in_process
from magv.pipeline.session import session


@flow(name="magv-cascade", log_prints=True)
def cascade_flow(
    settings: dict[str, Any] | None = None,
    settings_path: str | None = None,
    max_judge_share: float = 0.2,
    max_llm_tokens: int | None = None,
    margin: float = 0.25,
    rule_confidence: float = 0.9,
    threshold: float | None = None,
    alternates: bool = True,
    judge: bool = True,
) -> dict[str, Any]:
    """The parameters are `CascadeOptions`' (`magv verify cascade`'s options)."""
    cfg = settings or load_settings(Path(settings_path) if settings_path else None)
    options = CascadeOptions(
        max_judge_share=max_judge_share,
        max_llm_tokens=max_llm_tokens,
        margin=margin,
        rule_confidence=rule_confidence,
        threshold=threshold,
        alternates=alternates,
        judge=judge,
    )
    options.check()
    with session(cfg, "cascade", endpoints=alternates or judge) as sess:
        report = run_in_process(sess, "cascade", run_cascade, sess, options)
        return sess.result(cascade=report.result)
