"""The most common trajectory (MCT) of a question's runs: the one MAG-V verifies."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from magv.models import Run


def most_common_trajectory(runs: Sequence[Run]) -> dict[str, Any] | None:
    """The MCT row of a question's runs: the most frequent signature (tool names with canonical
    arguments) among runs that did not fail on the LLM; ties go to the earliest run."""
    usable = [r for r in runs if r.trajectory.status != "llm_error"]
    if not usable:
        return None
    counts = Counter(r.trajectory.signature() for r in usable)
    top = max(counts.values())
    chosen = min((r for r in usable if counts[r.trajectory.signature()] == top), key=lambda r: r.run_index)
    return {
        "question_id": chosen.question_id,
        "run_id": chosen.id,
        "signature": chosen.trajectory.signature(),
        "share": top / len(runs),
        "n_runs": len(runs),
        "n_distinct": len(counts),
    }
