"""Parsing of the agents' structured replies (lists of questions)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def questions_schema(n: int, max_length: int = 400) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "questions": {
                "type": "array",
                "items": {"type": "string", "minLength": 5, "maxLength": max_length},
                "minItems": 1,
                "maxItems": n,
            }
        },
        "required": ["questions"],
    }


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def parse_questions(text: str | None, n: int) -> list[str]:
    """The list of questions in a reply: trimmed, non-empty, without duplicates, at most n.

    Raises ValueError with a message the model can act on when the reply is not that structure.
    """
    if not text or not text.strip():
        raise ValueError("the reply was empty")
    try:
        data = json.loads(text, strict=False)  # raw newlines inside strings are common
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not valid JSON ({exc.msg} at position {exc.pos})") from None
    items = data.get("questions") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError('expected an object {"questions": [...]} with a list of strings')
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            continue
        line = " ".join(item.split())
        key = line.lower()
        if len(line) < 5 or key in seen:
            continue
        seen.add(key)
        out.append(line)
    if not out:
        raise ValueError("the list held no usable question")
    return out[:n]


@dataclass
class QuestionsReply:
    questions: list[str] = field(default_factory=list)
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


async def ask_for_questions(
    client, role: str, prompt, text: str, n: int, context_key: str, max_length: int = 400
) -> QuestionsReply:
    """Ask `role` for up to n questions of at most `max_length` characters; a reply that does not
    parse is retried once with the parse error in context, then recorded as a failure."""
    messages = [{"role": "user", "content": text}]
    out = QuestionsReply()
    fmt = response_format("questions", questions_schema(n, max_length))
    for attempt in range(2):
        result = await client.chat(
            role,
            messages,
            template=prompt.name,
            template_hash=prompt.hash,
            response_format=fmt,
            context_key=f"{context_key}:{attempt}",
        )
        out.prompt_tokens += result.prompt_tokens
        out.completion_tokens += result.completion_tokens
        if result.error:
            out.error = f"LLM error: {result.error}"
            return out
        try:
            out.questions = parse_questions(result.text, n)
            out.error = None
            return out
        except ValueError as exc:
            out.error = f"unparsable reply: {exc}"
            messages = messages + [
                {"role": "assistant", "content": result.text or ""},
                {
                    "role": "user",
                    "content": f"That reply could not be used: {exc}. "
                    'Reply only with JSON: {"questions": ["...", "..."]}',
                },
            ]
    return out
