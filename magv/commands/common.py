"""What every command shares: settings from the context, the store, output as table or JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperOption

from magv.config import Settings, load_settings
from magv.errors import BadInput
from magv.store import Store

console = Console()
err_console = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print the result as JSON for scripts.")
# What magv is told of the tools behind logs (magv.verify.toolspec): import, score --input, serve.
ToolsOption = typer.Option(
    None, "--tools", metavar="FILE",
    help='The logs\' tools: a JSON list of OpenAI function specs, "writes": true on those that change data '
    "(the write features compare their calls); adds to --domain's tools.",
)  # fmt: skip
ErrorPatternOption = typer.Option(
    None, "--tool-error-pattern", metavar="REGEX",
    help='Tool results whose text this regular expression finds are errors (default: the domain\'s, else text '
    'that starts with "Error"; a JSON {"error": ...} always is).',
)  # fmt: skip


def _plain_flags() -> None:
    """Show flags as flags in --help: typer's rich help prints a `<bool>` type beside every flag
    (even --help), which reads as if the flag took a value."""
    shown = TyperOption.display_type_rich
    if getattr(shown, "_magv_plain_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._magv_plain_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_plain_flags()


def choice(option: str, value: str | None, valid: Sequence[str]) -> str | None:
    """`value` if it is one of `valid` (or None); else a BadInput listing the valid values, so a typo
    such as `--role responer` is refused instead of matching nothing."""
    if value is None or value in valid:
        return value
    raise BadInput(f"{option}: {value!r} is not one of {', '.join(valid) or '(none recorded yet)'}")


def nonempty(option: str, value: str | None) -> str | None:
    """`value` unless it is given empty or blank: `--domain ''` names nothing, and a default that
    silently stood in for it would hide the mistake."""
    if value is not None and not value.strip():
        raise BadInput(f"{option}: expected a name, got {value!r}")
    return value


def settings(ctx: typer.Context, **overrides: Any) -> Settings:
    """The effective settings: --config file, environment, then command-line overrides."""
    root = ctx.find_root()
    obj = root.obj or {}
    if obj.get("database") is not None:  # the global --database wins over file and environment
        overrides = {"database": obj["database"], **overrides}
    base = load_settings(obj.get("config"))
    clean = {k: v for k, v in overrides.items() if v is not None}
    if not clean:
        return base
    data = base.model_dump()
    for dotted, value in clean.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return load_settings(obj.get("config"), **{k: data[k] for k in {d.split(".")[0] for d in clean}})


@contextmanager
def open_store(cfg: Settings, read_only: bool = False, existing: bool = False) -> Iterator[Store]:
    """The store of the settings. `existing`: a command that only works on stored data refuses a
    missing database rather than create an empty one."""
    if Path(cfg.database).is_dir():
        raise BadInput(f"database: {cfg.database} is a directory; expected the path of a DuckDB file")
    if existing and not Path(cfg.database).exists():
        raise BadInput(
            f"database: {cfg.database} does not exist; run the pipeline (`magv run`) or import "
            "trajectories (`magv import trajectories`) first"
        )
    store = Store(cfg.database, read_only=read_only)
    try:
        yield store
    finally:
        store.close()


def to_jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2) + "\n")


# Columns holding names a user copies into the next command: never cut, never wrapped.
ID_COLUMNS = ("id", "name", "seed", "tool", "model", "role", "table", "config", "key")


def table(
    title: str | None,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    ids: Sequence[str] = ID_COLUMNS,
) -> None:
    """Rows as a table fitted to the terminal. Identifier columns (`ids`, and any `*_id`) keep their
    full width on one line; the other columns wrap (never an ellipsis) to make room."""
    cols = list(columns or (rows[0].keys() if rows else []))
    t = Table(title=title)
    for c in cols:
        if str(c) in ids or str(c).endswith("_id"):
            width = max([len(str(c)), *(len(_fmt(r.get(c))) for r in rows)])
            t.add_column(str(c), no_wrap=True, min_width=width)
        else:
            t.add_column(str(c), overflow="fold")
    for r in rows:
        t.add_row(*[_fmt(r.get(c)) for c in cols])
    console.print(t)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "-"
    return str(v)


AgentOpt = typer.Option(
    None, "--agent",
    help="Your agent instead of magv's responder: package.module:function or path/file.py:function "
    "(sync or async; imported and run: it is your code). See docs/agents.md.",
)  # fmt: skip
AgentUrlOpt = typer.Option(
    None, "--agent-url", help="Your agent as an HTTP service: the task is POSTed as JSON."
)
AgentVersionOpt = typer.Option(
    None, "--agent-version", help="A version string stored with every run (report --compare shows it)."
)


def agent_overrides(agent: str | None, agent_url: str | None, version: str | None) -> dict[str, Any]:
    """Settings overrides of the agent options, checked now: a file spec made absolute (workers may
    run elsewhere) and the callable imported once, so a typo is a BadInput before any work."""
    if agent and agent_url:
        raise BadInput("--agent and --agent-url: give one")
    out: dict[str, Any] = {"responder.agent_version": version}
    if agent:
        from magv.agents.external import resolve_spec

        out["responder.agent"] = resolve_spec(agent)
    if agent_url:
        out["responder.agent_url"] = agent_url
    return out


ReaskOpt = typer.Option(
    None, "--reask", min=1, max=20, metavar="N",
    help="Ask your agent (--agent / --agent-url) the conversation's first question N more times and score it "
    "with those runs as its siblings (opt-in; each run is one agent call). See docs/agents.md.",
)  # fmt: skip
ReaskBandOpt = typer.Option(
    "0,1", "--reask-band", metavar="LOW,HIGH",
    help="With --reask: only conversations whose probability is in this band (e.g. 0.3,0.7: the unsure ones).",
)  # fmt: skip
ReaskMaxOpt = typer.Option(
    10, "--reask-max", min=1, metavar="N",
    help="With --reask: at most N conversations re-asked (per file; per request for the service), the most "
    "uncertain first.",
)  # fmt: skip


ReaskAlternatesOpt = typer.Option(
    0, "--reask-alternates", min=0, max=10, metavar="K",
    help="With --reask: also K alternate questions written from the conversation's answer by magv's reverse "
    "engineer (one model call), each asked of your agent pipeline.alternate_runs times.",
)  # fmt: skip


def reask_options(runs: int | None, band: str, most: int, alternates: int, cfg: Settings) -> Any:
    """The re-ask options of the command line (None without --reask), with the agent checked."""
    if runs is None:
        if alternates:
            raise BadInput("--reask-alternates goes with --reask N")
        return None
    from magv.pipeline.reask import ReaskOptions, check_agent, parse_band

    check_agent(cfg)
    return ReaskOptions(
        runs=runs,
        band=parse_band(band),
        max_conversations=most,
        alternates=alternates,
        alternate_runs=cfg.pipeline.alternate_runs,
    )


def reask_line(summary: dict[str, Any]) -> str:
    """One line of what re-asking did and cost."""
    cost = summary["cost_usd"]
    return (
        f"re-asked {summary['reasked']} of {summary['candidates']} conversations in the band "
        f"({summary['questions']} questions x {summary['runs_per_question']} runs: {summary['agent_runs']} runs, "
        f"{summary['agent_failures']} failed; {summary['prompt_tokens'] + summary['completion_tokens']} tokens"
        + (f", ${cost:g}" if cost is not None else "")
        + f", {summary['seconds']:g} s); "
        f"{summary['changed']} verdicts changed, {summary['not_reasked']} not re-asked"
    )
