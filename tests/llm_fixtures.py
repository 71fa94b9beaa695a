"""The embedded llama.cpp servers, each started once per test session for every module that needs it.

- `llama_server`: the tiny gemma-3-270m (a base model, ~4x faster): for tests that only need a
  live model (calls arrive, parse, carry tokens and latency).
- `default_model_server`: the default embedded model (qwen2.5-coder-1.5b-instruct), for tests that
  check behaviour (a tool call that satisfies its schema, a correct trajectory).

Use one with `from tests.llm_fixtures import llama_server  # noqa: F401` and an argument of that
name; mark such tests `@pytest.mark.slow`. Each listens on a free port (not the default 8765, so a
developer's own server is neither reused nor disturbed) and stops at the end of the session.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from magv.config import LlamaSettings, Settings
from magv.gguf.registry import DEFAULT_MODEL
from magv.llm.servers import LlamaServer

TINY_MODEL = "gemma-3-270m"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(tmp_path_factory: pytest.TempPathFactory, model: str) -> Iterator[LlamaServer]:
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python[server] (pip install 'magv[embedded]')")
    root = tmp_path_factory.mktemp("llama")
    settings = Settings(
        database=root / "magv.duckdb", llama=LlamaSettings(model=model, port=_free_port(), n_ctx=4096)
    )
    server = LlamaServer(settings, log_path=root / "llama-server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    yield from _serve(tmp_path_factory, TINY_MODEL)


@pytest.fixture(scope="session")
def default_model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    yield from _serve(tmp_path_factory, DEFAULT_MODEL)
