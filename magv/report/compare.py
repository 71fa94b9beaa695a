"""`magv report --compare A B`: the report's headline numbers for two pipeline runs side by side.

Each side is either a pipeline run id in the current store (its rows are those created between the
run's start and finish) or the path of another .duckdb file (all its rows; the summary shows its
latest pipeline run). Two stores are the robust way to compare a prompt change: a rerun in the same
store skips work already done, so its window holds only what the rerun added.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from magv.errors import BadInput
from magv.report import agents, plots
from magv.report.html import ReportFiles, _env, _write
from magv.report.metrics import collect
from magv.report.scope import ReportData
from magv.store import Store

RATES = (
    ("tool error rate", ("responder", "base", "tool_error_rate")),
    ("invalid step rate", ("responder", "base", "invalid_step_rate")),
    ("mean MCT share", ("responder", "mct", "mean_share")),
    ("labelled correct", ("verifier", "labels", "correct_share")),
    ("verified correct", ("verifier", "scores", "positive_share")),
    ("judge accuracy", ("verifier", "comparison", "judge", "accuracy")),
)


def resolve(spec: str, default_db: Path) -> tuple[Path, str | None]:
    """(database, pipeline run id or None for the whole file) of one --compare argument."""
    path = Path(spec)
    if path.suffix == ".duckdb" or path.is_file():
        if not path.is_file():
            raise BadInput(f"--compare: {spec}: no such database file")
        return path, None
    return default_db, spec


# Which way is better for each headline number; the rest (sizes, stage times) are shown unmarked.
HIGHER_IS_BETTER = (
    "mean MCT share",
    "labelled correct on shared questions",
    "labelled correct (share)",
    "verifier best model CV accuracy",
    "verifier best model CV F1",
    "verifier best model CV ROC AUC",
    "verified correct (share of scored)",
    "judge accuracy",
)
LOWER_IS_BETTER = (
    "failures",
    "failed generations",
    "tool error rate",
    "invalid step rate",
    "runs ending not ok",
)
# a change smaller than this (absolute, on shares) is noise, not a regression
SHARE_TOLERANCE = 0.005


def change(metric: str, delta: float | None) -> str | None:
    """'better', 'worse' or 'same' for the metrics with a direction; None for the others."""
    if delta is None or (metric not in HIGHER_IS_BETTER and metric not in LOWER_IS_BETTER):
        return None
    if abs(delta) <= (
        0 if metric in ("failures", "failed generations", "runs ending not ok") else SHARE_TOLERANCE
    ):
        return "same"
    return "better" if (delta > 0) == (metric in HIGHER_IS_BETTER) else "worse"


def _dig(m: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if not isinstance(m, dict):
            return None
        m = m.get(k)
    return m


def _delta(a: Any, b: Any) -> float | None:
    numeric = (int, float)
    if (
        isinstance(a, numeric)
        and isinstance(b, numeric)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return round(b - a, 4)
    return None


def compare_metrics(a: ReportData, b: ReportData, labels: tuple[str, str]) -> dict[str, Any]:
    ha, hb = a.metrics["headline"], b.metrics["headline"]
    rows = [
        {"metric": k, "a": ha.get(k), "b": hb.get(k), "delta": _delta(ha.get(k), hb.get(k))}
        for k in list(ha) + [k for k in hb if k not in ha]
    ]
    for r in rows:
        r["change"] = change(r["metric"], r["delta"])
    models_a = {m["name"]: m for m in a.metrics["verifier"]["models"]}
    models_b = {m["name"]: m for m in b.metrics["verifier"]["models"]}
    models = [
        {"name": n, "a": models_a.get(n), "b": models_b.get(n)} for n in sorted(set(models_a) | set(models_b))
    ]
    return {
        "labels": list(labels),
        "headline": rows,
        "models": models,
        "regressions": [r["metric"] for r in rows if r["change"] == "worse"],
        "improvements": [r["metric"] for r in rows if r["change"] == "better"],
    }


def figures(a: ReportData, b: ReportData, labels: tuple[str, str]) -> dict[str, str]:
    ma, mb = a.metrics, b.metrics
    stages = list(dict.fromkeys(list(ma["summary"]["stages"]) + list(mb["summary"]["stages"])))
    models = sorted(
        {m["name"] for m in ma["verifier"]["models"]} | {m["name"] for m in mb["verifier"]["models"]}
    )
    f1 = [{m["name"]: m["f1"] for m in side["verifier"]["models"]} for side in (ma, mb)]
    tools = list(
        dict.fromkeys(
            [t["tool"] for t in ma["responder"]["base"]["per_tool"]]
            + [t["tool"] for t in mb["responder"]["base"]["per_tool"]]
        )
    )
    err = [{t["tool"]: t["error_rate"] for t in side["responder"]["base"]["per_tool"]} for side in (ma, mb)]
    makers = {
        "rates": lambda: plots.paired_bars(
            "Quality at a glance",
            [n for n, _ in RATES],
            [_dig(ma, k) for _, k in RATES],
            [_dig(mb, k) for _, k in RATES],
            labels,
            "share",
        ),
        "stages": lambda: plots.paired_bars(
            "Wall time per stage",
            stages,
            [ma["summary"]["stages"].get(s, {}).get("seconds") for s in stages],
            [mb["summary"]["stages"].get(s, {}).get("seconds") for s in stages],
            labels,
            "seconds",
        ),
        "cv_f1": lambda: plots.paired_bars(
            "Cross-validation F1 per model",
            models,
            [f1[0].get(m) for m in models],
            [f1[1].get(m) for m in models],
            labels,
            "F1",
        ),
        "steps": lambda: plots.steps_histogram(
            {
                labels[0]: ma["responder"]["base"]["steps_histogram"],
                labels[1]: mb["responder"]["base"]["steps_histogram"],
            },
            "Trajectory length (base questions)",
        ),
        "tool_errors": lambda: plots.paired_bars(
            "Tool error rate per tool",
            tools,
            [err[0].get(t) for t in tools],
            [err[1].get(t) for t in tools],
            labels,
            "error rate",
        ),
    }
    return plots.render_figures(makers)


def _add_questions(result: dict[str, Any], a: dict[str, Any], b: dict[str, Any]) -> None:
    """Which agent answered on each side, and the questions both sides labelled (magv.report.agents)."""
    questions = agents.compare_questions(a, b)
    result["agents"] = {
        "a": a["agents"],
        "b": b["agents"],
        "labels": [agents.agent_label(a["agents"]), agents.agent_label(b["agents"])],
    }
    result["questions"] = questions
    if questions["shared"]:
        metric = "labelled correct on shared questions"
        delta = _delta(questions["a_correct"], questions["b_correct"])
        row = {
            "metric": metric,
            "a": questions["a_correct"],
            "b": questions["b_correct"],
            "delta": delta,
            "change": change(metric, delta),
        }
        result["headline"].append(row)
        if row["change"] == "worse":
            result["regressions"].append(metric)
        elif row["change"] == "better":
            result["improvements"].append(metric)


def write_compare(spec_a: str, spec_b: str, default_db: Path, out_dir: str | Path) -> ReportFiles:
    sides: list[tuple[str, ReportData]] = []
    answered = []
    for spec in (spec_a, spec_b):
        path, run_id = resolve(spec, default_db)
        with Store(path, read_only=True) as store:
            data = collect(store, run_id, worst=0, samples=0)
            answered.append(agents.outcomes(store, run_id))
        run = data.metrics["summary"]["pipeline_run"]
        label = run_id or (f"{path.stem}:{run['id']}" if run else path.stem)
        sides.append((label, data))
    labels = (sides[0][0], sides[1][0])
    if labels[0] == labels[1]:
        labels = (f"A {labels[0]}", f"B {labels[1]}")
    (_, a), (_, b) = sides
    result = compare_metrics(a, b, labels)
    _add_questions(result, *answered)
    result["sources"] = {"a": spec_a, "b": spec_b}
    result["missing"] = {"a": a.metrics["missing"], "b": b.metrics["missing"]}
    figs = figures(a, b, labels)
    out = Path(out_dir)
    files = ReportFiles(html=out / "compare.html", metrics=out / "compare.json", figures=len(figs))
    full = {**result, "a": a.metrics, "b": b.metrics}
    _write(files.metrics, json.dumps(full, indent=2, default=str) + "\n")
    _write(
        files.html,
        _env().get_template("compare.html.j2").render(c=result, a=a.metrics, b=b.metrics, fig=figs),
    )
    return files
