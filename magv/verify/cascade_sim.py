"""The cascade replayed offline on a store that holds everything already: labelled trajectories
whose feature rows include alternates, the alternates' runs and the judge's verdicts. No model is
called and nothing is written; it is what the benchmark runs on a committed dataset.

Each labelled trajectory gets two out-of-fold probabilities from grouped cross-validation: on its
sibling features alone (the alternate features set to their neutral values, as before the
alternates existed) and on its full row. The model of a fold is trained on both variants of its
training rows, as the pipeline's one model scores both kinds of row. The steps then run as in
`magv.pipeline.cascade`, with the costs the store recorded: the question's alternates' runs (tokens,
agent turns) plus one reverse-engineer call (given, e.g. from a dataset's provenance, else the mean
of the store's call log; unknown counts 0 and the result says so), and the judge verdict's tokens
(unknown when no verdict has any, as in a file exported before they were).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from magv.verify.cascade import agent_calls, alternates_pay, confident, cost_curve, rule_decisions

_AGGREGATES = ("_mean", "_min", "_max")


def sibling_only(X: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """The rows as they were before alternates: alternate comparisons neutral (0.5), counts 0."""
    out = X.copy()
    for j, n in enumerate(names):
        if n.endswith(_AGGREGATES) and not n.startswith("sibling_"):
            out[:, j] = 0.5
        elif n in ("n_alternates", "n_alternate_runs"):
            out[:, j] = 0.0
    return out


def _oof(
    X: np.ndarray, X_sib: np.ndarray, y: np.ndarray, groups: list[str], model: str, folds: int, seed: int
):
    from sklearn.model_selection import GroupKFold

    from magv.verify.models import Verifier

    p_sib, p_full = np.full(len(y), np.nan), np.full(len(y), np.nan)
    k = min(folds, len(set(groups)))
    for train, test in GroupKFold(n_splits=k).split(X, y, groups):
        if len(set(y[train].tolist())) < 2:
            p_sib[test] = p_full[test] = float(y[train][0])
            continue
        v = Verifier(model, random_state=seed).fit(
            np.vstack([X[train], X_sib[train]]), np.concatenate([y[train]] * 2)
        )
        p_sib[test], p_full[test] = v.proba_correct(X_sib[test]), v.proba_correct(X[test])
    return p_sib, p_full


def simulate(
    store: Any, *, model: str = "logreg", folds: int = 5, seed: int = 0, threshold: float = 0.5,
    margin: float = 0.25, rule_confidence: float = 0.9, max_judge_share: float = 0.2,
    max_llm_tokens: int | None = None, reverse_cost: dict[str, Any] | None = None,
    groups: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The cascade's curve on the labelled trajectories, with the accuracy of each single step
    deciding alone beside it (`single`). `reverse_cost` is one reverse-engineer call's
    `prompt_tokens` and `completion_tokens` (a `source` to report, `known` False for a stand-in),
    used instead of the mean of the store's `llm_calls` log. `groups` (run id -> CV group) replaces
    the question's group where given, as a benchmark's seed families do. `costs` says where each
    cost came from."""
    from magv.pipeline.cascade import population
    from magv.verify.features import FEATURE_NAMES, FEATURE_VERSION

    labels = {k: v.correct for k, v in store.effective_labels().items()}
    rows = [r for r in population(store, imported=True) if r.run_id in labels]
    if len(rows) < 4 or len({labels[r.run_id] for r in rows}) < 2:
        return {"rows": len(rows), "error": "needs at least 4 labelled trajectories of both classes"}
    names = list(FEATURE_NAMES)
    run_ids, X_all = store.feature_matrix(FEATURE_VERSION, names)
    index = {r: i for i, r in enumerate(run_ids)}
    X = X_all[[index[r.run_id] for r in rows]]
    y = np.array([int(labels[r.run_id]) for r in rows])
    cv_groups = [(groups or {}).get(r.run_id) or r.group for r in rows]
    p_sib, p_full = _oof(X, sibling_only(X, names), y, cv_groups, model, folds, seed)

    reverse = _reverse(store, reverse_cost)
    costs = _alternate_costs(store, [r.question_id for r in rows], reverse)
    model_name = store.scalar(
        "SELECT model FROM judge_verdicts GROUP BY model ORDER BY count(*) DESC LIMIT 1"
    )
    verdicts = {
        v.run_id: v for v in store.judge_verdicts() if v.model == model_name and v.correct is not None
    }

    decided: dict[str, dict[str, Any]] = {}
    pending = list(range(len(rows)))
    rules = rule_decisions({r.run_id: r.features for r in rows}, labels, rule_confidence)

    def decide(i: int, step: str, correct: bool | None, row_costs: dict[str, Any]) -> None:
        decided[rows[i].run_id] = {
            "run_id": rows[i].run_id,
            "step": step,
            "correct": correct,
            "costs": row_costs,
        }

    spent: dict[int, dict[str, Any]] = {i: {} for i in pending}
    for i in list(pending):
        if rows[i].run_id in rules:
            decide(i, "agreement", rules[rows[i].run_id].verdict, {})
        elif confident(p_sib[i], threshold, margin):
            decide(i, "verifier", bool(p_sib[i] >= threshold), {})
    pending = [i for i in pending if rows[i].run_id not in decided]
    tokens = 0
    pending.sort(key=lambda i: abs(p_sib[i] - threshold))
    # a verdict without tokens (imported from an older file) has an unknown cost, not a free one
    judge_tokens = [
        t for v in verdicts.values() if (t := (v.prompt_tokens or 0) + (v.completion_tokens or 0))
    ]
    judge_mean = float(np.mean(judge_tokens)) if judge_tokens else None
    per_question = [c["prompt_tokens"] + c["completion_tokens"] for c in costs.values()]
    alternates_mean = float(np.mean(per_question)) if per_question else 0.0
    pays = alternates_pay(alternates_mean, judge_mean, max_judge_share > 0)
    for i in pending if pays else ():
        c = costs.get(rows[i].question_id)
        if c is None:
            continue  # no alternates stored for it: the step cannot be replayed
        if (
            max_llm_tokens is not None
            and tokens + c["prompt_tokens"] + c["completion_tokens"] > max_llm_tokens
        ):
            break
        tokens += c["prompt_tokens"] + c["completion_tokens"]
        spent[i]["alternates"] = c
        if confident(p_full[i], threshold, margin):
            decide(i, "alternates", bool(p_full[i] >= threshold), spent[i])
    pending = sorted(
        (i for i in pending if rows[i].run_id not in decided), key=lambda i: abs(p_full[i] - threshold)
    )
    allowed = math.floor(max_judge_share * len(rows))
    judged = 0
    for i in pending:
        v = verdicts.get(rows[i].run_id)
        if v is None or judged >= allowed:
            continue
        cost = (v.prompt_tokens or 0) + (v.completion_tokens or 0)
        if max_llm_tokens is not None and tokens + cost > max_llm_tokens:
            break
        tokens += cost
        judged += 1
        spent[i]["judge"] = {"prompt_tokens": v.prompt_tokens or 0, "completion_tokens": v.completion_tokens or 0,
                             "calls": 1}  # fmt: skip
        decide(i, "judge", bool(v.correct), spent[i])
    for i in pending:
        if rows[i].run_id not in decided:
            decide(i, "human", None, spent[i])

    truth = {r.run_id: bool(labels[r.run_id]) for r in rows}
    curve = cost_curve(list(decided.values()), truth, {r.run_id: bool(p_full[i] >= threshold) for i, r in
                                                         enumerate(rows)}, judge_mean)  # fmt: skip
    judge_cost = {
        "model": model_name, "verdicts": len(verdicts), "with_tokens": len(judge_tokens),
        "tokens_per_verdict": None if judge_mean is None else round(judge_mean, 1),
        "source": f"the tokens of {len(judge_tokens)} of {len(verdicts)} stored verdicts" if judge_tokens
        else ("unknown: no stored verdict has tokens (counted as 0)" if verdicts else "no judge verdicts"),
    }  # fmt: skip
    judged_rows = [r.run_id for r in rows if r.run_id in verdicts]
    single = {
        "majority": round(max(y.mean(), 1 - y.mean()), 4),
        "verifier_sibling_features": round(float(np.mean((p_sib >= threshold) == (y == 1))), 4),
        "verifier_with_alternates": round(float(np.mean((p_full >= threshold) == (y == 1))), 4),
        "judge": round(float(np.mean([verdicts[r].correct == truth[r] for r in judged_rows])), 4)
        if judged_rows else None,
        "judge_rows": len(judged_rows),
    }  # fmt: skip
    return {"rows": len(rows), "model": model, "folds": folds, "tokens_spent": tokens, "judged": judged,
            "max_judged": allowed, "single": single, "curve": curve,
            "costs": {"reverse_call": reverse, "judge_verdict": judge_cost,
                      "alternates": {"tokens_per_question": round(alternates_mean, 1), "run": pays}}}  # fmt: skip


def reverse_call_cost(store: Any) -> dict[str, Any] | None:
    """The mean reverse-engineer call of the store's log (`prompt_tokens`, `completion_tokens`,
    over `calls`), None when it logged none."""
    row = store.query(
        "SELECT avg(coalesce(prompt_tokens, 0)) AS p, avg(coalesce(completion_tokens, 0)) AS c, count(*) AS n "
        "FROM llm_calls WHERE role = 'reverse'"
    )[0]
    if not row["n"]:
        return None
    return {"prompt_tokens": round(row["p"], 1), "completion_tokens": round(row["c"], 1), "calls": row["n"]}


def _reverse(store: Any, given: dict[str, Any] | None) -> dict[str, Any]:
    """One reverse call's cost and where it came from: `given`, else the log's mean, else 0."""
    if given is not None:  # a caller that knows the cost is unknown says so with known False
        return {"prompt_tokens": given["prompt_tokens"], "completion_tokens": given["completion_tokens"],
                "known": bool(given.get("known", True)), "source": str(given.get("source") or "given")}  # fmt: skip
    logged = reverse_call_cost(store)
    if logged is not None:
        return {
            **logged,
            "known": True,
            "source": f"the mean of the {logged['calls']} reverse calls in llm_calls",
        }
    return {"prompt_tokens": 0, "completion_tokens": 0, "known": False,
            "source": "unknown: no reverse call logged and none given (counted as 0)"}  # fmt: skip


def _alternate_costs(
    store: Any, question_ids: Sequence[str], reverse: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """question id -> what its alternates cost: one reverse-engineer call (`reverse`; the log
    does not say which question a call was for) plus its alternates' runs (tokens, agent turns)."""
    from magv.models import Trajectory

    wanted = set(question_ids)
    out: dict[str, dict[str, Any]] = {}
    rows = store.query(
        "SELECT q.parent_id, r.prompt_tokens, r.completion_tokens, r.trajectory FROM runs r "
        "JOIN questions q ON q.id = r.question_id WHERE q.origin = 'alternate'"
    )
    for r in rows:
        if r["parent_id"] not in wanted:
            continue
        c = out.setdefault(r["parent_id"], {"prompt_tokens": round(reverse["prompt_tokens"]),
                                            "completion_tokens": round(reverse["completion_tokens"]), "calls": 1})  # fmt: skip
        c["prompt_tokens"] += r["prompt_tokens"] or 0
        c["completion_tokens"] += r["completion_tokens"] or 0
        c["calls"] += agent_calls(Trajectory.model_validate_json(r["trajectory"]))
    return out
