"""`magv schedule`: serve the pipeline on a cron schedule with Prefect."""

from __future__ import annotations

import os
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from magv.commands.common import JsonOption, console, emit_json, settings
from magv.domains import load_domain
from magv.errors import BadInput

DEFAULT_NAME = "magv-{domain}"

HELP = """Serve the whole pipeline on a cron schedule (a Prefect deployment served by this process).

This process registers the deployment [bold]magv-scheduled-pipeline/NAME[/bold] with the Prefect server in PREFECT_API_URL and runs its scheduled runs until you stop it (Ctrl-C pauses the schedule). Runs use the settings in force now (magv.toml, MAGV_* variables, the options below) with every path made absolute; they are the run's JSON parameters, except the LLM API key, which runs read from this process's environment.

To see the runs in the Prefect UI:

1. [bold]prefect server start[/bold]  (API and UI on http://127.0.0.1:4200)

2. [bold]export PREFECT_API_URL=http://127.0.0.1:4200/api[/bold]  (or once: prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api)

3. [bold]magv schedule --cron "0 3 * * *" --domain retail[/bold]

4. Open http://127.0.0.1:4200, Deployments, magv-scheduled-pipeline/NAME: the Runs tab lists every run, its magv-pipeline subflow, task runs and logs.

Start a run now without waiting for the schedule: [bold]prefect deployment run 'magv-scheduled-pipeline/NAME'[/bold] (or Run in the UI). To run deployments on a work-pool worker instead, see flows/prefect.yaml.
"""


def _api_url() -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise BadInput(
            "PREFECT_API_URL is not set: a schedule needs a Prefect server that outlives this command. "
            "Start one with `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    return str(url)


def _check_cron(cron: str, timezone: str | None) -> None:
    from prefect.schedules import Cron

    try:
        Cron(cron, timezone=timezone)
        if timezone:
            ZoneInfo(timezone)
    except (ValueError, ZoneInfoNotFoundError) as exc:  # pydantic's ValidationError is a ValueError too
        first = str(exc).strip().splitlines()
        raise BadInput(
            f"--cron {cron!r} / --timezone {timezone!r}: expected a 5-field cron expression such as "
            f"'0 3 * * *' and an IANA time zone such as 'Europe/Paris' ({first[-1] if first else exc})"
        ) from None


def schedule(
    ctx: typer.Context,
    cron: str = typer.Option(..., "--cron", help='Cron expression, e.g. "0 3 * * *" (03:00 every day).'),
    domain: str = typer.Option(
        None, "--domain", "-d", help="Domain name, module or folder (default: settings)."
    ),
    name: str = typer.Option(None, "--name", help="Deployment name (default: magv-DOMAIN)."),
    timezone: str = typer.Option("UTC", "--timezone", help="IANA time zone of the cron expression."),
    runner: str = typer.Option(None, "--runner", help="Task runner of each run: local | dask | ray."),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Run the verifier stages after generation."
    ),
    limit: int = typer.Option(1, "--limit", min=1, help="Runs this process executes at once."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the deployment and exit without serving."),
    as_json: bool = JsonOption,
) -> None:
    cfg = settings(ctx, domain=domain, **{"pipeline.runner": runner})
    _check_cron(cron, timezone)
    load_domain(cfg.domain)  # an unknown domain fails now, not at three in the morning
    from magv.flows.deploy import SCHEDULED_FLOW_NAME, parameters, pipeline_deployment, serve

    name = name or DEFAULT_NAME.format(domain=os.path.basename(cfg.domain.rstrip("/")) or "domain")
    plan: dict[str, Any] = {
        "deployment": f"{SCHEDULED_FLOW_NAME}/{name}",
        "cron": cron,
        "timezone": timezone,
        "limit": limit,
        "parameters": parameters(cfg, verify),
    }
    if dry_run:
        if as_json:
            emit_json(plan)
        else:
            console.print(f"would serve {plan['deployment']} on cron {cron!r} ({timezone})")
            console.print(f"database: {plan['parameters']['settings']['database']}", highlight=False)
        return
    plan["api_url"] = _api_url()
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)  # inherited by every run this process starts
    if as_json:
        emit_json(plan)
    else:
        console.print(f"serving {plan['deployment']} on cron {cron!r} ({timezone}) via {plan['api_url']}")
    serve(pipeline_deployment(cfg, name=name, cron=cron, timezone=timezone, verify=verify), limit=limit)


def register(app: typer.Typer) -> None:
    app.command("schedule", help=HELP)(schedule)
