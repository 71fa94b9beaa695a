"""Import trajectories produced elsewhere (production logs, other agents, benchmarks).

One JSON object per line (the same format `magv export --format jsonl` writes; docs/verifier.md
describes every field):

    {"question_id": str, "question": str, "run": int, "messages": [...], "label": true|false|null,
     "meta": {...}}

`messages` is an OpenAI chat-completions list. The trajectory is every tool call in order with its
tool message as result; the final assistant text is the response. The whole file is checked before
anything is written, then everything is written in one transaction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from magv.errors import BadInput
from magv.jsonl import read_jsonl, strict_loads
from magv.mct import most_common_trajectory as most_common
from magv.models import Label, Question, Run, Step, ToolCall, Trajectory

DEFAULT_DOMAIN = "imported"
LINE_FIELDS = {"question_id", "question", "run", "messages", "label", "meta"}
ROLES = {"system", "developer", "user", "assistant", "tool"}
STATUSES = {"ok", "max_steps", "llm_error"}
_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


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


@dataclass
class ImportResult:
    lines: int
    questions: int
    runs: int
    labels: int
    mct: int
    skipped_runs: int
    question_ids: dict[str, str]  # the file's question_id -> the store's id


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


def _tool_result(content: str | None, where: str = "content") -> tuple[Any, str | None]:
    """(result, error) of a tool message: JSON if it parses; {"error": msg} alone is a tool error.
    JSON that magv could not write back (NaN, Infinity, a lone surrogate) is refused."""
    if content is None:
        return None, None
    try:
        value = strict_loads(content, where)
    except json.JSONDecodeError:
        return content, None
    if isinstance(value, dict) and set(value) == {"error"} and isinstance(value["error"], str):
        return None, value["error"]
    return value, None


def messages_to_trajectory(
    messages: Any, status: str = "ok", where: str = "messages"
) -> tuple[Trajectory, list[str]]:
    """(trajectory, user turns after the first) of an OpenAI message list; BadInput names the
    message and field that is not in OpenAI format."""
    if not isinstance(messages, list) or not messages:
        raise BadInput(f"{where}: expected a non-empty list of chat messages")
    steps: list[Step] = []
    pending: dict[str, int] = {}  # tool_call id -> step index awaiting its tool message
    seen_ids: set[str] = set()
    texts: dict[int, str] = {}  # assistant messages without tool calls: index -> text
    users: list[str] = []
    order: list[tuple[str, int]] = []  # (role, index) for classifying assistant texts
    for i, msg in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(msg, dict):
            raise BadInput(f"{at}: expected an object with a role")
        role = msg.get("role")
        if role not in ROLES:
            raise BadInput(f"{at}.role: expected one of {', '.join(sorted(ROLES))}, got {role!r}")
        content = _text(msg.get("content"), at)
        order.append((role, i))
        if role in ("system", "developer", "user"):
            if content is None:
                raise BadInput(f"{at}.content: a {role} message needs content")
            if role == "user":
                users.append(content)
        elif role == "assistant":
            calls = msg.get("tool_calls")
            if calls is None or calls == []:
                if content is not None:
                    texts[i] = content
                continue
            if not isinstance(calls, list):
                raise BadInput(f"{at}.tool_calls: expected a list")
            for j, tc in enumerate(calls):
                steps.append(_parse_call(tc, f"{at}.tool_calls[{j}]", seen_ids, pending, len(steps)))
        else:  # tool
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in pending:
                known = ", ".join(sorted(pending)) or "none pending"
                raise BadInput(
                    f"{at}.tool_call_id: {call_id!r} does not match a tool call awaiting its result ({known})"
                )
            step = steps[pending.pop(call_id)]
            step.result, step.error = _tool_result(content, f"{at}.content")
    if pending:
        raise BadInput(f"{where}: tool_call id {sorted(pending)[0]!r} has no tool message with its result")
    if not users:
        raise BadInput(f"{where}: no user message (the question)")
    response = None
    last_assistant = max((i for r, i in order if r == "assistant"), default=None)
    final_steps: list[tuple[int, Step]] = []
    for i, text in texts.items():
        following = messages[i + 1]["role"] if i + 1 < len(messages) else None
        is_final = i == last_assistant and following is None
        if is_final and status == "ok":
            response = text
        elif following in ("assistant", None):
            # An assistant text the agent did not stop at: an unusable reply (an invalid step).
            final_steps.append((i, Step(kind="invalid", raw=text)))
    if final_steps:
        steps = _interleave(messages, steps, final_steps)
    return Trajectory(steps=steps, response=response, status=status), users[1:]


def _parse_call(tc: Any, at: str, seen: set[str], pending: dict[str, int], index: int) -> Step:
    if not isinstance(tc, dict):
        raise BadInput(f"{at}: expected a tool call object")
    call_id, fn = tc.get("id"), tc.get("function")
    if not isinstance(call_id, str) or not call_id:
        raise BadInput(f"{at}.id: expected a non-empty string")
    if call_id in seen:
        raise BadInput(f"{at}.id: {call_id!r} is used by an earlier tool call")
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
    seen.add(call_id)
    pending[call_id] = index
    return Step(call=ToolCall(name=fn["name"], arguments=args))


def _interleave(
    messages: list[dict[str, Any]], calls: list[Step], invalid: list[tuple[int, Step]]
) -> list[Step]:
    """Put invalid steps between the tool steps at the place their message had."""
    out: list[Step] = []
    it = iter(calls)
    marks = dict(invalid)
    for i, msg in enumerate(messages):
        if i in marks:
            out.append(marks[i])
        elif msg.get("role") == "assistant":
            out.extend(next(it) for _ in msg.get("tool_calls") or [])
    return out


def trajectory_to_messages(question: str, trajectory: Trajectory) -> list[dict[str, Any]]:
    """The canonical OpenAI message list of a trajectory (what export writes for magv's own runs)."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    for i, step in enumerate(trajectory.steps):
        if step.kind == "invalid" or step.call is None:
            messages.append({"role": "assistant", "content": step.raw or ""})
            continue
        call_id = f"call_{i}"
        content = json.dumps({"error": step.error} if step.error else step.result, ensure_ascii=False)
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function", "function": {
                "name": step.call.name, "arguments": json.dumps(step.call.arguments, ensure_ascii=False)}}]},
            {"role": "tool", "tool_call_id": call_id, "content": content},
        ]  # fmt: skip
    if trajectory.response is not None:
        messages.append({"role": "assistant", "content": trajectory.response})
    return messages


def run_to_record(question: Question, run: Run, label: bool | None = None) -> dict[str, Any]:
    """One import/export line for a stored run. Imported runs give back their original messages
    and meta; magv's own runs get canonical messages and their status and costs in meta."""
    info = question.meta.get("import", {})
    kept = info.get("runs", {}).get(str(run.run_index))
    if kept is not None:
        messages = kept.get("messages") or trajectory_to_messages(question.text, run.trajectory)
        return {"question_id": info["question_id"], "question": question.text, "run": run.run_index,
                "messages": messages, "label": label, "meta": kept.get("meta", {})}  # fmt: skip
    meta = {"status": run.trajectory.status, "prompt_tokens": run.prompt_tokens,
            "completion_tokens": run.completion_tokens, "latency_s": run.latency_s,
            "domain": question.domain, "origin": question.origin}  # fmt: skip
    return {"question_id": question.id, "question": question.text, "run": run.run_index,
            "messages": trajectory_to_messages(question.text, run.trajectory), "label": label, "meta": meta}  # fmt: skip


# -- the file ------------------------------------------------------------------------------------


def parse_line(obj: Any, path: Path | str, line: int) -> ImportLine:
    where = f"{path}:{line}"
    if not isinstance(obj, dict):
        raise BadInput(f"{where}: expected a JSON object")
    extra = set(obj) - LINE_FIELDS
    if extra:
        raise BadInput(f'{where}: unknown field {sorted(extra)[0]!r}; put extra data under "meta"')
    qid, question, run = obj.get("question_id"), obj.get("question"), obj.get("run")
    if not isinstance(qid, str) or not qid.strip():
        raise BadInput(f"{where}: question_id: expected a non-empty string")
    if not isinstance(question, str) or not question.strip():
        raise BadInput(f"{where}: question: expected a non-empty string")
    if not isinstance(run, int) or isinstance(run, bool) or not 0 <= run <= INT32_MAX:
        raise BadInput(f"{where}: run: expected an integer >= 0 and <= {INT32_MAX}, got {_shown(run)}")
    label = obj.get("label")
    if label is not None and not isinstance(label, bool):
        raise BadInput(f"{where}: label: expected true, false or null, got {label!r}")
    meta = obj.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise BadInput(f"{where}: meta: expected an object")
    _check_costs(meta, where)
    status = meta.get("status", "ok")
    if status not in STATUSES:
        raise BadInput(f"{where}: meta.status: expected one of {', '.join(sorted(STATUSES))}, got {status!r}")
    if "messages" not in obj:
        raise BadInput(f"{where}: messages: missing")
    trajectory, turns = messages_to_trajectory(obj["messages"], status, f"{where}: messages")
    return ImportLine(line=line, question_id=qid, question=question, run=run,
                      messages=obj["messages"], label=label, meta=meta, trajectory=trajectory,
                      user_turns=turns)  # fmt: skip


def read_import_file(path: Path) -> list[ImportLine]:
    """Every line checked (JSON, fields, OpenAI messages, tool_call ids) and cross-checked (one
    question text per question_id, one line per run) before anything is written."""
    lines: list[ImportLine] = []
    first_of: dict[str, ImportLine] = {}
    run_line: dict[tuple[str, int], int] = {}
    for n, where, obj in read_jsonl(path):
        item = parse_line(obj, path, n)
        first = first_of.setdefault(item.question_id, item)
        if first.question != item.question:
            raise BadInput(
                f"{where}: question_id {item.question_id!r} has another question text than on line {first.line}"
            )
        key = (item.question_id, item.run)
        if key in run_line:
            raise BadInput(
                f"{where}: question_id {item.question_id!r} run {item.run} repeats line {run_line[key]}"
            )
        run_line[key] = n
        lines.append(item)
    if not lines:
        raise BadInput(f"{path}: no trajectories in the file (one JSON object per line expected)")
    return lines


INT32_MAX = 2**31 - 1
MAX_LATENCY_S = 1e7  # ~4 months: anything above is a unit mistake, not a latency


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _check_costs(meta: dict[str, Any], where: str) -> None:
    """The numbers of meta that land in INTEGER / DOUBLE columns, checked where they enter."""
    for key in ("prompt_tokens", "completion_tokens"):
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


def _number(meta: dict[str, Any], key: str, kind: type) -> Any:
    value = meta.get(key)
    return kind(value) if isinstance(value, int | float) and not isinstance(value, bool) else kind(0)


def import_trajectories(store: Any, path: Path, domain: str = DEFAULT_DOMAIN) -> ImportResult:
    lines = read_import_file(path)
    by_question: dict[str, list[ImportLine]] = {}
    for item in lines:
        by_question.setdefault(item.question_id, []).append(item)

    questions, runs, labels = [], [], []
    ids: dict[str, str] = {}
    for qid, items in by_question.items():
        store_id = Question.derive_id(domain, "import", qid)
        ids[qid] = store_id
        kept = {}
        for item in items:
            entry: dict[str, Any] = {"meta": item.meta}
            if item.user_turns:
                entry["user_turns"] = item.user_turns
            # Keep the original messages unless the canonical form gives them back exactly.
            if trajectory_to_messages(item.question, item.trajectory) != item.messages:
                entry["messages"] = item.messages
            kept[str(item.run)] = entry
        meta = {"import": {"question_id": qid, "file": path.name, "runs": kept}}
        questions.append(Question(id=store_id, domain=domain, text=items[0].question, origin="import",
                                  group_id=qid, meta=meta))  # fmt: skip
        for item in items:
            run = Run(
                id=Run.derive_id(store_id, item.run), question_id=store_id, run_index=item.run,
                trajectory=item.trajectory, prompt_tokens=_number(item.meta, "prompt_tokens", int),
                completion_tokens=_number(item.meta, "completion_tokens", int),
                latency_s=_number(item.meta, "latency_s", float),
            )  # fmt: skip
            runs.append(run)
            if item.label is not None:
                labels.append(Label(run_id=run.id, source="import", correct=item.label,
                                    detail=f"import:{path.name}:{item.line}"))  # fmt: skip

    with store.transaction():
        n_questions = store.add_questions(questions)
        n_runs = store.add_runs(runs)
        n_labels = store.add_labels(labels)
        stored: dict[str, list[Run]] = {}
        for r in store.runs(question_ids=list(ids.values())):
            stored.setdefault(r.question_id, []).append(r)
        mct_rows = [m for rs in stored.values() if (m := most_common(rs)) is not None]
        store.set_mct(mct_rows)
    return ImportResult(lines=len(lines), questions=n_questions, runs=n_runs, labels=n_labels,
                        mct=len(mct_rows), skipped_runs=len(runs) - n_runs, question_ids=ids)  # fmt: skip
