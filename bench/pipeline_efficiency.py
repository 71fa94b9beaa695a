"""How close the whole pipeline comes to its LLM-bound lower limit, measured in one run.

The fake server (its own process) answers every chat call after exactly L seconds, with the
scripted agents of tests/fake_agents.py, so the pipeline does its real work: investigator, selection,
responder runs with tool calls on the sandboxed domain, MCT votes, reverse engineer, alternates,
every call logged in DuckDB. `magv run --no-verify` runs in its own process with the local runner
and C = pipeline.concurrency agent runs in flight (shared by the pipeline.workers chunks in flight;
llm.concurrency_per_endpoint is set to C too, so the client does not hold them below it).

Ideal: the time the model server alone needs, from the call log. Stages are barriers (selection
clusters all generated questions; each later stage plans from the rows the previous one wrote), and
the steps of one responder run are sequential (each call needs the tool result of the one before),
so a stage cannot take less than its calls x L / C, nor less than its longest run x L:

    ideal = sum over stages of max(calls_s * L / C, longest_chain_s * L)

Selection, planning, tools, store writes and the client are not in the ideal: they are what the
measurement charges the pipeline for. Measured: the flow's own span (pipeline_runs.started_at to
finished_at; Prefect's API start-up before the flow is reported apart).

    .venv/bin/python bench/pipeline_efficiency.py [--sizes 100,1000 --latency 0.5 --concurrency 16 --chunk-size 32]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fake_llm, magv_run, write_result  # noqa: E402

SEEDS = 22  # retail seed trajectories: every one is a target


def calls_per_stage(db: Path) -> dict[str, dict[str, int]]:
    """LLM calls and the longest sequential chain of each LLM stage, from the call log and runs."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        by_role = dict(con.execute("SELECT role, count(*) FROM llm_calls GROUP BY role").fetchall())
        # One responder run is a chain of calls: one per step, plus the final answer (or the failed
        # call) unless it stopped at max_steps.
        rows = con.execute(
            "SELECT q.origin = 'alternate' AS alt, count(*) AS runs, "
            "sum(r.n_steps + CASE WHEN r.status = 'max_steps' THEN 0 ELSE 1 END) AS calls, "
            "max(r.n_steps + CASE WHEN r.status = 'max_steps' THEN 0 ELSE 1 END) AS chain "
            "FROM runs r JOIN questions q ON q.id = r.question_id GROUP BY alt"
        ).fetchall()
        base_questions = con.execute(
            "SELECT count(*) FROM selections s JOIN questions q ON q.id = s.question_id WHERE s.kept"
        ).fetchone()[0]
    finally:
        con.close()
    runs = {bool(alt): {"runs": n, "calls": int(c), "chain": int(ch)} for alt, n, c, ch in rows}
    stages = {
        "generate": {"calls": by_role.get("investigator", 0), "chain": 1},
        "respond": {"calls": runs[False]["calls"], "chain": runs[False]["chain"], "runs": runs[False]["runs"]},
        "reverse": {"calls": by_role.get("reverse", 0), "chain": 1},
        "respond_alternates": {"calls": runs.get(True, {}).get("calls", 0), "chain": runs.get(True, {}).get("chain", 0),
                               "runs": runs.get(True, {}).get("runs", 0)},
    }  # fmt: skip
    logged = by_role.get("responder", 0)
    derived = stages["respond"]["calls"] + stages["respond_alternates"]["calls"]
    if logged != derived:  # retries or replays would make the runs table undercount the log
        raise SystemExit(f"responder calls in the log ({logged}) != calls implied by the runs ({derived})")
    return {"stages": stages, "base_questions": base_questions, "total_calls": sum(by_role.values())}


def flow_span(db: Path) -> float:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        start, end = con.execute("SELECT started_at, finished_at FROM pipeline_runs").fetchone()
    finally:
        con.close()
    return (end - start).total_seconds()


def measure(size: int, args: argparse.Namespace, base_url: str, work: Path) -> dict[str, Any]:
    per_target = math.ceil(size * 1.15 / SEEDS)  # a little more than kept, so selection chooses
    run_args = ["--no-verify", "--domain", "retail", "--questions", str(size), "--per-target", str(per_target),
                "--runs", str(args.runs), "--alternates", str(args.alternates)]  # fmt: skip
    result = magv_run(
        base_url, work, run_args,
        **{"pipeline.workers": args.workers, "pipeline.concurrency": args.concurrency,
           "pipeline.chunk_size": args.chunk_size, "llm.concurrency_per_endpoint": args.concurrency},
    )  # fmt: skip
    db = work / "magv.duckdb"
    log = calls_per_stage(db)
    C = args.concurrency
    L = args.latency
    ideal = {name: max(s["calls"] * L / C, s["chain"] * L) for name, s in log["stages"].items()}
    measured = flow_span(db)
    stage_seconds = {name: s["seconds"] for name, s in result["stages"].items()}
    return {
        "size": size, "base_questions": log["base_questions"], "calls": log["total_calls"],
        "stages": log["stages"], "ideal_s": sum(ideal.values()), "ideal_per_stage_s": ideal,
        "measured_s": measured, "stage_seconds": stage_seconds,
        "per_stage_ratio": {k: stage_seconds[k] / v for k, v in ideal.items() if v},
        "process_wall_s": result["process_wall_s"], "ratio": measured / sum(ideal.values()),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100,1000", help="questions kept by selection, comma separated")
    p.add_argument("--latency", type=float, default=0.5, help="L: seconds per fake chat reply")
    p.add_argument("--workers", type=int, default=2, help="pipeline.workers: chunks in flight")
    p.add_argument("--concurrency", type=int, default=16, help="C = pipeline.concurrency: runs in flight")
    p.add_argument("--chunk-size", type=int, default=32, help="pipeline.chunk_size: questions per chunk")
    p.add_argument("--runs", type=int, default=3, help="R: responder runs per question")
    p.add_argument("--alternates", type=int, default=3, help="k: alternates per question")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"ideal = sum over stages of max(calls x L / C, longest run x L); L={args.latency}s, "
          f"C={args.concurrency} (shared by {args.workers} chunks in flight), chunk_size={args.chunk_size}, "
          f"R={args.runs}, k={args.alternates}", flush=True)  # fmt: skip
    rows = []
    with fake_llm(args.latency) as base_url, tempfile.TemporaryDirectory(prefix="magv-bench-") as tmp:
        for size in sizes:
            row = measure(size, args, base_url, Path(tmp) / f"q{size}")
            rows.append(row)
            per_stage = ", ".join(f"{k} {v:.2f}" for k, v in row["per_stage_ratio"].items())
            print(f"{size} questions ({row['base_questions']} kept with seeds): {row['calls']} LLM calls, "
                  f"ideal {row['ideal_s']:.1f} s, measured {row['measured_s']:.1f} s -> {row['ratio']:.3f} "
                  f"(per stage: {per_stage}; process incl. Prefect start-up {row['process_wall_s']:.1f} s)",
                  flush=True)  # fmt: skip
    path = write_result("pipeline_efficiency", {"settings": vars(args), "rows": rows})
    print(f"results written to {path.relative_to(path.parents[2])}")
    print("FIGURES pipeline measured/ideal: "
          + ", ".join(f"{r['size']} questions {r['ratio']:.3f}" for r in rows) + " (target <= 1.15)")  # fmt: skip


if __name__ == "__main__":
    main()
