"""One model server as the client sees it: an OpenAI client with its own connection pool and a
limit on requests in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import openai

try:  # openai >= 3 is built on httpx2; older releases on httpx
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _http  # type: ignore[no-redef]


class Endpoint:
    def __init__(self, url: str, concurrency: int, api_key: str):
        self.url = url
        self.slots = asyncio.Semaphore(concurrency)
        self.outstanding = 0  # queued for a slot + in flight
        self.ticket = -1  # when it was last picked, to break ties round-robin
        # A few spare connections: a timed-out request may hold its socket a moment longer.
        limits = _http.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
        self.api = openai.AsyncOpenAI(
            base_url=url,
            api_key=api_key,
            max_retries=0,  # LLMClient owns retries, across endpoints
            http_client=openai.DefaultAsyncHttpxClient(limits=limits),
        )

    async def aclose(self) -> None:
        await self.api.close()


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
