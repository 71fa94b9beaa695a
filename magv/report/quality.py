"""The dataset-quality section: how many generated questions pass the rule checks of
magv/quality.py (answerable, one request in a customer's voice, an alternate's identifiers),
before and after the rule repairs, with examples of each failure; fidelity (the responder's most
common trajectory matches the target under the chosen match mode); near-duplicates dropped; and
how many target trajectories and tools the kept questions cover.

`summarize_checks` works on plain check rows, so the same figures come from a store
(`dataset_quality`) and from a file of questions checked afresh (bench/dataset_quality.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from magv.models import ToolCall

if TYPE_CHECKING:
    from magv.store import Store

CHECKED_ORIGINS = ("investigator", "alternate")
BEFORE = "before repair: "


def reason_check(reason: str) -> str:
    """The check a failure reason belongs to, with its kind: answerable, identifiers, voice
    (assistant) or voice (chained)."""
    reason = reason.removeprefix(BEFORE)
    if reason.startswith("missing identifier"):
        return "identifiers"
    if reason.startswith("wrong identifier"):
        return "answerable: wrong identifier"
    if reason.startswith("missing a time"):
        return "answerable: time"
    if reason.startswith("missing"):
        return "answerable: " + reason.removeprefix("missing ").split(" ")[0]
    if reason.startswith("assistant voice"):
        return "voice: the assistant's side"
    if "chained" in reason:
        return "voice: requests chained"
    return reason


def _rate(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def summarize_checks(rows: Iterable[Mapping[str, Any]], examples: int = 3) -> dict[str, Any]:
    """Pass rates per origin (all generated, and kept by selection where it decided), before and
    after the repairs, and the failures by check with up to `examples` questions each."""
    by_origin: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_origin[r["origin"]].append(r)
    out: dict[str, Any] = {}
    for origin in CHECKED_ORIGINS:
        group = by_origin.get(origin, [])
        if not group:
            continue
        out[origin] = _origin_summary(group, examples)
    return out


def _failed_before(r: Mapping[str, Any], check: str) -> bool:
    return any(reason_check(x).split(":")[0] == check for x in r["reasons"])


def _origin_summary(group: Sequence[Mapping[str, Any]], examples: int) -> dict[str, Any]:
    n = len(group)
    checks = ["voice"] + (["answerable"] if any(r.get("answerable") is not None for r in group) else [])
    checks += ["identifiers"] if any(r.get("identifiers") is not None for r in group) else []
    after = {c: sum(1 for r in group if r.get(c) is not False) for c in checks}
    before = {c: sum(1 for r in group if not _failed_before(r, c)) for c in checks}
    kept = [r for r in group if r.get("kept")]
    summary: dict[str, Any] = {
        "checked": n,
        "passed": sum(1 for r in group if r["passed"]),
        "pass_rate": _rate(sum(1 for r in group if r["passed"]), n),
        "rates": {c: _rate(after[c], n) for c in checks},
        "rates_before_repair": {c: _rate(before[c], n) for c in checks},
        "passed_before_repair": sum(1 for r in group if not r["reasons"]),
        "repaired": sum(1 for r in group if r.get("repair")),
    }
    if any(r.get("kept") is not None for r in group):
        summary["kept"] = len(kept)
        summary["kept_rates"] = {
            c: _rate(sum(1 for r in kept if r.get(c) is not False), len(kept)) for c in checks
        }
    failures: dict[str, dict[str, Any]] = {}
    for r in group:
        for reason in r["reasons"]:
            kind = reason_check(reason)
            f = failures.setdefault(
                kind, {"check": kind, "before_repair": 0, "after_repair": 0, "examples": []}
            )
            if reason.startswith(BEFORE):
                f["before_repair"] += 1
            else:
                f["after_repair"] += 1
                f["before_repair"] += 0 if r.get("repair") else 1
            shown = {e["text"] for e in f["examples"]}
            text = r.get("original") or r["text"]
            if len(f["examples"]) < examples and text not in shown:
                f["examples"].append(
                    {
                        "text": text,
                        "reason": reason.removeprefix(BEFORE),
                        "repaired": r["text"] if r.get("repair") and r["passed"] else None,
                        "repair": r.get("repair"),
                        "passed": bool(r["passed"]),
                    }
                )
    summary["failures"] = sorted(failures.values(), key=lambda f: (-f["before_repair"], f["check"]))
    return summary


def fidelity(
    rows: Iterable[Mapping[str, Any]],
    mode: str,
    arguments: bool | str,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Per origin: questions with a target and an MCT, and how many MCTs match the target (or a
    further acceptable trajectory) under the match mode. Rows: origin, target, meta, mct_calls."""
    from magv.verify.labels import match_any

    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        target = _loads(r.get("target"))
        if not target or r.get("mct_calls") is None:
            continue
        golds = [[ToolCall(**c) for c in target]]
        golds += [[ToolCall(**c) for c in t] for t in (_loads(r.get("meta")) or {}).get("acceptable") or []]
        calls = [ToolCall(**c) for c in _loads(r["mct_calls"])]
        f = out.setdefault(r["origin"], {"questions": 0, "matched": 0})
        f["questions"] += 1
        f["matched"] += match_any(calls, golds, mode, arguments, overrides)
    for f in out.values():
        f["rate"] = _rate(f["matched"], f["questions"])
    return {"mode": mode, "arguments": arguments, "by_origin": out}


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def dataset_quality(
    store: Store,
    domain: str | None = None,
    mode: str = "strict",
    arguments: bool | str = False,
    overrides: Mapping[str, Any] | None = None,
    examples: int = 3,
) -> dict[str, Any]:
    """The dataset-quality figures of a store (of one domain when given)."""
    out = summarize_checks(store.question_checks(domain), examples)
    mct_rows = store.mct_steps_by_question(domain)
    for r in mct_rows:
        steps = _loads(r.pop("steps")) or []
        r["mct_calls"] = [s["call"] for s in steps if s.get("kind", "tool") == "tool" and s.get("call")]
    out["fidelity"] = fidelity(mct_rows, mode, arguments, overrides)
    selections = store.selections_with_questions(domain)
    out["near_duplicates"] = sum(1 for s in selections if (s["reason"] or "").startswith("near-duplicate"))
    out["failed_checks_dropped"] = sum(
        1 for s in selections if (s["reason"] or "").startswith("failed its checks")
    )
    out["coverage"] = coverage(selections)
    return out


def quality_section(store: Store, examples: int = 3) -> dict[str, Any]:
    """The report's section: `dataset_quality` of the whole store under the settings' match mode,
    and whether selection applied the checks."""
    from magv.config import Settings

    cfg = Settings()
    v = cfg.verify
    out = dataset_quality(store, None, v.gold_match, v.gold_arguments, v.gold_overrides, examples)
    out["min_quality"] = cfg.pipeline.min_quality
    return out


def coverage(selections: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Target trajectories and tools of the generated questions' targets that kept questions cover."""
    generated = [s for s in selections if s["origin"] == "investigator"]
    kept = [s for s in generated if s["kept"]]

    def tools(rows: Iterable[Mapping[str, Any]]) -> set[str]:
        return {c["name"] for s in rows for c in (_loads(s["target"]) or [])}

    targets_all, targets_kept = {s["seed_id"] for s in generated}, {s["seed_id"] for s in kept}
    tools_all, tools_kept = tools(generated), tools(kept)
    return {
        "targets": {
            "covered": len(targets_kept),
            "of": len(targets_all),
            "rate": _rate(len(targets_kept), len(targets_all)),
        },
        "tools": {
            "covered": len(tools_kept),
            "of": len(tools_all),
            "rate": _rate(len(tools_kept), len(tools_all)),
            "missing": sorted(tools_all - tools_kept),
        },
    }


def headline(q: Mapping[str, Any]) -> str:
    """One line for `magv run`'s summary."""
    parts = []
    inv, alt = q.get("investigator"), q.get("alternate")
    if inv:
        rates = inv.get("kept_rates") or inv["rates"]
        parts.append(
            f"questions {inv['passed']}/{inv['checked']} pass ({inv['repaired']} repaired); "
            f"kept: answerable {_pct(rates.get('answerable'))}, customer's voice {_pct(rates.get('voice'))}"
        )
    if alt:
        parts.append(
            f"alternates {alt['passed']}/{alt['checked']} pass ({alt['repaired']} repaired): voice "
            f"{_pct(alt['rates'].get('voice'))}, identifiers {_pct(alt['rates'].get('identifiers'))}"
        )
    fid = (q.get("fidelity") or {}).get("by_origin", {}).get("investigator")
    if fid:
        parts.append(f"fidelity {fid['matched']}/{fid['questions']}")
    return "; ".join(parts)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def check_rows(questions: Iterable[Mapping[str, Any]], checks: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows for `summarize_checks` from questions (id, text, origin, kept) and their
    `QualityCheck`s by question id."""
    out = []
    for q in questions:
        c = checks.get(q["id"])
        if c is not None:
            out.append({**c.as_row(q["id"]), "text": q["text"], "origin": q["origin"], "kept": q.get("kept")})
    return out
