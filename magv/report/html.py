"""Render the report: figures from `plots`, numbers from `metrics`, one self-contained HTML file
(inline CSS, figures as data URIs, no script or font from the network) and metrics.json beside it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from matplotlib.figure import Figure

from magv import __version__
from magv.outputs import atomic_output
from magv.report import plots
from magv.report.metrics import collect
from magv.report.scope import ReportData
from magv.store import Store

_HERE = Path(__file__).resolve().parent


@dataclass
class ReportFiles:
    html: Path
    metrics: Path
    data: ReportData | None = None
    figures: int = 0


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(_HERE),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_number
    env.filters["pct"] = lambda v: "–" if v is None else f"{v:.1%}"
    env.filters["secs"] = lambda v: "–" if v is None else (f"{v * 1000:.0f} ms" if v < 1 else f"{v:,.1f} s")
    env.tests["startswith"] = lambda value, prefix: str(value).startswith(prefix)
    env.globals["version"] = __version__
    return env


def fmt_number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        return f"{value:,.{digits}f}"
    return str(value)


def figures(data: ReportData) -> dict[str, str]:
    """Name -> SVG data URI, for every figure that has data."""
    m, s = data.metrics, data.series
    v = m["verifier"]
    best = v["best"]["name"] if v.get("best") else None
    makers: dict[str, Callable[[], Figure | None]] = {
        "stage_seconds": lambda: plots.stage_seconds(m["summary"]["stages"]),
        "tokens_by_role": lambda: plots.tokens_by_role(m["summary"]["models"]),
        "per_target": lambda: plots.per_target(m["generation"]["targets"]),
        "embedding_map": lambda: plots.embedding_map(s.get("map", [])),
        "steps": lambda: plots.steps_histogram(
            {
                "base questions": m["responder"]["base"]["steps_histogram"],
                "alternates": m["responder"]["alternates"]["steps_histogram"],
            }
        ),
        "tool_use": lambda: plots.tool_use(m["responder"]["base"]["per_tool"]),
        "mct_share": lambda: plots.mct_share(s.get("mct_shares", [])),
        "cv_metrics": lambda: plots.cv_metrics(v["models"], best),
        "confusion": lambda: plots.confusion_grid(s.get("confusion", {})),
        "roc": lambda: plots.roc(s.get("curves", {})),
        "pr": lambda: plots.precision_recall(s.get("curves", {})),
        "calibration": lambda: plots.calibration(s.get("curves", {})),
        "importances": lambda: plots.importances(v["importances"]),
        "scores": lambda: plots.score_distribution(s.get("scores", []), v["scores"]["threshold"]),
        "verifier_vs_judge": lambda: plots.verifier_vs_judge(v["comparison"]),
        "evaluation": lambda: plots.evaluation_rates(s.get("evaluation", [])),
        "cascade_curve": lambda: plots.cascade_curve(s.get("cascade_curve", [])),
        "learning_curve": lambda: plots.learning_curve(s.get("learning_curve", [])),
    }
    return plots.render_figures(makers)


def render(data: ReportData, figs: dict[str, str]) -> str:
    return _env().get_template("report.html.j2").render(m=data.metrics, fig=figs)


def write_report(
    store: Store, out_dir: str | Path, pipeline_run_id: str | None = None, worst: int = 10, samples: int = 30
) -> ReportFiles:
    data = collect(store, pipeline_run_id, worst=worst, samples=samples)
    figs = figures(data)
    data.metrics["figures"] = sorted(figs)
    out = Path(out_dir)
    files = ReportFiles(html=out / "report.html", metrics=out / "metrics.json", data=data, figures=len(figs))
    _write(files.metrics, json.dumps(data.metrics, indent=2, default=str) + "\n")
    _write(files.html, render(data, figs))
    return files


def _write(path: Path, text: str) -> None:
    with atomic_output(path, "report") as tmp:
        tmp.write_text(text, encoding="utf-8")
