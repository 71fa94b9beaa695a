"""The trajectory interchange format: JSON Lines that `magv import trajectories`, `magv verify score
--input` and the service read, and that `magv export --format jsonl` writes (docs/export.md
describes every field). One JSON object per line:

    {"question_id": str, "question": str, "run": int, "messages": [...], "label": true|false|null,
     "meta": {...}, "group_id": str, "reference": [...]}

`messages` are read by magv.messages (OpenAI or LangChain form). `group_id` (or `task_id`)
gathers runs of one task whose opening words differ (a simulated user); `reference` (a list of
calls or of messages) is a reference trajectory to label the run by. A line without a "question"
takes its first user message (a repair, counted in `Notes`). The numbers of `meta` that are
stored (tokens, latency, the judge's tokens) are checked where they enter.

Reading checks a whole file (every line, then one question text per question_id unless the line
has a group, one group per question_id, one line per run) before a caller writes anything; the
store writer is magv.verify.importer. Writing (`run_to_record`) gives an imported run back as it
was read, from what the writer kept of it (`kept_entry`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from magv.definitions import DEFAULT_TOOL_ERRORS, ToolErrorRule
from magv.errors import BadInput
from magv.jsonl import read_jsonl
from magv.messages import (
    STATUSES,
    TOOL_NAME,
    Notes,
    first_user_text,
    one_of,
    read_messages,
    shown,
    trajectory_to_messages,
)
from magv.models import Question, Run, ToolCall, Trajectory

LINE_FIELDS = {"question_id", "question", "run", "messages", "label", "meta"}  # what export writes
OPTIONAL_FIELDS = {"group_id", "task_id", "reference"}
INT32_MAX = 2**31 - 1
MAX_LATENCY_S = 1e7  # ~4 months: anything above is a unit mistake, not a latency


@dataclass
class ImportLine:
    line: int
    question_id: str
    question: str
    run: int
    messages: list[dict[str, Any]]
    label: bool | None
    meta: dict[str, Any]
    trajectory: Trajectory
    user_turns: list[str] = field(default_factory=list)
    group: str | None = None  # group_id / task_id of the line
    reference: list[ToolCall] | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # the line as read, for the round trip

    @property
    def key(self) -> str:
        """The store question the line is a run of: its group, else its question_id."""
        return self.group if self.group is not None else self.question_id


# -- reading -------------------------------------------------------------------------------------


def read_import_file(
    path: Path, notes: Notes | None = None, errors: ToolErrorRule = DEFAULT_TOOL_ERRORS
) -> list[ImportLine]:
    """Every line checked (JSON, fields, messages, tool_call ids) and cross-checked (one question
    text per question_id unless the line has a group, one group per question_id, one line per run)
    before anything is written; tool results read by `errors`."""
    return check_import_lines(read_jsonl(path), path, notes, errors)


def check_import_lines(
    entries: Iterable[tuple[int, str, Any]],
    path: Path | str,
    notes: Notes | None = None,
    errors: ToolErrorRule = DEFAULT_TOOL_ERRORS,
) -> list[ImportLine]:
    """`read_import_file` over (line number, "path:line", parsed value) entries from any source
    (a file, stdin read whole, a request body)."""
    notes = notes if notes is not None else Notes()
    lines: list[ImportLine] = []
    first_of: dict[str, ImportLine] = {}
    group_of: dict[str, tuple[str | None, int]] = {}
    run_line: dict[tuple[str, int], int] = {}
    group_line: dict[str, int] = {}
    for n, where, obj in entries:
        item = parse_line(obj, path, n, notes, errors)
        group, at = group_of.setdefault(item.question_id, (item.group, n))
        if group != item.group:
            raise BadInput(
                f"{where}: group_id: question_id {item.question_id!r} is in group {item.group!r} here "
                f"but in {group!r} on line {at}"
            )
        _check_namespaces(item, where, group_of, group_line)
        first = first_of.setdefault(item.key, item)
        if item.group is None and first.question != item.question:
            raise BadInput(
                f"{where}: question_id {item.question_id!r} has another question text than on line {first.line} "
                '(runs of one task whose opening words differ need a "group_id")'
            )
        key = (item.key, item.run)
        if key in run_line:
            what = f"question_id {item.question_id!r}" if item.group is None else f"group_id {item.group!r}"
            raise BadInput(f"{where}: {what} run {item.run} repeats line {run_line[key]}")
        run_line[key] = n
        lines.append(item)
    if not lines:
        raise BadInput(f"{path}: no trajectories in the file (one JSON object per line expected)")
    return lines


def _check_namespaces(
    item: ImportLine, where: str, group_of: dict[str, tuple[str | None, int]], group_line: dict[str, int]
) -> None:
    """A line's question is its group_id, else its question_id, so one name used as both by lines
    that are not in that group would merge unrelated questions: refused. (A group may carry the
    question_id of one of its own lines.)"""
    if item.group is not None:
        group_line.setdefault(item.group, item.line)
        owner = group_of.get(item.group)
        if owner is not None and owner[0] != item.group:
            raise BadInput(
                f"{where}: group_id: {item.group!r} is the question_id of line {owner[1]}, which is not in "
                "this group; one name would merge two questions: rename the group"
            )
    if item.question_id in group_line and item.group != item.question_id:
        raise BadInput(
            f"{where}: question_id: {item.question_id!r} is the group_id of line {group_line[item.question_id]}, "
            "and this line is not in that group; one name would merge two questions: rename one of them"
        )


def parse_line(
    obj: Any,
    path: Path | str,
    line: int,
    notes: Notes | None = None,
    errors: ToolErrorRule = DEFAULT_TOOL_ERRORS,
) -> ImportLine:
    """One line read and checked on its own."""
    where = f"{path}:{line}"
    notes = notes if notes is not None else Notes()
    if not isinstance(obj, dict):
        raise BadInput(f"{where}: expected a JSON object")
    extra = set(obj) - LINE_FIELDS - OPTIONAL_FIELDS
    if extra:
        raise BadInput(f'{where}: unknown field {sorted(extra)[0]!r}; put extra data under "meta"')
    qid, question, run = obj.get("question_id"), obj.get("question"), obj.get("run")
    if not isinstance(qid, str) or not qid.strip():
        raise BadInput(f"{where}: question_id: expected a non-empty string")
    if (
        "question" not in obj
        and (first := first_user_text(obj.get("messages"), f"{where}: messages")) is not None
    ):
        notes.repair("question_from_messages", f"{where}: question")
        question = first
    if not isinstance(question, str) or not question.strip():
        raise BadInput(f"{where}: question: expected a non-empty string")
    if not isinstance(run, int) or isinstance(run, bool) or not 0 <= run <= INT32_MAX:
        raise BadInput(f"{where}: run: expected an integer >= 0 and <= {INT32_MAX}, got {shown(run)}")
    label = obj.get("label")
    if label is not None and not isinstance(label, bool):
        raise BadInput(f"{where}: label: expected true, false or null, got {label!r}")
    group = _group(obj, where)
    meta = _meta(obj, where)
    status = one_of(meta.get("status", "ok"), STATUSES, f"{where}: meta.status")
    if "messages" not in obj:
        raise BadInput(f"{where}: messages: missing")
    trajectory, users = read_messages(obj["messages"], status, f"{where}: messages", notes, errors)
    reference = (
        _reference(obj["reference"], f"{where}: reference") if obj.get("reference") is not None else None
    )
    return ImportLine(
        line=line,
        question_id=qid,
        question=question,
        run=run,
        messages=obj["messages"],
        label=label,
        meta=meta,
        trajectory=trajectory,
        user_turns=users[1:],
        group=group,
        reference=reference,
        raw=obj,
    )


def _group(obj: dict[str, Any], where: str) -> str | None:
    """A line's group_id or task_id (the same name when it gives both)."""
    group = None
    for name in ("group_id", "task_id"):
        value = obj.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise BadInput(f"{where}: {name}: expected a non-empty string")
        if group is not None and value != group:
            raise BadInput(f"{where}: task_id {value!r} differs from group_id {group!r}; give one of them")
        group = value
    return group


def _meta(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """A line's meta (an object, {} when absent or null) with its stored numbers checked: those
    that land in INTEGER / DOUBLE columns."""
    meta = obj.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise BadInput(f"{where}: meta: expected an object")
    for key in ("prompt_tokens", "completion_tokens", "judge_prompt_tokens", "judge_completion_tokens"):
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= INT32_MAX:
            raise BadInput(
                f"{where}: meta.{key}: expected an integer from 0 to {INT32_MAX}, got {shown(value)}"
            )
    value = meta.get("latency_s")
    if value is not None and (
        not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= MAX_LATENCY_S
    ):
        raise BadInput(
            f"{where}: meta.latency_s: expected seconds from 0 to {MAX_LATENCY_S:g}, got {shown(value)}"
        )
    model = meta.get("judge_model")
    if model is not None and not isinstance(model, str):
        raise BadInput(f"{where}: meta.judge_model: expected the judge's model name, got {shown(model)}")
    return meta


def _reference(value: Any, where: str) -> list[ToolCall]:
    """A reference trajectory: a list of {"name", "arguments"} calls, or a message list."""
    if not isinstance(value, list):
        raise BadInput(f"{where}: expected a list of tool calls or of chat messages")
    if all(isinstance(c, dict) and "name" in c and set(c) <= {"name", "arguments", "group"} for c in value):
        calls = []
        for i, c in enumerate(value):
            name, args, group = c["name"], c.get("arguments", {}), c.get("group")
            if not isinstance(name, str) or not TOOL_NAME.match(name):
                raise BadInput(f"{where}[{i}].name: expected a tool name (letters, digits, _ . -)")
            if not isinstance(args, dict):
                raise BadInput(f"{where}[{i}].arguments: expected an object")
            if group is not None and (not isinstance(group, int) or isinstance(group, bool)):
                raise BadInput(f"{where}[{i}].group: expected an integer or null")
            calls.append(ToolCall(name=name, arguments=args, group=group))
        return calls
    # A reference written as messages may lack the question, call ids and tool results: only its
    # calls count, so nothing in it is a repair of the line (nor refused under --strict).
    messages = (
        value if first_user_text(value, where) else [{"role": "user", "content": "(reference)"}, *value]
    )
    return read_messages(messages, "ok", where, Notes())[0].calls


# -- writing -------------------------------------------------------------------------------------


def kept_entry(item: ImportLine, question_text: str) -> dict[str, Any]:
    """What a stored question's meta keeps of one of its lines, so that `run_to_record` gives the
    line back."""
    entry: dict[str, Any] = {"meta": item.meta}
    if item.user_turns:
        entry["user_turns"] = item.user_turns
    if item.question != question_text:
        entry["question"] = item.question
    if item.group is not None and item.question_id != item.key:
        entry["question_id"] = item.question_id
    if item.reference is not None:
        entry["reference"] = item.raw["reference"]
    # Keep the original messages unless the canonical form gives them back exactly.
    if trajectory_to_messages(item.question, item.trajectory) != item.messages:
        entry["messages"] = item.messages
    return entry


def run_to_record(question: Question, run: Run, label: bool | None = None) -> dict[str, Any]:
    """One import/export line for a stored run. Imported runs give back their original messages
    and meta; magv's own runs get canonical messages and their status and costs in meta."""
    info = question.meta.get("import", {})
    kept = info.get("runs", {}).get(str(run.run_index))
    if kept is not None:
        text = kept.get("question", question.text)
        messages = kept.get("messages") or trajectory_to_messages(text, run.trajectory)
        record = {
            "question_id": kept.get("question_id", info["question_id"]),
            "question": text,
            "run": run.run_index,
            "messages": messages,
            "label": label,
            "meta": kept.get("meta", {}),
        }
        if info.get("group_id") is not None:
            record["group_id"] = info["group_id"]
        if kept.get("reference") is not None:
            record["reference"] = kept["reference"]
        return record
    meta = {
        "status": run.trajectory.status,
        "prompt_tokens": run.prompt_tokens,
        "completion_tokens": run.completion_tokens,
        "latency_s": run.latency_s,
        "domain": question.domain,
        "origin": question.origin,
    }
    return {
        "question_id": question.id,
        "question": question.text,
        "run": run.run_index,
        "messages": trajectory_to_messages(question.text, run.trajectory),
        "label": label,
        "meta": meta,
    }


def exported_question_id(store_id: str, meta: dict[str, Any]) -> str:
    """The question_id (or group_id) the export lines of a stored question carry, which an
    alternate's `meta.parent_question_id` names: an imported question's original group_id or
    question_id (see `run_to_record`), magv's own question's store id."""
    info = meta.get("import")
    if not info:
        return store_id
    return info.get("group_id") or info["question_id"]
