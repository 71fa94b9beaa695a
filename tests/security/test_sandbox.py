"""The sandbox from a hostile tool's side: its SQL sees the domain's tables and nothing of the host.

The tool here runs whatever SQL it is given, the worst a domain author (or a prompt-injected
argument passed into hand-written SQL) can do. Each attack must come back as a recorded tool error
while the domain file, the host files and DuckDB's extension folder stay as they were.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from magv.domains import Domain, load_domain, tool
from magv.errors import BadInput
from magv.models import ToolCall
from tests.domains_helpers import USER_DOMAIN


def _generate(db, seed):
    db.execute("CREATE TABLE accounts AS SELECT range AS id, 100 AS balance FROM range(3)")


@tool("Runs SQL.", {"sql": {"type": "string"}}, writes=True)
def run_sql(db, sql):
    return db.execute(sql).fetchall()


@tool("Reads a balance.")
def balance(db):
    return db.execute("SELECT balance FROM accounts WHERE id = 1").fetchone()[0]


def _domain(name: str = "hostile") -> Domain:
    return Domain(name, system_prompt="Test.", tools=[run_sql, balance], generate=_generate,
                  seeds_path=USER_DOMAIN / "seeds.jsonl")  # fmt: skip


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """DuckDB keeps downloaded extensions under $HOME/.duckdb: a fresh HOME shows any download."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return path


@pytest.fixture
def hostile(tmp_path, home):
    domain = _domain()
    pool = domain.sandbox_pool(tmp_path / "domains")
    yield pool
    pool.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sql(pool, sql: str):
    with pool.session() as s:
        return s.execute(ToolCall(name="run_sql", arguments={"sql": sql}))


SECRET = "top secret host file"


@pytest.fixture
def host_file(tmp_path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


@pytest.mark.parametrize(
    "template",
    [
        "SELECT content FROM read_text('{path}')",
        "SELECT content FROM read_text('{traversal}')",
        "SELECT * FROM read_csv('{path}')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_text('../../../../../../etc/passwd')",
        "SELECT * FROM glob('{dir}/*')",
        "SELECT * FROM read_blob('{path}')",
    ],
)
def test_a_tool_cannot_read_host_files(hostile, host_file, template):
    traversal = "../" * 12 + str(host_file).lstrip("/")
    step = _sql(hostile, template.format(path=host_file, traversal=traversal, dir=host_file.parent))
    assert step.error is not None and "internal_error" in step.error
    assert "disabled" in step.error.lower() or "permission" in step.error.lower(), step.error
    assert SECRET not in repr(step.result)


def test_a_tool_cannot_write_host_files(hostile, tmp_path):
    target = tmp_path / "dump.csv"
    step = _sql(hostile, f"COPY accounts TO '{target}'")
    assert step.error is not None and not target.exists()


def test_a_tool_cannot_attach_and_change_the_domain_file(hostile, tmp_path):
    path = hostile.database
    before = _sha(path)
    for sql in (
        f"ATTACH '{path}' AS src",
        f"ATTACH '{path}' AS src (READ_ONLY)",
        f"ATTACH '{tmp_path / 'new.duckdb'}' AS other",
        "ATTACH ':memory:' AS scratch",  # harmless in itself, but ATTACH as such is closed
    ):
        step = _sql(hostile, sql + "; UPDATE src.accounts SET balance = 0")
        assert step.error is not None, sql
    assert _sha(path) == before
    assert not (tmp_path / "new.duckdb").exists()
    with hostile.session() as s:
        assert s.execute(ToolCall(name="balance", arguments={})).result == 100


@pytest.mark.parametrize(
    "sql",
    [
        "SET enable_external_access = true",
        "SET autoinstall_known_extensions = true",
        "RESET enable_external_access",
        "SET lock_configuration = false",
    ],
)
def test_a_tool_cannot_turn_the_lockdown_off(hostile, host_file, sql):
    assert _sql(hostile, sql).error is not None
    assert _sql(hostile, f"SELECT content FROM read_text('{host_file}')").error is not None


@pytest.mark.parametrize(
    "sql",
    [
        "INSTALL sqlite",
        "LOAD sqlite",
        "INSTALL httpfs",
        "SELECT * FROM read_parquet('https://example.com/x.parquet')",
        "SELECT * FROM sqlite_scan('x.db', 'accounts')",
    ],
)
def test_a_tool_triggers_no_extension_download(hostile, home, sql):
    step = _sql(hostile, sql)
    assert step.error is not None
    assert not (home / ".duckdb").exists(), list(home.rglob("*"))


def test_a_sqlite_file_in_place_of_the_domain_database_triggers_no_download(tmp_path, home):
    """Not a built domain: it is rebuilt (or refused), never read through a downloaded extension."""
    domain = _domain("sqlitefile")
    folder = tmp_path / "domains"
    folder.mkdir()
    con = sqlite3.connect(domain.database_path(folder))
    con.execute("CREATE TABLE accounts (id INTEGER, balance INTEGER)")
    con.commit()
    con.close()
    try:
        domain.sandbox_pool(folder).close()
    except BadInput as exc:
        assert "sqlitefile" in str(exc)
    assert not (home / ".duckdb").exists(), list(home.rglob("*"))


def test_a_sqlite_file_attached_at_load_triggers_no_download(tmp_path, home):
    from magv.domains.sandbox import SandboxPool

    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE accounts (id INTEGER, balance INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(BadInput, match="hostile: cannot open"):
        SandboxPool(_domain(), path)
    assert not (home / ".duckdb").exists(), list(home.rglob("*"))


def test_built_in_domains_still_work_under_the_lockdown(tmp_path, home):
    retail = load_domain("retail")
    pool = retail.sandbox_pool(tmp_path / "domains")
    try:
        with pool.session() as s:
            step = s.execute(ToolCall(name="get_order_details", arguments={"order_id": "W1000001"}))
        assert step.ok and step.result["order_id"] == "W1000001"
    finally:
        pool.close()
