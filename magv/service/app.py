"""The verifier over HTTP (Starlette): `POST /v1/verify`, `GET /health`, `GET /openapi.json`.

    app = create_app(scorer, log=TrajectoryLog(path), max_body=1_000_000)
    uvicorn.run(app, host="127.0.0.1", port=8765)

Scoring runs in worker threads (`workers`, default one per CPU) so the event loop keeps answering
(health checks, other requests) while a batch is featurized. Errors are JSON: {"error": {"field": ..., "message": ...}}.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from magv.definitions import DEFAULT_TOOL_ERRORS, ToolErrorRule
from magv.service.log import TrajectoryLog
from magv.service.openapi import openapi_schema
from magv.service.payload import Entry, PayloadError, parse_request
from magv.verify.scoring import Scorer, Verdict

log = logging.getLogger("magv.service")

MAX_BODY = 1_000_000  # bytes
MAX_TRAJECTORIES = 256


def score_entries(scorer: Scorer, entries: list[Entry]) -> list[Verdict]:
    """Verdicts of the entries, in order. An entry's siblings, and the entries of one group, are
    featurized as runs of one question."""
    trajectories, groups, rows, questions = [], [], [], {}
    for e in entries:
        key = ("group", e.group) if e.group is not None else ("entry", e.index)
        questions.setdefault(key, e.run.question)
        rows.append(len(trajectories))
        for run in (e.run, *e.siblings):
            trajectories.append(run.trajectory)
            groups.append(key)
    return scorer.score(trajectories, groups, questions, rows)


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` (by its Content-Length,
    or while a chunked body is read)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise PayloadError(400, "Content-Length", "expected a number of bytes")
        if int(declared) > limit:
            raise PayloadError(413, "body", f"{declared} bytes; this service takes at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadError(413, "body", f"more than {limit} bytes; this service takes at most {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    scorer: Scorer,
    *,
    trajectory_log: TrajectoryLog | None = None,
    max_body: int = MAX_BODY,
    max_trajectories: int = MAX_TRAJECTORIES,
    workers: int | None = None,
    errors: ToolErrorRule = DEFAULT_TOOL_ERRORS,
) -> Starlette:
    """The app; `errors` says which tool results of the requests are errors."""
    schema = openapi_schema(max_body, max_trajectories)
    # Scoring is CPU-bound and holds the GIL: more threads than cores only make them take turns
    # with the event loop, which then reads and answers requests late (the tail latency).
    limiter = anyio.CapacityLimiter(workers or os.cpu_count() or 1)

    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)

    def _parse_and_score(body: bytes) -> tuple[list[Entry], bool, list[Verdict]]:
        entries, batch = parse_request(body, max_trajectories, errors)
        return entries, batch, score_entries(scorer, entries)

    async def verify(request: Request) -> JSONResponse:
        body = await _body(request, max_body)
        entries, batch, verdicts = await in_thread(_parse_and_score, body)
        results = [{"id": e.id, **v.as_dict()} for e, v in zip(entries, verdicts, strict=True)]
        out: dict[str, Any] = {"model": scorer.model_id}
        if batch:
            out["results"] = results
        else:
            out.update(results[0])
        if trajectory_log is not None:
            try:
                out["logged"] = await in_thread(trajectory_log.add, entries)
            except Exception as exc:  # the verdicts stand; the client is told the log failed
                log.exception("storing trajectories in %s failed", trajectory_log.database)
                out["log_error"] = f"{type(exc).__name__}: {exc}"
        return JSONResponse(out)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": scorer.info(),
                             "log_to": str(trajectory_log.database) if trajectory_log else None})  # fmt: skip

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(schema)

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PayloadError)
        return JSONResponse(exc.as_dict(), status_code=exc.status)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": {"field": request.url.path, "message": exc.detail}},
                            status_code=exc.status_code, headers=exc.headers)  # fmt: skip

    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.error("scoring failed: %s: %s", type(exc).__name__, exc)
        return JSONResponse({"error": {"field": None, "message": f"scoring failed: {type(exc).__name__}: {exc}"}},
                            status_code=500)  # fmt: skip

    routes = [
        Route("/v1/verify", verify, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={
        PayloadError: refused, HTTPException: http_error, Exception: failed})  # fmt: skip
