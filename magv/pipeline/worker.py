"""What a worker needs to run agent work: settings, endpoints, the domain and its sandbox pool,
an LLM client and a call recorder.

Work is cut into chunks that may run in this process (threads) or on Dask/Ray workers; the items
of all chunks in flight in a process share one event loop, LLM client and concurrency limit
(AgentLoop). Only the process that owns the store writes to it: in that process calls are logged
(and replayed) through the store, written in batches a fraction of a second after they finish;
elsewhere they are collected and returned with the chunk's results.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from magv.config import Settings
from magv.domains import load_domain
from magv.llm import LLMClient
from magv.models import LLMCall, canonical_json
from magv.verify.budget import WorkCancelled

if TYPE_CHECKING:
    from magv.store import Store

T = TypeVar("T")

_local_recorder: Any = None
_cache: dict[tuple, Any] = {}
_cache_lock = threading.RLock()  # building a pool loads the domain through the cache too


def use_local_recorder(store: Store) -> None:
    """Register the store of this process: chunks that run here log and replay through it (see
    StoreRecorder). None unregisters it, after writing the calls it still holds."""
    global _local_recorder
    previous, _local_recorder = _local_recorder, (StoreRecorder(store) if store is not None else None)
    if previous is not None:
        previous.close()


class StoreRecorder:
    """The store as call recorder, writing behind: calls are buffered and written in batches by one
    thread every `interval_s` (and when a chunk ends); replay lookups go to the database only for
    keys it holds. One insert per call (~5 ms of CPU under the store's lock) plus one lookup per
    call capped a pipeline at ~140 calls/s whatever the model servers could do; batches cost ~0.4 ms
    a call. A crash loses at most the last `interval_s` of calls, which a rerun pays for again."""

    def __init__(self, store: Store, interval_s: float = 0.25):
        self.store = store
        self.interval_s = interval_s
        self._pending: list[LLMCall] = []
        self._unwritten: dict[str, LLMCall] = {}  # replayable calls still in _pending, by key
        self._known: set[str] | None = None  # replayable keys: the database's, then ours
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # batches reach the store in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def cached_response(self, key: str) -> dict | None:
        with self._lock:
            if self._known is None:
                self._known = self.store.replayable_keys() | set(self._unwritten)
            if key not in self._known:
                return None
            call = self._unwritten.get(key)
        if call is not None:
            return copy.deepcopy(call.response)
        return self.store.cached_response(key)

    def add_llm_calls(self, calls: Sequence[LLMCall]) -> int:
        frozen = [frozen_call(c) for c in calls]  # written later
        with self._lock:
            self._pending.extend(frozen)
            for c in frozen:
                if c.error is None and c.response is not None:
                    self._unwritten.setdefault(c.key, c)
                    if self._known is not None:
                        self._known.add(c.key)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="magv-call-log", daemon=True)
                self._thread.start()
        return len(calls)

    def flush(self) -> None:
        """Write every buffered call now; a failed write keeps the calls and raises."""
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                self.store.add_llm_calls(batch)
            except BaseException:
                with self._lock:
                    self._pending[:0] = batch
                raise
            with self._lock:
                for c in batch:
                    if self._unwritten.get(c.key) is c:
                        del self._unwritten[c.key]

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception:
                pass  # the calls stay buffered; the flush at the end of the chunk raises the error

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()


class CollectingRecorder:
    """Recorder for a worker without the store: keeps calls to return them with the results."""

    def __init__(self) -> None:
        self.calls: list[LLMCall] = []
        self._lock = threading.Lock()

    def cached_response(self, key: str) -> dict | None:
        return None

    def add_llm_calls(self, calls: Sequence[LLMCall]) -> int:
        frozen = [frozen_call(c) for c in calls]
        with self._lock:
            self.calls.extend(frozen)
        return len(calls)


def frozen_call(call: LLMCall) -> LLMCall:
    """The call as it was sent. Its request shares the message list with the agent, which goes on
    appending turns to it (never changing a message): a recorder that does not serialise at once
    must copy the lists, or it logs later turns too. A deep copy of the tool schemas cost ~2 ms."""
    request = {k: list(v) if isinstance(v, list) else v for k, v in call.request.items()}
    return call.model_copy(update={"request": request})


@dataclass
class WorkerContext:
    """Picklable description of the work environment; resources are built once per process."""

    settings: Settings
    endpoints: dict[str, list[str]] = field(default_factory=dict)

    @property
    def domain_spec(self) -> str:
        return self.settings.domain

    def domain(self):
        return _cached(("domain", self.domain_spec), lambda: load_domain(self.domain_spec))

    def pool(self):
        data_dir = Path(self.settings.domain_data_dir).resolve()
        key = ("pool", self.domain_spec, str(data_dir), self.settings.pipeline.tool_timeout_s)

        def build():
            domain = self.domain()
            domain.ensure_built(data_dir)
            return domain.sandbox_pool(data_dir, tool_timeout_s=self.settings.pipeline.tool_timeout_s)

        return _cached(key, build)

    def agent(self):
        """The agent that answers (`magv.agents.contract.build_agent`), built once per process."""
        from magv.agents.contract import build_agent

        role = self.settings.llm.role("responder")
        key = (
            "agent",
            canonical_json([self.settings.responder.model_dump(), role]),
            os.environ.get("MAGV_PROMPTS_DIR"),
        )
        return _cached(key, lambda: build_agent(self.settings))

    async def run_agent(
        self,
        client,
        question: str,
        *,
        run_index: int,
        context_key: str,
        demos=(),
        temperature: float | None = None,
    ):
        """One run of the configured agent on one question: (its RunResult, its identity)."""
        from magv.agents.contract import AgentEnv, task_for

        agent = self.agent()
        env = AgentEnv(client, self.domain(), self.pool)
        task = task_for(
            self.settings,
            env,
            question,
            run_index=run_index,
            context_key=context_key,
            demos=demos,
            temperature=temperature,
        )
        return await agent.run(task, env), agent.identity


def _cached(key: tuple, build: Callable[[], T]) -> T:
    with _cache_lock:
        if key not in _cache:
            _cache[key] = build()
        return _cache[key]


def close_resources() -> None:
    global _agents
    with _cache_lock:
        agents, _agents = _agents, None
    if agents is not None:  # first: nothing may use a pool once it is closed
        agents.close()
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
    cancelled: threading.Event | None = None,
) -> ChunkResult:
    """Run `work(client, ctx, item)` for every item on this process's agent loop, at most
    `pipeline.concurrency` items at once across all the chunks in flight here. Once `cancelled` is
    set (by another thread: the service's client left), the items in flight are cancelled and
    WorkCancelled is raised."""
    recorder = _local_recorder if _local_recorder is not None else CollectingRecorder()
    agents = _agent_loop()

    async def main() -> list[Any]:
        _chunk_recorder.set(recorder)  # the tasks below copy this context, so do their calls
        client = agents.client(ctx)
        limit = agents.limit(ctx.settings.pipeline.concurrency)

        async def one(item: T) -> Any:
            async with limit:
                return await work(client, ctx, item)

        tasks = [asyncio.ensure_future(one(i)) for i in items]
        try:
            if cancelled is None:
                return await asyncio.gather(*tasks)
            return await _unless_cancelled(asyncio.gather(*tasks), cancelled)
        except BaseException:
            for t in tasks:  # a failed chunk stops its other items (it is retried whole)
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    results = agents.run(main())
    if isinstance(recorder, StoreRecorder):
        recorder.flush()  # the chunk's results are written next: its calls go first
    calls = recorder.calls if isinstance(recorder, CollectingRecorder) else []
    return ChunkResult(results=results, calls=calls)


async def _unless_cancelled(work: asyncio.Future, cancelled: threading.Event) -> Any:
    """The result of `work`, or WorkCancelled as soon as `cancelled` is set (checked every 50 ms)."""
    while True:
        done, _ = await asyncio.wait({work}, timeout=0.05)
        if done:
            return work.result()
        if cancelled.is_set():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)  # its cancellation, retrieved
            raise WorkCancelled("the work was cancelled (the client left)")


_chunk_recorder: ContextVar[Any] = ContextVar("magv_chunk_recorder")


class ChunkCancelled(BaseException):
    """The agent loop shut down under a chunk because its run is stopping. A BaseException, so
    that Prefect does not retry the chunk (it retries Exceptions) after the run has ended."""


class _ChunkRecorder:
    """The recorder of the shared LLM client: each call goes to the recorder of its own chunk."""

    def cached_response(self, key: str) -> dict | None:
        return _chunk_recorder.get().cached_response(key)

    def add_llm_calls(self, calls: Sequence[LLMCall]) -> int:
        return _chunk_recorder.get().add_llm_calls(calls)


class AgentLoop:
    """One event loop per process for the items of every chunk in flight in it, with one LLM
    client (so `llm.concurrency_per_endpoint` holds per endpoint) and one concurrency limit.

    With a loop per chunk, the last slow items of a chunk left its slots idle while the next chunk
    waited for a worker, and the stage's calls were spread over fixed chunks: a stage took up to a
    third longer than its LLM calls needed (bench/pipeline_efficiency.py). Shared slots go to
    whichever chunk has work, first come first served, so chunks still finish roughly in order.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # Tools and the call log run in threads; a slow tool must not hold up everything else.
        self.loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="magv-agent-io"))
        self.thread = threading.Thread(target=self.loop.run_forever, name="magv-agents", daemon=True)
        self.thread.start()
        self.clients: dict[str, Any] = {}
        self.limits: dict[int, asyncio.Semaphore] = {}

    def run(self, coro: Awaitable[T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except CancelledError:
            raise ChunkCancelled("the run stopped while this chunk was in flight") from None
        except BaseException:
            future.cancel()
            raise

    def client(self, ctx: WorkerContext) -> Any:
        """The LLM client of these LLM settings and endpoints (on the loop only)."""
        key = canonical_json([ctx.settings.llm.model_dump(mode="json"), ctx.endpoints])
        if key not in self.clients:
            self.clients[key] = LLMClient(
                ctx.settings, recorder=_ChunkRecorder(), endpoints=ctx.endpoints or None
            )
        return self.clients[key]

    def limit(self, n: int) -> asyncio.Semaphore:
        if n not in self.limits:
            self.limits[n] = asyncio.Semaphore(n)
        return self.limits[n]

    def close(self) -> None:
        async def shutdown() -> None:
            # Chunks still here belong to a run that stopped (Ctrl-C, an error): cancel them, or the
            # threads waiting for them in run() would wait for ever.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            for client in self.clients.values():
                await client.aclose()

        try:
            self.run(shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            if not self.loop.is_running():
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
                self.loop.close()


_agents: AgentLoop | None = None


def _agent_loop() -> AgentLoop:
    global _agents
    with _cache_lock:
        if _agents is None:
            _agents = AgentLoop()
        return _agents


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
