"""Model servers as the client sees them: an OpenAI client with its own connection pool per
endpoint, and a dispatcher that hands out request slots.

A request takes a slot when it is about to be sent, on the endpoint with the fewest requests in
flight. Deciding then, not when the call was made, means that with a burst queued a fast endpoint
keeps taking work while a slow one is still busy, instead of each getting half of the burst.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import Any

import openai

try:  # openai >= 3 is built on httpx2; older releases on httpx
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _http  # type: ignore[no-redef]


class Endpoint:
    def __init__(self, url: str, limit: int, api_key: str):
        self.url = url
        self.limit = limit
        self.in_flight = 0
        self.ticket = -1  # when it was last picked, to break ties round-robin
        # A few spare connections: a timed-out request may hold its socket a moment longer.
        limits = _http.Limits(max_connections=limit + 4, max_keepalive_connections=limit + 4)
        self.api = openai.AsyncOpenAI(
            base_url=url,
            api_key=api_key,
            max_retries=0,  # LLMClient owns retries, across endpoints
            http_client=openai.DefaultAsyncHttpxClient(limits=limits),
        )

    async def post_chat(self, body: dict[str, Any], timeout_s: float) -> Any:
        """POST /chat/completions; the raw HTTP response (errors raise openai's exceptions).

        `post` rather than `chat.completions.create`: the typed method re-walks the whole request
        (messages, tool schemas) to transform it, which was most of the client's CPU per call, and
        parses a pydantic model we do not need.
        """
        return await self.api.post(
            "/chat/completions", body=body, cast_to=_http.Response, options={"timeout": timeout_s}
        )

    async def aclose(self) -> None:
        await self.api.close()


class Dispatcher:
    """The endpoints and waiting requests of one event loop."""

    def __init__(self, limit: int, api_key: str):
        self.limit = limit
        self.api_key = api_key
        self.endpoints: dict[str, Endpoint] = {}
        self.queues: dict[tuple[str, ...], deque[asyncio.Future[Endpoint]]] = {}
        self._tickets = itertools.count()

    def endpoint(self, url: str) -> Endpoint:
        ep = self.endpoints.get(url)
        if ep is None:
            ep = self.endpoints[url] = Endpoint(url, self.limit, self.api_key)
        return ep

    def _take(self, ep: Endpoint) -> Endpoint:
        ep.in_flight += 1
        ep.ticket = next(self._tickets)
        return ep

    async def acquire(self, group: tuple[str, ...]) -> Endpoint:
        eps = [self.endpoint(u) for u in group]
        queue = self.queues.setdefault(group, deque())
        while queue and queue[0].done():  # waiters cancelled while queued
            queue.popleft()
        if not queue:  # first come, first served: nobody overtakes a waiting request
            free = [e for e in eps if e.in_flight < e.limit]
            if free:
                return self._take(min(free, key=lambda e: (e.in_flight, e.ticket)))
        waiter: asyncio.Future[Endpoint] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            return await waiter  # release() hands the slot over: in_flight already counts us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())
            raise

    def release(self, ep: Endpoint) -> None:
        for group, queue in self.queues.items():
            if ep.url not in group:
                continue
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    ep.ticket = next(self._tickets)
                    waiter.set_result(ep)
                    return
        ep.in_flight -= 1

    async def aclose(self) -> None:
        for ep in self.endpoints.values():
            await ep.aclose()


def llama_cpp_format(response_format: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI json_schema response format in the form llama-cpp-python's server turns into a
    grammar ({"type": "json_object", "schema": ...}); other formats pass unchanged."""
    if response_format.get("type") != "json_schema":
        return response_format
    schema = (response_format.get("json_schema") or {}).get("schema")
    out: dict[str, Any] = {"type": "json_object"}
    if schema is not None:
        out["schema"] = schema
    return out
