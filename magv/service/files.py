"""`magv verify score --input FILE --output FILE`: trajectories of a JSONL file (magv's import
format, docs/export.md) scored by a saved model, one verdict line per input line, with no database.

The input is read and checked whole (magv.interchange's parser, errors naming file:line:field)
and the model loaded before anything is written; the verdicts are written by `magv.outputs` (whole
or not at all, never onto the input, the database or the model file; /dev/null written through).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from magv import outputs
from magv.config import Settings
from magv.definitions import DEFAULT_TOOL_ERRORS, ToolErrorRule
from magv.errors import BadInput
from magv.interchange import ImportLine, check_import_lines
from magv.jsonl import iter_jsonl_text, read_jsonl
from magv.messages import Notes
from magv.pipeline.reask import Reasker, ReaskOptions, ReaskOutcome
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


def verdict_records(
    lines: list[ImportLine], verdicts: list[Any], model_id: str, notes: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    out = []
    for n, (line, v) in enumerate(zip(lines, verdicts, strict=True)):
        rec: dict[str, Any] = {"question_id": line.question_id, "run": line.run}
        if line.group is not None:
            rec["group_id"] = line.group
        rec.update(model=model_id, **v.as_dict())
        if notes is not None:
            rec["reask"] = notes[n]
        out.append(rec)
    return out


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
    reask: ReaskOptions | None = None,
) -> dict[str, Any]:
    """Score `source` (a path or "-") into `target` (a path or "-"); returns the summary. The
    tools of `domain` and `tools_file` (magv.verify.toolspec) say which results are errors and
    which calls write. With `reask`, the settings' agent is asked again about the conversations
    it chooses (magv.pipeline.reask), over `domain` (default: the settings')."""
    t0 = time.perf_counter()
    outputs.target(target, "--output")  # a directory, a block device: refused before any work
    # The live database is this command's even when --model-file leaves it closed.
    outputs.protect_database(settings.database)
    tools = log_tools(domain, tools_file, error_pattern)
    notes = Notes()
    lines = read_lines(source, notes, tools.errors)
    scorer = load_scorer(settings, model_file=model_file, model_id=model_id, threshold=threshold, tools=tools)
    outputs.target(target, "--output")  # now also never onto the input or the model file just read
    t1 = time.perf_counter()
    questions: dict[str, str] = {}
    for line in lines:
        questions.setdefault(line.key, line.question)
    trajectories, groups = [x.trajectory for x in lines], [x.key for x in lines]
    verdicts = scorer.score(trajectories, groups, questions)
    outcome = None
    if reask is not None:
        outcome = _reask(settings, reask, domain, scorer, trajectories, groups, questions, verdicts)
        verdicts = outcome.verdicts
    t2 = time.perf_counter()
    records = verdict_records(lines, verdicts, scorer.model_id, outcome.notes if outcome else None)
    outputs.write_text(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "--output")
    correct = sum(v.correct for v in verdicts)
    out = {
        "input": source,
        "output": "stdout" if target == STDIO else target,
        "model_id": scorer.model_id,
        "model": scorer.model_name,
        "scored": len(verdicts),
        "correct": correct,
        "threshold": scorer.threshold,
        "normalised": notes.summary(),
        "tools": tools.summary(n for x in lines for n in x.trajectory.tool_names()),
        "seconds": {
            "load": round(t1 - t0, 4),
            "predict": round(t2 - t1, 4),
            "write": round(time.perf_counter() - t2, 4),
        },
    }
    if outcome is not None:
        out["reask"] = outcome.summary
    return out


def _reask(
    settings: Settings,
    options: ReaskOptions,
    domain: str | None,
    scorer: Any,
    trajectories: list[Any],
    groups: list[Any],
    questions: dict[str, str],
    verdicts: list[Any],
) -> ReaskOutcome:
    """The file's conversations re-asked: the model endpoints are started only if one is chosen."""
    from contextlib import ExitStack

    from magv.llm import managed_endpoints
    from magv.pipeline.worker import close_resources

    if domain is not None:
        settings = settings.model_copy(update={"domain": domain})
    try:
        with ExitStack() as stack:
            asker = Reasker(
                settings, options, endpoints=lambda: stack.enter_context(managed_endpoints(settings))
            )
            return asker.run(scorer, trajectories, groups, questions, None, verdicts)
    finally:
        close_resources()
