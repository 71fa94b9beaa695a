"""Model servers magv starts itself: the embedded llama.cpp server (default) and vLLM (GPU).

Both are OpenAI-compatible, so the client treats them like any configured endpoint; they differ only
in how they are started. A server already answering on the port is reused and left running.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from magv.config import ROLES, LlamaSettings, Settings
from magv.errors import BadInput, RunFailed
from magv.gguf.registry import DEFAULT_MODEL, EMBEDDED_HINT, assemble, get_model, model_path
from magv.llm import liveness
from magv.llm.llama_serve import GEMMA_FORMAT

GPU_HINT = "install magv's gpu extra on a host with a CUDA GPU: pip install 'magv[gpu]'"
# Saved llama.cpp states for prefix reuse (the KV cache of a conversation: ~28 KB a token with
# qwen2.5-coder-1.5b, ~20 KB with gemma-3-270m). 1 GiB holds the system prompts of every role and
# the last few conversations (the library default is 2 GiB).
PROMPT_CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class EmbeddedModel:
    """The GGUF the embedded server loads and the chat format it is prompted in."""

    path: Path
    chat_format: str | None  # None: the template inside the GGUF


def default_gguf() -> Path:
    """The default embedded model's GGUF, assembled into the model cache on first use."""
    return model_path(DEFAULT_MODEL)


def llama_threads(llama: LlamaSettings) -> int:
    """`[llama] n_threads`, else every CPU this process may use: llama-cpp-python's own default
    generates on half the cores, which on a small CPU box is one."""
    return llama.n_threads or len(os.sched_getaffinity(0))


def embedded_model(llama: LlamaSettings, gguf: str | Path | None = None) -> EmbeddedModel:
    """What `[llama]` asks for: a GGUF file (`gguf`, which wins) or a model of the registry (`model`)."""
    path = gguf if gguf is not None else llama.gguf
    if path is None:
        spec = get_model(llama.model)
        return EmbeddedModel(assemble(spec), spec.chat_format)
    p = Path(path).expanduser()
    if not p.is_file():
        raise BadInput(f"llama.gguf: {p}: no such file; expected a .gguf model file")
    # Gemma GGUFs carry no usable chat template; any other file is prompted with its own.
    return EmbeddedModel(p, GEMMA_FORMAT if "gemma" in p.name.lower() else None)


class _Managed:
    """A server subprocess: start, wait for health, stop. Subclasses say how to run and probe it."""

    name = "server"
    health_path = "/health"
    fallback_health_path: str | None = None  # probed when health_path answers 404

    def __init__(self, host: str, port: int, startup_timeout_s: float, log_path: Path | None):
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.reused = False
        self._stopping = False

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root_url}/v1"

    def command(self) -> list[str]:
        raise NotImplementedError

    def health(self, timeout: float = 2.0) -> bool:
        try:
            reply = httpx.get(self.root_url + self.health_path, timeout=timeout)
            if reply.status_code == 404 and self.fallback_health_path:
                reply = httpx.get(self.root_url + self.fallback_health_path, timeout=timeout)
            return reply.status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> _Managed:
        if self.proc is not None:
            return self
        if self.health():
            self.reused = True
            return self
        if self._port_taken():
            # Something listens but did not answer in time: a server busy with a long prompt (llama.cpp
            # answers between requests). Starting a second one could only fail to bind, so wait for it.
            self.wait_healthy()
            self.reused = True
            return self
        cmd = self.command()
        log = self._open_log()
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal reaches us; we stop it in order
            )
        except OSError as exc:
            raise RunFailed(f"{self.name}: cannot run {cmd[0]}: {exc.strerror}") from None
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        self._stopping = False
        self._watch(self.proc)
        self.wait_healthy()
        return self

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        """Leave a state file other magv processes can read (pid, and its exit the moment it ends),
        so one that reuses this server can say why it stopped answering."""
        if self.log_path is None:
            return
        try:
            liveness.write_state(
                self.log_path,
                name=self.name,
                pid=proc.pid,
                starter_pid=os.getpid(),
                port=self.port,
                started_at=liveness.now_iso(),
                log=str(self.log_path),
            )
        except OSError:
            return  # a read-only log folder: only this process can name the server's fate

        def wait() -> None:
            code = proc.wait()
            fields: dict[str, Any] = {"returncode": code, "exited_at": liveness.now_iso()}
            if self._stopping:
                fields["stopped_by_magv"] = True
            try:
                liveness.write_state(self.log_path, **fields)
            except OSError:
                pass

        threading.Thread(target=wait, name=f"magv-watch-{self.port}", daemon=True).start()

    def _port_taken(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def _open_log(self) -> Any:
        if self.log_path is None:
            return subprocess.DEVNULL
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.log_path, "ab")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.05
        while True:
            if self.health(timeout=1.0):
                return
            if self.proc is not None and self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RunFailed(
                    f"{self.name} exited with {liveness.exit_text(code)} while starting{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                started = self.proc is not None
                self.stop()
                raise RunFailed(
                    f"{self.name} did not answer {self.root_url}{self.health_path} within "
                    f"{self.startup_timeout_s:g}s"
                    + (
                        self._log_tail()
                        if started
                        else f"; port {self.port} is taken by a process that is not a healthy {self.name}"
                    )
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def _log_tail(self) -> str:
        return liveness.log_tail(self.log_path)

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop the process if we started it; a reused server is left alone."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        self._stopping = True
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace_s)

    def check_alive(self) -> None:
        """Raise RunFailed when the server we started has exited (crashed, killed, out of memory)."""
        proc = self.proc
        if proc is None or proc.poll() is None:
            return
        raise liveness.ModelUnreachable(
            f"{self.name} at {self.url} (pid {proc.pid}) exited with {liveness.exit_text(proc.returncode)} "
            f"during the run; finished work is saved: rerun to restart it and continue{self._log_tail()}"
        )

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class LlamaServer(_Managed):
    """llama-cpp-python's OpenAI-compatible server with the embedded model, on loopback."""

    name = "llama.cpp server"
    health_path = "/health"  # magv.llm.llama_serve's, which does not wait for a running completion
    fallback_health_path = "/v1/models"  # a plain llama-cpp-python server has no /health

    def __init__(
        self,
        settings: Settings,
        *,
        gguf: str | Path | None = None,
        port: int | None = None,
        log_path: Path | None = None,
    ):
        cfg = settings.llama
        port = port or cfg.port
        if log_path is None:
            log_path = settings.database.parent / "logs" / f"llama-server-{port}.log"
        super().__init__(cfg.host, port, cfg.startup_timeout_s, log_path)
        self.settings = settings
        self.gguf = gguf
        self.model_alias = settings.llm.model

    def command(self) -> list[str]:
        if importlib.util.find_spec("llama_cpp") is None:
            raise RunFailed(f"the embedded llama.cpp server needs llama-cpp-python[server]: {EMBEDDED_HINT}")
        cfg = self.settings.llama
        model = embedded_model(cfg, self.gguf)
        cmd = [
            sys.executable,
            "-m",
            "magv.llm.llama_serve",
            "--watch-parent",
            str(os.getpid()),
            "--model",
            str(model.path),
            "--model_alias",
            self.model_alias,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(cfg.n_ctx),
            # logits_all (the server's default) keeps a 1 MiB logits row per context token.
            "--logits_all",
            "false",
            "--cache",
            "true",
            "--cache_type",
            "ram",
            "--cache_size",
            str(PROMPT_CACHE_BYTES),
        ]
        if model.chat_format is not None:
            cmd += ["--chat_format", model.chat_format]
        threads = llama_threads(cfg)
        cmd += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
        return cmd


class VLLMServer(_Managed):
    """`vllm serve` with tool calling on; needs the `gpu` extra."""

    name = "vLLM server"

    def __init__(
        self,
        settings: Settings,
        *,
        model: str | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_args: list[str] | None = None,
        executable: list[str] | None = None,
        log_path: Path | None = None,
    ):
        cfg = settings.vllm
        port = port or cfg.port
        if log_path is None:
            log_path = settings.database.parent / "logs" / f"vllm-{port}.log"
        super().__init__(host, port, cfg.startup_timeout_s, log_path)
        self.settings = settings
        self.model = model or cfg.model
        if not self.model:
            raise BadInput("vllm.model: no model given; pass --model (e.g. Qwen/Qwen2.5-7B-Instruct)")
        self.extra_args = list(extra_args or [])
        self.executable = executable

    def command(self) -> list[str]:
        cfg = self.settings.vllm
        exe = self.executable or [shutil.which("vllm") or "vllm"]
        return [
            *exe,
            "serve",
            self.model,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            cfg.tool_call_parser,
            "--max-model-len",
            str(cfg.max_model_len),
            "--gpu-memory-utilization",
            str(cfg.gpu_memory_utilization),
            "--tensor-parallel-size",
            str(cfg.tensor_parallel_size),
            *self.extra_args,
        ]

    def start(self) -> VLLMServer:
        if self.executable is None and not vllm_installed():
            raise RunFailed(f"vllm is not installed; {GPU_HINT}")
        super().start()
        return self


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None or shutil.which("vllm") is not None


_running: list[_Managed] = []  # servers managed_endpoints started in this process


@contextmanager
def managed_endpoints(settings: Settings) -> Iterator[dict[str, list[str]]]:
    """Endpoints per role. Roles without a configured endpoint get the embedded llama.cpp server,
    started here (or reused if one answers on the port) and stopped at exit if we started it."""
    per_role = {role: list(settings.llm.role(role)["endpoints"]) for role in ROLES}
    if all(per_role.values()):
        yield per_role
        return
    server = LlamaServer(settings)
    server.start()
    _running.append(server)
    try:
        yield {role: urls or [server.url] for role, urls in per_role.items()}
    finally:
        _running.remove(server)
        server.stop()


def check_managed_servers() -> None:
    """Raise RunFailed if a server magv started for this run has died. Stages call it before they
    write: results made while the server was gone are LLM errors that a rerun should redo, not rows."""
    for server in list(_running):
        server.check_alive()
