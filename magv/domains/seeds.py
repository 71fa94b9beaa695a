"""Reading a domain's seeds.jsonl: one seed question with its gold trajectory per line.

    {"id": "...", "question": "...", "trajectory": [{"name": "tool", "arguments": {...}}], "notes": "..."}

An optional "acceptable": [[call, ...], ...] lists further trajectories that are also correct (for
example the same answer with or without an optional read-only lookup); gold matching accepts any.

Every problem is a BadInput "<path>:<line>: <reason>", so the user can open the file at the line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from magv.domains.tools import argument_errors
from magv.errors import BadInput
from magv.jsonl import loads_line
from magv.models import Seed, ToolCall, ToolSpec

MAX_LINE_BYTES = 64 * 1024
_FIELDS = {"id", "question", "trajectory", "acceptable", "notes"}


def read_seeds(path: Path, domain: str, tools: Mapping[str, ToolSpec]) -> tuple[list[Seed], dict[str, int]]:
    """The seeds and, for each seed id, its line number (for error messages further on)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: seed file not found") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read seed file: {exc.strerror}") from None
    seeds: list[Seed] = []
    lines: dict[str, int] = {}
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        if len(line) > MAX_LINE_BYTES:
            raise BadInput(f"{where}: line is {len(line)} bytes; a seed line may be at most {MAX_LINE_BYTES}")
        seed = _parse_line(line, where, domain, number, tools)
        if seed.id in lines:
            raise BadInput(f"{where}: duplicate seed id {seed.id!r} (first on line {lines[seed.id]})")
        lines[seed.id] = number
        seeds.append(seed)
    if not seeds:
        raise BadInput(f"{path}: seed file is empty; expected one JSON object per line")
    return seeds, lines


def _parse_line(line: bytes, where: str, domain: str, number: int, tools: Mapping[str, ToolSpec]) -> Seed:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{where}: not UTF-8 text") from None
    data = loads_line(text, where)
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a JSON object with 'question' and 'trajectory'")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise BadInput(
            f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(_FIELDS))}"
        )
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise BadInput(f"{where}: 'question' must be a non-empty string")
    seed_id = data.get("id", f"{domain}-line{number}")
    if not isinstance(seed_id, str) or not seed_id.strip():
        raise BadInput(f"{where}: 'id' must be a non-empty string when given")
    notes = data.get("notes")
    if notes is not None and not isinstance(notes, str):
        raise BadInput(f"{where}: 'notes' must be a string")
    calls = _parse_trajectory(data.get("trajectory"), where, tools)
    extra = data.get("acceptable", [])
    if not isinstance(extra, list):
        raise BadInput(f"{where}: 'acceptable' must be a list of trajectories (lists of tool calls)")
    acceptable = [
        _parse_trajectory(t, where, tools, f"acceptable[{n}]") for n, t in enumerate(extra, start=1)
    ]
    return Seed(
        id=seed_id.strip(), question=question.strip(), trajectory=calls, acceptable=acceptable, notes=notes
    )


def _parse_trajectory(
    value: Any, where: str, tools: Mapping[str, ToolSpec], field: str = "trajectory"
) -> list[ToolCall]:
    if not isinstance(value, list) or not value:
        raise BadInput(f"{where}: '{field}' must be a non-empty list of tool calls")
    calls = []
    for i, item in enumerate(value, start=1):
        at = f"{where}: {field}[{i}]"
        if not isinstance(item, dict) or set(item) - {"name", "arguments"} or "name" not in item:
            raise BadInput(f'{at}: expected {{"name": "<tool>", "arguments": {{...}}}}')
        name, arguments = item["name"], item.get("arguments", {})
        spec = tools.get(name) if isinstance(name, str) else None
        if spec is None:
            raise BadInput(f"{at}: unknown tool {name!r}; this domain has {', '.join(sorted(tools))}")
        if not isinstance(arguments, dict):
            raise BadInput(f"{at}: {name}: 'arguments' must be a JSON object")
        problem = argument_errors(spec, arguments)
        if problem is not None:
            raise BadInput(f"{at}: {name}: arguments do not match the tool's schema: {problem}")
        calls.append(ToolCall(name=name, arguments=arguments))
    return calls
