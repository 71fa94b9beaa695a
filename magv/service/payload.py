"""What `POST /v1/verify` accepts: OpenAI chat messages of one trajectory, or a batch, each with
optional sibling runs. Messages are read by magv.messages, as `magv import trajectories`
reads them, so a trajectory the service accepts imports the same way.

    {"messages": [...], "id": "...", "group": "...", "siblings": [[...], ...], "status": "ok"}
    {"trajectories": [{"messages": [...], ...}, ...]}

Trajectories of one request with the same `group` are siblings of each other (and all scored);
`siblings` are more runs of the same question given as context only (not scored).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from magv.definitions import DEFAULT_TOOL_ERRORS, ToolErrorRule
from magv.errors import BadInput
from magv.jsonl import strict_loads
from magv.messages import STATUSES, Notes, one_of, read_messages
from magv.models import Trajectory

ITEM_FIELDS = ("messages", "id", "group", "siblings", "status")
MAX_SIBLINGS = 32


class PayloadError(BadInput):
    """A request the service refuses: HTTP `status`, the `field` at fault, what was expected."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"field": self.field, "message": self.message}}


@dataclass
class RequestRun:
    """One run of a scoring request: its messages as sent, the trajectory read from them and its
    question (the first user turn)."""

    messages: list[dict[str, Any]]
    trajectory: Trajectory
    question: str


@dataclass
class Entry:
    """One trajectory to score, with its sibling runs (context only)."""

    index: int
    id: str | None
    group: str | None
    run: RequestRun
    siblings: list[RequestRun] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, Any]:
        """The sibling group the entry's runs belong to: its `group`, else the entry alone."""
        return ("group", self.group) if self.group is not None else ("entry", self.index)


def _field_error(exc: BadInput) -> PayloadError:
    # The importer's messages start with the field they are about: "messages[2].role: expected ...".
    text = str(exc)
    where, sep, rest = text.partition(": ")
    return PayloadError(422, where, rest) if sep else PayloadError(422, "body", text)


def _run(messages: Any, status: str, where: str, errors: ToolErrorRule) -> RequestRun:
    try:
        trajectory, users = read_messages(messages, status, where, Notes(), errors)
    except BadInput as exc:
        raise _field_error(exc) from None
    return RequestRun(messages, trajectory, users[0])


def _text_field(item: dict[str, Any], name: str, where: str) -> str | None:
    value = item.get(name)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise PayloadError(422, f"{where}{name}", "expected a non-empty string")
    return value


def _entry(item: Any, index: int, where: str, errors: ToolErrorRule) -> Entry:
    if not isinstance(item, dict):
        raise PayloadError(422, where.rstrip(".") or "body", 'expected an object with "messages"')
    extra = sorted(set(item) - set(ITEM_FIELDS))
    if extra:
        raise PayloadError(
            422, f"{where}{extra[0]}", f"unknown field; expected one of {', '.join(ITEM_FIELDS)}"
        )
    if "messages" not in item:
        raise PayloadError(422, f"{where}messages", "missing (an OpenAI chat-completions message list)")
    try:
        status = one_of(item.get("status", "ok"), STATUSES, f"{where}status")
    except BadInput as exc:
        raise _field_error(exc) from None
    siblings = item.get("siblings") or []
    if not isinstance(siblings, list):
        raise PayloadError(422, f"{where}siblings", "expected a list of message lists")
    if len(siblings) > MAX_SIBLINGS:
        raise PayloadError(
            422, f"{where}siblings", f"at most {MAX_SIBLINGS} sibling runs, got {len(siblings)}"
        )
    return Entry(
        index=index,
        id=_text_field(item, "id", where),
        group=_text_field(item, "group", where),
        run=_run(item["messages"], status, f"{where}messages", errors),
        siblings=[_run(s, "ok", f"{where}siblings[{j}]", errors) for j, s in enumerate(siblings)],
    )


def parse_request(
    body: bytes, max_trajectories: int, errors: ToolErrorRule = DEFAULT_TOOL_ERRORS
) -> tuple[list[Entry], bool]:
    """(entries, whether the request was a batch); PayloadError names the field at fault. Tool
    results are read by `errors`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError(400, "body", "not UTF-8 text") from None
    try:
        obj = strict_loads(text, "body")
    except json.JSONDecodeError as exc:
        raise PayloadError(
            400, "body", f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except BadInput as exc:
        raise _field_error(exc) from None
    if not isinstance(obj, dict):
        raise PayloadError(400, "body", 'expected a JSON object with "messages" or "trajectories"')
    if "trajectories" not in obj:
        return [_entry(obj, 0, "", errors)], False
    extra = sorted(set(obj) - {"trajectories"})
    if extra:
        raise PayloadError(
            422, extra[0], 'unknown field beside "trajectories" (give each trajectory its own)'
        )
    items = obj["trajectories"]
    if not isinstance(items, list) or not items:
        raise PayloadError(422, "trajectories", "expected a non-empty list of trajectories")
    if len(items) > max_trajectories:
        raise PayloadError(413, "trajectories", f"at most {max_trajectories} per request, got {len(items)}")
    return [_entry(item, i, f"trajectories[{i}].", errors) for i, item in enumerate(items)], True
