"""`magv verify score --input FILE --output FILE`: trajectories of a JSONL file (magv's import
format, docs/export.md) scored by a saved model, one verdict line per input line, with no database.

The input is read and checked whole (magv.verify.importer's parser, errors naming file:line:field)
and the model loaded before anything is written; a file output appears complete or not at all
(written beside its destination, then renamed).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from magv.config import Settings
from magv.definitions import DEFAULT_TOOL_ERRORS, ToolErrorRule
from magv.errors import BadInput
from magv.jsonl import iter_jsonl_text, read_jsonl
from magv.verify.importer import ImportLine, Notes, check_import_lines
from magv.verify.scoring import load_scorer
from magv.verify.toolspec import log_tools

STDIO = "-"


def read_lines(
    source: str, notes: Notes | None = None, errors: ToolErrorRule = DEFAULT_TOOL_ERRORS
) -> list[ImportLine]:
    if source == STDIO:
        try:
            text = sys.stdin.read()
        except UnicodeDecodeError as exc:
            raise BadInput(f"<stdin>: cannot read as UTF-8 text: {exc}") from None
        return check_import_lines(iter_jsonl_text(text, "<stdin>"), "<stdin>", notes, errors)
    return check_import_lines(read_jsonl(Path(source)), Path(source), notes, errors)


def check_output(target: str) -> None:
    if target == STDIO:
        return
    path = Path(target)
    if path.is_dir():
        raise BadInput(f"--output {path}: is a directory; expected the path of a JSONL file")
    if not path.parent.is_dir():
        raise BadInput(f"--output {path}: the folder {path.parent} does not exist")


def verdict_records(lines: list[ImportLine], verdicts: list[Any], model_id: str) -> list[dict[str, Any]]:
    out = []
    for line, v in zip(lines, verdicts, strict=True):
        rec: dict[str, Any] = {"question_id": line.question_id, "run": line.run}
        if line.group is not None:
            rec["group_id"] = line.group
        rec.update(model=model_id, **v.as_dict())
        out.append(rec)
    return out


def write_lines(target: str, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if target == STDIO:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(target)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def score_file(
    settings: Settings,
    source: str,
    target: str = STDIO,
    *,
    model_file: Path | None = None,
    model_id: str | None = None,
    threshold: float | None = None,
    domain: str | None = None,
    tools_file: Path | None = None,
    error_pattern: str | None = None,
) -> dict[str, Any]:
    """Score `source` (a path or "-") into `target` (a path or "-"); returns the summary. The
    tools of `domain` and `tools_file` (magv.verify.toolspec) say which results are errors and
    which calls write."""
    t0 = time.perf_counter()
    check_output(target)
    tools = log_tools(domain, tools_file, error_pattern)
    notes = Notes()
    lines = read_lines(source, notes, tools.errors)
    scorer = load_scorer(settings, model_file=model_file, model_id=model_id, threshold=threshold, tools=tools)
    t1 = time.perf_counter()
    questions: dict[str, str] = {}
    for line in lines:
        questions.setdefault(line.key, line.question)
    verdicts = scorer.score([x.trajectory for x in lines], [x.key for x in lines], questions)
    t2 = time.perf_counter()
    write_lines(target, verdict_records(lines, verdicts, scorer.model_id))
    correct = sum(v.correct for v in verdicts)
    return {"input": source, "output": "stdout" if target == STDIO else target, "model_id": scorer.model_id,
            "model": scorer.model_name, "scored": len(verdicts), "correct": correct,
            "threshold": scorer.threshold, "normalised": notes.summary(),
            "tools": tools.summary(n for x in lines for n in x.trajectory.tool_names()),
            "seconds": {"load": round(t1 - t0, 4), "predict": round(t2 - t1, 4),
                        "write": round(time.perf_counter() - t2, 4)}}  # fmt: skip
