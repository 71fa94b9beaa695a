"""The cascade's rules without a store or a model server: the agreement rules over a question's R
runs, when the verifier is confident, when alternates pay, and the accuracy-against-cost curve.

A trajectory is decided by the cheapest step that is confident, in the order of `STEPS`:
agreement rules (free), the verifier on its stored score (free), the verifier again after
reverse-engineered alternates were run for it (reverse engineer + responder calls; only where they
cost less than a verdict, `alternates_pay`), the LLM judge (one call), and what is left waits for
a human. `magv.cascade.loop` runs the steps.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from magv.errors import BadInput
from magv.models import Trajectory, call_groups

STEPS = ("agreement", "verifier", "alternates", "judge", "human")
LLM_STEPS = ("alternates", "judge")


@dataclass(frozen=True)
class Rule:
    """An agreement rule: when `applies` to a feature row, it says `verdict`."""

    name: str
    verdict: bool
    applies: Callable[[Mapping[str, float]], bool]
    why: str


def _unanimous(f: Mapping[str, float]) -> bool:
    return (
        f["n_runs"] >= 2
        and f["mct_share"] >= 1.0
        and f["is_mct"] >= 1
        and f["status_ok"] >= 1
        and f["has_response"] >= 1
        and f["n_tool_errors"] == 0
        and f["n_invalid"] == 0
    )


def _no_majority(f: Mapping[str, float]) -> bool:
    return f["n_runs"] >= 2 and f["mct_share"] <= 0.5


def _broken(f: Mapping[str, float]) -> bool:
    return f["status_ok"] < 1 or f["has_response"] < 1


RULES: tuple[Rule, ...] = (
    Rule("unanimous", True, _unanimous,
         "all R runs made the same calls, the run ended with a response and no tool failed"),
    Rule("no_majority", False, _no_majority, "at most half of the R runs share the MCT's calls"),
    Rule("broken", False, _broken, "the run did not end with status ok and a response"),
)  # fmt: skip
RULE_FEATURES = ("n_runs", "mct_share", "is_mct", "status_ok", "has_response", "n_tool_errors", "n_invalid")


@dataclass
class RuleDecision:
    verdict: bool
    confidence: float
    rule: str


def rule_decisions(
    rows: Mapping[str, Mapping[str, float]], labels: Mapping[str, bool], min_confidence: float
) -> dict[str, RuleDecision]:
    """run_id -> the first rule that applies and is trusted. A rule's confidence is its precision
    on the labelled rows it covers, Laplace-smoothed ((agree + 1) / (covered + 2)) and leave-one-out
    (a row's own label never counts towards the confidence that decides it), so a rule without
    labelled evidence (confidence 0.5) decides nothing."""
    covered: dict[str, list[str]] = {}
    first: dict[str, Rule] = {}
    for run_id, f in rows.items():
        for rule in RULES:
            if rule.applies(f):
                first[run_id] = rule
                covered.setdefault(rule.name, []).append(run_id)
                break
    agree = {
        name: sum(labels[r] == _rule(name).verdict for r in ids if r in labels)
        for name, ids in covered.items()
    }
    seen = {name: sum(r in labels for r in ids) for name, ids in covered.items()}
    out = {}
    for run_id, rule in first.items():
        own = run_id in labels
        k = agree[rule.name] - (own and labels[run_id] == rule.verdict)
        n = seen[rule.name] - own
        confidence = (k + 1) / (n + 2)
        if confidence >= min_confidence:
            out[run_id] = RuleDecision(rule.verdict, confidence, rule.name)
    return out


def _rule(name: str) -> Rule:
    return next(r for r in RULES if r.name == name)


def confident(probability: float | None, threshold: float, margin: float) -> bool:
    """The verifier decides when its probability is at least `margin` from the threshold."""
    return probability is not None and abs(probability - threshold) >= margin


def alternates_pay(alternates_tokens: float, judge_tokens: float | None, judge_on: bool) -> bool:
    """Whether the alternates step is worth its cost: it must be expected to cost less per
    trajectory than the judge's verdict, the step after it, which decides too: a question's
    alternates are whole agent runs, a verdict is one short call. Without a judge, or with its cost
    unknown, the alternates run."""
    return not judge_on or judge_tokens is None or alternates_tokens < judge_tokens


def agent_calls(trajectory: Trajectory) -> int:
    """LLM calls an agent run made: one per parallel group of tool calls, one per unusable reply,
    and the call that answered."""
    tool_calls = [s.call for s in trajectory.steps if s.kind == "tool" and s.call is not None]
    invalid = sum(1 for s in trajectory.steps if s.kind == "invalid")
    return len(call_groups(tool_calls)) + invalid + (trajectory.response is not None)


def check_options(
    max_judge_share: float, max_llm_tokens: int | None, margin: float, rule_confidence: float
) -> None:
    if not 0.0 <= max_judge_share <= 1.0:
        raise BadInput(f"--max-judge-share {max_judge_share}: expected a share from 0 to 1")
    if max_llm_tokens is not None and max_llm_tokens < 0:
        raise BadInput(f"--max-llm-tokens {max_llm_tokens}: expected 0 or more tokens")
    if not 0.0 <= margin <= 0.5:
        raise BadInput(f"--margin {margin}: expected a distance from the threshold from 0 to 0.5")
    if not 0.5 <= rule_confidence <= 1.0:
        raise BadInput(f"--rule-confidence {rule_confidence}: expected a confidence from 0.5 to 1")


def _per_1000(total: float, n: int) -> float | None:
    return round(total / n * 1000, 3) if n else None


def cost_curve(
    decisions: Sequence[Mapping[str, Any]],
    labels: Mapping[str, bool],
    fallback: Mapping[str, bool] | None = None,
    judge_tokens_per_verdict: float | None = None,
    human: Collection[str] = (),
) -> dict[str, Any]:
    """Accuracy against cumulative cost as the steps are added, one point per step.

    Point k is the cascade stopped after step k: the rows decided by steps 1..k, the tokens and
    calls those steps spent (on any row), per 1,000 trajectories the cascade covers. `accuracy` is
    over the labelled rows decided so far; `accuracy_all` gives every labelled row a verdict, an
    undecided one the verifier's (`fallback`), and leaves out rows with neither. At the human step
    the rows of the queue that now carry a human label (`human`) count as decided by it."""
    n = len(decisions)
    points = []
    tokens = calls = 0.0
    decided: dict[str, bool] = {}
    for step in STEPS:
        rows = [d for d in decisions if d["step"] == step]
        for d in decisions:
            c = (d.get("costs") or {}).get(step) or {}
            tokens += (c.get("prompt_tokens") or 0) + (c.get("completion_tokens") or 0)
            calls += c.get("calls") or 0
        for d in rows:
            if d["correct"] is not None:
                decided[d["run_id"]] = bool(d["correct"])
            elif step == "human" and d["run_id"] in labels and d["run_id"] in human:
                decided[d["run_id"]] = labels[d["run_id"]]
        hits = [decided[r] == y for r, y in labels.items() if r in decided]
        every = [decided.get(r, (fallback or {}).get(r)) for r in labels]
        scored = [v == labels[r] for r, v in zip(labels, every) if v is not None]
        points.append(
            {
                "step": step,
                "decided_here": len(rows),
                "decided": len(decided),
                "coverage": round(len(decided) / n, 4) if n else None,
                "labelled_decided": len(hits),
                "accuracy": round(sum(hits) / len(hits), 4) if hits else None,
                "accuracy_all": round(sum(scored) / len(scored), 4) if scored else None,
                "tokens": int(tokens),
                "calls": round(calls, 3),
                "tokens_per_1000": _per_1000(tokens, n),
                "calls_per_1000": _per_1000(calls, n),
            }
        )
    judge_all = None if judge_tokens_per_verdict is None else round(judge_tokens_per_verdict * 1000, 3)
    for p in points:  # each point's tokens against judging every trajectory (None: judge cost unknown)
        spent = p["tokens_per_1000"]
        p["share_of_judge_everything"] = (
            round(spent / judge_all, 4) if judge_all and spent is not None else None
        )
    final = points[-1]["tokens_per_1000"] if points else None
    return {
        "trajectories": n,
        "points": points,
        "judge_everything_tokens_per_1000": judge_all,
        "share_of_judge_everything": round(final / judge_all, 4) if judge_all and final is not None else None,
    }
