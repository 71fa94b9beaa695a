"""judge: the LLM-judge baseline asks the judge model about every verified trajectory it has not
judged yet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from magv.agents.judge import judge, pending_judgements, split_failures
from magv.models import JudgeVerdict, Trajectory
from magv.pipeline.base import AgentStage, StageReport
from magv.pipeline.worker import WorkerContext

if TYPE_CHECKING:
    from magv.store import Store


@dataclass
class JudgeItem:
    run_id: str
    question: str
    trajectory: Trajectory


def plan(store: Store, ctx: WorkerContext, limit: int | None = None) -> list[JudgeItem]:
    model = ctx.settings.llm.role("judge")["model"]
    return [JudgeItem(*item) for item in pending_judgements(store, model, limit)]


def temperature(settings) -> float:
    """The judge's own temperature when set, else 0 (not the agents' default)."""
    override = settings.llm.roles.get("judge")
    return override.temperature if override and override.temperature is not None else 0.0


async def work(client, ctx: WorkerContext, item: JudgeItem) -> JudgeVerdict:
    return await judge(
        client, item.run_id, item.question, item.trajectory, temperature=temperature(ctx.settings)
    )


def write(store: Store, ctx: WorkerContext, results: list[JudgeVerdict], report: StageReport) -> None:
    # An LLM failure is no verdict: it is not stored, so the trajectory stays pending for the next run.
    verdicts, failed = split_failures(results)
    report.written += store.add_judge_verdicts(verdicts) or 0
    for v in results:
        report.prompt_tokens += v.prompt_tokens
        report.completion_tokens += v.completion_tokens
        if v.correct is None:
            report.failed += 1
            if v.error:
                report.errors.append(f"run {v.run_id}: {v.error}")
        else:
            report.done += 1
    report.llm_errors += len(failed)


STAGE = AgentStage("judge", plan, work, write)
