"""What the reliability tests share: a fake server that knows which pipeline stage each request
belongs to (and can SIGKILL a process on the n-th request of a stage), `magv` run as a real
subprocess, and checks on a finished store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb

from tests.fake_agents import AgentScript
from tests.fakellm import FakeLLMServer, request_schema

ROOT = Path(__file__).resolve().parent.parent
MAGV = [sys.executable, "-c", "from magv.cli import entry; entry()"]

# Primary keys of the pipeline tables: a resumed run must never hold two rows with one key.
KEYS = {
    "questions": "id", "generations": "id", "selections": "question_id", "runs": "id", "mct": "question_id",
    "llm_calls": "id", "features": "run_id, version", "labels": "run_id, source", "verifier_models": "id",
    "cv_results": "training_id, name", "predictions": "run_id, model_id", "judge_verdicts": "run_id, model",
}  # fmt: skip


def _first_user(body: dict[str, Any]) -> str:
    return next((m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user"), "")


def request_stage(body: dict[str, Any]) -> str:
    """The pipeline stage a chat request comes from, read off the request (the agents' prompts)."""
    props = (request_schema(body) or {}).get("properties", {})
    if "questions" in props:
        return "generate" if "need exactly these tool calls" in _first_user(body) else "reverse"
    if "verdict" in props:
        return "judge"
    return "respond_alternates" if _first_user(body).startswith("Alternate ") else "respond"


def embedding_stage(texts: list[str]) -> str:
    """select embeds questions; features embeds trajectories (`tool({...})`) and answers too."""
    trajectory_like = any(
        "({" in t or t == "(no tool calls)" or t.startswith("Here is what I found") for t in texts
    )
    return "features" if trajectory_like else "select"


class StageServer(FakeLLMServer):
    """The scripted agents over real HTTP, counting requests per stage and keeping every injected
    fault with its request. `kill(pid, stage, n)` SIGKILLs pid when the n-th request of that stage
    arrives, while the request is open: the process dies inside that stage."""

    def __init__(self, handler: Any = None, **kwargs: Any):
        self.stage_counts: Counter[str] = Counter()
        self.faults_sent: list[tuple[str, dict[str, Any]]] = []
        self.killed = threading.Event()
        self.open_at_kills = 0
        self._rule: tuple[int, str, int] | None = None
        self._stage_lock = threading.Lock()
        inner = handler or AgentScript("retail")

        def counted(body: dict[str, Any]) -> Any:
            self._seen(request_stage(body))
            return inner(body)

        super().__init__(counted, **kwargs)

    def kill(self, pid: int, stage: str, n: int) -> None:
        with self._stage_lock:
            self._rule = (pid, stage, self.stage_counts[stage] + n)
            self.killed.clear()

    def reset(self) -> None:
        with self._stage_lock:
            self.stage_counts.clear()
            self.faults_sent.clear()
            self._rule = None

    def _seen(self, stage: str) -> None:
        with self._stage_lock:
            self.stage_counts[stage] += 1
            rule = self._rule
            if rule is not None and rule[1] == stage and self.stage_counts[stage] >= rule[2]:
                self._rule = None
                os.kill(rule[0], signal.SIGKILL)
                # Chat requests still open: the killed process never got their answers.
                self.open_at_kills += self.in_flight
                self.killed.set()

    async def _embeddings(self, request: Any) -> Any:
        body = await request.json()  # starlette keeps the parsed body for the parent's read
        inputs = body.get("input")
        self._seen(embedding_stage([inputs] if isinstance(inputs, str) else list(inputs)))
        return await super()._embeddings(request)

    async def _fault(self, kind: str, body: dict[str, Any]) -> Any:
        with self._stage_lock:
            self.faults_sent.append((kind, body))
        return await super()._fault(kind, body)


# -- magv as a subprocess ----------------------------------------------------------------------


def prefect_api_url() -> str:
    """The API of the session's Prefect test server: subprocesses use it instead of starting their
    own temporary server (~15 s each)."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def magv_env(tmp: Path, base_url: str | None, **settings: Any) -> dict[str, str]:
    """Environment for a `magv` subprocess: MAGV_* settings pointing at a fake server and tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGV_")}
    env.update(
        PYTHONPATH=str(ROOT), PREFECT_API_URL=prefect_api_url(), PREFECT_LOGGING_LEVEL="WARNING",
        MAGV_DATABASE=str(tmp / "magv.duckdb"), MAGV_DOMAIN_DATA_DIR=str(tmp / "domains"),
        MAGV_VERIFY__MODELS_DIR=str(tmp / "models"),
    )  # fmt: skip
    if base_url:
        env.update(
            MAGV_LLM__ENDPOINTS=json.dumps([base_url]), MAGV_EMBEDDINGS__BACKEND="endpoint",
            MAGV_EMBEDDINGS__ENDPOINT=base_url,
        )  # fmt: skip
    for key, value in settings.items():
        env["MAGV_" + key.upper()] = str(value)
    return env


class MagvProcess:
    """`magv ARGS` as a subprocess, with its output in files (a full pipe never blocks it)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, name: str = "magv"):
        self.out_path = cwd / f"{name}.out"
        self.err_path = cwd / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([*MAGV, *args], env=env, cwd=cwd, stdout=out, stderr=err)
        self.pid = self.proc.pid

    def wait(self, timeout: float = 180) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"magv did not finish within {timeout:g} s; stderr:\n{self.stderr[-3000:]}"
            ) from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)


def run_magv(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> MagvProcess:
    proc = MagvProcess(args, env, cwd)
    proc.wait(timeout)
    return proc


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


# -- checks on a store ---------------------------------------------------------------------------


def read_counts(db: Path) -> dict[str, int]:
    """Rows per pipeline table, read straight from the file (no migration, nothing written)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in sorted(tables)}
    finally:
        con.close()


def query(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def duplicate_keys(db: Path) -> dict[str, int]:
    """table -> rows beyond one per primary key (all zero in a sound store)."""
    out = {}
    for table, key in KEYS.items():
        (extra,) = query(db, f"SELECT count(*) - count(DISTINCT ({key})) FROM {table}")[0]
        out[table] = extra
    (extra,) = query(db, "SELECT count(*) - count(DISTINCT (question_id, run_index)) FROM runs")[0]
    out["runs (question, index)"] = extra
    return out


def paid_twice(db: Path) -> list[tuple[str, int]]:
    """Replay keys with more than one successful call: a finished call paid again."""
    return query(
        db, "SELECT key, count(*) FROM llm_calls WHERE error IS NULL GROUP BY key HAVING count(*) > 1"
    )


def successful_keys(db: Path) -> set[str]:
    return {r[0] for r in query(db, "SELECT DISTINCT key FROM llm_calls WHERE error IS NULL")}


def runs_per_question(db: Path) -> dict[str, tuple[str, int]]:
    """question id -> (origin, runs) for every question the responder must answer."""
    rows = query(
        db,
        "SELECT q.id, q.origin, count(r.id) FROM questions q LEFT JOIN selections s ON s.question_id = q.id "
        "LEFT JOIN runs r ON r.question_id = q.id WHERE q.origin = 'alternate' OR s.kept GROUP BY q.id, q.origin",
    )
    return {qid: (origin, n) for qid, origin, n in rows}


def run_here(args: list[str], env: dict[str, str], monkeypatch: Any, capsys: Any) -> tuple[int, str, str]:
    """`magv ARGS` in this process with the MAGV_* settings of `env` (no import cost, unlike a
    subprocess). Returns (exit code, stdout, stderr)."""
    from magv.cli import main

    for key in [k for k in os.environ if k.startswith("MAGV_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("MAGV_"):
            monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def serve(argv: list[str] | None = None) -> int:
    """A stand-in for the managed llama.cpp server: the scripted agents on --port; with
    --die-after N it SIGKILLs itself on the N-th chat request, as a crashed server would.

        python -c "from tests.reliability_helpers import serve; serve()" --port 8123 --die-after 20
    """
    import argparse
    import itertools

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--die-after", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.02)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    script = AgentScript("retail")
    seen = itertools.count(1)

    def handler(body: dict[str, Any]) -> Any:
        if args.die_after and next(seen) >= args.die_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return script(body)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeLLMServer(handler, latency_s=args.latency, port=args.port) as srv:
        print(f"fake model server listening on {srv.base_url} (pid {os.getpid()})", flush=True)
        stop.wait()
    return 0
