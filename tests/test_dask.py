"""The pipeline on Dask: chunks run on worker processes that have no store, their LLM calls come back
with the results, and the flow alone writes. The rows must be the ones the local runner writes.
Also how chunks run inside one process: one agent loop, one concurrency limit, the call log."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import duckdb
import pytest

from magv.cli import main
from magv.store import TABLES
from tests.fake_agents import AgentScript
from tests.fakellm import FakeLLMServer

ARGS = ["run", "--no-verify", "--targets", "3", "--per-target", "2", "--questions", "5", "--runs", "2",
        "--alternates", "2", "--json"]  # fmt: skip

# Content of each table, without what legitimately differs between two runs: times, latencies,
# call ids (random per call) and the pipeline_runs bookkeeping.
CONTENT = {
    "questions": "SELECT id, domain, text, origin, parent_id, seed_id, example_seed_id, target::VARCHAR, "
    "group_id, status, meta::VARCHAR FROM questions",
    "generations": "SELECT id, kind, domain, seed_id, example_seed_id, status, error, n_questions FROM generations",
    # x, y: a 2-D projection for plots, float noise in the last digits from run to run (BLAS threads)
    "selections": "SELECT question_id, kept, reason, cluster, round(x, 4), round(y, 4) FROM selections",
    "runs": "SELECT id, question_id, run_index, trajectory::VARCHAR, status, signature, n_steps, n_tool_errors, "
    "n_invalid, response, prompt_tokens, completion_tokens FROM runs",
    "mct": "SELECT question_id, run_id, signature, share, n_runs, n_distinct FROM mct",
    "llm_calls": "SELECT key, role, model, request::VARCHAR, response->'choices' AS choices, prompt_tokens, "
    "completion_tokens, retries, error FROM llm_calls",
}


def _strip_latency(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_latency(v) for k, v in value.items() if k != "latency_s"}
    if isinstance(value, list):
        return [_strip_latency(v) for v in value]
    return value


def snapshot(db: Path) -> dict[str, Any]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        counts = {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES if t != "pipeline_runs"
        }
        rows = {}
        for table, sql in CONTENT.items():
            out = []
            for row in con.execute(sql).fetchall():
                # trajectories carry per-step tool latencies: compare them without
                out.append(tuple(json.dumps(_strip_latency(json.loads(v))) if isinstance(v, str) and v[:1] in "[{"
                                 else v for v in row))  # fmt: skip
            rows[table] = sorted(out, key=repr)
        status = con.execute("SELECT status FROM pipeline_runs").fetchall()
    finally:
        con.close()
    return {"counts": counts, "rows": rows, "status": status}


def run_pipeline(srv: FakeLLMServer, work: Path, **env: str) -> dict[str, Any]:
    """`magv run` in this process with settings from MAGV_* only; returns its JSON result."""
    settings = {
        "MAGV_LLM__ENDPOINTS": json.dumps([srv.base_url]), "MAGV_EMBEDDINGS__BACKEND": "endpoint",
        "MAGV_EMBEDDINGS__ENDPOINT": srv.base_url, "MAGV_DATABASE": str(work / "magv.duckdb"),
        "MAGV_DOMAIN_DATA_DIR": str(work / "domains"),
        # Small chunks, so every stage has several and both workers get some.
        "MAGV_PIPELINE__CHUNK_SIZE": "2", "MAGV_PIPELINE__WORKERS": "2", **env,
    }  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("MAGV_")]:
            mp.delenv(key)
        for key, value in settings.items():
            mp.setenv(key, value)
        mp.chdir(work)
        with contextlib.redirect_stdout(out):
            assert main(ARGS) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def fake_llm():
    with FakeLLMServer(AgentScript("retail"), latency_s=0.002) as srv:
        yield srv


@pytest.fixture(scope="module")
def local_snapshot(prefect_harness, fake_llm, tmp_path_factory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("local")
    run_pipeline(fake_llm, work, MAGV_PIPELINE__RUNNER="local")
    snap = snapshot(work / "magv.duckdb")
    assert snap["counts"]["runs"] > 20 and snap["counts"]["llm_calls"] > 50, snap["counts"]
    return snap


def assert_same_rows(local: dict[str, Any], other: dict[str, Any]) -> None:
    assert other["status"] == [("completed",)]
    assert other["counts"] == local["counts"]
    for table in CONTENT:
        assert other["rows"][table] == local["rows"][table], f"{table} differs"


def test_collected_calls_keep_the_request_as_it_was_sent():
    """On a worker the agent goes on appending turns to the message list it sent; the call that
    comes back to the flow must hold the request of its own turn."""
    from magv.models import LLMCall
    from magv.pipeline.worker import CollectingRecorder

    messages = [{"role": "user", "content": "where is my order?"}]
    recorder = CollectingRecorder()
    recorder.add_llm_calls([LLMCall(id="c1", key="k1", role="responder", model="m", endpoint="e",
                                    request={"messages": messages})])  # fmt: skip
    messages.append({"role": "assistant", "content": "a later turn"})
    assert recorder.calls[0].request["messages"] == [{"role": "user", "content": "where is my order?"}]


@pytest.mark.integration
def test_dask_scheduler_address_with_two_workers_gives_the_rows_of_the_local_runner(
    local_snapshot, fake_llm, tmp_path
):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        run_pipeline(fake_llm, tmp_path / "dask", MAGV_PIPELINE__RUNNER="dask",
                     MAGV_PIPELINE__DASK_ADDRESS=cluster.scheduler_address)  # fmt: skip
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert len(executed) == 2 and all(n > 0 for n in executed.values()), executed  # both workers did chunks
    assert_same_rows(local_snapshot, snapshot(tmp_path / "dask" / "magv.duckdb"))


@pytest.mark.integration
def test_dask_local_cluster_started_by_the_runner_gives_the_rows_of_the_local_runner(
    local_snapshot, fake_llm, tmp_path
):
    result = run_pipeline(fake_llm, tmp_path / "cluster", MAGV_PIPELINE__RUNNER="dask")
    assert set(result["stages"]) >= {"generate", "select", "respond", "reverse", "respond_alternates"}
    assert_same_rows(local_snapshot, snapshot(tmp_path / "cluster" / "magv.duckdb"))


# -- chunks in one process share the agent loop ------------------------------------------------


def _ctx(concurrency: int):
    from magv.config import Settings
    from magv.pipeline.worker import WorkerContext

    return WorkerContext(Settings(pipeline={"concurrency": concurrency}))


def test_chunks_in_flight_share_one_concurrency_limit_and_leave_no_slot_idle():
    """Two chunks in two threads, 2 slots in all: never more than 2 items at once, and the short
    items of one chunk fill the slots the other's long item leaves, so the whole takes what the
    slots need (no per-chunk tail)."""
    import asyncio
    import threading
    import time

    from magv.pipeline.worker import close_resources, run_chunk

    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    async def work(client, ctx, seconds: float) -> float:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(seconds)
        with lock:
            state["now"] -= 1
        return seconds

    ctx = _ctx(2)
    out: dict[str, list] = {}
    chunks = {"a": [0.6, 0.1, 0.1], "b": [0.1, 0.1, 0.1, 0.1]}  # 1.2 s of work on 2 slots: 0.6 s
    threads = [threading.Thread(target=lambda k=k: out.__setitem__(k, run_chunk(ctx, chunks[k], work).results))
               for k in chunks]  # fmt: skip
    started = time.perf_counter()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        close_resources()
    elapsed = time.perf_counter() - started
    assert out == chunks  # results in item order, per chunk
    assert state["max"] == 2
    # A loop per chunk with 2 slots each would have had 4 in flight; one limit per chunk of 1
    # slot would take 0.8 s (chunk a alone). Shared: 0.6 s plus scheduling.
    assert elapsed < 0.78, elapsed


def test_stopping_the_agent_loop_cancels_a_chunk_without_a_retry():
    """A chunk still in flight when its run stops ends with ChunkCancelled, a BaseException that
    Prefect does not retry, instead of keeping its thread waiting for ever."""
    import asyncio
    import threading

    from magv.pipeline.worker import ChunkCancelled, close_resources, run_chunk

    started = threading.Event()
    caught: list[BaseException] = []

    async def stuck(client, ctx, item):
        started.set()
        await asyncio.sleep(3600)

    def chunk() -> None:
        try:
            run_chunk(_ctx(1), [1], stuck)
        except BaseException as exc:  # the test looks at what arrives
            caught.append(exc)

    thread = threading.Thread(target=chunk)
    thread.start()
    assert started.wait(10)
    close_resources()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], ChunkCancelled) and not isinstance(caught[0], Exception)


def test_the_store_recorder_writes_in_batches_and_replays_calls_not_yet_written(tmp_store):
    from magv.models import LLMCall
    from magv.pipeline.worker import StoreRecorder

    recorder = StoreRecorder(tmp_store, interval_s=3600)  # only explicit flushes
    messages = [{"role": "user", "content": "hi"}]
    call = LLMCall(id="c1", key="k1", role="responder", model="m", endpoint="e",
                   request={"messages": messages}, response={"choices": [{"message": {"content": "yo"}}]})  # fmt: skip
    failed = LLMCall(
        id="c2", key="k2", role="responder", model="m", endpoint="e", request={}, error="HTTP 500"
    )
    assert recorder.cached_response("k1") is None
    recorder.add_llm_calls([call, failed])
    messages.append({"role": "assistant", "content": "later"})
    assert tmp_store.scalar("SELECT count(*) FROM llm_calls") == 0  # buffered
    assert recorder.cached_response("k1") == {"choices": [{"message": {"content": "yo"}}]}
    assert recorder.cached_response("k2") is None  # a failed call is not replayed
    recorder.close()
    rows = tmp_store.query("SELECT key, request FROM llm_calls ORDER BY key")
    assert [r["key"] for r in rows] == ["k1", "k2"]
    assert json.loads(rows[0]["request"]) == {"messages": [{"role": "user", "content": "hi"}]}
    assert StoreRecorder(tmp_store).cached_response("k1") is not None  # from the database now
