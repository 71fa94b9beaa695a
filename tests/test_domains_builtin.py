"""The built-in domains: data generators, tool sets and every gold trajectory of their seeds."""

from __future__ import annotations

import json
import time
from datetime import datetime

import duckdb
import pytest

from magv.domains import list_domains, load_domain
from magv.domains.logs.tools import parse_time
from tests.domains_helpers import domain_data_dir  # noqa: F401  (fixture)

# Arguments that name an entity: the gold value must come from the question or an earlier result,
# as it would for a real assistant that never guesses ids.
ENTITY_ARGUMENTS = {
    "email", "customer_id", "order_id", "product_id", "tracking_number", "item_ids", "new_variant_ids",
    "payment_method_id", "first_name", "last_name", "zip", "alert_id", "incident_id", "host", "client_ip",
}  # fmt: skip
SEEDS = [(name, seed) for name in ("retail", "logs") for seed in load_domain(name).seeds()]


def test_builtins_are_listed_and_complete():
    assert list_domains() == ["retail", "logs"]
    retail, logs = load_domain("retail"), load_domain("logs")
    assert len(retail.tools) >= 12 and len(logs.tools) >= 8
    assert {t.name for t in retail.tools if t.writes} >= {
        "cancel_pending_order", "return_delivered_items", "exchange_delivered_items", "modify_pending_order_address",
    }  # fmt: skip
    for domain in (retail, logs):
        seeds = domain.seeds()
        assert len(seeds) >= 19
        assert all(1 <= len(s.trajectory) <= 5 for s in seeds)
        assert {c.name for s in seeds for c in s.trajectory} == {t.name for t in domain.tools}, (
            "a tool has no seed"
        )
        assert max(len(s.trajectory) for s in seeds) == 5
        assert domain.system_prompt and len(domain.system_prompt) < 1200  # shown to a small model


def test_retail_data_has_the_promised_shape(domain_data_dir):  # noqa: F811
    con = duckdb.connect(str(load_domain("retail").database_path(domain_data_dir)), read_only=True)
    count = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
    assert count("SELECT count(*) FROM customers") >= 500
    assert count("SELECT count(DISTINCT customer_id) FROM payment_methods") == count(
        "SELECT count(*) FROM customers"
    )
    assert count("SELECT count(*) FROM products") == 50
    assert count("SELECT count(*) FROM variants") > 50
    assert count("SELECT count(*) FROM orders") >= 1000
    statuses = {r[0] for r in con.execute("SELECT DISTINCT status FROM orders").fetchall()}
    assert statuses == {"pending", "processed", "shipped", "delivered", "cancelled", "returned"}
    assert (
        count(
            "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.order_id)"
        )
        == 0
    )
    assert count("SELECT count(*) FROM orders WHERE status IN ('shipped','delivered','returned')") == count(
        "SELECT count(*) FROM shipments"
    )
    assert count("SELECT count(*) FROM tracking_events") > count("SELECT count(*) FROM shipments")
    con.close()


def test_logs_data_has_events_alerts_and_incidents(domain_data_dir):  # noqa: F811
    con = duckdb.connect(str(load_domain("logs").database_path(domain_data_dir)), read_only=True)
    n_events, n_sources, first, last = con.execute(
        "SELECT count(*), count(DISTINCT source), min(ts), max(ts) FROM events"
    ).fetchone()
    assert n_events > 20000 and n_sources == 5
    assert (last - first).days >= 6
    assert (
        con.execute(
            "SELECT count(*) FROM events WHERE status_code IS NOT NULL AND latency_ms IS NOT NULL"
        ).fetchone()[0]
        > 10000
    )
    assert (
        con.execute(
            "SELECT count(*) FROM alerts WHERE incident_id NOT IN (SELECT incident_id FROM incidents)"
        ).fetchone()[0]
        == 0
    )
    assert con.execute("SELECT count(DISTINCT incident_id) FROM incident_timeline").fetchone()[0] == 3
    con.close()


@pytest.mark.parametrize("name", ["retail", "logs"])
def test_generation_is_fast_and_deterministic(name, tmp_path):
    domain = load_domain(name)
    start = time.perf_counter()
    domain.build(tmp_path / "a")
    assert time.perf_counter() - start < 3.0
    domain.build(tmp_path / "b")
    domain.build(tmp_path / "c", seed=1)
    sums = []
    for d in ("a", "b", "c"):
        pool = domain.sandbox_pool(tmp_path / d)
        sums.append(pool.checksum())
        pool.close()
    assert sums[0] == sums[1], "the same seed must give the same data"
    assert sums[0] != sums[2], "another seed must give other data"


@pytest.fixture(scope="module")
def pools(domain_data_dir):  # noqa: F811
    opened = {name: load_domain(name).sandbox_pool(domain_data_dir) for name in ("retail", "logs")}
    yield opened
    for pool in opened.values():
        pool.close()


def _values(value):
    return value if isinstance(value, list) else [value]


def _normal(value) -> str:
    return str(value).strip().lstrip("#").lower()


@pytest.mark.parametrize(("name", "seed"), SEEDS, ids=[s.id for _, s in SEEDS])
def test_gold_trajectory_runs_and_is_consistent_with_the_question(pools, name, seed):
    steps = pools[name].run(seed.trajectory)
    known = seed.question.lower()
    for step in steps:
        call = step.call
        assert step.error is None, f"{call.canonical()}: {step.error}"
        assert step.result not in (None, {}, [], ""), f"{call.canonical()} returned no data"
        assert step.latency_s > 0
        for key, value in call.arguments.items():
            if key in ENTITY_ARGUMENTS:
                for v in _values(value):
                    assert _normal(v) in known, (
                        f"{call.name}.{key}={v!r} is neither in the question nor an earlier result"
                    )
        result = step.result
        # A lookup returns the entity that was asked for.
        for key, value in call.arguments.items():
            if isinstance(result, dict) and isinstance(result.get(key), str) and isinstance(value, str):
                assert _normal(result[key]) == _normal(value), (
                    f"{call.name} asked {key}={value}, got {result[key]}"
                )
        for customer in result.get("customers", []) if isinstance(result, dict) else []:
            assert customer["last_name"].lower() == call.arguments["last_name"].lower()
        if call.name == "search_events":
            _assert_events_match(result["events"], call.arguments)
        known += " " + json.dumps(result).lower()


def _assert_events_match(events, arguments):
    start = parse_time(arguments["start"], "start") if "start" in arguments else datetime.min
    end = parse_time(arguments["end"], "end") if "end" in arguments else datetime.max
    for event in events:
        assert start <= datetime.fromisoformat(event["ts"]) < end
        for key in ("source", "host", "service", "severity", "client_ip"):
            if key in arguments:
                assert event[key].lower() == arguments[key].lower()
        if "contains" in arguments:
            assert arguments["contains"].lower() in event["message"].lower()


def test_write_tools_act_within_the_run(pools):
    pool = pools["retail"]
    with pool.session() as sandbox:
        from magv.models import ToolCall

        before = sandbox.execute(
            ToolCall(name="get_order_details", arguments={"order_id": "W1001079"})
        ).result
        done = sandbox.execute(
            ToolCall(
                name="cancel_pending_order", arguments={"order_id": "#W1001079", "reason": "no longer needed"}
            )
        )
        after = sandbox.execute(ToolCall(name="get_order_details", arguments={"order_id": "W1001079"})).result
        again = sandbox.execute(
            ToolCall(
                name="cancel_pending_order", arguments={"order_id": "W1001079", "reason": "no longer needed"}
            )
        )
    assert before["status"] == "pending" and done.result["status"] == "cancelled"
    assert after["status"] == "cancelled" and after["cancel_reason"] == "no longer needed"
    assert again.error == "tool_error: order W1001079 is cancelled; only pending orders can be cancelled"
