"""`magv generate`, `magv respond`, `magv reverse`, `magv run`: the generation half as Prefect flows."""

from __future__ import annotations

import os
import time
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from magv import progress
from magv.commands.common import (
    AgentOpt,
    AgentUrlOpt,
    AgentVersionOpt,
    JsonOption,
    agent_overrides,
    console,
    emit_json,
    err_console,
    settings,
    table,
)
from magv.config import Settings
from magv.domains import load_domain
from magv.errors import RunFailed, StoreLocked
from magv.store import Store


class RichReporter:
    """Progress bars for the stages of a flow; plain lines when the output is not a terminal
    (CI logs, `| tee`), so long runs still show where they are."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description:<20}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self.live,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.counts: dict[str, list[float]] = {}

    def start(self, name: str, total: int) -> None:
        self.tasks[name] = self.progress.add_task(name, total=max(total, 1))
        self.counts[name] = [0, total, time.perf_counter(), time.perf_counter()]
        if total == 0:
            self.progress.update(self.tasks[name], completed=1, description=f"{name} (nothing to do)")
        if self.enabled and not self.live:
            console.print(f"{name}: {total} to do", highlight=False)

    def advance(self, name: str, n: int = 1) -> None:
        if name not in self.tasks:
            return
        self.progress.advance(self.tasks[name], n)
        c = self.counts[name]
        c[0] += n
        now = time.perf_counter()
        if self.enabled and not self.live and (now - c[3] > 30 or c[0] >= c[1]):
            c[3] = now
            left = ""
            if 0 < c[0] < c[1]:  # the rate so far, over what is left
                left = f", about {(now - c[2]) / c[0] * (c[1] - c[0]):.0f} s left"
            console.print(f"{name}: {int(c[0])}/{int(c[1])} done ({now - c[2]:.0f} s{left})", highlight=False)

    def finish(self, name: str) -> None:
        pass

    def note(self, text: str) -> None:
        if self.enabled:
            console.print(text, highlight=False)


def _quiet_prefect() -> None:
    # Prefect's own INFO logs would tear through the progress bars; its UI keeps the full record.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _open_lock(cfg: Settings, wait: bool) -> dict[str, float]:
    """Fail at once (or wait) when another process is writing the database. While it is open, the
    call log's mean latency per role is read for the plan (the one time the pre-flight opens it)."""
    from magv.pipeline.cost import mean_latencies

    told = False
    while True:
        try:
            with Store(cfg.database) as store:
                return mean_latencies(store)
        except StoreLocked as exc:
            if not wait:
                raise
            if not told:
                err_console.print(f"waiting: {exc}", highlight=False, soft_wrap=True)
                told = True
            time.sleep(2)


def _check_inputs(cfg: Settings) -> list:
    """Load the domain and read its seed file before the database is touched: bad input fails
    with its file and line, and leaves no row behind (not even a failed pipeline run)."""
    from magv.prompts import AGENTS, PROMPTS_ENV, check_prompt_folder

    check_prompt_folder(os.environ.get(PROMPTS_ENV), AGENTS, PROMPTS_ENV)
    return load_domain(cfg.domain).seeds()


def print_estimate(cfg: Settings, seeds: list, latencies: dict[str, float]) -> None:
    """What a whole run costs on a new database (a rerun skips what is stored), before it starts;
    a time where the call log has `latencies` (mean seconds per role)."""
    from magv.pipeline.cost import parallel, run_costs
    from magv.pipeline.generate import per_target, target_seeds

    targets = len(target_seeds(seeds, cfg.pipeline.max_targets))
    costs = run_costs(cfg, targets)
    console.print(
        f"plan: {targets} targets x {per_target(cfg, targets)} questions, keep {cfg.pipeline.questions}; "
        f"at most {sum(c.calls for c in costs)} LLM calls on a new database:",
        highlight=False,
    )
    n = parallel(cfg, len(cfg.llm.endpoints))
    for c in costs:
        if c.calls:
            console.print("  " + c.describe(latencies, n), highlight=False)


def run_flow(
    flow_name: str, cfg: Settings, as_json: bool, wait: bool = False, **kwargs: Any
) -> dict[str, Any]:
    _quiet_prefect()
    seeds = _check_inputs(cfg)
    latencies = _open_lock(cfg, wait)
    if flow_name in ("pipeline", "generate") and not as_json:
        print_estimate(cfg, seeds, latencies or {})
    from magv.pipeline.runner import task_runner

    module = __import__(f"magv.flows.{flow_name}", fromlist=["x"])
    flow_fn = getattr(module, f"{flow_name}_flow")
    reporter = RichReporter(enabled=not as_json)
    progress.set_reporter(reporter)
    started = time.perf_counter()
    try:
        with reporter.progress:
            result = flow_fn.with_options(task_runner=task_runner(cfg))(
                settings=cfg.model_dump(mode="json"), **kwargs
            )
    finally:
        progress.set_reporter(None)
    result = dict(result or {})
    result["wall_seconds"] = round(time.perf_counter() - started, 3)
    result["database"] = str(cfg.database)
    return result


def _print_summary(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(result)
        return
    rows = [
        {
            "stage": name,
            "planned": s.get("planned"),
            "done": s.get("done"),
            "failed": s.get("failed"),
            "written": s.get("written"),
            "tokens": (s.get("prompt_tokens") or 0) + (s.get("completion_tokens") or 0),
            "seconds": s.get("seconds"),
        }
        for name, s in result.get("stages", {}).items()
    ]
    table("stages", rows)
    for name, s in result.get("stages", {}).items():
        for err in s.get("errors", [])[:3]:
            console.print(f"[yellow]{name}:[/yellow] {err}", highlight=False)
    summary = result.get("summary") or {}
    faults, calls = summary.get("faults") or {}, summary.get("llm_calls") or {}
    if any(faults.values()) or calls.get("retries") or calls.get("errors"):
        console.print(
            f"faults recorded: {faults.get('llm_errors', 0)} LLM errors, {faults.get('invalid_steps', 0)} "
            f"invalid steps, {faults.get('tool_errors', 0)} tool errors; {calls.get('retries', 0)} "
            f"LLM retries, {calls.get('errors', 0)} calls failed after retries",
            highlight=False,
        )
    quality = summary.get("quality") or {}
    if quality.get("headline"):
        console.print(f"dataset quality: {quality['headline']}", highlight=False)
    console.print(f"database: {result['database']}  wall time: {result['wall_seconds']:.1f} s")


def _run_and_report(flow_name: str, cfg: Settings, as_json: bool, wait: bool, **kwargs: Any) -> None:
    result = run_flow(flow_name, cfg, as_json, wait, **kwargs)
    _print_summary(result, as_json)
    _check_failures(result)


def _check_failures(result: dict[str, Any]) -> None:
    """A run where a stage failed exits 1 and names the stage and its reason (the reasons are
    stored in pipeline_runs.stages.<stage>.errors)."""
    stages = result.get("stages", {})
    if stages and all(
        s.get("planned", 0) > 0 and s.get("done", 0) == 0 and s.get("failed", 0) > 0
        for s in stages.values()
        if s.get("planned")
    ):
        raise RunFailed("every planned item failed; see the errors above and `magv llm calls`")
    failed = {name: s["error"] for name, s in stages.items() if s.get("error")}
    if failed:
        reasons = "; ".join(f"stage {name} failed: {error}" for name, error in failed.items())
        raise RunFailed(f"run {result.get('run_id', '')} completed with errors: {reasons}")


DomainOpt = typer.Option(None, "--domain", "-d", help="Domain name, module or folder (default: settings).")
RunsOpt = typer.Option(None, "--runs", "-R", min=1, max=50, help="Responder runs per question (R).")
RunnerOpt = typer.Option(None, "--runner", help="Task runner: local | dask | ray.")
WaitOpt = typer.Option(False, "--wait", help="Wait for another process writing the database to finish.")
QuestionsOpt = typer.Option(None, "--questions", "-q", min=1, help="Questions kept by selection.")
PerTargetOpt = typer.Option(
    None,
    "--per-target",
    "-n",
    min=1,
    max=100,
    help="Questions generated per seed trajectory (N; default: twice --questions spread over the targets, at most 10).",
)
TargetsOpt = typer.Option(None, "--targets", min=1, help="Seed trajectories to use (default: all).")
AlternatesOpt = typer.Option(
    None, "--alternates", "-k", min=0, max=20, help="Alternate questions per question (k)."
)
AltRunsOpt = typer.Option(None, "--alternate-runs", min=1, max=20, help="Runs per alternate (R').")
MinQualityOpt = typer.Option(
    None, "--min-quality/--any-quality",
    help="Keep only questions that pass the rule checks: answerable (they state what their target needs from "
    "the customer) and one request in a customer's voice (default: settings, pipeline.min_quality, on).",
)  # fmt: skip
DemosOpt = typer.Option(
    None, "--demos", min=0, max=20, help="Verified examples shown to the responder per question (m; 0: none)."
)


def _cfg(ctx: typer.Context, **overrides: Any) -> Settings:
    return settings(ctx, **overrides)


def generate(
    ctx: typer.Context,
    domain: str = DomainOpt,
    per_target: int = PerTargetOpt,
    questions: int = QuestionsOpt,
    targets: int = TargetsOpt,
    min_quality: bool = MinQualityOpt,
    runner: str = RunnerOpt,
    wait: bool = WaitOpt,
    as_json: bool = JsonOption,
) -> None:
    """Generate questions with the investigator and select a diverse, balanced subset."""
    cfg = _cfg(
        ctx,
        domain=domain,
        **{
            "pipeline.questions_per_target": per_target,
            "pipeline.questions": questions,
            "pipeline.max_targets": targets,
            "pipeline.runner": runner,
            "pipeline.min_quality": min_quality,
        },
    )
    _run_and_report("generate", cfg, as_json, wait)


def respond(
    ctx: typer.Context,
    domain: str = DomainOpt,
    runs: int = RunsOpt,
    demos: int = DemosOpt,
    runner: str = RunnerOpt,
    agent: str = AgentOpt,
    agent_url: str = AgentUrlOpt,
    agent_version: str = AgentVersionOpt,
    wait: bool = WaitOpt,
    as_json: bool = JsonOption,
) -> None:
    """Answer every kept question R times with the responder (or --agent); mark the most common trajectory."""
    cfg = _cfg(
        ctx,
        domain=domain,
        **{"pipeline.runs": runs, "pipeline.demos": demos, "pipeline.runner": runner},
        **agent_overrides(agent, agent_url, agent_version),
    )
    _run_and_report("respond", cfg, as_json, wait)


def reverse(
    ctx: typer.Context,
    domain: str = DomainOpt,
    alternates: int = AlternatesOpt,
    alternate_runs: int = AltRunsOpt,
    runner: str = RunnerOpt,
    agent: str = AgentOpt,
    agent_url: str = AgentUrlOpt,
    agent_version: str = AgentVersionOpt,
    wait: bool = WaitOpt,
    as_json: bool = JsonOption,
) -> None:
    """Reverse-engineer alternate questions from each MCT's response, then answer them."""
    cfg = _cfg(
        ctx,
        domain=domain,
        **{
            "pipeline.alternates": alternates,
            "pipeline.alternate_runs": alternate_runs,
            "pipeline.runner": runner,
        },
        **agent_overrides(agent, agent_url, agent_version),
    )
    _run_and_report("reverse", cfg, as_json, wait)


def run(
    ctx: typer.Context,
    domain: str = DomainOpt,
    questions: int = QuestionsOpt,
    per_target: int = PerTargetOpt,
    targets: int = TargetsOpt,
    runs: int = RunsOpt,
    alternates: int = AlternatesOpt,
    alternate_runs: int = AltRunsOpt,
    demos: int = DemosOpt,
    min_quality: bool = MinQualityOpt,
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Run the verifier stages after generation."
    ),
    runner: str = RunnerOpt,
    agent: str = AgentOpt,
    agent_url: str = AgentUrlOpt,
    agent_version: str = AgentVersionOpt,
    wait: bool = WaitOpt,
    as_json: bool = JsonOption,
) -> None:
    """Run the whole pipeline: generate, select, respond, reverse, respond to alternates, verify.

    With --agent or --agent-url your assistant answers the questions instead of magv's responder.

    Finished work is kept in the database; rerunning continues where a stopped run left off.
    """
    cfg = _cfg(
        ctx,
        domain=domain,
        **{
            "pipeline.questions": questions,
            "pipeline.questions_per_target": per_target,
            "pipeline.runs": runs,
            "pipeline.max_targets": targets,
            "pipeline.demos": demos,
            "pipeline.alternates": alternates,
            "pipeline.alternate_runs": alternate_runs,
            "pipeline.runner": runner,
            "pipeline.min_quality": min_quality,
            **agent_overrides(agent, agent_url, agent_version),
        },
    )
    _run_and_report("pipeline", cfg, as_json, wait, verify=verify)


def register(app: typer.Typer) -> None:
    for fn in (run, generate, respond, reverse):
        app.command(fn.__name__)(fn)
