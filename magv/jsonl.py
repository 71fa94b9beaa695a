"""JSON Lines in and out: errors that name the file, line and field; output that is always valid JSON.

Lines are split on "\\n" only. `str.splitlines()` also splits on U+2028, U+0085 and other
characters that JSON allows raw inside a string, so a file magv wrote itself would not read back.

What a line may hold is plain JSON that DuckDB and every other reader can take: no NaN or
Infinity (Python's json accepts and writes them, JSON does not), no lone UTF-16 surrogates (an
escape like "\\ud800" parses to a string that cannot be encoded as UTF-8), integers within
64 bits, and nesting at most MAX_DEPTH deep.
"""

from __future__ import annotations

import json
import math
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from magv import outputs
from magv.errors import BadInput

MAX_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_input_file(path: Path, what: str = "input file") -> None:
    """A regular file that can be read whole: a directory, FIFO, device or stdin is refused."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise BadInput(f"{path}: is a directory; expected a JSONL {what}")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (pipe)" if stat.S_ISFIFO(mode) else "not a regular file"
        raise BadInput(f"{path}: is {kind}; expected a regular JSONL {what} (save the data to a file first)")


def read_jsonl(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(line number, "path:line", parsed value) for every non-blank line."""
    check_input_file(path)
    outputs.protect(path, "the input file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read as UTF-8 text: {exc}") from None
    yield from iter_jsonl_text(text, path)


def iter_jsonl_text(text: str, name: Path | str) -> Iterator[tuple[int, str, Any]]:
    """`read_jsonl` over text already read (stdin, a request body); `name` stands for the file."""
    for n, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        where = f"{name}:{n}"
        yield n, where, loads_line(raw, where)


def loads_line(raw: str, where: str) -> Any:
    """One JSON value, checked as the module docstring says; BadInput names `where` and the field."""
    try:
        return strict_loads(raw, where)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None


def strict_loads(raw: str, where: str) -> Any:
    """Like loads_line, for JSON inside a field (tool arguments, results): a text that is no JSON at
    all raises json.JSONDecodeError for the caller to judge; JSON that is not portable is BadInput."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except _NonFinite as exc:
        # Parse again keeping the constants as markers, to name the field that holds one.
        problem = value_problem(json.loads(raw, parse_constant=_Constant))
        raise BadInput(f"{where}: {problem or f'{exc.args[0]} is not valid JSON'}") from None
    except RecursionError:
        raise BadInput(f"{where}: JSON nested too deeply; at most {MAX_DEPTH} levels") from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise BadInput(f"{where}: not valid JSON: {exc}") from None
    problem = value_problem(value)
    if problem is not None:
        raise BadInput(f"{where}: {problem}")
    return value


def value_problem(value: Any) -> str | None:
    """The first thing in a parsed value that is not portable JSON, as "field: what", or None."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        node, field, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{field or '(top)'}: nested more than {MAX_DEPTH} levels deep"
        if isinstance(node, dict):
            for key, item in node.items():
                name = f"{field}.{key}" if field else str(key)
                if _has_lone_surrogate(key):
                    return f"{_shown(name)}: the key holds a lone surrogate (not valid Unicode)"
                stack.append((item, name, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, f"{field}[{i}]", depth + 1) for i, item in enumerate(node))
        elif isinstance(node, str):
            if _has_lone_surrogate(node):
                return f"{_shown(field) or '(top)'}: text holds a lone surrogate (not valid Unicode)"
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            if not INT64_MIN <= node <= INT64_MAX:
                return (
                    f"{field or '(top)'}: integer {_short(node)} is out of range (a 64-bit integer at most)"
                )
        elif isinstance(node, _Constant):
            return f"{field or '(top)'}: {node.name} is not valid JSON (JSON has no NaN or Infinity)"
        elif isinstance(node, float) and not math.isfinite(node):
            return f"{field or '(top)'}: {node} is not valid JSON (JSON has no NaN or Infinity)"
    return None


def dumps_line(value: Any) -> str:
    """One line of JSON, refusing what would not read back (NaN, Infinity, lone surrogates)."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid JSON: text holds a lone surrogate") from None
    return text


class _NonFinite(ValueError):
    pass


class _Constant:
    def __init__(self, name: str):
        self.name = name


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(name)


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _shown(field: str) -> str:
    return field.encode("utf-8", "backslashreplace").decode("utf-8")


def _short(n: int) -> str:
    text = str(n)
    return text if len(text) <= 30 else f"{text[:12]}…({len(text)} digits)"
