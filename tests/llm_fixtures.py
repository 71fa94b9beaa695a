"""The embedded llama.cpp server, started once per test session for every module that needs it.

Use it with `from tests.llm_fixtures import llama_server  # noqa: F401` and a `llama_server`
argument; mark such tests `@pytest.mark.slow`. It listens on a free port (not the default 8765,
so a developer's own server is neither reused nor disturbed) and stops at the end of the session.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from magv.config import LlamaSettings, Settings
from magv.llm.servers import LlamaServer


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python[server] (pip install 'magv[embedded]')")
    root = tmp_path_factory.mktemp("llama")
    settings = Settings(database=root / "magv.duckdb", llama=LlamaSettings(port=_free_port(), n_ctx=4096))
    server = LlamaServer(settings, log_path=root / "llama-server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
