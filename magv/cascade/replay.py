"""The cascade replayed offline on a store that holds everything already: labelled trajectories
whose feature rows include alternates, the alternates' runs and the judge's verdicts. No model is
called and nothing is written; it is what the benchmark runs on a committed dataset.

Each labelled trajectory gets two out-of-fold probabilities from grouped cross-validation: on its
sibling features alone (the alternate features set to their neutral values, as before the
alternates existed) and on its full row. The model of a fold is trained on both variants of its
training rows, as the pipeline's one model scores both kinds of row. The steps of
`magv.cascade.loop` then run over a `ReplayOracle`, with the costs the store recorded: the
question's alternates' runs (tokens, agent turns) plus one reverse-engineer call (given, e.g. from
a dataset's provenance, else the mean of the store's call log; unknown counts 0 and the result
says so), and the judge verdict's tokens (unknown when no verdict has any, as in a file exported
before they were).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from magv.cascade.live import population
from magv.cascade.loop import CascadeOptions, Decision, JudgeOutcome, Row, decide
from magv.cascade.rules import agent_calls, cost_curve
from magv.models import JudgeVerdict
from magv.store import Store

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


class ReplayOracle:
    """Answers the loop from what is stored: the verifier's probability before alternates
    (`sibling`) and with them (`full`), each question's stored alternates' cost (`alternates`:
    question id -> prompt_tokens, completion_tokens, calls) and the judge's stored verdicts.
    Nothing is called and nothing is written."""

    judged_before = 0

    def __init__(
        self,
        rows: list[Row],
        labels: Mapping[str, bool],
        sibling: Mapping[str, float],
        full: Mapping[str, float],
        threshold: float,
        model_id: str,
        alternates: Mapping[str, dict[str, Any]],
        verdicts: Mapping[str, JudgeVerdict],
    ) -> None:
        self.rows, self.pending, self.labels = rows, list(rows), labels
        self.full, self.threshold, self.model_id = full, threshold, model_id
        self.alternates, self.verdicts = alternates, verdicts
        for r in rows:
            r.probability = sibling.get(r.run_id)
        per_question = [c["prompt_tokens"] + c["completion_tokens"] for c in alternates.values()]
        self.alternates_mean = float(np.mean(per_question)) if per_question else 0.0
        # a verdict without tokens (imported from an older file) has an unknown cost, not a free one
        self.judge_tokens = [t for v in verdicts.values() if (t := _tokens(v))]
        self.judge_mean = float(np.mean(self.judge_tokens)) if self.judge_tokens else None

    def answers(self) -> dict[str, bool]:
        return {}

    def models(self) -> AbstractContextManager[Any]:
        return nullcontext()

    def record(self, decisions: Sequence[Decision]) -> None:
        pass

    def can_add_alternates(self, row: Row) -> bool:
        return row.question_id in self.alternates  # without stored alternates the step cannot be replayed

    def can_judge(self, row: Row) -> bool:
        return row.run_id in self.verdicts

    def typical_cost(self, step: str, row: Row) -> float | None:
        return self.alternates_mean if step == "alternates" else self.judge_mean

    def cost(self, step: str, row: Row) -> float:
        if step == "alternates":
            c = self.alternates[row.question_id]
            return c["prompt_tokens"] + c["completion_tokens"]
        return _tokens(self.verdicts[row.run_id])

    def add_alternates(self, rows: Sequence[Row]) -> int:
        for r in rows:
            c = self.alternates[r.question_id]
            r.add_cost("alternates", c["prompt_tokens"], c["completion_tokens"], c["calls"])
        return int(sum(self.cost("alternates", r) for r in rows))

    def rescore(self, rows: Sequence[Row]) -> None:
        for r in rows:
            r.probability = self.full.get(r.run_id)

    def judge(self, rows: Sequence[Row]) -> dict[str, JudgeOutcome]:
        return {
            r.run_id: JudgeOutcome(
                bool(v.correct),
                v.prompt_tokens or 0,
                v.completion_tokens or 0,
                f"judge {v.model}: {v.reason or ''}",
            )
            for r in rows
            for v in [self.verdicts[r.run_id]]
        }


def _tokens(v: JudgeVerdict) -> int:
    return (v.prompt_tokens or 0) + (v.completion_tokens or 0)


def stored_verdicts(store: Store) -> tuple[str | None, dict[str, JudgeVerdict]]:
    """The judge model with the most stored verdicts, and its verdicts that say something."""
    model = store.judge_model_with_most_verdicts()
    return model, {v.run_id: v for v in store.judge_verdicts() if v.model == model and v.correct is not None}


def simulate(
    store: Store,
    options: CascadeOptions | None = None,
    *,
    model: str = "logreg",
    folds: int = 5,
    seed: int = 0,
    default_threshold: float = 0.5,
    reverse_cost: dict[str, Any] | None = None,
    groups: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The cascade's curve on the labelled trajectories, run by `magv.cascade.loop` with
    `options` (the threshold `default_threshold` unless they give one), with the accuracy of each
    single step deciding alone beside it (`single`). `reverse_cost` is one reverse-engineer
    call's `prompt_tokens` and `completion_tokens` (a `source` to report, `known` False for a
    stand-in), used instead of the mean of the store's `llm_calls` log. `groups` (run id -> CV
    group) replaces the question's group where given, as a benchmark's seed families do. `costs`
    says where each cost came from."""
    from magv.verify.features import FEATURE_NAMES, FEATURE_VERSION

    options = options or CascadeOptions()
    options.check()
    threshold = default_threshold if options.threshold is None else options.threshold
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
    ids = [r.run_id for r in rows]

    reverse = _reverse(store, reverse_cost)
    judge_model, verdicts = stored_verdicts(store)
    costs = alternate_costs(store, [r.question_id for r in rows], reverse)
    oracle = ReplayOracle(
        rows,
        labels,
        dict(zip(ids, p_sib.tolist())),
        dict(zip(ids, p_full.tolist())),
        threshold,
        f"{model} (out-of-fold)",
        costs,
        verdicts,
    )
    outcome = decide(oracle, options)

    truth = {r.run_id: bool(labels[r.run_id]) for r in rows}
    curve = cost_curve(
        [d.record() for d in outcome.decisions],
        truth,
        {r: bool(p >= threshold) for r, p in zip(ids, p_full)},
        oracle.judge_mean,
    )
    judge_tokens = oracle.judge_tokens
    judge_cost = {
        "model": judge_model,
        "verdicts": len(verdicts),
        "with_tokens": len(judge_tokens),
        "tokens_per_verdict": None if oracle.judge_mean is None else round(oracle.judge_mean, 1),
        "source": f"the tokens of {len(judge_tokens)} of {len(verdicts)} stored verdicts"
        if judge_tokens
        else ("unknown: no stored verdict has tokens (counted as 0)" if verdicts else "no judge verdicts"),
    }
    judged_rows = [r for r in ids if r in verdicts]
    single = {
        "majority": round(max(y.mean(), 1 - y.mean()), 4),
        "verifier_sibling_features": round(float(np.mean((p_sib >= threshold) == (y == 1))), 4),
        "verifier_with_alternates": round(float(np.mean((p_full >= threshold) == (y == 1))), 4),
        "judge": round(float(np.mean([verdicts[r].correct == truth[r] for r in judged_rows])), 4)
        if judged_rows
        else None,
        "judge_rows": len(judged_rows),
    }
    skipped = any(s.startswith("alternates: skipped") for s in outcome.budget.stopped)
    budget = outcome.budget
    return {
        "rows": len(rows),
        "model": model,
        "folds": folds,
        "tokens_spent": budget.tokens,
        "judged": budget.judged,
        "max_judged": budget.max_judged,
        "single": single,
        "curve": curve,
        "budget_stops": budget.stopped,
        "costs": {
            "reverse_call": reverse,
            "judge_verdict": judge_cost,
            "alternates": {
                "tokens_per_question": round(oracle.alternates_mean, 1),
                "run": options.alternates and not skipped,
            },
        },
    }


def reverse_call_cost(store: Store) -> dict[str, Any] | None:
    """The mean reverse-engineer call of the store's log (`prompt_tokens`, `completion_tokens`,
    over `calls`), None when it logged none."""
    return store.mean_call_cost("reverse")


def _reverse(store: Store, given: dict[str, Any] | None) -> dict[str, Any]:
    """One reverse call's cost and where it came from: `given`, else the log's mean, else 0."""
    if given is not None:  # a caller that knows the cost is unknown says so with known False
        return {
            "prompt_tokens": given["prompt_tokens"],
            "completion_tokens": given["completion_tokens"],
            "known": bool(given.get("known", True)),
            "source": str(given.get("source") or "given"),
        }
    logged = reverse_call_cost(store)
    if logged is not None:
        return {
            **logged,
            "known": True,
            "source": f"the mean of the {logged['calls']} reverse calls in llm_calls",
        }
    return {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "known": False,
        "source": "unknown: no reverse call logged and none given (counted as 0)",
    }


def alternate_costs(
    store: Store, question_ids: Sequence[str], reverse: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """question id -> what its alternates cost: one reverse-engineer call (`reverse`, by default
    the log's mean: the log does not say which question a call was for) plus its alternates' runs
    (tokens, agent turns)."""
    reverse = reverse or _reverse(store, None)
    wanted = set(question_ids)
    out: dict[str, dict[str, Any]] = {}
    for parent, run in store.alternate_runs():
        if parent not in wanted:
            continue
        c = out.setdefault(
            parent,
            {
                "prompt_tokens": round(reverse["prompt_tokens"]),
                "completion_tokens": round(reverse["completion_tokens"]),
                "calls": 1,
            },
        )
        c["prompt_tokens"] += run.prompt_tokens or 0
        c["completion_tokens"] += run.completion_tokens or 0
        c["calls"] += agent_calls(run.trajectory)
    return out
