"""Sandboxed tool execution: agent runs never change the domain's data.

A `SandboxPool` (one per process) opens an in-memory DuckDB, attaches the domain file READ_ONLY
and copies its tables into memory once: the file is never written after `Domain.build`, so any
number of processes can hold a pool on it at the same time.

Each `session()` (one agent run) gets its own cursor. Read tools run against the shared in-memory
tables. The first write tool of a session shadows every table with a private TEMP copy (temp
tables belong to the cursor's own connection and take precedence over main tables), so writes act
within the run and vanish when the session ends.

Why not one transaction per session rolled back at the end: DuckDB raises "Conflict on update"
when two open transactions change the same row, and concurrent runs of one question (R runs, MCT)
do exactly that; and any SQL error aborts the whole transaction, losing the run's earlier writes.
Private copies have neither problem. Each call still runs in its own transaction (committed into
the private copies for write tools, rolled back for read tools) so a failing call leaves no
half-done change behind.

Once the tables are in memory the connection is locked down (`LOCKDOWN`): no file or network
access (`read_text`, `read_csv`, `COPY`, `ATTACH` of any file, the domain's own included), no
extension loading or download, and the configuration itself is locked so a tool's SQL cannot turn
any of it back on. Tools see the domain's tables and nothing else of the host.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import duckdb

from magv.domains.sql import jsonable
from magv.domains.tools import Tool, ToolError, argument_errors
from magv.errors import BadInput
from magv.models import Step, ToolCall, canonical_json


class ToolProvider(Protocol):
    """What the sandbox needs of a domain (a `magv.domains.base.Domain` is one): no import of it,
    so the sandbox does not depend on the module that builds it."""

    name: str
    tools: Sequence[Tool]

    def implementation(self, name: str) -> Any: ...


META_TABLE = "magv_meta"
MAX_ARGUMENT_CHARS = 8 * 1024
MAX_ERROR_CHARS = 600
MAX_STRING_CHARS = 2000
MAX_RESULT_CHARS = 8000
LIST_LIMITS = (50, 20, 8, 3)
STOP_GRACE_S = 2.0
# From the start: opening a file DuckDB does not know natively (SQLite, say) must not download
# or load an extension to read it.
NO_EXTENSIONS = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
# Once the domain is loaded; the configuration lock comes last, after what it has to keep off.
LOCKDOWN = ("SET enable_external_access = false", "SET lock_configuration = true")


class _ToolFailure(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 20] + f"… [{len(text)} chars]"


class SandboxPool:
    """The domain's data in memory, shared by this process's sessions. Thread-safe."""

    def __init__(self, domain: ToolProvider, database: str | Path, tool_timeout_s: float = 10.0):
        if tool_timeout_s <= 0:
            raise BadInput(f"tool_timeout_s: must be > 0 (got {tool_timeout_s})")
        self.domain = domain
        self.database = Path(database)
        self.tool_timeout_s = float(tool_timeout_s)
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = duckdb.connect(":memory:", config=NO_EXTENSIONS)
        self.tables, self._views = self._load()
        for statement in LOCKDOWN:
            self._con.execute(statement)

    def _load(self) -> tuple[list[str], list[str]]:
        if not self.database.is_file():
            raise BadInput(
                f"domain {self.domain.name}: database {self.database} not found (run `magv domain build`)"
            )
        con = self._connection()
        literal = str(self.database).replace("'", "''")
        try:
            con.execute(f"ATTACH '{literal}' AS domain_source (READ_ONLY)")
        except duckdb.Error as exc:
            raise BadInput(f"domain {self.domain.name}: cannot open {self.database}: {exc}") from None
        names = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'domain_source' "
                "AND schema_name = 'main' AND table_name <> ? ORDER BY table_name",
                [META_TABLE],
            ).fetchall()
        ]
        views = [
            r[0]
            for r in con.execute(
                "SELECT sql FROM duckdb_views() WHERE database_name = 'domain_source' AND NOT internal "
                "ORDER BY view_name"
            ).fetchall()
        ]
        for name in names:
            con.execute(
                f"CREATE TABLE main.{_quote(name)} AS SELECT * FROM domain_source.main.{_quote(name)}"
            )
        con.execute("DETACH domain_source")
        for sql in views:
            con.execute(sql)
        return names, views

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise RuntimeError("the sandbox pool is closed")
        return self._con

    @contextlib.contextmanager
    def session(self) -> Iterator[Sandbox]:
        """One agent run: its changes are private to it and dropped at exit."""
        with self._lock:
            cursor = self._connection().cursor()
        sandbox = Sandbox(self, cursor)
        try:
            yield sandbox
        finally:
            sandbox._close()

    def run(self, calls: Sequence[ToolCall]) -> list[Step]:
        """Execute a whole trajectory in one session (gold trajectories, checks)."""
        with self.session() as sandbox:
            return [sandbox.execute(c) for c in calls]

    def table_counts(self) -> dict[str, int]:
        with self._lock:
            cursor = self._connection().cursor()
        try:
            return {
                n: cursor.execute(f"SELECT count(*) FROM main.{_quote(n)}").fetchone()[0] for n in self.tables
            }
        finally:
            cursor.close()

    def checksum(self) -> str:
        """Content hash of every shared table: row count and an order-independent sum of row hashes."""
        with self._lock:
            cursor = self._connection().cursor()
        try:
            parts = []
            for name in self.tables:
                columns = cursor.execute(f"DESCRIBE main.{_quote(name)}").fetchall()
                count, total = cursor.execute(
                    f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0) FROM main.{_quote(name)} AS t"
                ).fetchone()
                parts.append([name, [[c[0], c[1]] for c in columns], count, str(total)])
        finally:
            cursor.close()
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Sandbox:
    """Runs the tool calls of one agent run. `execute` never raises."""

    def __init__(self, pool: SandboxPool, cursor: duckdb.DuckDBPyConnection):
        self.pool = pool
        self._db = cursor
        self._forked = False
        self._stuck: threading.Thread | None = None

    def execute(self, call: ToolCall) -> Step:
        start = time.perf_counter()
        try:
            result = self._execute(call)
        except _ToolFailure as failure:
            error = f"{failure.kind}: {_clip(failure.message)}"
            return Step(kind="tool", call=call, error=error, latency_s=time.perf_counter() - start)
        except Exception as exc:  # the contract: a tool problem is a recorded step, never a crash
            error = f"internal_error: {type(exc).__name__}: {_clip(str(exc))}"
            return Step(kind="tool", call=call, error=error, latency_s=time.perf_counter() - start)
        return Step(kind="tool", call=call, result=result, latency_s=time.perf_counter() - start)

    def _execute(self, call: ToolCall) -> Any:
        tool = self.pool.domain.implementation(call.name)
        if tool is None:
            names = ", ".join(t.name for t in self.pool.domain.tools)
            raise _ToolFailure(
                "unknown_tool", f"there is no tool named {call.name!r}; available tools: {names}"
            )
        size = len(canonical_json(call.arguments))
        if size > MAX_ARGUMENT_CHARS:
            raise _ToolFailure(
                "invalid_arguments",
                f"{call.name}: arguments are {size} characters; at most {MAX_ARGUMENT_CHARS}",
            )
        problem = argument_errors(tool.spec, call.arguments)
        if problem is not None:
            raise _ToolFailure("invalid_arguments", f"{call.name}: {problem}")
        if self._stuck is not None and self._stuck.is_alive():
            raise _ToolFailure(
                "unavailable", "an earlier tool call of this run is still stuck after its timeout"
            )
        return bound(self._run_with_timeout(tool, call.arguments))

    def _run_with_timeout(self, tool: Tool, arguments: dict[str, Any]) -> Any:
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["result"] = self._call(tool, arguments)
            except BaseException as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=work, name=f"magv-tool-{tool.name}", daemon=True)
        worker.start()
        worker.join(self.pool.tool_timeout_s)
        if worker.is_alive():
            # Interrupt stops a running query; a tool stuck in Python keeps its thread, so the
            # session refuses further calls rather than share the cursor with it.
            self._db.interrupt()
            worker.join(STOP_GRACE_S)
            if worker.is_alive():
                self._stuck = worker
            raise _ToolFailure(
                "timeout", f"{tool.name} did not finish within {self.pool.tool_timeout_s:g} s and was stopped"
            )
        if "error" in outcome:
            exc = outcome["error"]
            if isinstance(exc, ToolError):
                raise _ToolFailure("tool_error", str(exc))
            if isinstance(exc, duckdb.Error):
                raise _ToolFailure(
                    "internal_error", f"{tool.name}: database error: {str(exc).splitlines()[0]}"
                )
            if isinstance(exc, Exception):
                raise _ToolFailure("internal_error", f"{tool.name}: {type(exc).__name__}: {exc}")
            # SystemExit, KeyboardInterrupt and the like raised by the tool itself, in its worker
            # thread: a broken tool, not a request to stop magv (the user's Ctrl-C reaches the main
            # thread, never this one). Recorded like any other tool failure.
            raise _ToolFailure("internal_error", f"{tool.name}: {_base_exception(exc)}")
        return outcome["result"]

    def _call(self, tool: Tool, arguments: dict[str, Any]) -> Any:
        if tool.spec.writes and not self._forked:
            self._fork()
        self._db.execute("BEGIN")
        try:
            result = jsonable(tool(self._db, **arguments))
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                self._db.execute("ROLLBACK")
            raise
        # Commits land in this session's TEMP copies only; read tools keep nothing.
        self._db.execute("COMMIT" if tool.spec.writes else "ROLLBACK")
        return result

    def _fork(self) -> None:
        self._db.execute("BEGIN")
        try:
            for name in self.pool.tables:
                self._db.execute(f"CREATE TEMP TABLE {_quote(name)} AS SELECT * FROM main.{_quote(name)}")
            for sql in self.pool._views:
                if sql.startswith("CREATE VIEW"):
                    self._db.execute("CREATE TEMP VIEW" + sql[len("CREATE VIEW") :])
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                self._db.execute("ROLLBACK")
            raise
        self._forked = True

    def _close(self) -> None:
        stuck = self._stuck
        if stuck is not None and stuck.is_alive():
            # Close the cursor once the stuck call returns; never under its feet.
            threading.Thread(target=lambda: (stuck.join(), self._db.close()), daemon=True).start()
        else:
            self._db.close()


def _base_exception(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"the tool called sys.exit({exc.code!r}); a tool cannot stop the run"
    if isinstance(exc, KeyboardInterrupt):
        return "the tool raised KeyboardInterrupt itself (not an interrupt of magv)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def bound(result: Any) -> Any:
    """Keep a result small enough for a small model's context; say what was left out."""
    for limit in LIST_LIMITS:
        value = _shrink(result, limit)
        if len(json.dumps(value, ensure_ascii=False)) <= MAX_RESULT_CHARS:
            return value
    text = json.dumps(value, ensure_ascii=False)
    return {
        "truncated": True,
        "note": f"result was {len(text)} characters; showing the start",
        "preview": text[:MAX_RESULT_CHARS],
    }


def _shrink(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        return value[:MAX_STRING_CHARS] + f"… [truncated, {len(value)} chars]"
    if isinstance(value, dict):
        return {k: _shrink(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        kept = [_shrink(v, limit) for v in value[:limit]]
        if len(value) > limit:
            kept.append(f"… {len(value) - limit} more not shown")
        return kept
    return value
