"""The report's samples: what was made, readable. Each kept question with its target trajectory, the
most common trajectory (MCT) as a conversation, the response, label, verdict and tool errors; and
the worst cases, the lowest-scored trajectories in the same form."""

from __future__ import annotations

from typing import Any

from magv.definitions import is_tool_error
from magv.models import canonical_json
from magv.report.scope import ReportData, Scope, call_text, loads, rounded

RESULT_LIMIT = 1200  # characters of a tool result shown in a conversation turn
TOP_CONTRIBUTIONS = 5


def conversation(question: str | None, trajectory: dict[str, Any]) -> list[dict[str, Any]]:
    """The trajectory as turns: the customer's question, each tool call and what came back (or the
    unparseable reply), and the final answer."""
    turns: list[dict[str, Any]] = [{"role": "customer", "text": question or ""}]
    for i, step in enumerate(trajectory.get("steps", []), start=1):
        if step.get("kind") == "invalid":
            turns.append({"role": "invalid", "step": i, "text": _cut(step.get("raw") or "")})
            continue
        call = step.get("call")
        turns.append(
            {
                "role": "call",
                "step": i,
                "tool": call["name"] if call else "(none)",
                "text": call_text(call) if call else "(none)",
            }
        )
        if step.get("error"):
            turns.append({"role": "error", "step": i, "text": str(step["error"])})
        else:
            turns.append({"role": "result", "step": i, "text": _cut(canonical_json(step.get("result")))})
    response = trajectory.get("response")
    turns.append({"role": "answer", "text": response if response is not None else None})
    return turns


def tool_errors(trajectory: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"step": i, "tool": (s.get("call") or {}).get("name", "(none)"), "message": str(s["error"])}
        for i, s in enumerate(trajectory.get("steps", []), start=1)
        if is_tool_error(s)
    ]


def _cut(text: str, limit: int = RESULT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + f" … ({len(text) - limit:,} more characters)"


def _case(run: dict[str, Any], q: dict[str, Any], labels, pred, judge) -> dict[str, Any]:
    """Everything the report shows about one run."""
    label = labels.get(run["id"])
    contributions = loads(pred["contributions"], {}) if pred else {}
    top = sorted(contributions.items(), key=lambda kv: -abs(kv[1]))[:TOP_CONTRIBUTIONS]
    return {
        "run_id": run["id"],
        "question_id": run["question_id"],
        "question": q.get("text"),
        "origin": q.get("origin"),
        "seed_id": q.get("seed_id"),
        "target": [call_text(c) for c in loads(q.get("target"), []) or []],
        "status": run["status"],
        "response": run["trajectory"].get("response"),
        "conversation": conversation(q.get("text"), run["trajectory"]),
        "tool_errors": tool_errors(run["trajectory"]),
        "probability": rounded(pred["probability"]) if pred else None,
        "verdict": None if pred is None else bool(pred["verdict"]),
        "contributions": {k: rounded(v) for k, v in top},
        "label": None if label is None else label["correct"],
        "label_source": None if label is None else label["source"],
        "judge": None if judge is None else {"correct": judge["correct"], "reason": judge["reason"]},
    }


def _scored(scope: Scope, data: ReportData) -> dict[str, dict[str, Any]]:
    model_id = data.metrics["verifier"].get("scored_model_id")
    return {p["run_id"]: p for p in scope.rows("predictions") if p["model_id"] == model_id}


def worst_cases(scope: Scope, qmap, runs, labels, n: int, data: ReportData) -> list[dict[str, Any]]:
    preds = _scored(scope, data)
    if not preds:
        data.metrics["missing"].append(_why_no_scores(data, "worst cases"))
        return []
    by_run = {r["id"]: r for r in runs}
    judges = {j["run_id"]: j for j in scope.rows("judge_verdicts")}
    out = []
    for p in sorted(preds.values(), key=lambda p: (p["probability"], p["run_id"])):
        if len(out) >= n:
            break
        run = by_run.get(p["run_id"])
        if run is not None:
            out.append(_case(run, qmap.get(run["question_id"], {}), labels, p, judges.get(run["id"])))
    return out


def samples_section(scope: Scope, qmap, runs, labels, n: int, data: ReportData) -> dict[str, Any]:
    """Up to `n` kept questions (seeds and kept generated questions, the ones the responder answers),
    each with its MCT run, or its first run when no MCT was marked."""
    kept = [s["question_id"] for s in scope.rows("selections", ["question_id", "kept"]) if s["kept"]]
    if not kept:  # no selection stage (imported questions): every base question that has runs
        kept = sorted({r["question_id"] for r in runs if r["group"] == "base"})
    questions = [qmap[i] for i in kept if i in qmap]
    questions.sort(key=lambda q: (q.get("seed_id") or "", q["origin"] != "seed", q["id"]))
    by_question: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_question.setdefault(r["question_id"], []).append(r)
    mct = {m["question_id"]: m for m in scope.rows("mct")}
    preds = _scored(scope, data)
    judges = {j["run_id"]: j for j in scope.rows("judge_verdicts")}
    items = []
    for q in questions[:n]:
        qruns = sorted(by_question.get(q["id"], []), key=lambda r: r["run_index"])
        m = mct.get(q["id"])
        run = next((r for r in qruns if m and r["id"] == m["run_id"]), qruns[0] if qruns else None)
        if run is None:
            items.append(
                {
                    "question_id": q["id"],
                    "question": q["text"],
                    "origin": q["origin"],
                    "seed_id": q.get("seed_id"),
                    "run_id": None,
                    "target": [call_text(c) for c in loads(q.get("target"), []) or []],
                }
            )
            continue
        item = _case(run, q, labels, preds.get(run["id"]), judges.get(run["id"]))
        item["runs"] = len(qruns)
        item["mct_share"] = rounded(m["share"]) if m and m["share"] is not None else None
        item["is_mct"] = bool(m and m["run_id"] == run["id"])
        items.append(item)
    if not questions:
        data.metrics["missing"].append("samples: no kept questions yet (run `magv generate` and selection)")
    return {"kept": len(questions), "shown": len(items), "items": items}


def _why_no_scores(data: ReportData, section: str) -> str:
    errors = data.metrics.get("stage_errors", {})
    for stage in ("score", "train", "gold_labels", "label", "features"):
        if errors.get(stage):
            return f"{section}: no verifier scores: the {stage} stage failed: {errors[stage][0]}"
    return f"{section}: no verifier scores yet (run `magv verify score`)"
