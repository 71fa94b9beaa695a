"""The stage runner: plan a stage, map its work over chunks of items (Prefect tasks inside a flow,
this process's threads outside one), write each chunk as it returns; in-process stages (select,
the verifier stages) are timed and recorded the same way.

The flows in magv.flows, the CLI and `magv eval` all run stages through here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import as_completed as local_as_completed
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from magv import progress
from magv.config import Settings
from magv.errors import MagvError
from magv.llm.liveness import ModelUnreachable
from magv.pipeline import generate, judge, respond, reverse, select, verifier
from magv.pipeline.base import AgentStage, StageReport
from magv.pipeline.cost import announce
from magv.pipeline.session import Session
from magv.pipeline.worker import ChunkResult, WorkerContext, chunks, run_chunk

# The agent stages by name, in pipeline order.
STAGES: dict[str, AgentStage] = {
    s.name: s for s in (generate.STAGE, respond.STAGE, reverse.STAGE, respond.ALTERNATES, judge.STAGE)
}
GENERATION_STAGES = ("generate", "select", "respond", "reverse", "respond_alternates")
VERIFY_STAGES = ("features", "gold_labels", "train", "score")


def _retry_unless_model_down(task: Any, task_run: Any, state: Any) -> bool:
    """A chunk is retried after a fault, but not when the model server is down: every retry would
    fail the same way, and the stage stops on it."""
    return not isinstance(state.result(raise_on_failure=False), ModelUnreachable)


@task(
    name="agent-chunk", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE,
    retry_condition_fn=_retry_unless_model_down,
)  # fmt: skip
def agent_chunk(stage: str, ctx: WorkerContext, items: list, work: Callable) -> ChunkResult:
    """LLM and tool work for a chunk of items; runs on any worker, touches no store."""
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
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=p.workers)


def _in_flow() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def _chunk_results(sess: Session, stage: AgentStage, parts: list[list]) -> Iterator[tuple[list, Any]]:
    """(part, ChunkResult or the exception that failed it), as chunks finish."""
    if _in_flow():
        from prefect.futures import as_completed

        futures = {agent_chunk.submit(stage.name, sess.ctx, part, stage.work): part for part in parts}
        for future in as_completed(list(futures)):
            try:
                yield futures[future], future.result()
            except Exception as exc:
                yield futures[future], exc
        return
    # Outside a flow (`magv eval`, `magv verify judge`): the same chunks on this process's threads.
    with ThreadPoolExecutor(
        max_workers=sess.settings.pipeline.workers, thread_name_prefix="magv-chunk"
    ) as pool:
        local = {pool.submit(run_chunk, sess.ctx, part, stage.work): part for part in parts}
        for future in local_as_completed(local):
            try:
                yield local[future], future.result()
            except Exception as exc:
                yield local[future], exc


def run_stage(
    sess: Session,
    stage: AgentStage | str,
    items: list | None = None,
    write: Callable[[Any, WorkerContext, list, StageReport], None] | None = None,
) -> StageReport:
    """Plan the stage's pending work (or take `items`), map its work over chunks, write each chunk
    with the stage's `write` (or `write`) as it returns. A chunk that failed after its retries is
    recorded and the rest go on."""
    from magv.llm.servers import check_managed_servers

    stage = STAGES[stage] if isinstance(stage, str) else stage
    write = write or stage.write
    started = time.perf_counter()
    items = stage.plan(sess.store, sess.ctx) if items is None else items
    report = StageReport(stage.name, planned=len(items))
    announce(sess, stage.name, items)
    with progress.stage(stage.name, len(items)) as bar:
        for part, result in _chunk_results(sess, stage, chunks(items, sess.settings.pipeline.chunk_size)):
            if isinstance(result, ModelUnreachable):
                # Its results would all be errors and later stages would learn from them: stop the run.
                raise result
            if isinstance(result, BaseException):
                report.failed += len(part)
                report.errors.append(f"chunk of {len(part)} failed: {type(result).__name__}: {result}")
                report.error = report.error or report.errors[-1]
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


def run_in_process(
    sess: Session, name: str, fn: Callable[..., StageReport], *args: Any, **kwargs: Any
) -> StageReport:
    """Run a stage that works where the store is; a MagvError is recorded as its failure."""
    started = time.perf_counter()
    with progress.stage(name, 1) as bar:
        try:
            report = fn(*args, **kwargs)
        except MagvError as exc:
            report = StageReport(name, planned=1, failed=1, errors=[str(exc)], error=str(exc))
        bar.advance()
    report.name = name
    report.seconds = time.perf_counter() - started
    return sess.record(report)


def run_select(sess: Session) -> StageReport:
    from magv.llm.embeddings import Embedder

    return run_in_process(sess, "select", select.run, sess.store, sess.ctx, Embedder(sess.settings))


def run_generation(sess: Session) -> None:
    for name in GENERATION_STAGES:
        if name == "select":
            run_select(sess)
        else:
            run_stage(sess, name)


def verify_stages(sess: Session, alternates: bool = True) -> dict[str, StageReport]:
    """features -> gold labels -> train -> score. A stage that cannot run (no labels of both
    classes, say) is recorded as failed with its reason and the rest go on, except that scoring
    needs a model: a pipeline keeps what it made."""
    store, cfg = sess.store, sess.settings
    out = {"features": run_in_process(sess, "features", verifier.features, store, cfg, alternates=alternates)}
    out["gold_labels"] = run_in_process(sess, "gold_labels", verifier.gold_labels, store, cfg)
    out["train"] = run_in_process(sess, "train", verifier.train, store, cfg)
    if out["train"].failed and store.latest_verifier_model() is None:
        return out  # nothing to score with
    out["score"] = run_in_process(sess, "score", verifier.score, store, cfg)
    return out
