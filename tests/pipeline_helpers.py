"""Run magv's pipeline against the scripted fake server in a test."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from magv.store import Store
from tests.fake_agents import AgentScript
from tests.fakellm import FakeLLMServer


@contextmanager
def fake_pipeline_env(tmp: Path, domain: str = "retail", latency_s: float = 0.0, **server_kwargs) -> Iterator:
    """A fake server running the agent script, and MAGV_* variables that point magv at it."""
    with FakeLLMServer(AgentScript(domain), latency_s=latency_s, **server_kwargs) as srv:
        env = {
            "MAGV_LLM__ENDPOINTS": json.dumps([srv.base_url]),
            "MAGV_EMBEDDINGS__BACKEND": "endpoint",
            "MAGV_EMBEDDINGS__ENDPOINT": srv.base_url,
            "MAGV_DATABASE": str(tmp / "magv.duckdb"),
            "MAGV_DOMAIN_DATA_DIR": str(tmp / "domains"),
            "MAGV_DOMAIN": domain,
        }
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield srv
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def table_counts(db: Path) -> dict[str, int]:
    with Store(db, read_only=True) as store:
        counts = store.counts()
    counts.pop("pipeline_runs")  # a log of attempts, not of results
    return counts
