"""`magv verify features|label|train|score|judge|cascade|annotate` and `magv import trajectories`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer

from magv.commands.common import (
    AgentOpt,
    AgentUrlOpt,
    AgentVersionOpt,
    ErrorPatternOption,
    JsonOption,
    ReaskAlternatesOpt,
    ReaskBandOpt,
    ReaskMaxOpt,
    ReaskOpt,
    ToolsOption,
    agent_overrides,
    console,
    emit_json,
    err_console,
    nonempty,
    open_store,
    reask_line,
    reask_options,
    settings,
    table,
)
from magv.definitions import ARG_MODES, MATCH_MODES
from magv.errors import BadInput, Interrupted, RunFailed
from magv.jsonl import check_input_file
from magv.llm.embeddings import lazy_embedder

verify_app = typer.Typer(
    help="Verify trajectories: features, labels, classical models, LLM judge.", no_args_is_help=True
)
import_app = typer.Typer(help="Bring data produced elsewhere into the database.", no_args_is_help=True)


@verify_app.command("features")
def features(
    ctx: typer.Context,
    alternates: bool = typer.Option(
        True,
        "--alternates/--no-alternates",
        help="Compare with alternates' runs and embed texts for SS; --no-alternates: counts and agreement "
        "with sibling runs only, no embedding model.",
    ),
    replace: bool = typer.Option(False, "--replace", help="Recompute rows that are already stored."),
    mct_only: bool = typer.Option(
        False, "--mct-only", help="Only each question's most common trajectory (the paper's reading)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Compute a feature row for every run that has siblings or alternates (--mct-only: each MCT)."""
    from magv.verify.features import FEATURE_VERSION, compute_features

    cfg = settings(ctx)
    started = time.perf_counter()
    with open_store(cfg, existing=True) as store:
        written = compute_features(
            store, lazy_embedder(cfg), alternates=alternates, replace=replace, mct_only=mct_only
        )
        total = len(store.features(FEATURE_VERSION))
    out = {
        "written": written,
        "rows": total,
        "version": FEATURE_VERSION,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if as_json:
        emit_json(out)
    else:
        console.print(
            f"features v{FEATURE_VERSION}: {written} rows written, {total} stored ({out['seconds']} s)"
        )


@verify_app.command("label")
def label(
    ctx: typer.Context,
    mode: str = typer.Option(None, "--mode", help=f"Gold match: {' | '.join(MATCH_MODES)}."),
    arguments: bool = typer.Option(
        None, "--arguments/--no-arguments", help="Compare tool arguments too (default: settings)."
    ),
    args_mode: str = typer.Option(
        None,
        "--args-mode",
        help=f"Argument match: {' | '.join(ARG_MODES)} (overrides --arguments).",
    ),
    from_file: Path = typer.Option(
        None, "--from", help='JSONL of {"run_id" | "question_id": ..., "correct": true|false}: import labels.'
    ),
    as_json: bool = JsonOption,
) -> None:
    """Write gold labels (MCT vs target trajectory), or import labels from a file with --from."""
    from magv.verify.labels import gold_labels, read_label_file

    cfg = settings(ctx)
    mode = mode or cfg.verify.gold_match
    if mode not in MATCH_MODES:
        raise BadInput(f"--mode {mode}: expected one of {', '.join(MATCH_MODES)}")
    arguments = cfg.verify.gold_arguments if arguments is None else arguments
    if args_mode is not None:
        if args_mode not in ARG_MODES:
            raise BadInput(f"--args-mode {args_mode}: expected one of {', '.join(ARG_MODES)}")
        arguments = args_mode
    if from_file is not None:
        check_input_file(from_file, "label file")  # before the store is opened
    with open_store(cfg, existing=True) as store:
        if from_file is not None:
            labels = read_label_file(store, from_file)
            store.add_labels(labels)
            out = {"source": "import", "file": str(from_file)}
        else:
            gold_labels(store, mode, arguments, cfg.verify.gold_overrides, mct_only=cfg.verify.mct_only)
            labels = [lb for lb in store.labels() if lb.source == "gold"]
            out = {"source": "gold", "mode": mode, "arguments": arguments}
    correct = sum(lb.correct for lb in labels)
    out.update(written=len(labels), correct=correct, incorrect=len(labels) - correct)
    if as_json:
        emit_json(out)
    else:
        console.print(
            f"{out['source']} labels: {out['written']} written "
            f"({out['correct']} correct, {out['incorrect']} incorrect)"
        )


@verify_app.command("train")
def train(
    ctx: typer.Context,
    folds: int = typer.Option(
        None, "--folds", min=2, max=20, help="Cross-validation folds (default: settings)."
    ),
    seed: int = typer.Option(
        None, "--seed", min=0, max=2**32 - 1, help="Random seed (default: pipeline.seed)."
    ),
    select_by: str = typer.Option("roc_auc", "--select-by", help="Metric that picks the best model."),
    bootstrap: int = typer.Option(
        1000,
        "--bootstrap",
        min=0,
        max=100_000,
        help="Bootstrap replicates (over CV groups) for the intervals; 0: none.",
    ),
    ablation: bool = typer.Option(
        True, "--ablation/--no-ablation", help="Cross-validate the feature families."
    ),
    text: bool = typer.Option(
        None,
        "--text/--no-text",
        help="Also compare the text model over each run's calls and arguments, alone and stacked "
        "(default: verify.text).",
    ),
    objective: str = typer.Option(
        None,
        "--objective",
        help="How the saved model's threshold is chosen on out-of-fold predictions: fixed (verify.threshold), "
        "accuracy, balanced_accuracy or precision (the lowest reaching verify.target_precision on correct); "
        "default: verify.threshold_objective.",
    ),
    repeats: int = typer.Option(
        3,
        "--repeats",
        min=0,
        max=50,
        help="CV seeds the nested selection (model and threshold chosen inside each training fold) is "
        "repeated over, beside the baselines; 0: none.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Cross-validate the five models and the text models (grouped CV) beside the baselines
    (majority, agreement, write agreement, TF-IDF) and the judge; measure the selection nested in
    the folds over several seeds; refit, calibrate and save the best."""
    from magv.pipeline import verifier
    from magv.verify.models import METRICS
    from magv.verify.selection import OBJECTIVES
    from magv.verify.training import check_models_dir, check_seed

    if select_by not in METRICS:
        raise BadInput(f"--select-by {select_by}: expected one of {', '.join(METRICS)}")
    if objective is not None and objective not in ("fixed", *OBJECTIVES):
        raise BadInput(f"--objective {objective}: expected one of fixed, {', '.join(OBJECTIVES)}")
    cfg = settings(ctx)
    check_seed(cfg.pipeline.seed if seed is None else seed)  # before the store is opened
    check_models_dir(Path(cfg.verify.models_dir))
    with open_store(cfg, existing=True) as store:
        result = verifier.train(
            store,
            cfg,
            folds=folds,
            seed=seed,
            select_by=select_by,
            bootstrap=bootstrap,
            ablation=ablation,
            text=text,
            objective=objective,
            repeats=repeats,
        ).result
    summary = result.summary()
    if as_json:
        emit_json(summary)
        return
    print_evaluation(summary)
    console.print(
        f"saved {result.best} (calibrated: {result.calibrated}) as model {result.model_id}: {result.path}"
    )


def print_evaluation(summary: dict) -> None:
    """The tables of `magv verify train` (and bench/verifier_quality.py): models and baselines with
    95 % intervals, the judges on their rows, the differences, the ablation."""
    from magv.verify.evaluation import summary_tables

    for title, rows in summary_tables(summary):
        table(title, rows)


# The cascade's curve as both the live and the simulated cascade print it.
CURVE_COLUMNS = (
    "step",
    "decided",
    "coverage",
    "accuracy",
    "accuracy_all",
    "tokens_per_1000",
    "calls_per_1000",
    "share_of_judge_everything",
)


def print_simulated_cascade(out: dict) -> None:
    """The tables of `magv verify cascade --simulate` (and bench/verifier_quality.py): the curve,
    each step deciding alone, what judging everything would cost and where each cost came from."""
    table(
        f"simulated cascade on {out['rows']} labelled trajectories (out-of-fold, per 1,000 trajectories, "
        "cumulative)",
        out["curve"]["points"],
        CURVE_COLUMNS,
    )
    table("each step alone (accuracy)", [out["single"]])
    judge_all = out["curve"]["judge_everything_tokens_per_1000"]
    console.print(
        f"  judge everything: {'unknown' if judge_all is None else f'{judge_all:g}'} tokens per 1,000; "
        f"the cascade spends {_share(out['curve']['share_of_judge_everything'])} of it",
        highlight=False,
        markup=False,
    )
    reverse, judge = out["costs"]["reverse_call"], out["costs"]["judge_verdict"]
    console.print(
        f"  reverse-engineer call: {reverse['prompt_tokens']:g} + {reverse['completion_tokens']:g} "
        f"tokens ({reverse['source']})",
        highlight=False,
        markup=False,
    )
    console.print(
        f"  judge verdict: {judge['tokens_per_verdict'] or 0:g} tokens ({judge['source']})",
        highlight=False,
        markup=False,
    )
    alt = out["costs"].get("alternates")
    if alt is not None:
        console.print(
            f"  alternates: {alt['tokens_per_question']:g} tokens a question; "
            + ("run for the undecided" if alt["run"] else "skipped, a verdict costs less"),
            highlight=False,
            markup=False,
        )


def _share(value: float | None) -> str:
    return "an unknown share" if value is None else f"{value:.1%}"


@verify_app.command("score")
def score(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model", help="Verifier model id (default: the latest trained)."),
    threshold: float = typer.Option(None, "--threshold", min=0.0, max=1.0, help="Verdict threshold."),
    model_file: Path = typer.Option(
        None,
        "--model-file",
        help="Load the model from this file instead of its registered path "
        "(needed when that path is outside verify.models_dir).",
    ),
    fail_under: float = typer.Option(
        None,
        "--fail-under",
        min=0.0,
        max=1.0,
        metavar="SHARE",
        help="CI gate: exit 1 when the share of scored trajectories verified correct is below SHARE.",
    ),
    input_file: str = typer.Option(
        None,
        "--input",
        metavar="FILE",
        help="Score the trajectories of this JSONL file (import format; - for stdin) instead of the "
        "database's; no database is opened with --model-file.",
    ),
    output_file: str = typer.Option(
        None,
        "--output",
        metavar="FILE",
        help="With --input: write one verdict line per input line here (- or default: stdout).",
    ),
    domain: str = typer.Option(
        None, "--domain", "-d", help="With --input: the domain whose write tools the features compare."
    ),
    tools_file: Path = ToolsOption,
    error_pattern: str = ErrorPatternOption,
    reask: int = ReaskOpt,
    reask_band: str = ReaskBandOpt,
    reask_max: int = ReaskMaxOpt,
    reask_alternates: int = ReaskAlternatesOpt,
    agent: str = AgentOpt,
    agent_url: str = AgentUrlOpt,
    agent_version: str = AgentVersionOpt,
    as_json: bool = JsonOption,
) -> None:
    """Score every trajectory with features: probability, verdict and top feature contributions.

    With --input and --reask N, your agent (--agent / --agent-url) is asked each chosen conversation's
    question N more times, and the conversation is scored again with those runs as its siblings."""
    from magv.verify.scoring import score as score_store

    cfg = settings(ctx, **agent_overrides(agent, agent_url, agent_version))
    nonempty("--domain", domain)
    nonempty("--model", model)
    if input_file is None:
        if (
            output_file is not None
            or domain is not None
            or tools_file is not None
            or error_pattern is not None
            or reask is not None
        ):
            raise BadInput(
                "--output, --domain, --tools, --tool-error-pattern and --reask go with --input FILE (trajectories "
                "to score from a file)"
            )
        with open_store(cfg, existing=True) as store:
            r = score_store(store, cfg, model_id=model, threshold=threshold, model_file=model_file)
        n, n_correct, seconds = r.n, r.n_correct, r.seconds
        out = {
            "model_id": r.model_id,
            "model": r.model_name,
            "scored": r.n,
            "correct": r.n_correct,
            "threshold": r.threshold,
            "seconds": {k: round(v, 4) for k, v in r.seconds.items()},
        }
    else:
        from magv.service.files import score_file

        r = score_file(
            cfg,
            input_file,
            output_file or "-",
            model_file=model_file,
            model_id=model,
            threshold=threshold,
            domain=domain,
            tools_file=tools_file,
            error_pattern=error_pattern,
            reask=reask_options(reask, reask_band, reask_max, reask_alternates, cfg),
        )
        n, n_correct, seconds = r["scored"], r["correct"], r["seconds"]
        out = r
    if as_json and (input_file is None or (output_file or "-") != "-"):
        emit_json(out)
    elif input_file is None:
        console.print(
            f"{n} trajectories scored with {out['model']} ({out['model_id']}): {n_correct} correct "
            f"at threshold {out['threshold']:g}; predict {seconds['predict']:.3f} s"
        )
    else:
        err_console.print(
            f"{n} trajectories of {input_file} scored with {out['model']} ({out['model_id']}): "
            f"{n_correct} correct at threshold {out['threshold']:g}; verdicts: {out['output']}",
            highlight=False,
        )
        if "reask" in out:
            err_console.print(reask_line(out["reask"]), highlight=False)
    if fail_under is not None:
        from magv.gate import enforce, shortfalls

        bars = {"verified": fail_under}
        fell = shortfalls(
            {"verified": n_correct / n if n else None}, bars, details={"verified": f"{n_correct}/{n}"}
        )
        enforce(fell, bars, "verify score", lambda line: err_console.print(line, highlight=False))


@verify_app.command("judge")
def judge(
    ctx: typer.Context,
    limit: int = typer.Option(None, "--limit", min=1, help="Judge at most this many trajectories."),
    as_json: bool = JsonOption,
) -> None:
    """The LLM-judge baseline: ask the judge model about every verified trajectory not yet judged."""
    from magv.agents.judge import split_failures
    from magv.llm import managed_endpoints
    from magv.models import make_id, utcnow
    from magv.pipeline import judge as stage
    from magv.pipeline.runner import run_stage
    from magv.pipeline.session import local_session
    from magv.pipeline.worker import WorkerContext, close_resources

    cfg = settings(ctx)
    role = cfg.llm.role("judge")
    started = time.perf_counter()
    verdicts: list = []
    failed: list = []

    def keep(store, ctx, results, report) -> None:
        stage.write(store, ctx, results, report)
        done, lost = split_failures(results)
        verdicts.extend(done)
        failed.extend(lost)

    with open_store(cfg, existing=True) as store:
        items = stage.plan(store, WorkerContext(cfg), limit)
        if items:
            try:
                with managed_endpoints(cfg) as endpoints:
                    run_id = make_id("judge", cfg.domain, str(utcnow()))
                    with local_session(cfg, store, endpoints, run_id) as sess:
                        run_stage(sess, stage.STAGE, items=items, write=keep)
            finally:
                close_resources()
        labels = store.effective_labels()
    scored = [v for v in verdicts if v.correct is not None and v.run_id in labels]
    out = {
        "model": role["model"],
        "judged": len(verdicts),
        "correct": sum(v.correct is True for v in verdicts),
        "incorrect": sum(v.correct is False for v in verdicts),
        "unparsed": sum(v.correct is None for v in verdicts),
        "llm_errors": len(failed),
        "prompt_tokens": sum(v.prompt_tokens for v in verdicts),
        "completion_tokens": sum(v.completion_tokens for v in verdicts),
        "latency_s": round(sum(v.latency_s for v in verdicts), 3),
        "accuracy_vs_labels": (sum(v.correct == labels[v.run_id].correct for v in scored) / len(scored))
        if scored
        else None,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if as_json:
        emit_json(out)
    else:
        table(f"LLM judge {out['model']}", [out], [k for k in out if k != "model"])
    if failed:
        raise RunFailed(
            f"{len(failed)} of {len(failed) + len(verdicts)} judgements failed on the LLM (first: "
            f"{failed[0].error}); {len(verdicts)} verdicts saved; rerun `magv verify judge` to retry the rest"
        )


@verify_app.command("cascade")
def cascade(
    ctx: typer.Context,
    max_judge_share: float = typer.Option(
        0.2,
        "--max-judge-share",
        min=0.0,
        max=1.0,
        help="At most this share of the trajectories goes to the judge.",
    ),
    max_llm_tokens: int = typer.Option(
        None,
        "--max-llm-tokens",
        min=0,
        help="At most this many LLM tokens (prompt + completion) this invocation.",
    ),
    margin: float = typer.Option(
        0.25, "--margin", min=0.0, max=0.5, help="The verifier decides when |p - threshold| >= margin."
    ),
    rule_confidence: float = typer.Option(
        0.9,
        "--rule-confidence",
        min=0.5,
        max=1.0,
        help="An agreement rule decides when its smoothed precision on labelled rows is at least this.",
    ),
    threshold: float = typer.Option(None, "--threshold", min=0.0, max=1.0, help="Verdict threshold."),
    alternates: bool = typer.Option(
        True, "--alternates/--no-alternates", help="Reverse-engineer alternates for uncertain trajectories."
    ),
    use_judge: bool = typer.Option(True, "--judge/--no-judge", help="Ask the LLM judge about what is left."),
    simulate: bool = typer.Option(
        False,
        "--simulate",
        help="Replay the cascade offline on labelled trajectories (out-of-fold scores, stored alternates and "
        "judge verdicts); calls no model and stores nothing.",
    ),
    reask: int = typer.Option(
        None,
        "--reask",
        min=1,
        max=20,
        metavar="N",
        help="First ask your agent (--agent / --agent-url) each lone imported conversation's question N more "
        "times, store the runs as its siblings and score it with them; imported conversations then join the cascade.",
    ),
    reask_max: int = ReaskMaxOpt,
    agent: str = AgentOpt,
    agent_url: str = AgentUrlOpt,
    agent_version: str = AgentVersionOpt,
    as_json: bool = JsonOption,
) -> None:
    """Decide each trajectory by the cheapest confident step: agreement, verifier, alternates, judge, human."""
    from contextlib import contextmanager

    from magv.cascade.loop import CascadeOptions
    from magv.llm import managed_endpoints
    from magv.models import make_id, utcnow
    from magv.pipeline.session import local_session
    from magv.pipeline.worker import close_resources

    cfg = settings(ctx, **agent_overrides(agent, agent_url, agent_version))
    options = CascadeOptions(
        max_judge_share=max_judge_share,
        max_llm_tokens=max_llm_tokens,
        margin=margin,
        rule_confidence=rule_confidence,
        threshold=threshold,
        alternates=alternates,
        judge=use_judge,
        reask=reask or 0,
        reask_max=reask_max,
    )
    options.check()
    if reask is not None:
        if simulate:
            raise BadInput("--reask asks your agent: it does not go with --simulate")
        from magv.pipeline.reask import check_agent

        check_agent(cfg)
    if simulate:
        from magv.cascade.replay import simulate as replay

        with open_store(cfg, read_only=True, existing=True) as store:
            out = replay(
                store,
                options,
                default_threshold=cfg.verify.threshold,
                seed=cfg.pipeline.seed,
                folds=cfg.verify.cv_folds,
            )
        if as_json or "curve" not in out:
            emit_json(out)
            return
        print_simulated_cascade(out)
        return
    from magv.cascade.live import run as run_cascade

    run_id = make_id("cascade", cfg.domain, str(utcnow()))
    with open_store(cfg, existing=True) as store:

        @contextmanager
        def connect():  # the model endpoints, started only when an LLM step has rows to decide
            try:
                with (
                    managed_endpoints(cfg) as endpoints,
                    local_session(cfg, store, endpoints, run_id) as sess,
                ):
                    yield sess
            finally:
                close_resources()

        with local_session(cfg, store, {}, run_id) as sess:
            out = run_cascade(sess, options, connect).result
    if as_json:
        emit_json(out)
        return
    if "reask" in out:
        r = out["reask"]
        console.print(
            f"re-asked your agent about {r['questions']} lone imported conversations: {r['runs']} runs, "
            f"{r['failed']} failed; {r['prompt_tokens'] + r['completion_tokens']} tokens"
        )
    console.print(
        f"cascade over {out['trajectories']} trajectories ({out['pending_at_start']} undecided at the "
        f"start): {out['queued_for_human']} left for a human; {out['tokens_spent']} LLM tokens"
    )
    table(
        "accuracy against cost (per 1,000 trajectories, cumulative)",
        out["curve"]["points"],
        CURVE_COLUMNS,
    )
    for note in out["budget_stops"] + out["notes"]:
        console.print(f"  {note}", highlight=False, markup=False)


@verify_app.command("annotate")
def annotate(
    ctx: typer.Context,
    limit: int = typer.Option(None, "--limit", min=1, help="Stop after this many trajectories."),
    annotator: str = typer.Option("human", "--annotator", help="Name stored with the labels."),
    uncertain: bool = typer.Option(
        False,
        "--uncertain",
        help="The cascade's human queue first, then the rest; each by the verifier's uncertainty "
        "(|p - threshold|), round-robin over question groups.",
    ),
) -> None:
    """Label verified trajectories by hand (c/i/s/q); resumes where the last session stopped."""
    from magv.verify.active import uncertain_annotations
    from magv.verify.labels import KEYS, describe, pending_annotations
    from magv.verify.labels import annotate as run_session

    cfg = settings(ctx)

    def ask(item, n: int, total: int) -> str | None:
        console.rule(f"{n}/{total}  run {item.run.id}")
        console.print(describe(item), highlight=False, markup=False)
        while True:
            console.print("[c]orrect / [i]ncorrect / [s]kip / [q]uit: ", end="", markup=False, style="bold")
            line = sys.stdin.readline()
            if not line:
                console.print()
                return None
            key = line.strip().lower()[:1]
            if key in KEYS:
                return key
            console.print(f"unknown key {line.strip()!r}; expected c, i, s or q")

    with open_store(cfg, existing=True) as store:
        items = uncertain_annotations(store, limit) if uncertain else pending_annotations(store, limit)
        if not items:
            console.print("nothing to annotate: every verified trajectory has a human label")
            return
        counts = run_session(store, items, ask, annotator)
    console.print(
        f"saved {counts['correct']} correct, {counts['incorrect']} incorrect; "
        f"skipped {counts['skipped']}; {counts['remaining']} left for next time"
    )


@import_app.command("trajectories")
def import_trajectories(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="JSONL: one trajectory per line (see docs/export.md)."),
    domain: str = typer.Option(
        None, "--domain", "-d", help="Domain the questions belong to (default: imported)."
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Refuse what would be normalised (reused or missing call ids, calls without result...).",
    ),
    replace: bool = typer.Option(
        False,
        "--replace",
        help="Replace stored runs whose content differs (with their labels and derived rows).",
    ),
    mode: str = typer.Option(None, "--mode", help=f"Match of a line's reference: {' | '.join(MATCH_MODES)}."),
    args_mode: str = typer.Option(
        None, "--args-mode", help=f"Argument match of a reference: {' | '.join(ARG_MODES)}."
    ),
    tools_file: Path = ToolsOption,
    error_pattern: str = ErrorPatternOption,
    as_json: bool = JsonOption,
) -> None:
    """Import trajectories (OpenAI or LangChain chat messages) from JSONL; checked whole before writing."""
    from magv.interchange import read_import_file
    from magv.messages import FORMS, REPAIRS, Notes
    from magv.verify.importer import DEFAULT_DOMAIN, import_lines
    from magv.verify.toolspec import log_tools

    cfg = settings(ctx)
    nonempty("--domain", domain)
    tools = log_tools(domain or DEFAULT_DOMAIN, tools_file, error_pattern)
    arguments = args_mode or (
        cfg.verify.gold_arguments if isinstance(cfg.verify.gold_arguments, str) else "exact"
    )
    notes = Notes(strict)
    # checked whole before the store is opened: bad input creates no database
    lines = read_import_file(file, notes, tools.errors)
    try:
        with open_store(cfg) as store:
            r = import_lines(
                store,
                lines,
                file,
                DEFAULT_DOMAIN if domain is None else domain,
                notes=notes,
                replace=replace,
                match_mode=mode or cfg.verify.gold_match,
                arguments=arguments,
                overrides=dict(cfg.verify.gold_overrides),
                tools=tools,
            )
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: nothing of {file} was saved (an import is written in one transaction); "
            "run the same command again"
        ) from None
    out = {"file": str(file), **r.as_dict()}
    if as_json:
        emit_json(out)
        return
    alternates = f", {r.alternates} of them alternates" if r.alternates else ""
    console.print(
        f"imported {r.runs} runs of {len(set(r.question_ids.values()))} questions ({r.questions} new"
        f"{alternates}), "
        f"{r.labels} labels ({r.reference_labels} from references); {r.skipped_runs} runs were "
        f"already stored, {r.replaced_runs} replaced"
    )
    for kind, n in r.normalised.items():
        what = REPAIRS.get(kind) or FORMS.get(kind, kind)
        first = f" (first: {r.first_seen[kind]})" if kind in REPAIRS and kind in r.first_seen else ""
        console.print(f"  {n} x {what}{first}", highlight=False, markup=False)
    console.print(f"  {tools_line(r.tools)}", highlight=False, markup=False)


def tools_line(t: dict[str, Any]) -> str:
    """One line of a summary on the tools of a file's calls (`LogTools.summary`)."""
    if not t["known"]:
        return (
            f"tools: {t['called']} called, none known (no --tools spec or domain): calls that change data "
            "cannot be told apart, the write features carry nothing"
        )
    return (
        f"tools: {t['called']} called, {t['called_known']} of them known ({t['source']}), "
        f"{t['called_writes']} of them write ({t['writes']} write tools known)"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(verify_app, name="verify")
    app.add_typer(import_app, name="import")
