"""`magv demo` (what `make demo` runs): the whole pipeline on the embedded model over the
`retail-demo` domain, then the LLM-judge baseline, the verifier's scores and the report, each stage
timed. Any stage that fails, or a verifier that could not be trained on both classes, stops the
demo with a message and a non-zero exit.

One llama.cpp server is started first and every command reuses it (and its prompt cache).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import typer

from magv.config import load_settings
from magv.errors import RunFailed
from magv.llm import liveness
from magv.llm.servers import LlamaServer
from magv.store import Store

# The demo's domain: retail with four seeds, two the default model answers right at temperature 0
# and two longer than the demo's max_steps (magv/domains/retail_demo), so both classes are there.
DEMO_DOMAIN = "magv.domains.retail_demo"
DEFAULT_ARGS = ["--targets", "4", "--per-target", "2", "--questions", "4", "--runs", "2", "--alternates", "1"]

MAGV = [sys.executable, "-c", "from magv.cli import entry; entry()"]
times: list[tuple[str, float]] = []
servers: list = []  # the demo's model server, checked between stages


def fail(stage: str, why: str) -> None:
    print(f"\ndemo: FAILED at {stage}: {why}", file=sys.stderr)
    show_times()
    sys.exit(1)


def show_times() -> None:
    if times:
        print("\ndemo wall time per stage:")
        for name, seconds in times:
            print(f"  {name:<22} {seconds:7.1f} s")
        print(f"  {'total':<22} {sum(s for _, s in times):7.1f} s")


def check_server() -> None:
    """Stop the demo, naming the model server, when it is gone: its exit code or signal and the last
    lines of its log when the demo started it, what its port says when it was already running."""
    for server in servers:
        try:
            server.check_alive()
        except RunFailed as exc:
            fail("model server", str(exc))
        if server.proc is None and liveness.probe(server.url).down:
            fail("model server", liveness.explain_down([server.url], None, server.log_path.parent))


def magv(stage: str, *args: str) -> dict:
    """Run one magv command with --json; its JSON result, or the demo stops."""
    check_server()
    print(f"\n== {stage}: magv {' '.join(args)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.run([*MAGV, *args, "--json"], stdout=subprocess.PIPE, text=True)
    times.append((stage, time.perf_counter() - started))
    if proc.returncode != 0:
        check_server()  # a dead model server is the cause to name, not what the command saw of it
        fail(stage, f"magv {args[0]} exited with code {proc.returncode} (its messages are above)")
    try:
        return json.loads(proc.stdout)
    except ValueError:
        fail(stage, f"magv {args[0]} printed no JSON result:\n{proc.stdout[-2000:]}")
    raise AssertionError("unreachable")


def main(run_args: list[str]) -> None:
    cfg = load_settings()
    server = LlamaServer(cfg)
    print(f"== model server: {cfg.llama.model if not cfg.llama.gguf else cfg.llama.gguf} at {server.url}")
    started = time.perf_counter()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any failure to start is the demo's failure
        fail("model server", str(exc))
    times.append(("model server", time.perf_counter() - started))
    servers[:] = [server]
    try:
        stages(cfg, run_args)
    finally:
        server.stop()
    show_times()


def stages(cfg, run_args: list[str]) -> None:
    result = magv("pipeline", "run", *run_args)
    for name, s in result.get("stages", {}).items():
        print(
            f"  {name:<18} planned {s.get('planned')}, done {s.get('done')}, failed {s.get('failed')}, "
            f"{s.get('seconds')} s"
        )
    quality = (result.get("summary") or {}).get("quality") or {}
    if quality.get("headline"):
        print(f"  dataset quality: {quality['headline']}")
    if result.get("status") not in (None, "completed"):
        fail("pipeline", f"pipeline status {result.get('status')!r}")
    with Store(cfg.database, read_only=True) as store:
        labels = store.effective_labels()
        model = store.latest_verifier_model()
    classes = {lab.correct for lab in labels.values()}
    correct = sum(lab.correct for lab in labels.values())
    print(f"  labels: {correct} correct, {len(labels) - correct} incorrect")
    if classes != {True, False}:
        fail("pipeline", f"the verifier needs both classes; labels: {correct} correct of {len(labels)}")
    if model is None:
        fail("pipeline", "no verifier was trained")
    judge = magv("judge", "verify", "judge")
    print(f"  judged {judge['judged']}: accuracy against the labels {judge['accuracy_vs_labels']}")
    if judge["judged"] and judge["unparsed"] == judge["judged"]:
        fail("judge", "no verdict of the judge could be read")
    score = magv("score", "verify", "score")
    print(f"  scored: {json.dumps(score)[:300]}")
    report = magv("report", "report")
    if report.get("missing"):
        fail("report", "sections missing: " + "; ".join(report["missing"]))
    print(f"\nreport: {report['report']}\ndatabase: {cfg.database}   (magv db info, magv llm stats)")


def run_arguments(given: list[str]) -> list[str]:
    """`magv run`'s arguments: the given ones, then each of the demo's own that they do not set."""

    def sets(flag: str) -> bool:
        return any(a == flag or a.startswith(flag + "=") for a in given)

    args = list(given)
    if not (sets("--domain") or "-d" in given):
        args = ["--domain", DEMO_DOMAIN, *args]
    for flag, value in zip(DEFAULT_ARGS[::2], DEFAULT_ARGS[1::2], strict=True):
        if not sets(flag):
            args += [flag, value]
    return args


def register(app: typer.Typer) -> None:
    @app.command(
        "demo",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def demo(ctx: typer.Context) -> None:
        """The whole job on the embedded defaults: pipeline, judge, scores and report, each stage timed.

        Extra arguments go to `magv run`, over the demo's own (the retail-demo domain, 4 targets x 2 questions, 4 kept, 2 runs, 1 alternate): `magv demo --agent my_pkg.bot:answer` runs your agent at the demo's size. Exits non-zero, naming the stage, if any stage fails or the verifier could not be trained on both classes.
        """  # noqa: E501 - one line per paragraph: the help text wraps it
        # Three steps: the demo's long targets (4 and 5 calls) are then incorrect by construction.
        os.environ.setdefault("MAGV_PIPELINE__MAX_STEPS", "3")
        # Temperature 0: the short targets' trajectories are the ones measured right.
        os.environ.setdefault("MAGV_LLM__TEMPERATURE", "0")
        Path("data").mkdir(exist_ok=True)
        main(run_arguments(list(ctx.args)))
