"""How good the verifier is on a labelled dataset: every model, the baselines (majority class,
agreement alone) and the LLM judge on the same rows and grouped CV folds, each metric with a 95 %
interval from a bootstrap over the CV groups, the feature ablation, and the differences best model
minus judge and minus majority with their paired intervals; then the cascade's accuracy against
cost, replayed offline (`magv.cascade.replay.simulate`).

Input: a labelled JSONL file in magv's import format (`magv export --format jsonl` writes it), by
default data/fixtures/real_dataset.jsonl. It is imported into a temporary store, featurised
(siblings: the runs of one question or group; alternates: the file's alternate lines; SS and the
other similarities embed texts with the settings' embedder unless `--no-embed`), and evaluated with
magv.verify.evaluation, as `magv verify train` does, without saving a model.

- CV groups: a line's `meta.group_id` when it has one (a magv export keeps the seed family there,
  so near-duplicate questions of one seed never sit on both sides), else its import group.
- Judge verdicts: the importer restores them from a line's `meta.judge_correct`, with
  `meta.judge_model` and the verdict's tokens (`meta.judge_prompt_tokens`, `...completion_tokens`).
- The cascade's reverse-engineer call: a file carries no call log, so its cost is read from the
  provenance file beside it (FILE.json, `reverse_call`, as bench/make_real_dataset.py writes it);
  without one it is unknown, counted as 0, and the output says so.

    .venv/bin/python bench/verifier_quality.py [FILE.jsonl] [--folds 5 --seed 0 --bootstrap 1000 --no-embed]
        [--no-text --repeats 3]
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


def reverse_cost(path: Path) -> dict[str, Any]:
    """One reverse-engineer call's tokens for the cascade, from the provenance file beside the
    dataset (`reverse_call`); unknown (counted as 0, `known` False) when it has none."""
    prov = path.with_suffix(".json")
    why = f"no provenance file {prov.name}"
    if prov.is_file():
        why = f"{prov.name} has no reverse_call"
        try:
            data = json.loads(prov.read_text(encoding="utf-8"))
        except ValueError:
            data, why = None, f"{prov.name} is not valid JSON"
        call = data.get("reverse_call") if isinstance(data, dict) else None
        if isinstance(call, dict) and call.get("calls") and call.get("prompt_tokens") is not None:
            return {"prompt_tokens": call["prompt_tokens"], "completion_tokens": call["completion_tokens"] or 0,
                    "source": f"{prov.name}: the mean of the {call['calls']} reverse calls of the stores that made it"}  # fmt: skip
    return {"prompt_tokens": 0, "completion_tokens": 0, "known": False,
            "source": f"reverse cost unknown: {why} (counted as 0)"}  # fmt: skip


def evaluate_file(
    path: Path, *, folds: int = 5, seed: int = 0, bootstrap: int = 1000, embed: bool = True,
    models: list[str] | None = None, ablation: bool = True, cascade: bool = True,
    max_judge_share: float = 0.2, margin: float = 0.25, text: bool = True, repeats: int = 3,
) -> dict[str, Any]:  # fmt: skip
    """The evaluation of a labelled import file, in `TrainResult.summary()`'s shape, with the
    simulated cascade (`cascade`, on the best model) beside it."""
    import numpy as np

    from magv.cascade.loop import CascadeOptions
    from magv.cascade.replay import simulate
    from magv.store import Store
    from magv.verify.evaluation import evaluate
    from magv.verify.features import compute_features
    from magv.verify.importer import import_trajectories
    from magv.verify.metrics import ALL_METRICS
    from magv.verify.models import MODEL_NAMES, candidate_names, cross_validate_models, make_verifier
    from magv.verify.training import check_enough_rows, run_documents, training_data

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
        # EM / EDIT / GEDIT compare the alternates without embeddings; SS needs the embedder
        compute_features(store, embedder, alternates=True)
        t2 = time.perf_counter()
        data = training_data(store)
        check_enough_rows(data.y)
        meta = kept_meta(store)
        groups = np.array([str(meta[r].get("group_id") or g) for r, g in zip(data.run_ids, data.groups)])
        seed_family = {r: str(m["group_id"]) for r, m in meta.items() if m.get("group_id")}
        names = candidate_names(list(models or MODEL_NAMES), text=text)
        docs = run_documents(store, data.run_ids) if text else None
        results = cross_validate_models(data.X, data.y, groups, folds=folds, seed=seed, names=names,
                                        documents=docs, features=data.features)  # fmt: skip
        ev = evaluate(data.X, data.y, groups, data.features, results, run_ids=data.run_ids,
                      judge_verdicts=[v for v in store.judge_verdicts() if v.correct is not None], folds=folds,
                      seed=seed, n_bootstrap=bootstrap, ablation=ablation, documents=docs,
                      call_documents=run_documents(store, data.run_ids, errors=False), repeats=repeats)  # fmt: skip
        t3 = time.perf_counter()
        replay = None
        if cascade:
            # the cascade replays a model over the stored features: the best's model kind
            options = CascadeOptions(max_judge_share=max_judge_share, margin=margin)
            replay = simulate(store, options, model=make_verifier(ev["best"]).model, folds=folds, seed=seed,
                              reverse_cost=reverse_cost(path), groups=seed_family)  # fmt: skip
        timings = {"import": t1 - t0, "features": t2 - t1, "evaluation": t3 - t2,
                   "cascade": time.perf_counter() - t3}  # fmt: skip
    keep = (*ALL_METRICS, "intervals", "confusion", "n", "positives", "folds")
    return {
        "file": str(path), "imported_runs": imported.runs,
        "models": [{"name": n, **{k: m[k] for k in keep if k in m}} for n, m in results.items()],
        "best": ev["best"], "select_by": ev["select_by"], "n": ev["n"], "groups": ev["groups"],
        "bootstrap": ev["bootstrap"], "baselines": ev["baselines"], "judges": ev["judges"],
        "differences": ev["differences"], "ablation": ev["ablation"], "selected": ev.get("selected"),
        "seconds": timings,
        "embeddings": embed, "cascade": replay,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "file", nargs="?", type=Path, default=DEFAULT, help="labelled JSONL in magv's import format"
    )
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates over the CV groups")
    p.add_argument("--embed", action=argparse.BooleanOptionalAction, default=True,
                   help="embed texts with the settings' embedder for SS and the other similarities (default; "
                   "--no-embed leaves them neutral)")  # fmt: skip
    p.add_argument("--models", default=None, help="comma-separated models (default: all five)")
    p.add_argument("--text", action=argparse.BooleanOptionalAction, default=True,
                   help="compare the text model, alone and stacked (default)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=3, help="CV seeds of the nested selection (0: none)")
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--no-cascade", action="store_true", help="leave out the simulated cascade")
    p.add_argument("--max-judge-share", type=float, default=0.2, help="the cascade's judge budget (share)")
    p.add_argument("--margin", type=float, default=0.25, help="the cascade's verifier margin around 0.5")
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON instead of tables")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "verifier_quality.json")
    args = p.parse_args(argv)
    if not args.file.is_file():
        print(f"verifier_quality: no labelled dataset at {args.file}: give a JSONL file in magv's import format "
              "(`magv export --format jsonl` writes one; data/fixtures/real_dataset.jsonl is the default)",
              file=sys.stderr)  # fmt: skip
        return 2
    from magv.commands.verify import print_evaluation, print_simulated_cascade
    from magv.errors import MagvError

    try:
        summary = evaluate_file(args.file, folds=args.folds, seed=args.seed, bootstrap=args.bootstrap,
                                embed=args.embed, models=args.models.split(",") if args.models else None,
                                ablation=not args.no_ablation, cascade=not args.no_cascade,
                                max_judge_share=args.max_judge_share, margin=args.margin, text=args.text,
                                repeats=args.repeats)  # fmt: skip
    except MagvError as exc:
        print(f"verifier_quality: {args.file}: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_evaluation(summary)
        replay = summary["cascade"]
        if replay is not None and "curve" in replay:
            print(f"cascade: the best model ({replay['model']}) on sibling features, then with alternates")
            print_simulated_cascade(replay)
        elif replay is not None:
            print(f"cascade: not simulated: {replay['error']}")
    d = summary["differences"]
    figures = " ".join(f"{k.replace(' ', '')}={d[k]['value']:+.3f}" for k in d if d[k]["value"] is not None)
    seconds = sum(summary["seconds"].values())
    print(f"FIGURES {figures}{cascade_figures(summary['cascade'])} seconds={seconds:.1f}")
    return 0


def cascade_figures(replay: dict[str, Any] | None) -> str:
    """The cascade's part of the FIGURES line: its accuracy with a verdict for every labelled row
    (the human queue's the verifier's) and its tokens as a share of judging everything."""
    if not replay or "curve" not in replay:
        return ""
    accuracy = replay["curve"]["points"][-1]["accuracy_all"]
    share = replay["curve"]["share_of_judge_everything"]
    return (f" cascade_accuracy={'unknown' if accuracy is None else f'{accuracy:.3f}'}"
            f" cascade_cost_ratio={'unknown' if share is None else f'{share:.3f}'}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
