"""`magv doctor`: check the installation and the embedded model, one line per check (magv.doctor)."""

from __future__ import annotations

import typer
from rich.markup import escape

from magv.commands.common import JsonOption, console, emit_json, settings


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        ctx: typer.Context,
        quick: bool = typer.Option(
            False, "--quick", help="Skip the checks that start processes (model server, embeddings, Prefect)."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Check what magv needs, one line each with ok or the fix: Python; the native pieces (llama-cpp-python, torch, duckdb); the model cache (assembled, SHA-256); real completions through the embedded llama.cpp server in both tool modes (json schema and native tools); sentence embeddings offline; the database; Prefect's local server; free disk. Exits 1 when a check fails.

        Run it first when something is off; the slow checks take about half a minute.
        """  # noqa: E501 - one line per paragraph: the help text wraps it
        from magv.doctor import as_dicts, run_checks

        cfg = settings(ctx)

        def show(check) -> None:
            if as_json:
                return
            mark = "[green]ok  [/green]" if check.ok else "[red]FAIL[/red]"
            line = f"{mark} {check.name:<17} {escape(check.detail)}"
            if not check.ok and check.fix:
                line += f"\n     {'':<17} fix: {escape(check.fix)}"
            console.print(line, highlight=False, soft_wrap=True)

        checks = run_checks(cfg, quick=quick, on_check=show)
        failed = [c.name for c in checks if not c.ok]
        if as_json:
            emit_json({"ok": not failed, "failed": failed, "checks": as_dicts(checks)})
        elif failed:
            console.print(
                f"\n{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}", highlight=False
            )
        else:
            console.print(f"\nall {len(checks)} checks passed", highlight=False)
        if failed:
            raise typer.Exit(1)
