"""Is a model server up, slow, or gone? What any magv process can say about a server, including
one that another magv process started.

A server magv starts leaves a small state file beside its log (`<log>.state.json`: pid, the pid of
the magv process that started it, when it started and, once it has exited, its exit code or signal
and when). The starter's watcher thread writes the exit the moment the process ends, so a second
process (the `magv run` that `magv demo` starts, reusing the demo's server) can name the real cause
of its failed calls: "llama.cpp server exited with signal 11 (SIGSEGV)", with the log's last lines.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from magv.errors import RunFailed

LOG_TAIL_LINES = 15


class ModelUnreachable(RunFailed):
    """Every endpoint of a role refuses connections: the model server is down, not slow. Stages stop
    on it (their results would be errors, and later stages would learn from them)."""


@dataclass(frozen=True)
class Probe:
    """What a model server's port says right now."""

    url: str
    state: str  # "answering", "refused" (nothing listens: down) or "slow" (connected, no answer)
    detail: str = ""

    @property
    def down(self) -> bool:
        return self.state == "refused"


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname or "127.0.0.1", parts.port or default


def probe(url: str, timeout_s: float = 2.0) -> Probe:
    """Connect to the server's port and send one small request: refused means down, a connection
    that does not answer within `timeout_s` means slow or busy (llama.cpp answers between requests)."""
    host, port = host_port(url)
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except ConnectionRefusedError:
        return Probe(url, "refused", f"connection refused at {host}:{port}")
    except TimeoutError:
        return Probe(url, "slow", f"no TCP answer from {host}:{port} within {timeout_s:g}s")
    except OSError as exc:
        return Probe(url, "refused", f"cannot connect to {host}:{port}: {exc.strerror or exc}")
    with sock:
        sock.settimeout(timeout_s)
        try:
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            if not sock.recv(1):
                return Probe(url, "refused", f"{host}:{port} closed the connection without answering")
        except TimeoutError:
            return Probe(
                url, "slow", f"{host}:{port} accepted a connection but did not answer in {timeout_s:g}s"
            )
        except OSError as exc:
            return Probe(url, "refused", f"{host}:{port} reset the connection: {exc.strerror or exc}")
    return Probe(url, "answering")


# -- state files of servers magv started -------------------------------------------------------


def state_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".state.json")


def write_state(log_path: Path, **fields: object) -> None:
    """Merge `fields` into the state file of the server logging to `log_path` (atomically)."""
    path = state_path(log_path)
    state = read_state(path) or {}
    state.update(fields)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def read_state(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def exit_text(returncode: int | None) -> str:
    """`code 1`, or `signal 11 (SIGSEGV)` for a process a signal ended: what follows "exited with"."""
    if returncode is None:
        return "an unknown status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "?"
        return f"signal {-returncode} ({name})"
    return f"code {returncode}"


def log_tail(log_path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if log_path is None or not log_path.exists():
        return ""
    try:
        tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\nlast lines of {log_path}:\n" + "\n".join(tail)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def started_server(url: str, log_dir: Path) -> tuple[Path, dict] | None:
    """The state file of a server that a magv process started on `url`'s port, if one is known."""
    _, port = host_port(url)
    if not log_dir.is_dir():
        return None
    for path in sorted(log_dir.glob(f"*-{port}.log.state.json")):
        state = read_state(path)
        if state and state.get("port") == port:
            return path, state
    return None


def explain_down(urls: list[str], since: float | None, log_dir: Path, role: str | None = None) -> str:
    """The message for a role whose every endpoint refuses connections: which server, since when,
    and what magv knows of its process (exit code or signal, the last lines of its log)."""
    when = datetime.fromtimestamp(since, UTC).strftime("%H:%M:%S UTC") if since is not None else now_iso()
    who = f" for role {role}" if role else ""
    lines = [f"model server{who} not answering (connection refused) at {', '.join(urls)} since {when}"]
    for url in urls:
        found = started_server(url, log_dir)
        if found is None:
            lines.append(f"{url}: not started by magv here; start it again, or fix llm.endpoints")
            continue
        path, state = found
        name = state.get("name", "server")
        pid = state.get("pid")
        if "returncode" in state:
            lines.append(
                f"{name} (pid {pid}, started by magv pid {state.get('starter_pid')}) exited with "
                f"{exit_text(state['returncode'])} at {state.get('exited_at', '?')}"
            )
        elif isinstance(pid, int) and not _pid_alive(pid):
            lines.append(f"{name} (pid {pid}) is no longer running")
        else:
            lines.append(f"{name} (pid {pid}) still has a process but does not accept connections")
        log = state.get("log")
        if log:
            lines.append(log_tail(Path(log)).lstrip("\n"))
    lines.append(
        "finished work is saved: rerun the command once the server is back (`magv doctor` checks it)"
    )
    return "\n".join(line for line in lines if line)
