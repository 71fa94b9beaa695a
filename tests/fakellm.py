"""A fake OpenAI-compatible server for tests and benchmarks: real HTTP on 127.0.0.1.

In a test::

    with FakeLLMServer(handler=..., latency_s=0.05, faults={"500": 0.2}) as srv:
        client = LLMClient(settings, endpoints=[srv.base_url])

As a process (a subprocess `magv run` can be pointed at it; extra flags, such as the ones of
`vllm serve`, are ignored so it can stand in for vLLM too)::

    python -m tests.fakellm --port 8911 --script auto --latency 0.05 --fault 500=0.1

`handler(request_json)` returns the reply: a string (text content), `{"tool_calls": [{"name": ..,
"arguments": {..}}]}` (native tool calls), `{"json": value}` (JSON text content) or
`{"fault": kind}` (one of FAULT_KINDS). Without a handler the reply is made up from the request:
a call of the first tool until the conversation holds a tool result, then an answer; in JSON mode
an instance of the requested schema.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FAULT_KINDS = (
    "timeout",  # sleeps past any sensible client timeout
    "500",
    "429",
    "400",  # a request the server refuses: not worth retrying
    "truncated",  # the HTTP body is cut in half: not valid JSON
    "invalid_json",  # the model's content (or tool arguments) is not valid JSON
    "unknown_tool",
    "wrong_types",  # tool arguments of the wrong JSON types
    "empty",  # empty content and no tool calls
)

Handler = Callable[[dict[str, Any]], "str | dict[str, Any]"]

_WORDS = [
    "order",
    "refund",
    "shipping",
    "invoice",
    "account",
    "password",
    "delivery",
    "address",
    "return",
    "warranty",
    "price",
    "discount",
    "subscription",
    "payment",
    "card",
    "item",
    "size",
    "colour",
    "store",
    "tracking",
    "label",
    "exchange",
]


class FakeLLMServer:
    def __init__(
        self,
        handler: Handler | None = None,
        *,
        latency_s: float = 0.0,
        faults: dict[str, float] | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "fake-model",
        timeout_sleep_s: float = 30.0,
        embedding_dim: int = 16,
        json_schema_format: bool = True,
        embedding_failures: int = 0,
    ):
        faults = dict(faults or {})
        unknown = set(faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; expected {FAULT_KINDS}")
        if sum(faults.values()) > 1:
            raise ValueError("fault rates add up to more than 1")
        self.handler = handler
        self.latency_s = latency_s
        self.faults = faults
        self.model = model
        self.timeout_sleep_s = timeout_sleep_s
        self.embedding_dim = embedding_dim
        self.embedding_failures = embedding_failures  # the first n embedding requests get HTTP 500
        # False imitates llama-cpp-python's server, which only knows {"type": "json_object", "schema": ..}.
        self.json_schema_format = json_schema_format
        self.counts: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and without it
        # every keep-alive request waits ~40 ms for a delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def start(self) -> FakeLLMServer:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )
        config = uvicorn.Config(
            app, log_level="error", access_log=False, lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="fakellm", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake LLM server did not start")
            time.sleep(0.005)
        return self

    def _run(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            assert self._server is not None
            await self._server.serve(sockets=[self._sock])

        asyncio.run(serve())

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._loop is not None and self._stopping is not None:
            try:
                self._loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:
                pass  # loop already closed
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()
        self._server = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- routes ----------------------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        self.counts["health"] += 1
        return JSONResponse({"status": "ok"})

    async def _models(self, request: Request) -> Response:
        self.counts["models"] += 1
        return JSONResponse({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        self.counts["embeddings"] += 1
        if self.counts["embeddings"] <= self.embedding_failures:
            return JSONResponse({"error": {"message": "injected fault"}}, status_code=500)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        data = [
            {"object": "embedding", "index": i, "embedding": _hash_vector(t, self.embedding_dim)}
            for i, t in enumerate(texts)
        ]
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse(
            {"object": "list", "data": data, "model": body.get("model", self.model),
             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        )  # fmt: skip

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.counts["chat"] += 1
            self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            fault = self._draw_fault()
        try:
            rf = body.get("response_format") or {}
            if rf.get("type") == "json_schema" and not self.json_schema_format:
                self.counts["rejected_format"] += 1
                return JSONResponse(
                    {"detail": [{"loc": ["body", "response_format", "type"],
                                 "msg": "Input should be 'text' or 'json_object'"}]},
                    status_code=422,
                )  # fmt: skip
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            reply = self.handler(body) if self.handler else auto_reply(body)
            if isinstance(reply, dict) and "fault" in reply:
                fault = reply["fault"]
            if fault is not None:
                self.counts[fault] += 1
                return await self._fault(fault, body)
            self.counts["reply"] += 1
            return _completion(body, reply, self.model)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _draw_fault(self) -> str | None:
        u = self._rng.random()
        edge = 0.0
        for kind, rate in self.faults.items():
            edge += rate
            if u < edge:
                return kind
        return None

    async def _fault(self, kind: str, body: dict[str, Any]) -> Response:
        if kind == "timeout":
            assert self._stopping is not None
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self.timeout_sleep_s)
            except TimeoutError:
                pass
            return JSONResponse({"error": {"message": "too late"}}, status_code=504)
        if kind == "500":
            return JSONResponse({"error": {"message": "injected server error"}}, status_code=500)
        if kind == "400":
            return JSONResponse({"error": {"message": "injected bad request"}}, status_code=400)
        if kind == "429":
            return JSONResponse(
                {"error": {"message": "injected rate limit"}}, status_code=429, headers={"retry-after": "0"}
            )
        if kind == "truncated":
            full = _completion(body, "a reply that will be cut off", self.model).body
            return Response(full[: len(full) // 2], media_type="application/json")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        return _completion(body, _bad_reply(kind, body), self.model)


# -- replies ---------------------------------------------------------------------------------------


def _completion(body: dict[str, Any], reply: str | dict[str, Any], model: str) -> JSONResponse:
    message: dict[str, Any] = {"role": "assistant", "content": None}
    finish = "stop"
    if isinstance(reply, str):
        message["content"] = reply
    elif "tool_calls" in reply:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {
                    "name": c["name"],
                    "arguments": c["arguments"]
                    if isinstance(c["arguments"], str)
                    else json.dumps(c["arguments"]),
                },
            }
            for i, c in enumerate(reply["tool_calls"])
        ]
        finish = "tool_calls"
    elif "json" in reply:
        message["content"] = json.dumps(reply["json"])
    else:
        raise ValueError(f"handler reply must be a str or a dict with tool_calls, json or fault: {reply!r}")
    prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
    completion_chars = len(message["content"] or "") + len(json.dumps(message.get("tool_calls") or ""))
    usage = {"prompt_tokens": max(1, prompt_chars // 4), "completion_tokens": max(1, completion_chars // 4)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return JSONResponse(
        {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
         "model": body.get("model") or model,
         "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}
    )  # fmt: skip


def request_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request asks the reply to follow, in either dialect."""
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_schema":
        return (rf.get("json_schema") or {}).get("schema")
    if rf.get("type") == "json_object":
        return rf.get("schema")
    return None


def _tools_of(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, parameters) of the tools a request offers, natively or inside an action schema."""
    if body.get("tools"):
        return [(t["function"]["name"], t["function"].get("parameters") or {}) for t in body["tools"]]
    schema = request_schema(body) or {}
    out = []
    for branch in schema.get("anyOf") or schema.get("oneOf") or []:
        props = branch.get("properties") or {}
        if "tool" in props:
            out.append((props["tool"].get("const"), props.get("arguments") or {}))
    return out


def _has_tool_result(body: dict[str, Any]) -> bool:
    return any(m.get("role") in ("tool", "assistant") for m in body.get("messages", []))


def auto_reply(body: dict[str, Any]) -> str | dict[str, Any]:
    """A plausible reply made up from the request alone (deterministic in its content)."""
    rng = random.Random(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest())
    tools = _tools_of(body)
    schema = request_schema(body)
    done = _has_tool_result(body)
    if body.get("tools"):
        if done:
            return f"Here is what I found: {_phrase(rng)}."
        name, params = tools[0]
        return {"tool_calls": [{"name": name, "arguments": instance_of(params, rng)}]}
    if schema is not None:
        if tools:
            if done:
                return {"json": {"answer": f"Here is what I found: {_phrase(rng)}."}}
            name, params = tools[0]
            return {"json": {"tool": name, "arguments": instance_of(params, rng)}}
        return {"json": instance_of(schema, rng)}
    last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
    return f"About {str(last.get('content') or '')[:40]!r}: {_phrase(rng)}."


def _phrase(rng: random.Random, n: int = 6) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n)) + f" {rng.randint(100, 9999)}"


def instance_of(schema: dict[str, Any], rng: random.Random | None = None) -> Any:
    """A value that satisfies a (simple) JSON schema."""
    rng = rng or random.Random(0)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return instance_of(schema[key][0], rng)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required", list(props))
        return {k: instance_of(props[k], rng) for k in props if k in required}
    if kind == "array":
        n = max(schema.get("minItems", 1), 1)
        if "maxItems" in schema:
            n = min(n, schema["maxItems"])
        return [instance_of(schema.get("items") or {"type": "string"}, rng) for _ in range(n)]
    if kind == "string":
        return _phrase(rng, 5)
    if kind == "integer":
        return rng.randint(max(schema.get("minimum", 1), 1), schema.get("maximum", 999))
    if kind == "number":
        return round(rng.uniform(schema.get("minimum", 1.0), schema.get("maximum", 100.0)), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def wrong_arguments(params: dict[str, Any]) -> Any:
    """Arguments whose every property has a JSON type the schema does not allow."""
    wrong = {"string": 12345, "integer": "not-a-number", "number": "not-a-number", "boolean": "yes",
             "array": "not-a-list", "object": "not-an-object"}  # fmt: skip
    props = params.get("properties") or {}
    if not props:
        return ["not", "an", "object"]
    return {k: wrong.get(v.get("type") if isinstance(v.get("type"), str) else "string", 12345)
            for k, v in props.items()}  # fmt: skip


def _bad_reply(kind: str, body: dict[str, Any]) -> str | dict[str, Any]:
    tools = _tools_of(body)
    native = bool(body.get("tools"))
    name, params = (
        tools[0] if tools else ("lookup", {"type": "object", "properties": {"id": {"type": "string"}}})
    )
    if kind == "empty":
        return ""
    if kind == "invalid_json":
        broken = '{"order_id": 12, "note": "unterminated'
        return (
            {"tool_calls": [{"name": name, "arguments": broken}]} if native else '{"tool": "' + name + '", '
        )
    if kind == "unknown_tool":
        call = {"name": "no_such_tool", "arguments": {}}
        return {"tool_calls": [call]} if native else {"json": {"tool": "no_such_tool", "arguments": {}}}
    if kind == "wrong_types":
        args = wrong_arguments(params)
        return (
            {"tool_calls": [{"name": name, "arguments": args}]}
            if native
            else {"json": {"tool": name, "arguments": args}}
        )
    raise ValueError(f"unknown fault kind {kind!r}")


def _hash_vector(text: str, dim: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).tolist()


# -- scripts for the command line ------------------------------------------------------------------


def _answer_only(body: dict[str, Any]) -> str | dict[str, Any]:
    if request_schema(body) is not None and _tools_of(body):
        return {"json": {"answer": "I cannot help with that."}}
    return "I cannot help with that."


def _fail(body: dict[str, Any]) -> dict[str, Any]:
    return {"fault": "500"}


_agent_scripts: dict[str, Any] = {}


def _agents(body: dict[str, Any]) -> str | dict[str, Any]:
    """The scripted MAG-V agents of tests/fake_agents.py on the retail domain, built on first use."""
    if "retail" not in _agent_scripts:
        from tests.fake_agents import AgentScript

        _agent_scripts["retail"] = AgentScript("retail")
    return _agent_scripts["retail"](body)


SCRIPTS: dict[str, Handler | None] = {"auto": None, "answer": _answer_only, "fail": _fail, "agents": _agents}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakellm", description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="*", help="ignored (lets it stand in for `vllm serve MODEL`)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", default="auto", choices=sorted(SCRIPTS))
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per chat reply")
    parser.add_argument("--fault", action="append", default=[], metavar="KIND=RATE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--startup-delay", type=float, default=0.0, help="wait before listening")
    args, _ignored = parser.parse_known_args(argv)
    faults = {}
    for item in args.fault:
        kind, _, rate = item.partition("=")
        faults[kind] = float(rate or 1.0)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.startup_delay and stop.wait(args.startup_delay):
        return 0
    server = FakeLLMServer(
        SCRIPTS[args.script], latency_s=args.latency, faults=faults, seed=args.seed,
        host=args.host, port=args.port, model=args.model,
    )  # fmt: skip
    with server:
        print(f"fakellm listening on {server.base_url}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
