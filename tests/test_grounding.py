"""Grounded arguments: ids narrowed to what the conversation holds, tools that cannot be called yet
left out of the json-mode reply, the keyword kept away from servers, bad patterns refused at load,
and the responder grounding each step on the question and the results shown so far."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import pytest

from magv.agents.responder import respond
from magv.config import Settings
from magv.domains import load_domain
from magv.domains.tools import GROUNDED, tool
from magv.errors import BadInput
from magv.llm import LLMClient, action_schema
from magv.llm.grounding import MAX_VALUES, ground, values_in
from magv.models import ToolCall, ToolSpec
from tests.fakellm import FakeLLMServer

ORDER = {"type": "string", "maxLength": 20, GROUNDED: r"\bW\d{7}\b"}
PARAMS = {
    "type": "object",
    "properties": {
        "order_id": ORDER,
        "item_ids": {"type": "array", "items": {"type": "string", GROUNDED: r"\bW\d{7}-\d+\b"},
                     "minItems": 1, "uniqueItems": True, "maxItems": 10},
        "note": {"type": "string"},
        "customer_id": {"type": "string", GROUNDED: r"\bC\d{5}\b"},
    },
    "required": ["order_id", "item_ids", "note"],
}  # fmt: skip


def test_values_are_the_distinct_matches_latest_last_and_capped():
    assert values_in(r"\bW\d{7}\b", ["order #W1000001 and W1000002", "W1000001 again"]) == [
        "W1000002",
        "W1000001",
    ]
    assert values_in(r"\bW\d{7}\b", ["no ids here, just 12345"]) == []
    many = " ".join(f"W{1000000 + i}" for i in range(MAX_VALUES + 10))
    found = values_in(r"\bW\d{7}\b", [many])
    assert len(found) == MAX_VALUES and found[-1] == f"W{1000000 + MAX_VALUES + 9}"


def test_ground_narrows_required_ids_to_an_enum_and_drops_optional_ones():
    context = ["Return W1000854-1 and W1000854-3 from order W1000854, please."]
    out = ground(PARAMS, context)
    props = out["properties"]
    assert props["order_id"]["enum"] == ["W1000854"] and GROUNDED not in props["order_id"]
    assert props["item_ids"]["items"]["enum"] == ["W1000854-1", "W1000854-3"]
    assert props["item_ids"]["maxItems"] == 2
    assert "customer_id" not in props  # optional, nothing to copy: left out
    assert props["note"] == {"type": "string"}
    assert GROUNDED in PARAMS["properties"]["order_id"]  # the tool's own schema is untouched
    # the narrowed schema only admits values the tool's own schema admits
    jsonschema.validate({"order_id": "W1000854", "item_ids": ["W1000854-3"], "note": "x"}, PARAMS)
    assert ground(PARAMS, ["an order W1000854, but no item ids"]) is None  # a required id is missing
    assert ground({"type": "object", "properties": {"q": {"type": "string"}}}, []) is not None


def test_action_schema_leaves_out_tools_that_cannot_be_called_yet():
    lookup = ToolSpec(name="get_order", description="d", parameters={
        "type": "object", "properties": {"order_id": ORDER}, "required": ["order_id"]})  # fmt: skip
    search = ToolSpec(name="search", description="d", parameters={
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})  # fmt: skip

    def names(schema):
        return [b["properties"].get("tool", {}).get("const", "answer") for b in schema["anyOf"]]

    assert names(action_schema([lookup, search])) == ["get_order", "search", "answer"]  # no context
    assert names(action_schema([lookup, search], ["where is my parcel?"])) == ["search", "answer"]
    grounded = action_schema([lookup, search], ["where is W1000856?"])
    assert names(grounded) == ["get_order", "search", "answer"]
    assert GROUNDED not in json.dumps(grounded)
    validator = jsonschema.Draft202012Validator(grounded)
    assert validator.is_valid({"tool": "get_order", "arguments": {"order_id": "W1000856"}})
    assert not validator.is_valid({"tool": "get_order", "arguments": {"order_id": "W1234567"}})


def test_the_keyword_never_reaches_a_server():
    spec = load_domain("retail").tool("get_order_details")
    assert GROUNDED in json.dumps(spec.parameters)
    assert GROUNDED not in json.dumps(spec.openai())


def test_a_bad_pattern_is_refused_when_the_tool_is_made():
    with pytest.raises(BadInput, match=r"tool lookup: parameter 'order_id': x-magv-grounded"):
        tool("Look up.", {"order_id": {"type": "string", GROUNDED: ""}}, name="lookup")(
            lambda db, order_id: None
        )
    with pytest.raises(BadInput, match="is not a regular expression"):
        tool("Look up.", {"order_id": {"type": "string", GROUNDED: "W(["}}, name="lookup")(
            lambda db, order_id: None
        )


def test_retail_ids_are_grounded_on_what_the_customer_and_the_tools_said(tmp_path: Path):
    """A question without an order id cannot look one up; once a result lists the customer's
    orders, those ids (and only those) can be used; the lookup just made is not offered again."""
    replies = iter([
        {"json": {"tool": "find_customer_by_email", "arguments": {"email": "lisa.walker38@example.com"}}},
        {"json": {"tool": "get_customer_details", "arguments": {"customer_id": "C00039"}}},
        {"json": {"answer": "done"}},
    ])  # fmt: skip

    def handler(body: dict) -> dict:
        return next(replies)

    domain = load_domain("retail")
    settings = Settings(database=tmp_path / "magv.duckdb", domain_data_dir=tmp_path / "domains")
    with FakeLLMServer(handler) as srv:

        async def go():
            async with LLMClient(settings, endpoints=[srv.base_url]) as client:
                return await respond(client, domain, domain.sandbox_pool(settings.domain_data_dir),
                                     "Please cancel what I ordered by mistake. lisa.walker38@example.com",
                                     run_index=0, max_steps=4, tool_mode="json", context_key="t")  # fmt: skip

        out = asyncio.run(go())
    assert out.trajectory.status == "ok" and len(out.trajectory.steps) == 2
    schemas = [b["response_format"]["json_schema"]["schema"] for b in srv.requests]

    def branch(schema, name):
        found = [b for b in schema["anyOf"] if b["properties"].get("tool", {}).get("const") == name]
        return found[0]["properties"]["arguments"]["properties"] if found else None

    assert branch(schemas[0], "get_order_details") is None  # no order id anywhere yet
    assert branch(schemas[0], "get_customer_details") is None  # nor a customer id
    assert branch(schemas[1], "get_customer_details")["customer_id"]["enum"] == ["C00039"]
    assert branch(schemas[2], "get_customer_details") is None  # looked up already: its result is shown
    orders = branch(schemas[2], "get_order_details")["order_id"]["enum"]
    listed = out.trajectory.steps[1].result["order_ids"]
    assert listed and set(orders) == set(listed)


def test_a_lookup_already_made_is_not_offered_again():
    """A read-only tool of one grounded id: the ids it was called with are taken out (the same
    lookup again only repeats a result the model has); a tool that writes is not narrowed so."""
    lookup = ToolSpec(name="get_order", description="d", parameters={
        "type": "object", "properties": {"order_id": ORDER}, "required": ["order_id"]})  # fmt: skip
    cancel = ToolSpec(name="cancel", description="d", writes=True, parameters=lookup.parameters)
    context = ["orders W1000001 and W1000002"]
    made = [ToolCall(name="get_order", arguments={"order_id": "W1000001"})]

    def enum(schema, name):
        found = [b for b in schema["anyOf"] if b["properties"].get("tool", {}).get("const") == name]
        return found[0]["properties"]["arguments"]["properties"]["order_id"]["enum"] if found else None

    schema = action_schema([lookup, cancel], context, made)
    assert enum(schema, "get_order") == ["W1000002"]
    assert enum(schema, "cancel") == ["W1000001", "W1000002"]
    made.append(ToolCall(name="get_order", arguments={"order_id": "W1000002"}))
    assert enum(action_schema([lookup, cancel], context, made), "get_order") is None
