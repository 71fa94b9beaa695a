"""The real embedded models through the layer: the default instruct model for behaviour (tool calls
that satisfy their schema in both tool modes, a correct trajectory on a seed), the tiny gemma for
what only needs a live model (the grammar, prompt-cache reuse, server reuse)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import jsonschema
import pytest

from magv.cli import main
from magv.config import Settings
from magv.gguf.registry import DEFAULT_MODEL
from magv.llm import FinalAnswer, LLMClient, action_schema, choose_action, managed_endpoints
from magv.models import ToolCall, ToolSpec
from magv.store import Store
from tests.llm_fixtures import default_model_server  # noqa: F401

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


NATIVE_SYSTEM = "You are a customer support agent. Use the tools to look things up."


def _ask(server, questions, store=None, mode="json"):
    settings = Settings()
    settings.llm.timeout_s = 300
    system = SYSTEM if mode == "json" else NATIVE_SYSTEM

    async def go():
        async with LLMClient(settings, recorder=store, endpoints=[server.url]) as client:
            out = []
            for q in questions:
                messages = [{"role": "system", "content": system}, {"role": "user", "content": q}]
                out.append(await choose_action(client, "responder", messages, TOOLS, mode=mode, seed=0,
                                               temperature=0.0, max_tokens=64, template="test"))  # fmt: skip
            return out

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["json", "native"])
def test_default_model_makes_a_schema_valid_tool_call(default_model_server, tmp_store, mode):  # noqa: F811
    [(action, result)] = _ask(
        default_model_server, ["Can you check order number 1001 for me?"], store=tmp_store, mode=mode
    )
    assert result.ok, result.error
    assert isinstance(action, ToolCall), (action, result.text)
    assert action.name == "get_order" and action.arguments == {"order_id": 1001}
    jsonschema.validate(action.arguments, GET_ORDER.parameters)
    (row,) = tmp_store.llm_calls()
    assert row["prompt_tokens"] > 50 and row["completion_tokens"] > 0 and row["latency_s"] > 0
    assert row["model"] == DEFAULT_MODEL and row["endpoint"] == default_model_server.url
    request = json.loads(row["request"])
    if mode == "json":
        assert request["response_format"]["type"] == "json_schema"
    else:
        assert [t["function"]["name"] for t in request["tools"]] == ["get_order", "cancel_order"]


@pytest.mark.timeout(1800)
def test_default_model_answers_a_seed_with_its_gold_trajectory(default_model_server, tmp_path, monkeypatch):  # noqa: F811
    """The first retail seed (look up an account by email), at temperature 0, through `magv eval`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAGV_LLM__ENDPOINTS", json.dumps([default_model_server.url]))
    monkeypatch.setenv("MAGV_LLM__TIMEOUT_S", "600")
    code = main(["eval", "--domain", "retail", "--questions", "seeds", "--limit", "1", "--max-steps", "2",
                 "--temperature", "0", "--json"])  # fmt: skip
    assert code == 0
    with Store(tmp_path / "data" / "magv.duckdb", read_only=True) as store:
        (row,) = store.query("SELECT results FROM eval_results")
    res = json.loads(row["results"])
    assert res["seed_id"] == "retail-lookup-email"
    assert res["strict"] and res["strict_args"], res["calls"]


def test_the_shared_prefix_comes_from_the_prompt_cache(llama_server, tmp_store):  # noqa: F811
    """The same system prompt twice: the second call's prompt is served from the cache, and the
    server says so in usage.prompt_tokens_details.cached_tokens, which `llm stats` turns into a rate."""
    _ask(
        llama_server, ["Where is my order 42?", "Please cancel order 7, it arrived damaged."], store=tmp_store
    )
    first, second = sorted(tmp_store.llm_calls(), key=lambda r: r["created_at"])
    cached = [
        json.loads(r["response"])["usage"]["prompt_tokens_details"]["cached_tokens"] for r in (first, second)
    ]
    prefix = len(SYSTEM) // 8  # far fewer tokens than the system prompt has
    assert cached[1] > prefix and cached[1] < second["prompt_tokens"]
    (stats,) = tmp_store.llm_stats()
    assert stats["cached_prompt_tokens"] == sum(cached)
    assert 0 < stats["prompt_cache_hit_rate"] < 1


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


def test_health_answers_while_a_completion_runs(llama_server):  # noqa: F811
    """llama-cpp-python's own routes wait for the model lock; magv's /health does not, so a server
    busy with a long completion is not taken for a dead one (and started a second time)."""
    body = {"messages": [{"role": "user", "content": "Count from 1 to 1000, one number a line."}],
            "max_tokens": 400, "temperature": 0}  # fmt: skip
    busy = threading.Thread(target=lambda: httpx.post(llama_server.url + "/chat/completions", json=body,
                                                      timeout=600))  # fmt: skip
    busy.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    assert llama_server.health(timeout=2.0)
    answered = time.monotonic() - t0
    running = busy.is_alive()
    busy.join()
    assert running, "the completion ended before the probe: give it more tokens"
    assert answered < 2.0
