"""Shared fixtures. Prefect gets one temporary API server per test run (it takes ~15 s to start)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.llm_fixtures import llama_server  # noqa: F401  (one embedded server per test run)

# No network here: keep Prefect and Hugging Face from reaching out.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect's console log handler keeps the stream it saw first; under pytest's capture that stream is
# closed by the next test. Warnings and errors only, as the CLI does.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_API_ENABLE_HTTP2", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API server shared by every test that runs flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def tmp_store(tmp_path: Path):
    from magv.store import Store

    store = Store(tmp_path / "magv.duckdb")
    yield store
    store.close()


@pytest.fixture(autouse=True)
def _isolate_magv_env(monkeypatch, tmp_path):
    """Tests never read the developer's magv.toml or MAGV_* variables by accident."""
    for key in list(os.environ):
        if key.startswith("MAGV_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
