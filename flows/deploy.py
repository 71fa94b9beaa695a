"""Deployments: the pipeline as a flow that can run on a schedule, and the helpers `magv schedule`
uses to serve it.

A deployed flow is started by Prefect (a served runner or a work-pool worker), not by `magv run`,
so nobody can hand it a task runner: `scheduled_pipeline_flow` builds the one its settings ask for
and runs the pipeline as a subflow with it. Its parameters are plain JSON (a settings dump), so the
Prefect UI shows them and a run can be started with edited parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from magv.config import Settings, load_settings, settings_from_dict
from magv.flows.pipeline import pipeline_flow
from magv.pipeline.runner import task_runner

SCHEDULED_FLOW_NAME = "magv-scheduled-pipeline"


def resolve_settings(settings: dict[str, Any] | None, settings_path: str | None) -> Settings:
    """A full settings dump wins; otherwise magv.toml (or `settings_path`) and MAGV_* of the process
    that runs the flow, which is what a work-pool deployment from flows/prefect.yaml relies on."""
    if settings:
        return settings_from_dict(settings)
    return load_settings(Path(settings_path) if settings_path else None)


@flow(name=SCHEDULED_FLOW_NAME, log_prints=True)
def scheduled_pipeline_flow(
    settings: dict[str, Any] | None = None, settings_path: str | None = None, verify: bool = True
) -> dict[str, Any]:
    cfg = resolve_settings(settings, settings_path)
    runner = task_runner(cfg)
    return pipeline_flow.with_options(task_runner=runner)(settings=cfg.model_dump(mode="json"), verify=verify)


def absolute_paths(cfg: Settings) -> Settings:
    """The same settings with every file path absolute: a served run starts in another process,
    maybe in another directory, and must still write where the user was when they scheduled it."""
    data = cfg.model_dump(mode="json")
    data["database"] = str(Path(cfg.database).resolve())
    data["domain_data_dir"] = str(Path(cfg.domain_data_dir).resolve())
    data["verify"]["models_dir"] = str(Path(cfg.verify.models_dir).resolve())
    if cfg.llama.gguf:
        data["llama"]["gguf"] = str(Path(cfg.llama.gguf).resolve())
    domain = Path(cfg.domain)
    if domain.exists():  # a domain folder given by path (names and modules stay as they are)
        data["domain"] = str(domain.resolve())
    return settings_from_dict(data)


def parameters(cfg: Settings, verify: bool) -> dict[str, Any]:
    """The deployment's parameters: JSON only, so they round-trip through the Prefect API. The API
    key is left out (anyone with the UI can read parameters); a run takes it from MAGV_LLM__API_KEY
    or magv.toml where it runs, since a partial dump is merged over those."""
    data = absolute_paths(cfg).model_dump(mode="json")
    data["llm"].pop("api_key", None)
    return {"settings": data, "verify": verify}


def pipeline_deployment(cfg: Settings, *, name: str, cron: str, timezone: str | None, verify: bool):
    """A RunnerDeployment of the scheduled pipeline on a cron schedule."""
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    return scheduled_pipeline_flow.to_deployment(
        name=name,
        schedules=[Cron(cron, timezone=timezone)],
        parameters=parameters(cfg, verify),
        description=f"magv pipeline on domain {cfg.domain!r}, cron {cron!r} ({timezone or 'UTC'})",
        tags=["magv", f"domain:{Path(cfg.domain).name}"],
        # The runner imports the flow by module path, so runs work whatever directory it is in.
        entrypoint_type=EntrypointType.MODULE_PATH,
        # One DuckDB file has one writer: a run that is due while the last one still runs waits.
        concurrency_limit=1,
    )


def serve(*deployments: Any, limit: int = 1) -> None:
    """Register the deployments and run their scheduled (and manually triggered) runs until stopped."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments, limit=limit, print_starting_message=True)
