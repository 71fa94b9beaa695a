"""What every stage shares: the report it fills and the shape of an agent stage.

An agent stage is three functions: `plan(store, ctx)` lists the work the store does not hold yet
(so a rerun skips finished work and a killed run resumes), `work(client, ctx, item)` does one item
anywhere (no store), and `write(store, ctx, results, report)` writes a chunk of results where the
store is. The runner (magv.pipeline.runner) cuts the plan into chunks and maps `work` over them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class StageReport:
    """What a stage did: counts, tokens and failures, summed over chunks."""

    name: str
    planned: int = 0
    done: int = 0
    failed: int = 0
    written: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    # Why the stage, or some of its chunks, could not do its work (train without two classes, a
    # chunk that failed after its retries). Faults recorded on single items (an unusable reply, a
    # run lost to the model) are not this: they are counted below and redone by a rerun.
    error: str | None = None
    # Faults recorded on the rows written: LLM calls that failed after their retries (the run or
    # generation says so), unusable model replies (invalid steps) and tool calls that errored.
    llm_errors: int = 0
    invalid_steps: int = 0
    tool_errors: int = 0
    # What an in-process stage returned (a TrainResult, a ScoreResult), for the CLI to print.
    result: Any = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "done": self.done,
            "failed": self.failed,
            "written": self.written,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 3),
            "llm_errors": self.llm_errors,
            "invalid_steps": self.invalid_steps,
            "tool_errors": self.tool_errors,
            "errors": self.errors[:20],
            "error": self.error,
        }

    def tally(self, reply: Any, error: str | None) -> None:
        """Count one agent reply (investigator, reverse): its tokens, and done or failed."""
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        if reply.error:
            self.llm_errors += reply.error.startswith("LLM error")
            self.failed += 1
            if error:
                self.errors.append(error)
        else:
            self.done += 1


@dataclass(frozen=True)
class AgentStage(Generic[Item, Result]):
    """A stage whose work is LLM and tool calls, run in chunks by the runner."""

    name: str
    plan: Callable[[Any, Any], list[Item]]
    work: Callable[[Any, Any, Item], Awaitable[Result]]
    write: Callable[[Any, Any, list[Result], StageReport], None]
