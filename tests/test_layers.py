"""Where code may live: SQL on the magv store only in magv/store/ (the domains' own databases are
their tools' business), and no import that runs up the layers (the library does not borrow from
the pipeline, the cascade, the commands or the report)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE)\b")
# magv/store/ owns the store's SQL; magv/domains/ queries a domain's database (the agents' tools,
# data generators, the sandbox), never the store
ALLOWED = ("magv/store/", "magv/domains/")


def _sources() -> list[Path]:
    return sorted([*ROOT.glob("magv/**/*.py"), *ROOT.glob("flows/*.py")])


def sql_outside_store() -> list[str]:
    """file:line of every string literal that holds SQL and every `.execute(` call outside the
    store."""
    found = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(ALLOWED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                found.append(f"{rel}:{node.lineno}: {node.value.strip()[:60]!r}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("execute", "executemany", "sql")
                # a domain Sandbox's execute(ToolCall) runs one of the domain's tools, not SQL
                and "sandbox" not in ast.unparse(node.func.value).lower()
            ):
                found.append(f"{rel}:{node.lineno}: .{node.func.attr}(")
    return found


def test_no_sql_outside_the_store():
    found = sql_outside_store()
    assert not found, "SQL outside magv/store/ (add a read method to a store mixin):\n" + "\n".join(found)


def test_the_check_finds_sql(tmp_path, monkeypatch):
    """The check above would see a query written outside the store."""
    bad = ROOT / "magv" / "_sql_probe_for_test.py"
    bad.write_text('def f(store):\n    return store.query("SELECT * FROM runs")\n', encoding="utf-8")
    try:
        assert any(f.startswith("magv/_sql_probe_for_test.py:2") for f in sql_outside_store())
    finally:
        bad.unlink()


# a package -> the packages it must not import (they sit above it)
LOWER = {
    "magv/verify/": ("magv.pipeline", "magv.cascade", "magv.commands", "magv.report", "magv.flows"),
    "magv/store/": ("magv.pipeline", "magv.cascade", "magv.commands", "magv.report", "magv.verify"),
}


def test_no_import_runs_up_the_layers():
    found = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        banned = next((b for prefix, b in LOWER.items() if rel.startswith(prefix)), None)
        if banned is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            found += [f"{rel}:{node.lineno}: {n}" for n in names if n.startswith(banned)]
    assert not found, "imports that run up the layers:\n" + "\n".join(found)
