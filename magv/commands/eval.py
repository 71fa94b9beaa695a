"""`magv eval`: measure the responder on questions with gold trajectories, or compare two
configurations of it on the same questions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

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
    open_store,
    settings,
    table,
)
from magv.commands.pipeline import RichReporter, _quiet_prefect
from magv.config import load_settings
from magv.domains import load_domain
from magv.errors import RunFailed

SPEC_HELP = (
    "Compare with configuration B, given as changes to A: KEY=VALUE[,KEY=VALUE...] with keys demos, "
    "seed_demos, model, endpoint (repeatable), temperature, max_steps, max_tokens, tool_mode, prompts "
    "(a folder of prompts), agent, agent_url, agent_version (your agent: docs/agents.md). "
    'E.g. "demos=3", "model=qwen2.5-7b,endpoint=http://gpu1:8000/v1" or "agent_version=v2".'
)


def eval_command(
    ctx: typer.Context,
    domain: str = typer.Option(
        None, "--domain", "-d", help="Domain name, module or folder (default: settings)."
    ),
    questions: str = typer.Option(
        "seeds",
        "--questions",
        "-q",
        help="'seeds' (the domain's seeds, leave-one-seed-out) or a JSONL file in the seed format.",
    ),
    demos: int = typer.Option(None, "--demos", min=0, max=20, help="Verified examples in the prompt (m)."),
    seed_demos: bool = typer.Option(
        False,
        "--seed-demos/--no-seed-demos",
        help="Also use the other seeds' gold trajectories as demonstrations.",
    ),
    compare: str = typer.Option(None, "--compare", help=SPEC_HELP),
    compare_config: Path = typer.Option(
        None,
        "--compare-config",
        help="Configuration B from another settings file (models, endpoints, "
        "pipeline.demos, ...); --compare applies on top.",
    ),
    max_steps: int = typer.Option(None, "--max-steps", min=1, max=50, help="Responder steps per question."),
    temperature: float = typer.Option(
        None, "--temperature", min=0, max=2, help="Responder sampling temperature."
    ),
    limit: int = typer.Option(None, "--limit", min=1, help="Evaluate only the first N questions."),
    agent: str = AgentOpt,
    agent_url: str = AgentUrlOpt,
    agent_version: str = AgentVersionOpt,
    bootstrap: int = typer.Option(2000, "--bootstrap", min=100, help="Bootstrap resamples for --compare."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seed of the bootstrap."),
    fail_under: list[str] = typer.Option(
        None,
        "--fail-under",
        metavar="METRIC=SHARE",
        help="CI gate (repeatable): exit 1 when any configuration's METRIC (strict, unordered_args, "
        "valid_calls, answered, ...) is below SHARE, e.g. strict=0.6.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Evaluate the responder: accuracy under each match mode, call validity, steps, tokens, latency.

    Results per question are stored in the database (eval_results) and shown by `magv report`.
    """
    from magv.evaluate import MATCH_KEYS, configure, load_questions, parse_spec, run_evaluation
    from magv.gate import enforce, parse_bars, shortfalls
    from magv.prompts import PROMPTS_ENV, check_prompt_folder

    bars = parse_bars(fail_under, [*MATCH_KEYS, "valid_calls", "answered"])
    cfg = settings(
        ctx,
        domain=domain,
        **{"pipeline.demos": demos, "pipeline.max_steps": max_steps},
        **agent_overrides(agent, agent_url, agent_version),
    )
    # Everything is checked before a model starts or a row is written.
    dom = load_domain(cfg.domain)
    check_prompt_folder(os.environ.get(PROMPTS_ENV), ("responder",), PROMPTS_ENV)
    items = load_questions(dom, questions)[:limit]
    base = [("temperature", str(temperature))] if temperature is not None else []
    name_a = f"demos={cfg.pipeline.demos}" + (",seed_demos" if seed_demos else "")
    if cfg.responder.agent or cfg.responder.agent_url:
        name_a = _agent_name(cfg)
    configs = [configure(cfg, name_a, seed_demos=seed_demos, overrides=base, where="--temperature")]
    if compare or compare_config:
        spec = parse_spec(compare) if compare else []
        source = cfg
        if compare_config:
            keep = {"domain": cfg.domain, "database": cfg.database, "domain_data_dir": cfg.domain_data_dir}
            source = load_settings(compare_config, **keep)
            base += [("max_steps", str(max_steps))] if max_steps else []
        parts = ([f"config={compare_config.name}"] if compare_config else []) + [f"{k}={v}" for k, v in spec]
        name_b = ",".join(parts)
        name_b = name_b if name_b != name_a else f"{name_b} (B)"
        configs.append(configure(source, name_b, seed_demos=seed_demos, overrides=base + spec))
    _quiet_prefect()
    reporter = RichReporter(enabled=not as_json)
    progress.set_reporter(reporter)
    try:
        with open_store(cfg) as store, reporter.progress:
            result = run_evaluation(
                store, dom, items, configs, source=str(questions), n_resamples=bootstrap, seed=seed
            )
    finally:
        progress.set_reporter(None)
    out = {**result.as_dict(), "database": str(cfg.database)}
    fell = [line for c in out["configs"] for line in shortfalls(c["summary"], bars, c["name"])]
    if bars:
        out["gate"] = {"fail_under": bars, "passed": not fell, "below": fell}
    if as_json:
        emit_json(out)
    else:
        _print(out)
    for c in out["configs"]:
        s = c["summary"]
        if c["demos"] and not s["demos_shown"]:
            err_console.print(
                f"[yellow]warning:[/yellow] {c['name']}: no verified example to show; run the "
                "verifier first or add --seed-demos"
            )
        if s["questions"] and s["llm_errors"] == s["questions"]:
            raise RunFailed(f"{c['name']}: every run ended in an LLM error; see `magv llm calls`")
    enforce(fell, bars, "eval", lambda line: err_console.print(line, highlight=False))


def _agent_name(cfg: Any) -> str:
    r = cfg.responder
    name = r.agent or r.agent_url or ""
    return name.rsplit("/", 1)[-1] + (f"@{r.agent_version}" if r.agent_version else "")


def _print(out: dict[str, Any]) -> None:
    from magv.evaluate import METRICS

    configs = out["configs"]
    names = [c["name"] for c in configs]
    rows = []
    for metric in [*METRICS, "demos_shown", "llm_errors"]:
        row: dict[str, Any] = {"metric": metric}
        for name, c in zip(names, configs):
            row[name] = c["summary"].get(metric)
        if out["comparison"] and metric in out["comparison"]:
            d = out["comparison"][metric]
            row["B − A"] = d["diff"]
            row["95% CI"] = "-" if d["diff"] is None else f"[{d['low']:+.4g}, {d['high']:+.4g}]"
        rows.append(row)
    title = f"eval {out['eval_id']} · {out['domain']} · {out['questions']} questions ({out['source']})"
    table(title, rows)
    console.print(
        f"accuracy: share of questions whose trajectory matches the gold one ('_args': arguments too); "
        f"{out['seconds']:.1f} s; results in eval_results of {out['database']}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
