"""The classical verifier against the LLM judge on the same trajectories, measured in one run.

Setup (not timed): `magv run` on the fake server fills a store (questions, runs, alternates) and
trains a verifier. Then, with the fake server answering chat calls after L = 100 ms:

* verifier: recompute the features of every verified trajectory from the store (the alternates'
  runs, embeddings for SS from the same endpoint) and score them all with the trained model,
  as `magv verify features --replace` and `magv verify score` do;
* judge: the same trajectories through the same endpoint, as `magv verify judge` does (its
  settings: pipeline.concurrency verdicts at once, llm.concurrency_per_endpoint requests in flight).

Both are trajectories/s of wall time; the ratio is the figure (target >= 1000). Scoring alone
(features already stored) is shown too: it is what a rerun of `magv verify score` costs. So is the
verifier with graph edit distance memoised by tool-name sequences, a change features.py does not
have: it shows what that would give.

    .venv/bin/python bench/verifier_speed.py [--questions 200 --latency 0.1 --judge-concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fake_llm, magv_run, pipeline_env, write_result  # noqa: E402

SEEDS = 22


def settings_for(base_url: str, work: Path, judge_concurrency: int):
    from magv.config import load_settings

    env = pipeline_env(base_url, work, **{"pipeline.concurrency": judge_concurrency,
                                          "llm.concurrency_per_endpoint": judge_concurrency})  # fmt: skip
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("MAGV_")})
    try:
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def time_verifier(store: Any, settings: Any, reps: int) -> dict[str, Any]:
    from magv.llm.embeddings import Embedder
    from magv.verify import training
    from magv.verify.features import LazyEmbedder, compute_features

    embedder = LazyEmbedder(lambda: Embedder(settings))
    walls, feature_s, score_s, score_only = [], [], [], []
    n = 0
    for _ in range(reps):
        t0 = time.perf_counter()
        n = compute_features(store, embedder, replace=True)
        t1 = time.perf_counter()
        scored = training.score(store, settings)
        t2 = time.perf_counter()
        training.score(store, settings)  # features already there: scoring alone
        t3 = time.perf_counter()
        if scored.n != n:
            raise SystemExit(f"scored {scored.n} trajectories, featurised {n}")
        walls.append(t2 - t0)
        feature_s.append(t1 - t0)
        score_s.append(t2 - t1)
        score_only.append(t3 - t2)
    wall = statistics.median(walls)
    return {
        "trajectories": n, "wall_s": walls, "features_s": feature_s, "score_s": score_s,
        "score_only_s": score_only, "trajectories_per_s": n / wall,
        "score_only_trajectories_per_s": n / statistics.median(score_only),
    }  # fmt: skip


def time_verifier_memoised_ged(store: Any, settings: Any, reps: int) -> dict[str, Any]:
    """The same with graph edit distance memoised by the pair of tool-name sequences (all it
    depends on): not what magv does today; shows what that change to features.py would give."""
    from functools import cache

    from magv.models import ToolCall, Trajectory
    from magv.verify import features as F

    ged = F.graph_edit_distance

    @cache
    def by_names(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[float, bool]:
        return ged(Trajectory.from_calls([ToolCall(name=n) for n in a]),
                   Trajectory.from_calls([ToolCall(name=n) for n in b]))  # fmt: skip

    F.graph_edit_distance = lambda a, b, **kw: by_names(tuple(a.tool_names()), tuple(b.tool_names()))
    try:
        return time_verifier(store, settings, reps)
    finally:
        F.graph_edit_distance = ged


def time_judge(store: Any, settings: Any) -> dict[str, Any]:
    from magv.agents.judge import judge_many, pending_judgements
    from magv.llm import LLMClient

    model = settings.llm.role("judge")["model"]
    items = pending_judgements(store, model)
    if not items:
        raise SystemExit("no trajectories to judge")

    async def main():
        async with LLMClient(settings, recorder=store) as client:
            return await judge_many(client, items, settings.pipeline.concurrency, 0.0)

    t0 = time.perf_counter()
    verdicts = asyncio.run(main())
    wall = time.perf_counter() - t0
    store.add_judge_verdicts(verdicts)
    failed = [v.error for v in verdicts if v.correct is None]
    if failed:
        raise SystemExit(f"{len(failed)} verdicts failed: {failed[0]}")
    return {"trajectories": len(items), "wall_s": wall, "trajectories_per_s": len(items) / wall,
            "concurrency": settings.pipeline.concurrency}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--questions", type=int, default=200, help="questions kept by selection")
    p.add_argument("--latency", type=float, default=0.1, help="L: seconds per fake chat reply")
    p.add_argument("--judge-concurrency", type=int, default=4,
                   help="verdicts in flight (magv's defaults give 4: llm.concurrency_per_endpoint)")  # fmt: skip
    p.add_argument("--reps", type=int, default=3, help="verifier repetitions (median)")
    args = p.parse_args()
    from magv.store import Store

    with tempfile.TemporaryDirectory(prefix="magv-bench-") as tmp:
        work = Path(tmp)
        with fake_llm(0.0) as setup_url:  # filling the store is not what is measured
            per_target = math.ceil(args.questions * 1.15 / SEEDS)
            magv_run(setup_url, work, ["--questions", str(args.questions), "--per-target", str(per_target),
                                       "--runs", "3", "--alternates", "3"])  # fmt: skip
        with fake_llm(args.latency) as url:
            settings = settings_for(url, work, args.judge_concurrency)
            store = Store(settings.database)
            try:
                verifier = time_verifier(store, settings, args.reps)
                memoised = time_verifier_memoised_ged(store, settings, args.reps)
                judge = time_judge(store, settings)
            finally:
                store.close()
    ratio = verifier["trajectories_per_s"] / judge["trajectories_per_s"]
    score_ratio = verifier["score_only_trajectories_per_s"] / judge["trajectories_per_s"]
    f, s = statistics.median(verifier["features_s"]), statistics.median(verifier["score_s"])
    print(f"verifier: {verifier['trajectories']} trajectories, features {f:.3f} s + score {s:.3f} s -> "
          f"{verifier['trajectories_per_s']:.0f} trajectories/s (score alone "
          f"{verifier['score_only_trajectories_per_s']:.0f}/s)")  # fmt: skip
    print(f"  (with GED memoised by tool-name sequences, a proposed change: "
          f"{memoised['trajectories_per_s']:.0f} trajectories/s, "
          f"{memoised['trajectories_per_s'] / judge['trajectories_per_s']:.0f}x the judge)")  # fmt: skip
    print(f"LLM judge: {judge['trajectories']} trajectories, L={args.latency}s, {judge['concurrency']} in flight, "
          f"{judge['wall_s']:.2f} s -> {judge['trajectories_per_s']:.1f} trajectories/s")  # fmt: skip
    path = write_result("verifier_speed", {
        "settings": vars(args), "verifier": verifier, "judge": judge, "ratio": ratio, "score_only_ratio": score_ratio,
        "verifier_with_memoised_ged": memoised,
    })  # fmt: skip
    print(f"results written to {path.relative_to(path.parents[2])}")
    print(
        f"FIGURES verifier/judge trajectories per second: featurise+score {ratio:.0f}x, "
        f"score alone {score_ratio:.0f}x (target >= 1000x)"
    )


if __name__ == "__main__":
    main()
