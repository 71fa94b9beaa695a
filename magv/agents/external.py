"""The user's own agent behind the contract (`magv.agents.contract`): a Python callable
(`responder.agent`) or an HTTP service (`responder.agent_url`).

A callable is `package.module:function` or `path/to/file.py:function`, sync or async, called with
one `AgentTask`. Loading it runs the user's code: that is the point (the user names it), so it is
only ever loaded from a spec the user gave, never from anything magv reads. An HTTP agent is sent
the task as JSON (`AgentTask.payload`) by POST. Both return the conversation: a list of chat
messages (OpenAI or LangChain form, read by the import reader `magv.messages`), or an object
`{"messages": [...], "prompt_tokens": n, "completion_tokens": n, "cost_usd": x, "status": s}`.

Every answer is logged in `llm_calls` (role `agent`) with a replay key of the agent's identity and
the task, as model calls are: a killed run does not ask the agent again for finished runs. A
failure (the callable cannot be imported or raises, the service times out or answers an error
after its retries, a reply that is not a conversation) is recorded on the run (status
`llm_error`, redone by a rerun) and in the stage's errors; it never stops the pipeline.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import inspect
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from magv.agents.contract import AgentEnv, AgentIdentity, AgentTask, RunResult
from magv.errors import BadInput
from magv.models import LLMCall, Trajectory, make_id

ROLE = "agent"


# -- loading a callable ---------------------------------------------------------------------------


def split_spec(spec: str) -> tuple[str, str]:
    """(module or file, function) of `package.module:function` / `path/file.py:function`."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise BadInput(
            f"responder.agent: {spec!r}: expected package.module:function or path/file.py:function"
        )
    return target, name


def resolve_spec(spec: str) -> str:
    """The spec with a file path made absolute (workers may run elsewhere), checked by importing the
    callable once: a typo is a BadInput before any work."""
    target, name = split_spec(spec)
    if target.endswith(".py"):
        spec = f"{Path(target).resolve()}:{name}"
    load_callable(spec)
    return spec


def load_callable(spec: str) -> tuple[Any, str]:
    """(the function, a hash of its module's source). Imports the user's module: runs its code."""
    target, name = split_spec(spec)
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            if not path.is_file():
                raise BadInput(f"responder.agent: {spec!r}: no such file {path}")
            module_name = f"magv_agent_{make_id(str(path), length=10)}"
            module = sys.modules.get(module_name)
            if module is None:
                # The file's folder on the path, so that the file may import its neighbours.
                if str(path.parent) not in sys.path:
                    sys.path.insert(0, str(path.parent))
                loader = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(loader)  # type: ignore[arg-type]
                sys.modules[module_name] = module
                try:
                    loader.loader.exec_module(module)  # type: ignore[union-attr]
                except BaseException:
                    del sys.modules[module_name]
                    raise
        else:
            module = importlib.import_module(target)
    except BadInput:
        raise
    except Exception as exc:
        raise BadInput(
            f"responder.agent: {spec!r}: importing {target} failed: {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise BadInput(f"responder.agent: {spec!r}: {target} has no function {name!r}")
    return fn, _source_hash(module)


def _source_hash(module: Any) -> str | None:
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source.encode()).hexdigest()[:12]


# -- the reply ------------------------------------------------------------------------------------


def read_reply(reply: Any, task: AgentTask, where: str) -> RunResult:
    """A run from what an agent returned; BadInput names what is wrong with it."""
    from magv.messages import messages_to_trajectory

    if hasattr(reply, "model_dump") or (
        isinstance(reply, list) and any(hasattr(m, "model_dump") for m in reply)
    ):
        reply = _plain(reply)
    out = {"messages": reply} if isinstance(reply, list) else reply
    if not isinstance(out, dict) or not isinstance(out.get("messages"), list):
        raise BadInput(
            f'{where}: expected a list of chat messages or {{"messages": [...]}}, got {type(reply).__name__}'
        )
    messages = [_plain(m) for m in out["messages"]]
    if not any(
        isinstance(m, dict) and (m.get("role") == "user" or m.get("type") == "human") for m in messages
    ):
        messages = [{"role": "user", "content": task.question}, *messages]  # the agent gave only its turns
    status = out.get("status")
    if status is None:
        last = messages[-1] if messages else {}
        final = isinstance(last, dict) and last.get("role", last.get("type")) in ("assistant", "ai")
        status = "ok" if final and not last.get("tool_calls") and last.get("content") else "max_steps"
    if status not in ("ok", "max_steps"):
        raise BadInput(f'{where}.status: expected "ok" or "max_steps", got {status!r}')
    trajectory, _ = messages_to_trajectory(messages, status, f"{where}.messages")
    result = RunResult(trajectory=trajectory)
    for key in ("prompt_tokens", "completion_tokens"):
        value = out.get(key, 0) or 0
        if not isinstance(value, int) or value < 0:
            raise BadInput(f"{where}.{key}: expected a whole number >= 0, got {value!r}")
        setattr(result, key, value)
    cost = out.get("cost_usd")
    if cost is not None and (not isinstance(cost, (int, float)) or cost < 0):
        raise BadInput(f"{where}.cost_usd: expected a number >= 0, got {cost!r}")
    result.cost_usd = None if cost is None else float(cost)
    return result


def _plain(value: Any) -> Any:
    """A LangChain or pydantic message object as the dict the import reader takes."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):  # {"messages": [message objects], ...}
        return {k: _plain(v) for k, v in value.items()}
    return value


def _failed(error: str, latency_s: float) -> RunResult:
    return RunResult(trajectory=Trajectory(status="llm_error"), latency_s=latency_s, llm_errors=[error])


class _Logged:
    """What both external agents share: ask once per task, answering from the call log when it
    holds a finished answer, logging every answer or failure as a call of role `agent`."""

    identity: AgentIdentity
    endpoint: str

    async def run(self, task: AgentTask, env: AgentEnv) -> RunResult:
        recorder = getattr(env.client, "recorder", None)
        key = task.key(self.identity)
        where = f"agent {self.identity.name}"
        if recorder is not None:
            cached = await asyncio.to_thread(recorder.cached_response, key)
            if cached is not None:
                return read_reply(cached, task, where)
        started = time.perf_counter()
        reply, error, retries = None, None, 0
        try:
            reply, retries = await self._ask(task)
            result = read_reply(reply, task, where)
        except Exception as exc:  # the user's code or service: recorded on the run, never raised
            error = (
                str(exc)
                if isinstance(exc, (BadInput, AgentFailure))
                else f"{where}: {type(exc).__name__}: {exc}"
            )
            retries = getattr(exc, "retries", retries)
            result = _failed(error, 0.0)
        finally:
            if task.executor is not None:
                task.executor.close()
        result.latency_s = time.perf_counter() - started
        if recorder is not None:
            response = (
                None if error else {**_jsonable(reply if isinstance(reply, dict) else {"messages": reply})}
            )
            call = LLMCall(
                id=make_id("llm_call", key, uuid.uuid4().hex),
                key=key,
                role=ROLE,
                model=self.identity.label(),
                endpoint=self.endpoint,
                request=task.payload(),
                response=response,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                latency_s=result.latency_s,
                retries=retries,
                error=error,
            )
            await asyncio.to_thread(recorder.add_llm_calls, [call])
        return result

    async def _ask(self, task: AgentTask) -> tuple[Any, int]:
        raise NotImplementedError


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(_plain(value), default=str))


class AgentFailure(Exception):
    def __init__(self, message: str, retries: int = 0):
        super().__init__(message)
        self.retries = retries


class CallableAgent(_Logged):
    """A Python function of the user's, sync (run on a thread) or async, called with the task."""

    def __init__(self, spec: str, version: str | None = None, timeout_s: float = 300.0):
        self.spec = spec
        self.timeout_s = timeout_s
        self.endpoint = f"callable:{spec}"
        self._fn: Any = None
        self._error: str | None = None
        try:
            self._fn, source_hash = load_callable(spec)
        except BadInput as exc:  # recorded on every run, so a worker without the module says so
            self._error, source_hash = str(exc), None
        self.identity = AgentIdentity("callable", spec, source_hash, version)

    async def _ask(self, task: AgentTask) -> tuple[Any, int]:
        if self._error is not None:
            raise AgentFailure(self._error)
        call = self._fn(task) if inspect.iscoroutinefunction(self._fn) else asyncio.to_thread(self._fn, task)
        try:
            return await asyncio.wait_for(call, self.timeout_s), 0
        except TimeoutError:
            raise AgentFailure(f"agent {self.spec}: no answer within {self.timeout_s:g}s") from None


class HttpAgent(_Logged):
    """A service that takes the task as a JSON POST and answers the conversation. Connection
    errors, timeouts, 429 and 5xx are retried with backoff (as model calls are); at most
    `concurrency` requests are in flight per process."""

    def __init__(
        self,
        url: str,
        version: str | None = None,
        timeout_s: float = 300.0,
        retries: int = 2,
        concurrency: int = 8,
    ):
        if not url.startswith(("http://", "https://")):
            raise BadInput(f"responder.agent_url: {url!r}: expected an http:// or https:// URL")
        self.url = self.endpoint = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.concurrency = concurrency
        self.identity = AgentIdentity("http", url, None, version)
        self._limits: dict[Any, asyncio.Semaphore] = {}
        self._rng = random.Random()

    async def _ask(self, task: AgentTask) -> tuple[Any, int]:
        import httpx

        from magv.llm.backoff import backoff_delay, retry_after_seconds

        loop = asyncio.get_running_loop()
        limit = self._limits.setdefault(loop, asyncio.Semaphore(self.concurrency))
        failure = ""
        async with limit, httpx.AsyncClient(timeout=self.timeout_s) as http:
            for attempt in range(self.retries + 1):
                retry_after = None
                try:
                    reply = await http.post(self.url, json=task.payload())
                except httpx.TimeoutException:
                    failure = f"agent {self.url}: timeout after {self.timeout_s:g}s"
                except httpx.HTTPError as exc:
                    failure = f"agent {self.url}: connection error: {exc}"
                else:
                    if reply.status_code < 400:
                        try:
                            return reply.json(), attempt
                        except ValueError:
                            raise AgentFailure(
                                f"agent {self.url}: reply is not JSON: {reply.text[:200]}", attempt
                            ) from None
                    failure = f"agent {self.url}: HTTP {reply.status_code}: {reply.text[:300]}"
                    if reply.status_code != 429 and reply.status_code < 500:
                        raise AgentFailure(failure, attempt)
                    retry_after = retry_after_seconds(reply.headers.get("retry-after"))
                if attempt < self.retries:
                    await asyncio.sleep(backoff_delay(attempt, self._rng, retry_after))
        raise AgentFailure(f"{failure} (after {self.retries} retries)", self.retries)
