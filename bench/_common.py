"""What the benchmarks share: the scripted fake LLM server in its own process, `magv run` in its
own process, results files.

The fake server runs apart from the code measured, so its CPU does not share a GIL with it:
    python bench/_common.py serve --port P --latency L [--domain retail]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
BIN = Path(sys.executable).parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quiet_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGV_")}
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING", HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
    )  # fmt: skip
    env.update(extra)
    return env


@contextmanager
def fake_llm(latency: float, domain: str = "retail") -> Iterator[str]:
    """The scripted fake OpenAI-compatible server (tests/fake_agents.py) in a subprocess; yields
    its base URL."""
    import httpx

    port = free_port()
    args = [sys.executable, str(Path(__file__).resolve()), "serve", "--port", str(port),
            "--latency", str(latency), "--domain", domain]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=REPO, env=quiet_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(
                    f"fake LLM server exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("fake LLM server did not start within 60 s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pipeline_env(base_url: str, work: Path, **settings: Any) -> dict[str, str]:
    """MAGV_* for a pipeline against the fake server in `work`; settings as 'pipeline.chunk_size=..'."""
    env = quiet_env(
        MAGV_LLM__ENDPOINTS=json.dumps([base_url]), MAGV_EMBEDDINGS__BACKEND="endpoint",
        MAGV_EMBEDDINGS__ENDPOINT=base_url, MAGV_DATABASE=str(work / "magv.duckdb"),
        MAGV_DOMAIN_DATA_DIR=str(work / "domains"), MAGV_VERIFY__MODELS_DIR=str(work / "models"),
    )  # fmt: skip
    for dotted, value in settings.items():
        env["MAGV_" + dotted.upper().replace(".", "__")] = str(value)
    return env


def magv_run(base_url: str, work: Path, args: list[str], **settings: Any) -> dict[str, Any]:
    """`magv run ... --json` in a subprocess; its JSON result, with the process wall time."""
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [str(BIN / "magv"), "run", *args, "--json"], cwd=work, env=pipeline_env(base_url, work, **settings),
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"magv run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = proc.stdout
    result = json.loads(out[out.index("{") :])
    result["process_wall_s"] = wall
    # CPU of magv and of what it started (Prefect's temporary API server)
    result["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {**data, "machine": {"cpus": os.cpu_count(), "load_avg": list(os.getloadavg())}}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def _serve(argv: list[str]) -> None:
    from tests.fake_agents import AgentScript
    from tests.fakellm import FakeLLMServer

    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["serve"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--domain", default="retail")
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeLLMServer(AgentScript(args.domain), latency_s=args.latency, port=args.port):
        stop.wait()


if __name__ == "__main__":
    _serve(sys.argv[1:])
