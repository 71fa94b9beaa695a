"""Deterministic machine data for the logs domain: a week of events from a small web shop's
hosts, with three incidents written into the data (and their alerts and timelines).

Background traffic comes from `random.Random(seed)`; the incidents are scripted at fixed times so
the seed questions can ask about them. "Now" is fixed (NOW) so relative times agree with the data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime, timedelta

import duckdb

from magv.domains.sql import bulk_insert

NOW = datetime(2024, 6, 30, 12, 0, 0)
START = NOW - timedelta(days=7)

SCHEMA = """
CREATE TABLE sources (source VARCHAR PRIMARY KEY, description VARCHAR);
CREATE TABLE events (event_id INTEGER PRIMARY KEY, ts TIMESTAMP, source VARCHAR, host VARCHAR,
    service VARCHAR, severity VARCHAR, message VARCHAR, status_code INTEGER, latency_ms DOUBLE,
    method VARCHAR, path VARCHAR, client_ip VARCHAR);
CREATE TABLE alerts (alert_id VARCHAR PRIMARY KEY, title VARCHAR, severity VARCHAR, status VARCHAR,
    triggered_at TIMESTAMP, resolved_at TIMESTAMP, source VARCHAR, host VARCHAR, service VARCHAR,
    rule VARCHAR, threshold VARCHAR, observed VARCHAR, incident_id VARCHAR);
CREATE TABLE incidents (incident_id VARCHAR PRIMARY KEY, title VARCHAR, severity VARCHAR, status VARCHAR,
    opened_at TIMESTAMP, resolved_at TIMESTAMP, owner VARCHAR, summary VARCHAR);
CREATE TABLE incident_timeline (incident_id VARCHAR, ts TIMESTAMP, kind VARCHAR, actor VARCHAR, description VARCHAR);
"""

SOURCES = [
    ("web", "nginx access logs of the storefront (web-01..03): method, path, status code, latency"),
    ("app", "application logs of checkout, payments, search, auth and inventory services"),
    ("db", "PostgreSQL logs of db-01 (primary) and db-02 (replica): slow queries, connections"),
    ("infra", "system logs and metrics of every host: disk, CPU, memory, cron"),
    ("security", "authentication and firewall events"),
]
APP_HOSTS = {
    "checkout": ["app-01", "app-02"],
    "payments": ["app-02", "app-03"],
    "search": ["app-01", "app-03"],
    "auth": ["app-03"],
    "inventory": ["app-01"],
}
ALL_HOSTS = ["web-01", "web-02", "web-03", "app-01", "app-02", "app-03", "db-01", "db-02"]
PATHS = [
    "/",
    "/products",
    "/products/{n}",
    "/search",
    "/cart",
    "/checkout",
    "/login",
    "/api/orders",
    "/static/app.js",
]
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
ATTACKER = "203.0.113.45"

EVENT_COLUMNS = [
    "ts",
    "source",
    "host",
    "service",
    "severity",
    "message",
    "status_code",
    "latency_ms",
    "method",
    "path",
    "client_ip",
]
Event = tuple  # in EVENT_COLUMNS order


def generate(db: duckdb.DuckDBPyConnection, seed: int) -> None:
    rng = random.Random(seed)
    db.execute(SCHEMA)
    bulk_insert(db, "sources", ["source", "description"], SOURCES)
    events: list[Event] = []
    for make, count in ((_web, 14000), (_app, 7000), (_db, 2500), (_infra, 2000), (_security, 1500)):
        events.extend(make(rng, _moment(rng)) for _ in range(count))
    events.extend(_incident_checkout(rng))
    events.extend(_incident_bruteforce(rng))
    events.extend(_incident_disk(rng))
    events.extend(_minor_events(rng))
    events.sort(key=lambda e: (e[0], e[1], e[2], e[5]))
    bulk_insert(db, "events", ["event_id", *EVENT_COLUMNS], [(i, *e) for i, e in enumerate(events, start=1)])
    bulk_insert(db, "alerts", ALERT_COLUMNS, ALERTS)
    bulk_insert(db, "incidents", INCIDENT_COLUMNS, INCIDENTS)
    bulk_insert(db, "incident_timeline", ["incident_id", "ts", "kind", "actor", "description"], TIMELINE)


def _moment(rng: random.Random) -> datetime:
    """A time in the week, busier in the (UTC) daytime like real shop traffic."""
    while True:
        t = START + timedelta(seconds=rng.uniform(0, 7 * 86400))
        hour = t.hour + t.minute / 60
        if rng.random() < 0.35 + 0.65 * math.sin(math.pi * max(0.0, min(1.0, (hour - 6) / 16))):
            return t.replace(microsecond=0)


def _ip(rng: random.Random) -> str:
    return f"{rng.choice([24, 66, 73, 98, 172, 185])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _ev(
    t, source, host, service, severity, message, status=None, latency=None, method=None, path=None, ip=None
) -> Event:
    return (t, source, host, service, severity, message, status, latency, method, path, ip)


def _access(t, host, method, path, status, latency, ip) -> Event:
    severity = "ERROR" if status >= 500 else "WARN" if status >= 400 else "INFO"
    message = f"{method} {path} {status} {latency:.0f}ms"
    return _ev(t, "web", host, "nginx", severity, message, status, round(latency, 1), method, path, ip)


def _web(rng: random.Random, t: datetime) -> Event:
    path = rng.choice(PATHS).replace("{n}", str(rng.randint(1001, 1050)))
    method = "POST" if path in ("/checkout", "/login", "/api/orders") and rng.random() < 0.6 else "GET"
    status = rng.choices([200, 304, 301, 404, 401, 500, 502, 503], [85, 4, 1.5, 6, 1.5, 1, 0.5, 0.5])[0]
    latency = rng.lognormvariate(math.log(110 if path != "/search" else 240), 0.5)
    return _access(t, rng.choice(["web-01", "web-02", "web-03"]), method, path, status, latency, _ip(rng))


APP_MESSAGES: dict[str, list[tuple[str, str]]] = {
    "checkout": [("INFO", "order {n} placed"), ("INFO", "cart {n} priced"), ("WARN", "retrying call to payments (attempt 2)")],
    "payments": [("INFO", "charge {n} authorized"), ("INFO", "refund {n} issued"), ("WARN", "card declined for charge {n}")],
    "search": [("INFO", "query served in {ms}ms"), ("INFO", "index refreshed"), ("WARN", "slow query: {ms}ms")],
    "auth": [("INFO", "login ok user={user}"), ("INFO", "token refreshed user={user}"), ("WARN", "password reset requested user={user}")],
    "inventory": [("INFO", "stock updated sku P{sku}"), ("INFO", "reservation {n} released"), ("ERROR", "timeout calling warehouse api")],
}  # fmt: skip


def _app(rng: random.Random, t: datetime) -> Event:
    service = rng.choice(list(APP_MESSAGES))
    severity, template = rng.choices(APP_MESSAGES[service], [80, 17, 3])[0]
    latency = round(rng.lognormvariate(math.log(60), 0.6), 1)
    n, user, sku = rng.randint(100000, 999999), rng.choice(USERS), rng.randint(1001, 1050)
    text = template.format(n=n, ms=int(latency * 4), user=user, sku=sku)
    return _ev(t, "app", rng.choice(APP_HOSTS[service]), service, severity, text, latency=latency)


def _db(rng: random.Random, t: datetime) -> Event:
    host = rng.choice(["db-01", "db-01", "db-02"])
    if rng.random() < 0.7:
        ms = rng.lognormvariate(math.log(300), 0.4)
        table = rng.choice(["orders", "order_items", "customers", "products", "sessions"])
        message = f"duration: {ms:.0f} ms statement: SELECT ... FROM {table}"
        return _ev(t, "db", host, "postgres", "INFO", message, latency=round(ms, 1))
    text = rng.choice(["checkpoint complete", "connection received", "autovacuum: processing table sessions"])
    return _ev(t, "db", host, "postgres", "INFO", text)


def _infra(rng: random.Random, t: datetime) -> Event:
    host = rng.choice(ALL_HOSTS)
    kind = rng.random()
    if kind < 0.4:
        return _ev(t, "infra", host, "system", "INFO", f"disk usage {rng.randint(35, 70)}% on /")
    if kind < 0.7:
        return _ev(t, "infra", host, "system", "INFO", f"cpu load {rng.uniform(0.2, 2.5):.2f}")
    if kind < 0.97:
        text = rng.choice(["logrotate completed", "backup job completed", "ntp sync ok"])
        return _ev(t, "infra", host, "cron", "INFO", text)
    return _ev(t, "infra", host, "system", "WARN", f"memory usage {rng.randint(85, 92)}%")


def _security(rng: random.Random, t: datetime) -> Event:
    user, ip = rng.choice(USERS), _ip(rng)
    if rng.random() < 0.85:
        return _ev(t, "security", "app-03", "auth", "INFO", f"login succeeded user={user} ip={ip}", ip=ip)
    return _ev(t, "security", "app-03", "auth", "WARN", f"login failed user={user} ip={ip}", ip=ip)


def _spread(
    rng: random.Random, start: datetime, minutes: float, count: int, make: Callable[[datetime], Event]
) -> list[Event]:
    """`count` events from `make` at random times in the window."""
    return [
        make((start + timedelta(seconds=rng.uniform(0, minutes * 60))).replace(microsecond=0))
        for _ in range(count)
    ]


def _web_host(rng: random.Random) -> str:
    return rng.choice(["web-01", "web-02", "web-03"])


# INC-1001: a checkout deploy exhausts db-02's connection pool; checkout times out, the web returns 502/504.
CHECKOUT_START = datetime(2024, 6, 29, 14, 5)
NO_SLOTS = "FATAL: remaining connection slots are reserved for superuser connections"


def _incident_checkout(rng: random.Random) -> list[Event]:
    out: list[Event] = []
    for host in APP_HOSTS["checkout"]:
        out.append(
            _ev(
                datetime(2024, 6, 29, 13, 58),
                "app",
                host,
                "checkout",
                "INFO",
                "deploy started: checkout v2.14.0",
            )
        )
        rollback = "deploy started: checkout v2.13.2 (rollback)"
        out.append(_ev(datetime(2024, 6, 29, 15, 10), "app", host, "checkout", "INFO", rollback))
    out += _spread(
        rng, CHECKOUT_START, 70, 420, lambda t: _ev(t, "db", "db-02", "postgres", "ERROR", NO_SLOTS)
    )
    out += _spread(rng, CHECKOUT_START, 70, 260, lambda t: _slow_query(t, rng.uniform(2500, 9000)))
    out += _spread(rng, CHECKOUT_START + timedelta(minutes=2), 68, 650, lambda t: _checkout_timeout(rng, t))
    out += _spread(
        rng,
        CHECKOUT_START + timedelta(minutes=3),
        67,
        900,
        lambda t: _access(
            t,
            _web_host(rng),
            "POST",
            "/checkout",
            rng.choice([502, 502, 504]),
            rng.uniform(3000, 10000),
            _ip(rng),
        ),
    )
    return out


def _checkout_timeout(rng: random.Random, t: datetime) -> Event:
    host = rng.choice(APP_HOSTS["checkout"])
    message = "payment authorization timeout after 5000ms"
    return _ev(t, "app", host, "checkout", "ERROR", message, latency=round(rng.uniform(5000, 5400), 1))


def _slow_query(t: datetime, ms: float) -> Event:
    message = f"duration: {ms:.0f} ms statement: SELECT ... FROM orders"
    return _ev(t, "db", "db-02", "postgres", "WARN", message, latency=round(ms, 1))


# INC-1002: password guessing against /login from one address, blocked by the WAF at 02:55.
BRUTE_START = datetime(2024, 6, 30, 2, 10)


def _failed_login(rng: random.Random, t: datetime) -> Event:
    user = rng.choice(["admin", "root", "test", "alice"])
    return _ev(
        t, "security", "app-03", "auth", "WARN", f"login failed user={user} ip={ATTACKER}", ip=ATTACKER
    )


def _incident_bruteforce(rng: random.Random) -> list[Event]:
    out = _spread(rng, BRUTE_START, 45, 640, lambda t: _failed_login(rng, t))
    out += _spread(
        rng,
        BRUTE_START,
        45,
        640,
        lambda t: _access(
            t, rng.choice(["web-01", "web-02"]), "POST", "/login", 401, rng.uniform(40, 90), ATTACKER
        ),
    )
    blocked = f"blocked ip={ATTACKER} rule=waf-bruteforce"
    out.append(
        _ev(datetime(2024, 6, 30, 2, 55), "security", "fw-01", "firewall", "WARN", blocked, ip=ATTACKER)
    )
    return out


# INC-1003: payments logs fill app-03's disk; still open at NOW.
DISK_START = datetime(2024, 6, 30, 8, 30)
NO_SPACE = "could not write to /var/log/payments/app.log: No space left on device"


def _incident_disk(rng: random.Random) -> list[Event]:
    out = []
    for i in range(0, 210, 10):
        pct = 91 + i * 6 // 200
        severity = "WARN" if pct < 95 else "CRITICAL"
        out.append(
            _ev(
                DISK_START + timedelta(minutes=i),
                "infra",
                "app-03",
                "system",
                severity,
                f"disk usage {pct}% on /",
            )
        )
    out += _spread(
        rng,
        datetime(2024, 6, 30, 11, 0),
        59,
        35,
        lambda t: _ev(t, "app", "app-03", "payments", "ERROR", NO_SPACE),
    )
    return out


def _minor_events(rng: random.Random) -> list[Event]:
    # AL-2007: a short burst of search 500s; AL-2009: replica lag on db-02. Neither became an incident.
    burst = datetime(2024, 6, 25, 16, 20)
    out = _spread(
        rng,
        burst,
        12,
        120,
        lambda t: _access(t, _web_host(rng), "GET", "/search", 500, rng.uniform(200, 900), _ip(rng)),
    )
    out += _spread(
        rng,
        burst,
        12,
        60,
        lambda t: _ev(
            t, "app", rng.choice(APP_HOSTS["search"]), "search", "ERROR", "index shard 3 unavailable"
        ),
    )
    out += _spread(
        rng,
        datetime(2024, 6, 26, 3, 0),
        25,
        25,
        lambda t: _ev(
            t, "db", "db-02", "postgres", "WARN", f"replication lag {rng.randint(31, 75)}s behind primary"
        ),
    )
    return out


ALERT_COLUMNS = [
    "alert_id",
    "title",
    "severity",
    "status",
    "triggered_at",
    "resolved_at",
    "source",
    "host",
    "service",
    "rule",
    "threshold",
    "observed",
    "incident_id",
]
D = datetime
ALERTS = [
    ("AL-2001", "High 5xx rate on web", "critical", "resolved", D(2024, 6, 29, 14, 12), D(2024, 6, 29, 15, 18), "web", None, "nginx",
     "share of status>=500 over 5 min", "> 5%", "38%", "INC-1001"),
    ("AL-2002", "Checkout p99 latency above 2s", "high", "resolved", D(2024, 6, 29, 14, 9), D(2024, 6, 29, 15, 20), "app", None, "checkout",
     "p99 latency_ms over 5 min", "> 2000 ms", "5310 ms", "INC-1001"),
    ("AL-2003", "db-02 connection pool saturated", "high", "resolved", D(2024, 6, 29, 14, 7), D(2024, 6, 29, 15, 15), "db", "db-02", "postgres",
     "connection errors per minute", "> 10", "96", "INC-1001"),
    ("AL-2004", "Excessive failed logins", "medium", "acknowledged", D(2024, 6, 30, 2, 16), None, "security", "app-03", "auth",
     "failed logins from one ip over 10 min", "> 50", "142", "INC-1002"),
    ("AL-2005", "WAF blocked IP 203.0.113.45", "low", "resolved", D(2024, 6, 30, 2, 55), D(2024, 6, 30, 3, 0), "security", "fw-01", "firewall",
     "ip blocked by waf rule", "any", "1 block", "INC-1002"),
    ("AL-2006", "Disk usage above 90% on app-03", "high", "open", D(2024, 6, 30, 8, 30), None, "infra", "app-03", "system",
     "disk usage on /", "> 90%", "97%", "INC-1003"),
    ("AL-2007", "Search error rate elevated", "low", "resolved", D(2024, 6, 25, 16, 24), D(2024, 6, 25, 16, 40), "web", None, "search",
     "share of /search status>=500 over 5 min", "> 2%", "11%", None),
    ("AL-2008", "TLS certificate for api.example.com expires in 14 days", "low", "open", D(2024, 6, 28, 9, 0), None, "infra", "web-01", "nginx",
     "days until certificate expiry", "< 15", "14", None),
    ("AL-2009", "Replica lag on db-02 above 30s", "medium", "resolved", D(2024, 6, 26, 3, 4), D(2024, 6, 26, 3, 30), "db", "db-02", "postgres",
     "replication lag", "> 30 s", "75 s", None),
]  # fmt: skip
INCIDENT_COLUMNS = [
    "incident_id",
    "title",
    "severity",
    "status",
    "opened_at",
    "resolved_at",
    "owner",
    "summary",
]
INCIDENTS = [
    ("INC-1001", "Checkout failures after checkout v2.14.0 deploy", "sev2", "resolved", D(2024, 6, 29, 14, 10), D(2024, 6, 29, 15, 20), "maria.k",
     "v2.14.0 opened a new db connection per request; db-02 ran out of connection slots, payment authorization timed out and "
     "the storefront returned 502/504 on /checkout. Rolled back to v2.13.2 at 15:10."),
    ("INC-1002", "Brute-force login attempts from 203.0.113.45", "sev3", "mitigated", D(2024, 6, 30, 2, 20), None, "sam.r",
     "Password guessing against /login (users admin, root, test, alice) from one address. Blocked by WAF at 02:55; "
     "monitoring for new sources."),
    ("INC-1003", "Disk almost full on app-03", "sev3", "open", D(2024, 6, 30, 8, 40), None, "lee.w",
     "Payments debug logging left on after a test fills / on app-03. Payments writes fail since 11:00."),
]  # fmt: skip
TIMELINE = [
    ("INC-1001", D(2024, 6, 29, 13, 58), "deploy", "ci", "checkout v2.14.0 deployed to app-01, app-02"),
    ("INC-1001", D(2024, 6, 29, 14, 7), "alert", "monitor", "AL-2003 db-02 connection pool saturated"),
    ("INC-1001", D(2024, 6, 29, 14, 9), "alert", "monitor", "AL-2002 checkout p99 latency above 2s"),
    ("INC-1001", D(2024, 6, 29, 14, 10), "note", "maria.k", "incident opened; checkout failing for most customers"),
    ("INC-1001", D(2024, 6, 29, 14, 12), "alert", "monitor", "AL-2001 high 5xx rate on web"),
    ("INC-1001", D(2024, 6, 29, 14, 40), "note", "maria.k", "db-02 connections at max_connections; traced to the new release"),
    ("INC-1001", D(2024, 6, 29, 15, 10), "action", "maria.k", "rolled back checkout to v2.13.2"),
    ("INC-1001", D(2024, 6, 29, 15, 20), "note", "maria.k", "error rate back to normal; incident resolved"),
    ("INC-1002", D(2024, 6, 30, 2, 16), "alert", "monitor", "AL-2004 excessive failed logins"),
    ("INC-1002", D(2024, 6, 30, 2, 20), "note", "sam.r", "incident opened; 203.0.113.45 guessing passwords for admin/root"),
    ("INC-1002", D(2024, 6, 30, 2, 55), "action", "sam.r", "blocked 203.0.113.45 with WAF rule waf-bruteforce"),
    ("INC-1002", D(2024, 6, 30, 3, 30), "note", "sam.r", "no successful logins from the address; monitoring"),
    ("INC-1003", D(2024, 6, 30, 8, 30), "alert", "monitor", "AL-2006 disk usage above 90% on app-03"),
    ("INC-1003", D(2024, 6, 30, 8, 40), "note", "lee.w", "incident opened; /var/log/payments growing 1 GB/hour"),
    ("INC-1003", D(2024, 6, 30, 11, 5), "note", "lee.w", "payments log writes failing: no space left on device"),
]  # fmt: skip
