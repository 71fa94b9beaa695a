"""How `magv serve verifier` listens: uvicorn with limits that keep one client from locking the
others out, the bearer token's sources, and the warning for an address beyond loopback.

uvicorn times out only idle keep-alive connections, and any byte received cancels that timer:
a client that sends half a request header and waits holds its connection (and a file
descriptor) forever, so about a thousand of them exhaust the process's descriptors and nobody
else gets in. `GuardedH11Protocol` closes a connection whose request headers are not complete
within `header_timeout` seconds of its opening (or of its previous answer), and refuses
connections beyond `max_connections` at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magv.errors import BadInput

TOKEN_ENV = "MAGV_SERVICE_TOKEN"
# The work one request may ask for (magv.service.app): sibling comparisons, each of which costs
# some 0.1 ms beyond its graph edit distance, and seconds of graph edit distance in all.
MAX_PAIRS = 20_000
GED_SECONDS = 1.0


@dataclass(frozen=True)
class Limits:
    """header_timeout: seconds a connection may take to send a request's headers.
    keep_alive: seconds an idle keep-alive connection stays open.
    max_connections: open connections at once; more are closed on arrival.
    max_requests: requests in progress at once (uvicorn's limit_concurrency: 503 above).
    backlog: connections the kernel queues before they are accepted."""

    header_timeout: float = 10.0
    keep_alive: float = 5.0
    max_connections: int = 256
    max_requests: int = 64
    backlog: int = 128


def guarded_protocol(limits: Limits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the header deadline and the connection cap of `limits`."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(limits.header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a request is in: its headers are complete

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers have the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_config(app: Any, host: str, port: int, limits: Limits) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        http=guarded_protocol(limits),
        timeout_keep_alive=int(max(1, limits.keep_alive)),
        limit_concurrency=limits.max_requests,
        backlog=limits.backlog,
        h11_max_incomplete_event_size=16 * 1024,
    )


def read_token(token_file: Path | None) -> str | None:
    """The bearer token: the first line of `token_file`, else $MAGV_SERVICE_TOKEN, else none."""
    if token_file is not None:
        if not token_file.is_file():
            raise BadInput(f"--token-file {token_file}: not a file")
        text = token_file.read_text(encoding="utf-8").strip()
        where = f"--token-file {token_file}"
    else:
        text = os.environ.get(TOKEN_ENV)
        if text is None:
            return None
        text = text.strip()
        where = f"${TOKEN_ENV}"
    if not text or any(c.isspace() for c in text):
        raise BadInput(
            f"{where}: expected a token (one line without spaces), got {'nothing' if not text else 'spaces'}"
        )
    return text


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: str | None, log_to: Path | None) -> str | None:
    """What to tell the operator about who can reach the service, or None on loopback."""
    if is_loopback(host):
        return None
    if token is not None:
        return f"listening on {host}, beyond this machine; /v1/verify needs the bearer token"
    text = f"listening on {host} without a token: any client that reaches the port gets verdicts"
    if log_to is not None:
        text = (
            f"LISTENING ON {host} WITHOUT A TOKEN WITH --log-to: any client that reaches the port writes "
            f"rows into {log_to}, a store you may train on. Set ${TOKEN_ENV} or --token-file"
        )
    return text
