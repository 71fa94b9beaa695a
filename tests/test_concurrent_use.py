"""One database, several commands at once: DuckDB lets one process hold the file. A second `magv
run` fails at once naming the holder (or waits with --wait); readers say why they cannot read."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.fake_agents import AgentScript
from tests.reliability_helpers import (
    MagvProcess,
    StageServer,
    magv_env,
    read_counts,
    request_stage,
    run_here,
    wait_for,
)

ARGS = ["run", "--json", "--no-verify", "--targets", "2", "--per-target", "2", "--questions", "3",
        "--runs", "1", "--alternates", "1"]  # fmt: skip


class HeldInRespond:
    """The scripted agents, holding the first responder request until released: the run that sent
    it sits inside the respond stage, holding the database, for as long as the test needs."""

    def __init__(self):
        self.inner = AgentScript("retail")
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, body):
        if request_stage(body) == "respond" and not self.release.is_set():
            self.reached.set()
            self.release.wait(120)
        return self.inner(body)


@pytest.mark.integration
def test_a_second_writer_fails_at_once_or_waits_and_readers_say_why(
    tmp_path, prefect_harness, monkeypatch, capsys
):
    held = HeldInRespond()
    with StageServer(held) as srv:
        env = magv_env(tmp_path, srv.base_url)
        first = MagvProcess(ARGS, env, tmp_path, name="first")
        waiter = None
        try:
            wait_for(held.reached.is_set, 120, "the first run to reach the respond stage")
            holder = f"PID {first.pid}: "

            started = time.monotonic()
            code, out, err = run_here(ARGS, env, monkeypatch, capsys)
            assert time.monotonic() - started < 10  # at once, not after the first run
            message = " ".join(err.split())
            assert code == 1 and "is in use by another magv process" in message and holder in message
            assert "use --wait" in message

            for reader in (["db", "info"], ["report", "--out", str(tmp_path / "report")]):
                code, out, err = run_here(reader, env, monkeypatch, capsys)
                message = " ".join(err.split())
                assert code == 1, (reader, out, err)
                assert f"{tmp_path / 'magv.duckdb'} is being written by another process ({holder}" in message
                assert "not even to read: try again when it finishes" in message
            assert not (tmp_path / "report").exists()

            waiter = MagvProcess([*ARGS, "--wait"], env, tmp_path, name="waiter")
            wait_for(lambda: "waiting:" in waiter.stderr, 120, "the --wait run to say it waits")
            assert waiter.proc.poll() is None and first.proc.poll() is None
        finally:
            held.release.set()
            first_code = first.wait()
            waiter_code = waiter.wait() if waiter else None
            first.stop()
            if waiter:
                waiter.stop()
    assert first_code == 0, first.stderr[-2000:]
    assert waiter_code == 0, waiter.stderr[-2000:]
    assert " ".join(waiter.stderr.split()).count("waiting: database:") == 1
    # The waiting run started after the first finished: it found the work done.
    stages = waiter.json()["stages"]
    assert all(s["planned"] == 0 for name, s in stages.items() if name != "select")
    code, out, _ = run_here(["db", "info", "--json"], env, monkeypatch, capsys)
    tables = json.loads(out)["tables"]
    assert (
        code == 0
        and tables["pipeline_runs"] == 2
        and tables["runs"] == read_counts(tmp_path / "magv.duckdb")["runs"] > 0
    )
