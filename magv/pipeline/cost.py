"""What work will cost before it starts: LLM calls per stage and, when the call log has seen the
role before, a time estimate from its mean latency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from magv import progress

if TYPE_CHECKING:
    from magv.store import Store


@dataclass
class Cost:
    stage: str
    role: str
    calls: int  # expected LLM calls (agent runs count max_steps + 1, their most)
    items: int
    what: str  # what an item is ("targets", "runs", ...)

    def describe(self, latencies: dict[str, float], parallel: int) -> str:
        text = f"{self.stage}: {self.items} {self.what}, up to {self.calls} {self.role} LLM calls"
        mean = latencies.get(self.role)
        if mean:
            text += f", about {_duration(self.calls * mean / max(parallel, 1))} ({mean:.2f} s a call, {parallel} in flight)"
        return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def mean_latencies(store: Store) -> dict[str, float]:
    """Mean seconds of a successful call, by role, over the whole call log."""
    try:
        return store.mean_latencies()
    except Exception:  # an estimate must never stop a run
        return {}


def parallel(settings: Any, endpoints: int) -> int:
    """Calls in flight at once: the agent limit, or what the endpoints admit if fewer."""
    return max(
        1, min(settings.pipeline.concurrency, max(endpoints, 1) * settings.llm.concurrency_per_endpoint)
    )


def stage_cost(stage: str, items: list, settings: Any) -> Cost | None:
    steps = settings.pipeline.max_steps + 1
    if stage == "generate":
        return Cost(stage, "investigator", len(items), len(items), "targets")
    if stage in ("respond", "respond_alternates"):
        runs = sum(len(item.run_indices) for item in items)
        return Cost(stage, "responder", runs * steps, runs, "runs")
    if stage == "reverse":
        return Cost(stage, "reverse", len(items), len(items), "questions")
    if stage == "judge":
        return Cost(stage, "judge", len(items), len(items), "trajectories")
    if stage.startswith("eval"):
        return Cost(stage, "responder", len(items) * steps, len(items), "questions")
    return None


def run_costs(settings: Any, targets: int) -> list[Cost]:
    """The whole pipeline on a new database: `targets` seed trajectories, kept questions as set."""
    from magv.pipeline.generate import per_target

    p = settings.pipeline
    steps = p.max_steps + 1
    generated = targets * per_target(settings, targets)
    kept = min(p.questions, generated) + targets  # the target seeds are always kept
    alternates = kept * p.alternates
    return [
        Cost("generate", "investigator", targets, targets, "targets"),
        Cost("respond", "responder", kept * p.runs * steps, kept * p.runs, "runs"),
        Cost("reverse", "reverse", kept if p.alternates else 0, kept if p.alternates else 0, "questions"),
        Cost(
            "respond_alternates",
            "responder",
            alternates * p.alternate_runs * steps,
            alternates * p.alternate_runs,
            "runs",
        ),
    ]


def announce(sess: Any, stage: str, items: list) -> None:
    """Say what a stage is about to cost (shown by the CLI's progress reporter)."""
    cost = stage_cost(stage, items, sess.settings) if items else None
    if cost is None:
        return
    endpoints = len(sess.ctx.endpoints.get(cost.role) or []) if isinstance(sess.ctx.endpoints, dict) else 0
    progress.note(cost.describe(mean_latencies(sess.store), parallel(sess.settings, endpoints)))
