"""How good the verifier is, measured honestly: every model, the baselines and the LLM judge scored on
the same rows and the same grouped CV folds, each metric with a 95 % interval from a bootstrap over
the CV groups (magv.verify.metrics), and a feature ablation.

Baselines, each cross-validated on the folds the models use (nothing is fitted on a test fold):
- `majority`: the training fold's majority class; its probability is the fold's share of correct.
- `agreement`: one agreement feature with a threshold (verdict correct when the value is at least
  the threshold); the feature (of AGREEMENT_FEATURES) and the threshold are the ones with the best
  accuracy on the training fold. AUROC ranks the feature's raw value; the probability is the share
  of correct training rows on the same side of the threshold.
- the LLM judge of each model with verdicts in `judge_verdicts`, on the rows it gave a verdict for,
  next to the best model on exactly those rows.

Ablation: the best model on the paper's four features (EM, EDIT, GEDIT, SS against the alternates'
runs) alone, then with each other feature family added, then on every feature. Families come from
the feature names (`feature_family`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from magv.definitions import best_model
from magv.verify.features import AGGREGATES, OWN_FEATURES, PAIR_FEATURES, SIBLING_COUNTS
from magv.verify.metrics import (
    N_BOOTSTRAP,
    GroupBootstrap,
    ScoreColumns,
    confusion,
    difference,
    evaluate_scorer,
    point_metrics,
)
from magv.verify.models import (
    MODEL_NAMES,
    candidate_features,
    cross_validate_models,
    grouped_splits,
    make_verifier,
    model_input,
)
from magv.verify.selection import abstention, nested_cv, repeated

# Agreement of a run with its siblings: its signature's share of the group (for an MCT row, the
# MCT share), the mean exact match with the sibling runs, the share of siblings with its tool names.
AGREEMENT_FEATURES: tuple[str, ...] = ("signature_share", "sibling_em_mean", "sibling_same_calls")
PAPER_PAIRS: tuple[str, ...] = ("em", "edit", "gedit", "ss")
FAMILIES: tuple[str, ...] = ("paper", "alternates", "siblings", "agreement", "run")
FAMILY_DOC = {
    "paper": "EM, EDIT, GEDIT, SS against the alternates' runs (mean, min, max): the paper's features",
    "alternates": "the other comparisons with the alternates' runs, the alternate questions' similarity",
    "siblings": "every pair feature against the sibling runs (sibling_<name>_<agg>)",
    "agreement": "counts of the sibling group: runs, distinct signatures, MCT, shares with the same calls",
    "run": "the run itself (steps, calls, errors, response, status) and the row's bookkeeping",
}


def feature_family(name: str) -> str:
    """The family of a feature name (FAMILIES); a name that fits none is an error, so a new
    feature must be given a family."""
    pair, _, agg = name.rpartition("_")
    if name in SIBLING_COUNTS:
        return "agreement"
    if name in OWN_FEATURES or name in ("n_alternates", "n_alternate_runs", "gedit_exact"):
        return "run"
    if agg in AGGREGATES and pair.startswith("sibling_") and pair[len("sibling_") :] in PAIR_FEATURES:
        return "siblings"
    if agg in AGGREGATES and pair in PAPER_PAIRS:
        return "paper"
    if agg in AGGREGATES and (pair in PAIR_FEATURES or pair == "question_sim"):
        return "alternates"
    raise ValueError(f"feature {name!r} belongs to no feature family; add it to magv.verify.evaluation")


def feature_sets(names: Sequence[str]) -> list[tuple[str, list[int]]]:
    """(label, column indices) of the ablation: the paper's features, each other family added to
    them, every feature."""
    family = {n: feature_family(n) for n in names}
    paper = [i for i, n in enumerate(names) if family[n] == "paper"]
    sets = [("paper", paper)]
    for f in FAMILIES[1:]:
        cols = [i for i, n in enumerate(names) if family[n] in ("paper", f)]
        if len(cols) > len(paper):
            sets.append((f"paper + {f}", cols))
    sets.append(("all", list(range(len(names)))))
    return [(label, cols) for label, cols in sets if cols]


# -- baselines -----------------------------------------------------------------------------------

WRITE_AGREEMENT = "sibling_same_writes"  # the no-fit baseline's feature
# Nested selection splits each outer training fold again by group: with two groups an outer
# training fold holds one, which cannot be split.
MIN_NESTED_GROUPS = 3


def baseline_oof(
    X: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    groups: np.ndarray,
    call_documents: Sequence[str] | None = None,
) -> dict[str, ScoreColumns]:
    """The baselines out of fold on `splits`: "majority", "agreement" (below), "write agreement"
    (no fit: the share of the other runs of the group with the same write calls, the featurizer's
    WRITE_AGREEMENT; correct at >= 0.5) and, given each row's calls-and-arguments document
    (magv.verify.document.document with errors=False), "tfidf": TF-IDF over it + logistic
    regression, fitted on the training folds."""
    from magv.verify.document import with_documents
    from magv.verify.models import Verifier
    from magv.verify.selection import oof_proba

    y, X = np.asarray(y, dtype=np.int64), np.asarray(X, dtype=np.float64)
    out = {"majority": majority_oof(y, splits)}
    agreement = agreement_oof(X, y, list(names), splits)
    if agreement is not None:
        out["agreement"] = agreement[0]
    if WRITE_AGREEMENT in names:
        share = X[:, list(names).index(WRITE_AGREEMENT)]
        out["write agreement"] = ScoreColumns((share >= 0.5).astype(np.int64), share, share)
    if call_documents is not None:
        docs = with_documents(np.zeros((len(y), 0)), call_documents)
        out["tfidf"] = ScoreColumns.from_proba(
            oof_proba(Verifier("logreg", text="only"), docs, y, groups, splits)
        )
    return out


def majority_oof(y: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> ScoreColumns:
    pred, proba = np.zeros(len(y), dtype=np.int64), np.zeros(len(y))
    for tr, te in splits:
        prior = float(np.mean(y[tr]))
        pred[te], proba[te] = int(prior >= 0.5), prior
    return ScoreColumns(pred, proba, proba.copy())


def best_threshold(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) of the rule "correct when x >= threshold" with the best accuracy on
    (x, y); candidates are the distinct values and +inf (always incorrect); ties go to the lowest."""
    levels = np.unique(x)
    pos, neg = np.sort(x[y == 1]), np.sort(x[y == 0])
    # positives at or above each level, negatives below it
    pos_above = len(pos) - np.searchsorted(pos, levels, side="left")
    neg_below = np.searchsorted(neg, levels, side="left")
    acc = np.r_[(pos_above + neg_below) / len(y), np.mean(y == 0)]
    k = int(np.argmax(acc))
    return (float(levels[k]) if k < len(levels) else float("inf")), float(acc[k])


def agreement_oof(
    X: np.ndarray, y: np.ndarray, names: Sequence[str], splits: Sequence[tuple[np.ndarray, np.ndarray]]
) -> tuple[ScoreColumns, list[dict[str, Any]]] | None:
    """The agreement baseline's out-of-fold columns and, per fold, the feature and threshold chosen
    on its training rows; None when no agreement feature is among `names`."""
    cols = [(f, names.index(f)) for f in AGREEMENT_FEATURES if f in names]
    if not cols:
        return None
    pred, proba, score = np.zeros(len(y), dtype=np.int64), np.zeros(len(y)), np.zeros(len(y))
    chosen = []
    for tr, te in splits:
        fits = [(f, j, *best_threshold(X[tr, j], y[tr])) for f, j in cols]
        f, j, t, acc = max(fits, key=lambda r: r[3])  # first of equals: AGREEMENT_FEATURES order
        above_tr, above_te = X[tr, j] >= t, X[te, j] >= t
        prior = float(np.mean(y[tr]))
        rate_above = float(np.mean(y[tr][above_tr])) if above_tr.any() else prior
        rate_below = float(np.mean(y[tr][~above_tr])) if (~above_tr).any() else prior
        pred[te] = above_te.astype(np.int64)
        proba[te] = np.where(above_te, rate_above, rate_below)
        score[te] = X[te, j]
        chosen.append({"feature": f, "threshold": t, "train_accuracy": round(acc, 6)})
    return ScoreColumns(pred, proba, score), chosen


def judge_rows(
    run_ids: Sequence[str], verdicts: Sequence[Any]
) -> dict[str, tuple[np.ndarray, ScoreColumns, int]]:
    """judge model -> (row indices with a verdict, its ScoreColumns on them, rows judged without a
    verdict): the judge's verdict is its prediction, probability and score alike."""
    index = {r: i for i, r in enumerate(run_ids)}
    by_model: dict[str, dict[int, bool | None]] = {}
    for v in verdicts:
        if v.run_id in index:
            by_model.setdefault(v.model, {})[index[v.run_id]] = v.correct
    out = {}
    for model, rows in sorted(by_model.items()):
        have = sorted(i for i, c in rows.items() if c is not None)
        if not have:
            continue
        verdict = np.zeros(len(run_ids))
        for i in have:
            verdict[i] = float(rows[i])
        idx = np.asarray(have, dtype=np.int64)
        out[model] = (idx, ScoreColumns(verdict.astype(np.int64), verdict, verdict), len(rows) - len(have))
    return out


# -- the whole evaluation ------------------------------------------------------------------------


def evaluate(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    names: Sequence[str],
    results: dict[str, dict[str, Any]],
    *,
    run_ids: Sequence[str] = (),
    judge_verdicts: Sequence[Any] = (),
    folds: int = 5,
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
    select_by: str = "roc_auc",
    ablation: bool = True,
    documents: Sequence[str] | None = None,
    call_documents: Sequence[str] | None = None,
    repeats: int = 3,
    objective: str = "accuracy",
    target_precision: float = 0.9,
) -> dict[str, Any]:
    """Add `intervals` and `confusion` to each model's `results` (which must hold `oof`, as
    `cross_validate_models` gives) and return the rest of the evaluation: baselines (the TF-IDF
    one given `call_documents`), judges, differences (best model minus each, paired bootstrap),
    the ablation, and `selected`: the selection among `results`' models nested in the folds
    with its threshold for `objective` ("fixed": 0.5), over `repeats` CV seeds from `seed`
    beside the baselines on the same folds, and its abstention curve (magv.verify.selection;
    text models read `documents`). `repeats` 0 leaves `selected` out."""
    y, groups = np.asarray(y, dtype=np.int64), np.asarray(groups)
    boot = GroupBootstrap(groups, n_bootstrap, seed) if n_bootstrap > 0 else None
    splits = grouped_splits(y, groups, folds, seed)
    scorers = {}
    for name, m in results.items():
        s = ScoreColumns.from_proba(np.asarray(m["oof"]["proba"]))
        scorers[name] = s
        m.update(evaluate_scorer(y, s, boot))
        m["confusion"] = confusion(y.tolist(), s.proba.tolist())
    best = best_model(results, select_by)

    baselines: dict[str, dict[str, Any]] = {}
    base_scorers = baseline_oof(X, y, names, splits, groups, call_documents)
    agreement = agreement_oof(np.asarray(X), y, list(names), splits)
    for name, s in base_scorers.items():
        baselines[name] = {
            **evaluate_scorer(y, s, boot),
            "n": int(len(y)),
            "confusion": confusion(y.tolist(), s.pred.tolist()),
        }
    if agreement is not None:
        baselines["agreement"]["folds"] = agreement[1]

    differences: dict[str, Any] = {}
    if boot is not None:
        for name, s in base_scorers.items():
            differences[f"{best} - {name}"] = difference(y, scorers[best], s, boot)
    judges = []
    for model, (rows, s, without) in judge_rows(list(run_ids), judge_verdicts).items():
        entry = {
            "model": model,
            "n": int(len(rows)),
            "without_verdict": without,
            "judge": evaluate_scorer(y, s, boot, rows),
            "best_model": {"name": best, **evaluate_scorer(y, scorers[best], boot, rows)},
        }
        if boot is not None:
            entry["difference"] = difference(y, scorers[best], s, boot, rows)
            differences[f"{best} - judge {model}"] = entry["difference"]
        judges.append(entry)

    out = {
        "best": best,
        "select_by": select_by,
        "n": int(len(y)),
        "groups": int(len(np.unique(groups))),
        "bootstrap": {"replicates": n_bootstrap, "level": 0.95, "over": "CV groups"},
        "baselines": baselines,
        "judges": judges,
        "differences": differences,
        "ablation": [],
    }
    if ablation:
        model = make_verifier(best).model if best not in MODEL_NAMES else best
        out["ablation"] = ablate(
            X, y, groups, names, model, folds=folds, seed=seed, boot=boot, every_feature=results.get(model)
        )
    if repeats > 0 and len(np.unique(groups)) < MIN_NESTED_GROUPS:
        # an outer training fold of one group cannot be split again to choose inside it
        out["selected"] = {
            "skipped": f"the nested selection needs {MIN_NESTED_GROUPS} question groups; "
            f"these labels have {len(np.unique(groups))}"
        }
    elif repeats > 0:
        out["selected"] = selected(
            X,
            y,
            groups,
            names,
            list(results),
            documents,
            call_documents,
            folds=folds,
            seeds=range(seed, seed + repeats),
            select_by=select_by,
            objective=objective,
            target_precision=target_precision,
        )
    return out


def selected(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    names: Sequence[str],
    candidates: Sequence[str],
    documents: Sequence[str] | None,
    call_documents: Sequence[str] | None,
    *,
    folds: int,
    seeds: Iterable[int],
    select_by: str = "roc_auc",
    objective: str = "accuracy",
    target_precision: float = 0.9,
) -> dict[str, Any]:
    """The nested selection (magv.verify.selection.nested_cv) among `candidates` at each CV seed,
    beside the baselines on the same folds: per row ("selected", each baseline) the mean and
    spread over the seeds of accuracy, balanced accuracy and AUROC; the models and thresholds
    chosen at the first seed; its abstention curve there."""
    X = np.asarray(X, dtype=np.float64)
    inputs = {}
    for label in candidates:
        v = make_verifier(label)
        inputs[label] = (
            v,
            model_input(v, X[:, [list(names).index(f) for f in candidate_features(label, names)]], documents),
        )
    first: dict[str, Any] = {}

    def measure(seed: int) -> dict[str, float | None]:
        splits = grouped_splits(y, groups, folds, seed)
        n = nested_cv(
            inputs,
            y,
            groups,
            folds=folds,
            seed=seed,
            select_by=select_by,
            objective="accuracy" if objective == "fixed" else objective,
            target_precision=target_precision,
        )
        if objective == "fixed":
            n["pred"] = (n["proba"] >= 0.5).astype(np.int64)
            n["threshold"][:] = 0.5
        if not first:
            first.update(chosen=n["chosen"], abstention=abstention(y, n["proba"], n["threshold"]))
        scorers = {
            "selected": ScoreColumns(n["pred"], n["proba"], n["proba"]),
            **baseline_oof(X, y, names, splits, groups, call_documents),
        }
        return {
            f"{name}|{k}": point_metrics(y, s)[k]
            for name, s in scorers.items()
            for k in ("accuracy", "balanced_accuracy", "roc_auc")
        }

    stats = repeated(measure, list(seeds))
    rows: dict[str, dict[str, Any]] = {}
    for key, v in stats.items():
        name, metric = key.split("|")
        rows.setdefault(name, {})[metric] = v
    return {"objective": objective, "seeds": list(seeds), "rows": rows, **first}


def ablate(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    names: Sequence[str],
    model: str,
    *,
    folds: int,
    seed: int,
    boot: GroupBootstrap | None,
    every_feature: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The model cross-validated on each feature set of `feature_sets`, on the same folds;
    `every_feature`, the model's own result on all columns (with `oof`), is reused for "all"."""
    X = np.asarray(X, dtype=np.float64)
    rows = []
    for label, cols in feature_sets(list(names)):
        if len(cols) == X.shape[1] and every_feature is not None:
            r = every_feature
        else:
            r = cross_validate_models(X[:, cols], y, groups, folds=folds, seed=seed, names=[model])[model]
        m = evaluate_scorer(y, ScoreColumns.from_proba(np.asarray(r["oof"]["proba"])), boot)
        rows.append({"features": label, "model": model, "n_features": len(cols), **m})
    return rows


def without_oof(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Results without the per-row predictions, for summaries."""
    return {n: {k: v for k, v in m.items() if k != "oof"} for n, m in results.items()}


# -- tables --------------------------------------------------------------------------------------

TABLE_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "mcc", "brier")
_SHORT = {
    "accuracy": "accuracy",
    "balanced_accuracy": "bal. acc.",
    "roc_auc": "AUROC",
    "mcc": "MCC",
    "brier": "Brier",
}


def with_interval(m: Mapping[str, Any], k: str, sep: str = "\n") -> str:
    """'0.712' and '[0.650, 0.770]' on the next line (`sep`), the point alone without an interval,
    '–' when undefined."""
    v = m.get(k)
    if v is None:
        return "–"
    iv = (m.get("intervals") or {}).get(k)
    return f"{v:.3f}{sep}[{iv[0]:.3f}, {iv[1]:.3f}]" if iv else f"{v:.3f}"


def spread(v: Mapping[str, Any] | None) -> str:
    """'0.712 ± 0.020 [0.690, 0.730]' of a `repeated` entry; '–' without one."""
    if not v:
        return "–"
    return f"{v['mean']:.3f} ± {v['sd']:.3f} [{v['min']:.3f}, {v['max']:.3f}]"


def _row(label: str, m: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"": label, **extra, **{_SHORT[k]: with_interval(m, k) for k in TABLE_METRICS}}


def summary_tables(summary: Mapping[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(title, rows) of the evaluation in `TrainResult.summary()`'s shape, for the console."""
    first = summary["models"][0] if summary["models"] else {}
    boot = summary.get("bootstrap") or {}
    ci = (
        f"95 % intervals from {boot['replicates']} bootstrap draws of the {summary.get('groups')} CV groups"
        if boot.get("replicates")
        else "no intervals (--bootstrap 0)"
    )
    rows = [
        _row(m["name"] + (" *" if m["name"] == summary["best"] else ""), m, n=m.get("n"))
        for m in summary["models"]
    ]
    for name, m in summary.get("baselines", {}).items():
        rows.append(_row(f"baseline: {name}", m, n=m.get("n")))
    out = [
        (
            f"grouped {first.get('folds')}-fold CV on {summary.get('n')} labelled trajectories "
            f"({first.get('positives')} correct); * = best by {summary.get('select_by')}; {ci}",
            rows,
        )
    ]
    judge_rows_ = []
    for j in summary.get("judges", []):
        judge_rows_.append(_row(f"judge {j['model']}", j["judge"], n=j["n"]))
        judge_rows_.append(_row(f"{j['best_model']['name']} (same rows)", j["best_model"], n=j["n"]))
    if judge_rows_:
        out.append(("the LLM judge and the best model on the rows the judge gave a verdict for", judge_rows_))
    diffs = [
        {
            "": k,
            "metric": d["metric"],
            "n": d["n"],
            "difference": "–"
            if d["value"] is None
            else (
                f"{d['value']:+.3f}"
                + (f" [{d['interval'][0]:+.3f}, {d['interval'][1]:+.3f}]" if d["interval"] else "")
            ),
        }
        for k, d in summary.get("differences", {}).items()
    ]
    if diffs:
        out.append(("differences (paired bootstrap)", diffs))
    sel = summary.get("selected")
    if sel and "skipped" in sel:
        out.append(
            ("model and threshold chosen inside each training fold (nested CV)", [{"": sel["skipped"]}])
        )
    elif sel:
        out.append(
            (
                f"model and threshold ({sel['objective']}) chosen inside each training fold (nested CV), "
                f"beside the baselines on the same folds: mean ± sd [min, max] over CV seeds {sel['seeds']}",
                [
                    {
                        "": name,
                        **{_SHORT[k]: spread(m.get(k)) for k in ("accuracy", "balanced_accuracy", "roc_auc")},
                    }
                    for name, m in sel["rows"].items()
                ],
            )
        )
        out.append(
            (
                "abstention: verdicts within a band around the threshold left to a human (first seed)",
                [
                    {
                        "band": f"±{a['band']:.2f}",
                        "coverage": f"{a['coverage']:.3f}",
                        "accuracy": "–" if a["accuracy"] is None else f"{a['accuracy']:.3f}",
                    }
                    for a in sel["abstention"]
                ],
            )
        )
    abl = [
        _row(a["features"], a, model=a["model"], features=a["n_features"])
        for a in summary.get("ablation", [])
    ]
    if abl:
        out.append(("feature ablation: the paper's four features, each family added, all", abl))
    return out
