"""The `magv` command. Command groups live in `magv.commands.*`; this module wires them up and
turns errors into exit codes: 0 ok, 1 run failed, 2 bad input."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer
from rich.markup import escape

from magv import __version__, outputs
from magv.commands.common import err_console
from magv.errors import MagvError

app = typer.Typer(
    name="magv",
    help="Generate verified customer-style questions for tool-using agents and verify their "
    "trajectories with a classical-ML verifier (MAG-V).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Each module adds its commands with register(app). Order is the order in --help.
COMMAND_MODULES = [
    "magv.commands.pipeline",
    "magv.commands.core",
    "magv.commands.domain",
    "magv.commands.verify",
    "magv.commands.report",
    "magv.commands.eval",
    "magv.commands.llm",
    "magv.commands.service",
    "magv.commands.show",
    "magv.commands.models",
    "magv.commands.schedule",
    "magv.commands.demo",
    "magv.commands.doctor",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"magv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Path = typer.Option(
        None, "--config", "-c", help="Settings file (default: ./magv.toml or $MAGV_CONFIG)."
    ),
    database: Path = typer.Option(
        None, "--database", help="The DuckDB store to use (default: `database` in the settings)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    ctx.obj = {"config": config, "database": database}


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> int:
    outputs.forget()  # what an earlier command in this process read is not this one's input
    try:
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int):  # click returns the code of typer.Exit in this mode
            return rv
    except MagvError as exc:
        _error(str(exc))
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted; finished work is saved, rerun to continue")
        return 130
    except OSError as exc:
        # A full disk, a folder without room for the .wal, a file vanishing: the work failed, and the
        # one line that says where is worth more than a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc} (the command stopped; what it had committed is kept)")
        return 1
    except Exception as exc:
        if _is_database_error(exc):
            _error(
                f"database error: {str(exc).splitlines()[0]} (the command stopped; what it had committed is kept)"
            )
            return 1
        # Usage errors (typer's bundled click) know how to show themselves and carry exit code 2.
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            return exc.exit_code
        raise
    return 0


def _error(message: str) -> None:
    err_console.print(f"[red]magv: error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def _is_database_error(exc: Exception) -> bool:
    duckdb = sys.modules.get("duckdb")
    return duckdb is not None and isinstance(exc, duckdb.Error)


def entry() -> None:
    sys.exit(main())
