"""The data card written beside every export (`<export>.card.json` and `<export>.card.md`): where the
dataset came from and how far it can be trusted, so it can be published with its provenance.

It records the models that made it (per agent role), the hashes of the prompt templates they were
given, the counts (runs, questions, verified runs, labels by source), and the verifier that scored
it with its cross-validation metrics. "Verified" is the store's definition
(`Store.runs_with_verdicts` with `verified_only`): the effective label if there is one, else the verifier's verdict.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magv import __version__
from magv.definitions import best_model
from magv.models import utcnow

if TYPE_CHECKING:
    from magv.store import Store

CV_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
INTERVAL_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "mcc", "brier")


def card_paths(export_path: str | Path) -> tuple[Path, Path]:
    p = Path(export_path)
    return p.with_name(p.name + ".card.json"), p.with_name(p.name + ".card.md")


def _loads(value: Any, default: Any = None) -> Any:
    if value is None:
        return default
    return json.loads(value) if isinstance(value, str) else value


def build_card(
    store: Store, result: Any, *, verified_only: bool = False, min_score: float | None = None
) -> dict[str, Any]:
    """The card of an export just written: `result` is its ExportResult."""
    from magv.export import export_rows

    rows, _ = export_rows(
        store, result.format, result.model_id, verified_only=verified_only, min_score=min_score
    )
    verified, _ = export_rows(store, result.format, result.model_id, verified_only=True, min_score=min_score)
    labelled = [r for r in rows if r["label"] is not None]
    roles = store.call_templates()
    model = store.verifier_model(result.model_id) if result.model_id else None
    return {
        "magv_version": __version__,
        "created_at": utcnow().isoformat(timespec="seconds"),
        "database": str(store.path),
        "export": {
            "path": str(result.path),
            "format": result.format,
            "rows": result.rows,
            "questions": result.questions,
            "alternates": result.alternates,
            "orphan_alternates": result.orphan_alternates,
            "skipped_without_answer": result.skipped,
            "filters": {"verified_only": verified_only, "min_score": min_score},
        },
        "domains": dict(sorted(Counter(r["domain"] for r in rows).items())),
        "counts": {
            "runs": len(rows),
            "questions": len({r["question_id"] for r in rows if r["origin"] != "alternate"}),
            "alternates": len({r["question_id"] for r in rows if r["origin"] == "alternate"}),
            "by_origin": dict(sorted(Counter(r["origin"] for r in rows).items())),
            "mct_runs": sum(1 for r in rows if r["is_mct"]),
            "verified_runs": len(verified),
            "labelled_runs": len(labelled),
            "labelled_correct": sum(1 for r in labelled if r["label"]),
            "scored_runs": sum(1 for r in rows if r["score"] is not None),
            "verdict_correct": sum(1 for r in rows if r["verdict"]),
        },
        "label_sources": dict(sorted(Counter(r["label_source"] for r in labelled).items())),
        "models": sorted({(r["role"], r["model"]) for r in roles}),
        "prompts": [
            {
                "role": r["role"],
                "model": r["model"],
                "template": r["template"],
                "template_hash": r["template_hash"],
                "calls": r["calls"],
            }
            for r in roles
        ],
        "verifier": None if model is None else _verifier(store, model),
        "quality": _quality(store),
        "pipeline_runs": [
            {"id": p["id"], "status": p["status"], "domain": p["domain"], "started_at": str(p["started_at"])}
            for p in store.pipeline_runs()
        ],
    }


def _quality(store: Store) -> dict[str, Any]:
    """The dataset-quality figures (magv/report/quality.py) with one example per failure."""
    from magv.report.quality import quality_section

    return quality_section(store, examples=1)


def _quality_lines(q: dict[str, Any]) -> list[str]:
    lines = ["## Dataset quality", ""]
    if not q.get("investigator") and not q.get("alternate"):
        return lines + [
            "No generated question was checked (questions made before the checks, or imported).",
            "",
        ]
    lines += [
        "Rule checks of the generated questions (magv/quality.py), after the rule repairs; "
        f"selection {'kept only questions that pass' if q.get('min_quality') else 'ignored the checks'}.",
        "",
        "| questions | checked | passed | answerable | customer's voice | identifiers | repaired |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for origin in ("investigator", "alternate"):
        o = q.get(origin)
        if o:
            r = o["rates"]
            lines.append(
                f"| {origin} | {o['checked']} | {o['passed']} | {_pct(r.get('answerable'))} | "
                f"{_pct(r.get('voice'))} | {_pct(r.get('identifiers'))} | {o['repaired']} |"
            )
    for origin, f in (q.get("fidelity") or {}).get("by_origin", {}).items():
        lines.append(
            f"- fidelity of {origin} questions (MCT matches the target, {q['fidelity']['mode']}): "
            f"{f['matched']} of {f['questions']}"
        )
    for origin in ("investigator", "alternate"):
        for f in (q.get(origin) or {}).get("failures", []):
            example = f["examples"][0]["text"] if f["examples"] else ""
            lines.append(
                f"- {origin}, {f['check']}: {f['before_repair']} before repair, {f['after_repair']} after"
                + (f"; e.g. “{example[:160]}”" if example else "")
            )
    return [*lines, ""]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def _verifier(store: Store, model: dict[str, Any]) -> dict[str, Any]:
    metrics = _loads(model["metrics"], {}) or {}
    cv, raw = {}, {}
    for row in (
        store.cv_results(metrics.get("training_id")) if metrics.get("training_id") else store.cv_results()
    ):
        m = _loads(row["metrics"], {}) or {}
        raw[row["name"]] = m
        cv[row["name"]] = {k: m.get(k) for k in (*CV_METRICS, *INTERVAL_METRICS)}
        cv[row["name"]]["intervals"] = {k: v for k, v in (m.get("intervals") or {}).items() if v}
    select_by = metrics.get("select_by") or "roc_auc"
    evaluation = metrics.get("evaluation") or {}
    baselines = {
        name: {**{k: b.get(k) for k in INTERVAL_METRICS}, "intervals": b.get("intervals") or {}}
        for name, b in evaluation.get("baselines", {}).items()
    }
    for j in evaluation.get("judges", []):
        baselines[f"judge {j['model']} ({j['n']} rows)"] = {
            **{k: j["judge"].get(k) for k in INTERVAL_METRICS},
            "intervals": j["judge"].get("intervals") or {},
        }
    return {
        "model_id": model["id"],
        "name": model["name"],
        "feature_version": model["feature_version"],
        "features": _loads(model["features"], []),
        "created_at": str(model["created_at"]),
        "metrics": {
            k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
        },
        "cross_validation": cv,
        "best_by_cv": best_model(raw, select_by) if raw else None,
        "select_by": select_by,
        "baselines": baselines,
    }


def _cell(m: dict[str, Any], k: str) -> str:
    v, iv = m.get(k), (m.get("intervals") or {}).get(k)
    if v is None:
        return "–"
    return f"{v:.3f} [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else f"{v:.3f}"


def card_markdown(card: dict[str, Any]) -> str:
    e, c = card["export"], card["counts"]
    lines = [
        f"# Data card: {Path(e['path']).name}",
        "",
        f"Exported by magv {card['magv_version']} on {card['created_at']} UTC from `{card['database']}`, "
        f"format `{e['format']}`.",
        "",
        "## Contents",
        "",
        f"- {e['rows']:,} rows from {e['questions']:,} questions"
        + (
            f" ({e['skipped_without_answer']:,} runs without a final answer left out)"
            if e["skipped_without_answer"]
            else ""
        ),
        f"- domains: {', '.join(f'{d} ({n:,})' for d, n in card['domains'].items()) or 'none'}",
        f"- origin of the questions (runs): {', '.join(f'{o} {n:,}' for o, n in c['by_origin'].items()) or 'none'}",
        f"- filters: verified only: {'yes' if e['filters']['verified_only'] else 'no'}; "
        f"minimum verifier score: {e['filters']['min_score'] if e['filters']['min_score'] is not None else 'none'}",
        "",
        "## How far it is verified",
        "",
        f"- verified runs (label correct, or no label and verifier verdict correct): {c['verified_runs']:,} of {c['runs']:,}",
        f"- labelled runs: {c['labelled_runs']:,} ({c['labelled_correct']:,} correct); label sources: "
        + (", ".join(f"{s} {n:,}" for s, n in card["label_sources"].items()) or "none"),
        f"- runs scored by the verifier: {c['scored_runs']:,} ({c['verdict_correct']:,} judged correct)",
        f"- most common trajectories (MCT) among the rows: {c['mct_runs']:,}",
        "",
        *_quality_lines(card.get("quality") or {}),
        "## Models and prompts",
        "",
        "| role | model | template | template hash | calls |",
        "| --- | --- | --- | --- | ---: |",
        *[
            f"| {p['role']} | {p['model']} | {p['template'] or '–'} | `{p['template_hash'] or '–'}` | {p['calls']:,} |"
            for p in card["prompts"]
        ],
        "",
        "## Verifier",
        "",
    ]
    v = card["verifier"]
    if v is None:
        lines.append("No verifier scored these runs.")
    else:
        lines += [
            f"`{v['name']}` (model {v['model_id']}, features {v['feature_version']}, trained {v['created_at']}).",
            "",
        ]
        if v["cross_validation"]:
            lines += [
                f"Grouped cross-validation (out-of-fold; 95 % intervals from a bootstrap over the CV groups); "
                f"best by {v['select_by']}: `{v['best_by_cv']}`.",
                "",
                "| scorer | " + " | ".join(INTERVAL_METRICS) + " |",
                "| --- |" + " ---: |" * len(INTERVAL_METRICS),
            ]
            for name, m in [
                *v["cross_validation"].items(),
                *((f"baseline: {n}", b) for n, b in v["baselines"].items()),
            ]:
                mark = " (best)" if name == v["best_by_cv"] else ""
                lines.append(f"| {name}{mark} | " + " | ".join(_cell(m, k) for k in INTERVAL_METRICS) + " |")
    if card["pipeline_runs"]:
        lines += ["", "## Pipeline runs", ""]
        lines += [
            f"- `{p['id']}` {p['domain']} {p['status']} (started {p['started_at']})"
            for p in card["pipeline_runs"]
        ]
    return "\n".join(lines) + "\n"


def write_card(card: dict[str, Any]) -> tuple[Path, Path]:
    from magv.outputs import atomic_output

    json_path, md_path = card_paths(card["export"]["path"])
    with atomic_output(json_path, "data card") as tmp:
        tmp.write_text(json.dumps(card, indent=2, default=str) + "\n", encoding="utf-8")
    with atomic_output(md_path, "data card") as tmp:
        tmp.write_text(card_markdown(card), encoding="utf-8")
    return json_path, md_path


def verification_warning(card: dict[str, Any]) -> str | None:
    """What a user must know before using the export for training, or None."""
    c, e = card["counts"], card["export"]
    if not c["runs"]:
        return None
    if c["verified_runs"] == 0:
        return (
            f"none of the {c['runs']:,} exported runs is verified (no correct label and no positive "
            "verifier verdict): label or score them first (`magv verify label|train|score`), then export "
            "with --verified-only"
        )
    if not e["filters"]["verified_only"] and c["verified_runs"] < c["runs"]:
        return (
            f"{c['runs'] - c['verified_runs']:,} of the {c['runs']:,} exported runs are not verified; "
            f"--verified-only exports only the {c['verified_runs']:,} verified ones"
        )
    return None
