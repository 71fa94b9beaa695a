"""A labelled development dataset from the real embedded model (not scripted agents).

Runs the magv pipeline with the embedded instruct model over the built-in domains (retail and
logs) in rounds, labels every base run against its target (gold), asks the same model's LLM
judge about every verified trajectory, and exports the result in magv's own JSONL:

    data/fixtures/real_dataset.jsonl   `magv export --format jsonl` of each domain's store: every
                                       base run with its gold label and, on the MCT, the judge's
                                       verdict; every alternate run (`meta.origin` "alternate",
                                       `meta.parent_question_id` naming its base question)
    data/fixtures/real_dataset.json    provenance: commands, model and GGUF hash, magv version
                                       and commit, date, counts, wall time, and the mean
                                       reverse-engineer call of each store (`reverse_call`: the
                                       export carries no call log, the cascade's replay needs it)

The stores live outside the work tree (`--store-dir`, default ~/.cache/magv/real-dataset), one
per domain, so the dataset grows over several invocations: round r uses more seed targets
(`--targets-step` more each round) and, once every seed is a target, a new `pipeline.seed`, which
makes the investigator write new questions; `--questions` grows with it. Each round is a plain
`magv run`: what a round finished is kept in the store and replayed, so an interrupted round is
continued, not redone. The last finished round is kept in `<store-dir>/state.json`.

It stops when `--target-labels` base runs carry gold labels or `--max-minutes` have passed (the
command running then is interrupted; its finished work is kept), and always exports what is there.

    python bench/make_real_dataset.py [--target-labels 150 --max-minutes 60 --store-dir DIR]
    python bench/make_real_dataset.py --export-only   # the files again from the stores, no model
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DOMAINS = ("retail", "logs")
MODEL = "qwen2.5-coder-1.5b-instruct"
MAGV = [sys.executable, "-c", "from magv.cli import entry; entry()"]
# Settings every command runs with: the instruct model, JSON tool calls, and a temperature above 0
# so that the R runs of a question can differ (agreement among them is what the verifier reads).
SETTINGS_ENV = {
    "MAGV_LLM__MODEL": MODEL,
    "MAGV_LLAMA__MODEL": MODEL,
    "MAGV_LLM__TOOL_MODE": "json",
    "MAGV_LLM__TEMPERATURE": "0.7",
}
STOP_GRACE_S = 60


class TimeUp(Exception):
    pass


class CommandFailed(Exception):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Runner:
    """Runs magv commands in subprocesses against one model server, under one deadline; records
    every command line for the provenance file."""

    def __init__(self, store_dir: Path, env: dict[str, str], deadline: float):
        self.store_dir = store_dir
        self.env = env
        self.deadline = deadline
        self.commands: list[str] = []

    def db(self, domain: str) -> Path:
        return self.store_dir / f"{domain}.duckdb"

    def magv(
        self, domain: str, *args: str, extra_env: dict[str, str] | None = None, timed: bool = True
    ) -> dict:
        cmd = ["magv", "--database", str(self.db(domain)), *args, "--json"]
        shown = " ".join(f"{k}={v}" for k, v in (extra_env or {}).items())
        self.commands.append(f"{shown} {' '.join(cmd)}".strip())
        print(f"\n== {self.commands[-1]}", flush=True)
        left = self.deadline - time.monotonic()
        if timed and left <= 0:
            raise TimeUp()
        proc = subprocess.Popen(
            [*MAGV, *cmd[1:]], stdout=subprocess.PIPE, text=True, cwd=self.store_dir,
            env={**self.env, **(extra_env or {})},
        )  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=left if timed else None)
        except subprocess.TimeoutExpired:
            # Ctrl-C: the stage writes what finished; a rerun continues from there.
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            print(f"   stopped by --max-minutes: {cmd[3]} of {domain} interrupted", flush=True)
            raise TimeUp() from None
        if proc.returncode != 0:
            raise CommandFailed(f"`{' '.join(cmd)}` exited with code {proc.returncode}")
        try:
            return json.loads(out)
        except ValueError:
            raise SystemExit(
                f"make_real_dataset: `{' '.join(cmd)}` printed no JSON:\n{out[-2000:]}"
            ) from None


def round_args(round_no: int, n_seeds: int, step: int, per_target: int) -> tuple[list[str], dict[str, str]]:
    """`magv run` arguments of round `round_no`: `step` more seed targets each round until every
    seed is one, then a new pipeline.seed per round (new investigator questions for every target).
    Half of what the investigator writes is kept, so --questions grows with the targets."""
    targets = min(n_seeds, step * (round_no + 1))
    full_at = math.ceil(n_seeds / step) - 1  # the first round that uses every seed
    seed = max(0, round_no - full_at)
    kept = max(1, targets * per_target // 2) * (seed + 1)
    args = ["--targets", str(targets), "--per-target", str(per_target), "--questions", str(kept)]
    return args, {"MAGV_PIPELINE__SEED": str(seed)}


def n_seeds(domain: str) -> int:
    from magv.domains.loader import load_domain

    return len(load_domain(domain).seeds())


def labelled_base_runs(db: Path) -> int:
    from magv.store import Store

    if not db.exists():
        return 0
    with Store(db, read_only=True) as store:
        base = {q.id for q in store.questions(origin=("seed", "investigator"))}
        runs = {r.id for r in store.runs(question_ids=list(base))} if base else set()
        return sum(1 for run_id in store.effective_labels() if run_id in runs)


def counts(path: Path) -> dict[str, Any]:
    """The counts of the provenance file, read back from the exported file."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]
    rows = [r for r in lines if r["meta"].get("origin") != "alternate"]
    alts = [r for r in lines if r["meta"].get("origin") == "alternate"]
    per_domain: dict[str, dict[str, int]] = {}
    judged = judged_right = 0
    runs_per_question: dict[str, int] = {}
    for row in rows:
        meta = row["meta"]
        d = per_domain.setdefault(meta["domain"], {"base_runs": 0, "labelled": 0, "correct": 0, "incorrect": 0,
                                                   "judged": 0, "judge_agrees_with_gold": 0})  # fmt: skip
        d["base_runs"] += 1
        runs_per_question[row["question_id"]] = runs_per_question.get(row["question_id"], 0) + 1
        if row["label"] is not None:
            d["labelled"] += 1
            d["correct" if row["label"] else "incorrect"] += 1
        if meta.get("judge_correct") is not None:
            d["judged"] += 1
            judged += 1
            if row["label"] is not None and meta["judge_correct"] == row["label"]:
                d["judge_agrees_with_gold"] += 1
                judged_right += 1
    judged_labelled = sum(
        1 for r in rows if r["meta"].get("judge_correct") is not None and r["label"] is not None
    )
    return {
        "base_questions": len(runs_per_question),
        "base_runs": len(rows),
        "labelled": sum(d["labelled"] for d in per_domain.values()),
        "correct": sum(d["correct"] for d in per_domain.values()),
        "incorrect": sum(d["incorrect"] for d in per_domain.values()),
        "min_runs_per_question": min(runs_per_question.values(), default=0),
        "alternate_questions": len({a["question_id"] for a in alts}),
        "alternate_runs": len(alts),
        "judged": judged,
        "judge_accuracy_vs_gold": round(judged_right / judged_labelled, 4) if judged_labelled else None,
        "per_domain": per_domain,
    }


def reverse_calls(dbs: dict[str, Path]) -> dict[str, Any]:
    """The mean reverse-engineer call (prompt and completion tokens, over `calls`) of each domain's
    store, and over all of them (weighted by calls; None without any)."""
    from magv.cascade.replay import reverse_call_cost
    from magv.store import Store

    per_domain: dict[str, Any] = {}
    for domain, db in dbs.items():
        if db.exists():
            with Store(db, read_only=True) as store:
                per_domain[domain] = reverse_call_cost(store)
    known = [c for c in per_domain.values() if c is not None]
    calls = sum(c["calls"] for c in known)
    mean = {
        k: round(sum(c[k] * c["calls"] for c in known) / calls, 1) if calls else None
        for k in ("prompt_tokens", "completion_tokens")
    }
    return {**mean, "calls": calls, "per_domain": per_domain}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--target-labels", type=int, default=150, help="stop when this many base runs are labelled"
    )
    ap.add_argument(
        "--max-minutes", type=float, default=60.0, help="stop generating after this long, then export"
    )
    ap.add_argument("--store-dir", type=Path, default=Path.home() / ".cache" / "magv" / "real-dataset")
    ap.add_argument("--out-dir", type=Path, default=REPO / "data" / "fixtures")
    ap.add_argument("--domains", default=",".join(DOMAINS))
    ap.add_argument("--runs", type=int, default=2, help="responder runs per base question (R)")
    ap.add_argument("--alternates", type=int, default=1, help="alternate questions per question (k)")
    ap.add_argument("--targets-step", type=int, default=2, help="seed targets added per round")
    ap.add_argument("--per-target", type=int, default=2, help="questions the investigator writes per target")
    ap.add_argument("--max-rounds", type=int, default=1000)
    ap.add_argument("--export-only", action="store_true",
                    help="no model: write the files again from the stores (e.g. after a change of the export)")  # fmt: skip
    ap.add_argument("--no-judge", action="store_true",
                    help="no judge pass: the time goes to generation (the file then has no judge verdicts)")  # fmt: skip
    ap.add_argument("--judge-reserve", type=float, default=0.12,
                    help="share of --max-minutes kept for a last judge pass")  # fmt: skip
    a = ap.parse_args(argv)
    if a.runs < 2:
        ap.error("--runs: R >= 2 is needed (agreement among runs is what the verifier reads)")
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    commit = git_commit()  # the code that runs: read before the tree can change under a long run
    deadline = started + a.max_minutes * 60
    domains = [d for d in a.domains.split(",") if d]
    store_dir = a.store_dir.expanduser().resolve()
    store_dir.mkdir(parents=True, exist_ok=True)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGV_")}
    env.update(SETTINGS_ENV, MAGV_LLAMA__PORT=str(port))
    os.environ.update(SETTINGS_ENV, MAGV_LLAMA__PORT=str(port))
    from magv.config import load_settings
    from magv.gguf.registry import get_model

    cfg = load_settings()
    spec = get_model(cfg.llama.model)
    # the last share of the time judges what an interrupted round left unjudged
    reserve = 0.0 if a.no_judge else a.judge_reserve * a.max_minutes * 60
    runner = Runner(store_dir, env, deadline - reserve)
    state_path = store_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    seeds = {d: n_seeds(d) for d in domains}
    if a.export_only:
        stopped = "--export-only: no generation"
    else:
        stopped, state = grow(
            a, cfg, spec, port, runner, state, state_path, domains, seeds, store_dir, deadline
        )
    export_and_record(a, argv, runner, state, state_path, domains, store_dir, started, started_at, commit,
                      spec, stopped)  # fmt: skip


def grow(
    a, cfg, spec, port, runner, state, state_path, domains, seeds, store_dir, deadline
) -> tuple[str, dict]:
    """Rounds of generation, labels and judging until the target or the deadline: why it stopped,
    and the state to keep."""
    from magv.llm.servers import LlamaServer

    stopped = "target labels reached"
    server = LlamaServer(cfg, log_path=store_dir / "logs" / "llama-server.log")
    print(f"== model server: {spec.name} on port {port}", flush=True)
    server.start()
    try:
        labelled = sum(labelled_base_runs(runner.db(d)) for d in domains)
        try:
            for round_no in range(state.get("next_round", 0), a.max_rounds):
                if labelled >= a.target_labels:
                    break
                for d in domains:
                    args, extra = round_args(round_no, seeds[d], a.targets_step, a.per_target)
                    run = ["run", "--domain", d, *args, "--runs", str(a.runs), "--alternates", str(a.alternates),
                           "--no-verify"]  # fmt: skip
                    try:
                        runner.magv(d, *run, extra_env=extra)
                    except CommandFailed as exc:
                        # a stage that failed (e.g. model timeouts) is redone by a rerun: try once more
                        print(f"make_real_dataset: {exc}; running it again", file=sys.stderr)
                        runner.magv(d, *run, extra_env=extra)
                    runner.magv(d, "verify", "label", timed=False)
                    if not a.no_judge:
                        runner.magv(d, "verify", "judge")
                labelled = sum(labelled_base_runs(runner.db(d)) for d in domains)
                state = {**state, "next_round": round_no + 1, "labelled": labelled}
                state_path.write_text(json.dumps(state))
                print(f"   round {round_no} done: {labelled} labelled base runs", flush=True)
            else:
                stopped = "--max-rounds reached"
        except TimeUp:
            stopped = "--max-minutes reached"
        except CommandFailed as exc:
            # what finished is in the store and is exported; the provenance says the run failed
            stopped = f"failed: {exc}"
            print(f"make_real_dataset: {stopped}", file=sys.stderr)
        # an interrupted round may have stored runs after the last labelling and judging
        runner.deadline = deadline
        for d in domains:
            if runner.db(d).exists():
                runner.magv(d, "verify", "label", timed=False)
        try:
            for d in domains:
                if runner.db(d).exists() and not a.no_judge:
                    runner.magv(d, "verify", "judge")
        except TimeUp:
            pass
        except CommandFailed as exc:
            stopped += f"; the last judge pass failed: {exc}"
    finally:
        server.stop()
    return stopped, state


def export_and_record(a, argv, runner, state, state_path, domains, store_dir, started, started_at, commit,
                      spec, stopped) -> None:  # fmt: skip
    from magv import __version__

    out_dir = a.out_dir.resolve()
    export_dir = store_dir / "export"
    parts = []
    for d in domains:
        if runner.db(d).exists():
            path = export_dir / f"{d}.jsonl"
            runner.magv(d, "export", "--format", "jsonl", "--out", str(path), "--force", timed=False)
            parts.append(path)
    base_path = out_dir / "real_dataset.jsonl"
    from magv.outputs import atomic_output

    with atomic_output(base_path) as tmp:
        tmp.write_text("".join(p.read_text(encoding="utf-8") for p in parts), encoding="utf-8")
    (out_dir / "real_dataset.alternates.jsonl").unlink(missing_ok=True)  # older versions' second file

    wall = round(time.monotonic() - started, 1)
    state["wall_time_total_s"] = round(state.get("wall_time_total_s", 0.0) + wall, 1)
    invocation = " ".join(["python", "bench/make_real_dataset.py", *(sys.argv[1:] if argv is None else argv)])
    # every invocation that grew the stores, so a dataset made over several sessions says how
    state["invocations"] = [*state.get("invocations", []), {
        "invocation": invocation, "started_at": started_at.isoformat(timespec="seconds"),
        "wall_time_s": wall, "stopped": stopped, "magv_commit": commit, "commands": runner.commands,
    }]  # fmt: skip
    state_path.write_text(json.dumps(state, indent=1))
    provenance = {
        "script": "bench/make_real_dataset.py",
        "invocation": invocation,
        "commands": runner.commands,
        "earlier_invocations": state["invocations"][:-1],
        "settings": {**SETTINGS_ENV, "runs": a.runs, "alternates": a.alternates},
        "model": {
            "name": spec.name,
            "gguf_sha256": spec.sha256,
            "packages": spec.packages,
            "version": spec.version,
            "upstream": spec.upstream,
        },
        "magv_version": __version__,
        "magv_commit": commit,
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_time_s": wall,
        "wall_time_total_s": state["wall_time_total_s"],
        "stopped": stopped,
        "rounds_finished": state.get("next_round", 0),
        "files": {"dataset": base_path.name},
        "counts": counts(base_path),
        "reverse_call": reverse_calls({d: runner.db(d) for d in domains}),
    }
    prov_path = out_dir / "real_dataset.json"
    with atomic_output(prov_path) as tmp:
        tmp.write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    c = provenance["counts"]
    print(f"\n{base_path}: {c['base_runs']} base runs, {c['labelled']} labelled ({c['correct']} correct, "
          f"{c['incorrect']} incorrect), {c['alternate_runs']} alternate runs, {c['judged']} judged, "
          f"judge accuracy vs gold {c['judge_accuracy_vs_gold']}; {stopped}; {provenance['wall_time_s']} s")  # fmt: skip


if __name__ == "__main__":
    main()
