"""Labels of verified trajectories from three sources: gold (the MCT matched against the target
trajectory the question was generated for), import (a file) and human (`magv verify annotate`).
All are kept; the store's `effective_labels()` lets the most trusted win (human > import > gold).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from magv.errors import BadInput
from magv.jsonl import read_jsonl
from magv.models import Label, Question, Run, ToolCall

MatchMode = Literal["strict", "unordered", "subset", "superset"]
MATCH_MODES: tuple[str, ...] = ("strict", "unordered", "subset", "superset")


def match(
    predicted: Sequence[ToolCall], gold: Sequence[ToolCall], mode: str = "strict", arguments: bool = False
) -> bool:
    """Whether a trajectory's calls satisfy the gold calls.

    strict: the same calls in the same order; unordered: the same calls as a multiset;
    subset: every predicted call is a gold call (nothing extra, possibly some missing);
    superset: every gold call was made (possibly with extra calls). With `arguments` a call is its
    name plus canonical arguments, otherwise only its name."""
    if mode not in MATCH_MODES:
        raise BadInput(f"match mode {mode!r}: expected one of {', '.join(MATCH_MODES)}")

    def key(c: ToolCall) -> str:
        return c.canonical() if arguments else c.name

    p, g = [key(c) for c in predicted], [key(c) for c in gold]
    if mode == "strict":
        return p == g
    cp, cg = Counter(p), Counter(g)
    if mode == "unordered":
        return cp == cg
    if mode == "subset":
        return not (cp - cg)
    return not (cg - cp)


def gold_labels(store: Any, mode: str = "strict", arguments: bool = False) -> int:
    """Label the MCT run of every question that has a target trajectory; returns labels written
    (a rerun with another mode replaces the previous gold labels)."""
    detail = f"gold:{mode}{'+arguments' if arguments else ''}"
    targets = {q.id: q.target for q in store.questions() if q.origin != "alternate" and q.target is not None}
    mct_runs = {m["run_id"]: m["question_id"] for m in store.mct() if m["question_id"] in targets}
    labels = [
        Label(run_id=run.id, source="gold", correct=match(run.trajectory.calls, targets[qid], mode, arguments),
              detail=detail)
        for run in store.runs(question_ids=sorted(set(mct_runs.values())))
        if (qid := mct_runs.get(run.id)) is not None
    ]  # fmt: skip
    store.add_labels(labels)
    return len(labels)


def read_label_file(store: Any, path: Path) -> list[Label]:
    """Labels from a JSONL file: one {"run_id": ..., "correct": true|false} or
    {"question_id": ..., "correct": ...} (the question's MCT run) per line. Checked whole first."""
    known_runs = set(store.run_questions())
    mct = {m["question_id"]: m["run_id"] for m in store.mct()}
    labels: list[Label] = []
    for n, where, obj in read_jsonl(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("correct"), bool):
            raise BadInput(f'{where}: expected an object with "correct": true|false')
        if isinstance(obj.get("run_id"), str):
            run_id = obj["run_id"]
            if run_id not in known_runs:
                raise BadInput(f"{where}: run_id {run_id!r} is not in the database")
        elif isinstance(obj.get("question_id"), str):
            run_id = mct.get(obj["question_id"])
            if run_id is None:
                raise BadInput(f"{where}: question_id {obj['question_id']!r} has no most common trajectory")
        else:
            raise BadInput(f'{where}: expected "run_id" or "question_id" (a string)')
        labels.append(
            Label(run_id=run_id, source="import", correct=obj["correct"], detail=f"file:{path.name}:{n}")
        )
    if not labels:
        raise BadInput(f"{path}: no labels in the file")
    return labels


# -- human annotation ----------------------------------------------------------------------------

AnnotationKey = Literal["c", "i", "s", "q"]
KEYS = {"c": "correct", "i": "incorrect", "s": "skip", "q": "quit"}


@dataclass
class AnnotationItem:
    question: Question
    run: Run


def pending_annotations(store: Any, limit: int | None = None) -> list[AnnotationItem]:
    """Verified trajectories (MCT runs of base questions) without a human label, oldest first:
    a second session resumes where the first stopped."""
    done = {lb.run_id for lb in store.labels() if lb.source == "human"}
    mct = {m["question_id"]: m["run_id"] for m in store.mct() if m["run_id"] not in done}
    questions = [q for q in store.questions() if q.id in mct and q.origin != "alternate"]
    runs = {r.id: r for r in store.runs(question_ids=[q.id for q in questions])}
    items = [AnnotationItem(q, runs[mct[q.id]]) for q in questions if mct[q.id] in runs]
    return items[:limit] if limit is not None else items


def describe(item: AnnotationItem) -> str:
    """What the annotator sees: the question, each step, the response."""
    t = item.run.trajectory
    lines = [f"Question: {item.question.text}", f"Trajectory ({len(t.steps)} steps, status {t.status}):"]
    for n, step in enumerate(t.steps, start=1):
        if step.kind == "invalid" or step.call is None:
            lines.append(f"  {n}. (invalid reply) {(step.raw or '')[:200]}")
            continue
        outcome = f"ERROR {step.error}" if step.error else json.dumps(step.result, default=str)[:300]
        lines.append(f"  {n}. {step.call.canonical()}\n     -> {outcome}")
    if not t.steps:
        lines.append("  (no tool calls)")
    lines.append(f"Response: {t.response if t.response is not None else '(none)'}")
    return "\n".join(lines)


def annotate(
    store: Any,
    items: Sequence[AnnotationItem],
    ask: Callable[[AnnotationItem, int, int], str | None],
    annotator: str = "human",
) -> dict[str, int]:
    """Ask for a key per item (c correct, i incorrect, s skip, q quit; None = end of input, as q).
    Each answer is saved at once, so quitting or a crash loses nothing already answered."""
    counts = {"correct": 0, "incorrect": 0, "skipped": 0, "remaining": 0}
    for n, item in enumerate(items, start=1):
        key = ask(item, n, len(items))
        if key is None or key == "q":
            counts["remaining"] = len(items) - n + 1
            break
        if key == "s":
            counts["skipped"] += 1
            continue
        correct = key == "c"
        store.add_labels(
            [Label(run_id=item.run.id, source="human", correct=correct, detail=f"annotate:{annotator}")]
        )
        counts["correct" if correct else "incorrect"] += 1
    return counts
