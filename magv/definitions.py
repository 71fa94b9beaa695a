"""The verdicts the pipeline, the exports and the report must agree on, each decided here only:
which of a run's labels wins, what counts as a tool error (a step's, and a foreign log's result
text), when a trajectory is verified, which cross-validated verifier model is the best, and the
names of the match modes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

import regex

from magv.errors import BadInput
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


# A user's pattern is data: it is compiled once, may not be longer than this, is matched against at
# most the first TOOL_ERROR_SCAN characters of a result, and a match running past
# TOOL_ERROR_TIMEOUT_S is refused (the `regex` module can stop a match; `re` cannot).
TOOL_ERROR_PATTERN_MAX = 500
TOOL_ERROR_SCAN = 2000
TOOL_ERROR_TIMEOUT_S = 0.05
# The default text rule: a result that starts with the word "error" (any case), as in "Error: ...".
DEFAULT_ERROR_TEXT = r"(?i)\A\s*error\b"


class ToolErrorRule:
    """What a tool's result text must look like to be an error, for logs whose tools did not report
    failures the way magv's sandbox does (the step's `error`). A JSON object with a string "error"
    (`{"error": "..."}`, what magv exports) is always an error; besides it, a result is an error when
    `pattern` (a regular expression, searched) matches its text; by default, text that starts with
    "Error". `source` names where the pattern came from, for messages about it.

    The one reading of a tool message into (result, error): the importer, `verify score --input` and
    the service all read results through a rule."""

    def __init__(self, pattern: str | None = None, source: str = "tool error pattern"):
        self.pattern = DEFAULT_ERROR_TEXT if pattern is None else pattern
        self.source = source
        if not isinstance(self.pattern, str) or not self.pattern:
            raise BadInput(f"{source}: expected a non-empty regular expression")
        if len(self.pattern) > TOOL_ERROR_PATTERN_MAX:
            raise BadInput(f"{source}: {len(self.pattern)} characters; at most {TOOL_ERROR_PATTERN_MAX}")
        try:
            self._regex = regex.compile(self.pattern, regex.VERSION0)
        except regex.error as exc:
            raise BadInput(f"{source}: {self.pattern!r} is not a regular expression: {exc}") from None

    def __repr__(self) -> str:
        return f"ToolErrorRule({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ToolErrorRule) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def matches(self, text: str) -> bool:
        """Whether result text counts as an error (a string "error" in a JSON object aside)."""
        try:
            return self._regex.search(text[:TOOL_ERROR_SCAN], timeout=TOOL_ERROR_TIMEOUT_S) is not None
        except TimeoutError:
            raise BadInput(
                f"{self.source}: {self.pattern!r} took more than {TOOL_ERROR_TIMEOUT_S * 1000:g} ms on one tool "
                "result; give a simpler pattern (one without nested repeats)"
            ) from None

    def error_of(self, content: str | None, value: Any) -> str | None:
        """The error a tool message reports, else None: `content` is its text, `value` the JSON it
        parses to (the text itself when it is not JSON)."""
        if isinstance(value, Mapping) and isinstance(value.get("error"), str) and value["error"]:
            return value["error"]
        if content is not None and self.matches(content):
            return content.strip() or content
        return None


DEFAULT_TOOL_ERRORS = ToolErrorRule()


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
