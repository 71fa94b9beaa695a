"""The report's numbers, computed from one store, optionally limited to one pipeline run.

`collect` returns `ReportData`: `metrics` (JSON-able, written to metrics.json, compared by
`--compare`) and `series` (plot inputs such as points and curves, too bulky for the JSON).
Each section is computed independently; a section without data says so in `missing` instead of
failing, so a store without a verifier still gets its generation and responder sections.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from magv.definitions import effective_labels, is_tool_error
from magv.models import Label, utcnow
from magv.report.cascade import cascade_section
from magv.report.quality import quality_section
from magv.report.samples import samples_section, worst_cases
from magv.report.scope import ReportData, Scope, loads, mean, rounded
from magv.report.verifier import verifier_section
from magv.store import Store

# pipeline order; stages JSON comes back with sorted keys
STAGE_ORDER = (
    "generate",
    "select",
    "respond",
    "reverse",
    "respond_alternates",
    "features",
    "gold_labels",
    "label",
    "train",
    "score",
    "judge",
    "cascade",
)
BASE = "base"
ALTERNATE = "alternate"


def collect(
    store: Store, pipeline_run_id: str | None = None, worst: int = 10, samples: int = 30
) -> ReportData:
    scope = Scope(store, pipeline_run_id)
    data = ReportData(
        metrics={
            "database": str(store.path),
            "generated_at": utcnow().isoformat(timespec="seconds"),
            "scope": {
                "pipeline_run": pipeline_run_id,
                "window": [t.isoformat() for t in scope.window] if scope.window else None,
            },
            "missing": [],
        }
    )
    questions = scope.rows("questions", ["id", "text", "origin", "seed_id", "target", "status", "group_id"])
    qmap = {q["id"]: q for q in questions}
    runs = scope.rows("runs")
    for r in runs:
        r["trajectory"] = json.loads(r["trajectory"]) if r["trajectory"] else {"steps": []}
        q = qmap.get(r["question_id"])
        r["group"] = ALTERNATE if q and q["origin"] == "alternate" else BASE
    winners = effective_labels(Label(**r) for r in scope.rows("labels"))
    labels = {run_id: label.model_dump() for run_id, label in winners.items()}

    data.metrics["stage_errors"] = stage_errors(scope)
    data.metrics["generation"] = _generation(scope, questions, data)
    data.metrics["quality"] = quality_section(store)
    data.metrics["summary"] = _summary(scope, questions, runs, labels, data)
    data.metrics["responder"] = _responder(scope, runs, data)
    data.metrics["verifier"] = verifier_section(scope, runs, labels, data)
    data.metrics["cascade"] = cascade_section(scope, labels, data)
    data.metrics["worst_cases"] = worst_cases(scope, qmap, runs, labels, worst, data)
    data.metrics["samples"] = samples_section(scope, qmap, runs, labels, samples, data)
    data.metrics["evaluation"] = _evaluation(scope, data)
    data.metrics["headline"] = headline(data.metrics)
    return data


# -- helpers ------------------------------------------------------------------------------------


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(sep=" ", timespec="seconds")


def reason_kind(reason: str | None) -> str:
    """The leading phrase of a selection reason, without ids and numbers: the reasons that
    select.py writes ("near-duplicate of q1 (cosine 0.97 >= 0.95)") group by what happened."""
    if not reason:
        return "unspecified"
    head = re.split(r" of |\(|:", reason, maxsplit=1)[0]
    return re.sub(r"\s+", " ", re.sub(r"\d+", "", head)).strip() or "unspecified"


def _tool_string(calls: list[dict[str, Any]] | None) -> str:
    return " → ".join(c["name"] for c in calls) if calls else "(none)"


# -- sections -----------------------------------------------------------------------------------


def _summary(scope: Scope, questions, runs, labels, data: ReportData) -> dict[str, Any]:
    run = scope.run
    stages: dict[str, dict[str, Any]] = {}
    summary: dict[str, Any] = {}
    if run is None:
        data.metrics["missing"].append("run summary: no pipeline run recorded (stages were run one by one)")
    else:
        raw = {k: v for k, v in loads(run["stages"], {}).items() if isinstance(v, dict)}
        rank = {name: i for i, name in enumerate(STAGE_ORDER)}
        stages = dict(sorted(raw.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
        summary = loads(run["summary"], {})
    calls = scope.rows(
        "llm_calls", ["role", "model", "prompt_tokens", "completion_tokens", "latency_s", "retries", "error"]
    )
    models: dict[tuple[str, str], dict[str, Any]] = {}
    for c in calls:
        m = models.setdefault(
            (c["role"], c["model"]),
            {
                "role": c["role"],
                "model": c["model"],
                "calls": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "latency_s": 0.0,
                "retries": 0,
                "errors": 0,
            },
        )
        m["calls"] += 1
        m["prompt_tokens"] += c["prompt_tokens"] or 0
        m["completion_tokens"] += c["completion_tokens"] or 0
        m["latency_s"] += c["latency_s"] or 0.0
        m["retries"] += c["retries"] or 0
        m["errors"] += c["error"] is not None
    for m in models.values():
        m["latency_s"] = rounded(m["latency_s"], 3)
    origins = Counter(q["origin"] for q in questions)
    generations = scope.rows("generations")
    judge = scope.rows("judge_verdicts", ["error"])
    run_status = Counter(r["status"] for r in runs)
    wall = None
    if run is not None and run["finished_at"] and run["started_at"]:
        wall = rounded((run["finished_at"] - run["started_at"]).total_seconds(), 3)
    domains = sorted({q.get("domain") for q in scope.rows("questions", ["domain"])} - {None})
    gen = data.metrics["generation"]
    failed_stages = {
        name: int(st.get("failed") or 0)
        for name, st in stages.items()
        if st.get("failed") or st.get("errors")
    }
    failures = {
        "failed_stages": failed_stages,
        "failed_generations": gen["failed_generations"],
        "failed_reverse": sum(
            1 for g in generations if g.get("kind") == "reverse" and g["status"] == "failed"
        ),
        "failed_questions": sum(1 for q in questions if q["status"] == "failed"),
        "llm_call_errors": sum(m["errors"] for m in models.values()),
        "llm_call_retries": sum(m["retries"] for m in models.values()),
        "runs_not_ok": {k: v for k, v in sorted(run_status.items()) if k != "ok"},
        "judge_errors": sum(1 for j in judge if j["error"]),
        "reported_by_pipeline": summary.get("failures", {}),
    }
    # One total, used by the headline and the KPI: the failed work items of every stage when the
    # pipeline recorded its stages (a stage that failed as a whole, errors but no failed items, counts
    # one), else what the tables show failed (stages run on their own).
    if stages:
        failures["total"] = sum(failed_stages.values()) + sum(1 for n in failed_stages.values() if n == 0)
    else:
        failures["total"] = (
            failures["failed_generations"]
            + failures["failed_reverse"]
            + failures["failed_questions"]
            + failures["judge_errors"]
        )
    return {
        "pipeline_run": None
        if run is None
        else {
            "id": run["id"],
            "status": run["status"],
            "domain": run["domain"],
            "started_at": _when(run["started_at"]),
            "finished_at": _when(run["finished_at"]),
            "wall_s": wall,
        },
        "pipeline_runs": [
            {
                "id": r["id"],
                "status": r["status"],
                "started_at": _when(r["started_at"]),
                "domain": r["domain"],
            }
            for r in scope.pipeline_runs
        ],
        "domain": run["domain"] if run is not None else (", ".join(domains) or None),
        "stages": {
            name: {k: v for k, v in s.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            for name, s in stages.items()
        },
        "stage_seconds_total": rounded(sum(float(s.get("seconds") or 0) for s in stages.values()), 3),
        "models": sorted(models.values(), key=lambda m: (m["role"], m["model"])),
        "tokens": {
            "prompt": sum(m["prompt_tokens"] for m in models.values()),
            "completion": sum(m["completion_tokens"] for m in models.values()),
        },
        "sizes": {
            "seed_questions": origins.get("seed", 0),
            "generated_questions": origins.get("investigator", 0),
            "kept_questions": gen["kept_total"],
            "alternate_questions": origins.get("alternate", 0),
            "imported_questions": origins.get("import", 0),
            "base_runs": sum(1 for r in runs if r["group"] == BASE),
            "alternate_runs": sum(1 for r in runs if r["group"] == ALTERNATE),
            "labelled_runs": len(labels),
        },
        "failures": failures,
        "pipeline_summary": summary,
    }


def stage_errors(scope: Scope) -> dict[str, list[str]]:
    """stage -> the error messages its record kept (`pipeline_runs.stages.<stage>.errors`), for the
    stages of the scoped pipeline run that recorded any."""
    if scope.run is None:
        return {}
    raw = loads(scope.run["stages"], {}) or {}
    rank = {name: i for i, name in enumerate(STAGE_ORDER)}
    out = {
        name: [str(e) for e in st["errors"]]
        for name, st in raw.items()
        if isinstance(st, dict) and st.get("errors")
    }
    return dict(sorted(out.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def _generation(scope: Scope, questions, data: ReportData) -> dict[str, Any]:
    selections = {s["question_id"]: s for s in scope.rows("selections")}
    generations = [
        g for g in scope.rows("generations") if g.get("kind", "investigator") in (None, "investigator")
    ]
    targets: dict[str, dict[str, Any]] = {}

    def target(seed_id: str | None) -> dict[str, Any]:
        key = seed_id or "(no seed)"
        return targets.setdefault(
            key,
            {
                "seed_id": key,
                "target": "(unknown)",
                "generated": 0,
                "kept": 0,
                "dropped": 0,
                "dropped_by_reason": Counter(),
                "failed_generations": 0,
            },
        )

    for q in questions:
        if q["origin"] == "seed":
            target(q["seed_id"])["target"] = _tool_string(loads(q["target"]))
    for q in questions:
        if q["origin"] != "investigator":
            continue
        t = target(q["seed_id"])
        if t["target"] == "(unknown)":
            t["target"] = _tool_string(loads(q["target"]))
        t["generated"] += 1
        sel = selections.get(q["id"])
        if sel is None:
            continue
        if sel["kept"]:
            t["kept"] += 1
        else:
            t["dropped"] += 1
            t["dropped_by_reason"][reason_kind(sel["reason"])] += 1
    for g in generations:
        if g["status"] == "failed":
            target(g["seed_id"])["failed_generations"] += 1
    rows = sorted(targets.values(), key=lambda t: t["seed_id"])
    for t in rows:
        t["dropped_by_reason"] = dict(sorted(t["dropped_by_reason"].items()))
    reasons: Counter = Counter()
    for t in rows:
        reasons.update(t["dropped_by_reason"])
    texts = {q["id"]: q["text"] for q in questions}
    # seeds are kept without an embedding (x = y = 0): they are not points of the map
    points = [
        (s["x"], s["y"], s["cluster"], bool(s["kept"]), texts.get(qid))
        for qid, s in selections.items()
        if s["x"] is not None and s["y"] is not None and s.get("reason") != "seed"
    ]
    data.series["map"] = points
    data.series["per_target"] = rows
    if not any(t["generated"] for t in rows):
        data.metrics["missing"].append("question generation: no investigator questions (run `magv generate`)")
    if not selections:
        data.metrics["missing"].append(
            "question generation: no selection yet, so no embedding map (run selection)"
        )
    kept_clusters = {s["cluster"] for s in selections.values() if s["kept"] and s["cluster"] is not None}
    seeds_kept = sum(
        1 for q in questions if q["origin"] == "seed" and (selections.get(q["id"]) or {}).get("kept")
    )
    kept = sum(t["kept"] for t in rows)
    return {
        "targets": rows,
        "generated": sum(t["generated"] for t in rows),
        "kept": kept,
        "seeds_kept": seeds_kept,
        "kept_total": kept + seeds_kept,
        "dropped": sum(t["dropped"] for t in rows),
        "dropped_by_reason": dict(sorted(reasons.items())),
        "failed_generations": sum(t["failed_generations"] for t in rows),
        "clusters": len(kept_clusters),
        "selected": len(selections),
    }


def _run_stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    steps_hist: Counter = Counter()
    calls_hist: Counter = Counter()
    tool_calls: Counter = Counter()
    tool_errors: Counter = Counter()
    invalid = total_steps = with_error = 0
    for r in runs:
        steps = r["trajectory"].get("steps", [])
        n_calls = 0
        errors = 0
        for s in steps:
            total_steps += 1
            if s.get("kind") == "invalid":
                invalid += 1
                continue
            name = (s.get("call") or {}).get("name", "(none)")
            n_calls += 1
            tool_calls[name] += 1
            if is_tool_error(s):
                tool_errors[name] += 1
                errors += 1
        steps_hist[len(steps)] += 1
        calls_hist[n_calls] += 1
        with_error += errors > 0
    n = len(runs)
    n_calls = sum(tool_calls.values())
    return {
        "runs": n,
        "status": dict(sorted(Counter(r["status"] for r in runs).items())),
        "mean_steps": mean([len(r["trajectory"].get("steps", [])) for r in runs]),
        "mean_tool_calls": rounded(n_calls / n) if n else None,
        "steps_histogram": {str(k): v for k, v in sorted(steps_hist.items())},
        "tool_calls_histogram": {str(k): v for k, v in sorted(calls_hist.items())},
        "tool_calls": n_calls,
        "tool_errors": sum(tool_errors.values()),
        "tool_error_rate": rounded(sum(tool_errors.values()) / n_calls) if n_calls else None,
        "invalid_steps": invalid,
        "invalid_step_rate": rounded(invalid / total_steps) if total_steps else None,
        "runs_with_tool_error": rounded(with_error / n) if n else None,
        "per_tool": [
            {"tool": t, "calls": c, "errors": tool_errors[t], "error_rate": rounded(tool_errors[t] / c)}
            for t, c in sorted(tool_calls.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "mean_prompt_tokens": mean([r["prompt_tokens"] or 0 for r in runs]),
        "mean_completion_tokens": mean([r["completion_tokens"] or 0 for r in runs]),
        "mean_latency_s": mean([r["latency_s"] or 0.0 for r in runs]),
    }


def _responder(scope: Scope, runs, data: ReportData) -> dict[str, Any]:
    base = [r for r in runs if r["group"] == BASE]
    alternates = [r for r in runs if r["group"] == ALTERNATE]
    mct = scope.rows("mct")
    shares = [m["share"] for m in mct if m["share"] is not None]
    data.series["mct_shares"] = shares
    if not runs:
        data.metrics["missing"].append("responder: no runs yet (run `magv respond`)")
    if runs and not mct:
        data.metrics["missing"].append("responder: no most-common trajectories marked yet")
    return {
        "base": _run_stats(base),
        "alternates": _run_stats(alternates),
        "mct": {
            "questions": len(mct),
            "mean_share": mean(shares),
            "unanimous": rounded(sum(1 for s in shares if s >= 1.0) / len(shares)) if shares else None,
            "mean_distinct": mean([m["n_distinct"] for m in mct if m["n_distinct"] is not None]),
            "share_histogram": {
                f"{k:.2f}": v for k, v in sorted(Counter(round(s, 2) for s in shares).items())
            },
        },
    }


def _evaluation(scope: Scope, data: ReportData) -> dict[str, Any] | None:
    rows = scope.rows("eval_results")
    if not rows:
        return None
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["eval_id"], r["config"])].append(_flatten(loads(r["results"], {})))
    out = []
    for (eval_id, config), results in sorted(groups.items()):
        keys = sorted({k for res in results for k in res})
        means, rates = {}, {}
        for k in keys:
            values = [res[k] for res in results if k in res]
            if all(isinstance(v, bool) for v in values):
                rates[k] = mean([float(v) for v in values])
            else:
                means[k] = mean([float(v) for v in values])
        out.append(
            {"eval_id": eval_id, "config": config, "questions": len(results), "rates": rates, "means": means}
        )
    data.series["evaluation"] = out
    return {"configs": out}


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, float | bool]:
    flat: dict[str, float | bool] = {}
    for k, v in value.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, name + "."))
        elif isinstance(v, bool | int | float):
            flat[name] = v
    return flat


def headline(m: dict[str, Any]) -> dict[str, float | int | None]:
    """The numbers `--compare` puts side by side, flat and in reading order."""
    s, g, r, v = m["summary"], m["generation"], m["responder"], m["verifier"]
    out: dict[str, float | int | None] = {
        "questions generated": g["generated"],
        "questions kept": g["kept_total"],
        "generated questions kept": g["kept"],
        "questions dropped": g["dropped"],
        "failed generations": g["failed_generations"],
        "failures": s["failures"]["total"],
        "responder runs": r["base"]["runs"],
        "mean steps per run": r["base"]["mean_steps"],
        "mean tool calls per run": r["base"]["mean_tool_calls"],
        "tool error rate": r["base"]["tool_error_rate"],
        "invalid step rate": r["base"]["invalid_step_rate"],
        "runs ending not ok": sum(r["base"]["status"].get(k, 0) for k in r["base"]["status"] if k != "ok"),
        "mean MCT share": r["mct"]["mean_share"],
        "alternate runs": r["alternates"]["runs"],
        "labelled trajectories": v["labels"]["labelled"],
        "labelled correct (share)": v["labels"]["correct_share"],
        "verifier best model CV accuracy": v["best"]["accuracy"] if v.get("best") else None,
        "verifier best model CV F1": v["best"]["f1"] if v.get("best") else None,
        "verifier best model CV ROC AUC": v["best"]["roc_auc"] if v.get("best") else None,
        "verified correct (share of scored)": v["scores"]["positive_share"],
        "judge accuracy": v["comparison"]["judge"]["accuracy"],
        "prompt tokens": s["tokens"]["prompt"],
        "completion tokens": s["tokens"]["completion"],
        "wall time (s)": (s["pipeline_run"] or {}).get("wall_s"),
    }
    for name, stage in s["stages"].items():
        if "seconds" in stage:
            out[f"stage {name} (s)"] = stage["seconds"]
    return out


__all__ = ["ReportData", "Scope", "collect", "headline", "reason_kind"]
