"""`magv serve verifier`: the saved verifier as an HTTP service (magv.service.app)."""

from __future__ import annotations

from pathlib import Path

import typer

from magv.commands.common import (
    AgentOpt,
    AgentUrlOpt,
    AgentVersionOpt,
    ErrorPatternOption,
    ReaskAlternatesOpt,
    ReaskBandOpt,
    ReaskMaxOpt,
    ReaskOpt,
    ToolsOption,
    agent_overrides,
    err_console,
    nonempty,
    reask_options,
    settings,
)
from magv.commands.llm import serve_app
from magv.errors import BadInput
from magv.service.server import (
    GED_SECONDS,
    MAX_PAIRS,
    TOKEN_ENV,
    Limits,
    exposure_warning,
    read_token,
    uvicorn_config,
)


@serve_app.command("verifier")
def serve_verifier(
    ctx: typer.Context,
    model_file: Path = typer.Option(
        None, "--model-file", help="The model to serve (default: the latest registered in the database)."
    ),
    model: str = typer.Option(None, "--model", help="A registered model id (default: the latest)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Listen address; 0.0.0.0 to serve other hosts."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free port)."),
    threshold: float = typer.Option(None, "--threshold", min=0.0, max=1.0, help="Verdict threshold."),
    domain: str = typer.Option(
        None, "--domain", "-d", help="The domain whose write tools the features compare."
    ),
    tools_file: Path = ToolsOption,
    error_pattern: str = ErrorPatternOption,
    log_to: Path = typer.Option(
        None,
        "--log-to",
        metavar="DATABASE",
        help="Store every scored trajectory in this DuckDB file (as imported runs).",
    ),
    max_body: int = typer.Option(
        1_000_000, "--max-body", min=1, help="Largest request body in bytes (413 above)."
    ),
    max_batch: int = typer.Option(
        256, "--max-batch", min=1, help="Most trajectories per request (413 above)."
    ),
    max_pairs: int = typer.Option(
        MAX_PAIRS,
        "--max-pairs",
        min=1,
        help="Most sibling comparisons per request: each scored run against every other "
        "run of its group (413 above).",
    ),
    ged_seconds: float = typer.Option(
        GED_SECONDS,
        "--ged-seconds",
        min=0.0,
        help="Graph edit distance time per request; past it each pair gets a linear-time "
        'upper bound and the result says "ged": "bounded".',
    ),
    workers: int = typer.Option(
        None, "--workers", min=1, help="Requests scored at once (default: one per CPU)."
    ),
    token_file: Path = typer.Option(
        None,
        "--token-file",
        help=f"A file holding the bearer token /v1/verify then "
        f"needs (default: ${TOKEN_ENV}; none: no token).",
    ),
    header_timeout: float = typer.Option(
        Limits.header_timeout,
        "--header-timeout",
        min=0.1,
        help="Seconds a connection may take to send a request's headers.",
    ),
    max_connections: int = typer.Option(
        Limits.max_connections,
        "--max-connections",
        min=1,
        help="Open connections at once; more are closed on arrival.",
    ),
    max_requests: int = typer.Option(
        Limits.max_requests, "--max-requests", min=1, help="Requests in progress at once (503 above)."
    ),
    reask: int = ReaskOpt,
    reask_band: str = ReaskBandOpt,
    reask_max: int = ReaskMaxOpt,
    reask_alternates: int = ReaskAlternatesOpt,
    reask_rate: int = typer.Option(
        60,
        "--reask-rate",
        min=1,
        metavar="N",
        help="With --reask: at most N conversations re-asked a minute, over all requests.",
    ),
    agent: str = AgentOpt,
    agent_url: str = AgentUrlOpt,
    agent_version: str = AgentVersionOpt,
) -> None:
    """Serve verdicts over HTTP: POST /v1/verify (OpenAI chat messages), GET /health, /openapi.json.

    With --reask N and your agent (--agent / --agent-url), the conversations a request's verdicts are
    unsure of (--reask-band) are asked again of the agent and scored with its runs as siblings."""
    from contextlib import ExitStack

    import uvicorn

    from magv.service.app import create_app
    from magv.service.log import TrajectoryLog
    from magv.verify.scoring import load_scorer
    from magv.verify.toolspec import log_tools

    cfg = settings(ctx, **agent_overrides(agent, agent_url, agent_version), domain=domain)
    options = reask_options(reask, reask_band, reask_max, reask_alternates, cfg)
    nonempty("--domain", domain)
    nonempty("--model", model)
    if log_to is not None and log_to.is_dir():
        raise BadInput(f"--log-to {log_to}: is a directory; expected the path of a DuckDB file")
    token = read_token(token_file)
    tools = log_tools(domain, tools_file, error_pattern)
    scorer = load_scorer(cfg, model_file=model_file, model_id=model, threshold=threshold, tools=tools)
    if scorer.featurizer.embedder is not None:  # the embedding model is loaded now, not on the first request
        scorer.featurizer.embedder.embed(["warm-up"])
    stack = ExitStack()
    reasker = None
    if options is not None:
        from magv.llm import managed_endpoints
        from magv.pipeline.reask import RateLimit, Reasker
        from magv.pipeline.worker import close_resources

        # The model endpoints of the agent's task (the embedded model unless llm.endpoints says
        # otherwise), started once for the service's life.
        urls = stack.enter_context(managed_endpoints(cfg))
        stack.callback(close_resources)
        reasker = Reasker(cfg, options, RateLimit(reask_rate), endpoints=urls)
    trajectory_log = TrajectoryLog(log_to, domain, tools) if log_to is not None else None
    app = create_app(
        scorer,
        trajectory_log=trajectory_log,
        max_body=max_body,
        max_trajectories=max_batch,
        max_pairs=max_pairs,
        ged_seconds=ged_seconds,
        workers=workers,
        token=token,
        errors=tools.errors,
        reasker=reasker,
    )
    err_console.print(
        f"serving {scorer.model_name} ({scorer.model_id}) on http://{host}:{port}/v1/verify"
        + (f"; logging trajectories to {log_to}" if log_to else "")
        + ("; bearer token required" if token else ""),
        highlight=False,
    )
    warning = exposure_warning(host, token, log_to)
    if warning is not None:
        loud = log_to is not None and token is None
        err_console.print(
            f"[bold red]WARNING[/bold red] {warning}" if loud else f"[yellow]note:[/yellow] {warning}",
            highlight=False,
        )
    limits = Limits(header_timeout=header_timeout, max_connections=max_connections, max_requests=max_requests)
    try:
        uvicorn.Server(uvicorn_config(app, host, port, limits)).run()
    finally:
        if trajectory_log is not None:
            trajectory_log.close()
        stack.close()


def register(app: typer.Typer) -> None:
    """`verifier` joins the `serve` group that magv.commands.llm registers."""
