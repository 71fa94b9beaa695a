"""The classical verifier against the LLM judge on the same trajectories, measured in one run.

Setup (not timed): a store holding N synthetic verified trajectories shaped like the pipeline's
output (bench/_synthetic.py: R = 3 runs, k = 3 alternates with a run each, gold labels), and a
verifier trained on them. Then, with the fake server answering chat calls after L = 100 ms:

* verifier: recompute the features of every verified trajectory from the store and score them all
  with the trained model, as `magv verify features --replace --mct-only` and `magv verify score`
  do (one row per verified trajectory, so rates compare with the judge's per trajectory). Two
  cases: the texts' embeddings already stored (as they are after the pipeline's own features stage:
  magv embeds a text once per model), and every text embedded in the timed window through the same
  endpoint (the fake server answers embeddings at once, without L; a real server adds its time);
* judge: a sample of the same trajectories through the same endpoint, as `magv verify judge` does
  (pipeline.concurrency verdicts at once, llm.concurrency_per_endpoint requests in flight), twice:
  with magv's defaults (4 in flight) and one verdict at a time (each verdict's own cost, L plus
  magv's overhead). The judge's rate does not depend on how many trajectories there are, so a
  sample measures it.

All are trajectories/s of wall time; the ratios are the figures (target >= 1000). The verifier runs
on this machine's cores either way; the fake server answers any number of requests at once in L, so
the judge's rate at 4 in flight is the best a real endpoint could give it. Scoring alone (features
stored) is shown too: it is what a rerun of `magv verify score` costs.

    .venv/bin/python bench/verifier_speed.py [--trajectories 5000 --latency 0.1 --judge-sample 400]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fake_llm, pipeline_env, write_result  # noqa: E402
from _synthetic import fill_store  # noqa: E402


def settings_for(base_url: str, work: Path, judge_concurrency: int, contributions: str):
    from magv.config import load_settings

    env = pipeline_env(base_url, work, **{"pipeline.concurrency": judge_concurrency,
                                          "llm.concurrency_per_endpoint": judge_concurrency,
                                          "verify.contributions": contributions})  # fmt: skip
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("MAGV_")})
    try:
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def time_verifier(store: Any, settings: Any, reps: int, cold: bool) -> dict[str, Any]:
    from magv.llm.embeddings import lazy_embedder
    from magv.verify import features as F
    from magv.verify import scoring

    walls, feature_s, score_s = [], [], []
    n = 0
    for _ in range(reps):
        if cold:
            store.con.execute("DELETE FROM embeddings")
        embedder = lazy_embedder(settings)
        t0 = time.perf_counter()
        n = F.compute_features(store, embedder, replace=True, mct_only=True)
        t1 = time.perf_counter()
        scored = scoring.score(store, settings)
        t2 = time.perf_counter()
        if scored.n != n:
            raise SystemExit(f"scored {scored.n} trajectories, featurised {n}")
        walls.append(t2 - t0)
        feature_s.append(t1 - t0)
        score_s.append(t2 - t1)
    wall = statistics.median(walls)
    return {"trajectories": n, "wall_s": walls, "features_s": feature_s, "score_s": score_s,
            "trajectories_per_s": n / wall}  # fmt: skip


def time_score_alone(store: Any, settings: Any, reps: int) -> dict[str, Any]:
    from magv.verify import scoring

    walls, n = [], 0
    for _ in range(reps):
        t0 = time.perf_counter()
        n = scoring.score(store, settings).n
        walls.append(time.perf_counter() - t0)
    return {"trajectories": n, "wall_s": walls, "trajectories_per_s": n / statistics.median(walls)}


def time_judge(store: Any, settings: Any, sample: int, skip: int = 0) -> dict[str, Any]:
    """The judge on `sample` pending trajectories after the first `skip` (other trajectories than an
    earlier timing's: the LLM layer would replay those calls from its log)."""
    from magv.llm import managed_endpoints
    from magv.pipeline import judge as stage
    from magv.pipeline.runner import run_stage
    from magv.pipeline.session import local_session
    from magv.pipeline.worker import WorkerContext, close_resources

    items = stage.plan(store, WorkerContext(settings), limit=skip + sample)[skip:]
    if len(items) < sample:
        raise SystemExit(f"{len(items)} trajectories to judge, {sample} wanted")
    verdicts: list = []

    def keep(store, ctx, results, report) -> None:  # the stage's own path, as `magv verify judge`
        stage.write(store, ctx, results, report)
        verdicts.extend(results)

    t0 = time.perf_counter()
    try:
        with (
            managed_endpoints(settings) as endpoints,
            local_session(settings, store, endpoints, "bench-judge") as sess,
        ):
            run_stage(sess, stage.STAGE, items=items, write=keep)
    finally:
        close_resources()
    wall = time.perf_counter() - t0
    failed = [v.error for v in verdicts if v.correct is None]
    if failed:
        raise SystemExit(f"{len(failed)} verdicts failed: {failed[0]}")
    return {"trajectories": len(items), "wall_s": wall, "trajectories_per_s": len(items) / wall,
            "concurrency": settings.pipeline.concurrency}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--trajectories", type=int, default=5000, help="synthetic verified trajectories in the store"
    )
    p.add_argument("--latency", type=float, default=0.1, help="L: seconds per fake chat reply")
    p.add_argument("--judge-concurrency", type=int, default=4,
                   help="verdicts in flight (magv's defaults give 4: llm.concurrency_per_endpoint)")  # fmt: skip
    p.add_argument("--judge-sample", type=int, default=400, help="trajectories the judge is timed on")
    p.add_argument("--judge-one-sample", type=int, default=100,
                   help="trajectories the judge is timed on one verdict at a time")  # fmt: skip
    p.add_argument("--model", default="xgboost", help="the verifier model trained and scored")
    p.add_argument("--contributions", default="exact", choices=["exact", "approx", "none"],
                   help="verify.contributions while scoring (exact TreeSHAP, XGBoost's pred_contribs, is the default)")  # fmt: skip
    p.add_argument("--reps", type=int, default=3, help="verifier repetitions (median)")
    args = p.parse_args()
    from magv.store import Store
    from magv.verify import training

    with tempfile.TemporaryDirectory(prefix="magv-bench-") as tmp, fake_llm(args.latency) as url:
        work = Path(tmp)
        settings = settings_for(url, work, args.judge_concurrency, args.contributions)
        store = Store(settings.database)
        try:
            t0 = time.perf_counter()
            fill_store(store, args.trajectories)
            print(f"setup: {args.trajectories} synthetic verified trajectories written in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
            from magv.llm.embeddings import lazy_embedder
            from magv.verify.features import compute_features

            compute_features(store, lazy_embedder(settings), mct_only=True)
            training.train(store, settings, names=[args.model])
            # warm first: the cold case deletes the stored vectors, and DuckDB keeps deleted rows
            # until a checkpoint, which would slow the warm case's look-ups
            warm = time_verifier(store, settings, args.reps, cold=False)
            cold = time_verifier(store, settings, args.reps, cold=True)
            alone = time_score_alone(store, settings, args.reps)
            judge = time_judge(store, settings, args.judge_sample)
            one = time_judge(store, settings_for(url, work, 1, args.contributions), args.judge_one_sample,
                             skip=args.judge_sample)  # fmt: skip
        finally:
            store.close()
    jr, jr1 = judge["trajectories_per_s"], one["trajectories_per_s"]
    ratios = {"stored_embeddings": warm["trajectories_per_s"] / jr, "embedding_in_window": cold["trajectories_per_s"] / jr,
              "score_alone": alone["trajectories_per_s"] / jr,
              "stored_embeddings_vs_one_at_a_time": warm["trajectories_per_s"] / jr1,
              "embedding_in_window_vs_one_at_a_time": cold["trajectories_per_s"] / jr1}  # fmt: skip
    for label, r in (("embeddings stored", warm), ("every text embedded in the window", cold)):
        f, s = statistics.median(r["features_s"]), statistics.median(r["score_s"])
        print(f"verifier ({label}): {r['trajectories']} trajectories, features {f:.3f} s + score {s:.3f} s -> "
              f"{r['trajectories_per_s']:.0f} trajectories/s = {1e6 / r['trajectories_per_s']:.0f} us each")  # fmt: skip
    print(
        f"score alone ({args.model}, {args.contributions} contributions): "
        f"{alone['trajectories_per_s']:.0f} trajectories/s"
    )
    for j in (judge, one):
        print(f"LLM judge: {j['trajectories']} trajectories, L={args.latency}s, {j['concurrency']} in flight, "
              f"{j['wall_s']:.2f} s -> {j['trajectories_per_s']:.1f} trajectories/s")  # fmt: skip
    name = "verifier_speed" if args.contributions == "exact" else f"verifier_speed_{args.contributions}"
    path = write_result(name, {
        "settings": vars(args), "verifier_embeddings_stored": warm, "verifier_embedding_in_window": cold,
        "score_alone": alone, "judge": judge, "judge_one_at_a_time": one, "ratios": ratios,
    })  # fmt: skip
    print(f"results written to {path.relative_to(path.parents[2])}")
    print(
        f"FIGURES verifier/judge trajectories per second (target >= 1000x): featurise+score with embeddings "
        f"stored {ratios['stored_embeddings']:.0f}x the judge at {judge['concurrency']} in flight, "
        f"{ratios['stored_embeddings_vs_one_at_a_time']:.0f}x one verdict at a time; embedding every text "
        f"{ratios['embedding_in_window']:.0f}x / {ratios['embedding_in_window_vs_one_at_a_time']:.0f}x; "
        f"score alone {ratios['score_alone']:.0f}x / {alone['trajectories_per_s'] / jr1:.0f}x"
    )


if __name__ == "__main__":
    main()
