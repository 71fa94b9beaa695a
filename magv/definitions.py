"""The three verdicts the pipeline, the exports and the report must agree on, each decided here only:
which of a run's labels wins, what counts as a tool error, and when a trajectory is verified."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from magv.models import LABEL_TRUST

if TYPE_CHECKING:
    from magv.models import Label, Step, Trajectory


def effective_labels(labels: Iterable[Label]) -> dict[str, Label]:
    """run_id -> the label that wins among a run's labels: the most trusted source (human > import
    > gold, `LABEL_TRUST`), the newest within a source."""
    best: dict[str, Label] = {}
    for label in labels:
        current = best.get(label.run_id)
        key = (LABEL_TRUST.get(label.source, -1), label.created_at)
        if current is None or key > (LABEL_TRUST.get(current.source, -1), current.created_at):
            best[label.run_id] = label
    return best


def is_tool_error(step: Step | Mapping[str, Any]) -> bool:
    """A tool call the tool answered with an error. An invalid reply (no call could be parsed) is
    not a tool call. Takes a `Step` or a step as stored in a trajectory's JSON."""
    if isinstance(step, Mapping):
        kind, error = step.get("kind", "tool"), step.get("error")
    else:
        kind, error = step.kind, step.error
    return kind == "tool" and bool(error)


def tool_error_count(trajectory: Trajectory) -> int:
    return sum(1 for s in trajectory.steps if is_tool_error(s))


def is_verified(label: bool | None, score: float | None, threshold: float | None) -> bool | None:
    """Whether a trajectory counts as correct: its effective label where it has one (any source: a
    known answer beats the verifier's estimate, and gold is what the verifier is trained to predict),
    else the verifier's score at or above the threshold; None when it has neither."""
    if label is not None:
        return bool(label)
    if score is None or threshold is None:
        return None
    return score >= threshold
