"""Import trajectories produced elsewhere (production logs, other agents, benchmarks).

One JSON object per line (the same format `magv export --format jsonl` writes; docs/export.md
describes every field):

    {"question_id": str, "question": str, "run": int, "messages": [...], "label": true|false|null,
     "meta": {...}, "group_id": str, "reference": [...]}

`messages` is an OpenAI chat-completions list or a list of LangChain message dicts (`type`
human / ai / tool / system, `tool_calls` of `{"name", "args", "id"}`). The trajectory is every tool
call in order with its tool message as result (the calls of one assistant message form one
parallel group); the agent's last text is the response, also when the customer or a tool speaks
after it. Which tool results are errors is a `ToolErrorRule` (magv.definitions; default: a JSON
"error" or text that starts with "Error"); `tools` (magv.verify.toolspec) name the calls that
change data, kept with each question for the features. What real logs do that is not strictly
well-formed (a call id used again once its call has a result, a call without an id, a call that
never got a result, a tool message without an id, no "question" field) is repaired, counted in
`ImportResult.normalised` and refused instead under `strict`. `group_id` (or `task_id`) gathers
runs of one task whose opening words differ (a simulated user); `reference` (a list of calls or of
messages) labels the run by matching. A line whose `meta.origin` is "alternate" is a run of an
alternate question of the base question `meta.parent_question_id` (a question_id or group_id of the
file, or one imported before); the link is restored, an unknown base refused. A line whose
`meta.judge_correct` is true or false gives its run a judge verdict (`meta.judge_model`, else
"judge"; its tokens `meta.judge_prompt_tokens` / `meta.judge_completion_tokens`, 0 when absent), as
`magv export` writes them, so a replay of the cascade counts what the judge cost.

The whole file is checked before anything is written, then everything is written in one
transaction. A run already stored with other content is refused (or, with `replace`, replaced
with its label and everything derived from it), never half merged.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from magv.definitions import DEFAULT_TOOL_ERRORS, ToolErrorRule
from magv.errors import BadInput
from magv.jsonl import read_jsonl, strict_loads
from magv.mct import most_common_trajectory as most_common
from magv.models import JudgeVerdict, Label, Question, Run, Step, ToolCall, Trajectory, canonical_json
from magv.verify.labels import MATCH_MODES, arg_mode, match, match_detail, parse_overrides
from magv.verify.toolspec import LogTools, domain_tools

DEFAULT_DOMAIN = "imported"
# Where an imported question keeps the names of the tools of its log that change data.
WRITE_TOOLS_KEY = "write_tools"
LINE_FIELDS = {"question_id", "question", "run", "messages", "label", "meta"}  # what export writes
OPTIONAL_FIELDS = {"group_id", "task_id", "reference"}
ROLES = {"system", "developer", "user", "assistant", "tool"}
LANGCHAIN_TYPES = {"human": "user", "ai": "assistant", "tool": "tool", "system": "system"}
STATUSES = {"ok", "max_steps", "llm_error"}
_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")

# What a normalisation does, as the summary says it; `strict` refuses each of these instead.
REPAIRS = {
    "reused_call_id": "a tool call id used again after its earlier call got its result",
    "missing_call_id": "a tool call without an id (one was assigned)",
    "tool_result_by_order": "a tool message without tool_call_id (given to the oldest call waiting)",
    "call_without_result": "a tool call that never got a tool message (kept as a step without result)",
    "question_from_messages": 'no "question" field (the first user message was taken)',
}
# Accepted input forms, counted for the summary but never refused.
FORMS = {
    "langchain_messages": "messages in LangChain dict form",
    "parallel_groups": "assistant messages with several tool calls (kept as parallel groups)",
    "extra_user_turns": "user messages after the first (kept in order)",
    "tool_errors": "tool results read as errors (magv.definitions.ToolErrorRule)",
    "response_before_end": "responses taken from the agent's last words before the end (the customer or a tool "
    "spoke last)",
}


class Notes:
    """Counts of the normalisations of a file, with the first place each was seen."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    def repair(self, kind: str, where: str) -> None:
        if self.strict:
            raise BadInput(f"{where}: {REPAIRS[kind]}; refused under --strict")
        self.count(kind, where)

    def count(self, kind: str, where: str, n: int = 1) -> None:
        self.counts[kind] += n
        self.first.setdefault(kind, where)

    def summary(self) -> dict[str, int]:
        return {k: self.counts[k] for k in (*REPAIRS, *FORMS) if self.counts[k]}


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


@dataclass
class ImportResult:
    lines: int
    questions: int
    runs: int
    labels: int
    mct: int
    skipped_runs: int
    question_ids: dict[str, str]  # the file's question_id (and group_id) -> the store's id
    normalised: dict[str, int] = field(default_factory=dict)
    first_seen: dict[str, str] = field(default_factory=dict)  # normalisation -> "file:line: field"
    replaced_runs: int = 0
    reference_labels: int = 0
    alternates: int = 0  # questions of the file that are alternates of a base question
    judge_verdicts: int = 0  # verdicts restored from `meta.judge_correct`
    tools: dict[str, Any] = field(default_factory=dict)  # LogTools.summary of the file's calls

    def as_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "questions": self.questions, "runs": self.runs, "labels": self.labels,
                "mct": self.mct, "skipped_runs": self.skipped_runs, "replaced_runs": self.replaced_runs,
                "reference_labels": self.reference_labels, "alternates": self.alternates,
                "judge_verdicts": self.judge_verdicts, "tools": self.tools,
                "normalised": self.normalised,
                "first_seen": self.first_seen}  # fmt: skip


# -- messages <-> trajectory ---------------------------------------------------------------------


def _text(content: Any, where: str) -> str | None:
    """Text of an OpenAI message content: a string, null, or a list of content parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise BadInput(f'{where}.content[{i}]: expected a content part {{"type": ..., ...}}')
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise BadInput(f'{where}.content[{i}]: a "text" part needs "text": string')
                parts.append(part["text"])
        return "".join(parts)
    raise BadInput(f"{where}.content: expected a string, null or a list of content parts")


def _tool_result(
    content: str | None, where: str = "content", errors: ToolErrorRule = DEFAULT_TOOL_ERRORS
) -> tuple[Any, str | None]:
    """(result, error) of a tool message: JSON if it parses; whether it is an error is `errors`'
    call (magv.definitions). An error that is the whole message ({"error": msg} alone, or text)
    keeps no result. JSON that magv could not write back (NaN, Infinity, a lone surrogate) is
    refused."""
    if content is None:
        return None, None
    try:
        value = strict_loads(content, where)
    except json.JSONDecodeError:
        value = content
    error = errors.error_of(content, value)
    if error is not None and (
        isinstance(value, str) or (isinstance(value, dict) and set(value) == {"error"})
    ):
        return None, error
    return value, error


@dataclass
class _Call:
    id: str | None
    name: str
    arguments: dict[str, Any]


@dataclass
class _Message:
    role: str
    content: str | None
    calls: list[_Call]
    tool_call_id: str | None = None


def one_of(value: Any, allowed: Iterable[str], where: str, what: str = "one of") -> str:
    """`value` if it is one of the `allowed` names; a list or object there is a BadInput like any
    other wrong value (membership tests of unhashable values raise TypeError)."""
    allowed = list(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise BadInput(f"{where}: expected {what} {', '.join(sorted(allowed))}, got {_shown(value)}")
    return value


def _role(msg: dict[str, Any], at: str, notes: Notes) -> str:
    if "role" in msg or "type" not in msg:
        return one_of(msg.get("role"), ROLES, f"{at}.role")
    kind = one_of(msg["type"], LANGCHAIN_TYPES, f"{at}.type", "a LangChain message type:")
    notes.count("langchain_messages", at)
    return LANGCHAIN_TYPES[kind]


def _parse_call(tc: Any, at: str) -> _Call:
    """An OpenAI tool call ({"id", "type": "function", "function": {"name", "arguments": str}}) or a
    LangChain one ({"name", "args": {...}, "id"})."""
    if not isinstance(tc, dict):
        raise BadInput(f"{at}: expected a tool call object")
    call_id = tc.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise BadInput(f"{at}.id: expected a string, got {type(call_id).__name__}")
    if "function" not in tc and "name" in tc:  # LangChain
        if tc.get("type", "tool_call") not in ("tool_call", "function"):
            raise BadInput(f'{at}.type: expected "tool_call", got {tc.get("type")!r}')
        name, args = tc["name"], tc.get("args", {})
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise BadInput(f"{at}.name: expected a tool name (letters, digits, _ . -)")
        if not isinstance(args, dict):
            raise BadInput(f"{at}.args: expected an object, got {type(args).__name__}")
        return _Call(call_id or None, name, args)
    fn = tc.get("function")
    if tc.get("type", "function") != "function":
        raise BadInput(f'{at}.type: expected "function", got {tc.get("type")!r}')
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not _TOOL_NAME.match(fn["name"]):
        raise BadInput(f"{at}.function.name: expected a tool name (letters, digits, _ . -)")
    raw = fn.get("arguments")
    if not isinstance(raw, str):
        raise BadInput(
            f"{at}.function.arguments: expected a JSON string (OpenAI format), got {type(raw).__name__}"
        )
    try:
        args = strict_loads(raw, f"{at}.function.arguments") if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise BadInput(f"{at}.function.arguments: not valid JSON: {exc.msg}") from None
    if not isinstance(args, dict):
        raise BadInput(f"{at}.function.arguments: expected a JSON object")
    return _Call(call_id or None, fn["name"], args)


def _message(msg: Any, at: str, notes: Notes) -> _Message:
    if not isinstance(msg, dict):
        raise BadInput(f"{at}: expected an object with a role")
    role = _role(msg, at, notes)
    content = _text(msg.get("content"), at)
    if role in ("system", "developer", "user"):
        if content is None:
            raise BadInput(f"{at}.content: a {role} message needs content")
        return _Message(role, content, [])
    if role == "tool":
        call_id = msg.get("tool_call_id")
        if call_id is not None and not isinstance(call_id, str):
            raise BadInput(f"{at}.tool_call_id: expected a string, got {type(call_id).__name__}")
        return _Message(role, content, [], call_id or None)
    calls = msg.get("tool_calls")
    if calls is None:
        calls = []
    if not isinstance(calls, list):
        raise BadInput(f"{at}.tool_calls: expected a list")
    return _Message(role, content, [_parse_call(tc, f"{at}.tool_calls[{j}]") for j, tc in enumerate(calls)])


def messages_to_trajectory(
    messages: Any, status: str = "ok", where: str = "messages", notes: Notes | None = None
) -> tuple[Trajectory, list[str]]:
    """(trajectory, user turns after the first) of an OpenAI or LangChain message list; BadInput
    names the message and field that cannot be read. Repairs go to `notes` (see `REPAIRS`)."""
    trajectory, users = read_messages(messages, status, where, notes if notes is not None else Notes())
    return trajectory, users[1:]


def read_messages(
    messages: Any, status: str, where: str, notes: Notes, errors: ToolErrorRule = DEFAULT_TOOL_ERRORS
) -> tuple[Trajectory, list[str]]:
    """(trajectory, every user turn in order) of a message list; `errors` says which tool results
    are errors (counted in `notes` as "tool_errors")."""
    if not isinstance(messages, list) or not messages:
        raise BadInput(f"{where}: expected a non-empty list of chat messages")
    parsed = [_message(m, f"{where}[{i}]", notes) for i, m in enumerate(messages)]
    steps: list[Step] = []
    # call id -> step index awaiting its tool message (insertion = age); a call without an id is
    # keyed by its place, a tuple, which no id read from JSON (a string) can equal
    pending: dict[str | tuple[int, int], int] = {}
    answered: set[str | tuple[int, int]] = set()
    places: list[str] = []  # where each call is, for messages about it
    users: list[str] = []
    group = 0
    for i, msg in enumerate(parsed):
        at = f"{where}[{i}]"
        if msg.role == "user":
            users.append(msg.content or "")
        elif msg.role == "assistant" and msg.calls:
            parallel = len(msg.calls) > 1
            if parallel:
                notes.count("parallel_groups", at)
            for j, call in enumerate(msg.calls):
                cat = f"{at}.tool_calls[{j}].id"
                call_id = call.id
                if call_id is None:
                    notes.repair("missing_call_id", cat)
                    call_id = (i, j)
                elif call_id in pending:
                    raise BadInput(
                        f"{cat}: {call_id!r} is used by an earlier tool call still awaiting its result"
                    )
                elif call_id in answered:
                    notes.repair("reused_call_id", cat)
                    answered.discard(call_id)
                pending[call_id] = len(steps)
                places.append(f"{at}.tool_calls[{j}]")
                steps.append(Step(call=ToolCall(name=call.name, arguments=call.arguments,
                                                group=group if parallel else None)))  # fmt: skip
            group += parallel
        elif msg.role == "tool":
            call_id = msg.tool_call_id
            if call_id is None:
                if not pending:
                    raise BadInput(f"{at}.tool_call_id: missing, and no tool call is awaiting its result")
                notes.repair("tool_result_by_order", f"{at}.tool_call_id")
                call_id = next(iter(pending))
            elif call_id not in pending:
                known = ", ".join(k for k in pending if isinstance(k, str)) or "none pending"
                raise BadInput(
                    f"{at}.tool_call_id: {call_id!r} does not match a tool call awaiting its result ({known})"
                )
            step = steps[pending.pop(call_id)]
            step.result, step.error = _tool_result(msg.content, f"{at}.content", errors)
            if step.error is not None:
                notes.count("tool_errors", f"{at}.content")
            answered.add(call_id)
    for index in pending.values():
        notes.repair("call_without_result", places[index])
    if not users:
        raise BadInput(f"{where}: no user message (the question)")
    if len(users) > 1:
        notes.count("extra_user_turns", where, len(users) - 1)
    response, at = _final_text(parsed, status)
    if response is not None and at < len(parsed) - 1:
        notes.count("response_before_end", f"{where}[{at}]")
    steps = _with_invalid(parsed, steps, status)
    # the calls said after the agent's last words (those beside them come after them, too)
    after = sum(len(m.calls) for m in parsed[at:]) if response is not None else 0
    response_at = len(steps) - after if after else None
    return Trajectory(steps=steps, response=response, status=status, response_at=response_at), users


def _final_text(parsed: list[_Message], status: str) -> tuple[str | None, int]:
    """(the agent's last words, the index of their message): the last assistant message with text
    (beside its calls, if any), also when the customer (a closing message) or a tool (a hand-off) speaks after
    it; (None, -1) when the run did not end well or the agent never spoke."""
    if status != "ok":
        return None, -1
    for i in range(len(parsed) - 1, -1, -1):
        msg = parsed[i]
        if msg.role == "assistant" and msg.content is not None and (not msg.calls or msg.content.strip()):
            return msg.content, i
    return None, -1


def _with_invalid(parsed: list[_Message], calls: list[Step], status: str) -> list[Step]:
    """The tool steps with an invalid step, at its place, for every assistant text the agent did not
    stop at and that was not a turn of the conversation (followed by another assistant message, or
    last when the run did not end well)."""
    out: list[Step] = []
    it = iter(calls)
    for i, msg in enumerate(parsed):
        if msg.role != "assistant":
            continue
        if msg.calls:
            out.extend(next(it) for _ in msg.calls)
            continue
        following = parsed[i + 1].role if i + 1 < len(parsed) else None
        final = following is None and status == "ok"
        if msg.content is not None and not final and following in ("assistant", None):
            out.append(Step(kind="invalid", raw=msg.content))
    return out


def trajectory_to_messages(question: str, trajectory: Trajectory) -> list[dict[str, Any]]:
    """The canonical OpenAI message list of a trajectory (what export writes for magv's own runs):
    one assistant message per parallel group of calls, the response where it was said."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    i = 0
    steps = trajectory.steps
    said = trajectory.response is None  # the response goes where it was said (`response_at`)
    while i < len(steps):
        step = steps[i]
        if not said and i == trajectory.response_at and (step.kind == "invalid" or step.call is None):
            messages.append({"role": "assistant", "content": trajectory.response})
            said = True
        if step.kind == "invalid" or step.call is None:
            messages.append({"role": "assistant", "content": step.raw or ""})
            i += 1
            continue
        group = [i]
        while (step.call.group is not None and i + len(group) < len(steps)
               and (nxt := steps[i + len(group)].call) is not None and steps[i + len(group)].kind == "tool"
               and nxt.group == step.call.group):  # fmt: skip
            group.append(i + len(group))
        calls = [{"id": f"call_{k}", "type": "function", "function": {
            "name": steps[k].call.name, "arguments": json.dumps(steps[k].call.arguments, ensure_ascii=False)}}
            for k in group]  # type: ignore[union-attr]  # fmt: skip
        # words said before calls go with them: a text message followed by calls would read as an
        # unusable reply
        words = None if said or i != trajectory.response_at else trajectory.response
        said = said or words is not None
        messages.append({"role": "assistant", "content": words, "tool_calls": calls})
        for k in group:
            s = steps[k]
            content = json.dumps({"error": s.error} if s.error else s.result, ensure_ascii=False)
            messages.append({"role": "tool", "tool_call_id": f"call_{k}", "content": content})
        i += len(group)
    if not said:
        messages.append({"role": "assistant", "content": trajectory.response})
    return messages


def run_to_record(question: Question, run: Run, label: bool | None = None) -> dict[str, Any]:
    """One import/export line for a stored run. Imported runs give back their original messages
    and meta; magv's own runs get canonical messages and their status and costs in meta."""
    info = question.meta.get("import", {})
    kept = info.get("runs", {}).get(str(run.run_index))
    if kept is not None:
        text = kept.get("question", question.text)
        messages = kept.get("messages") or trajectory_to_messages(text, run.trajectory)
        record = {"question_id": kept.get("question_id", info["question_id"]), "question": text,
                  "run": run.run_index, "messages": messages, "label": label, "meta": kept.get("meta", {})}  # fmt: skip
        if info.get("group_id") is not None:
            record["group_id"] = info["group_id"]
        if kept.get("reference") is not None:
            record["reference"] = kept["reference"]
        return record
    meta = {"status": run.trajectory.status, "prompt_tokens": run.prompt_tokens,
            "completion_tokens": run.completion_tokens, "latency_s": run.latency_s,
            "domain": question.domain, "origin": question.origin}  # fmt: skip
    return {"question_id": question.id, "question": question.text, "run": run.run_index,
            "messages": trajectory_to_messages(question.text, run.trajectory), "label": label, "meta": meta}  # fmt: skip


# -- the file ------------------------------------------------------------------------------------


def _first_user_text(messages: Any, where: str = "messages") -> str | None:
    for i, m in enumerate(messages if isinstance(messages, list) else []):
        if isinstance(m, dict) and (
            m.get("role") == "user" or ("role" not in m and m.get("type") == "human")
        ):
            text = _text(m.get("content"), f"{where}[{i}]")
            if text and text.strip():
                return text
    return None


def _reference(value: Any, where: str) -> list[ToolCall]:
    """A reference trajectory: a list of {"name", "arguments"} calls, or a message list."""
    if not isinstance(value, list):
        raise BadInput(f"{where}: expected a list of tool calls or of chat messages")
    if all(isinstance(c, dict) and "name" in c and set(c) <= {"name", "arguments", "group"} for c in value):
        calls = []
        for i, c in enumerate(value):
            name, args, group = c["name"], c.get("arguments", {}), c.get("group")
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
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
        value if _first_user_text(value, where) else [{"role": "user", "content": "(reference)"}, *value]
    )
    return read_messages(messages, "ok", where, Notes())[0].calls


def parse_line(
    obj: Any,
    path: Path | str,
    line: int,
    notes: Notes | None = None,
    errors: ToolErrorRule = DEFAULT_TOOL_ERRORS,
) -> ImportLine:
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
        and (first := _first_user_text(obj.get("messages"), f"{where}: messages")) is not None
    ):
        notes.repair("question_from_messages", f"{where}: question")
        question = first
    if not isinstance(question, str) or not question.strip():
        raise BadInput(f"{where}: question: expected a non-empty string")
    if not isinstance(run, int) or isinstance(run, bool) or not 0 <= run <= INT32_MAX:
        raise BadInput(f"{where}: run: expected an integer >= 0 and <= {INT32_MAX}, got {_shown(run)}")
    label = obj.get("label")
    if label is not None and not isinstance(label, bool):
        raise BadInput(f"{where}: label: expected true, false or null, got {label!r}")
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
    meta = obj.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise BadInput(f"{where}: meta: expected an object")
    _check_costs(meta, where)
    status = one_of(meta.get("status", "ok"), STATUSES, f"{where}: meta.status")
    if "messages" not in obj:
        raise BadInput(f"{where}: messages: missing")
    trajectory, users = read_messages(obj["messages"], status, f"{where}: messages", notes, errors)
    reference = (
        _reference(obj["reference"], f"{where}: reference") if obj.get("reference") is not None else None
    )
    return ImportLine(line=line, question_id=qid, question=question, run=run,
                      messages=obj["messages"], label=label, meta=meta, trajectory=trajectory,
                      user_turns=users[1:], group=group, reference=reference, raw=obj)  # fmt: skip


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


INT32_MAX = 2**31 - 1
MAX_LATENCY_S = 1e7  # ~4 months: anything above is a unit mistake, not a latency


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _check_costs(meta: dict[str, Any], where: str) -> None:
    """The numbers of meta that land in INTEGER / DOUBLE columns, checked where they enter."""
    for key in ("prompt_tokens", "completion_tokens", "judge_prompt_tokens", "judge_completion_tokens"):
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= INT32_MAX:
            raise BadInput(
                f"{where}: meta.{key}: expected an integer from 0 to {INT32_MAX}, got {_shown(value)}"
            )
    value = meta.get("latency_s")
    if value is not None and (
        not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= MAX_LATENCY_S
    ):
        raise BadInput(
            f"{where}: meta.latency_s: expected seconds from 0 to {MAX_LATENCY_S:g}, got {_shown(value)}"
        )
    model = meta.get("judge_model")
    if model is not None and not isinstance(model, str):
        raise BadInput(f"{where}: meta.judge_model: expected the judge's model name, got {_shown(model)}")


def _number(meta: dict[str, Any], key: str, kind: type) -> Any:
    value = meta.get(key)
    return kind(value) if isinstance(value, int | float) and not isinstance(value, bool) else kind(0)


def _kept(item: ImportLine, question_text: str) -> dict[str, Any]:
    """What the question's meta keeps of a line, so that export gives the line back."""
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


def exported_question_id(store_id: str, meta: dict[str, Any]) -> str:
    """The question_id (or group_id) the export lines of a stored question carry, which an
    alternate's `meta.parent_question_id` names: an imported question's original group_id or
    question_id (see `run_to_record`), magv's own question's store id."""
    info = meta.get("import")
    if not info:
        return store_id
    return info.get("group_id") or info["question_id"]


def _alternate_links(
    store: Any, by_key: dict[str, list[ImportLine]], ids: dict[str, str], stored_q: dict[str, Question],
    path: Path, domain: str,
) -> dict[str, tuple[str, str]]:  # fmt: skip
    """Store question key -> (parent's store id, parent's group_id) for the questions whose lines say
    `meta.origin` "alternate": `meta.parent_question_id` names a question_id or group_id of the file,
    or a question imported before into `domain`; anything else is refused."""
    key_of = {item.question_id: key for key, items in by_key.items() for item in items}
    wanted: dict[str, tuple[ImportLine, str]] = {}
    for key, items in by_key.items():
        alternate = [item.meta.get("origin") == "alternate" for item in items]
        if not any(alternate):
            continue
        if not all(alternate):
            other = items[alternate.index(False)]
            raise BadInput(
                f"{path}:{other.line}: meta.origin: {other.question_id!r} is an alternate on line "
                f"{items[alternate.index(True)].line} but not here; give every run of it the same origin"
            )
        parent = items[0].meta.get("parent_question_id")
        for item in items:
            named = item.meta.get("parent_question_id")
            if not isinstance(named, str) or not named.strip():
                raise BadInput(
                    f'{path}:{item.line}: meta.parent_question_id: an alternate (meta.origin "alternate") needs '
                    "the question_id of its base question, a string"
                )
            if named != parent:
                raise BadInput(
                    f"{path}:{item.line}: meta.parent_question_id: {named!r} differs from {parent!r} on line "
                    f"{items[0].line}; an alternate has one base question"
                )
        wanted[key] = (items[0], parent)
    outside = {p: Question.derive_id(domain, "import", p) for _, p in wanted.values() if p not in by_key
               and p not in key_of}  # fmt: skip
    found = {q.id: q for q in store.questions(ids=list(outside.values()))} if outside else {}
    links: dict[str, tuple[str, str]] = {}
    for key, (item, parent) in wanted.items():
        where = f"{path}:{item.line}: meta.parent_question_id"
        parent_key = parent if parent in by_key else key_of.get(parent)
        if parent_key is not None:
            if parent_key in wanted:
                raise BadInput(
                    f"{where}: {parent!r} is itself an alternate; an alternate's base is a base question"
                )
            old = stored_q.get(ids[parent_key])
            links[key] = (ids[parent_key], old.group_id if old is not None and old.group_id else parent_key)
            continue
        base = found.get(outside[parent])
        if base is None:
            raise BadInput(
                f"{where}: {parent!r} is not a question_id or group_id of this file nor a question imported "
                f"into domain {domain!r} before; import the base question with its alternates"
            )
        if base.origin == "alternate":
            raise BadInput(
                f"{where}: {parent!r} is itself an alternate; an alternate's base is a base question"
            )
        links[key] = (base.id, base.group_id or base.id)
    return links


def _judge_verdict(item: ImportLine, run_id: str, path: Path) -> JudgeVerdict | None:
    """The judge verdict a line's meta carries (a boolean `judge_correct`), else None."""
    meta = item.meta
    if not isinstance(meta.get("judge_correct"), bool):
        return None
    return JudgeVerdict(run_id=run_id, model=meta.get("judge_model") or "judge", correct=meta["judge_correct"],
                        reason=f"import:{path.name}:{item.line}",
                        prompt_tokens=_number(meta, "judge_prompt_tokens", int),
                        completion_tokens=_number(meta, "judge_completion_tokens", int))  # fmt: skip


def _dump(value: Any) -> str:
    return canonical_json(value.model_dump() if hasattr(value, "model_dump") else value)


def import_trajectories(
    store: Any,
    path: Path,
    domain: str = DEFAULT_DOMAIN,
    *,
    strict: bool = False,
    replace: bool = False,
    match_mode: str = "strict",
    arguments: bool | str = "exact",
    overrides: dict[str, Any] | None = None,
    tools: LogTools | None = None,
) -> ImportResult:
    """Import a file (see the module docstring). `strict` refuses what would be normalised;
    `replace` replaces stored runs whose content differs instead of refusing the file. A line's
    `reference` gives its label by `match` under `match_mode`, `arguments` and `overrides` unless the
    line has a label of its own. `tools` (default: the domain's) say which results are errors and
    which calls write."""
    tools = tools if tools is not None else domain_tools(domain)
    notes = Notes(strict)
    lines = read_import_file(path, notes, tools.errors)
    return import_lines(store, lines, path, domain, notes=notes, replace=replace, match_mode=match_mode,
                        arguments=arguments, overrides=overrides, tools=tools)  # fmt: skip


def import_lines(
    store: Any,
    lines: list[ImportLine],
    path: Path,
    domain: str = DEFAULT_DOMAIN,
    *,
    notes: Notes | None = None,
    replace: bool = False,
    match_mode: str = "strict",
    arguments: bool | str = "exact",
    overrides: dict[str, Any] | None = None,
    tools: LogTools | None = None,
) -> ImportResult:
    """Write checked lines (`check_import_lines`) as `import_trajectories` does; `path` names their
    source in labels, meta and messages. The write tools of `tools` are kept with each question
    (meta.import.write_tools), so its features compare those calls."""
    if not isinstance(domain, str) or not domain.strip():
        raise BadInput(f"domain: expected a name, got {domain!r}")
    if match_mode not in MATCH_MODES:
        raise BadInput(f"match mode {match_mode!r}: expected one of {', '.join(MATCH_MODES)}")
    arg_mode(arguments)
    parse_overrides(overrides)
    notes = notes if notes is not None else Notes()
    by_key: dict[str, list[ImportLine]] = {}
    for item in lines:
        by_key.setdefault(item.key, []).append(item)

    detail = match_detail(match_mode, arguments, overrides).replace("gold:", "reference:")
    ids = {k: Question.derive_id(domain, "import", k) for k in by_key}
    stored_q = {q.id: q for q in store.questions(ids=list(ids.values()))}
    stored_runs = {r.id: r for r in store.runs(question_ids=list(ids.values()))}
    stored_labels = {lb.run_id: lb.correct for lb in store.labels() if lb.source == "import"}

    links = _alternate_links(store, by_key, ids, stored_q, path, domain)

    questions, updated, runs, replaced, labels, verdicts = [], [], [], [], [], []
    question_ids: dict[str, str] = {}
    n_reference = 0
    for key, items in by_key.items():
        store_id = ids[key]
        text = items[0].question
        old = stored_q.get(store_id)
        if old is not None and old.text != text and items[0].group is None and not replace:
            raise BadInput(
                f"{path}:{items[0].line}: question_id {items[0].question_id!r} is already stored with another "
                "question text; use --replace to replace it and its runs"
            )
        if (
            old is not None
            and not replace
            and ("group_id" in old.meta.get("import", {})) != (items[0].group is not None)
        ):
            stored, here = (
                ("group_id", "question_id") if items[0].group is None else ("question_id", "group_id")
            )
            raise BadInput(
                f"{path}:{items[0].line}: {here}: {key!r} is stored as the {stored} of another question "
                f"(domain {domain!r}); one name would merge two questions: rename it, or use --replace"
            )
        origin, parent_id, group_id = ("alternate", *links[key]) if key in links else ("import", None, key)
        if old is not None and (old.origin, old.parent_id) != (origin, parent_id) and not replace:
            raise BadInput(
                f"{path}:{items[0].line}: meta.origin: question_id {items[0].question_id!r} is already stored as "
                f"an {old.origin} question{f' of {old.parent_id}' if old.parent_id else ''}, here it is "
                f"{'an alternate of ' + repr(links[key][0]) if key in links else 'a base question'}; "
                "use --replace to replace it and its runs"
            )
        kept: dict[str, Any] = {}
        for item in items:
            question_ids.setdefault(item.question_id, store_id)
            entry = _kept(item, old.text if old is not None and not replace else text)
            kept[str(item.run)] = entry
            run = Run(
                id=Run.derive_id(store_id, item.run), question_id=store_id, run_index=item.run,
                trajectory=item.trajectory, prompt_tokens=_number(item.meta, "prompt_tokens", int),
                completion_tokens=_number(item.meta, "completion_tokens", int),
                latency_s=_number(item.meta, "latency_s", float),
            )  # fmt: skip
            if (verdict := _judge_verdict(item, run.id, path)) is not None:
                verdicts.append(verdict)
            label, how = item.label, f"import:{path.name}:{item.line}"
            if label is None and item.reference is not None:
                label = match(item.trajectory.calls, item.reference, match_mode, arguments, overrides)
                how = f"{detail}:{path.name}:{item.line}"
                n_reference += 1
            before = stored_runs.get(run.id)
            if before is not None:
                old_entry = ((old.meta if old else {}).get("import", {}).get("runs", {})).get(str(item.run))
                same = (_dump(before.trajectory) == _dump(run.trajectory) and _dump(old_entry) == _dump(entry)
                        and (label is None or stored_labels.get(run.id) == label))  # fmt: skip
                if same:
                    continue
                if not replace:
                    what = "group_id" if item.group is not None else "question_id"
                    raise BadInput(
                        f"{path}:{item.line}: {what} {item.key!r} run {item.run} is already stored with other "
                        "content (trajectory, meta or label); use --replace to replace the run, its label "
                        "and what was derived from it"
                    )
                replaced.append(run)
            else:
                runs.append(run)
            if label is not None:
                labels.append(Label(run_id=run.id, source="import", correct=label, detail=how))
        group = items[0].group
        info = {"question_id": items[0].question_id, "file": path.name, "runs": kept}
        if group is not None:
            info["group_id"] = group
        if tools is not None and tools.writes:
            info[WRITE_TOOLS_KEY] = sorted(tools.writes)
        if old is None:
            questions.append(Question(id=store_id, domain=domain, text=text, origin=origin, parent_id=parent_id,
                                      group_id=group_id, meta={"import": info}))  # fmt: skip
        else:
            merged = dict(old.meta.get("import", {}))
            merged["runs"] = {**merged.get("runs", {}), **kept}
            if WRITE_TOOLS_KEY in info:
                merged[WRITE_TOOLS_KEY] = info[WRITE_TOOLS_KEY]
            meta = {**old.meta, "import": merged}
            new_text = text if replace else old.text
            # a base question keeps the group it was stored with; an alternate follows its base's
            link = {"origin": origin, "parent_id": parent_id,
                    "group_id": group_id if key in links else old.group_id}  # fmt: skip
            if meta != old.meta or new_text != old.text or any(getattr(old, k) != v for k, v in link.items()):
                updated.append(old.model_copy(update={"meta": meta, "text": new_text, **link}))
        question_ids.setdefault(key, store_id)

    with store.transaction():
        n_questions = store.add_questions(questions)
        for q in updated:
            store.update_question(q)
        if replaced:
            store.replace_runs(replaced)
        n_runs = store.add_runs(runs)
        n_labels = store.add_labels(labels)
        # after the runs: a replaced run's verdicts went with it; a stored verdict stays
        n_verdicts = store.add_judge_verdicts(verdicts) if verdicts else 0
        stored: dict[str, list[Run]] = {}
        for r in store.runs(question_ids=list(ids.values())):
            stored.setdefault(r.question_id, []).append(r)
        mct_rows = [m for rs in stored.values() if (m := most_common(rs)) is not None]
        store.set_mct(mct_rows)
    return ImportResult(lines=len(lines), questions=n_questions, runs=n_runs, labels=n_labels,
                        mct=len(mct_rows), skipped_runs=len(lines) - n_runs - len(replaced),
                        question_ids=question_ids, normalised=notes.summary(),
                        first_seen={k: v for k, v in notes.first.items() if k in notes.summary()},
                        replaced_runs=len(replaced), reference_labels=n_reference,
                        alternates=len(links), judge_verdicts=n_verdicts,
                        tools=(tools or LogTools()).summary(n for x in lines for n in x.trajectory.tool_names()))  # fmt: skip
