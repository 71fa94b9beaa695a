"""The most common trajectory (MCT) of a question's runs: the one MAG-V verifies.

`mct_signature` is the one rule, used wherever runs are voted on (the respond stage, import, the
features of the store, of a file and of the service): the most frequent signature (tool names with
canonical arguments) among the runs that did not fail on the model; a tie goes to the smallest
signature, so the answer depends on the runs' content, never on the order they are listed in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from magv.models import Run


def mct_signature(votes: Iterable[tuple[str, bool]]) -> tuple[str | None, int]:
    """(the MCT's signature, how many usable runs have it) of (signature, usable) votes; (None, 0)
    when no run is usable."""
    counts = Counter(signature for signature, usable in votes if usable)
    if not counts:
        return None, 0
    top = max(counts.values())
    return min(s for s, n in counts.items() if n == top), top


def most_common_trajectory(runs: Sequence[Run]) -> dict[str, Any] | None:
    """The MCT row of a question's runs (`mct_signature`); of the runs with that signature, the
    one with the lowest run index stands for it."""
    signatures = [r.trajectory.signature() for r in runs]
    usable = [r.trajectory.status != "llm_error" for r in runs]
    signature, top = mct_signature(zip(signatures, usable, strict=True))
    if signature is None:
        return None
    chosen = min(
        (r for r, s, u in zip(runs, signatures, usable, strict=True) if u and s == signature),
        key=lambda r: r.run_index,
    )
    return {
        "question_id": chosen.question_id,
        "run_id": chosen.id,
        "signature": signature,
        "share": top / len(runs),
        "n_runs": len(runs),
        "n_distinct": len({s for s, u in zip(signatures, usable, strict=True) if u}),
    }
