"""The sandbox: write tools never change shared data; every tool problem becomes a recorded error."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pytest

from magv.domains import Domain, ToolError, load_domain, tool
from magv.domains.sandbox import MAX_RESULT_CHARS
from magv.models import ToolCall
from tests.domains_helpers import USER_DOMAIN, domain_data_dir, file_sha256  # noqa: F401  (fixture)


def call(name: str, **arguments) -> ToolCall:
    return ToolCall(name=name, arguments=arguments)


def _pending_and_delivered(path):
    con = duckdb.connect(str(path), read_only=True)
    orders = con.execute(
        "SELECT order_id, status, payment_method_id FROM orders WHERE status IN ('pending','delivered') ORDER BY order_id"
    ).fetchall()
    con.close()
    pending = [o for o in orders if o[1] == "pending"]
    delivered = [o for o in orders if o[1] == "delivered"]
    return pending, delivered


def test_100_runs_of_write_tools_leave_file_and_pool_unchanged(domain_data_dir):  # noqa: F811
    retail = load_domain("retail")
    path = retail.database_path(domain_data_dir)
    file_before = file_sha256(path)
    pool = retail.sandbox_pool(domain_data_dir)
    pool_before = pool.checksum()
    pending, delivered = _pending_and_delivered(path)
    writes = 0
    for i in range(100):
        order_id, _, payment = pending[i % len(pending)]
        d_order, _, d_payment = delivered[i % len(delivered)]
        with pool.session() as s:
            steps = [
                s.execute(call("cancel_pending_order", order_id=order_id, reason="no longer needed")),
                s.execute(
                    call(
                        "modify_pending_order_address",
                        order_id=pending[(i + 1) % len(pending)][0],
                        address1="1 New St",
                        city="Austin",
                        state="TX",
                        zip="78701",
                    )
                ),  # fmt: skip
                s.execute(
                    call(
                        "return_delivered_items",
                        order_id=d_order,
                        item_ids=[f"{d_order}-1"],
                        payment_method_id=d_payment,
                    )
                ),
                s.execute(call("transfer_to_human_agent", summary=f"run {i}")),
            ]
            assert all(st.error is None for st in steps), [st.error for st in steps]
            seen = s.execute(call("get_order_details", order_id=order_id)).result
            assert seen["status"] == "cancelled"  # the run sees its own writes
            writes += len(steps)
    assert writes == 400
    assert pool.checksum() == pool_before
    with pool.session() as s:
        assert s.execute(call("get_order_details", order_id=pending[0][0])).result["status"] == "pending"
    pool.close()
    assert file_sha256(path) == file_before


def test_concurrent_runs_writing_the_same_row_do_not_conflict(domain_data_dir):  # noqa: F811
    pool = load_domain("retail").sandbox_pool(domain_data_dir)
    order_id = _pending_and_delivered(load_domain("retail").database_path(domain_data_dir))[0][0][0]
    barrier = threading.Barrier(6)

    def run(_):
        with pool.session() as s:
            barrier.wait()
            return s.execute(call("cancel_pending_order", order_id=order_id, reason="ordered by mistake"))

    with ThreadPoolExecutor(6) as ex:
        steps = list(ex.map(run, range(6)))
    assert [st.error for st in steps] == [None] * 6
    pool.close()


@pytest.fixture
def retail_pool(domain_data_dir):  # noqa: F811
    pool = load_domain("retail").sandbox_pool(domain_data_dir)
    yield pool
    pool.close()


def test_bad_calls_become_recorded_errors(retail_pool):
    before = retail_pool.checksum()
    with retail_pool.session() as s:
        unknown = s.execute(call("drop_all_tables"))
        missing = s.execute(call("find_customer_by_email"))
        wrong_type = s.execute(call("get_order_details", order_id=42))
        extra = s.execute(call("get_order_details", order_id="W1000001", verbose=True))
        bad_enum = s.execute(call("cancel_pending_order", order_id="W1000001", reason="because"))
        injection = s.execute(call("find_customer_by_email", email="x' OR '1'='1' --"))
        injection2 = s.execute(call("get_order_details", order_id="1;DROP TABLE orders"))
        huge = s.execute(call("find_customer_by_email", email="a" * 20000))
        long_field = s.execute(call("transfer_to_human_agent", summary="b" * 1500))
        still_fine = s.execute(call("get_order_details", order_id="W1000001"))
    assert unknown.error.startswith(
        "unknown_tool: there is no tool named 'drop_all_tables'; available tools: find_customer_by_email"
    )
    assert missing.error == "invalid_arguments: find_customer_by_email: 'email' is a required property"
    assert wrong_type.error == "invalid_arguments: get_order_details: order_id: 42 is not of type 'string'"
    assert extra.error.startswith(
        "invalid_arguments: get_order_details: Additional properties are not allowed ('verbose'"
    )
    assert bad_enum.error.startswith(
        "invalid_arguments: cancel_pending_order: reason: 'because' is not one of"
    )
    assert injection.error == "tool_error: no customer with email \"x' OR '1'='1' --\""
    assert injection2.error == "tool_error: no order with id '1;DROP TABLE orders'"
    assert (
        huge.error.startswith("invalid_arguments: find_customer_by_email: arguments are 20")
        and "at most 8192" in huge.error
    )
    assert (
        long_field.error.startswith("invalid_arguments: transfer_to_human_agent: summary: ")
        and "is too long" in long_field.error
    )
    assert len(long_field.error) < 700  # the offending value is clipped, not echoed whole
    for step in (unknown, missing, injection, huge):
        assert step.kind == "tool" and step.result is None and step.call is not None and not step.ok
    assert still_fine.ok and still_fine.result["order_id"] == "W1000001"
    assert retail_pool.checksum() == before


# -- a domain made for misbehaving tools ------------------------------------------------------


def _generate(db, seed):
    db.execute("CREATE TABLE counters AS SELECT range AS id, 0 AS value FROM range(5)")


@tool("Hangs in SQL.")
def sql_hang(db):
    return db.execute("SELECT count(*) FROM range(1000000000000) a").fetchone()[0]


@tool("Hangs in Python.")
def python_hang(db):
    time.sleep(3)
    return "late"


@tool("Fails.")
def broken(db):
    raise ZeroDivisionError("division by zero in a tool")


@tool("Returns something that is not JSON.")
def not_json(db):
    return {"value": object()}


@tool("Returns a long list.", {"n": {"type": "integer"}})
def many(db, n):
    return {"items": [{"id": i, "text": "x" * 40} for i in range(n)]}


@tool("Bumps a counter, then fails half-way.", writes=True)
def half_write(db):
    db.execute("UPDATE counters SET value = value + 1 WHERE id = 1")
    raise ToolError("stopped after the first update")


@tool("Bumps a counter.", writes=True)
def bump(db):
    db.execute("UPDATE counters SET value = value + 1 WHERE id = 1")
    return db.execute("SELECT value FROM counters WHERE id = 1").fetchone()[0]


@tool("Reads the counter.")
def read(db):
    return db.execute("SELECT value FROM counters WHERE id = 1").fetchone()[0]


@pytest.fixture
def odd_pool(tmp_path):
    domain = Domain(
        "odd",
        system_prompt="Test domain.",
        tools=[sql_hang, python_hang, broken, not_json, many, half_write, bump, read],
        generate=_generate,
        seeds_path=USER_DOMAIN / "seeds.jsonl",
    )
    pool = domain.sandbox_pool(tmp_path, tool_timeout_s=0.5)
    yield pool
    pool.close()


def test_a_query_that_hangs_is_interrupted_and_the_run_goes_on(odd_pool):
    with odd_pool.session() as s:
        start = time.perf_counter()
        step = s.execute(call("sql_hang"))
        assert time.perf_counter() - start < 3
        assert step.error == "timeout: sql_hang did not finish within 0.5 s and was stopped"
        assert step.latency_s >= 0.5
        assert s.execute(call("read")).result == 0


def test_python_that_hangs_is_cut_off_and_the_run_refuses_more_calls(odd_pool):
    with odd_pool.session() as s:
        step = s.execute(call("python_hang"))
        after = s.execute(call("read"))
    assert step.error.startswith("timeout: python_hang did not finish")
    assert after.error.startswith("unavailable: an earlier tool call of this run is still stuck")
    with odd_pool.session() as s:  # other runs are unaffected
        assert s.execute(call("read")).result == 0


def test_exceptions_and_unserialisable_results_are_errors(odd_pool):
    with odd_pool.session() as s:
        assert (
            s.execute(call("broken")).error
            == "internal_error: broken: ZeroDivisionError: division by zero in a tool"
        )
        assert s.execute(call("not_json")).error.startswith(
            "internal_error: not_json: TypeError: tool result holds a object"
        )


def test_long_results_are_truncated_and_say_so(odd_pool):
    with odd_pool.session() as s:
        short = s.execute(call("many", n=3)).result
        long = s.execute(call("many", n=500)).result
    assert len(short["items"]) == 3
    assert len(json.dumps(long)) <= MAX_RESULT_CHARS
    assert long["items"][-1].endswith("more not shown") and long["items"][0] == {"id": 0, "text": "x" * 40}


def test_a_failing_write_leaves_no_half_change_and_writes_stay_private(odd_pool):
    with odd_pool.session() as s:
        assert s.execute(call("half_write")).error == "tool_error: stopped after the first update"
        assert s.execute(call("read")).result == 0
        assert s.execute(call("bump")).result == 1
        assert s.execute(call("bump")).result == 2
        with odd_pool.session() as other:
            assert other.execute(call("read")).result == 0
    with odd_pool.session() as s:
        assert s.execute(call("read")).result == 0
