"""The verifier section: cross-validation of every model, curves, importances, scores, and the
verifier against the LLM judge in accuracy and in cost per 1,000 trajectories."""

from __future__ import annotations

from collections import Counter
from typing import Any

from magv.cascade.rules import agent_calls
from magv.definitions import best_model
from magv.models import Trajectory
from magv.report.curves import binary_curves
from magv.report.scope import ReportData, Scope, loads, rounded
from magv.verify.metrics import confusion

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
INTERVAL_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "mcc", "brier")


def _per_1000(total: float, n: int) -> float | None:
    return rounded(total / n * 1000, 3) if n else None


def verifier_section(scope: Scope, runs, labels, data: ReportData) -> dict[str, Any]:
    missing = data.metrics["missing"]
    cv, curves = _cross_validation(scope)
    model = _latest(scope.rows("verifier_models"))
    model_metrics = loads(model["metrics"], {}) if model else {}
    # The best model is magv.definitions.best_model's, by the metric the training selected by; the
    # model that training registered is that one whenever it comes from the same training.
    select_by = model_metrics.get("select_by") or "roc_auc"
    best_name = best_model(cv["raw"], select_by) if cv["raw"] else None
    same_training = bool(model) and model_metrics.get("training_id") == cv["training_id"]
    evaluation = model_metrics.get("evaluation") if same_training else None
    errors = data.metrics.get("stage_errors", {})
    if not cv["models"]:
        failed = next((st for st in ("train", "gold_labels", "label", "features") if errors.get(st)), None)
        missing.append(
            f"verifier: no cross-validation results: the {failed} stage failed: {errors[failed][0]}"
            if failed
            else "verifier: no cross-validation results (run `magv verify train`)"
        )

    predictions = scope.rows("predictions")
    scored_ids = Counter(p["model_id"] for p in predictions)
    scored_model_id = None
    if model and model["id"] in scored_ids:
        scored_model_id = model["id"]
    elif predictions:
        scored_model_id = max(predictions, key=lambda p: p["created_at"])["model_id"]
    preds = [p for p in predictions if p["model_id"] == scored_model_id]
    if not preds:
        missing.append(
            f"verifier: no scored trajectories: the score stage failed: {errors['score'][0]}"
            if errors.get("score")
            else "verifier: no scored trajectories: no model to score with (the train stage failed)"
            if errors.get("train") and not cv["models"]
            else "verifier: no scored trajectories (run `magv verify score`)"
        )

    if not curves and preds:
        # no out-of-fold predictions stored: fall back to the deployed model on its labelled rows
        pairs = [
            (int(labels[p["run_id"]]["correct"]), p["probability"]) for p in preds if p["run_id"] in labels
        ]
        fallback = binary_curves([y for y, _ in pairs], [s for _, s in pairs])
        if fallback:
            curves["deployed model (in-sample)"] = fallback
    data.series["curves"] = curves
    data.series["confusion"] = {m["name"]: m["confusion"] for m in cv["models"] if m.get("confusion")}

    importances = model_metrics.get("feature_importances") or {}
    importance_source = "model" if importances else None
    if not importances and preds:
        totals: Counter = Counter()
        for p in preds:
            for k, v in loads(p["contributions"], {}).items():
                totals[k] += abs(v)
        importances = {k: v / len(preds) for k, v in totals.items()}
        importance_source = "mean |contribution| over scored trajectories" if importances else None
    importances = dict(sorted(((k, rounded(v)) for k, v in importances.items()), key=lambda kv: -kv[1]))
    data.series["importances"] = importances

    scores = [
        (p["probability"], labels[p["run_id"]]["correct"] if p["run_id"] in labels else None) for p in preds
    ]
    data.series["scores"] = scores
    by_source = Counter(lb["source"] for lb in labels.values())
    best = next((m for m in cv["models"] if m["name"] == best_name), None)
    return {
        "training_id": cv["training_id"],
        "models": cv["models"],
        "best": best,
        "select_by": select_by if best else None,
        "baselines": _baselines(evaluation),
        "model": None
        if model is None
        else {
            "id": model["id"],
            "name": model["name"],
            "feature_version": model["feature_version"],
            "features": loads(model["features"], []),
            "created_at": str(model["created_at"]),
        },
        "scored_model_id": scored_model_id,
        "importances": importances,
        "importance_source": importance_source,
        "curves": {
            name: {
                "n": c["n"],
                "positives": c["positives"],
                "roc_auc": rounded(c["roc"]["auc"]),
                "average_precision": rounded(c["pr"]["average_precision"]),
                "brier": rounded(c["calibration"]["brier"]),
            }
            for name, c in curves.items()
        },
        "labels": {
            "labelled": len(labels),
            "by_source": dict(sorted(by_source.items())),
            "correct_share": rounded(sum(lb["correct"] for lb in labels.values()) / len(labels))
            if labels
            else None,
        },
        "scores": {
            "scored": len(preds),
            "positive_share": rounded(sum(bool(p["verdict"]) for p in preds) / len(preds)) if preds else None,
            "mean_probability": rounded(sum(p["probability"] for p in preds) / len(preds)) if preds else None,
            "threshold": preds[0]["threshold"] if preds else None,
        },
        "comparison": _comparison(scope, preds, labels, best, data),
    }


def _latest(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(rows, key=lambda r: (r["created_at"], r["id"])) if rows else None


def _cross_validation(scope: Scope) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = scope.rows("cv_results")
    if not rows:
        return {"training_id": None, "models": [], "raw": {}}, {}
    training_id = max(rows, key=lambda r: (r["created_at"], r["training_id"]))["training_id"]
    models, curves, raw = [], {}, {}
    for r in sorted((r for r in rows if r["training_id"] == training_id), key=lambda r: r["name"]):
        m = loads(r["metrics"], {})
        raw[r["name"]] = m
        oof = m.get("oof") or {}
        y, proba = oof.get("y") or [], oof.get("proba") or []
        row: dict[str, Any] = {
            "name": r["name"],
            **{k: rounded(m.get(k)) for k in (*METRICS, *INTERVAL_METRICS)},
        }
        row["confusion"] = m.get("confusion") or (confusion(y, proba) if y and len(y) == len(proba) else None)
        row["n"] = len(y) if y else (sum(map(sum, row["confusion"])) if row["confusion"] else None)
        row["intervals"] = _intervals(m)
        models.append(row)
        c = binary_curves(y, proba) if y else None
        if c:
            curves[r["name"]] = c
    return {"training_id": training_id, "models": models, "raw": raw}, curves


def _intervals(m: dict[str, Any]) -> dict[str, Any]:
    """metric -> {"value", "low", "high"} for the metrics training gave an interval (rounded)."""
    iv = m.get("intervals") or {}
    return {
        k: {"value": rounded(m.get(k)), "low": rounded(iv[k][0]), "high": rounded(iv[k][1])}
        for k in INTERVAL_METRICS
        if iv.get(k)
    }


def _baselines(evaluation: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The training's baselines and judges (magv.verify.evaluation) as rows beside the models."""
    if not evaluation:
        return []
    rows = [
        {
            "name": name,
            "n": b.get("n"),
            **{k: rounded(b.get(k)) for k in INTERVAL_METRICS},
            "intervals": _intervals(b),
        }
        for name, b in evaluation.get("baselines", {}).items()
    ]
    sel = evaluation.get("selected")
    if sel and "rows" in sel:
        # the honest headline: model and threshold chosen inside each training fold, mean over CV seeds
        for name, m in sel["rows"].items():
            label = f"nested selection ({sel['objective']})" if name == "selected" else f"baseline {name}"
            rows.append(
                {
                    "name": f"{label}, mean of {len(sel['seeds'])} CV seeds",
                    "n": evaluation.get("n"),
                    **{k: rounded((m.get(k) or {}).get("mean")) for k in INTERVAL_METRICS},
                    "sd": {k: rounded(v["sd"]) for k, v in m.items()},
                    "intervals": {},
                }
            )
    for j in evaluation.get("judges", []):
        rows.append(
            {
                "name": f"judge {j['model']}",
                "n": j["n"],
                **{k: rounded(j["judge"].get(k)) for k in INTERVAL_METRICS},
                "intervals": _intervals(j["judge"]),
            }
        )
        b = j["best_model"]
        rows.append(
            {
                "name": f"{b['name']} on the judge's rows",
                "n": j["n"],
                **{k: rounded(b.get(k)) for k in INTERVAL_METRICS},
                "intervals": _intervals(b),
            }
        )
    return rows


def _comparison(scope: Scope, preds, labels, best, data: ReportData) -> dict[str, Any]:
    """Accuracy on the labelled trajectories and cost per 1,000 trajectories. Seconds are summed
    model latencies (compute time), not wall time, so parallelism does not flatter either side."""
    judges = scope.rows("judge_verdicts")
    judged = [j for j in judges if j["run_id"] in labels]
    parsed = [j for j in judged if j["correct"] is not None]
    judge_acc = (
        rounded(sum(j["correct"] == labels[j["run_id"]]["correct"] for j in parsed) / len(judged))
        if judged
        else None
    )
    scored_labelled = [p for p in preds if p["run_id"] in labels]
    verdict = {p["run_id"]: bool(p["verdict"]) for p in preds}
    both = [j for j in judges if j["correct"] is not None and j["run_id"] in verdict]
    if not judges:
        data.metrics["missing"].append("verifier vs judge: no LLM-judge verdicts (run `magv verify judge`)")

    # Every LLM call by role from the log, failed and retried ones too: they were paid for.
    calls = scope.rows("llm_calls", ["role", "prompt_tokens", "completion_tokens", "latency_s"])
    judge_calls = [c for c in calls if c["role"] == "judge"]
    if judge_calls:
        judge_tokens = sum((c["prompt_tokens"] or 0) + (c["completion_tokens"] or 0) for c in judge_calls)
        judge_seconds = sum(c["latency_s"] or 0.0 for c in judge_calls)
    else:  # verdicts imported without their calls
        judge_tokens = sum((j["prompt_tokens"] or 0) + (j["completion_tokens"] or 0) for j in judges)
        judge_seconds = sum(j["latency_s"] or 0.0 for j in judges)
    stages = data.metrics["summary"]["stages"]
    score_stage = stages.get("score", {})
    # the stage's `done` counts batches (one for a whole store), `written` the predictions it stored
    n_scored = int(
        score_stage.get("written") or score_stage.get("scored") or score_stage.get("done") or len(preds)
    )
    scoring = None
    if score_stage.get("seconds") is not None and n_scored:
        scoring = {
            "seconds_per_1000": _per_1000(float(score_stage["seconds"]), n_scored),
            "tokens_per_1000": 0,
            "calls_per_1000": 0,
            "measured_on": n_scored,
            "source": "score stage wall time",
        }
    elif preds:
        data.metrics["missing"].append("verifier cost: no measured scoring time (score stage not recorded)")

    # The features need alternates: the reverse engineer's calls and the responder's runs on them.
    # The reverse engineer's calls come from the log by role; the responder's calls on alternates
    # share the role with its base runs, so they are counted on the alternates' runs (one call per
    # agent turn, magv.cascade.rules.agent_calls).
    reverse = [c for c in calls if c["role"] == "reverse"]
    alt_ids = {q["id"] for q in scope.rows("questions", ["id", "origin"]) if q["origin"] == "alternate"}
    alt_runs = [
        r
        for r in scope.rows(
            "runs", ["question_id", "prompt_tokens", "completion_tokens", "latency_s", "trajectory"]
        )
        if r["question_id"] in alt_ids
    ]
    alt_calls = sum(agent_calls(Trajectory.model_validate(loads(r["trajectory"], {}))) for r in alt_runs)
    n_verified = len(scope.rows("features", ["run_id"])) or len(preds)
    supervision_tokens = sum(
        (c["prompt_tokens"] or 0) + (c["completion_tokens"] or 0) for c in reverse + alt_runs
    )
    supervision_seconds = sum(c["latency_s"] or 0.0 for c in reverse + alt_runs)
    supervision_seconds += float(stages.get("features", {}).get("seconds") or 0.0)
    return {
        "verifier": {
            "cv_accuracy": best["accuracy"] if best else None,
            "in_sample_accuracy": rounded(
                sum(bool(p["verdict"]) == labels[p["run_id"]]["correct"] for p in scored_labelled)
                / len(scored_labelled)
            )
            if scored_labelled
            else None,
            "labelled_scored": len(scored_labelled),
        },
        "judge": {
            "model": judges[0]["model"] if judges else None,
            "verdicts": len(judges),
            "labelled_judged": len(judged),
            "unparsed": len(judged) - len(parsed),
            "accuracy": judge_acc,
            "accuracy_parsed_only": rounded(
                sum(j["correct"] == labels[j["run_id"]]["correct"] for j in parsed) / len(parsed)
            )
            if parsed
            else None,
        },
        "agreement": rounded(sum(j["correct"] == verdict[j["run_id"]] for j in both) / len(both))
        if both
        else None,
        "cost_per_1000": {
            "judge": {
                "tokens_per_1000": _per_1000(judge_tokens, len(judges)),
                "calls_per_1000": _per_1000(len(judge_calls) or len(judges), len(judges)),
                "seconds_per_1000": _per_1000(judge_seconds, len(judges)),
                "measured_on": len(judges),
                "source": "judge calls in the LLM call log" if judge_calls else "judge verdicts",
            }
            if judges
            else None,
            "verifier_scoring": scoring,
            "verifier_with_alternates": {
                "tokens_per_1000": _per_1000(supervision_tokens, n_verified),
                "calls_per_1000": _per_1000(len(reverse) + alt_calls, n_verified),
                "reverse_calls": len(reverse),
                "alternate_run_calls": alt_calls,
                "seconds_per_1000": _per_1000(
                    supervision_seconds + float(score_stage.get("seconds") or 0), n_verified
                ),
                "measured_on": n_verified,
                "source": "reverse-engineer calls (LLM call log) + responder runs on alternates + features and "
                "score stages",
            }
            if n_verified and (reverse or alt_runs)
            else None,
        },
    }
