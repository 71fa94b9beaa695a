r"""A tool is a ToolSpec (what the model sees) plus the function that runs it over the database.

Tool functions take the session's DuckDB cursor first and the validated arguments as keywords:

    @tool("Find a customer by email.", {"email": {"type": "string"}})
    def find_customer_by_email(db, email): ...

A string parameter marked `GROUNDED: REGEX` takes only values the conversation already holds
(magv.llm.grounding), e.g. `{"type": "string", GROUNDED: r"\bW\d{7}\b"}` for an order id.

They raise `ToolError` for a problem the assistant should read (not found, wrong state); anything
else they raise is recorded as an internal error. They use parameterised SQL only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from magv.errors import BadInput
from magv.llm.grounding import check_grounded
from magv.models import GROUNDED, ToolSpec

__all__ = ["GROUNDED", "Tool", "ToolError", "object_schema", "tool"]

ToolFunction = Callable[..., Any]


class ToolError(Exception):
    """A problem the assistant should be told about, e.g. "order W1000123 is not pending"."""


@dataclass(frozen=True)
class Tool:
    spec: ToolSpec
    fn: ToolFunction

    @property
    def name(self) -> str:
        return self.spec.name

    def __call__(self, db: Any, **arguments: Any) -> Any:
        return self.fn(db, **arguments)


def object_schema(properties: Mapping[str, Any], required: Sequence[str] | None = None) -> dict[str, Any]:
    """The arguments schema: every property required unless listed otherwise; no extra keys,
    so a misspelt argument is an error the model sees rather than a silently ignored value."""
    names = list(properties)
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(names if required is None else required),
        "additionalProperties": False,
    }


def tool(
    description: str,
    properties: Mapping[str, Any] | None = None,
    *,
    required: Sequence[str] | None = None,
    writes: bool = False,
    name: str | None = None,
) -> Callable[[ToolFunction], Tool]:
    """Decorator: turn `fn(db, **arguments)` into a Tool named after the function."""

    def wrap(fn: ToolFunction) -> Tool:
        spec = ToolSpec(
            name=name or fn.__name__,
            description=description,
            parameters=object_schema(properties or {}, required),
            writes=writes,
        )
        return make_tool(spec, fn)

    return wrap


def make_tool(spec: ToolSpec, fn: ToolFunction) -> Tool:
    """Check the spec's JSON schema once, here, so a bad schema fails at load and not mid-run."""
    try:
        jsonschema.Draft202012Validator.check_schema(spec.parameters)
    except jsonschema.SchemaError as exc:
        raise BadInput(f"tool {spec.name}: parameters is not a valid JSON schema: {exc.message}") from None
    if spec.parameters.get("type") != "object":
        raise BadInput(f"tool {spec.name}: parameters must be a JSON schema with type 'object'")
    check_grounded(spec.parameters, f"tool {spec.name}")
    return Tool(spec=spec, fn=fn)


def validator(spec: ToolSpec) -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(spec.parameters)


def argument_errors(spec: ToolSpec, arguments: Mapping[str, Any]) -> str | None:
    """The most relevant schema violation as one readable line, or None when the arguments are valid."""
    error = jsonschema.exceptions.best_match(validator(spec).iter_errors(dict(arguments)))
    if error is None:
        return None
    message = error.message
    shown = repr(error.instance)
    if len(shown) > 80:
        # Echoing a huge value back would fill the model's context; keep the reason readable.
        instance = error.instance
        size = (
            f"{len(instance)} characters"
            if isinstance(instance, str)
            else f"{len(instance)} items"
            if isinstance(instance, list | dict)
            else "long value"
        )
        message = message.replace(shown, f"{shown[:40]}…({size})")
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where}: {message}" if where else message
