"""Tool calls in both modes: the action schema, and every bad reply ending as a recorded invalid step."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from magv.config import Settings
from magv.errors import BadInput
from magv.llm import FinalAnswer, InvalidReply, LLMClient, action_schema, choose_action, parse_json_action
from magv.models import ToolCall, ToolSpec
from tests.fakellm import FakeLLMServer

GET_ORDER = ToolSpec(
    name="get_order",
    description="Look up an order.",
    parameters={"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]},
)
REFUND = ToolSpec(
    name="refund",
    description="Refund an order.",
    parameters={
        "type": "object",
        "properties": {
            "order_id": {"type": "integer"},
            "reason": {"type": "string", "enum": ["late", "damaged"]},
        },
        "required": ["order_id", "reason"],
    },
)
TOOLS = [GET_ORDER, REFUND]
QUESTION = [{"role": "user", "content": "Where is my order 12?"}]


def _valid(instance) -> bool:
    return jsonschema.Draft202012Validator(action_schema(TOOLS)).is_valid(instance)


def test_action_schema_admits_exactly_the_tools_or_an_answer():
    assert _valid({"tool": "get_order", "arguments": {"order_id": 3}})
    assert _valid({"tool": "refund", "arguments": {"order_id": 3, "reason": "late"}})
    assert _valid({"answer": "It ships tomorrow."})
    assert not _valid({"tool": "delete_everything", "arguments": {}})
    assert not _valid({"tool": "get_order", "arguments": {"order_id": "three"}})
    assert not _valid({"tool": "get_order", "arguments": {"order_id": 3, "extra": 1}})
    assert not _valid({"tool": "refund", "arguments": {"order_id": 3, "reason": "bored"}})
    assert not _valid({"tool": "get_order"})
    assert not _valid({"answer": "x", "tool": "get_order", "arguments": {"order_id": 1}})
    assert not _valid({"answer": 5})
    # the tools' own schemas are not modified
    assert "additionalProperties" not in GET_ORDER.parameters


def test_parse_json_action():
    assert parse_json_action('{"tool": "get_order", "arguments": {"order_id": 4}}', TOOLS) == ToolCall(
        name="get_order", arguments={"order_id": 4}
    )
    assert parse_json_action('{"answer": "done"}', TOOLS) == FinalAnswer("done")
    for raw, error in [
        ("", "empty reply"),
        ('{"tool": "get_order", "argu', "not valid JSON"),
        ("[1, 2]", "expected an object"),
        ('{"tool": "nope", "arguments": {}}', "unknown tool 'nope'"),
        ('{"tool": "get_order", "arguments": {"order_id": "4"}}', "arguments of get_order: order_id:"),
        ('{"tool": "get_order", "arguments": [4]}', "must be an object"),
        ('{"answer": 3}', "'answer' must be a string"),
        ('{"say": "hi"}', "expected"),
    ]:
        action = parse_json_action(raw, TOOLS)
        assert isinstance(action, InvalidReply), raw
        assert error in action.error and action.raw == raw


def _choose(srv: FakeLLMServer, mode: str, messages=QUESTION, store=None):
    settings = Settings()
    settings.llm.retries = 0

    async def go():
        async with LLMClient(settings, recorder=store, endpoints=[srv.base_url]) as client:
            return await choose_action(client, "responder", messages, TOOLS, mode=mode, seed=1)

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["json", "native"])
def test_a_well_formed_call_and_then_an_answer(mode):
    with FakeLLMServer() as srv:
        action, result = _choose(srv, mode)
        after = [*QUESTION, {"role": "assistant", "content": "{}"}, {"role": "tool", "content": "shipped"}]
        answer, _ = _choose(srv, mode, messages=after)
    assert isinstance(action, ToolCall) and action.name == "get_order"
    jsonschema.validate(action.arguments, GET_ORDER.parameters)
    assert isinstance(answer, FinalAnswer) and answer.text
    sent = srv.requests[0]
    if mode == "json":
        assert sent["response_format"]["json_schema"]["schema"] == action_schema(TOOLS)
        assert "tools" not in sent
    else:
        assert [t["function"]["name"] for t in sent["tools"]] == ["get_order", "refund"]
        assert sent["tool_choice"] == "auto" and "response_format" not in sent


@pytest.mark.parametrize("mode", ["json", "native"])
@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("invalid_json", "not valid JSON"),
        ("unknown_tool", "unknown tool 'no_such_tool'"),
        ("wrong_types", "arguments of get_order: order_id:"),
        ("empty", "empty reply"),
    ],
)
def test_bad_replies_become_recorded_invalid_steps(tmp_store, mode, kind, error):
    with FakeLLMServer(faults={kind: 1.0}) as srv:
        action, result = _choose(srv, mode, store=tmp_store)
    assert isinstance(action, InvalidReply)
    assert error in action.error
    assert result.ok  # the call itself worked: the model replied badly
    (row,) = tmp_store.llm_calls()
    assert row["error"] is None and json.loads(row["response"])["choices"]


def test_failed_call_gives_invalid_reply_and_keeps_the_error():
    with FakeLLMServer(faults={"500": 1.0}) as srv:
        action, result = _choose(srv, "json")
    assert isinstance(action, InvalidReply) and action.error.startswith("llm call failed: HTTP 500")
    assert result.error and "HTTP 500" in result.error


def test_unknown_mode_is_bad_input():
    with FakeLLMServer() as srv, pytest.raises(BadInput, match="tool_mode"):
        _choose(srv, "telepathy")


def test_native_mode_takes_the_first_of_several_calls():
    def two_calls(body):
        return {"tool_calls": [{"name": "refund", "arguments": {"order_id": 1, "reason": "late"}},
                               {"name": "get_order", "arguments": {"order_id": 1}}]}  # fmt: skip

    with FakeLLMServer(handler=two_calls) as srv:
        action, result = _choose(srv, "native")
    assert action == ToolCall(name="refund", arguments={"order_id": 1, "reason": "late"})
    assert [c.name for c in result.tool_calls] == ["refund", "get_order"]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_order", "arguments": {"order_id": 12}}\n</tool_call>',  # Hermes / Qwen
        '```json\n{\n  "name": "get_order",\n  "arguments": {"order_id": 12}\n}\n```',  # fenced
        '{{"name": "get_order", "arguments": {"order_id": 12}}}',  # the braces of Qwen's template
        '{"name": "get_order", "arguments": "{\\"order_id\\": 12}"}',  # arguments as a JSON string
        '<tools>\n  <function name="get_order" arguments=\'{"order_id": 12}\'/>\n</tools>',
        'I will look it up:\n```json\n{"name": "get_order", "arguments": {"order_id": 12}}\n```\nThen I answer.',
        '<tools>\n{{"name": "get_order", "arguments": {"order_id": 12}}}\n{{"name": "refund", "arguments": {}}}',
    ],
)
def test_native_mode_reads_a_call_the_model_wrote_as_text(text):
    with FakeLLMServer(handler=lambda body: text) as srv:
        action, _ = _choose(srv, "native")
    assert action == ToolCall(name="get_order", arguments={"order_id": 12})


def test_native_mode_text_calls_are_checked_and_plain_text_is_an_answer():
    bad = '<tool_call>{"name": "get_order", "arguments": {"order_id": "twelve"}}</tool_call>'
    with FakeLLMServer(handler=lambda body: bad) as srv:
        action, _ = _choose(srv, "native")
    assert isinstance(action, InvalidReply) and "order_id" in action.error
    for answer in ["Your order 12 has shipped.", '{"status": "shipped"}', '{"name": "Ann", "age": 3}']:
        with FakeLLMServer(handler=lambda body, a=answer: a) as srv:
            action, _ = _choose(srv, "native")
        assert action == FinalAnswer(text=answer)
