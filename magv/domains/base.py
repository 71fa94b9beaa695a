"""The Domain API: what an assistant works on (data, tools, system prompt) and its seed set."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

from magv.definitions import DEFAULT_TOOL_ERRORS, ToolErrorRule
from magv.domains.sandbox import META_TABLE, NO_EXTENSIONS, Sandbox, SandboxPool
from magv.domains.seeds import read_seeds
from magv.domains.tools import Tool
from magv.errors import BadInput, RunFailed
from magv.models import Seed, ToolSpec

__all__ = ["Domain", "Generator", "Sandbox", "SandboxPool"]

# generate(db, seed): create and fill the domain's tables; the same seed must give the same data.
Generator = Callable[[duckdb.DuckDBPyConnection, int], None]


class Domain:
    """A database built by a deterministic generator, tools over it, a system prompt and seeds.

    `data_version` names the generator's output: a database built by another version (or another
    seed) is rebuilt by `ensure_built`, so a changed generator never meets stale data. A domain
    without a generator has no database: tool specs and seeds only, for an agent that runs its own
    tools (docs/agents.md); magv cannot run its tools.
    `tool_error_pattern` says which tool results of logs of this domain are errors
    (`magv.definitions.ToolErrorRule`; default: a JSON "error" or text that starts with "Error").
    """

    def __init__(
        self,
        name: str,
        *,
        system_prompt: str,
        tools: Sequence[Tool],
        generate: Generator | None,
        seeds_path: str | Path,
        description: str = "",
        data_version: str = "1",
        tool_error_pattern: str | None = None,
    ):
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise BadInput(f"domain name {name!r}: expected letters, digits, '-' or '_'")
        self.name = name
        self.description = description
        self.system_prompt = system_prompt.strip()
        self.generate = generate
        self.seeds_path = Path(seeds_path)
        self.data_version = data_version
        # How this domain's tools report failures in logs of it (imported, scored from a file or
        # over HTTP): a regular expression over a tool result's text; None: magv's default rule.
        self.tool_errors = (
            ToolErrorRule(tool_error_pattern, f"domain {name}: tool_error_pattern")
            if tool_error_pattern is not None
            else DEFAULT_TOOL_ERRORS
        )
        self._tools: dict[str, Tool] = {}
        for t in tools:
            if not isinstance(t, Tool):
                raise BadInput(f"domain {name}: {t!r} is not a Tool (decorate it with magv.domains.tool)")
            if t.name in self._tools:
                raise BadInput(f"domain {name}: two tools are named {t.name!r}")
            self._tools[t.name] = t
        if not self._tools:
            raise BadInput(f"domain {name}: defines no tools")
        if not self.system_prompt:
            raise BadInput(f"domain {name}: system prompt is empty")
        self._seeds: tuple[list[Seed], dict[str, int]] | None = None
        self._seed_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Domain({self.name!r}, tools={len(self._tools)})"

    # -- tools -------------------------------------------------------------------------------

    @property
    def tools(self) -> list[ToolSpec]:
        return [t.spec for t in self._tools.values()]

    def tool(self, name: str) -> ToolSpec | None:
        found = self._tools.get(name)
        return found.spec if found else None

    def implementation(self, name: str) -> Tool | None:
        return self._tools.get(name)

    # -- seeds -------------------------------------------------------------------------------

    def seeds(self) -> list[Seed]:
        return list(self._load_seeds()[0])

    def seed_line(self, seed_id: str) -> int | None:
        """Line of the seed in the seed file, for messages that point the user at it."""
        return self._load_seeds()[1].get(seed_id)

    def _load_seeds(self) -> tuple[list[Seed], dict[str, int]]:
        with self._seed_lock:
            if self._seeds is None:
                specs = {t.name: t.spec for t in self._tools.values()}
                self._seeds = read_seeds(self.seeds_path, self.name, specs)
            return self._seeds

    # -- data --------------------------------------------------------------------------------

    @property
    def has_database(self) -> bool:
        return self.generate is not None

    def _needs_database(self) -> None:
        if self.generate is None:
            raise BadInput(
                f"domain {self.name} has no database (tool specs and seeds only): its tools run in your "
                "agent (--agent or --agent-url, docs/agents.md), not in magv's sandbox"
            )

    def database_path(self, data_dir: Path) -> Path:
        return Path(data_dir) / f"{self.name}.duckdb"

    def build(self, data_dir: Path, seed: int = 0, force: bool = False) -> Path:
        """Generate the database. Written to a temporary file and renamed into place, so readers
        (and other processes building at the same time) only ever see a complete file."""
        self._needs_database()
        path = self.database_path(data_dir)
        if path.exists() and not force:
            return path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"domain data dir {path.parent}: cannot create: {exc.strerror}") from None
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            con = duckdb.connect(str(tmp))
            try:
                self.generate(con, seed)  # type: ignore[misc]
                con.execute(f"CREATE OR REPLACE TABLE {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)")
                con.executemany(
                    f"INSERT INTO {META_TABLE} VALUES (?, ?)",
                    [["domain", self.name], ["data_version", self.data_version], ["seed", str(seed)]],
                )
                con.execute("CHECKPOINT")
            finally:
                con.close()
            os.replace(tmp, path)
        except (BadInput, RunFailed):
            raise
        except Exception as exc:
            raise RunFailed(
                f"domain {self.name}: building {path} failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
                leftover.unlink(missing_ok=True)
        return path

    def built_with(self, data_dir: Path) -> dict[str, str] | None:
        """The meta rows of an existing database, or None when it is missing or unreadable."""
        path = self.database_path(data_dir)
        if not path.is_file():
            return None
        try:
            # No extension autoload: a file of another format (SQLite, say) must not make DuckDB
            # download a reader for it; it is simply not a built domain.
            con = duckdb.connect(str(path), read_only=True, config=dict(NO_EXTENSIONS))
        except duckdb.Error:
            return None
        try:
            return dict(con.execute(f"SELECT key, value FROM {META_TABLE}").fetchall())
        except duckdb.Error:
            return None
        finally:
            con.close()

    def ensure_built(self, data_dir: Path) -> Path:
        """Build when missing, or when built by another generator version or for another domain."""
        self._needs_database()
        meta = self.built_with(data_dir)
        expected = {"domain": self.name, "data_version": self.data_version}
        if meta is None or any(meta.get(k) != v for k, v in expected.items()):
            seed = int(meta["seed"]) if meta and meta.get("seed", "").isdigit() else 0
            return self.build(data_dir, seed=seed, force=True)
        return self.database_path(data_dir)

    def sandbox_pool(self, data_dir: Path, tool_timeout_s: float = 10.0) -> SandboxPool:
        return SandboxPool(self, self.ensure_built(data_dir), tool_timeout_s=tool_timeout_s)
