"""The agent evaluation harness: the responder on questions with gold trajectories, scored under
every match mode, for one configuration or two compared on the same questions.

Runs go through the same LLM layer as the pipeline (call log, replay) and the domain sandbox; the
per-question results go to `eval_results`, never to the pipeline's `runs`. Demonstrations come from
a `DemonstrationIndex`, always excluding the evaluated question's group (leave-one-seed-out on seeds).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from magv.config import Settings, settings_from_dict
from magv.domains.seeds import read_seeds
from magv.errors import BadInput, RunFailed
from magv.models import Question, ToolCall, Trajectory, make_id, utcnow
from magv.prompts import check_prompt_folder
from magv.verify.labels import MATCH_MODES, match_any

if TYPE_CHECKING:
    from magv.store import Store

MATCH_KEYS = [key for mode in MATCH_MODES for key in (mode, f"{mode}_args")]
METRICS = MATCH_KEYS + ["valid_calls", "answered", "steps", "tool_calls", "tokens", "latency_s"]
# Tool-call errors that make a call invalid; other errors (order not found…) are the tool's answer.
INVALID_CALL_ERRORS = ("unknown_tool", "invalid_arguments")


@dataclass
class EvalQuestion:
    id: str
    seed_id: str
    group_id: str
    text: str
    gold: list[ToolCall]
    acceptable: list[list[ToolCall]] = field(default_factory=list)  # further correct trajectories


@dataclass
class EvalConfig:
    """One configuration of the responder. `settings` carry model, endpoints, max steps and
    `pipeline.demos`; the rest is what settings cannot say."""

    name: str
    settings: Settings
    seed_demos: bool = False
    prompts_dir: Path | None = None

    @property
    def demos(self) -> int:
        return self.settings.pipeline.demos

    def fingerprint(self) -> str:
        """Part of the replay context: two configurations that send equal messages (say, one
        model name on two endpoints) must not answer from each other's log."""
        role = self.settings.llm.role("responder")
        agent = self.settings.responder.model_dump(include={"agent", "agent_url", "agent_version"})
        return make_id(
            role, str(self.prompts_dir or ""), *([agent] if any(agent.values()) else []), length=10
        )


@dataclass
class EvalReport:
    eval_id: str
    domain: str
    source: str
    questions: int
    configs: list[dict[str, Any]] = field(default_factory=list)
    comparison: dict[str, dict[str, Any]] | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "eval_id": self.eval_id,
            "domain": self.domain,
            "source": self.source,
            "questions": self.questions,
            "configs": self.configs,
            "comparison": self.comparison,
            "seconds": round(self.seconds, 3),
        }


# -- questions ------------------------------------------------------------------------------------


def load_questions(domain, source: str | Path) -> list[EvalQuestion]:
    """`seeds` (the domain's seed file) or a file in the seed format, checked by the domain's seed
    reader so that every problem names the file and line."""
    if str(source) == "seeds":
        seeds, lines, origin, path = domain.seeds(), {}, "seed", domain.seeds_path
    else:
        path = Path(source)
        seeds, lines = read_seeds(path, domain.name, {t.name: t for t in domain.tools})
        origin = "eval"
    seen: dict[str, str] = {}
    out = []
    for s in seeds:
        key = " ".join(s.question.lower().split())
        if key in seen and lines:
            raise BadInput(
                f"{path}:{lines[s.id]}: same question as line {lines[seen[key]]}; "
                "each question must be asked once"
            )
        seen[key] = s.id
        # Seeds keep the pipeline's question id and group, so results line up with the store.
        qid = Question.derive_id(domain.name, origin, s.question)
        out.append(
            EvalQuestion(
                id=qid,
                seed_id=s.id,
                group_id=s.id,
                text=s.question,
                gold=list(s.trajectory),
                acceptable=[list(t) for t in s.acceptable],
            )
        )
    return out


# -- scoring --------------------------------------------------------------------------------------


def score(
    trajectory: Trajectory,
    gold: Sequence[ToolCall],
    acceptable: Sequence[Sequence[ToolCall]] = (),
    arguments: bool | str = "exact",
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-question figures: a bool per match mode (names only, and `_args` with arguments under
    `arguments` and the per-tool `overrides`; a match with `gold` or any `acceptable` trajectory
    counts), the share of steps that were valid tool calls (None without steps), steps, calls,
    answered."""
    calls = trajectory.calls
    golds = [list(gold), *(list(t) for t in acceptable)]
    args = "exact" if arguments is False or arguments == "ignore" else arguments
    out: dict[str, Any] = {}
    for mode in MATCH_MODES:
        out[mode] = match_any(calls, golds, mode, arguments=False)
        out[f"{mode}_args"] = match_any(calls, golds, mode, arguments=args, overrides=overrides)
    steps = trajectory.steps
    valid = [s for s in steps if s.kind == "tool" and not (s.error or "").startswith(INVALID_CALL_ERRORS)]
    out["valid_calls"] = len(valid) / len(steps) if steps else None
    out["answered"] = trajectory.status == "ok"
    out["steps"] = len(steps)
    out["tool_calls"] = len(calls)
    return out


def _arg_rules(settings: Settings) -> tuple[bool | str, dict[str, Any]]:
    """The argument mode and per-tool rules of the `_args` figures: the gold-label settings, with a
    plain true/false meaning exact (`_args` always compares arguments)."""
    v = settings.verify
    return (v.gold_arguments if isinstance(v.gold_arguments, str) else "exact"), dict(v.gold_overrides)


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every metric over the questions that have it (accuracies are shares of questions)."""
    out: dict[str, Any] = {"questions": len(rows)}
    for name in METRICS:
        values = [float(r[name]) for r in rows if r.get(name) is not None]
        out[name] = round(float(np.mean(values)), 4) if values else None
    out["total_tokens"] = int(sum(r.get("tokens") or 0 for r in rows))
    out["demos_shown"] = round(float(np.mean([len(r.get("demos") or []) for r in rows])), 4) if rows else 0.0
    out["llm_errors"] = sum(1 for r in rows if r.get("status") == "llm_error")
    return out


def paired_bootstrap(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean difference b − a over paired items and its percentile bootstrap interval: items are
    resampled with replacement, the pairs kept together. Pairs with a missing side are dropped."""
    x = np.array([np.nan if v is None else float(v) for v in a])
    y = np.array([np.nan if v is None else float(v) for v in b])
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    d = (y - x)[~(np.isnan(x) | np.isnan(y))]
    n = len(d)
    if n == 0:
        return {"diff": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    step = max(1, 2_000_000 // n)  # resamples per batch: bounded memory for large question sets
    for start in range(0, n_resamples, step):
        stop = min(n_resamples, start + step)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {
        "diff": round(float(d.mean()), 4),
        "low": round(float(low), 4),
        "high": round(float(high), 4),
        "n": n,
    }


def compare(
    rows_a: dict[str, dict[str, Any]], rows_b: dict[str, dict[str, Any]], **bootstrap: Any
) -> dict[str, dict[str, Any]]:
    """B − A with a paired bootstrap interval for every metric, over the questions both answered."""
    ids = [q for q in rows_a if q in rows_b]
    return {
        name: paired_bootstrap(
            [rows_a[q].get(name) for q in ids], [rows_b[q].get(name) for q in ids], **bootstrap
        )
        for name in METRICS
    }


# -- running ------------------------------------------------------------------------------------


@contextmanager
def _prompts(folder: Path | None) -> Iterator[None]:
    """The prompt folder of one configuration; prompts are read per call, so this holds for its runs."""
    if folder is None:
        yield
        return
    old = os.environ.get("MAGV_PROMPTS_DIR")
    os.environ["MAGV_PROMPTS_DIR"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MAGV_PROMPTS_DIR", None)
        else:
            os.environ["MAGV_PROMPTS_DIR"] = old


def pick_demos(
    store: Store, domain, questions: Sequence[EvalQuestion], configs: Sequence[EvalConfig], embedder: Any
) -> dict[bool, list[list[Any]]]:
    """For each seed_demos setting in use: per question, the nearest examples outside its group,
    as many as the most demanding configuration wants (each takes its first m)."""
    from magv.demonstrations import DemonstrationIndex

    out: dict[bool, list[list[Any]]] = {}
    for with_seeds in sorted({c.seed_demos for c in configs if c.demos}):
        demos = DemonstrationIndex.from_store(
            store, domain.name, embedder, seeds=domain.seeds() if with_seeds else ()
        )
        m = max(c.demos for c in configs if c.seed_demos == with_seeds)
        out[with_seeds] = demos.nearest_many(
            [q.text for q in questions], m, [{q.group_id} for q in questions]
        )
    return out


@dataclass
class EvalItem:
    question: EvalQuestion
    demos: list[Any]
    key: str  # the configuration's fingerprint, part of the replay context


async def work_eval(client, ctx: Any, item: EvalItem) -> tuple[str, dict[str, Any]]:
    """One question answered once by the configuration in `ctx.settings`, scored against its gold."""
    q = item.question
    result, agent = await ctx.run_agent(
        client, q.text, run_index=0, context_key=f"eval:{item.key}:{q.id}", demos=item.demos
    )
    t = result.trajectory
    row = {
        **score(t, q.gold, q.acceptable, *_arg_rules(ctx.settings)),
        "seed_id": q.seed_id,
        "group_id": q.group_id,
        "status": t.status,
        "tokens": result.prompt_tokens + result.completion_tokens,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "latency_s": round(result.latency_s, 4),
        "calls": [c.canonical() for c in t.calls],
        "demos": [getattr(d, "question_id", "") for d in item.demos],
        "error": result.llm_errors[-1] if result.llm_errors else None,
        "agent": agent.as_dict(),
        "cost_usd": result.cost_usd,
    }
    return q.id, row


def _run_config(
    store: Store, eval_id: str, config: EvalConfig, endpoints: dict[str, list[str]], items: list[EvalItem]
) -> dict[str, dict[str, Any]]:
    """The configuration's questions through the pipeline's stage runner; rows are stored per chunk."""
    from magv.pipeline.base import AgentStage
    from magv.pipeline.runner import run_stage
    from magv.pipeline.session import local_session

    rows: dict[str, dict[str, Any]] = {}

    def write(store: Store, ctx: Any, results: list[tuple[str, dict[str, Any]]], report: Any) -> None:
        chunk = dict(results)
        report.written += store.add_eval_results(eval_id, config.name, chunk)
        report.done += len(chunk)
        rows.update(chunk)

    stage = AgentStage(f"eval {config.name}", lambda store, ctx: [], work_eval, write)
    with local_session(config.settings, store, endpoints, eval_id) as sess, _prompts(config.prompts_dir):
        run_stage(sess, stage, items=items)
    missing = [item.question.id for item in items if item.question.id not in rows]
    if missing:
        raise RunFailed(f"eval {config.name}: {len(missing)} questions failed; see the errors above")
    return rows


def run_evaluation(
    store: Store,
    domain,
    questions: Sequence[EvalQuestion],
    configs: Sequence[EvalConfig],
    *,
    source: str = "seeds",
    embedder: Any = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> EvalReport:
    """Evaluate each configuration (one or two) on the questions; store and return the results."""
    from magv.agents.contract import check_tools_run
    from magv.llm import managed_endpoints
    from magv.pipeline.worker import close_resources

    if not 1 <= len(configs) <= 2:
        raise ValueError("evaluate one configuration or compare two")
    for config in configs:
        check_tools_run(config.settings, domain)
    started = time.perf_counter()
    eval_id = make_id("eval", domain.name, source, str(utcnow()), length=12)
    report = EvalReport(eval_id=eval_id, domain=domain.name, source=source, questions=len(questions))
    if embedder is None and any(c.demos for c in configs):
        from magv.llm.embeddings import Embedder

        embedder = Embedder(configs[0].settings)
    picks = pick_demos(store, domain, questions, configs, embedder)
    results: list[dict[str, dict[str, Any]]] = []
    try:
        with ExitStack() as stack:
            for config in configs:
                # A second configuration on the same embedded server reuses the running one.
                endpoints = stack.enter_context(managed_endpoints(config.settings))
                chosen = picks.get(config.seed_demos, [[] for _ in questions])
                items = [
                    EvalItem(q, list(chosen[i][: config.demos]) if config.demos else [], config.fingerprint())
                    for i, q in enumerate(questions)
                ]
                rows = _run_config(store, eval_id, config, endpoints, items)
                results.append(rows)
                report.configs.append(
                    {
                        "name": config.name,
                        "demos": config.demos,
                        "seed_demos": config.seed_demos,
                        "model": config.settings.llm.role("responder")["model"],
                        "agent": next((r["agent"] for r in rows.values() if r.get("agent")), None),
                        "max_steps": config.settings.pipeline.max_steps,
                        "summary": summarize(list(rows.values())),
                    }
                )
    finally:
        close_resources()
    if len(results) == 2:
        report.comparison = compare(results[0], results[1], n_resamples=n_resamples, seed=seed)
    report.seconds = time.perf_counter() - started
    return report


# -- configurations -----------------------------------------------------------------------------

SPEC_KEYS = (
    "demos",
    "seed_demos",
    "model",
    "endpoint",
    "temperature",
    "max_steps",
    "max_tokens",
    "tool_mode",
    "prompts",
    "agent",
    "agent_url",
    "agent_version",
)


def parse_spec(spec: str, where: str = "--compare") -> list[tuple[str, str]]:
    """`demos=3,model=qwen` as [(key, value)]; `endpoint` may repeat."""
    pairs = []
    for part in spec.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not value.strip():
            raise BadInput(f"{where}: {part.strip()!r}: expected KEY=VALUE, e.g. demos=3")
        if key not in SPEC_KEYS:
            raise BadInput(f"{where}: {key!r}: unknown key; expected one of {', '.join(SPEC_KEYS)}")
        pairs.append((key, value.strip()))
    if not pairs:
        raise BadInput(f"{where}: empty; expected KEY=VALUE[,KEY=VALUE...], e.g. demos=3")
    return pairs


def configure(
    settings: Settings,
    name: str,
    *,
    seed_demos: bool = False,
    prompts_dir: Path | None = None,
    overrides: Sequence[tuple[str, str]] = (),
    where: str = "--compare",
) -> EvalConfig:
    """A configuration from settings plus `parse_spec` overrides; a bad value is a BadInput."""
    data = settings.model_dump(mode="json")
    responder = {k: v for k, v in (data["llm"]["roles"].get("responder") or {}).items() if v is not None}
    endpoints: list[str] = []
    for key, value in overrides:
        at = f"{where}: {key}={value}"
        if key in ("demos", "max_steps"):
            data["pipeline"][key] = _number(value, int, at)
        elif key == "max_tokens":
            responder[key] = _number(value, int, at)
        elif key == "temperature":
            responder[key] = _number(value, float, at)
        elif key in ("model", "tool_mode"):
            responder[key] = value
        elif key == "endpoint":
            endpoints.append(value)
        elif key == "seed_demos":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise BadInput(f"{at}: expected true or false")
            seed_demos = value.lower() in ("true", "1", "yes")
        elif key == "prompts":
            prompts_dir = Path(value)
        elif key in ("agent", "agent_url", "agent_version"):  # a user's agent: docs/agents.md
            data["responder"].update({"agent": None, "agent_url": None} if key != "agent_version" else {})
            if key == "agent":
                from magv.agents.external import resolve_spec

                value = resolve_spec(value)
            data["responder"][key] = value
    if endpoints:
        responder["endpoints"] = endpoints
    data["llm"]["roles"]["responder"] = responder
    check_prompt_folder(prompts_dir, ("responder",), f"{where}: prompts")
    try:
        built = settings_from_dict(data)
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None
    return EvalConfig(
        name=name,
        settings=built,
        seed_demos=seed_demos,
        prompts_dir=Path(prompts_dir) if prompts_dir else None,
    )


def _number(value: str, kind: type, where: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise BadInput(f"{where}: expected {'an integer' if kind is int else 'a number'}") from None
