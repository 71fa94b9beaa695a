"""The cascade section: which step decided how many trajectories, accuracy against cumulative LLM
cost as steps are added (magv.cascade.rules.cost_curve), and the active-learning curve
(accuracy against the number of human labels, simulated on labelled rows). Hidden (None) when the
store holds no cascade decisions."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from magv.report.scope import ReportData, Scope, loads

# Fewer labelled rows than this (or one class only) make a learning curve of noise: not drawn.
MIN_CURVE_ROWS = 12


def cascade_section(
    scope: Scope, labels: dict[str, dict[str, Any]], data: ReportData
) -> dict[str, Any] | None:
    from magv.cascade.rules import cost_curve

    decisions = [{**d, "costs": loads(d["costs"], {})} for d in scope.rows("cascade_decisions")]
    if not decisions:
        return None
    ids = {d["run_id"] for d in decisions}
    truth = {r: bool(lb["correct"]) for r, lb in labels.items() if r in ids}
    human = {r for r, lb in labels.items() if r in ids and lb["source"] == "human"}
    preds = scope.rows("predictions", ["run_id", "model_id", "verdict", "created_at"])
    latest = max(preds, key=lambda p: p["created_at"])["model_id"] if preds else None
    fallback = {p["run_id"]: bool(p["verdict"]) for p in preds if p["model_id"] == latest}
    judge_calls = [
        c
        for c in scope.rows("llm_calls", ["role", "prompt_tokens", "completion_tokens"])
        if c["role"] == "judge"
    ]
    verdicts = scope.rows("judge_verdicts", ["run_id"])
    per_verdict = (
        sum((c["prompt_tokens"] or 0) + (c["completion_tokens"] or 0) for c in judge_calls) / len(verdicts)
        if judge_calls and verdicts
        else None
    )
    curve = cost_curve(decisions, truth, fallback, per_verdict, human)
    data.series["cascade_curve"] = curve["points"]
    learning = _learning_curve(scope, labels)
    if learning:
        data.series["learning_curve"] = learning["points"]
    return {
        "trajectories": len(decisions),
        "by_step": dict(Counter(d["step"] for d in decisions if d["correct"] is not None)),
        "queued_for_human": sum(d["correct"] is None for d in decisions),
        "curve": curve,
        "learning_curve": learning,
    }


def _learning_curve(scope: Scope, labels: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    import numpy as np

    from magv.verify.active import learning_curve
    from magv.verify.features import FEATURE_NAMES, FEATURE_VERSION

    rows = [
        r
        for r in scope.rows("features", ["run_id", "version", "values"])
        if r["version"] == FEATURE_VERSION and r["run_id"] in labels
    ]
    if len(rows) < MIN_CURVE_ROWS:
        return None
    info = scope.store.run_questions([r["run_id"] for r in rows])
    values = [json.loads(r["values"]) if isinstance(r["values"], str) else r["values"] for r in rows]
    X = np.array([[float(v.get(n, 0.5)) for n in FEATURE_NAMES] for v in values])
    y = np.array([int(labels[r["run_id"]]["correct"]) for r in rows])
    if len(set(y.tolist())) < 2:
        return None
    groups = [
        (info.get(r["run_id"]) or {}).get("group_id")
        or (info.get(r["run_id"]) or {}).get("question_id")
        or r["run_id"]
        for r in rows
    ]
    return learning_curve(X, y, groups)
