"""The verifier on real agent logs: grouped CV on the airline logs (tau-bench, GPT-4o), with
siblings and alone, beside the baselines.

Reads a labelled JSONL file in magv's import format (default: ../shared/data/airline-logs/dev.jsonl
from the repository, or $MAGV_REAL_LOGS) with magv's import reader, and the tool specs beside it
(tools.json, OpenAI function specs with `writes`), whose write tools the agreement features and
baseline compare. Each conversation is featurised twice: with its siblings (the other trials of
its task) and alone (as a lone production conversation is, with no siblings). No embeddings: the
models here do not use them.

For each CV seed, task-disjoint folds (all trials of a task in one fold), every row below is
scored out of fold on the same folds; the table gives the mean over seeds and the spread (sample
standard deviation, min-max):

- baselines: majority (the training fold's share of correct), TF-IDF over the tool calls and
  arguments + logistic regression, and the no-fit write agreement (share of the other trials of
  the task with the same write calls; correct at >= 0.5);
- each verifier model on magv's features, the text model alone, and each model with the text
  model stacked;
- "selected": the model chosen inside each outer training fold (nested CV) with the decision
  threshold chosen there for `--objective`, its accuracy at that threshold: the honest headline.

A third setting, "deployed", is what a model trained by `magv verify train` on a store of logs
meets in production: each model is fitted on the training folds' runs featurised with their
siblings, and each held-out run is scored featurised alone (no nested row there).

    .venv/bin/python bench/real_logs.py [FILE.jsonl] [--tools tools.json] [--seeds 5] [--json]
    .venv/bin/python bench/real_logs.py data/fixtures/real_dataset.jsonl --domain retail --domain logs \\
        --skip-unlabelled --models logreg,random_forest,xgboost --out bench/results/real_logs_real_set.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT = Path(
    os.environ.get("MAGV_REAL_LOGS") or REPO.parent / "shared" / "data" / "airline-logs" / "dev.jsonl"
)


def load(path: Path, tools: Path | None, domains: list[str] | None = None, skip_unlabelled: bool = False
         ) -> dict[str, Any]:  # fmt: skip
    """The labelled conversations of `path`, their task groups and the write tools: those of the
    spec file `tools` and of magv's `domains` (the committed real-model set's runs are over the
    retail and logs domains). `skip_unlabelled` leaves out lines without a label (that set's
    alternates' runs); otherwise they are an error."""
    import numpy as np

    from magv.errors import BadInput
    from magv.interchange import read_import_file
    from magv.verify.toolspec import LogTools, domain_tools, read_tool_file

    known = read_tool_file(tools) if tools is not None and tools.is_file() else LogTools()
    writes = set(known.writes).union(*(domain_tools(d).writes for d in domains or []))
    lines = read_import_file(path, errors=known.errors)
    unlabelled = [x.line for x in lines if x.label is None]
    if unlabelled and not skip_unlabelled:
        raise BadInput(f"{path}:{unlabelled[0]}: label: every line needs true or false here")
    lines = [x for x in lines if x.label is not None]
    return {
        "trajectories": [x.trajectory for x in lines],
        "groups": np.array([x.key for x in lines]),
        "y": np.array([int(x.label) for x in lines]),
        "write_tools": frozenset(writes),
    }


def candidates(models: list[str], X: Any, docs: list[str]) -> dict[str, tuple[Any, Any]]:
    """The verifiers compared (and selected among), each with its input: each model on the
    features X, the text model alone, each model with the text model stacked, and the logistic
    regression over the write agreement and the text model (magv.verify.models.candidate_names)."""
    from magv.verify.features import FEATURE_NAMES
    from magv.verify.models import candidate_features, candidate_names, make_verifier, model_input

    out = {}
    for label in candidate_names(models):
        v = make_verifier(label)
        cols = [FEATURE_NAMES.index(f) for f in candidate_features(label, FEATURE_NAMES)]
        out[label] = (v, model_input(v, X[:, cols], docs))
    return out


def compare(data: dict[str, Any], *, seeds: int, folds: int, models: list[str], objective: str,
            nested: bool = True) -> dict[str, Any]:  # fmt: skip
    """{setting: {row: {metric: mean/sd/min/max}}} for the settings "siblings" and "alone"."""
    import numpy as np

    from magv.verify.document import documents
    from magv.verify.evaluation import baseline_oof
    from magv.verify.features import FEATURE_NAMES, TrajectoryFeaturizer
    from magv.verify.metrics import ScoreColumns, point_metrics
    from magv.verify.models import grouped_splits
    from magv.verify.selection import nested_cv, oof_proba, repeated

    ts, groups, y = data["trajectories"], data["groups"], data["y"]
    featurizer = TrajectoryFeaturizer(None, data["write_tools"])
    docs, call_docs = documents(ts), documents(ts, errors=False)
    alone = np.arange(len(ts)).astype(str)
    X_siblings = featurizer.transform(ts, groups)
    # "deployed": fitted on runs with their siblings (as `verify train` on a store of logs is),
    # each held-out run then scored alone (as a lone production conversation is)
    settings = {"siblings": (groups, False), "alone": (alone, False), "deployed": (alone, True)}
    out: dict[str, Any] = {}
    for setting, (feature_groups, deployed) in settings.items():
        t0 = time.perf_counter()
        X = X_siblings if feature_groups is groups else featurizer.transform(ts, feature_groups)
        cands = candidates(models, X, docs)
        fits = candidates(models, X_siblings, docs) if deployed else cands

        def measure(seed: int, X=X, cands=cands, fits=fits, deployed=deployed) -> dict[str, float | None]:
            splits = grouped_splits(y, groups, folds, seed)
            scorers = baseline_oof(X, y, FEATURE_NAMES, splits, groups, call_docs)
            for name, (est, Xc) in cands.items():
                scorers[name] = ScoreColumns.from_proba(
                    oof_proba(est, fits[name][1], y, groups, splits, X_test=Xc)
                )
            if nested and not deployed:
                n = nested_cv(cands, y, groups, folds=folds, seed=seed, objective=objective)
                scorers["selected"] = ScoreColumns(n["pred"], n["proba"], n["proba"])
            flat = {}
            for name, s in scorers.items():
                m = point_metrics(y, s)
                for k in ("accuracy", "roc_auc", "balanced_accuracy"):
                    flat[f"{name}|{k}"] = m[k]
            return flat

        stats = repeated(measure, list(range(seeds)))
        table: dict[str, dict[str, Any]] = {}
        for key, v in stats.items():
            name, metric = key.split("|")
            table.setdefault(name, {})[metric] = {
                k: round(x, 4) if isinstance(x, float) else x for k, x in v.items()
            }
        out[setting] = {"rows": table, "seconds": round(time.perf_counter() - t0, 1)}
    return out


def print_table(result: dict[str, Any], n: int, positives: int, seeds: int, folds: int) -> None:
    print(f"{n} conversations ({positives} correct), task-disjoint {folds}-fold CV, mean over {seeds} seeds "
          "± sample sd [min, max]")  # fmt: skip
    for setting, r in result.items():
        print(f"\n{setting} ({r['seconds']} s)")
        print(f"{'':24} {'accuracy':>28} {'AUROC':>28}")
        for name, m in r["rows"].items():
            cells = []
            for k in ("accuracy", "roc_auc"):
                v = m.get(k)
                cells.append(
                    f"{v['mean']:.3f} ± {v['sd']:.3f} [{v['min']:.3f}, {v['max']:.3f}]" if v else "–"
                )
            print(f"{name:24} {cells[0]:>28} {cells[1]:>28}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="?", type=Path, default=DEFAULT,
                   help="labelled JSONL in magv's import format (default: $MAGV_REAL_LOGS or %(default)s)")  # fmt: skip
    p.add_argument("--tools", type=Path, default=None, help="OpenAI function specs with `writes` "
                   "(default: tools.json beside the file)")  # fmt: skip
    p.add_argument("--domain", action="append", default=None,
                   help="a magv domain whose write tools the logs use (repeatable)")  # fmt: skip
    p.add_argument("--skip-unlabelled", action="store_true",
                   help="leave out lines without a label (else they are an error)")  # fmt: skip
    p.add_argument("--seeds", type=int, default=3, help="CV seeds 0..N-1")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--models", default="logreg,xgboost", help="comma-separated verifier models")
    p.add_argument("--objective", default="accuracy", help="the selected model's threshold objective")
    p.add_argument("--no-nested", action="store_true", help="leave out the nested selection (faster)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "real_logs.json")
    args = p.parse_args(argv)
    if not args.file.is_file():
        print(
            f"real_logs: no labelled logs at {args.file}: give the path or set MAGV_REAL_LOGS",
            file=sys.stderr,
        )
        return 2
    from magv.errors import MagvError

    try:
        data = load(
            args.file, args.tools or args.file.with_name("tools.json"), args.domain, args.skip_unlabelled
        )
        result = compare(data, seeds=args.seeds, folds=args.folds, models=args.models.split(","),
                         objective=args.objective, nested=not args.no_nested)  # fmt: skip
    except MagvError as exc:
        print(f"real_logs: {args.file}: {exc}", file=sys.stderr)
        return 2
    summary = {"file": str(args.file), "n": len(data["y"]), "positives": int(data["y"].sum()),
               "write_tools": sorted(data["write_tools"]), "seeds": args.seeds, "folds": args.folds, **result}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(result, summary["n"], summary["positives"], args.seeds, args.folds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
