"""Which agent answered, and how each question fared under it: what `magv report --compare` adds
to compare two versions of a user's agent on the same questions (docs/agents.md).

A question is the same on both sides when its text is; it passes on a side when at least half of
its labelled runs (base questions only) are labelled correct. A regression is a question that
passes on side A and fails on side B.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from magv.models import canonical_json
from magv.report.scope import Scope, loads, mean
from magv.store import Store

PASS_SHARE = 0.5


def outcomes(store: Store, pipeline_run_id: str | None) -> dict[str, Any]:
    """The agents that answered (with their run counts) and, per question text, its labelled runs."""
    scope = Scope(store, pipeline_run_id)
    runs = scope.rows("runs", ["id", "question_id", "agent"])
    questions = {q["id"]: q for q in store.question_heads()}
    labels = store.effective_labels()
    agents: Counter[str] = Counter()
    per: dict[str, dict[str, Any]] = {}
    for r in runs:
        agent = loads(r.get("agent"))
        agents[canonical_json(agent or {"kind": "unrecorded"})] += 1
        q = questions.get(r["question_id"])
        if q is None or q["origin"] == "alternate":
            continue
        entry = per.setdefault(q["text"], {"question_id": q["id"], "runs": 0, "labelled": 0, "correct": 0})
        entry["runs"] += 1
        label = labels.get(r["id"])
        if label is not None:
            entry["labelled"] += 1
            entry["correct"] += int(label.correct)
    return {"agents": [{**loads(k), "runs": n} for k, n in agents.most_common()], "questions": per}


def _share(entry: dict[str, Any]) -> float:
    return entry["correct"] / entry["labelled"]


def compare_questions(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The questions both sides labelled: the share of runs correct on each side, and the questions
    that pass on one side only."""
    qa, qb = a["questions"], b["questions"]
    shared = [t for t in qa if t in qb and qa[t]["labelled"] and qb[t]["labelled"]]

    def row(t: str) -> dict[str, Any]:
        return {
            "question_id": qb[t]["question_id"],
            "question": t,
            "a": round(_share(qa[t]), 4),
            "b": round(_share(qb[t]), 4),
        }

    regressed = [row(t) for t in shared if _share(qa[t]) >= PASS_SHARE > _share(qb[t])]
    fixed = [row(t) for t in shared if _share(qb[t]) >= PASS_SHARE > _share(qa[t])]
    return {
        "shared": len(shared),
        "a_correct": mean([_share(qa[t]) for t in shared]),
        "b_correct": mean([_share(qb[t]) for t in shared]),
        "regressed": regressed,
        "fixed": fixed,
    }


def agent_label(agents: list[dict[str, Any]]) -> str:
    """The agents of one side in a line: `name@version` (or the code hash), most runs first."""
    parts = []
    for a in agents:
        if a.get("kind") == "unrecorded":
            parts.append(f"not recorded ({a['runs']} runs)")
            continue
        tag = a.get("version") or a.get("hash")
        parts.append(f"{a['name']}{'@' + tag if tag else ''} ({a['runs']} runs)")
    return "; ".join(parts) or "–"
