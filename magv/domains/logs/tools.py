"""Investigation tools of the logs domain, in the spirit of a search-and-stats query language.

Field names (group by, top values) come from fixed whitelists and map to constant SQL; every value
the model supplies is a bound parameter.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from magv.domains.logs.data import NOW, SOURCES
from magv.domains.sql import compact, one, rows
from magv.domains.tools import GROUNDED, ToolError, tool

SEVERITIES = ["DEBUG", "INFO", "WARN", "ERROR", "CRITICAL"]
FIELDS = ["source", "host", "service", "severity", "status_code", "method", "path", "client_ip"]
INTERVALS = {"5m": "5 minutes", "15m": "15 minutes", "1h": "1 hour", "1d": "1 day"}
TIME_HELP = "ISO time (2024-06-29T14:00) or relative to now (-30m, -24h, -7d)."
_RELATIVE = re.compile(r"^-(\d{1,4})([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def _text(description: str, max_length: int = 100) -> dict[str, Any]:
    return {"type": "string", "description": description, "minLength": 1, "maxLength": max_length}


FILTERS: dict[str, Any] = {
    "source": {"type": "string", "enum": [s[0] for s in SOURCES], "description": "Only this source (index)."},
    "host": _text("Only this host, e.g. web-01.", 40),
    "service": _text("Only this service, e.g. checkout.", 40),
    "severity": {"type": "string", "enum": SEVERITIES, "description": "Only this severity."},
    "status_code": {
        "type": "integer",
        "minimum": 100,
        "maximum": 599,
        "description": "Only this HTTP status code.",
    },
    "status_class": {
        "type": "string",
        "enum": ["2xx", "3xx", "4xx", "5xx"],
        "description": "Only this class of HTTP status.",
    },
    "path": _text("Only this request path, e.g. /checkout.", 100),
    "client_ip": _text("Only events from this client IP address.", 45),
    "contains": _text("Only events whose message contains this text (case-insensitive)."),
    "start": _text("From this time. " + TIME_HELP, 40),
    "end": _text("Until this time (exclusive). " + TIME_HELP, 40),
}
FIELD = {"type": "string", "enum": FIELDS, "description": "Event field."}


def parse_time(value: str, name: str) -> datetime:
    text = value.strip()
    if text.lower() == "now":
        return NOW
    match = _RELATIVE.match(text)
    if match:
        return NOW - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(f"{name}: {value!r} is not a time; use {TIME_HELP}") from None
    return parsed.replace(tzinfo=None)


def _where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    """WHERE clause from fixed fragments; the values go in as parameters."""
    clauses, params = ["TRUE"], []
    for key, fragment in (
        ("source", "source = ?"),
        ("host", "lower(host) = lower(?)"),
        ("service", "lower(service) = lower(?)"),
        ("severity", "severity = ?"),
        ("status_code", "status_code = ?"),
        ("path", "path = ?"),
        ("client_ip", "client_ip = ?"),
        ("contains", "contains(lower(message), lower(?))"),
    ):
        if filters.get(key) is not None:
            clauses.append(fragment)
            params.append(filters[key])
    if filters.get("status_class"):
        low = int(filters["status_class"][0]) * 100
        clauses.append("status_code BETWEEN ? AND ?")
        params += [low, low + 99]
    start = parse_time(filters["start"], "start") if filters.get("start") else None
    end = parse_time(filters["end"], "end") if filters.get("end") else None
    if start and end and start >= end:
        raise ToolError(f"start {start.isoformat()} is not before end {end.isoformat()}")
    if start:
        clauses.append("ts >= ?")
        params.append(start)
    if end:
        clauses.append("ts < ?")
        params.append(end)
    return " AND ".join(clauses), params


def _nothing(filters: dict[str, Any]) -> ToolError:
    given = ", ".join(f"{k}={v}" for k, v in filters.items() if v is not None) or "no filters"
    return ToolError(f"no events match ({given})")


@tool(
    "List the log sources (indexes) with what they hold, their hosts and services, event counts and time range."
)
def list_sources(db) -> dict[str, Any]:
    found = rows(
        db,
        "SELECT s.source, s.description, count(e.event_id) AS events, min(e.ts) AS first_event, max(e.ts) AS last_event, "
        "list(DISTINCT e.host ORDER BY e.host) AS hosts, list(DISTINCT e.service ORDER BY e.service) AS services "
        "FROM sources s LEFT JOIN events e USING (source) GROUP BY s.source, s.description ORDER BY s.source",
    )
    return {"now": NOW.isoformat(), "sources": found}


@tool(
    "Search events, newest first. Combine filters; times are ISO or relative (-24h).",
    {
        **FILTERS,
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": 50,
            "description": "Events to return (default 20).",
        },
    },
    required=[],
)
def search_events(db, limit: int = 20, **filters: Any) -> dict[str, Any]:
    where, params = _where(filters)
    (total,) = db.execute(f"SELECT count(*) FROM events WHERE {where}", params).fetchone()
    if not total:
        raise _nothing(filters)
    found = rows(
        db,
        "SELECT ts, source, host, service, severity, message, status_code, latency_ms, client_ip "
        f"FROM events WHERE {where} ORDER BY ts DESC, event_id DESC LIMIT ?",
        [*params, limit],
    )
    return {"total": total, "shown": len(found), "events": [compact(r) for r in found]}


@tool(
    "Count matching events grouped by one field (e.g. status_code, host), largest groups first.",
    {"field": FIELD, **FILTERS},
    required=["field"],
)
def count_events_by(db, field: str, **filters: Any) -> dict[str, Any]:
    where, params = _where(filters)
    column = FIELDS[FIELDS.index(field)]  # whitelist: the identifier is ours, not the model's
    found = rows(
        db,
        f"SELECT {column} AS value, count(*) AS count FROM events WHERE {where} AND {column} IS NOT NULL "
        "GROUP BY ALL ORDER BY count DESC, value LIMIT 30",
        params,
    )
    if not found:
        raise _nothing({"field": field, **filters})
    return {"field": field, "total": sum(r["count"] for r in found), "groups": found}


@tool(
    "The most common values of a field among matching events, with their share in percent.",
    {
        "field": FIELD,
        **FILTERS,
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": 20,
            "description": "Values to return (default 5).",
        },
    },
    required=["field"],
)
def top_values(db, field: str, limit: int = 5, **filters: Any) -> dict[str, Any]:
    where, params = _where(filters)
    column = FIELDS[FIELDS.index(field)]
    found = rows(
        db,
        f"SELECT {column} AS value, count(*) AS count, round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS percent "
        f"FROM events WHERE {where} AND {column} IS NOT NULL GROUP BY ALL ORDER BY count DESC, value LIMIT ?",
        [*params, limit],
    )
    if not found:
        raise _nothing({"field": field, **filters})
    return {"field": field, "values": found}


@tool(
    "Latency percentiles (p50, p90, p99, max in ms) of matching events that record a latency, optionally per group.",
    {
        **FILTERS,
        "group_by": {
            "type": "string",
            "enum": ["source", "host", "service", "path"],
            "description": "One row per value.",
        },
    },
    required=[],
)
def latency_percentiles(db, group_by: str | None = None, **filters: Any) -> dict[str, Any]:
    where, params = _where(filters)
    key = (
        {"source": "source", "host": "host", "service": "service", "path": "path"}[group_by]
        if group_by
        else "'all'"
    )
    found = rows(
        db,
        f"SELECT {key} AS grp, count(*) AS events, round(quantile_cont(latency_ms, 0.5), 1) AS p50, "
        "round(quantile_cont(latency_ms, 0.9), 1) AS p90, round(quantile_cont(latency_ms, 0.99), 1) AS p99, "
        f"max(latency_ms) AS max FROM events WHERE {where} AND latency_ms IS NOT NULL GROUP BY ALL ORDER BY p99 DESC LIMIT 30",
        params,
    )
    if not found:
        raise ToolError("no matching events record a latency")
    if group_by is None:
        return {k: v for k, v in found[0].items() if k != "grp"}
    return {"group_by": group_by, "groups": [{group_by: r.pop("grp"), **r} for r in found]}


@tool(
    "Count matching events per time bucket (a timechart), to see when something started and stopped.",
    {"interval": {"type": "string", "enum": list(INTERVALS), "description": "Bucket size."}, **FILTERS},
    required=["interval"],
)
def count_events_over_time(db, interval: str, **filters: Any) -> dict[str, Any]:
    where, params = _where(filters)
    found = rows(
        db,
        f"SELECT time_bucket(CAST(? AS INTERVAL), ts) AS time, count(*) AS count FROM events WHERE {where} "
        "GROUP BY ALL ORDER BY time",
        [INTERVALS[interval], *params],
    )
    if not found:
        raise _nothing(filters)
    peak = max(found, key=lambda r: r["count"])
    return {"interval": interval, "total": sum(r["count"] for r in found), "peak": peak, "buckets": found}


@tool(
    "List alerts, newest first, optionally by status, severity, service, host or time range.",
    {
        "status": {
            "type": "string",
            "enum": ["open", "acknowledged", "resolved"],
            "description": "Only this status.",
        },
        "severity": {
            "type": "string",
            "enum": ["low", "medium", "high", "critical"],
            "description": "Only this severity.",
        },
        "service": FILTERS["service"],
        "host": FILTERS["host"],
        "start": _text("Triggered at or after. " + TIME_HELP, 40),
        "end": _text("Triggered before. " + TIME_HELP, 40),
    },
    required=[],
)
def list_alerts(
    db, status=None, severity=None, service=None, host=None, start=None, end=None
) -> dict[str, Any]:
    begin = parse_time(start, "start") if start else None
    until = parse_time(end, "end") if end else None
    found = rows(
        db,
        "SELECT alert_id, title, severity, status, triggered_at, host, service, incident_id FROM alerts "
        "WHERE (? IS NULL OR status = ?) AND (? IS NULL OR severity = ?) AND (? IS NULL OR lower(service) = lower(?)) "
        "AND (? IS NULL OR lower(host) = lower(?)) AND (? IS NULL OR triggered_at >= ?) AND (? IS NULL OR triggered_at < ?) "
        "ORDER BY triggered_at DESC",
        [status, status, severity, severity, service, service, host, host, begin, begin, until, until],
    )
    if not found:
        raise ToolError("no alerts match")
    return {"alerts": [compact(r) for r in found]}


@tool(
    "Details of one alert: rule, threshold, observed value, times and linked incident.",
    {"alert_id": {**_text("Alert id, e.g. AL-2001.", 20), GROUNDED: r"\bAL-\d{4}\b"}},
)
def get_alert_details(db, alert_id: str) -> dict[str, Any]:
    alert = one(db, "SELECT * FROM alerts WHERE alert_id = ?", [alert_id.strip().upper()])
    if alert is None:
        raise ToolError(f"no alert with id {alert_id!r}")
    if alert["incident_id"]:
        alert["incident_title"] = one(
            db, "SELECT title FROM incidents WHERE incident_id = ?", [alert["incident_id"]]
        )["title"]
    return compact(alert)


@tool(
    "List incidents, newest first, optionally by status.",
    {
        "status": {
            "type": "string",
            "enum": ["open", "mitigated", "resolved"],
            "description": "Only this status.",
        }
    },
    required=[],
)
def list_incidents(db, status: str | None = None) -> dict[str, Any]:
    found = rows(
        db,
        "SELECT incident_id, title, severity, status, opened_at, resolved_at FROM incidents "
        "WHERE (? IS NULL OR status = ?) ORDER BY opened_at DESC",
        [status, status],
    )
    if not found:
        raise ToolError(f"no {status} incidents")
    return {"incidents": [compact(r) for r in found]}


@tool(
    "An incident's summary and timeline (deploys, alerts, notes, actions) in time order.",
    {"incident_id": {**_text("Incident id, e.g. INC-1001.", 20), GROUNDED: r"\bINC-\d{4}\b"}},
)
def get_incident_timeline(db, incident_id: str) -> dict[str, Any]:
    incident = one(db, "SELECT * FROM incidents WHERE incident_id = ?", [incident_id.strip().upper()])
    if incident is None:
        raise ToolError(f"no incident with id {incident_id!r}")
    timeline = rows(
        db,
        "SELECT ts AS time, kind, actor, description FROM incident_timeline WHERE incident_id = ? ORDER BY ts",
        [incident["incident_id"]],
    )
    alerts = rows(
        db, "SELECT alert_id FROM alerts WHERE incident_id = ? ORDER BY alert_id", [incident["incident_id"]]
    )
    return {**compact(incident), "alert_ids": [a["alert_id"] for a in alerts], "timeline": timeline}


TOOLS = [
    list_sources,
    search_events,
    count_events_by,
    top_values,
    latency_percentiles,
    count_events_over_time,
    list_alerts,
    get_alert_details,
    list_incidents,
    get_incident_timeline,
]
