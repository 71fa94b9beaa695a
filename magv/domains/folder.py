"""Domains defined without Python: a folder with `domain.toml`, CSV data and SQL tools.

    my_domain/
      domain.toml     name, description, system prompt, [[tools]] each with parameters and SQL
      seeds.jsonl     seed questions with gold trajectories
      data/*.csv      one table per file, named after the file
      build.sql       optional: run after the CSV files are loaded (indexes, derived tables)

Without data and without `sql` in any tool, the folder is a domain without a database (tool specs
and seeds only) for an agent that runs its own tools (docs/agents.md).
See docs/domains.md for the full format.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
from pydantic import ValidationError

from magv.config import read_toml
from magv.domains.base import Domain
from magv.domains.sql import rows
from magv.domains.tools import Tool, ToolError, make_tool, object_schema
from magv.errors import BadInput
from magv.models import ToolSpec

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_TOP_KEYS = {
    "name",
    "description",
    "system_prompt",
    "system_prompt_file",
    "seeds",
    "data",
    "tools",
    "tool_error_pattern",
}
_TOOL_KEYS = {"name", "description", "parameters", "required", "writes", "sql", "result", "not_found"}
_RESULTS = ("rows", "row")


def load_toml_domain(folder: Path) -> Domain:
    path = folder / "domain.toml"
    config = read_toml(path, "domain definition")
    unknown = sorted(set(config) - _TOP_KEYS)
    if unknown:
        raise BadInput(
            f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(_TOP_KEYS))}"
        )
    seeds = folder / str(config.get("seeds", "seeds.jsonl"))
    data = config.get("data", {})
    if not isinstance(data, dict) or set(data) - {"csv", "sql"}:
        raise BadInput(f"{path}: [data] takes csv (a folder of CSV files) and sql (a script)")
    csv_dir = folder / str(data.get("csv", "data"))
    script = folder / str(data["sql"]) if "sql" in data else None
    missing = []
    if not isinstance(config.get("name"), str):
        missing.append("name")
    if not config.get("system_prompt") and not config.get("system_prompt_file"):
        missing.append("system_prompt (or system_prompt_file)")
    if not config.get("tools"):
        missing.append("[[tools]]")
    if not seeds.is_file():
        missing.append(f"seed file {seeds.name}")
    tools_cfg = config.get("tools")
    specs_only = isinstance(tools_cfg, list) and all(
        isinstance(t, dict) and "sql" not in t for t in tools_cfg
    )
    if not any(csv_dir.glob("*.csv")) and script is None and not specs_only:
        missing.append(f"data (CSV files in {csv_dir.name}/ or [data] sql)")
    if script is not None and not script.is_file():
        missing.append(f"data script {script.name}")
    if missing:
        raise BadInput(f"{path}: not a complete domain; missing: {', '.join(missing)}")
    prompt = config.get("system_prompt") or _read(folder / str(config["system_prompt_file"]), path)
    if not isinstance(tools_cfg, list):
        raise BadInput(f"{path}: tools: expected [[tools]] tables")
    files = sorted(csv_dir.glob("*.csv"))
    specs_only = specs_only and not files and script is None
    tools = [_sql_tool(t, f"{path}: tools[{i}]", specs_only) for i, t in enumerate(tools_cfg, start=1)]
    return Domain(
        config["name"],
        description=str(config.get("description", "")),
        system_prompt=prompt,
        tools=tools,
        generate=None if specs_only else _csv_generator(files, script),
        seeds_path=seeds,
        data_version=_fingerprint([*files, *([script] if script else [])]),
        tool_error_pattern=_error_pattern(config.get("tool_error_pattern"), path),
    )


def _error_pattern(value: Any, path: Path) -> str | None:
    if value is not None and not isinstance(value, str):
        raise BadInput(f"{path}: tool_error_pattern: expected a regular expression (a string)")
    return value


def _read(file: Path, config: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{config}: system_prompt_file {file}: cannot read: {exc}") from None


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _sql_tool(cfg: Any, where: str, spec_only: bool = False) -> Tool:
    if not isinstance(cfg, dict):
        raise BadInput(f"{where}: expected a table")
    unknown = sorted(set(cfg) - _TOOL_KEYS)
    if unknown:
        raise BadInput(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(_TOOL_KEYS))}"
        )
    needed = ("name", "description") if spec_only else ("name", "description", "sql")
    missing = [k for k in needed if not isinstance(cfg.get(k), str) or not cfg[k]]
    if missing:
        raise BadInput(f"{where}: missing {', '.join(missing)}")
    where = f"{where} ({cfg['name']})"
    properties = cfg.get("parameters", {})
    if not isinstance(properties, dict):
        raise BadInput(f"{where}: parameters: expected a table of argument name -> JSON schema")
    result = cfg.get("result", "rows")
    if result not in _RESULTS:
        raise BadInput(f"{where}: result: expected one of {', '.join(_RESULTS)} (got {result!r})")
    used = sorted(set(_PARAM.findall(cfg.get("sql", ""))))
    undeclared = [p for p in used if p not in properties]
    if undeclared:
        raise BadInput(f"{where}: sql uses ${', $'.join(undeclared)} but parameters does not declare it")
    try:
        spec = ToolSpec(
            name=cfg["name"],
            description=cfg["description"],
            parameters=object_schema(properties, cfg.get("required")),
            writes=bool(cfg.get("writes", False)),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise BadInput(f"{where}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    if spec_only:
        return make_tool(spec, _no_database)
    run = _sql_runner(cfg["sql"], used, result, cfg.get("not_found"))
    return make_tool(spec, run)


def _no_database(db: duckdb.DuckDBPyConnection, **arguments: Any) -> Any:
    raise ToolError("this domain has no database: the agent runs its own tools")


def _sql_runner(sql: str, used: list[str], result: str, not_found: str | None):
    def run(db: duckdb.DuckDBPyConnection, **arguments: Any) -> Any:
        # Optional arguments the model left out are NULL, so SQL can say `$x IS NULL OR col = $x`.
        params = {name: arguments.get(name) for name in used}
        found = rows(db, sql, params or None)
        if not found and (result == "row" or not_found):
            raise ToolError(_message(not_found or "nothing found", arguments))
        return found[0] if result == "row" else found

    return run


def _message(template: str, arguments: Mapping[str, Any]) -> str:
    try:
        return template.format(**arguments)
    except (KeyError, IndexError, ValueError):
        return template


def _csv_generator(files: list[Path], script: Path | None):
    def generate(db: duckdb.DuckDBPyConnection, seed: int) -> None:
        # CSV data is fixed; the seed has nothing to vary.
        for f in files:
            if not _IDENT.match(f.stem):
                raise BadInput(f"{f}: a CSV file name must be a table name (letters, digits, _)")
            try:
                db.execute(
                    f"CREATE TABLE {f.stem} AS SELECT * FROM read_csv($path, header = true)", {"path": str(f)}
                )
            except duckdb.Error as exc:
                raise BadInput(f"{f}: cannot load as CSV: {str(exc).splitlines()[0]}") from None
        if script is not None:
            try:
                db.execute(script.read_text(encoding="utf-8"))
            except duckdb.Error as exc:
                raise BadInput(f"{script}: SQL failed: {str(exc).splitlines()[0]}") from None

    return generate
