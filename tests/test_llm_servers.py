"""Managed servers: the vLLM command line and health wait (a fake server stands in for vllm), the
llama.cpp command line, reuse of a running server, managed endpoints, the Gemma chat format."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from magv.config import RoleSettings, Settings
from magv.errors import BadInput, RunFailed
from magv.gguf.registry import DEFAULT_MODEL
from magv.llm import LlamaServer, VLLMServer, managed_endpoints, servers
from magv.llm.llama_serve import _decoded_arguments, gemma_prompt
from magv.llm.servers import vllm_installed
from tests.fakellm import FakeLLMServer

REPO = Path(__file__).resolve().parent.parent
FAKE = [sys.executable, str(REPO / "tests" / "fakellm.py")]


def free_port() -> int:
    with FakeLLMServer() as srv:  # binds port 0; the port is free again after
        return srv.port


def test_vllm_command_line():
    s = Settings()
    s.vllm.tool_call_parser = "llama3_json"
    s.vllm.max_model_len = 16384
    s.vllm.gpu_memory_utilization = 0.85
    s.vllm.tensor_parallel_size = 2
    server = VLLMServer(
        s, model="meta-llama/Llama-3.1-8B-Instruct", port=8123, extra_args=["--enforce-eager"]
    )
    cmd = server.command()
    assert cmd[1:3] == ["serve", "meta-llama/Llama-3.1-8B-Instruct"]
    flags = " ".join(cmd[3:])
    for expected in ["--host 127.0.0.1", "--port 8123", "--enable-auto-tool-choice",
                     "--tool-call-parser llama3_json", "--max-model-len 16384",
                     "--gpu-memory-utilization 0.85", "--tensor-parallel-size 2"]:  # fmt: skip
        assert expected in flags
    assert cmd[-1] == "--enforce-eager"
    assert server.url == "http://127.0.0.1:8123/v1"


def test_vllm_needs_a_model():
    with pytest.raises(BadInput, match="vllm.model"):
        VLLMServer(Settings())


@pytest.mark.skipif(vllm_installed(), reason="vllm is installed here")
def test_vllm_missing_says_how_to_install():
    with pytest.raises(RunFailed, match=r"pip install 'magv\[gpu\]'"):
        VLLMServer(Settings(), model="m", port=free_port()).start()


@pytest.mark.integration
def test_vllm_start_waits_for_health_and_stops(tmp_path):
    port = free_port()
    server = VLLMServer(Settings(), model="some/model", port=port, log_path=tmp_path / "vllm.log",
                        executable=[*FAKE, "--startup-delay", "1.0"])  # fmt: skip
    t0 = time.monotonic()
    with server:
        waited = time.monotonic() - t0
        assert server.health() and not server.reused
        assert waited >= 1.0  # it really waited for /health
        pid = server.proc.pid
    assert not server.health()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.integration
def test_vllm_health_timeout_stops_the_process(tmp_path):
    s = Settings()
    s.vllm.startup_timeout_s = 0.5
    server = VLLMServer(s, model="m", port=free_port(), log_path=tmp_path / "v.log",
                        executable=[*FAKE, "--startup-delay", "30"])  # fmt: skip
    with pytest.raises(RunFailed, match="did not answer"):
        server.start()
    assert server.proc is None


@pytest.mark.integration
def test_server_that_dies_while_starting_reports_its_log(tmp_path):
    code = "import sys; print('CUDA out of memory'); sys.exit(3)"
    server = VLLMServer(Settings(), model="m", port=free_port(), log_path=tmp_path / "v.log",
                        executable=[sys.executable, "-c", code, "--"])  # fmt: skip
    with pytest.raises(RunFailed, match=r"exited with code 3(.|\n)*CUDA out of memory"):
        server.start()


def test_a_running_server_is_reused_and_left_running():
    with FakeLLMServer() as srv:
        s = Settings()
        s.llama.port = srv.port
        llama = LlamaServer(s, gguf="/nonexistent.gguf")  # would fail if it tried to start one
        with llama:
            assert llama.reused and llama.proc is None and llama.url == srv.base_url
        vllm = VLLMServer(s, model="m", port=srv.port, executable=["false"])
        with vllm:
            assert vllm.reused
        assert srv.counts["health"] >= 2  # both probe /health (magv's llama launcher serves one)
        assert llama.health()  # still up


def test_a_plain_llama_cpp_server_is_probed_at_its_model_list():
    """llama-cpp-python's own server has no /health (404): its /v1/models is the probe."""
    from starlette.responses import JSONResponse

    class NoHealth(FakeLLMServer):
        async def _health(self, request):
            return JSONResponse({"detail": "Not Found"}, status_code=404)

    with NoHealth() as srv:
        s = Settings()
        s.llama.port = srv.port
        llama = LlamaServer(s, gguf="/nonexistent.gguf")
        with llama:
            assert llama.reused
        assert srv.counts["models"] >= 1


def test_a_busy_server_is_waited_for_not_started_twice():
    """A listener that does not answer /health at first (llama.cpp busy with a long prompt) is
    waited for; one that never answers is an error naming the port, and no second server starts."""
    with FakeLLMServer() as srv:
        s = Settings()
        s.llama.port = srv.port
        s.llama.startup_timeout_s = 5
        llama = LlamaServer(s, gguf="/nonexistent.gguf")
        answers = iter([False, False, True])
        llama.health = lambda timeout=2.0: next(answers)
        with llama:
            assert llama.reused and llama.proc is None
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts, never answers HTTP
        s = Settings()
        s.llama.port = listener.getsockname()[1]
        s.llama.startup_timeout_s = 0.5
        with pytest.raises(RunFailed, match=f"port {s.llama.port} is taken"):
            LlamaServer(s, gguf="/nonexistent.gguf").start()


def test_llama_command_line(tmp_path):
    gguf = tmp_path / "gemma-test.gguf"
    gguf.write_bytes(b"GGUF")
    s = Settings()
    s.llama.n_threads = 2
    s.llama.n_ctx = 4096
    cmd = LlamaServer(s, gguf=gguf, port=9001).command()
    args = " ".join(cmd)
    assert cmd[:3] == [sys.executable, "-m", "magv.llm.llama_serve"]
    assert f"--watch-parent {os.getpid()}" in args
    for expected in [f"--model {gguf}", f"--model_alias {s.llm.model}", "--host 127.0.0.1", "--port 9001",
                     "--n_ctx 4096", "--cache true", "--cache_type ram", "--logits_all false",
                     "--chat_format magv-gemma", "--n_threads 2"]:  # fmt: skip
        assert expected in args
    other = tmp_path / "qwen.gguf"
    other.write_bytes(b"GGUF")
    assert "--chat_format" not in LlamaServer(s, gguf=other).command()  # the GGUF's own template
    s.llama.n_threads = None  # every CPU this process may use, not llama-cpp-python's half
    cpus = len(os.sched_getaffinity(0))
    assert f"--n_threads {cpus} --n_threads_batch {cpus}" in " ".join(LlamaServer(s, gguf=other).command())


def test_llama_command_line_for_a_named_model(tmp_path, monkeypatch):
    monkeypatch.setattr(servers, "assemble", lambda spec: tmp_path / spec.filename)
    s = Settings(llama={"model": "gemma-3-270m"})
    cmd = " ".join(LlamaServer(s, port=9001).command())
    assert f"--model {tmp_path}/gemma-3-270m-" in cmd and "--chat_format magv-gemma" in cmd
    assert "--model_alias gemma-3-270m" in cmd  # the call log names the model that answered
    cmd = LlamaServer(Settings(), port=9001).command()
    assert "--chat_format" not in cmd and f"--model_alias {DEFAULT_MODEL}" in " ".join(cmd)
    assert LlamaServer(Settings(llm={"model": "mine"}, llama={"model": "gemma-3-270m"})).model_alias == "mine"


def test_template_messages_get_tool_arguments_as_objects():
    messages = [
        {"role": "user", "content": "Where is 7?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "get_order", "arguments": "{\"order_id\": 7}"}}]},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "x", "arguments": "not json"}}]},
    ]  # fmt: skip
    out = _decoded_arguments(messages)
    assert out[1]["tool_calls"][0]["function"]["arguments"] == {"order_id": 7}
    assert out[2]["tool_calls"][0]["function"]["arguments"] == "not json"  # left for the template
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == '{"order_id": 7}'  # not mutated


def test_llama_missing_gguf_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match=r"llama.gguf: .*missing.gguf: no such file"):
        LlamaServer(Settings(), gguf=tmp_path / "missing.gguf", port=free_port()).start()


def test_managed_endpoints_with_every_role_configured_starts_nothing():
    s = Settings()
    s.llm.endpoints = ["http://gpu1:8000/v1"]
    s.llm.roles = {"judge": RoleSettings(endpoints=["http://judge:8000/v1"])}
    s.llama.gguf = "/nonexistent.gguf"  # starting llama.cpp would raise
    with managed_endpoints(s) as endpoints:
        assert endpoints["judge"] == ["http://judge:8000/v1"]
        assert endpoints["responder"] == ["http://gpu1:8000/v1"]


def test_managed_endpoints_fill_unconfigured_roles_with_the_local_server():
    with FakeLLMServer() as srv:
        s = Settings()
        s.llama.port = srv.port
        s.llama.gguf = "/nonexistent.gguf"
        s.llm.roles = {"judge": RoleSettings(endpoints=["http://judge:8000/v1"])}
        with managed_endpoints(s) as endpoints:
            assert endpoints["judge"] == ["http://judge:8000/v1"]
            assert endpoints["responder"] == endpoints["investigator"] == [srv.base_url]
        assert srv.counts["health"] >= 1


def test_gemma_prompt_keeps_system_and_tool_messages():
    prompt = gemma_prompt([
        {"role": "system", "content": "TOOLS: get_order"},
        {"role": "user", "content": "Where is 7?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"function": {"name": "get_order", "arguments": "{\"order_id\": 7}"}}]},
        {"role": "tool", "content": "{\"status\": \"shipped\"}"},
    ])  # fmt: skip
    assert prompt.startswith("<start_of_turn>user\nTOOLS: get_order\n\nWhere is 7?<end_of_turn>\n")
    assert '<start_of_turn>model\n[{"tool": "get_order"' in prompt
    assert 'Tool result: {"status": "shipped"}' in prompt
    assert prompt.endswith("<start_of_turn>model\n")
    assert gemma_prompt([{"role": "system", "content": "Only this."}]).startswith(
        "<start_of_turn>user\nOnly this.<end_of_turn>"
    )


@pytest.mark.integration
def test_server_process_exits_when_its_parent_dies():
    """--watch-parent: a killed pipeline does not leave the model server behind."""
    child = (
        f"import sys, time; sys.path.insert(0, {str(REPO)!r}); "
        "from magv.llm.llama_serve import main; "
        "sys.modules['llama_cpp.server.__main__'] = type(sys)('stub'); "
        "sys.modules['llama_cpp.server.__main__'].main = lambda: time.sleep(60); "
        "main(['--watch-parent', sys.argv[1]])"
    )
    # sh starts the child in the background, prints its pid and exits at once
    out = subprocess.run(
        ["sh", "-c", f'{sys.executable} -c "$0" $$ >/dev/null 2>&1 & echo $!', child],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    pid = int(out.strip())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
