"""Grounded arguments: ids a model must copy from the conversation instead of inventing them.

A domain marks a string parameter (or the items of an array parameter) with
`"x-magv-grounded": REGEX`: its value must already appear in the conversation, as a match of REGEX
in the question or in a tool result. In json mode the reply's schema narrows such a parameter to
an enum of those values, so the grammar cannot write any other; a tool with a required grounded
parameter that has no value yet is left out of that step's choices, so the model has to call a
tool that finds one first. Small models otherwise fill an id they do not have with `12345`, or
look the same id up again and again instead of answering.

Native mode is not constrained (the server owns decoding); the keyword is dropped from the specs
sent to a server (`ToolSpec.openai`). Argument validation ignores it: a grounded value is still checked against the
parameter's own schema.

A pattern comes from a domain, so it is data: it is matched by RE2 (google-re2), whose time is
linear in the text, never by a backtracking engine, where `^(a+)+$` on forty a's and a '!' runs
for hours. A pattern must be valid for Python's `re` too (so it means what its author tested) and
RE2 must take it: lookarounds, backreferences and repetition counts above 1,000 are refused at
load, naming the tool and parameter, as is a pattern longer than MAX_PATTERN characters.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import re2

from magv.errors import BadInput
from magv.models import GROUNDED

# Enough for every id of a long tool result; a larger enum only grows the grammar.
MAX_VALUES = 64
# An id pattern is short; a longer one is a mistake or an attack on the compiler.
MAX_PATTERN = 1000
# RE2's memory for one compiled pattern (its default is 8 MiB); past it, compiling fails.
MAX_PATTERN_MEMORY = 8 << 20


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is a BadInput, not a line on stderr
    options.max_mem = MAX_PATTERN_MEMORY
    return options


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> Any:
    """The RE2 program of `pattern`; BadInput (without the place: callers add it) when unsafe."""
    if len(pattern) > MAX_PATTERN:
        raise BadInput(f"{GROUNDED}: pattern of {len(pattern)} characters; at most {MAX_PATTERN}")
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        raise BadInput(f"{GROUNDED} {pattern!r} is not a regular expression: {exc}") from None
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise BadInput(
            f"{GROUNDED} {pattern!r} cannot be matched in bounded time ({reason}); use a pattern without "
            "lookarounds, backreferences or repetition counts above 1000"
        ) from None


def check_grounded(parameters: dict[str, Any], where: str) -> None:
    """Raise BadInput naming the parameter when a grounded keyword of `parameters` is not a usable,
    safe regular expression."""
    for name, prop in (parameters.get("properties") or {}).items():
        pattern = _pattern(prop)
        if pattern is None:
            continue
        if not isinstance(pattern, str) or not pattern:
            raise BadInput(f"{where}: parameter {name!r}: {GROUNDED} must be a non-empty regular expression")
        try:
            _compiled(pattern)
        except BadInput as exc:
            raise BadInput(f"{where}: parameter {name!r}: {exc}") from None


def values_in(pattern: str, context: Sequence[str]) -> list[str]:
    """The distinct matches of `pattern` in the context, latest last, at most MAX_VALUES."""
    seen: dict[str, None] = {}
    for text in context:
        for m in _compiled(pattern).finditer(text):
            seen.pop(m.group(0), None)
            seen[m.group(0)] = None
    return list(seen)[-MAX_VALUES:]


def ground(
    parameters: dict[str, Any], context: Sequence[str], done: Sequence[dict[str, Any]] = ()
) -> dict[str, Any] | None:
    """`parameters` with each grounded property narrowed to the values the context holds, or None
    when a required grounded property has none (the tool cannot be called yet). An optional one
    without values is left out. `done`, the arguments of calls already made to a read-only tool
    of one grounded parameter, takes those values out: the same lookup again would only return
    the result the conversation already shows."""
    props = parameters.get("properties") or {}
    if not any(_pattern(p) for p in props.values()):
        return parameters
    out = copy.deepcopy(parameters)
    required = set(out.get("required") or [])
    for name, prop in props.items():
        pattern = _pattern(prop)
        if pattern is None:
            continue
        values = values_in(pattern, context)
        if len(props) == 1 and prop.get("type") != "array":
            values = [v for v in values if {name: v} not in done]
        if len(values) < (prop.get("minItems", 1) if prop.get("type") == "array" else 1):
            if name in required:
                return None
            del out["properties"][name]
            continue
        narrowed = out["properties"][name]
        target = _holder(narrowed)
        target.pop(GROUNDED)
        for key in ("pattern", "minLength", "maxLength"):  # the enum says it all; keep the grammar small
            target.pop(key, None)
        target["enum"] = values
        if narrowed.get("type") == "array" and narrowed.get("uniqueItems"):
            narrowed["maxItems"] = min(narrowed.get("maxItems", len(values)), len(values))
    return out


def _holder(prop: dict[str, Any]) -> Any:
    """The schema that carries the keyword: an array's items, else the property itself."""
    return prop.get("items") if prop.get("type") == "array" else prop


def _pattern(prop: Any) -> Any:
    target = _holder(prop) if isinstance(prop, dict) else None
    return target.get(GROUNDED) if isinstance(target, dict) else None
