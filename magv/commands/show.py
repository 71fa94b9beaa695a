"""`magv show ID`: everything the store knows about one question, run, LLM call or pipeline run,
readable in a terminal (or --json). An id prefix is enough when it names one thing."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.markup import escape

from magv.commands.common import JsonOption, console, emit_json, open_store, settings
from magv.commands.llm import print_call
from magv.errors import BadInput
from magv.report.samples import conversation, tool_errors
from magv.store import Store

# table -> what the id names, in the order they are searched
KINDS = (("questions", "question"), ("runs", "run"), ("llm_calls", "call"), ("pipeline_runs", "pipeline run"))


def _loads(value: Any, default: Any = None) -> Any:
    if value is None:
        return default
    return json.loads(value) if isinstance(value, str) else value


def resolve(store: Store, ident: str) -> tuple[str, str]:
    """(kind, full id) of an id or unique id prefix; BadInput when it names nothing or several."""
    found: list[tuple[str, str]] = []
    for table, kind in KINDS:
        exact = store.ids(table, ident)
        if exact:
            return kind, exact[0]
    for table, kind in KINDS:
        found += [(kind, i) for i in store.ids(table, ident, prefix=True)]
    if not found:
        raise BadInput(
            f"show: {ident!r} is not the id of a question, run, LLM call or pipeline run in {store.path}"
        )
    if len(found) > 1:
        listed = ", ".join(f"{k} {i}" for k, i in found[:5])
        raise BadInput(f"show: {ident!r} is the start of several ids ({listed}); give more characters")
    return found[0]


def _predictions(store: Store, run_id: str) -> list[dict[str, Any]]:
    rows = store.predictions_of(run_id)
    for r in rows:
        contributions = _loads(r.pop("contributions"), {}) or {}
        r["top_contributions"] = dict(sorted(contributions.items(), key=lambda kv: -abs(kv[1]))[:5])
    return rows


def run_detail(store: Store, run_id: str, with_question: bool = True) -> dict[str, Any]:
    run = store.run_row(run_id)
    assert run is not None, run_id  # resolved before
    trajectory = _loads(run["trajectory"], {"steps": []}) or {"steps": []}
    question = store.question_row(run["question_id"])
    q = (
        {k: question[k] for k in ("id", "text", "origin")}
        if question
        else {"id": run["question_id"], "text": None, "origin": None}
    )
    mct = store.mct_of(run["question_id"])
    out = {
        "kind": "run",
        "id": run["id"],
        "question_id": run["question_id"],
        "run_index": run["run_index"],
        "status": run["status"],
        "is_mct": bool(mct and mct["run_id"] == run["id"]),
        "tokens": {"prompt": run["prompt_tokens"], "completion": run["completion_tokens"]},
        "latency_s": run["latency_s"],
        "created_at": run["created_at"],
        "conversation": conversation(q["text"], trajectory),
        "tool_errors": tool_errors(trajectory),
        "response": trajectory.get("response"),
        "labels": store.labels_of(run_id),
        "predictions": _predictions(store, run_id),
        "judge": store.judge_verdicts_of(run_id),
        "features": {r["version"]: _loads(r["values"], {}) for r in store.feature_rows_of(run_id)},
    }
    if with_question:
        out["question"] = q
    return out


def question_detail(store: Store, qid: str) -> dict[str, Any]:
    q = store.question_row(qid)
    assert q is not None, qid  # resolved before
    return {
        "kind": "question",
        "id": q["id"],
        "text": q["text"],
        "domain": q["domain"],
        "origin": q["origin"],
        "seed_id": q["seed_id"],
        "parent_id": q["parent_id"],
        "status": q["status"],
        "target": _loads(q["target"], []) or [],
        "selection": store.selection_of(qid),
        "mct": store.mct_of(qid),
        "runs": [run_detail(store, r, with_question=False) for r in store.run_ids_of(qid)],
        "alternates": store.alternates_of(qid),
    }


def call_detail(store: Store, call_id: str) -> dict[str, Any]:
    row = store.llm_call_row(call_id)
    assert row is not None, call_id  # resolved before
    for key in ("request", "response"):
        row[key] = _loads(row[key])
    return {"kind": "call", **row}


def pipeline_detail(store: Store, run_id: str) -> dict[str, Any]:
    row = store.pipeline_run_row(run_id)
    assert row is not None, run_id  # resolved before
    return {
        "kind": "pipeline run",
        "id": row["id"],
        "domain": row["domain"],
        "status": row["status"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "stages": _loads(row["stages"], {}) or {},
        "summary": _loads(row["summary"], {}) or {},
    }


def detail(store: Store, ident: str) -> dict[str, Any]:
    kind, full = resolve(store, ident)
    return {
        "question": question_detail,
        "run": run_detail,
        "call": call_detail,
        "pipeline run": pipeline_detail,
    }[kind](store, full)


# -- printing -----------------------------------------------------------------------------------


def _p(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)


def _plain(text: Any) -> None:
    console.print("" if text is None else str(text), markup=False, highlight=False, soft_wrap=True)


def print_conversation(turns: list[dict[str, Any]]) -> None:
    """One line per turn: the question, each call (→) and what came back (←), the final answer."""
    for t in turns:
        role, text = t["role"], t["text"]
        if role == "customer":
            _p(f"  [bold blue]customer:[/bold blue] {escape(str(text))}")
        elif role == "call":
            _p(f"  [cyan]step {t['step']} →[/cyan] {escape(str(text))}")
        elif role == "result":
            _p(f"  [dim]{' ' * len(str(t['step']))}      ← {escape(str(text))}[/dim]")
        elif role == "error":
            _p(f"  [red]{' ' * len(str(t['step']))}      ← tool error: {escape(str(text))}[/red]")
        elif role == "invalid":
            _p(f"  [red]step {t['step']} ✗ unparseable reply:[/red] {escape(str(text))}")
        else:
            answer = "(no final answer)" if text is None else str(text)
            _p(f"  [green]answer:[/green] {escape(answer)}")


def _verdicts(d: dict[str, Any]) -> None:
    for lb in d["labels"]:
        _p(
            f"  label: {'correct' if lb['correct'] else 'wrong'} ({escape(str(lb['source']))})"
            + (f" · {escape(str(lb['detail']))}" if lb["detail"] else "")
        )
    for p in d["predictions"]:
        tops = ", ".join(f"{k} {v:+.3f}" for k, v in p["top_contributions"].items())
        _p(
            f"  verifier: {'correct' if p['verdict'] else 'wrong'} (p={p['probability']:.3f}, model "
            f"{escape(str(p['model_id']))})" + (f" · why: {escape(tops)}" if tops else "")
        )
    for j in d["judge"]:
        verdict = "no verdict" if j["correct"] is None else ("correct" if j["correct"] else "wrong")
        _p(
            f"  judge ({escape(str(j['model']))}): {verdict}"
            + (f" · {escape(str(j['reason']))}" if j["reason"] else "")
        )


def print_run(d: dict[str, Any]) -> None:
    mct = " · MCT" if d["is_mct"] else ""
    _p(
        f"[bold]run {escape(d['id'])}[/bold] · question {escape(d['question_id'])} · run {d['run_index']} · "
        f"status {escape(str(d['status']))}{mct} · {d['tokens']['prompt']}/{d['tokens']['completion']} tokens"
    )
    print_conversation(d["conversation"])
    _verdicts(d)
    if d["tool_errors"]:
        _p(f"  [red]{len(d['tool_errors'])} tool error(s)[/red]")


def print_detail(d: dict[str, Any]) -> None:
    kind = d["kind"]
    if kind == "call":
        print_call(d)
    elif kind == "run":
        _p(
            f"question {escape(d['question']['id'])} ({escape(str(d['question']['origin']))}): "
            f"“{escape(str(d['question']['text']))}”"
        )
        print_run(d)
    elif kind == "question":
        _p(
            f"[bold]question {escape(d['id'])}[/bold] · {escape(d['domain'])} · {escape(d['origin'])}"
            + (f" · seed {escape(d['seed_id'])}" if d["seed_id"] else "")
            + (f" · alternate of {escape(d['parent_id'])}" if d["parent_id"] else "")
        )
        _plain(f"“{d['text']}”")
        if d["selection"]:
            s = d["selection"]
            _p(f"selection: {'kept' if s['kept'] else 'dropped'} ({escape(str(s['reason']))})")
        if d["target"]:
            _p("target trajectory:")
            for i, c in enumerate(d["target"], start=1):
                _plain(f"  {i}. {c['name']}({json.dumps(c.get('arguments', {}), sort_keys=True)})")
        if d["mct"]:
            m = d["mct"]
            _p(
                f"most common trajectory: run {escape(str(m['run_id']))} (share {m['share']:.0%} of "
                f"{m['n_runs']} runs, {m['n_distinct']} distinct)"
            )
        if not d["runs"]:
            _p("[yellow]no runs yet[/yellow]")
        for r in d["runs"]:
            console.print()
            print_run(r)
        if d["alternates"]:
            console.print()
            _p(f"{len(d['alternates'])} alternate question(s):")
            for a in d["alternates"]:
                _plain(f"  {a['id']}  ({a['runs']} runs)  {a['text']}")
    else:
        _p(
            f"[bold]pipeline run {escape(d['id'])}[/bold] · {escape(str(d['domain']))} · {escape(str(d['status']))} · "
            f"{d['started_at']} – {d['finished_at'] or '(running)'}"
        )
        for name, st in d["stages"].items():
            if not isinstance(st, dict):
                continue
            _p(
                f"  {escape(name)}: {st.get('done', 0)}/{st.get('planned', 0)} done, {st.get('failed', 0)} failed, "
                f"{st.get('seconds', 0)} s"
            )
            for e in st.get("errors") or []:
                _p(f"    [red]error:[/red] {escape(str(e))}")


def show(
    ctx: typer.Context,
    ident: str = typer.Argument(
        ..., metavar="ID", help="A question, run, LLM call or pipeline run id (or its start)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Everything about one question, run, LLM call or pipeline run: texts, conversations, verdicts, errors."""
    cfg = settings(ctx)
    with open_store(cfg, read_only=True) as store:
        d = detail(store, ident)
    if as_json:
        emit_json(d)
        return
    print_detail(d)


def register(app: typer.Typer) -> None:
    app.command("show")(show)
