"""The verifier over HTTP (Starlette): `POST /v1/verify`, `GET /health`, `GET /openapi.json`.

    app = create_app(scorer, log=TrajectoryLog(path), max_body=1_000_000, token=None)
    uvicorn.run(app, host="127.0.0.1", port=8765)

Scoring runs in worker threads (`workers`, default one per CPU) so the event loop keeps answering
(health checks, other requests) while a batch is featurized. Each request's work is bounded: at
most `max_pairs` sibling comparisons (413 above), `ged_seconds` of graph edit distance (then each
further pair gets a linear-time bound, and the result says `"ged": "bounded"`), and its scoring
stops when its client disconnects. With a `token`, `/v1/verify` needs `Authorization: Bearer
<token>`. Errors are JSON: {"error": {"field": ..., "message": ...}}.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
from magv.service.server import GED_SECONDS, MAX_PAIRS

if TYPE_CHECKING:
    from magv.pipeline.reask import Reasker
from magv.verify.budget import WorkBudget, WorkCancelled
from magv.verify.scoring import Scorer, Verdict

log = logging.getLogger("magv.service")

MAX_BODY = 1_000_000  # bytes
MAX_TRAJECTORIES = 256
BODY_SECONDS = 30.0  # a body sent slower than this holds a connection for nothing


def comparisons(entries: list[Entry]) -> int:
    """The sibling pairs scoring the entries compares: each scored run against every other run of
    its group (the featurizer's work, before its memo of identical pairs)."""
    size: dict[Any, int] = {}
    scored: dict[Any, int] = {}
    for e in entries:
        key = e.key
        size[key] = size.get(key, 0) + 1 + len(e.siblings)
        scored[key] = scored.get(key, 0) + 1
    return sum(scored[k] * (size[k] - 1) for k in size)


def entry_inputs(entries: list[Entry]) -> tuple[list[Any], list[Any], dict[Any, str], list[int]]:
    """(trajectories, groups, questions, rows) of the entries for the scorer: an entry's siblings,
    and the entries of one group, are runs of one question; the rows are the entries'."""
    trajectories, groups, rows, questions = [], [], [], {}
    for e in entries:
        key = e.key
        questions.setdefault(key, e.run.question)
        rows.append(len(trajectories))
        for run in (e.run, *e.siblings):
            trajectories.append(run.trajectory)
            groups.append(key)
    return trajectories, groups, questions, rows


def score_entries(scorer: Scorer, entries: list[Entry]) -> list[Verdict]:
    """Verdicts of the entries, in order."""
    trajectories, groups, questions, rows = entry_inputs(entries)
    return scorer.score(trajectories, groups, questions, rows)


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` (by its Content-Length,
    or while a chunked body is read), with 408 when it takes more than BODY_SECONDS to arrive."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise PayloadError(400, "Content-Length", "expected a number of bytes")
        if int(declared) > limit:
            raise PayloadError(413, "body", f"{declared} bytes; this service takes at most {limit}")
    chunks, size = [], 0
    with anyio.move_on_after(BODY_SECONDS) as late:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadError(
                    413, "body", f"more than {limit} bytes; this service takes at most {limit}"
                )
            chunks.append(chunk)
    if late.cancelled_caught:
        raise PayloadError(408, "body", f"not received within {BODY_SECONDS:g} s")
    return b"".join(chunks)


def create_app(
    scorer: Scorer,
    *,
    trajectory_log: TrajectoryLog | None = None,
    max_body: int = MAX_BODY,
    max_trajectories: int = MAX_TRAJECTORIES,
    max_pairs: int = MAX_PAIRS,
    ged_seconds: float = GED_SECONDS,
    workers: int | None = None,
    token: str | None = None,
    errors: ToolErrorRule = DEFAULT_TOOL_ERRORS,
    reasker: Reasker | None = None,
) -> Starlette:
    """The app; `errors` says which tool results of the requests are errors. With a `reasker`
    (magv.pipeline.reask), the conversations it chooses are asked again of the user's agent and
    scored with its runs as siblings; each answer says what was done and what it cost."""
    schema = openapi_schema(max_body, max_trajectories, max_pairs)
    expected = f"Bearer {token}".encode() if token else None
    # Scoring is CPU-bound and holds the GIL: more threads than cores only make them take turns
    # with the event loop, which then reads and answers requests late (the tail latency).
    limiter = anyio.CapacityLimiter(workers or os.cpu_count() or 1)

    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)

    def _parse_and_score(
        body: bytes, budget: WorkBudget
    ) -> tuple[list[Entry], bool, list[Verdict], list[bool]]:
        budget.check()  # the client may have left while the request waited for a worker
        entries, batch = parse_request(body, max_trajectories, errors)
        pairs = comparisons(entries)
        if pairs > max_pairs:
            raise PayloadError(
                413,
                "trajectories",
                f"{pairs} sibling comparisons (each scored run against every "
                f"other run of its group); this service makes at most {max_pairs} a request: "
                "send fewer runs per group, or split the batch",
            )
        with budget.active():
            verdicts = score_entries(scorer, entries)
        exact = [bool(x) for x in budget.exact_rows[-1]] if budget.exact_rows else [True] * len(verdicts)
        return entries, batch, verdicts, exact

    def _reasked(entries: list[Entry], verdicts: list[Verdict], exact: list[bool], budget: WorkBudget) -> Any:
        """The re-asker's outcome for the entries (the agent's calls take no scoring worker)."""
        assert reasker is not None
        budget.check()
        trajectories, groups, questions, rows = entry_inputs(entries)
        with budget.active():
            outcome = reasker.run(scorer, trajectories, groups, questions, rows, verdicts, budget.cancelled)
        if outcome.rescored and budget.exact_rows:
            for pos, x in zip(outcome.rescored, budget.exact_rows[-1], strict=True):
                exact[pos] = bool(x)
        return outcome

    async def watched(request: Request, limited: bool, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args, budget)` in a worker thread (`limited`: one of the scoring workers), its
        budget cancelled if the client disconnects meanwhile."""
        budget = WorkBudget(ged_seconds=ged_seconds)
        outcome: list[Any] = []

        async def watch_client() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            budget.cancelled.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch_client)
            try:
                if limited:
                    outcome.append(await in_thread(fn, *args, budget))
                else:  # the agent's calls take no scoring worker
                    outcome.append(await anyio.to_thread.run_sync(functools.partial(fn, *args, budget)))
            except BaseException as exc:  # kept to raise outside the task group, not as an ExceptionGroup
                outcome.append(exc)
            tasks.cancel_scope.cancel()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def authorised(request: Request) -> None:
        given = request.headers.get("authorization", "").encode()
        if expected is not None and not hmac.compare_digest(given, expected):
            raise PayloadError(
                401, "Authorization", "expected the service's bearer token: Authorization: Bearer TOKEN"
            )

    async def verify(request: Request) -> JSONResponse:
        authorised(request)
        body = await _body(request, max_body)
        started = time.perf_counter()
        outcome = None
        try:
            entries, batch, verdicts, exact = await watched(request, True, _parse_and_score, body)
            if reasker is not None:
                outcome = await watched(request, False, _reasked, entries, verdicts, exact)
                verdicts = outcome.verdicts
        except WorkCancelled:
            log.info("client left: its scoring stopped after %.3f s", time.perf_counter() - started)
            return JSONResponse({"error": {"field": None, "message": "the client left"}}, status_code=499)
        results = [
            {"id": e.id, **v.as_dict(), "ged": "exact" if x else "bounded"}
            for e, v, x in zip(entries, verdicts, exact, strict=True)
        ]
        if outcome is not None:
            for result, note in zip(results, outcome.notes, strict=True):
                result["reask"] = note
        out: dict[str, Any] = {"model": scorer.model_id}
        if outcome is not None:
            out["reask_summary"] = outcome.summary
        if batch:
            out["results"] = results
        else:
            out.update(results[0])
        if trajectory_log is not None:
            try:
                if outcome is not None and outcome.calls:
                    await in_thread(trajectory_log.add_calls, outcome.calls)
                out["logged"] = await in_thread(trajectory_log.add, entries)
            except Exception as exc:  # the verdicts stand; the client is told the log failed
                log.exception("storing trajectories in %s failed", trajectory_log.database)
                out["log_error"] = f"{type(exc).__name__}: {exc}"
        return JSONResponse(out)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "model": scorer.info(),
                "log_to": str(trajectory_log.database) if trajectory_log else None,
            }
        )

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(schema)

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PayloadError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.as_dict(), status_code=exc.status, headers=headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"error": {"field": request.url.path, "message": exc.detail}},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.error("scoring failed: %s: %s", type(exc).__name__, exc)
        return JSONResponse(
            {"error": {"field": None, "message": f"scoring failed: {type(exc).__name__}: {exc}"}},
            status_code=500,
        )

    routes = [
        Route("/v1/verify", verify, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={PayloadError: refused, HTTPException: http_error, Exception: failed},
    )
