"""The cascade's one decision loop. Each step is a small strategy: given the pending rows, the
budget, an oracle and the options, it returns its decisions, with what it spent on each row in the
row's `costs`. The oracle answers what the steps ask of the world: `magv.cascade.live` runs the
stages and reads the call log, `magv.cascade.replay` reads out-of-fold scores, stored alternates'
costs and stored verdicts. Both run this loop with the same options, so they decide alike.

The steps in order: the human queue's answers (rows a human labelled since an earlier cascade),
agreement rules, the verifier, alternates then the verifier again, the LLM judge, and the human
queue for what is left.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from magv.cascade.rules import alternates_pay, check_options, confident, rule_decisions


@dataclass
class CascadeOptions:
    max_judge_share: float = 0.2
    max_llm_tokens: int | None = None
    margin: float = 0.25  # the verifier decides when |p - threshold| >= margin
    rule_confidence: float = 0.9
    threshold: float | None = None  # default: the threshold the predictions were scored with
    alternates: bool = True
    judge: bool = True
    reask: int = 0  # live: runs of the user's agent for lone imported conversations (pipeline/reask.py)
    reask_max: int = 10

    def check(self) -> None:
        check_options(self.max_judge_share, self.max_llm_tokens, self.margin, self.rule_confidence)


@dataclass
class Row:
    """A trajectory the cascade decides: the MCT of a base question, its rule features, the
    verifier's probability, and what each step spent on it."""

    run_id: str
    question_id: str
    group: str
    features: dict[str, float]
    probability: float | None = None
    costs: dict[str, dict[str, float]] = field(default_factory=dict)

    def add_cost(self, step: str, prompt: int, completion: int, calls: float) -> None:
        c = self.costs.setdefault(step, {"prompt_tokens": 0, "completion_tokens": 0, "calls": 0})
        c["prompt_tokens"] += prompt
        c["completion_tokens"] += completion
        c["calls"] += calls


@dataclass
class Decision:
    row: Row
    step: str
    correct: bool | None  # None: left for a human
    confidence: float | None
    detail: str

    def record(self) -> dict[str, Any]:
        """The `cascade_decisions` row (without its `cascade_id`)."""
        costs = self.row.costs
        return {
            "run_id": self.row.run_id,
            "question_id": self.row.question_id,
            "step": self.step,
            "correct": self.correct,
            "confidence": self.confidence,
            "probability": self.row.probability,
            "detail": self.detail,
            "costs": costs,
            "prompt_tokens": sum(c["prompt_tokens"] for c in costs.values()),
            "completion_tokens": sum(c["completion_tokens"] for c in costs.values()),
            "calls": sum(c["calls"] for c in costs.values()),
        }


@dataclass
class JudgeOutcome:
    """What the judge said about a row (`correct` None: unparsed or failed) and its tokens."""

    correct: bool | None
    prompt_tokens: int
    completion_tokens: int
    detail: str


@dataclass
class Budget:
    """What one invocation may spend: LLM tokens (prompt + completion) and judge verdicts, and
    what it has spent. Only actual spends are counted."""

    max_tokens: int | None
    max_judged: int
    tokens: int = 0
    judged: int = 0
    stopped: list[str] = field(default_factory=list)  # where a step stopped for the budget, and why

    def affordable(self, estimates: Sequence[float]) -> int:
        """How many of the items, taken in order, fit in the tokens left at their estimated cost.
        An item estimated at 0 (no cost known yet) is taken alone, to be measured."""
        if self.max_tokens is None:
            return len(estimates)
        left = self.max_tokens - self.tokens
        n = 0
        for estimate in estimates:
            if estimate <= 0:
                return 1 if n == 0 and left > 0 else n
            if estimate > left:
                break
            left -= estimate
            n += 1
        return n

    def spend(self, tokens: int) -> None:
        if tokens < 0:
            raise ValueError(f"a spend of {tokens} tokens: expected 0 or more")
        self.tokens += tokens

    @property
    def judge_left(self) -> int:
        return max(0, self.max_judged - self.judged)


class Oracle(Protocol):
    """What the steps ask of the world. `rows` are all the trajectories the cascade covers,
    `pending` those still undecided at the start, `judged_before` the judge verdicts earlier
    invocations decided with (they count towards the judge share)."""

    rows: list[Row]
    pending: list[Row]
    judged_before: int
    labels: Mapping[str, bool]
    model_id: str | None  # the verifier that scored `Row.probability`; None: nothing is scored
    threshold: float

    def answers(self) -> dict[str, bool]:
        """run id -> a human's label, for rows an earlier cascade queued for a human."""
        ...

    def models(self) -> AbstractContextManager[Any]:
        """The model endpoints, open while the LLM steps run."""
        ...

    def can_add_alternates(self, row: Row) -> bool: ...

    def can_judge(self, row: Row) -> bool: ...

    def typical_cost(self, step: str, row: Row) -> float | None:
        """The tokens the step is expected to spend on a row like `row` (None: unknown)."""
        ...

    def cost(self, step: str, row: Row) -> float:
        """The tokens the step may spend on `row`, on the safe side: what the budget checks."""
        ...

    def add_alternates(self, rows: Sequence[Row]) -> int:
        """Alternates for the rows' questions, their costs added to the rows; tokens spent."""
        ...

    def rescore(self, rows: Sequence[Row]) -> None:
        """The verifier's probability of the rows again, now with their alternates."""
        ...

    def judge(self, rows: Sequence[Row]) -> dict[str, JudgeOutcome]: ...

    def record(self, decisions: Sequence[Decision]) -> None:
        """Keep one step's decisions (the live oracle stores them at once)."""
        ...


Step = Callable[[list[Row], Budget, Oracle, CascadeOptions], list[Decision]]


def _uncertainty(threshold: float) -> Callable[[Row], float]:
    return lambda r: abs(r.probability - threshold) if r.probability is not None else math.inf


def answered(pending: list[Row], budget: Budget, oracle: Oracle, options: CascadeOptions) -> list[Decision]:
    """Rows of the human queue that a human has labelled since are decided by that label."""
    human = oracle.answers()
    return [Decision(r, "human", human[r.run_id], None, "human label") for r in pending if r.run_id in human]


def agreement(pending: list[Row], budget: Budget, oracle: Oracle, options: CascadeOptions) -> list[Decision]:
    rules = rule_decisions(
        {r.run_id: r.features for r in oracle.rows}, oracle.labels, options.rule_confidence
    )
    return [
        Decision(r, "agreement", d.verdict, round(d.confidence, 4), f"rule {d.rule}")
        for r in pending
        if (d := rules.get(r.run_id)) is not None
    ]


def verifier(
    pending: list[Row], budget: Budget, oracle: Oracle, options: CascadeOptions, step: str = "verifier"
) -> list[Decision]:
    if oracle.model_id is None:
        return []
    t = oracle.threshold
    return [
        Decision(
            r,
            step,
            r.probability >= t,
            round(abs(r.probability - t), 4),
            f"model {oracle.model_id}, p={r.probability:.3f}",
        )
        for r in pending
        if r.probability is not None and confident(r.probability, t, options.margin)
    ]


def alternates(pending: list[Row], budget: Budget, oracle: Oracle, options: CascadeOptions) -> list[Decision]:
    """Alternates for the uncertain rows that have none, most uncertain first and while the
    budget lasts, then the verifier again on those rows. Skipped when a question's alternates
    are expected to cost more than a verdict of the judge that would decide it next."""
    if not options.alternates or oracle.model_id is None:
        return []
    wanted = sorted((r for r in pending if oracle.can_add_alternates(r)), key=_uncertainty(oracle.threshold))
    if not wanted:
        return []
    estimate = oracle.typical_cost("alternates", wanted[0]) or 0.0
    verdict = oracle.typical_cost("judge", wanted[0])
    if not alternates_pay(estimate, verdict, options.judge and budget.judge_left > 0):
        budget.stopped.append(
            f"alternates: skipped, ~{estimate:.0f} tokens a question against ~{verdict:.0f} for a verdict"
        )
        return []
    spent_on: list[Row] = []
    while wanted:
        n = budget.affordable([oracle.cost("alternates", r) for r in wanted])
        if n == 0:
            budget.stopped.append(f"alternates: token budget left no room for {len(wanted)} more")
            break
        batch, wanted = wanted[:n], wanted[n:]
        budget.spend(oracle.add_alternates(batch))
        spent_on += batch
    if not spent_on:
        return []
    oracle.rescore(spent_on)
    return verifier(spent_on, budget, oracle, options, step="alternates")


def judge(pending: list[Row], budget: Budget, oracle: Oracle, options: CascadeOptions) -> list[Decision]:
    """The judge on the most uncertain rows, within the judge share and the token budget; an
    unparsed verdict or a failed call decides nothing (the row goes on to the human queue)."""
    if not options.judge or not pending:
        return []
    order = sorted((r for r in pending if oracle.can_judge(r)), key=_uncertainty(oracle.threshold))
    allowed = min(len(order), budget.judge_left)
    if allowed < len(order):
        budget.stopped.append(f"judge: --max-judge-share left room for {allowed} of {len(order)}")
    chosen = order[:allowed]
    n = budget.affordable([oracle.cost("judge", r) for r in chosen])
    if n < len(chosen):
        budget.stopped.append("judge: token budget reached")
    chosen = chosen[:n]
    verdicts = oracle.judge(chosen) if chosen else {}
    out = []
    for r in chosen:
        v = verdicts.get(r.run_id)
        if v is None:  # its call failed: nothing was spent
            continue
        r.add_cost("judge", v.prompt_tokens, v.completion_tokens, 1)
        budget.spend(v.prompt_tokens + v.completion_tokens)
        if v.correct is not None:
            budget.judged += 1
            out.append(Decision(r, "judge", v.correct, None, v.detail[:300]))
    return out


def human(pending: list[Row], budget: Budget, oracle: Oracle, options: CascadeOptions) -> list[Decision]:
    t = oracle.threshold
    return [
        Decision(
            r,
            "human",
            None,
            None if r.probability is None else round(abs(r.probability - t), 4),
            "left for a human (`magv verify annotate --uncertain`)",
        )
        for r in pending
    ]


FREE_STEPS: tuple[Step, ...] = (answered, agreement, verifier)
LLM_STEPS: tuple[Step, ...] = (alternates, judge)


@dataclass
class Outcome:
    """What one cascade decided: every decision in order, the rows left for a human, the budget."""

    rows: int
    pending_at_start: int
    decisions: list[Decision]
    pending: list[Row]
    budget: Budget
    notes: list[str]

    @property
    def decided_by(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.decisions:
            if d.correct is not None:
                out[d.step] = out.get(d.step, 0) + 1
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "trajectories": self.rows,
            "pending_at_start": self.pending_at_start,
            "decided_by": self.decided_by,
            "queued_for_human": len(self.pending),
            "tokens_spent": self.budget.tokens,
            "max_llm_tokens": self.budget.max_tokens,
            "judged": self.budget.judged,
            "max_judged": self.budget.max_judged,
            "budget_stops": self.budget.stopped,
            "notes": self.notes,
        }


def decide(oracle: Oracle, options: CascadeOptions) -> Outcome:
    """Run the steps in order over the oracle's pending rows; each step's decisions are handed to
    `oracle.record` as soon as it is done, so a killed cascade keeps what it decided."""
    options.check()
    judge_share = math.floor(options.max_judge_share * len(oracle.rows))
    budget = Budget(options.max_llm_tokens, max(0, judge_share - oracle.judged_before))
    out = Outcome(len(oracle.rows), len(oracle.pending), [], list(oracle.pending), budget, [])

    def take(step: Step) -> None:
        decisions = step(out.pending, budget, oracle, options)
        if not decisions:
            return
        oracle.record(decisions)
        out.decisions += decisions
        done = {d.row.run_id for d in decisions if d.correct is not None}
        out.pending = [r for r in out.pending if r.run_id not in done]

    for step in FREE_STEPS:
        if out.pending:
            take(step)
    if out.pending and oracle.model_id is None:
        out.notes.append("verifier: no scored verifier model (run `magv verify train` and `score`)")
    if out.pending and (options.alternates or options.judge):
        with oracle.models():
            for step in LLM_STEPS:
                if out.pending:
                    take(step)
    take(human)
    return out
