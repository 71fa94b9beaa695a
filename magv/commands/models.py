"""`magv models list|assemble`: the named embedded models and their assembly into the model cache."""

from __future__ import annotations

import typer

from magv.commands.common import JsonOption, console, emit_json, settings, table
from magv.gguf.registry import MODELS, assemble, cache_dir, get_model

models_app = typer.Typer(
    help="Embedded models: GGUFs shipped as PyPI packages, assembled once per machine.", no_args_is_help=True
)


@models_app.command("list")
def models_list(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """The models `[llama] model = NAME` accepts: source packages, licence, size, whether assembled."""
    chosen = settings(ctx).llama
    rows = []
    for spec in MODELS.values():
        row = spec.describe()
        row["selected"] = spec.name == chosen.model and not chosen.gguf
        rows.append(row)
    if as_json:
        emit_json({"cache_dir": str(cache_dir()), "gguf": chosen.gguf, "models": rows})
        return
    shown = [
        {
            "": "*" if r["selected"] else "",
            "name": r["name"],
            "packages": f"{r['packages']} {r['version']}",
            "MB": round(r["size_bytes"] / 1e6),
            "licence": r["licence"],
            "state": "assembled" if r["assembled"] else "installed" if r["installed"] else "not installed",
        }
        for r in rows
    ]
    table("embedded models (* = llama.model)", shown)
    note = f"llama.gguf = {chosen.gguf} is used instead. " if chosen.gguf else ""
    console.print(f"{note}cache: {cache_dir()} (set MAGV_MODEL_CACHE to move it)", highlight=False)


@models_app.command("assemble")
def models_assemble(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="A model name (default: llama.model)."),
) -> None:
    """Put a model's GGUF together in the cache and check its SHA-256 (done once; prints its path)."""
    spec = get_model(name or settings(ctx).llama.model)
    typer.echo(str(assemble(spec)))


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
