"""`magv domain …`: list, build and check domains; show their tools."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.markup import escape

from magv.commands.common import JsonOption, console, emit_json, err_console, settings, table
from magv.domains import Domain, list_domains, load_domain
from magv.errors import BadInput

domain_app = typer.Typer(
    help="Domains: the data, tools and seed questions an assistant works on.", no_args_is_help=True
)

SpecArgument = typer.Argument(
    ..., help="A built-in domain (retail, logs), a domain folder, or a module pkg.mod."
)


@domain_app.command("list")
def domain_list(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """The built-in domains, their size and whether their database is built."""
    cfg = settings(ctx)
    out = []
    for name in list_domains():
        domain = load_domain(name)
        out.append(
            {
                "name": name,
                "description": domain.description,
                "tools": len(domain.tools),
                "seeds": len(domain.seeds()),
                "built": domain.database_path(cfg.domain_data_dir).is_file(),
            }
        )
    if as_json:
        emit_json(out)
    else:
        table("domains", out, ["name", "tools", "seeds", "built", "description"])


@domain_app.command("build")
def domain_build(
    ctx: typer.Context,
    spec: str = SpecArgument,
    force: bool = typer.Option(False, "--force", help="Rebuild even if the database exists."),
    seed: int = typer.Option(
        0, "--seed", min=0, max=2**32 - 1, help="Generator seed; the shipped seed questions refer to seed 0."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Generate the domain's database in the domain data dir (settings: domain_data_dir)."""
    cfg = settings(ctx)
    domain = load_domain(spec)
    start = time.perf_counter()
    path = domain.build(cfg.domain_data_dir, seed=seed, force=force)
    seconds = time.perf_counter() - start
    with domain.sandbox_pool(cfg.domain_data_dir) as pool:
        counts = pool.table_counts()
    info = {"domain": domain.name, "database": str(path), "seconds": round(seconds, 3), "tables": counts}
    if as_json:
        emit_json(info)
        return
    console.print(f"[bold]{domain.name}[/bold]: {path} ({seconds:.2f} s)")
    table(None, [{"table": t, "rows": n} for t, n in counts.items()])


@domain_app.command("tools")
def domain_tools(ctx: typer.Context, spec: str = SpecArgument, as_json: bool = JsonOption) -> None:
    """The domain's tools (OpenAI function specs, plus whether each one changes data)."""
    domain = load_domain(spec)
    if as_json:
        emit_json([t.model_dump() for t in domain.tools])
        return
    rows = [
        {
            "tool": t.name,
            "writes": t.writes,
            "arguments": ", ".join(
                f"{k}{'' if k in t.parameters.get('required', []) else '?'}"
                for k in t.parameters.get("properties", {})
            ),
            "description": t.description,
        }
        for t in domain.tools
    ]
    table(f"{domain.name} tools", rows)


@domain_app.command("check")
def domain_check(ctx: typer.Context, spec: str = SpecArgument, as_json: bool = JsonOption) -> None:
    """Validate the domain and run every gold trajectory (and every acceptable one) in a sandbox;
    exit 2 on any failure. Builds the domain's database first if it is not there yet."""
    cfg = settings(ctx)
    domain = load_domain(spec)
    seeds = domain.seeds()
    if not domain.has_database:
        return _check_specs_only(domain, seeds, as_json)
    database = domain.database_path(cfg.domain_data_dir)
    if not database.is_file():
        # Said on stderr, so `--json` output stays one document: a new file appears in the data dir.
        err_console.print(f"building the {domain.name} database at {database} (once; reused afterwards)")
    with domain.sandbox_pool(cfg.domain_data_dir, tool_timeout_s=cfg.pipeline.tool_timeout_s) as pool:
        results = [
            _check_seed(domain, pool, seed, trajectory, which)
            for seed in seeds
            for which, trajectory in enumerate(seed.golds())
        ]
    failures = [r for r in results if r["problem"]]
    used = {c.name for seed in seeds for t in seed.golds() for c in t}
    unused = sorted(t.name for t in domain.tools if t.name not in used)
    if as_json:
        emit_json(
            {
                "domain": domain.name,
                "database": str(domain.database_path(cfg.domain_data_dir)),
                "tools": len(domain.tools),
                "tools_without_seed": unused,
                "seeds": results,
                "ok": not failures,
            }
        )
    else:
        rows = [
            {
                "line": r["line"],
                "seed": r["id"],
                "calls": r["calls"],
                "tools": " > ".join(r["tools"]),
                "ms": r["ms"],
                "status": "ok" if not r["problem"] else f"[red]{escape(r['problem'])}[/red]",
            }
            for r in results
        ]
        table(f"{domain.name}: {len(seeds)} seeds, {len(domain.tools)} tools", rows)
        if unused:
            console.print(f"[yellow]tools no seed uses:[/yellow] {', '.join(unused)}")
    if failures:
        first = failures[0]
        more = f" ({len(failures) - 1} more seeds failed)" if len(failures) > 1 else ""
        raise BadInput(f"{domain.seeds_path}:{first['line']}: seed {first['id']}: {first['problem']}{more}")
    if not as_json:
        console.print(f"[green]ok[/green]: every gold trajectory of {domain.name} ran without error")


def _check_specs_only(domain: Domain, seeds: list, as_json: bool) -> None:
    """A domain without a database: its tool specs and seeds were validated on loading (every gold
    call names a tool and fits its schema); the gold trajectories cannot be executed."""
    used = {c.name for seed in seeds for t in seed.golds() for c in t}
    unused = sorted(t.name for t in domain.tools if t.name not in used)
    note = (
        f"{domain.name} has no database: tool specs and seeds are valid, but magv cannot execute the "
        "gold trajectories (the agent runs its own tools)"
    )
    if as_json:
        emit_json(
            {
                "domain": domain.name,
                "database": None,
                "tools": len(domain.tools),
                "seeds": len(seeds),
                "tools_without_seed": unused,
                "executed": False,
                "note": note,
                "ok": True,
            }
        )
        return
    if unused:
        console.print(f"[yellow]tools no seed uses:[/yellow] {', '.join(unused)}")
    console.print(
        f"[green]ok[/green]: {len(seeds)} seeds, {len(domain.tools)} tools. [yellow]{note}[/yellow]",
        highlight=False,
    )


def _check_seed(domain: Domain, pool: Any, seed: Any, trajectory: list, which: int) -> dict[str, Any]:
    """One of a seed's correct trajectories (`which` 0: its gold `trajectory`, then its `acceptable` ones)."""
    start = time.perf_counter()
    steps = pool.run(trajectory)
    problem = None
    for i, step in enumerate(steps, start=1):
        if step.error:
            problem = f"call {i} {step.call.name}: {step.error}"
            break
        if step.result in (None, [], {}, ""):
            problem = f"call {i} {step.call.name}: returned no data"
            break
    return {
        "id": seed.id if which == 0 else f"{seed.id} (acceptable {which})",
        "line": domain.seed_line(seed.id),
        "calls": len(steps),
        "tools": [s.call.name for s in steps],
        "ms": round((time.perf_counter() - start) * 1000, 1),
        "problem": problem,
    }


def register(app: typer.Typer) -> None:
    app.add_typer(domain_app, name="domain")
