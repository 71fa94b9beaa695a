"""The real embedded model (llama.cpp + gemma-3-270m) through the layer."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from magv.config import Settings
from magv.llm import FinalAnswer, LLMClient, action_schema, choose_action, managed_endpoints
from magv.models import ToolCall, ToolSpec

pytestmark = pytest.mark.slow

GET_ORDER = ToolSpec(
    name="get_order",
    description="Look up an order by its number.",
    parameters={"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]},
)
CANCEL = ToolSpec(
    name="cancel_order",
    description="Cancel an order.",
    parameters={
        "type": "object",
        "properties": {
            "order_id": {"type": "integer"},
            "reason": {"type": "string", "enum": ["late", "damaged", "other"]},
        },
        "required": ["order_id", "reason"],
    },
)
TOOLS = [GET_ORDER, CANCEL]
SYSTEM = (
    "You are a customer support agent. Reply with one JSON object: either "
    '{"tool": name, "arguments": {...}} to call a tool, or {"answer": text}.\nTools:\n'
    + "\n".join(json.dumps(t.openai()["function"]) for t in TOOLS)
)


def _ask(server, questions, store=None):
    settings = Settings()
    settings.llm.timeout_s = 300

    async def go():
        async with LLMClient(settings, recorder=store, endpoints=[server.url]) as client:
            out = []
            for q in questions:
                messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
                out.append(await choose_action(client, "responder", messages, TOOLS, mode="json", seed=0,
                                               temperature=0.0, max_tokens=64, template="test"))  # fmt: skip
            return out

    return asyncio.run(go())


def test_gemma_makes_a_schema_valid_tool_call(llama_server, tmp_store):  # noqa: F811
    [(action, result)] = _ask(llama_server, ["Can you check order number 1001 for me?"], store=tmp_store)
    assert result.ok, result.error
    assert isinstance(action, ToolCall), action
    tool = {t.name: t for t in TOOLS}[action.name]
    jsonschema.validate(action.arguments, tool.parameters)
    (row,) = tmp_store.llm_calls()
    assert row["prompt_tokens"] > 50 and row["completion_tokens"] > 0 and row["latency_s"] > 0
    assert row["model"] == "gemma-3-270m" and row["endpoint"] == llama_server.url
    assert json.loads(row["request"])["response_format"]["type"] == "json_schema"


def test_grammar_keeps_every_reply_inside_the_action_schema(llama_server):  # noqa: F811
    questions = ["Where is my order 42?", "Please cancel order 7, it arrived damaged.", "Hello there!"]
    for action, result in _ask(llama_server, questions):
        assert result.ok, result.error
        if result.finish_reason == "length":
            continue  # cut off by max_tokens: a prefix of valid JSON, recorded as invalid
        jsonschema.validate(json.loads(result.text), action_schema(TOOLS))
        assert isinstance(action, ToolCall | FinalAnswer), action


def test_managed_endpoints_reuse_the_running_server(llama_server):  # noqa: F811
    settings = Settings()
    settings.llama.port = llama_server.port
    with managed_endpoints(settings) as endpoints:
        assert endpoints["responder"] == [llama_server.url]
    assert llama_server.health()  # not stopped: it was not ours
