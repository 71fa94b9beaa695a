"""`magv config …` and `magv db …`."""

from __future__ import annotations

from pathlib import Path

import typer

from magv.commands.common import JsonOption, console, emit_json, open_store, settings, table
from magv.config import config_path

config_app = typer.Typer(help="Show the effective settings.", no_args_is_help=True)
db_app = typer.Typer(help="Inspect, back up and tidy the pipeline database.", no_args_is_help=True)


@config_app.command("show")
def config_show(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Print the effective settings (defaults < magv.toml < MAGV_* environment)."""
    cfg = settings(ctx)
    data = cfg.model_dump(mode="json")
    data["llm"]["api_key"] = cfg.llm.key_source()  # a secret: never shown
    if as_json:
        emit_json(data)
        return
    source = config_path((ctx.find_root().obj or {}).get("config"))
    console.print(f"[bold]config file:[/bold] {source or '(none; defaults and environment)'}")
    rows = []
    for key, value in _flatten(data):
        rows.append({"setting": key, "value": value})
    table("effective settings", rows)


def _flatten(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for k, v in data.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.extend(_flatten(v, name + "."))
        else:
            out.append((name, v))
    return out


@db_app.command("info")
def db_info(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Tables and row counts of the pipeline database."""
    cfg = settings(ctx)
    if not cfg.database.exists():
        info = {"database": str(cfg.database), "exists": False, "schema_version": None, "tables": {}}
        if as_json:
            emit_json(info)
        else:
            console.print(f"{cfg.database}: no database yet (a pipeline stage creates it)")
        return
    with open_store(cfg, read_only=True) as store:
        counts = store.counts()
        info = {
            "database": str(cfg.database),
            "exists": True,
            "schema_version": store.schema_version,
            "tables": counts,
        }
    if as_json:
        emit_json(info)
        return
    console.print(f"[bold]{info['database']}[/bold] (schema {info['schema_version']})")
    table(None, [{"table": t, "rows": n} for t, n in counts.items()])


@db_app.command("backup")
def db_backup(
    ctx: typer.Context,
    dest: Path = typer.Argument(..., help="Where to write the copy (must not exist)."),
    as_json: bool = JsonOption,
) -> None:
    """Write a consistent copy of the database to DEST."""
    cfg = settings(ctx)
    with open_store(cfg) as store:
        out = store.backup(dest)
        counts = store.counts()
    if as_json:
        emit_json({"backup": str(out), "tables": counts})
    else:
        console.print(f"backup written to {out}")


@db_app.command("forget-embeddings")
def db_forget_embeddings(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model", help="Only this embedding key (default: every model)."),
    as_json: bool = JsonOption,
) -> None:
    """Drop stored text embeddings, so the next stage embeds its texts again (after changing the
    files of a local model kept under the same name, say). Keys: `local:MODEL` or
    `endpoint:URL:MODEL`."""
    cfg = settings(ctx)
    with open_store(cfg) as store:
        dropped = store.forget_embeddings(model)
    if as_json:
        emit_json({"dropped": dropped, "model": model})
    else:
        console.print(f"{dropped} stored embeddings dropped" + (f" of {model}" if model else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
    app.add_typer(db_app, name="db")
