"""Small helpers for tool and generator code: rows as dicts, JSON-safe values, bulk inserts."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb

Params = Sequence[Any] | Mapping[str, Any] | None


def jsonable(value: Any) -> Any:
    """Values a tool returns, made JSON-serialisable: dates as ISO strings, decimals as floats."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return round(float(value), 4)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    raise TypeError(f"tool result holds a {type(value).__name__}, which is not JSON-serialisable")


def rows(db: duckdb.DuckDBPyConnection, sql: str, params: Params = None) -> list[dict[str, Any]]:
    cur = db.execute(sql, params) if params is not None else db.execute(sql)
    names = [d[0] for d in cur.description or []]
    return [{n: jsonable(v) for n, v in zip(names, r, strict=True)} for r in cur.fetchall()]


def one(db: duckdb.DuckDBPyConnection, sql: str, params: Params = None) -> dict[str, Any] | None:
    found = rows(db, sql, params)
    return found[0] if found else None


def compact(row: Mapping[str, Any]) -> dict[str, Any]:
    """Drop empty fields: the responder model has a small context."""
    return {k: v for k, v in row.items() if v is not None and v != [] and v != ""}


def bulk_insert(
    db: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], records: Sequence[Sequence[Any]]
) -> None:
    """Insert many rows at once. Row-by-row `executemany` is ~100x slower in DuckDB; passing
    each column as a list parameter and unnesting them in one statement keeps generation fast."""
    if not records:
        return
    data = {f"c{i}": [r[i] for r in records] for i in range(len(columns))}
    selects = ", ".join(f"UNNEST($c{i})" for i in range(len(columns)))
    # Table and column names come from the generator's own constants, never from input.
    db.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {selects}", data)
