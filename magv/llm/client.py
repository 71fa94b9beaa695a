"""One async client for every model call: OpenAI-compatible HTTP, per-endpoint concurrency,
least-outstanding balancing, retries with backoff, a replay log.

Failures of the model server (connection errors, timeouts, 429, 5xx, malformed bodies) are retried;
the final failure comes back in `ChatResult.error` and is recorded, never raised, so one bad call
does not stop a pipeline. Two things raise: misconfiguration (no endpoint for a role), and a role
whose every endpoint refuses connections after the retries (`ModelUnreachable`: the server is down,
and every later call would fail the same way; a slow server is only a timeout).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import openai

from magv.config import Settings
from magv.errors import BadInput
from magv.llm import liveness
from magv.llm.backoff import BACKOFF_BASE_S, BACKOFF_MAX_S, backoff_delay, retry_after_seconds
from magv.llm.endpoints import Dispatcher, Endpoint, llama_cpp_format
from magv.llm.servers import check_managed_servers
from magv.models import LLMCall, ToolCall, ToolSpec, make_id


@runtime_checkable
class CallRecorder(Protocol):
    """Where calls are logged and replayed from; `magv.store.Store` implements it."""

    def cached_response(self, key: str) -> dict | None: ...

    def add_llm_calls(self, calls: list[LLMCall]) -> int: ...


@dataclass
class ChatResult:
    text: str | None
    tool_calls: list[ToolCall] | None  # native tool calls, when all of them parsed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0  # time on the wire, summed over attempts (no queueing, no backoff)
    retries: int = 0
    error: str | None = None  # the final failure after retries
    cached: bool = False  # answered from the replay log, not paid again
    call_id: str | None = None  # the LLMCall row written for this call (None when cached)
    model: str | None = None
    endpoint: str | None = None
    finish_reason: str | None = None
    response: dict[str, Any] | None = None  # the server's JSON reply

    @property
    def ok(self) -> bool:
        return self.error is None


class _CallFailure(Exception):
    def __init__(
        self, message: str, retryable: bool, retry_after: float | None = None, unreachable: bool = False
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.unreachable = unreachable  # no connection could be made (as opposed to a slow answer)


class LLMClient:
    """Use one per pipeline; `await client.aclose()` (or `async with`) at the end."""

    backoff_base_s = BACKOFF_BASE_S
    backoff_max_s = BACKOFF_MAX_S

    def __init__(
        self,
        settings: Settings,
        recorder: CallRecorder | None = None,
        endpoints: dict[str, list[str]] | list[str] | None = None,
    ):
        self.settings = settings
        self.recorder = recorder
        self._override = endpoints
        # HTTP pools and waiting requests belong to an event loop; a client used from several
        # loops (one asyncio.run per stage) gets a fresh dispatcher in each.
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dispatcher] = (
            weakref.WeakKeyDictionary()
        )
        # Servers that only understand llama-cpp-python's response_format dialect, learnt per URL.
        self._llama_dialect: set[str] = set()
        self._rng = random.Random()
        self._unreachable_since: dict[str, float] = {}  # URL -> first refused connection of a streak

    # -- endpoints -------------------------------------------------------------------------------

    def endpoints_for(self, role: str) -> list[str]:
        override = self._override
        if isinstance(override, list):
            urls = override
        elif isinstance(override, dict) and override.get(role):
            urls = override[role]
        else:
            urls = self.settings.llm.role(role)["endpoints"]
        if not urls:
            raise BadInput(
                f"llm: no endpoint for role {role!r}; set llm.endpoints (or llm.roles.{role}.endpoints) "
                "or let magv start the embedded llama.cpp server (managed_endpoints)"
            )
        return list(urls)

    def _dispatcher(self) -> Dispatcher:
        loop = asyncio.get_running_loop()
        dispatcher = self._per_loop.get(loop)
        if dispatcher is None:
            llm = self.settings.llm
            dispatcher = self._per_loop[loop] = Dispatcher(llm.concurrency_per_endpoint, llm.secret_key())
        return dispatcher

    # -- the call --------------------------------------------------------------------------------

    async def chat(
        self,
        role: str,
        messages: list[dict],
        *,
        template: str | None = None,
        template_hash: str | None = None,
        response_format: dict | None = None,
        tools: list[ToolSpec] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        context_key: str | None = None,
    ) -> ChatResult:
        cfg = self.settings.llm.role(role)
        urls = self.endpoints_for(role)
        model = cfg["model"]
        temperature = cfg["temperature"] if temperature is None else temperature
        max_tokens = cfg["max_tokens"] if max_tokens is None else max_tokens
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if seed is not None:
            body["seed"] = seed
        if response_format is not None:
            body["response_format"] = response_format
        if tools:
            body["tools"] = [t.openai() for t in tools]
            body["tool_choice"] = "auto"
        key = make_id(
            role,
            model,
            messages,
            response_format,
            [t.model_dump() for t in tools or []],
            temperature,
            max_tokens,
            seed,
            context_key,
        )

        if self.recorder is not None:
            cached = await asyncio.to_thread(self.recorder.cached_response, key)
            if cached is not None:
                return _result(cached, model=model, endpoint=None, cached=True)

        latency = 0.0
        attempts = self.settings.llm.retries + 1
        failure: _CallFailure | None = None
        data: dict[str, Any] | None = None
        url = urls[0]
        group = tuple(urls)
        dispatcher = self._dispatcher()
        for attempt in range(attempts):
            ep = await dispatcher.acquire(group)  # retries may land on another endpoint
            url = ep.url
            t0 = time.perf_counter()
            try:
                data = await self._send(ep, body, cfg["timeout_s"])
                failure = None
                break
            except _CallFailure as exc:
                failure = exc
            finally:
                latency += time.perf_counter() - t0
                dispatcher.release(ep)
            if not failure.retryable or attempt == attempts - 1:
                break
            await asyncio.sleep(self._backoff(attempt, failure.retry_after))

        retries = attempt
        if data is not None:
            self._unreachable_since.pop(url, None)
            result = _result(data, model=model, endpoint=url, cached=False)
        else:
            assert failure is not None
            result = ChatResult(text=None, tool_calls=None, error=str(failure), model=model, endpoint=url)
        result.latency_s = latency
        result.retries = retries
        if self.recorder is not None:
            call = LLMCall(
                id=make_id("llm_call", key, uuid.uuid4().hex),
                key=key,
                role=role,
                model=model,
                endpoint=url,
                template=template,
                template_hash=template_hash,
                request=body,
                response=data,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                latency_s=latency,
                retries=retries,
                error=result.error,
            )
            await asyncio.to_thread(self.recorder.add_llm_calls, [call])
            result.call_id = call.id
        if failure is not None and failure.unreachable:
            self._unreachable_since.setdefault(url, time.time())
            await self._raise_if_down(role, list(group))
        return result

    async def _raise_if_down(self, role: str, urls: list[str]) -> None:
        """Raise ModelUnreachable when every endpoint of the role refuses connections now."""
        probes = await asyncio.gather(*(asyncio.to_thread(liveness.probe, u) for u in urls))
        if not all(p.down for p in probes):
            return
        check_managed_servers()  # a server this process started: its own exit status and log
        since = min((self._unreachable_since.get(u, time.time()) for u in urls), default=None)
        log_dir = self.settings.database.parent / "logs"
        raise liveness.ModelUnreachable(liveness.explain_down(urls, since, log_dir, role))

    async def _send(self, ep: Endpoint, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        rf = body.get("response_format")
        if ep.url in self._llama_dialect and rf is not None:
            body = {**body, "response_format": llama_cpp_format(rf)}
        try:
            raw = await ep.post_chat(body, timeout_s)
        except openai.APITimeoutError:
            raise _CallFailure(
                f"timeout after {timeout_s:g}s at {ep.url} (the server took the request but did not "
                "answer in time: busy or slow, not down)",
                retryable=True,
            ) from None
        except openai.APIConnectionError as exc:
            raise _CallFailure(
                f"connection error at {ep.url} (not answering): {exc.__cause__ or exc}",
                retryable=True,
                unreachable=True,
            ) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            if (
                rf is not None
                and rf.get("type") == "json_schema"
                and (ep.url not in self._llama_dialect and "response_format" in str(exc.body))
            ):
                # llama-cpp-python's server rejects the OpenAI json_schema form (with a 500) but
                # constrains decoding with {"type": "json_object", "schema": ...}; remember, resend.
                self._llama_dialect.add(ep.url)
                return await self._send(ep, body, timeout_s)
            retry_after = (
                retry_after_seconds(exc.response.headers.get("retry-after")) if status == 429 else None
            )
            raise _CallFailure(
                f"HTTP {status} from {ep.url}: {_short(exc.body or exc.message)}",
                retryable=status == 429 or status >= 500,
                retry_after=retry_after,
            ) from None
        try:
            data = json.loads(raw.content)
            data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _CallFailure(
                f"malformed response from {ep.url} ({type(exc).__name__}): {_short(raw.text)}", retryable=True
            ) from None
        return data

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        return backoff_delay(attempt, self._rng, retry_after, self.backoff_base_s, self.backoff_max_s)

    async def aclose(self) -> None:
        # Pools of other (finished) loops cannot be closed from here; dropping them is enough.
        dispatcher = self._per_loop.get(asyncio.get_running_loop())
        self._per_loop.clear()
        if dispatcher is not None:
            await dispatcher.aclose()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def _result(data: dict[str, Any], *, model: str, endpoint: str | None, cached: bool) -> ChatResult:
    choice = data["choices"][0]
    message = choice.get("message") or {}
    usage = data.get("usage") or {}
    return ChatResult(
        text=message.get("content"),
        tool_calls=parse_tool_calls(message.get("tool_calls")),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached=cached,
        model=model,
        endpoint=endpoint,
        finish_reason=choice.get("finish_reason"),
        response=data,
    )


def parse_tool_calls(raw: list[dict[str, Any]] | None) -> list[ToolCall] | None:
    """Native tool calls as ToolCall objects; None when absent or when any does not parse."""
    if not raw:
        return None
    calls = []
    for item in raw:
        fn = (item or {}).get("function") or {}
        args = fn.get("arguments")
        try:
            if isinstance(args, str):
                args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
        if not isinstance(fn.get("name"), str) or not isinstance(args, dict):
            return None
        calls.append(ToolCall(name=fn["name"], arguments=args))
    return calls


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "…"
