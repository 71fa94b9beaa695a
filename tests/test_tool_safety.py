"""Hostile tool calls through the whole pipeline: a responder that tries SQL injection, path
traversal, oversized strings and real writes, and tools that hang. The calls are rejected by schema
validation or made harmless by parameterised SQL, every outcome is recorded on the run, the domain's
database file is byte-for-byte unchanged, and a hanging tool is cut off by the timeout.

(tests/test_domains_sandbox.py covers the sandbox itself; this is the same promise end to end.)
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import duckdb
import pytest

from magv.domains import load_domain
from tests.fakellm import FakeLLMServer, request_schema
from tests.reliability_helpers import magv_env, query, run_here

ARGS = ["run", "--json", "--no-verify", "--targets", "1", "--per-target", "1", "--questions", "1",
        "--runs", "1", "--alternates", "0"]  # fmt: skip


class Attacker:
    """Investigator: one question. Responder: the calls of `plan`, one per turn, then an answer."""

    def __init__(self, plan: list[tuple[str, dict]]):
        self.plan = plan

    def __call__(self, body):
        props = (request_schema(body) or {}).get("properties", {})
        if "questions" in props:
            return {"json": {"questions": ["Please look into my account, something is wrong with it."]}}
        step = sum(1 for m in body["messages"] if m["role"] == "assistant")
        if step < len(self.plan):
            name, arguments = self.plan[step]
            return {"json": {"tool": name, "arguments": arguments}}
        return {"json": {"answer": "All checked."}}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _steps(db: Path) -> list[list[dict]]:
    return [json.loads(t)["steps"] for (t,) in query(db, "SELECT trajectory FROM runs ORDER BY id")]


def _pending_order(domain_db: Path) -> str:
    con = duckdb.connect(str(domain_db), read_only=True)
    try:
        return con.execute(
            "SELECT order_id FROM orders WHERE status = 'pending' ORDER BY order_id LIMIT 1"
        ).fetchone()[0]
    finally:
        con.close()


@pytest.mark.integration
def test_injection_traversal_and_oversized_arguments_change_nothing(
    tmp_path, prefect_harness, monkeypatch, capsys
):
    data_dir = tmp_path / "domains"
    domain_db = load_domain("retail").build(data_dir)
    before = _sha256(domain_db)
    pending = _pending_order(domain_db)
    plan = [
        ("find_customer_by_email", {"email": "x' OR '1'='1' --"}),
        ("search_products", {"query": "%' UNION SELECT * FROM customers --"}),
        ("get_order_details", {"order_id": "1;DROP TABLE orders"}),
        ("track_shipment", {"tracking_number": "../../../../etc/passwd"}),
        ("get_product_details", {"product_id": "/etc/shadow\x00.png"}),
        ("search_products", {"query": "a" * 5000}),  # past the schema's maxLength
        ("transfer_to_human_agent", {"summary": "b" * 20000}),  # past the size limit on arguments
        ("find_customer_by_email", {"email": "a@b.c", "sql": "DROP TABLE customers"}),  # no such argument
        ("cancel_pending_order", {"order_id": pending, "reason": "no longer needed"}),  # a real write
        ("get_order_details", {"order_id": pending}),  # the run sees its own write
        ("modify_pending_order_address", {"order_id": "W1'; DELETE FROM orders; --"[:20], "address1": "'); DROP TABLE orders; --",
                                          "city": "x", "state": "TX", "zip": "78701"}),
    ]  # fmt: skip
    with FakeLLMServer(Attacker(plan)) as srv:
        env = magv_env(tmp_path, srv.base_url, pipeline__max_steps=len(plan) + 1)
        code, out, err = run_here(ARGS, env, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    db = tmp_path / "magv.duckdb"
    runs = _steps(db)
    assert len(runs) == 2  # the seed question and the generated one
    for steps in runs:
        assert len(steps) == len(plan)
        errors = [s["error"] or "" for s in steps]
        assert errors[0] == "tool_error: no customer with email \"x' OR '1'='1' --\""
        assert errors[1] == 'tool_error: no products match "%\' UNION SELECT * FROM customers --"'
        assert errors[2] == "tool_error: no order with id '1;DROP TABLE orders'"
        assert errors[3].startswith("tool_error:") and "etc/passwd" in errors[3]
        assert errors[4].startswith("tool_error:")
        assert steps[5]["kind"] == "invalid" and "is too long" in errors[5]
        assert steps[6]["kind"] == "invalid" and "is too long" in errors[6]
        assert steps[7]["kind"] == "invalid" and "Additional properties are not allowed ('sql'" in errors[7]
        assert steps[8]["error"] is None and steps[8]["result"]["status"] == "cancelled"
        assert steps[9]["result"]["status"] == "cancelled"
        assert errors[10].startswith("tool_error:")
        assert "root:" not in json.dumps(steps)  # nothing was read from the file system
    n_tool_errors, n_invalid = query(db, "SELECT sum(n_tool_errors), sum(n_invalid) FROM runs")[0]
    assert (n_tool_errors, n_invalid) == (2 * 6, 2 * 3)
    faults = json.loads(out)["summary"]["faults"]
    assert (faults["tool_errors"], faults["invalid_steps"]) == (2 * 6, 2 * 3)
    # The agents' writes stayed inside their runs: the domain file is unchanged, the order pending.
    assert _sha256(domain_db) == before
    assert _pending_order(domain_db) == pending


HANGING_DOMAIN = """
import time
from pathlib import Path

from magv.domains import Domain, tool


def generate(db, seed):
    db.execute("CREATE TABLE notes AS SELECT range AS id, 'note ' || range AS text FROM range(10)")


@tool("Counts rows forever (a query that never ends).")
def heavy_query(db):
    return db.execute("SELECT count(*) FROM range(1000000000000) a, range(10) b").fetchone()[0]


@tool("Builds a report slowly (Python that hangs).")
def slow_report(db):
    time.sleep(4)
    return "late"


@tool("Reads a note.", {"id": {"type": "integer", "minimum": 0}})
def read_note(db, id):
    return db.execute("SELECT text FROM notes WHERE id = ?", [id]).fetchone()[0]


DOMAIN = Domain("hangs", system_prompt="You read notes.", tools=[heavy_query, slow_report, read_note],
                generate=generate, seeds_path=Path(__file__).parent / "seeds.jsonl")
"""


@pytest.mark.integration
def test_tools_that_hang_are_cut_off_by_the_timeout_and_recorded(
    tmp_path, prefect_harness, monkeypatch, capsys
):
    folder = tmp_path / "hangs"
    folder.mkdir()
    (folder / "domain.py").write_text(HANGING_DOMAIN)
    (folder / "seeds.jsonl").write_text(
        '{"id": "note3", "question": "What does note 3 say?", "trajectory": [{"name": "read_note", "arguments": {"id": 3}}]}\n'
    )
    plan = [("read_note", {"id": 3}), ("heavy_query", {}), ("read_note", {"id": 4}), ("slow_report", {}),
            ("read_note", {"id": 5})]  # fmt: skip
    with FakeLLMServer(Attacker(plan)) as srv:
        env = magv_env(tmp_path, srv.base_url, pipeline__tool_timeout_s=0.5, pipeline__concurrency=1)
        started = time.monotonic()
        code, out, err = run_here([*ARGS, "--domain", str(folder)], env, monkeypatch, capsys)
        seconds = time.monotonic() - started
    assert code == 0, err[-3000:]
    domain_db = tmp_path / "domains" / "hangs.duckdb"
    db = tmp_path / "magv.duckdb"
    for steps in _steps(db):
        errors = [s["error"] for s in steps]
        assert steps[0]["result"] == "note 3"
        assert errors[1] == "timeout: heavy_query did not finish within 0.5 s and was stopped"
        assert steps[2]["result"] == "note 4"  # an interrupted query leaves the run usable
        assert errors[3] == "timeout: slow_report did not finish within 0.5 s and was stopped"
        assert errors[4].startswith("unavailable: an earlier tool call of this run is still stuck")
        assert 0.5 <= steps[1]["latency_s"] < 4
    assert query(db, "SELECT sum(n_tool_errors), count(*) FILTER (status = 'ok') FROM runs")[0] == (3 * 2, 2)
    assert seconds < 60
    con = duckdb.connect(str(domain_db), read_only=True)
    assert con.execute("SELECT count(*) FROM notes").fetchone()[0] == 10
    con.close()
