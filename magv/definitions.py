"""The verdicts the pipeline, the exports and the report must agree on, each decided here only:
which of a run's labels wins, what counts as a tool error, when a trajectory is verified, which
cross-validated verifier model is the best, and the names of the match modes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

from magv.models import LABEL_TRUST

# How a run's calls are matched against a reference trajectory, and how their arguments are
# (magv/verify/labels.py applies them; settings, help texts and the report take the names here).
MatchMode = Literal["strict", "unordered", "subset", "superset"]
MATCH_MODES: tuple[str, ...] = get_args(MatchMode)
ArgMode = Literal["exact", "ignore", "subset", "superset"]
ARG_MODES: tuple[str, ...] = get_args(ArgMode)

# Metrics `best_model` can select by (higher is better); the default is the first.
SELECT_BY: tuple[str, ...] = ("roc_auc", "accuracy", "balanced_accuracy", "mcc", "f1", "precision", "recall")

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


def best_model(results: Mapping[str, Mapping[str, Any]], select_by: str = "roc_auc") -> str:
    """The best of cross-validated models (name -> metrics): the highest `select_by`, ties broken by
    accuracy, then F1, then the name (alphabetical), so the answer does not depend on the order the
    results come in. A missing or NaN metric counts as lowest. Training registers this model; the
    report and the data card name it."""
    if select_by not in SELECT_BY:
        raise ValueError(f"select_by {select_by!r}: expected one of {', '.join(SELECT_BY)}")
    if not results:
        raise ValueError("best_model: no cross-validation results")

    def value(m: Mapping[str, Any], k: str) -> float:
        v = m.get(k)
        return float("-inf") if v is None or v != v else float(v)  # v != v: NaN

    return min(results, key=lambda n: (*(-value(results[n], k) for k in (select_by, "accuracy", "f1")), n))
