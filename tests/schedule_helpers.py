"""Real processes for the schedule tests: a Prefect server on 127.0.0.1 and bounded waits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that points Prefect or magv elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MAGV_"))}
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_API_ENABLE_HTTP2="false",
        HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
    )  # fmt: skip
    env.update(extra)
    return env


def start(args: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """A process in its own session (so stopping it stops what it started), output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)  # fmt: skip


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT, grace: float = 20.0) -> None:
    """Ask the process group to stop, then make sure: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    for s, wait in ((sig, grace), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # Children of the group (a flow-run process) may outlive the leader by a moment.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for(
    check: Callable[[], Any], what: str, timeout: float, procs: tuple[subprocess.Popen, ...] = (),
    logs: tuple[Path, ...] = (), interval: float = 0.5,
) -> Any:  # fmt: skip
    """Poll `check` until it returns something truthy; fail early if a process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: process {p.args[:3]} exited {p.returncode}\n{tail(*logs)}")
        try:
            value = check()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{tail(*logs)}")


def tail(*logs: Path, lines: int = 40) -> str:
    out = []
    for log in logs:
        if log.exists():
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name} ---\n" + "\n".join(text))
    return "\n".join(out)


class PrefectServer:
    """`prefect server start` on a free loopback port with its own PREFECT_HOME."""

    def __init__(self, home: Path):
        self.home = home
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.log = home / "server.log"
        self.proc: subprocess.Popen | None = None

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(PREFECT_HOME=str(self.home), PREFECT_API_URL=self.api_url, **extra)

    def start(self, timeout: float = 180.0) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        args = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        env = self.env()
        env.pop("PREFECT_API_URL")  # the server itself does not need one
        self.proc = start(args, self.log, env, self.home)
        wait_for(
            lambda: httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200,
            "prefect server health", timeout, (self.proc,), (self.log,),
        )  # fmt: skip
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, signal.SIGTERM)
