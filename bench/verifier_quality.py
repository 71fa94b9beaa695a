"""How good the verifier is on a labelled dataset: every model, the baselines (majority class,
agreement alone) and the LLM judge on the same rows and grouped CV folds, each metric with a 95 %
interval from a bootstrap over the CV groups, the feature ablation, and the differences best model
minus judge and minus majority with their paired intervals.

Input: a labelled JSONL file in magv's import format (`magv export --format jsonl` writes it), by
default data/fixtures/real_dataset.jsonl. It is imported into a temporary store, featurised
(siblings: the runs of one question or group; SS and the other similarities need `--embed`), and
evaluated with magv.verify.evaluation, as `magv verify train` does, without saving a model.

- CV groups: a line's `meta.group_id` when it has one (a magv export keeps the seed family there,
  so near-duplicate questions of one seed never sit on both sides), else its import group.
- Judge verdicts: a line's `meta.judge_correct` (true / false) with `meta.judge_model`.

    .venv/bin/python bench/verifier_quality.py [FILE.jsonl] [--folds 5 --seed 0 --bootstrap 1000 --embed]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT = REPO / "data" / "fixtures" / "real_dataset.jsonl"


def kept_meta(store: Any) -> dict[str, dict[str, Any]]:
    """run id -> the meta its import line carried."""
    questions = {q.id: q for q in store.questions()}
    out = {}
    for run in store.runs():
        info = questions[run.question_id].meta.get("import", {})
        out[run.id] = (info.get("runs", {}).get(str(run.run_index)) or {}).get("meta") or {}
    return out


def judge_verdicts(meta: dict[str, dict[str, Any]]) -> list[Any]:
    from magv.models import JudgeVerdict

    return [JudgeVerdict(run_id=r, model=str(m.get("judge_model") or "judge"), correct=m["judge_correct"])
            for r, m in meta.items() if isinstance(m.get("judge_correct"), bool)]  # fmt: skip


def evaluate_file(
    path: Path, *, folds: int = 5, seed: int = 0, bootstrap: int = 1000, embed: bool = False,
    models: list[str] | None = None, ablation: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """The evaluation of a labelled import file, in `TrainResult.summary()`'s shape."""
    import numpy as np

    from magv.store import Store
    from magv.verify.evaluation import evaluate
    from magv.verify.features import compute_features
    from magv.verify.importer import import_trajectories
    from magv.verify.metrics import ALL_METRICS
    from magv.verify.models import MODEL_NAMES, cross_validate_models
    from magv.verify.training import check_enough_rows, training_data

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "quality.duckdb") as store:
        t0 = time.perf_counter()
        imported = import_trajectories(store, path)
        t1 = time.perf_counter()
        embedder = None
        if embed:
            from magv.config import load_settings
            from magv.llm.embeddings import Embedder

            embedder = Embedder(load_settings(None))
        compute_features(store, embedder, alternates=embed)
        t2 = time.perf_counter()
        data = training_data(store)
        check_enough_rows(data.y)
        meta = kept_meta(store)
        groups = np.array([str(meta[r].get("group_id") or g) for r, g in zip(data.run_ids, data.groups)])
        names = list(models or MODEL_NAMES)
        results = cross_validate_models(data.X, data.y, groups, folds=folds, seed=seed, names=names)
        ev = evaluate(data.X, data.y, groups, data.features, results, run_ids=data.run_ids,
                      judge_verdicts=judge_verdicts(meta), folds=folds, seed=seed, n_bootstrap=bootstrap,
                      ablation=ablation)  # fmt: skip
        t3 = time.perf_counter()
        timings = {"import": t1 - t0, "features": t2 - t1, "evaluation": t3 - t2}
    keep = (*ALL_METRICS, "intervals", "confusion", "n", "positives", "folds")
    return {
        "file": str(path), "imported_runs": imported.runs,
        "models": [{"name": n, **{k: m[k] for k in keep if k in m}} for n, m in results.items()],
        "best": ev["best"], "select_by": ev["select_by"], "n": ev["n"], "groups": ev["groups"],
        "bootstrap": ev["bootstrap"], "baselines": ev["baselines"], "judges": ev["judges"],
        "differences": ev["differences"], "ablation": ev["ablation"], "seconds": timings,
        "embeddings": embed,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "file", nargs="?", type=Path, default=DEFAULT, help="labelled JSONL in magv's import format"
    )
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates over the CV groups")
    p.add_argument("--embed", action="store_true", help="embed texts (SS and the other similarities)")
    p.add_argument("--models", default=None, help="comma-separated models (default: all five)")
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON instead of tables")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "verifier_quality.json")
    args = p.parse_args(argv)
    if not args.file.is_file():
        print(f"verifier_quality: no labelled dataset at {args.file}: give a JSONL file in magv's import format "
              "(`magv export --format jsonl` writes one; data/fixtures/real_dataset.jsonl is the default)",
              file=sys.stderr)  # fmt: skip
        return 2
    from magv.commands.verify import print_evaluation
    from magv.errors import MagvError

    try:
        summary = evaluate_file(args.file, folds=args.folds, seed=args.seed, bootstrap=args.bootstrap,
                                embed=args.embed, models=args.models.split(",") if args.models else None,
                                ablation=not args.no_ablation)  # fmt: skip
    except MagvError as exc:
        print(f"verifier_quality: {args.file}: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_evaluation(summary)
    d = summary["differences"]
    figures = {k: d[k]["value"] for k in d}
    print("FIGURES " + " ".join(f"{k.replace(' ', '')}={v:+.3f}" for k, v in figures.items() if v is not None)
          + f" seconds={sum(summary['seconds'].values()):.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
