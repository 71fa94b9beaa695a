"""Reading JSON Lines input files with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from magv.errors import BadInput


def read_jsonl(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(line number, "path:line", parsed value) for every non-blank line."""
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read as UTF-8 text: {exc}") from None
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            yield n, where, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
