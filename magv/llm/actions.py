"""The two ways to get a tool call from a model, and what a reply turns into.

native: OpenAI `tools=` (vLLM with a tool parser, OpenAI itself); the server parses the call, or
        leaves the model's own `<tool_call>` text, which is parsed here (llama-cpp-python).
json:   a JSON schema admitting exactly `{"tool": <name>, "arguments": <that tool's parameters>}` for
        each tool, or `{"answer": <text>}`; llama.cpp turns it into a grammar, vLLM into structured
        outputs, so even a small base model writes a well-formed call.

Either way the call is checked against the tool's parameter schema; what does not parse or check
becomes an `InvalidReply` (a recorded invalid step), never an exception.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import jsonschema
from jsonschema.exceptions import best_match

from magv.errors import BadInput
from magv.llm.grounding import ground
from magv.models import ToolCall, ToolSpec, canonical_json, without_grounding

if TYPE_CHECKING:
    from magv.llm.client import ChatResult, LLMClient


@dataclass
class FinalAnswer:
    text: str


@dataclass
class InvalidReply:
    raw: str
    error: str


Action = ToolCall | FinalAnswer | InvalidReply
ToolMode = Literal["native", "json"]


def action_schema(
    tools: list[ToolSpec], context: Sequence[str] | None = None, made: Sequence[ToolCall] = ()
) -> dict[str, Any]:
    """The reply's schema. With `context` (the conversation's texts), grounded parameters are
    narrowed to the values it holds, minus the lookups already `made`, and tools that cannot be
    called yet are left out (magv.llm.grounding)."""
    branches = []
    for t in tools:
        done = [] if t.writes else [c.arguments for c in made if c.name == t.name]
        parameters = t.parameters if context is None else ground(t.parameters, context, done)
        if parameters is None:
            continue
        branches.append(
            {
                "type": "object",
                "properties": {"tool": {"const": t.name}, "arguments": _arguments_schema(parameters)},
                "required": ["tool", "arguments"],
                "additionalProperties": False,
            }
        )
    branches.append(
        {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": False,
        }
    )
    return {"anyOf": branches}


def _arguments_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(parameters) if parameters else {}
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    # A grammar built from an open object lets a small model ramble on with invented keys; a tool
    # that wants extra keys says so in its own schema.
    schema.setdefault("additionalProperties", False)
    return without_grounding(schema)


def json_response_format(
    tools: list[ToolSpec], context: Sequence[str] | None = None, made: Sequence[ToolCall] = ()
) -> dict[str, Any]:
    schema = action_schema(tools, context, made)
    return {"type": "json_schema", "json_schema": {"name": "action", "schema": schema}}


async def choose_action(
    client: LLMClient,
    role: str,
    messages: list[dict],
    tools: list[ToolSpec],
    *,
    mode: ToolMode,
    template: str | None = None,
    template_hash: str | None = None,
    seed: int | None = None,
    context_key: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    context: Sequence[str] | None = None,
    made: Sequence[ToolCall] = (),
) -> tuple[Action, ChatResult]:
    """Ask for the next step. A failed call gives InvalidReply too; check `result.error` to tell
    a model that could not be reached from one that replied badly. `context`, the conversation's
    texts, and `made`, the calls so far, ground the json-mode reply (magv.llm.grounding)."""
    common = dict(
        template=template,
        template_hash=template_hash,
        seed=seed,
        context_key=context_key,
        temperature=temperature,
        max_tokens=max_tokens,
    )
    if mode == "json":
        result = await client.chat(
            role, messages, response_format=json_response_format(tools, context, made), **common
        )
    elif mode == "native":
        result = await client.chat(role, messages, tools=tools, **common)
    else:
        raise BadInput(f"llm.tool_mode: {mode!r}; expected 'native' or 'json'")
    if result.error is not None:
        return InvalidReply(raw="", error=f"llm call failed: {result.error}"), result
    if mode == "json":
        return parse_json_action(result.text, tools), result
    return parse_native_action(result, tools), result


def parse_json_action(text: str | None, tools: list[ToolSpec]) -> Action:
    raw = text or ""
    if not raw.strip():
        return InvalidReply(raw=raw, error="empty reply")
    try:
        obj = json.loads(raw, strict=False)  # small models put raw newlines inside strings
    except ValueError as exc:
        return InvalidReply(raw=raw, error=f"reply is not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return InvalidReply(raw=raw, error=f"reply is JSON {type(obj).__name__}; expected an object")
    if "tool" in obj:
        return check_call(obj["tool"], obj.get("arguments", {}), tools, raw)
    if "answer" in obj:
        if not isinstance(obj["answer"], str):
            return InvalidReply(raw=raw, error="'answer' must be a string")
        return FinalAnswer(text=obj["answer"])
    return InvalidReply(raw=raw, error='expected {"tool": ..., "arguments": {...}} or {"answer": ...}')


def parse_native_action(result: ChatResult, tools: list[ToolSpec]) -> Action:
    message = ((result.response or {}).get("choices") or [{}])[0].get("message") or {}
    raw_calls = message.get("tool_calls") or []
    if raw_calls:
        # One step is one call; a model that asks for several gets its first, the rest it can ask again.
        fn = raw_calls[0].get("function") or {}
        raw = json.dumps(raw_calls, ensure_ascii=False)
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError as exc:
                return InvalidReply(
                    raw=raw, error=f"arguments of {fn.get('name')!r} are not valid JSON: {exc}"
                )
        return check_call(fn.get("name"), args, tools, raw)
    text = (result.text or "").strip()
    if not text:
        return InvalidReply(raw=result.text or "", error="empty reply")
    written = call_in_text(text)
    if written is not None:
        name, args = written
        return check_call(name, args, tools, text)
    return FinalAnswer(text=text)


_FUNCTION_TAG = re.compile(r"""<function\s+name=["']([^"']+)["']\s+arguments='(.*?)'\s*/?>""", re.S)
_CALL_KEYS = {"name", "arguments", "parameters"}


def call_in_text(text: str) -> tuple[Any, Any] | None:
    """(name, arguments) of the first tool call a model wrote as text, or None (the text is then
    an answer). llama-cpp-python leaves the call in the text, and a small model writes it in many
    shapes: a Hermes `<tool_call>` block (what Qwen's template asks for), a fenced or bare JSON
    object `{"name": ..., "arguments": ...}` (also inside prose, or in the doubled braces of the
    template's own example), or `<function name="..." arguments='{...}'/>`."""
    tag = _FUNCTION_TAG.search(text)
    if tag:
        return tag.group(1), _json_or_text(tag.group(2))
    decoder = json.JSONDecoder(strict=False)
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("name"), str) and set(obj) <= _CALL_KEYS:
            return obj["name"], _json_or_text(obj.get("arguments", obj.get("parameters", {})))
    return None


def _json_or_text(args: Any) -> Any:
    if isinstance(args, str):
        try:
            return json.loads(args) if args.strip() else {}
        except ValueError:
            return args
    return args


def check_call(name: Any, arguments: Any, tools: list[ToolSpec], raw: str) -> Action:
    by_name = {t.name: t for t in tools}
    if not isinstance(name, str) or name not in by_name:
        known = ", ".join(sorted(by_name)) or "(none)"
        return InvalidReply(raw=raw, error=f"unknown tool {name!r}; expected one of {known}")
    if not isinstance(arguments, dict):
        return InvalidReply(
            raw=raw, error=f"arguments of {name} must be an object, got {type(arguments).__name__}"
        )
    error = best_match(_validator(canonical_json(by_name[name].parameters)).iter_errors(arguments))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(arguments)"
        return InvalidReply(raw=raw, error=f"arguments of {name}: {where}: {error.message}")
    return ToolCall(name=name, arguments=arguments)


@lru_cache(maxsize=512)
def _validator(schema_json: str) -> Any:
    schema = json.loads(schema_json) or {"type": "object"}
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)
