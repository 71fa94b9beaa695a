"""The agent contract (docs/agents.md): a user's callable (file and module form, sync and async,
OpenAI and LangChain messages, magv's tool executor), an HTTP agent (retries, timeouts, errors,
the call log), faults recorded per run, the agent recorded on every run and eval row, and the
examples under examples/ against the fake server. Slow tests run the examples on the embedded
model."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from magv.agents.contract import AgentTask
from magv.agents.external import read_reply
from magv.cli import main
from magv.config import Settings, settings_from_dict
from magv.errors import BadInput
from magv.llm import LLMClient
from magv.pipeline.worker import CollectingRecorder, WorkerContext, close_resources
from magv.store import Store
from tests.fake_agents import AgentScript
from tests.fakellm import FakeLLMServer
from tests.llm_fixtures import default_model_server  # noqa: F401
from tests.pipeline_helpers import fake_pipeline_env
from tests.service_helpers import ServedApp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ORDER = "W1001079"  # an order of the retail data (a seed's)

AGENTS = '''
import asyncio

def tool_loop(task):
    """Looks an order up through magv's sandbox; answers in OpenAI form."""
    result = task.call_tool("get_order_details", {"order_id": "ORDER_ID"})
    return {"messages": [
        {"role": "user", "content": task.question},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
          "function": {"name": "get_order_details", "arguments": '{"order_id": "ORDER_ID"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": result},
        {"role": "assistant", "content": "Your order is on its way."}],
        "prompt_tokens": 11, "completion_tokens": 5, "cost_usd": 0.002}

async def langchain_form(task):
    await asyncio.sleep(0)
    return [{"type": "ai", "content": "", "tool_calls": [{"name": "track_shipment", "args": {"tracking_number": "X"}, "id": "a"}]},
            {"type": "tool", "tool_call_id": "a", "content": '{"error": "not_found: no parcel X"}'},
            {"type": "ai", "content": "I could not find it."}]

from pydantic import BaseModel

class Message(BaseModel):  # a message object with model_dump, as LangChain's are
    type: str
    content: str
    tool_calls: list = []
    tool_call_id: str | None = None

def objects(task):
    return {"messages": [Message(type="human", content=task.question),
                         Message(type="ai", content="", tool_calls=[{"name": "track_shipment", "args": {"tracking_number": "X"}, "id": "a"}]),
                         Message(type="tool", content='{"status": "in transit"}', tool_call_id="a"),
                         Message(type="ai", content="In transit.")], "prompt_tokens": 3}

def raises(task):
    raise RuntimeError("the agent broke")

def not_messages(task):
    return {"answer": 42}

def slow(task):
    import time
    time.sleep(2)

def slow_then_tool(task):
    import pathlib, time
    time.sleep(0.6)
    try:
        task.call_tool("get_order_details", {"order_id": "ORDER_ID"})
        outcome = "called"
    except RuntimeError as exc:
        outcome = str(exc)
    pathlib.Path(__file__).with_suffix(".log").write_text(outcome)
'''.replace("ORDER_ID", ORDER)


def _settings(tmp_path: Path, url: str, **responder) -> Settings:
    return Settings(llm={"endpoints": [url]}, domain_data_dir=tmp_path / "domains", database=tmp_path / "m.duckdb",
                    responder=responder)  # fmt: skip


def _run(settings: Settings, question: str = "Where is my order?", recorder=None):
    ctx = WorkerContext(settings)

    async def go():
        async with LLMClient(settings, recorder=recorder) as client:
            return await ctx.run_agent(client, question, run_index=1, context_key="test")

    try:
        return asyncio.run(go())
    finally:
        close_resources()


@pytest.fixture
def agents_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_agents.py"
    path.write_text(AGENTS)
    return path


def test_a_callable_runs_tools_in_magv_sandbox_and_its_messages_become_the_run(tmp_path, agents_file):
    result, identity = _run(_settings(tmp_path, "http://127.0.0.1:9", agent=f"{agents_file}:tool_loop",
                                      agent_version="v1"))  # fmt: skip
    t = result.trajectory
    assert t.status == "ok" and t.response == "Your order is on its way."
    assert [c.canonical() for c in t.calls] == [f'get_order_details({{"order_id":"{ORDER}"}})']
    assert t.steps[0].result["order_id"] == ORDER  # the real retail database answered
    assert (result.prompt_tokens, result.completion_tokens, result.cost_usd) == (11, 5, 0.002)
    assert identity.kind == "callable" and identity.version == "v1" and len(identity.hash) == 12


def test_an_async_callable_in_langchain_form_and_a_tool_error(tmp_path, agents_file):
    result, _ = _run(_settings(tmp_path, "http://127.0.0.1:9", agent=f"{agents_file}:langchain_form"))
    t = result.trajectory
    assert t.status == "ok" and t.tool_names() == ["track_shipment"]
    assert t.steps[0].error == "not_found: no parcel X" and t.response == "I could not find it."


def test_message_objects_are_logged_as_plain_json_and_replay_to_the_same_run(tmp_path, agents_file):
    recorder = CollectingRecorder()
    result, _ = _run(
        _settings(tmp_path, "http://127.0.0.1:9", agent=f"{agents_file}:objects"), recorder=recorder
    )
    assert result.trajectory.status == "ok" and result.trajectory.steps[0].result == {"status": "in transit"}
    [call] = recorder.calls
    task = AgentTask(
        question="Where is my order?", run_index=1, seed=1, tools=[], system_prompt="", max_steps=6
    )
    assert read_reply(json.loads(json.dumps(call.response)), task, "replay").trajectory == result.trajectory


def test_a_module_spec_is_imported(tmp_path, agents_file, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    result, identity = _run(_settings(tmp_path, "http://127.0.0.1:9", agent="my_agents:langchain_form"))
    assert result.trajectory.status == "ok" and identity.name == "my_agents:langchain_form"
    sys.modules.pop("my_agents", None)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("raises", "RuntimeError: the agent broke"),
        ("not_messages", 'expected a list of chat messages or {"messages": [...]}'),
        ("missing_function", "has no function 'missing_function'"),
    ],
)
def test_agent_faults_are_recorded_on_the_run_and_logged(tmp_path, agents_file, spec, expected):
    recorder = CollectingRecorder()
    result, _ = _run(
        _settings(tmp_path, "http://127.0.0.1:9", agent=f"{agents_file}:{spec}"), recorder=recorder
    )
    assert result.trajectory.status == "llm_error" and expected in result.llm_errors[0]
    [call] = recorder.calls
    assert call.role == "agent" and call.error == result.llm_errors[0] and call.response is None


def test_a_callable_past_its_timeout_is_a_fault(tmp_path, agents_file):
    result, _ = _run(
        _settings(tmp_path, "http://127.0.0.1:9", agent=f"{agents_file}:slow", agent_timeout_s=0.3)
    )
    assert result.trajectory.status == "llm_error" and "no answer within 0.3s" in result.llm_errors[0]
    assert result.latency_s < 1.5  # the run is given up; the thread of a sync agent ends on its own


def test_a_sync_callable_that_timed_out_can_call_no_more_tools(tmp_path, agents_file):
    """Its thread goes on (Python cannot stop it): its next tool call is refused, so it opens no
    sandbox session no one closes and stops calling the model for a lost run."""
    import time

    result, _ = _run(
        _settings(tmp_path, "http://127.0.0.1:9", agent=f"{agents_file}:slow_then_tool", agent_timeout_s=0.2)
    )
    assert result.trajectory.status == "llm_error"
    log = agents_file.with_suffix(".log")
    deadline = time.monotonic() + 10
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text() == "this run is over (finished or timed out): no more tool calls"


def test_a_bad_agent_on_the_command_line_is_exit_2_before_any_work(tmp_path, agents_file, capsys):
    assert main(["eval", "--agent", f"{agents_file}:nope", "--limit", "1"]) == 2
    assert "has no function 'nope'" in capsys.readouterr().err
    assert main(["eval", "--agent", "no/such/file.py:agent"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "data" / "magv.duckdb").exists()
    with pytest.raises(BadInput, match="not both"):
        settings_from_dict({"responder": {"agent": "a:b", "agent_url": "http://x"}})


# -- the HTTP agent -------------------------------------------------------------------------------


class Service:
    """An HTTP agent whose replies follow a script: one entry per request."""

    def __init__(self, script: list):
        self.script = list(script)
        self.bodies: list[dict] = []

    async def handle(self, request: Request) -> Response:
        self.bodies.append(await request.json())
        kind = self.script.pop(0) if self.script else "ok"
        if kind == "sleep":
            await asyncio.sleep(2)
        if kind in ("500", "429", "400"):
            return JSONResponse({"error": kind}, status_code=int(kind))
        if kind == "not json":
            return Response("<html>", media_type="text/html")
        question = self.bodies[-1]["question"]
        return JSONResponse([{"role": "user", "content": question}, {"role": "assistant", "content": "done"}])

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/agent", self.handle, methods=["POST"])])


def test_http_agent_is_sent_the_task_and_retries_server_faults(tmp_path):
    service = Service(["500", "429", "ok"])
    recorder = CollectingRecorder()
    with ServedApp(service.app()) as served:
        result, identity = _run(_settings(tmp_path, "http://127.0.0.1:9", agent_url=f"{served.url}/agent"),
                                recorder=recorder)  # fmt: skip
    assert result.trajectory.status == "ok" and result.trajectory.response == "done"
    body = service.bodies[0]
    assert body["question"] == "Where is my order?" and body["run_index"] == 1 and body["max_steps"] == 6
    assert {t["function"]["name"] for t in body["tools"]} >= {"get_order_details", "track_shipment"}
    assert body["llm"]["base_url"] == "http://127.0.0.1:9" and len(service.bodies) == 3
    [call] = recorder.calls
    assert (
        call.role == "agent" and call.retries == 2 and call.error is None and call.endpoint == identity.name
    )


@pytest.mark.parametrize(
    ("script", "expected", "requests"),
    [
        (["400"], "HTTP 400", 1),  # refused: not retried
        (["sleep", "sleep"], "timeout after 0.5s (after 1 retries)", 2),
        (["not json"], "reply is not JSON", 1),
    ],
)
def test_http_agent_faults_are_recorded_per_run(tmp_path, script, expected, requests):
    service = Service(script)
    with ServedApp(service.app()) as served:
        result, _ = _run(_settings(tmp_path, "http://127.0.0.1:9", agent_url=f"{served.url}/agent",
                                   agent_timeout_s=0.5, agent_retries=1))  # fmt: skip
    assert result.trajectory.status == "llm_error" and expected in result.llm_errors[0]
    assert len(service.bodies) == requests


def test_http_agent_that_is_down_is_a_connection_fault(tmp_path):
    result, _ = _run(_settings(tmp_path, "http://127.0.0.1:9", agent_url="http://127.0.0.1:9/agent",
                               agent_retries=0))  # fmt: skip
    assert result.trajectory.status == "llm_error" and "connection error" in result.llm_errors[0]


# -- through the pipeline and eval (fake model server) --------------------------------------------


def test_magv_run_with_the_example_agent_records_it_on_every_run(tmp_path, capsys, prefect_harness):
    """Example 1 (openai SDK loop) answers the pipeline's questions through the fake server's
    scripted native tool calls; every run, alternates included, says which agent answered."""
    with fake_pipeline_env(tmp_path):
        code = main(["run", "--questions", "4", "--runs", "2", "--alternates", "1", "--agent",
                     f"{EXAMPLES}/openai_loop.py:agent", "--agent-version", "v1", "--json"])  # fmt: skip
        assert code == 0, capsys.readouterr()
    with Store(tmp_path / "magv.duckdb", read_only=True) as store:
        runs = store.runs()
        origins = {r["origin"] for r in store.query("SELECT DISTINCT origin FROM questions")}
        calls = store.scalar("SELECT count(*) FROM llm_calls WHERE role = 'agent'")
    assert runs and {"seed", "alternate"} <= origins
    agents = {(r.agent["kind"], r.agent["name"].rsplit("/", 1)[-1], r.agent["version"]) for r in runs}
    assert agents == {("callable", "openai_loop.py:agent", "v1")}
    assert sum(r.trajectory.status == "ok" for r in runs) == len(runs) and calls == len(runs)
    assert any(r.trajectory.calls for r in runs)


def _eval(tmp_path: Path, capsys, *args: str) -> dict:
    seeds = [json.loads(line) for line in (Path(__file__).parent.parent / "magv/domains/retail/seeds.jsonl").read_text().splitlines() if line.strip()]  # fmt: skip
    path = tmp_path / "marked.jsonl"
    path.write_text(
        "".join(json.dumps({**s, "question": f"{s['question']} [{s['id']}]"}) + "\n" for s in seeds[:5])
    )
    script = AgentScript("retail", wrong_question_rate=0, wrong_run_rate=0)
    with FakeLLMServer(script) as srv:
        env = {
            "MAGV_LLM__ENDPOINTS": json.dumps([srv.base_url]),
            "MAGV_DOMAIN_DATA_DIR": str(tmp_path / "domains"),
        }
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            code = main(["eval", "--questions", str(path), "--json", *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_magv_eval_with_the_example_agents_scores_them_against_gold(tmp_path, capsys, monkeypatch):
    """The three examples under `magv eval`: the script follows the gold calls, so all are exact."""
    out = _eval(tmp_path, capsys, "--agent", f"{EXAMPLES}/openai_loop.py:agent",
                "--compare", f"agent={EXAMPLES}/langgraph_agent.py:agent")  # fmt: skip
    loop, graph = out["configs"]
    assert loop["summary"]["strict_args"] == graph["summary"]["strict_args"] == 1.0
    assert loop["agent"]["kind"] == graph["agent"]["kind"] == "callable"
    assert graph["agent"]["name"].endswith("langgraph_agent.py:agent")
    sys.path.insert(0, str(EXAMPLES))
    import http_agent

    monkeypatch.setenv("AGENT_DATA_DIR", str(tmp_path / "domains"))
    with ServedApp(http_agent.app) as served:
        out = _eval(tmp_path, capsys, "--agent-url", f"{served.url}/agent", "--compare", "agent_version=b")
    a, b = out["configs"]
    assert a["summary"]["strict_args"] == b["summary"]["strict_args"] == 1.0
    assert a["agent"] == {"kind": "http", "name": f"{served.url}/agent", "hash": None, "version": None}
    assert b["agent"]["version"] == "b"


# -- the examples on the embedded model -----------------------------------------------------------


def _eval_embedded(server, monkeypatch, capsys, *agent: str) -> dict:
    """Two retail seeds, at most three steps: a few calls per example keep CI time small."""
    for key, value in {"MAGV_LLM__ENDPOINTS": json.dumps([server.url]), "MAGV_LLM__TIMEOUT_S": "300",
                       "MAGV_PIPELINE__CONCURRENCY": "1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    code = main(["eval", "--questions", "seeds", "--limit", "2", "--max-steps", "3", "--temperature", "0",
                 "--json", *agent])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def _assert_talked_to_the_model(out: dict) -> None:
    """Every run reached the model and came back as a conversation magv could read."""
    [config] = out["configs"]
    s = config["summary"]
    assert s["questions"] == 2 and s["llm_errors"] == 0, config
    assert s["total_tokens"] > 0 and s["tool_calls"] > 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_openai_loop_example_on_the_embedded_model(default_model_server, monkeypatch, capsys):  # noqa: F811
    _assert_talked_to_the_model(_eval_embedded(default_model_server, monkeypatch, capsys, "--agent",
                                               f"{EXAMPLES}/openai_loop.py:agent"))  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_langgraph_example_on_the_embedded_model(default_model_server, monkeypatch, capsys):  # noqa: F811
    _assert_talked_to_the_model(_eval_embedded(default_model_server, monkeypatch, capsys, "--agent",
                                               f"{EXAMPLES}/langgraph_agent.py:agent"))  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_http_example_on_the_embedded_model(default_model_server, monkeypatch, capsys, tmp_path):  # noqa: F811
    sys.path.insert(0, str(EXAMPLES))
    import http_agent

    monkeypatch.setenv("AGENT_DATA_DIR", str(tmp_path / "agent-data"))
    with ServedApp(http_agent.app) as served:
        out = _eval_embedded(default_model_server, monkeypatch, capsys, "--agent-url", f"{served.url}/agent")
    _assert_talked_to_the_model(out)


# -- report --compare of two agent versions, a domain without a database --------------------------


def test_report_compare_names_each_sides_agent_and_the_questions_that_regressed(tmp_path, capsys):
    from tests.report_fixtures import build_report_store

    sides = {"v1": tmp_path / "v1.duckdb", "v2": tmp_path / "v2.duckdb"}
    for (version, path), quality in zip(sides.items(), (0.95, 0.4)):
        build_report_store(path, seed=1, quality=quality, pipeline_run_id=version)
        agent = json.dumps({"kind": "callable", "name": "bot:answer", "hash": "abc", "version": version})
        with Store(path) as store:
            store.con.execute("UPDATE runs SET agent = ?", [agent])
    code = main(
        ["report", "--compare", str(sides["v1"]), str(sides["v2"]), "--out", str(tmp_path / "c"), "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["agents"][0].startswith("bot:answer@v1 (") and out["agents"][1].startswith("bot:answer@v2 (")
    compared = json.loads((tmp_path / "c" / "compare.json").read_text())
    q = compared["questions"]
    assert q["shared"] > 0 and q["a_correct"] > q["b_correct"]
    assert out["question_regressions"] and all(r["a"] >= 0.5 > r["b"] for r in out["question_regressions"])
    assert "labelled correct on shared questions" in compared["regressions"]
    html = (tmp_path / "c" / "compare.html").read_text()
    assert 'id="question-regressions"' in html and "bot:answer@v2" in html


SPECS_ONLY = """
name = "helpdesk"
system_prompt = "You help the customers of a shop."
[[tools]]
name = "lookup_order"
description = "Look an order up."
parameters.order_id = { type = "string" }
"""


def test_a_domain_of_specs_and_seeds_needs_an_agent_and_cannot_run_its_gold(tmp_path, agents_file, capsys):
    folder = tmp_path / "helpdesk"
    folder.mkdir()
    (folder / "domain.toml").write_text(SPECS_ONLY)
    (folder / "seeds.jsonl").write_text(json.dumps({"id": "s1", "question": "Where is order A1?",
                                                    "trajectory": [{"name": "lookup_order", "arguments": {"order_id": "A1"}}]}) + "\n")  # fmt: skip
    assert main(["domain", "check", str(folder), "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["ok"] and checked["executed"] is False and "cannot execute the gold" in checked["note"]
    assert main(["eval", "--domain", str(folder)]) == 2  # magv's responder has no tools to run
    assert "has no database" in capsys.readouterr().err
    (folder / "agent.py").write_text(
        "def answer(task):\n"
        "    assert task.executor is None\n"
        "    return [{'role': 'assistant', 'content': None, 'tool_calls': [{'id': 'c', 'type': 'function',\n"
        "             'function': {'name': 'lookup_order', 'arguments': '{\"order_id\": \"A1\"}'}}]},\n"
        "            {'role': 'tool', 'tool_call_id': 'c', 'content': '{\"status\": \"shipped\"}'},\n"
        "            {'role': 'assistant', 'content': 'It has shipped.'}]\n"
    )
    assert main(["eval", "--domain", str(folder), "--agent", f"{folder}/agent.py:answer", "--json"]) == 0
    [config] = json.loads(capsys.readouterr().out)["configs"]
    assert config["summary"]["strict_args"] == 1.0 and config["summary"]["answered"] == 1.0
