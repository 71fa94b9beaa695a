"""What magv knows of the tools behind logs it did not produce: their names, which of them change
data (the write features compare those calls), and which tool results are errors.

    tools = log_tools(domain="retail")                      # a magv domain's tools and error rule
    tools = log_tools(tool_file=Path("tools.json"))         # OpenAI function specs with "writes"
    tools = log_tools(tool_file=..., error_pattern=r"^ERR") # and another rule for tool errors

A tool file is a JSON list of OpenAI function specs (`{"type": "function", "function": {"name",
"description", "parameters"}}`, or the bare `{"name", ...}` objects), each with `"writes": true`
when it changes data (beside "function" or inside it); `{"tools": [...]}` is read too. Without a
domain or a file no tool is known: nothing can count as a write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from magv.definitions import DEFAULT_TOOL_ERRORS, ToolErrorRule
from magv.errors import BadInput

MAX_TOOL_FILE = 10_000_000  # bytes: a tool spec file is small; anything larger is the wrong file


@dataclass(frozen=True)
class LogTools:
    """The tools of logs: `names` known, `writes` among them, the `errors` rule; `source` says where
    they came from (for summaries)."""

    names: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    errors: ToolErrorRule = field(default=DEFAULT_TOOL_ERRORS)
    source: str | None = None

    def summary(self, called: Iterable[str]) -> dict[str, Any]:
        """What a summary says of the tools of trajectories that made `called` calls: distinct
        tools called, how many of them are known and how many of those write, and the spec's
        size."""
        names = set(called)
        return {
            "source": self.source,
            "known": len(self.names),
            "writes": len(self.writes),
            "called": len(names),
            "called_known": len(names & self.names),
            "called_writes": len(names & self.writes),
            "error_pattern": self.errors.pattern,
        }


def read_tool_file(path: Path) -> LogTools:
    """The tools of an OpenAI function-spec file (see the module docstring); BadInput names the
    file and the entry that cannot be read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_TOOL_FILE:
            raise BadInput(f"{path}: {size} bytes; a tool spec file is at most {MAX_TOOL_FILE}")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: no such tool spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if isinstance(data, dict) and "tools" in data:
        data = data["tools"]
    if not isinstance(data, list) or not data:
        raise BadInput(
            f'{path}: expected a non-empty JSON list of OpenAI function specs (or {{"tools": [...]}})'
        )
    names: set[str] = set()
    writes: set[str] = set()
    for i, entry in enumerate(data):
        where = f"{path}: [{i}]"
        if not isinstance(entry, dict):
            raise BadInput(f"{where}: expected a function spec object")
        fn = entry.get("function", entry)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
            raise BadInput(f'{where}: expected "function": {{"name": ...}} (an OpenAI function spec)')
        flag = entry.get("writes", fn.get("writes", False))
        if not isinstance(flag, bool):
            raise BadInput(f"{where} ({fn['name']}): writes: expected true or false, got {flag!r}")
        if fn["name"] in names:
            raise BadInput(f"{where}: {fn['name']!r} is specified twice")
        names.add(fn["name"])
        if flag:
            writes.add(fn["name"])
    return LogTools(frozenset(names), frozenset(writes), source=str(path))


def domain_tools(domain: str | None) -> LogTools:
    """A magv domain's tools and error rule; nothing known for a name that is not a loadable domain
    (imported data is labelled with any name)."""
    if not domain:
        return LogTools()
    try:
        from magv.domains import load_domain

        loaded = load_domain(domain)
    except Exception:
        # Imported trajectories often come from a domain magv does not have.
        return LogTools()
    return LogTools(
        frozenset(t.name for t in loaded.tools),
        frozenset(t.name for t in loaded.tools if t.writes),
        loaded.tool_errors,
        source=f"domain {domain}",
    )


def log_tools(
    domain: str | None = None, tool_file: Path | None = None, error_pattern: str | None = None
) -> LogTools:
    """The tools of a domain and of a spec file together (a file's tools add to the domain's); the
    error rule: `error_pattern` (the user's option), else the domain's, else the default."""
    base = domain_tools(domain)
    spec = read_tool_file(tool_file) if tool_file is not None else LogTools()
    errors = (
        ToolErrorRule(error_pattern, "--tool-error-pattern") if error_pattern is not None else base.errors
    )
    sources = [s for s in (base.source, spec.source) if s]
    return LogTools(base.names | spec.names, base.writes | spec.writes, errors, " + ".join(sources) or None)
