"""`magv llm calls|stats` over a real call log, and `magv serve vllm`."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from magv.cli import main
from magv.config import Settings
from magv.llm import LLMClient
from magv.llm.servers import vllm_installed
from magv.store import Store
from tests.fakellm import FakeLLMServer


@pytest.fixture
def call_log(tmp_path, monkeypatch):
    """A database with 3 responder calls (one failed after retries) and 1 judge call."""
    db = tmp_path / "calls.duckdb"
    monkeypatch.setenv("MAGV_DATABASE", str(db))
    counter = itertools.count()

    def handler(body):
        return {"fault": "500"} if next(counter) in (1, 2) else "ok"

    with FakeLLMServer(handler=handler) as srv, Store(db) as store:
        s = Settings(database=db)
        s.llm.retries = 1

        async def calls():
            async with LLMClient(s, recorder=store, endpoints=[srv.base_url]) as client:
                client.backoff_base_s = 0.01
                for i in range(3):
                    await client.chat(
                        "responder", [{"role": "user", "content": f"q{i}"}], template="responder.j2"
                    )
                await client.chat("judge", [{"role": "user", "content": "verdict?"}])

        asyncio.run(calls())
    return db


def test_llm_calls_json(call_log, capsys):
    assert main(["llm", "calls", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4
    assert {r["role"] for r in rows} == {"responder", "judge"}
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 1 and "HTTP 500" in failed[0]["error"] and failed[0]["retries"] == 1
    ok = next(r for r in rows if not r["error"])
    assert isinstance(ok["request"], dict) and ok["request"]["messages"][0]["role"] == "user"
    assert ok["response"]["choices"][0]["message"]["content"] == "ok"


def test_llm_calls_filters_and_limits(call_log, capsys):
    assert main(["llm", "calls", "--role", "judge", "--json"]) == 0
    assert [r["role"] for r in json.loads(capsys.readouterr().out)] == ["judge"]
    assert main(["llm", "calls", "-n", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["llm", "calls"]) == 0
    assert "responder" in capsys.readouterr().out


def test_llm_stats(call_log, capsys):
    assert main(["llm", "stats", "--json"]) == 0
    stats = {r["role"]: r for r in json.loads(capsys.readouterr().out)}
    assert stats["responder"]["calls"] == 3 and stats["responder"]["errors"] == 1
    assert stats["responder"]["retries"] == 1
    assert stats["judge"]["calls"] == 1 and stats["judge"]["errors"] == 0
    assert stats["responder"]["prompt_tokens"] > 0
    assert main(["llm", "stats"]) == 0
    assert "judge" in capsys.readouterr().out


def test_serve_vllm_dry_run_prints_the_command(capsys):
    code = main(["serve", "vllm", "--model", "Qwen/Qwen2.5-7B-Instruct", "--port", "8111",
                 "--tool-call-parser", "hermes", "--tensor-parallel-size", "2", "--dry-run",
                 "--", "--enforce-eager"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "serve Qwen/Qwen2.5-7B-Instruct" in out
    assert "--port 8111" in out and "--tensor-parallel-size 2" in out and "--enforce-eager" in out


@pytest.mark.skipif(vllm_installed(), reason="vllm is installed here")
def test_serve_vllm_without_vllm_says_how_to_install(capsys):
    assert main(["serve", "vllm", "--model", "m", "--port", "8112"]) == 1
    assert "gpu extra" in capsys.readouterr().err


def test_llm_calls_show_prompt_and_response(call_log, capsys):
    assert main(["llm", "calls", "--role", "responder"]) == 0
    out = capsys.readouterr().out
    assert "q0" in out and "q2" in out  # the prompts
    assert "response:" in out and "\nok\n" in out  # the fake server's reply
    assert "error:" in out and "HTTP 500" in out
    assert out.rstrip().endswith("3 calls (newest first)")


def test_llm_calls_query_and_model_filters(call_log, capsys):
    assert main(["llm", "calls", "-q", "VERDICT?", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["role"] for r in rows] == ["judge"]
    assert main(["llm", "calls", "-q", "q1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    model = rows[0]["model"]
    assert main(["llm", "calls", "-m", model, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4


def test_unknown_filter_values_are_refused_with_the_valid_ones(call_log, capsys):
    assert main(["llm", "calls", "--role", "responer"]) == 2
    err = capsys.readouterr().err
    assert "'responer'" in err and "responder" in err and "investigator" in err
    assert main(["llm", "calls", "-m", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_llm_calls_table_keeps_ids_whole_at_80_columns(call_log, capsys, monkeypatch):
    from magv.commands import common

    monkeypatch.setattr(common.console, "width", 80)
    assert main(["llm", "calls", "--short", "--json"]) == 0
    ids = [r["id"] for r in json.loads(capsys.readouterr().out)]
    assert main(["llm", "calls", "--short"]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines())
    assert all(i in out for i in ids)
    assert "…" not in out


def test_llm_stats_shows_the_prompt_cache_hit_rate(tmp_path, monkeypatch, capsys):
    from magv.models import LLMCall

    db = tmp_path / "magv.duckdb"
    monkeypatch.setenv("MAGV_DATABASE", str(db))

    def call(i, role, prompt, cached):
        usage = {"prompt_tokens": prompt, "completion_tokens": 5}
        if cached is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return LLMCall(id=f"c{i}", key=f"k{i}", role=role, model="m", endpoint="http://x/v1", request={},
                       response={"choices": [], "usage": usage}, prompt_tokens=prompt, completion_tokens=5)  # fmt: skip

    with Store(db) as store:
        store.add_llm_calls([call(1, "responder", 800, 0), call(2, "responder", 900, 850),
                             call(3, "responder", 100, None), call(4, "judge", 300, None)])  # fmt: skip
    assert main(["llm", "stats", "--json"]) == 0
    rows = {r["role"]: r for r in json.loads(capsys.readouterr().out)}
    # over the calls whose server reported cached tokens: 850 of 1700 prompt tokens
    assert (
        rows["responder"]["cached_prompt_tokens"] == 850 and rows["responder"]["prompt_cache_hit_rate"] == 0.5
    )
    assert rows["judge"]["cached_prompt_tokens"] is None and rows["judge"]["prompt_cache_hit_rate"] is None
    assert main(["llm", "stats"]) == 0
    assert "hit" in capsys.readouterr().out
