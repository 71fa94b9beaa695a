"""LLMClient against the fake OpenAI-compatible server: retries, recorded errors, balancing,
concurrency limits, the replay cache and the call log (a real DuckDB Store)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re

import pytest

from magv.config import RoleSettings, Settings
from magv.errors import BadInput
from magv.gguf.registry import DEFAULT_MODEL
from magv.llm import LLMClient
from magv.llm.liveness import ModelUnreachable
from tests.fakellm import FakeLLMServer

MESSAGES = [
    {"role": "system", "content": "You help customers."},
    {"role": "user", "content": "Where is order 7?"},
]


def make_settings(**llm) -> Settings:
    s = Settings()
    s.llm.retries = llm.pop("retries", 2)
    s.llm.timeout_s = llm.pop("timeout_s", 5.0)
    for key, value in llm.items():
        setattr(s.llm, key, value)
    return s


def fast_client(settings: Settings, **kw) -> LLMClient:
    client = LLMClient(settings, **kw)
    client.backoff_base_s = 0.01  # keep retries quick; the backoff itself is tested separately
    client.backoff_max_s = 0.05
    return client


def fault_first(kind: str, n: int = 1):
    """A handler that answers the first n requests with a fault, then normally."""
    counter = itertools.count()

    def handler(body):
        return {"fault": kind} if next(counter) < n else "fine, thanks"

    return handler


def run(coro):
    return asyncio.run(coro)


async def _chat(client: LLMClient, **kw):
    try:
        return await client.chat("responder", kw.pop("messages", MESSAGES), **kw)
    finally:
        await client.aclose()


def test_reply_is_parsed_and_logged_once(tmp_store):
    with FakeLLMServer(latency_s=0.02) as srv:
        client = fast_client(make_settings(), recorder=tmp_store, endpoints=[srv.base_url])
        result = run(_chat(client, template="responder.j2", template_hash="abc123"))
    assert result.ok and result.text and result.retries == 0 and not result.cached
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.latency_s >= 0.02
    rows = tmp_store.llm_calls()
    assert len(rows) == 1
    row = rows[0]
    assert row["id"] == result.call_id
    assert row["role"] == "responder" and row["model"] == DEFAULT_MODEL
    assert row["endpoint"] == srv.base_url
    assert (row["template"], row["template_hash"]) == ("responder.j2", "abc123")
    assert (
        row["prompt_tokens"] == result.prompt_tokens and row["completion_tokens"] == result.completion_tokens
    )
    assert row["latency_s"] == pytest.approx(result.latency_s)
    assert json.loads(row["request"])["messages"] == MESSAGES
    assert json.loads(row["response"])["choices"][0]["message"]["content"] == result.text
    assert row["error"] is None and row["retries"] == 0


def test_replay_cache_answers_identical_call_without_sending(tmp_store):
    with FakeLLMServer() as srv:
        settings = make_settings()

        async def calls():
            client = fast_client(settings, recorder=tmp_store, endpoints=[srv.base_url])
            first = await client.chat("responder", MESSAGES, seed=1, context_key="run-1")
            again = await client.chat("responder", MESSAGES, seed=1, context_key="run-1")
            other = await client.chat("responder", MESSAGES, seed=1, context_key="run-2")
            await client.aclose()
            return first, again, other

        first, again, other = run(calls())
        # A new client (a resumed pipeline) finds it in the store too.
        resumed = run(_chat(fast_client(settings, recorder=tmp_store, endpoints=[srv.base_url]),
                            seed=1, context_key="run-1"))  # fmt: skip
    assert srv.counts["chat"] == 2  # run-1 once, run-2 once
    assert again.cached and resumed.cached and not first.cached and not other.cached
    assert again.text == first.text == resumed.text
    assert again.prompt_tokens == first.prompt_tokens
    assert len(tmp_store.llm_calls()) == 2  # cached answers are not logged again


def test_failed_call_is_not_replayed(tmp_store):
    with FakeLLMServer(handler=fault_first("500", n=3)) as srv:
        settings = make_settings(retries=2)
        failed = run(_chat(fast_client(settings, recorder=tmp_store, endpoints=[srv.base_url])))
        retried = run(_chat(fast_client(settings, recorder=tmp_store, endpoints=[srv.base_url])))
    assert failed.error and not failed.cached
    assert retried.ok and not retried.cached
    assert [r["error"] is None for r in tmp_store.llm_calls()].count(True) == 1


@pytest.mark.parametrize(
    ("kind", "timeout_s"), [("timeout", 0.3), ("500", 5.0), ("429", 5.0), ("truncated", 5.0)]
)
def test_transient_fault_is_retried_to_success(tmp_store, kind, timeout_s):
    with FakeLLMServer(handler=fault_first(kind), timeout_sleep_s=5) as srv:
        client = fast_client(make_settings(retries=2, timeout_s=timeout_s), recorder=tmp_store,
                             endpoints=[srv.base_url])  # fmt: skip
        result = run(_chat(client))
    assert result.ok, result.error
    assert result.retries == 1
    assert srv.counts[kind] == 1 and srv.counts["chat"] == 2
    (row,) = tmp_store.llm_calls()
    assert row["retries"] == 1 and row["error"] is None and row["response"] is not None


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("timeout", "timeout after 0.3s"),
        ("500", "HTTP 500"),
        ("429", "HTTP 429"),
        ("truncated", "malformed response"),
    ],
)
def test_persistent_fault_becomes_a_recorded_error(tmp_store, kind, expected):
    with FakeLLMServer(faults={kind: 1.0}, timeout_sleep_s=5) as srv:
        client = fast_client(make_settings(retries=2, timeout_s=0.3), recorder=tmp_store,
                             endpoints=[srv.base_url])  # fmt: skip
        result = run(_chat(client))  # returns, does not raise
    assert result.error is not None and expected in result.error
    assert result.text is None and result.retries == 2
    assert srv.counts["chat"] == 3
    (row,) = tmp_store.llm_calls()
    assert expected in row["error"] and row["retries"] == 2 and row["response"] is None


def test_client_error_is_not_retried(tmp_store):
    with FakeLLMServer(faults={"400": 1.0}) as srv:
        client = fast_client(make_settings(retries=3), recorder=tmp_store, endpoints=[srv.base_url])
        result = run(_chat(client))
    assert "HTTP 400" in result.error and result.retries == 0
    assert srv.counts["chat"] == 1


def test_backoff_grows_with_jitter_and_honours_retry_after():
    client = LLMClient(make_settings())
    delays = [client._backoff(a, None) for a in range(6)]
    for attempt, d in enumerate(delays):
        step = min(client.backoff_max_s, client.backoff_base_s * 2**attempt)
        assert step / 2 <= d <= step
    assert delays[4] > delays[0]
    assert client._backoff(0, 3.0) >= 3.0
    assert client._backoff(0, 999.0) == client.backoff_max_s


def test_pipeline_goes_on_under_mixed_faults(tmp_store):
    faults = {"500": 0.15, "429": 0.1, "truncated": 0.1, "timeout": 0.05}
    with FakeLLMServer(faults=faults, seed=3, latency_s=0.01, timeout_sleep_s=5) as srv:
        client = fast_client(make_settings(retries=3, timeout_s=0.3, concurrency_per_endpoint=8),
                             recorder=tmp_store, endpoints=[srv.base_url])  # fmt: skip

        async def many():
            try:
                questions = [[{"role": "user", "content": f"question {i}"}] for i in range(40)]
                return await asyncio.gather(*(client.chat("responder", m) for m in questions))
            finally:
                await client.aclose()

        results = run(many())
    assert len(results) == 40
    assert sum(r.retries for r in results) > 0  # faults happened and were retried
    rows = tmp_store.llm_calls()
    assert len(rows) == 40  # one row per logical call, failed or not
    assert sum(r["error"] is None for r in rows) == sum(r.ok for r in results)
    # every request the server saw is a first attempt or a counted retry
    assert srv.counts["chat"] == 40 + sum(r["retries"] for r in rows)


def test_concurrency_limit_per_endpoint():
    with FakeLLMServer(latency_s=0.05) as srv:
        client = fast_client(make_settings(concurrency_per_endpoint=3), endpoints=[srv.base_url])

        async def many():
            try:
                return await asyncio.gather(*(client.chat("responder", MESSAGES, seed=i) for i in range(15)))
            finally:
                await client.aclose()

        results = run(many())
    assert all(r.ok for r in results)
    assert srv.max_in_flight == 3


def test_equal_endpoints_share_the_load():
    with FakeLLMServer(latency_s=0.03) as a, FakeLLMServer(latency_s=0.03) as b:
        client = fast_client(make_settings(concurrency_per_endpoint=2), endpoints=[a.base_url, b.base_url])

        async def many():
            try:
                return await asyncio.gather(*(client.chat("responder", MESSAGES, seed=i) for i in range(30)))
            finally:
                await client.aclose()

        results = run(many())
    assert all(r.ok for r in results)
    assert a.counts["chat"] + b.counts["chat"] == 30
    assert 10 <= a.counts["chat"] <= 20
    assert a.max_in_flight <= 2 and b.max_in_flight <= 2
    assert {r.endpoint for r in results} == {a.base_url, b.base_url}


def test_fast_endpoint_takes_more_work_than_a_slow_one():
    """Least outstanding at dispatch time: a queued burst goes where slots free up."""
    with FakeLLMServer(latency_s=0.25) as slow, FakeLLMServer(latency_s=0.02) as fast:
        client = fast_client(
            make_settings(concurrency_per_endpoint=2), endpoints=[slow.base_url, fast.base_url]
        )

        async def many():
            try:
                return await asyncio.gather(*(client.chat("responder", MESSAGES, seed=i) for i in range(40)))
            finally:
                await client.aclose()

        results = run(many())
    assert all(r.ok for r in results)
    assert fast.counts["chat"] > 3 * slow.counts["chat"]
    assert slow.counts["chat"] >= 2  # the slow one still takes its share while free


def test_a_cancelled_waiter_does_not_block_the_queue():
    with FakeLLMServer(latency_s=0.15) as srv:
        client = fast_client(make_settings(concurrency_per_endpoint=1), endpoints=[srv.base_url])

        async def scenario():
            try:
                first = asyncio.create_task(client.chat("responder", MESSAGES, seed=1))
                await asyncio.sleep(0.02)
                queued = asyncio.create_task(client.chat("responder", MESSAGES, seed=2))
                await asyncio.sleep(0.02)
                queued.cancel()
                third = await asyncio.wait_for(client.chat("responder", MESSAGES, seed=3), timeout=3)
                return await first, third
            finally:
                await client.aclose()

        first, third = run(scenario())
    assert first.ok and third.ok
    assert srv.counts["chat"] == 2


def test_llama_cpp_response_format_dialect_is_learnt():
    """llama-cpp-python's server refuses the json_schema form; the client resends the form it
    turns into a grammar and uses that from then on."""
    rf = {"type": "json_schema",
          "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"n": {"type": "integer"}},
                                                  "required": ["n"]}}}  # fmt: skip
    with FakeLLMServer(json_schema_format=False) as srv:
        client = fast_client(make_settings(), endpoints=[srv.base_url])

        async def two():
            try:
                return [
                    await client.chat("responder", MESSAGES, response_format=rf, seed=i) for i in range(2)
                ]
            finally:
                await client.aclose()

        results = run(two())
    assert all(r.ok and r.retries == 0 for r in results)
    assert isinstance(json.loads(results[0].text)["n"], int)
    assert srv.counts["rejected_format"] == 1 and srv.counts["reply"] == 2
    assert srv.requests[-1]["response_format"] == {
        "type": "json_object",
        "schema": rf["json_schema"]["schema"],
    }


def test_role_settings_and_endpoint_overrides():
    with FakeLLMServer() as a, FakeLLMServer() as b:
        settings = make_settings()
        settings.llm.roles = {"judge": RoleSettings(model="judge-model", temperature=0.0, max_tokens=17)}
        client = fast_client(settings, endpoints={"judge": [b.base_url], "responder": [a.base_url]})

        async def both():
            try:
                return (await client.chat("judge", MESSAGES), await client.chat("responder", MESSAGES))
            finally:
                await client.aclose()

        judged, answered = run(both())
    assert judged.endpoint == b.base_url and answered.endpoint == a.base_url
    sent = b.requests[0]
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("judge-model", 0.0, 17)
    assert a.requests[0]["model"] == DEFAULT_MODEL and a.requests[0]["max_tokens"] == 256


def test_configured_endpoints_are_used_without_override():
    with FakeLLMServer() as srv:
        settings = make_settings(endpoints=[srv.base_url])
        result = run(_chat(fast_client(settings)))
    assert result.ok and result.endpoint == srv.base_url


def test_no_endpoint_is_a_bad_input():
    client = LLMClient(make_settings())
    with pytest.raises(BadInput, match="no endpoint for role 'responder'"):
        run(_chat(client))


def test_unreachable_endpoint_is_recorded_and_named_as_down(tmp_store):
    """Every endpoint of the role refuses connections: the call is logged, then the client stops
    the work with a message that says the server is not answering (not slow), and where."""
    with FakeLLMServer() as srv:
        dead = srv.base_url
    client = fast_client(make_settings(retries=1), recorder=tmp_store, endpoints=[dead])
    with pytest.raises(ModelUnreachable, match=r"not answering \(connection refused\) at " + re.escape(dead)):
        run(_chat(client))
    [call] = tmp_store.llm_calls()
    assert "connection error" in call["error"] and "not answering" in call["error"] and call["retries"] == 1


def test_one_dead_endpoint_of_two_is_a_recorded_error_not_a_stop(tmp_store):
    """A role with another endpoint still up goes on: the failure is recorded on the call."""
    with FakeLLMServer() as srv:
        dead = srv.base_url
    with FakeLLMServer() as alive:
        client = fast_client(make_settings(retries=0), recorder=tmp_store, endpoints=[dead, alive.base_url])

        async def four_calls() -> list:
            try:  # one event loop: endpoints are picked in turn, so two calls land on the dead one
                return [await client.chat("responder", MESSAGES, seed=i) for i in range(4)]
            finally:
                await client.aclose()

        results = run(four_calls())
    assert any(r.error and "connection error" in r.error for r in results)
    assert any(r.ok for r in results)


def test_a_timeout_is_called_slow_not_down(tmp_store):
    """A server that takes the connection but does not answer in time is slow, not down."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections (the kernel's backlog) and never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        client = fast_client(make_settings(retries=0, timeout_s=0.5), recorder=tmp_store, endpoints=[url])
        result = run(_chat(client))
    assert "timeout after 0.5s" in result.error and "busy or slow, not down" in result.error


def test_one_client_serves_several_event_loops():
    """Stages run one asyncio.run each; the client must not hold on to a dead loop's pool."""
    with FakeLLMServer() as srv:
        client = fast_client(make_settings(), endpoints=[srv.base_url])
        first = asyncio.run(client.chat("responder", MESSAGES, seed=1))
        second = asyncio.run(client.chat("responder", MESSAGES, seed=2))
    assert first.ok and second.ok
