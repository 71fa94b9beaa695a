"""What the flows share: the session (settings, store, endpoints), the chunk task and the task runners."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from magv import progress
from magv.config import Settings, settings_from_dict
from magv.models import make_id, utcnow
from magv.runtime import ChunkResult, WorkerContext, chunks, close_resources, run_chunk, use_local_recorder
from magv.stages import STAGES, StageReport
from magv.store import Store


@task(name="agent-chunk", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def agent_chunk(stage: str, ctx: WorkerContext, items: list) -> ChunkResult:
    """LLM and tool work for a chunk of items; runs on any worker, touches no store."""
    _, work, _ = STAGES[stage]
    return run_chunk(ctx, items, work)


def task_runner(settings: Settings):
    p = settings.pipeline
    if p.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if p.dask_address:
            return DaskTaskRunner(address=p.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": p.workers, "threads_per_worker": 1, "processes": True}
        )
    if p.runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            from magv.errors import BadInput

            raise BadInput("pipeline.runner: 'ray' needs prefect-ray: pip install 'magv[ray]'") from None
        return RayTaskRunner()
    return ThreadPoolTaskRunner(max_workers=p.workers)


@dataclass
class Session:
    settings: Settings
    store: Store
    ctx: WorkerContext
    run_id: str
    stages: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=utcnow)

    def record(self, report: StageReport) -> StageReport:
        self.stages[report.name] = report.as_dict()
        return report

    def summary(self) -> dict[str, Any]:
        """Totals of the stages so far, with the LLM calls this run logged (retries, errors)."""
        out = summarize(self.stages)
        try:
            out["llm_calls"] = self.store.llm_call_totals(self.started_at)
        except Exception:  # a summary must never hide the error that ended the run
            pass
        return out


@contextmanager
def session(settings: dict[str, Any] | None, kind: str) -> Iterator[Session]:
    """Open the store, build the domain if needed, start the embedded model if no endpoint is set,
    and record the pipeline run with its stage timings, whatever the outcome."""
    from magv.llm import managed_endpoints

    cfg = settings_from_dict(settings) if settings else Settings()
    store = Store(cfg.database)
    store.mark_abandoned_runs()
    run_id = make_id(kind, cfg.domain, str(utcnow()))
    store.start_pipeline_run(run_id, cfg.domain, {"kind": kind, **cfg.model_dump(mode="json")})
    status = "failed"
    error = None
    sess = None
    try:
        with managed_endpoints(cfg) as endpoints:
            sess = Session(cfg, store, WorkerContext(cfg, endpoints), run_id)
            use_local_recorder(store)
            yield sess
            status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        use_local_recorder(None)
        close_resources()
        summary = sess.summary() if sess else summarize({})
        if error:
            summary["error"] = error
        store.finish_pipeline_run(run_id, status, sess.stages if sess else {}, summary)
        store.close()


def summarize(stages: dict[str, Any]) -> dict[str, Any]:
    def total(key: str) -> int:
        return sum(s.get(key, 0) for s in stages.values())

    return {
        "prompt_tokens": total("prompt_tokens"),
        "completion_tokens": total("completion_tokens"),
        "failures": {name: s.get("failed", 0) for name, s in stages.items() if s.get("failed")},
        "faults": {key: total(key) for key in ("failed", "llm_errors", "invalid_steps", "tool_errors")},
        "seconds": round(sum(s.get("seconds", 0.0) for s in stages.values()), 3),
    }


def run_stage(sess: Session, stage: str) -> StageReport:
    """Plan the stage's pending work, map the chunk task over it, write each chunk as it returns."""
    from magv.llm.servers import check_managed_servers

    plan, _, write = STAGES[stage]
    started = time.perf_counter()
    items = plan(sess.store, sess.ctx)
    report = StageReport(stage, planned=len(items))
    with progress.stage(stage, len(items)) as bar:
        parts = chunks(items, sess.settings.pipeline.chunk_size)
        futures = {agent_chunk.submit(stage, sess.ctx, part): part for part in parts}
        for future in as_completed(list(futures)):
            part = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # a chunk that failed after retries: record it, keep going
                report.failed += len(part)
                report.errors.append(f"chunk of {len(part)} failed: {type(exc).__name__}: {exc}")
                bar.advance(len(part))
                continue
            if result.calls:
                sess.store.add_llm_calls(result.calls)
            # A chunk that ran while the server magv started was dead holds LLM errors, not results.
            check_managed_servers()
            write(sess.store, sess.ctx, result.results, report)
            bar.advance(len(part))
    report.seconds = time.perf_counter() - started
    return sess.record(report)


def run_select(sess: Session) -> StageReport:
    from magv.llm.embeddings import Embedder
    from magv.stages import run_select as select_stage

    started = time.perf_counter()
    with progress.stage("select", 1) as bar:
        report = select_stage(sess.store, sess.ctx, Embedder(sess.settings))
        bar.advance()
    report.seconds = time.perf_counter() - started
    return sess.record(report)
