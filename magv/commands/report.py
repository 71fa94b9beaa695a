"""`magv report` and `magv export`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from magv import outputs
from magv.commands.common import JsonOption, console, emit_json, err_console, open_store, settings
from magv.errors import BadInput

DEFAULT_REPORT_DIR = Path("report")


def report(
    ctx: typer.Context,
    out: Path = typer.Option(
        DEFAULT_REPORT_DIR, "--out", "-o", help="Directory for report.html and metrics.json."
    ),
    run: str = typer.Option(None, "--run", help="Only the rows of this pipeline run (its time window)."),
    compare: tuple[str, str] | None = typer.Option(
        None,
        "--compare",
        metavar="RUN_A RUN_B",
        help="Two pipeline runs side by side; each a pipeline run id in this store or a path to a .duckdb file.",
    ),
    worst: int = typer.Option(10, "--worst", min=0, help="How many lowest-scored trajectories to show."),
    samples: int = typer.Option(30, "--samples", min=0, help="How many kept questions to show in Samples."),
    as_json: bool = JsonOption,
) -> None:
    """Write a self-contained HTML report with plots, and metrics.json beside it; print its path."""
    cfg = settings(ctx)
    if compare:
        if run:
            raise BadInput("--run and --compare cannot be combined; name both runs in --compare")
        from magv.report.compare import write_compare

        files = write_compare(compare[0], compare[1], cfg.database, out)
        missing: list[str] = []
        compared = json.loads(files.metrics.read_text())
        regressions = compared["regressions"]
        agents, questions = compared["agents"], compared["questions"]
    else:
        from magv.report.html import write_report

        with open_store(cfg, read_only=True) as store:
            files = write_report(store, out, pipeline_run_id=run, worst=worst, samples=samples)
        missing = files.data.metrics["missing"] if files.data else []
        regressions = None
    if as_json:
        extra = (
            {
                "regressions": regressions,
                "agents": agents["labels"],
                "question_regressions": questions["regressed"],
            }
            if compare
            else {}
        )
        emit_json(
            {
                "report": str(files.html),
                "metrics": str(files.metrics),
                "figures": files.figures,
                "missing": missing,
                **extra,
            }
        )
        return
    if compare:
        console.print(
            f"agents: {compare[0]}: {agents['labels'][0]} · {compare[1]}: {agents['labels'][1]}",
            highlight=False,
        )
        for q in questions["regressed"]:
            console.print(
                f"[red]regressed question[/red] {q['question_id']}: {q['a']:.2f} → {q['b']:.2f} "
                f"labelled correct: {q['question'][:80]}",
                highlight=False,
            )
    if regressions:
        console.print(
            f"[red]regressions ({compare[1]} vs {compare[0]}):[/red] {', '.join(regressions)}",
            highlight=False,
        )
    for note in missing:
        console.print(f"[yellow]not in the report:[/yellow] {note}", highlight=False)
    console.print(f"metrics: {files.metrics} · figures: {files.figures}", highlight=False)
    typer.echo(str(files.html))


def export(
    ctx: typer.Context,
    fmt: str = typer.Option("jsonl", "--format", "-f", help="jsonl (the import format), openai or parquet."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Output file (default: data/export/<database>.<format>)."
    ),
    verified_only: bool = typer.Option(
        False,
        "--verified-only",
        help="Only runs labelled correct, or unlabelled with a positive verifier verdict.",
    ),
    min_score: float = typer.Option(None, "--min-score", help="Only runs with a verifier probability >= P."),
    force: bool = typer.Option(False, "--force", help="Replace the output file if it exists."),
    as_json: bool = JsonOption,
) -> None:
    """Export questions with their trajectories, responses, labels and scores."""
    from magv.export import FORMATS, SUFFIX
    from magv.export import export as run_export

    if fmt not in FORMATS:
        raise BadInput(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    cfg = settings(ctx)
    target = out or cfg.database.parent / "export" / f"{cfg.database.stem}{SUFFIX[fmt]}"
    if target.is_dir():
        raise BadInput(f"export: {target} is a directory; give a file path with --out")
    if target.is_file() and not force:
        raise BadInput(f"export: {target} already exists; choose a new path or pass --force to replace it")

    from magv.datacard import build_card, verification_warning, write_card

    with open_store(cfg, read_only=True) as store:
        result = run_export(store, fmt, target, verified_only=verified_only, min_score=min_score)
        card = build_card(store, result, verified_only=verified_only, min_score=min_score)
    # A data card goes beside a file; an export written through a device or FIFO has no "beside".
    card_json, card_md = write_card(card) if outputs.target(target, "export").kind == "file" else (None, None)
    warning = verification_warning(card)
    if warning:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    if as_json:
        emit_json(
            {
                **result.as_dict(),
                "card": card_md and {"json": str(card_json), "markdown": str(card_md)},
                "verified_runs": card["counts"]["verified_runs"],
                "warning": warning,
            }
        )
        return
    extra = f", {result.skipped} runs without a final answer skipped" if result.skipped else ""
    alternates = f" and {result.alternates} alternates" if result.alternates else ""
    console.print(
        f"{result.rows} runs of {result.questions} questions{alternates} exported as {fmt}{extra}; "
        f"{card['counts']['verified_runs']} verified; data card: {card_md or 'none (not a file)'}",
        highlight=False,
    )
    typer.echo(str(result.path))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("export")(export)
