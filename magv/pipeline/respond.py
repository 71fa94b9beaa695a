"""respond: the responder answers every kept question R times (alternates R' times); the most
common trajectory (MCT) of each question is marked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from magv.agents.contract import check_tools_run
from magv.agents.responder import Demo
from magv.definitions import tool_error_count
from magv.mct import most_common_trajectory
from magv.models import Question, Run
from magv.pipeline.base import AgentStage, StageReport
from magv.pipeline.worker import WorkerContext

if TYPE_CHECKING:
    from magv.store import Store

BASE_ORIGINS = ("seed", "investigator")


@dataclass
class RespondItem:
    question: Question
    run_indices: list[int]
    redo: bool = False  # some runs are stored but failed on the model: they are replaced
    demos: list[Demo] = field(default_factory=list)


@dataclass
class RunOutcome:
    run: Run
    llm_errors: list[str]


@dataclass
class RespondResult:
    question: Question
    runs: list[RunOutcome]
    redo: bool = False


def plan(store: Store, ctx: WorkerContext, alternates: bool = False) -> list[RespondItem]:
    """One item per question that lacks some of its runs (R for base questions, R' for alternates)."""
    domain = ctx.domain()
    p = ctx.settings.pipeline
    check_tools_run(ctx.settings, domain)
    if alternates:
        # an alternate that failed its checks (magv/quality.py) is not the same request: not answered
        questions, wanted = (
            store.questions(domain.name, origin="alternate", passing_only=True),
            p.alternate_runs,
        )
    else:
        questions, wanted = store.questions(domain.name, origin=BASE_ORIGINS, kept_only=True), p.runs
    finished = store.finished_run_indices()  # runs that failed on the model are done again
    stored = store.run_counts()
    items = []
    for q in questions:
        done = finished.get(q.id, set())
        missing = [i for i in range(wanted) if i not in done]
        if missing:
            items.append(RespondItem(q, missing, redo=stored.get(q.id, 0) > len(done)))
    if p.demos and items:
        _attach_demos(store, ctx, items)
    return items


def plan_alternates(store: Store, ctx: WorkerContext) -> list[RespondItem]:
    return plan(store, ctx, alternates=True)


def _attach_demos(store: Store, ctx: WorkerContext, items: list[RespondItem]) -> None:
    """Give each item the `pipeline.demos` nearest verified examples outside its question's group
    (so never the question itself, its alternates or its seed's family)."""
    from magv.demonstrations import DemonstrationIndex
    from magv.llm.embeddings import Embedder

    demos = DemonstrationIndex.from_store(store, ctx.domain().name, Embedder(ctx.settings))
    questions = [item.question for item in items]
    picks = demos.nearest_many(
        [q.text for q in questions], ctx.settings.pipeline.demos, [{q.group_id} for q in questions]
    )
    for item, chosen in zip(items, picks):
        item.demos = list(chosen)


async def work(client, ctx: WorkerContext, item: RespondItem) -> RespondResult:
    q = item.question
    runs = []
    for i in item.run_indices:
        result, agent = await ctx.run_agent(
            client, q.text, run_index=i, context_key=f"respond:{q.id}:{i}", demos=item.demos
        )
        run = Run(
            id=Run.derive_id(q.id, i),
            question_id=q.id,
            run_index=i,
            trajectory=result.trajectory,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            latency_s=result.latency_s,
            agent=agent.as_dict(),
            cost_usd=result.cost_usd,
        )
        runs.append(RunOutcome(run, result.llm_errors))
    return RespondResult(q, runs, item.redo)


def write(store: Store, ctx: WorkerContext, results: list[RespondResult], report: StageReport) -> None:
    with store.transaction():
        for r in results:
            q = r.question
            for outcome in r.runs:
                run = outcome.run
                report.written += store.add_runs([run])
                report.prompt_tokens += run.prompt_tokens
                report.completion_tokens += run.completion_tokens
                steps = run.trajectory.steps
                report.invalid_steps += sum(1 for s in steps if s.kind == "invalid")
                report.tool_errors += tool_error_count(run.trajectory)
                report.llm_errors += run.trajectory.status == "llm_error"
                if outcome.llm_errors:
                    report.errors.append(f"question {q.id} run {run.run_index}: {outcome.llm_errors[-1]}")
            all_runs = store.runs([q.id])
            if r.redo:  # runs were replaced: what the verifier derived from them is stale
                store.forget_verdicts([run.id for run in all_runs])
            mct = most_common_trajectory(all_runs)
            if mct is None:
                store.set_question_status(q.id, "failed")
                report.failed += 1
            else:
                store.set_mct([mct])
                if q.status == "failed":  # a rerun redid the runs it had lost to the model
                    store.set_question_status(q.id, "new")
                report.done += 1


STAGE = AgentStage("respond", plan, work, write)
ALTERNATES = AgentStage("respond_alternates", plan_alternates, work, write)
