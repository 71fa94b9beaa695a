"""The model server magv started dies mid-run: the run stops and says so, keeps what it finished,
writes no LLM-error rows for the work the dead server failed; a rerun starts the server again and
finishes without paying any finished call twice.

The managed launcher (`LlamaServer`) is pointed at a fake server process that SIGKILLs itself while
answering a responder request: the real llama.cpp server would make this test take minutes.
"""

from __future__ import annotations

import json
import socket
import sys

import pytest

from magv.llm.servers import LlamaServer
from tests.reliability_helpers import ROOT, magv_env, paid_twice, query, run_here, runs_per_question

R = 2
ARGS = ["run", "--json", "--no-verify", "--targets", "4", "--per-target", "2", "--questions", "4",
        "--runs", str(R), "--alternates", "1"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(monkeypatch, port: int, die_after: int = 0) -> None:
    command = [sys.executable, "-c", "from tests.reliability_helpers import serve; serve()",
               "--port", str(port), "--die-after", str(die_after)]  # fmt: skip
    monkeypatch.setattr(LlamaServer, "command", lambda self: command)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


@pytest.mark.integration
def test_a_dead_model_server_is_reported_and_a_rerun_restarts_it(
    tmp_path, prefect_harness, monkeypatch, capsys
):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    env = magv_env(tmp_path, None, llama__port=port, embeddings__backend="endpoint", embeddings__endpoint=url,
                   llm__retries=1, pipeline__chunk_size=2)  # fmt: skip
    db = tmp_path / "magv.duckdb"
    log = tmp_path / "logs" / f"llama-server-{port}.log"

    _launch(monkeypatch, port, die_after=4 + 14)  # the investigator's 4 requests, then into respond
    code, out, err = run_here(ARGS, env, monkeypatch, capsys)
    assert code == 1, out + err
    message = " ".join(err.split())
    assert (
        f"llama.cpp server at {url}" in message and "exited with signal 9 (SIGKILL) during the run" in message
    )
    assert "rerun to restart it and continue" in message
    run = query(db, "SELECT status, summary FROM pipeline_runs")[0]
    assert run[0] == "failed" and "exited with signal 9 (SIGKILL)" in json.loads(run[1])["error"]
    # What the dead server failed is not stored as finished work; what was finished is kept.
    assert query(db, "SELECT count(*) FROM runs WHERE status = 'llm_error'")[0][0] == 0
    assert query(db, "SELECT count(*) FROM generations WHERE status = 'ok'")[0][0] == 4
    done_before = query(db, "SELECT count(*) FROM runs")[0][0]
    answered = {r[0] for r in query(db, "SELECT key FROM llm_calls WHERE error IS NULL")}
    assert len(answered) >= 4 + 1

    _launch(monkeypatch, port)
    code, out, err = run_here(ARGS, env, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    assert log.read_text().count("fake model server listening") == 2  # started again by the rerun
    assert query(db, "SELECT count(*) FROM runs WHERE status = 'llm_error'")[0][0] == 0
    assert query(db, "SELECT count(*) FROM runs")[0][0] > done_before
    assert all(n == (1 if origin == "alternate" else R) for origin, n in runs_per_question(db).values())
    assert paid_twice(db) == []
    assert answered <= {r[0] for r in query(db, "SELECT key FROM llm_calls WHERE error IS NULL")}
    assert [r[0] for r in query(db, "SELECT status FROM pipeline_runs ORDER BY started_at")] == [
        "failed",
        "completed",
    ]


@pytest.mark.integration
def test_a_server_another_magv_process_started_is_named_when_it_dies(
    tmp_path, prefect_harness, monkeypatch, capsys
):
    """`magv demo` starts the server and its `magv run` reuses it: when the server dies, the run
    stops at once and names it, with the exit status the starter saw and the last lines of its log,
    instead of going on with every call failing and blaming the labels at the end."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    env = magv_env(tmp_path, None, llama__port=port, embeddings__backend="endpoint", embeddings__endpoint=url,
                   llm__retries=1, pipeline__chunk_size=2)  # fmt: skip
    _launch(monkeypatch, port, die_after=4 + 14)
    from magv.config import Settings

    starter = LlamaServer(Settings(database=tmp_path / "magv.duckdb"), port=port)  # the demo's server
    starter.start()
    try:
        # The run reuses it (a server answers on the port): this process did not start it for the run.
        code, out, err = run_here(ARGS, env, monkeypatch, capsys)
    finally:
        starter.stop()
    assert code == 1, out + err
    message = " ".join(err.split())
    assert f"not answering (connection refused) at {url}" in message
    assert "exited with signal 9 (SIGKILL)" in message and "last lines of" in message
    assert "labelled" not in message
    run = query(tmp_path / "magv.duckdb", "SELECT status, stages FROM pipeline_runs")[0]
    assert run[0] == "failed"
    assert "train" not in json.loads(run[1])  # no later stage ran on the dead server's errors


@pytest.mark.integration
def test_magv_demo_names_its_dead_server_and_stops(tmp_path, prefect_harness, monkeypatch, capsys):
    """The model server of `magv demo` dies while the demo's `magv run` (another process, reusing
    it) is responding: the demo ends within a minute of the death, naming the server, its signal
    and log, not the labels."""
    import time

    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    env = magv_env(tmp_path, None, llama__port=port, embeddings__backend="endpoint", embeddings__endpoint=url,
                   llm__retries=1, pipeline__max_steps=3, llm__temperature=0)  # fmt: skip
    for key in ("PYTHONPATH", "PREFECT_API_URL", "PREFECT_LOGGING_LEVEL"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.chdir(tmp_path)
    _launch(monkeypatch, port, die_after=4 + 6)
    started = time.monotonic()
    try:  # the demo ends with sys.exit, as `make demo` sees it
        code, out, err = run_here(["demo", "--targets", "4", "--per-target", "1", "--questions", "4", "--runs",
                                   "2", "--alternates", "1"], env, monkeypatch, capsys)  # fmt: skip
    except SystemExit as exc:
        code = exc.code
        out, err = capsys.readouterr()
    elapsed = time.monotonic() - started
    assert code == 1, out + err
    message = " ".join(err.split())
    assert "demo: FAILED at model server" in message, err[-3000:]
    assert f"llama.cpp server at {url}" in message and "exited with signal 9 (SIGKILL)" in message
    assert "last lines of" in message and "labelled" not in message
    assert elapsed < 120, elapsed  # the server died within the first stage's calls
