"""Chat messages <-> trajectories: the OpenAI and LangChain message forms read into a `Trajectory`,
and a trajectory written back as canonical OpenAI messages.

`messages` is an OpenAI chat-completions list or a list of LangChain message dicts (`type`
human / ai / tool / system, `tool_calls` of `{"name", "args", "id"}`). The trajectory is every tool
call in order with its tool message as result (the calls of one assistant message form one
parallel group); the agent's last text is the response, also when the customer or a tool speaks
after it. Which tool results are errors is a `ToolErrorRule` (magv.definitions; default: a JSON
"error" or text that starts with "Error"). What real logs do that is not strictly well-formed (a
call id used again once its call has a result, a call without an id, a call that never got a
result, a tool message without an id) is repaired and counted in `Notes`, or refused under
`strict`.

Every reader of messages uses this module: the import file format (magv.interchange), `magv verify
score --input`, the service's payloads, and a user's agent's returned messages
(magv.agents.external).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, get_args

from magv.definitions import DEFAULT_TOOL_ERRORS, ToolErrorRule
from magv.errors import BadInput
from magv.jsonl import strict_loads
from magv.models import Step, ToolCall, Trajectory, TrajectoryStatus

ROLES = {"system", "developer", "user", "assistant", "tool"}
LANGCHAIN_TYPES = {"human": "user", "ai": "assistant", "tool": "tool", "system": "system"}
STATUSES = set(get_args(TrajectoryStatus))
TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")

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


def shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut short when long."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def one_of(value: Any, allowed: Iterable[str], where: str, what: str = "one of") -> str:
    """`value` if it is one of the `allowed` names; a list or object there is a BadInput like any
    other wrong value (membership tests of unhashable values raise TypeError)."""
    allowed = list(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise BadInput(f"{where}: expected {what} {', '.join(sorted(allowed))}, got {shown(value)}")
    return value


# -- messages -> trajectory ----------------------------------------------------------------------


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


def first_user_text(messages: Any, where: str = "messages") -> str | None:
    """The text of the first user message with words in it, if any (no error for a malformed
    list: the full reading reports those)."""
    for i, m in enumerate(messages if isinstance(messages, list) else []):
        if isinstance(m, dict) and (
            m.get("role") == "user" or ("role" not in m and m.get("type") == "human")
        ):
            text = _text(m.get("content"), f"{where}[{i}]")
            if text and text.strip():
                return text
    return None


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
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise BadInput(f"{at}.name: expected a tool name (letters, digits, _ . -)")
        if not isinstance(args, dict):
            raise BadInput(f"{at}.args: expected an object, got {type(args).__name__}")
        return _Call(call_id or None, name, args)
    fn = tc.get("function")
    if tc.get("type", "function") != "function":
        raise BadInput(f'{at}.type: expected "function", got {tc.get("type")!r}')
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not TOOL_NAME.match(fn["name"]):
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


@dataclass
class _Steps:
    """The tool steps of a conversation as they are read: each call waits for its tool message by
    id. A call without an id is keyed by its place, a tuple, which no id read from JSON (a string)
    can equal."""

    notes: Notes
    errors: ToolErrorRule
    steps: list[Step] = field(default_factory=list)
    # call id -> index of its step awaiting its tool message (insertion order = age)
    pending: dict[str | tuple[int, int], int] = field(default_factory=dict)
    answered: set[str | tuple[int, int]] = field(default_factory=set)
    places: list[str] = field(default_factory=list)  # where each call is, for messages about it
    group: int = 0

    def calls(self, msg: _Message, i: int, at: str) -> None:
        """An assistant message's calls, one parallel group when there are several."""
        parallel = len(msg.calls) > 1
        if parallel:
            self.notes.count("parallel_groups", at)
        for j, call in enumerate(msg.calls):
            cat = f"{at}.tool_calls[{j}].id"
            call_id: str | tuple[int, int] | None = call.id
            if call_id is None:
                self.notes.repair("missing_call_id", cat)
                call_id = (i, j)
            elif call_id in self.pending:
                raise BadInput(
                    f"{cat}: {call_id!r} is used by an earlier tool call still awaiting its result"
                )
            elif call_id in self.answered:
                self.notes.repair("reused_call_id", cat)
                self.answered.discard(call_id)
            self.pending[call_id] = len(self.steps)
            self.places.append(f"{at}.tool_calls[{j}]")
            call_ = ToolCall(name=call.name, arguments=call.arguments, group=self.group if parallel else None)
            self.steps.append(Step(call=call_))
        self.group += parallel

    def result(self, msg: _Message, at: str) -> None:
        """A tool message: the result of the call it names, else of the oldest call waiting."""
        call_id: str | tuple[int, int] | None = msg.tool_call_id
        if call_id is None:
            if not self.pending:
                raise BadInput(f"{at}.tool_call_id: missing, and no tool call is awaiting its result")
            self.notes.repair("tool_result_by_order", f"{at}.tool_call_id")
            call_id = next(iter(self.pending))
        elif call_id not in self.pending:
            known = ", ".join(k for k in self.pending if isinstance(k, str)) or "none pending"
            raise BadInput(
                f"{at}.tool_call_id: {call_id!r} does not match a tool call awaiting its result ({known})"
            )
        step = self.steps[self.pending.pop(call_id)]
        step.result, step.error = _tool_result(msg.content, f"{at}.content", self.errors)
        if step.error is not None:
            self.notes.count("tool_errors", f"{at}.content")
        self.answered.add(call_id)

    def finish(self) -> list[Step]:
        for index in self.pending.values():
            self.notes.repair("call_without_result", self.places[index])
        return self.steps


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
    reading = _Steps(notes, errors)
    users: list[str] = []
    for i, msg in enumerate(parsed):
        if msg.role == "user":
            users.append(msg.content or "")
        elif msg.role == "assistant" and msg.calls:
            reading.calls(msg, i, f"{where}[{i}]")
        elif msg.role == "tool":
            reading.result(msg, f"{where}[{i}]")
    steps = reading.finish()
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


# -- trajectory -> messages ----------------------------------------------------------------------


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
        group = _parallel_group(steps, i)
        # words said before calls go with them: a text message followed by calls would read as an
        # unusable reply
        words = None if said or i != trajectory.response_at else trajectory.response
        said = said or words is not None
        messages.extend(_group_messages(steps, group, words))
        i += len(group)
    if not said:
        messages.append({"role": "assistant", "content": trajectory.response})
    return messages


def _parallel_group(steps: list[Step], i: int) -> list[int]:
    """The indices of the tool steps from `i` on that share step i's parallel group."""
    group = [i]
    first = steps[i].call
    assert first is not None
    while (
        first.group is not None
        and i + len(group) < len(steps)
        and (nxt := steps[i + len(group)].call) is not None
        and steps[i + len(group)].kind == "tool"
        and nxt.group == first.group
    ):
        group.append(i + len(group))
    return group


def _group_messages(steps: list[Step], group: list[int], words: str | None) -> list[dict[str, Any]]:
    """One assistant message with a group's calls (and `words`), then a tool message per call."""
    calls = []
    for k in group:
        call = steps[k].call
        assert call is not None
        arguments = json.dumps(call.arguments, ensure_ascii=False)
        calls.append(
            {"id": f"call_{k}", "type": "function", "function": {"name": call.name, "arguments": arguments}}
        )
    messages: list[dict[str, Any]] = [{"role": "assistant", "content": words, "tool_calls": calls}]
    for k in group:
        s = steps[k]
        content = json.dumps({"error": s.error} if s.error else s.result, ensure_ascii=False)
        messages.append({"role": "tool", "tool_call_id": f"call_{k}", "content": content})
    return messages
