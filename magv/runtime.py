"""What a worker needs to run agent work: settings, endpoints, the domain and its sandbox pool,
an LLM client and a call recorder.

Work is cut into chunks that may run in this process (threads) or on Dask/Ray workers. Only the
process that owns the store writes to it: in that process calls are logged (and replayed) through
the store as they finish; elsewhere they are collected and returned with the chunk's results.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from magv.config import Settings
from magv.models import LLMCall

T = TypeVar("T")

_local_recorder: Any = None
_cache: dict[tuple, Any] = {}
_cache_lock = threading.RLock()  # building a pool loads the domain through the cache too


def use_local_recorder(recorder: Any) -> None:
    """Register the store of this process: chunks that run here log and replay through it."""
    global _local_recorder
    _local_recorder = recorder


class CollectingRecorder:
    """Recorder for a worker without the store: keeps calls to return them with the results."""

    def __init__(self) -> None:
        self.calls: list[LLMCall] = []
        self._lock = threading.Lock()

    def cached_response(self, key: str) -> dict | None:
        return None

    def add_llm_calls(self, calls: Sequence[LLMCall]) -> int:
        # A call's request shares its message list with the agent, which keeps appending turns to
        # it; the store serialises at once, a collector must copy or it logs later turns too.
        frozen = [c.model_copy(deep=True) for c in calls]
        with self._lock:
            self.calls.extend(frozen)
        return len(calls)


@dataclass
class WorkerContext:
    """Picklable description of the work environment; resources are built once per process."""

    settings: Settings
    endpoints: dict[str, list[str]] = field(default_factory=dict)

    @property
    def domain_spec(self) -> str:
        return self.settings.domain

    def domain(self):
        from magv.domains import load_domain

        return _cached(("domain", self.domain_spec), lambda: load_domain(self.domain_spec))

    def pool(self):
        data_dir = Path(self.settings.domain_data_dir).resolve()
        key = ("pool", self.domain_spec, str(data_dir), self.settings.pipeline.tool_timeout_s)

        def build():
            domain = self.domain()
            domain.ensure_built(data_dir)
            return domain.sandbox_pool(data_dir, tool_timeout_s=self.settings.pipeline.tool_timeout_s)

        return _cached(key, build)


def _cached(key: tuple, build: Callable[[], T]) -> T:
    with _cache_lock:
        if key not in _cache:
            _cache[key] = build()
        return _cache[key]


def close_resources() -> None:
    with _cache_lock:
        for key, value in list(_cache.items()):
            if key[0] == "pool":
                value.close()
        _cache.clear()


@dataclass
class ChunkResult:
    results: list[Any]
    calls: list[LLMCall]


def run_chunk(
    ctx: WorkerContext,
    items: Sequence[T],
    work: Callable[[Any, WorkerContext, T], Awaitable[Any]],
) -> ChunkResult:
    """Run `work(client, ctx, item)` for every item with bounded concurrency, in a fresh event loop."""
    from magv.llm import LLMClient

    recorder = _local_recorder if _local_recorder is not None else CollectingRecorder()

    async def main() -> list[Any]:
        client = LLMClient(ctx.settings, recorder=recorder, endpoints=ctx.endpoints or None)
        limit = asyncio.Semaphore(ctx.settings.pipeline.concurrency)

        async def one(item: T) -> Any:
            async with limit:
                return await work(client, ctx, item)

        try:
            return await asyncio.gather(*(one(i) for i in items))
        finally:
            await client.aclose()

    results = asyncio.run(main())
    calls = recorder.calls if isinstance(recorder, CollectingRecorder) else []
    return ChunkResult(results=results, calls=calls)


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
