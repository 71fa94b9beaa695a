"""Re-asking the user's agent about conversations the verifier is unsure of (opt-in).

MAG-V's agreement features compare a run with the other runs of its question; a production
conversation arrives alone, so they are NEUTRAL. With the user's agent configured
(`responder.agent` / `responder.agent_url`), `magv verify score --input` and `magv serve verifier`
may ask it the conversation's first customer question `runs` more times, through the agent
contract, and score the conversation again with those runs as its siblings (context only: they
get no verdict of their own).

    asker = Reasker(settings, ReaskOptions(runs=3, band=(0.3, 0.7)), endpoints=urls)
    outcome = asker.run(scorer, trajectories, groups, questions, rows, verdicts)
    outcome.verdicts, outcome.notes, outcome.summary

Which conversations: those whose first verdict's probability lies in `band`, the most uncertain
(nearest the threshold) first, at most `max_conversations` per call and what the `RateLimit`
grants (the service's, shared by its requests). A group of conversations (one question) is asked
once for all its members. The agent's answers are LLM calls of role `agent` (returned in
`outcome.calls` for the caller's call log) and a log line per question; a run that fails is counted
in its conversation's note, never raised; a conversation none of whose runs came back keeps its
first verdict and its note says why it was not re-asked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from magv.errors import BadInput
from magv.models import LLMCall, Trajectory, make_id
from magv.pipeline.worker import WorkerContext, run_chunk

log = logging.getLogger("magv.reask")


@dataclass(frozen=True)
class ReaskOptions:
    """runs: new runs asked per question (K). band: re-ask only conversations whose probability is
    in [low, high]. max_conversations: at most this many conversations re-asked per call."""

    runs: int = 3
    band: tuple[float, float] = (0.0, 1.0)
    max_conversations: int = 10

    def __post_init__(self) -> None:
        low, high = self.band
        if not 0.0 <= low <= high <= 1.0:
            raise BadInput(f"--reask-band: expected 0 <= low <= high <= 1, got {low:g},{high:g}")
        if not 1 <= self.runs <= 20:
            raise BadInput(f"--reask: expected 1 to 20 runs, got {self.runs}")
        if self.max_conversations < 1:
            raise BadInput(f"--reask-max: expected at least 1, got {self.max_conversations}")


def parse_band(text: str) -> tuple[float, float]:
    """The band LOW,HIGH as two probabilities; BadInput naming the option otherwise."""
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise BadInput(
            f"--reask-band {text!r}: expected LOW,HIGH (two probabilities, e.g. 0.3,0.7)"
        ) from None
    ReaskOptions(band=(low, high))  # checks the range
    return low, high


def check_agent(settings: Any) -> None:
    """Re-asking asks the user's agent: one must be configured."""
    if not (settings.responder.agent or settings.responder.agent_url):
        raise BadInput(
            "--reask: needs your agent to ask again: --agent or --agent-url "
            "(responder.agent / responder.agent_url in magv.toml; docs/agents.md)"
        )


class RateLimit:
    """At most `per_minute` conversations re-asked in any 60 s, across the callers sharing it."""

    def __init__(self, per_minute: int | None = None):
        self.per_minute = per_minute
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self, n: int) -> int:
        """How many of `n` conversations may be re-asked now (each granted one is counted)."""
        if self.per_minute is None:
            return n
        with self._lock:
            now = time.monotonic()
            while self._times and now - self._times[0] >= 60.0:
                self._times.popleft()
            granted = max(0, min(n, self.per_minute - len(self._times)))
            self._times.extend([now] * granted)
            return granted


@dataclass
class ReaskOutcome:
    """verdicts: one per scored row, re-scored where re-asked; notes: one per row (what was done
    and why); summary: totals for the answer; calls: the agent's calls, for a call log;
    rescored: the positions (into the rows) scored again, in the order of that scoring."""

    verdicts: list[Any]
    notes: list[dict[str, Any]]
    summary: dict[str, Any]
    calls: list[LLMCall] = field(default_factory=list)
    rescored: list[int] = field(default_factory=list)
    siblings: dict[Hashable, list[Trajectory]] = field(default_factory=dict)


class Reasker:
    """The agent of `settings` asked again about chosen conversations (module docstring), over the
    settings' domain. endpoints: the model endpoints per role (`magv.llm.managed_endpoints`), or a
    function that gives them on first use (so nothing is started when no conversation is chosen)."""

    def __init__(
        self,
        settings: Any,
        options: ReaskOptions,
        rate: RateLimit | None = None,
        endpoints: dict[str, list[str]] | Callable[[], dict[str, list[str]]] | None = None,
    ):
        check_agent(settings)
        self.settings = settings
        self.options = options
        self.rate = rate or RateLimit()
        self._endpoints = endpoints
        self._ctx: WorkerContext | None = None

    @property
    def ctx(self) -> WorkerContext:
        if self._ctx is None:
            urls = self._endpoints() if callable(self._endpoints) else self._endpoints
            self._ctx = WorkerContext(self.settings, urls or {})
        return self._ctx

    def run(
        self,
        scorer: Any,
        trajectories: Sequence[Trajectory],
        groups: Sequence[Hashable],
        questions: Mapping[Hashable, str],
        rows: Sequence[int] | None,
        verdicts: Sequence[Any],
    ) -> ReaskOutcome:
        started = time.perf_counter()
        rows = list(range(len(trajectories))) if rows is None else list(rows)
        opts = self.options
        low, high = opts.band
        notes: list[dict[str, Any]] = [{"reasked": False} for _ in rows]
        # The groups to ask, most uncertain first; a group counts its scored rows against the budget.
        distance: dict[Hashable, float] = {}
        members: dict[Hashable, list[int]] = {}
        for pos, (r, v) in enumerate(zip(rows, verdicts, strict=True)):
            key = groups[r]
            members.setdefault(key, []).append(pos)
            if low <= v.probability <= high:
                distance[key] = min(distance.get(key, 1.0), abs(v.probability - v.threshold))
            else:
                notes[pos]["reason"] = f"probability {v.probability:.3f} outside the band {low:g}-{high:g}"
        chosen: list[Hashable] = []
        budget = opts.max_conversations
        for key in sorted(distance, key=lambda k: (distance[k], min(members[k]))):
            n = len(members[key])
            if n > budget:
                reason = f"over the budget of {opts.max_conversations} conversations per call"
            elif self.rate.take(n) < n:
                reason = f"over the rate limit of {self.rate.per_minute} conversations a minute"
            else:
                chosen.append(key)
                budget -= n
                continue
            for pos in members[key]:
                notes[pos]["reason"] = reason
        outcome = ReaskOutcome(list(verdicts), notes, {})
        results = self._ask(chosen, questions, outcome) if chosen else {}
        extra = {key: [r.trajectory for r in rs if not r.llm_errors] for key, rs in results.items()}
        extra = {key: ts for key, ts in extra.items() if ts}
        if extra:
            self._rescore(scorer, trajectories, groups, questions, rows, extra, outcome)
        for key, rs in results.items():
            failures = [e for r in rs for e in r.llm_errors]
            for pos in members[key]:
                note = outcome.notes[pos]
                note.update(
                    asked=len(rs), runs=len(extra.get(key, [])), failed=sum(bool(r.llm_errors) for r in rs)
                )
                if failures:
                    note["error"] = failures[0]
                if key not in extra:
                    note["reason"] = "the agent gave no run: " + (failures[0] if failures else "no answer")
        outcome.siblings = extra
        outcome.summary = self._summary(results, outcome, len(distance), time.perf_counter() - started)
        return outcome

    def _ask(
        self, chosen: list[Hashable], questions: Mapping[Hashable, str], outcome: ReaskOutcome
    ) -> dict[Hashable, list[Any]]:
        """The agent's runs per chosen group; an agent that cannot be run at all fails every one."""
        items = [(key, questions[key], i) for key in chosen for i in range(self.options.runs)]
        results: dict[Hashable, list[Any]] = {key: [] for key in chosen}
        try:
            chunk = run_chunk(self.ctx, items, _ask_one)
        except Exception as exc:  # the domain, the sandbox, the loop: recorded, never fatal
            from magv.agents.contract import RunResult

            error = f"re-asking failed: {type(exc).__name__}: {exc}"
            log.warning(error)
            for key, _, _ in items:
                results[key].append(RunResult(Trajectory(status="llm_error"), llm_errors=[error]))
            return results
        outcome.calls = chunk.calls
        for key, result in chunk.results:
            results[key].append(result)
        for key in chosen:
            rs = results[key]
            log.info("re-asked %s about %r: %d runs, %d failed, %d tokens",
                     self.ctx.agent().identity.label(), questions[key][:80],
                     sum(not r.llm_errors for r in rs), sum(bool(r.llm_errors) for r in rs),
                     sum(r.prompt_tokens + r.completion_tokens for r in rs))  # fmt: skip
        return results

    def _rescore(
        self,
        scorer: Any,
        trajectories: Sequence[Trajectory],
        groups: Sequence[Hashable],
        questions: Mapping[Hashable, str],
        rows: list[int],
        extra: dict[Hashable, list[Trajectory]],
        outcome: ReaskOutcome,
    ) -> None:
        """Score the rows of the re-asked groups again, with the groups' members and the new runs."""
        index: dict[int, int] = {}
        sub_t: list[Trajectory] = []
        sub_g: list[Hashable] = []
        for i, key in enumerate(groups):
            if key in extra:
                index[i] = len(sub_t)
                sub_t.append(trajectories[i])
                sub_g.append(key)
        for key, ts in extra.items():
            sub_t += ts
            sub_g += [key] * len(ts)
        positions = [pos for pos, r in enumerate(rows) if groups[r] in extra]
        again = scorer.score(
            sub_t, sub_g, {k: questions[k] for k in extra}, [index[rows[p]] for p in positions]
        )
        for pos, verdict in zip(positions, again, strict=True):
            before = outcome.verdicts[pos]
            outcome.notes[pos].update(
                reasked=True,
                evidence=["siblings"],
                before={"verdict": "correct" if before.correct else "incorrect", "probability": before.probability},
            )  # fmt: skip
            outcome.verdicts[pos] = verdict
        outcome.rescored = positions

    def _summary(
        self, results: dict[Hashable, list[Any]], outcome: ReaskOutcome, candidates: int, seconds: float
    ) -> dict[str, Any]:
        runs = [r for rs in results.values() for r in rs]
        costs = [r.cost_usd for r in runs if r.cost_usd is not None]
        notes = outcome.notes
        changed = sum(
            n.get("reasked", False) and (n["before"]["verdict"] == "correct") != v.correct
            for n, v in zip(notes, outcome.verdicts, strict=True)
        )
        return {
            "agent": WorkerContext(self.settings).agent().identity.as_dict(), "runs_per_question": self.options.runs,
            "band": list(self.options.band), "candidates": candidates,
            "reasked": sum(n["reasked"] for n in notes), "questions": len(results),
            "agent_runs": sum(not r.llm_errors for r in runs), "agent_failures": sum(bool(r.llm_errors) for r in runs),
            "prompt_tokens": sum(r.prompt_tokens for r in runs), "completion_tokens": sum(r.completion_tokens for r in runs),
            "cost_usd": round(sum(costs), 6) if costs else None, "changed": changed,
            "not_reasked": sum(not n["reasked"] for n in notes), "seconds": round(seconds, 3),
        }  # fmt: skip


async def _ask_one(client: Any, ctx: WorkerContext, item: tuple[Hashable, str, int]) -> tuple[Hashable, Any]:
    key, question, i = item
    result, _ = await ctx.run_agent(client, question, run_index=i, context_key=f"reask:{make_id(question)}")
    return key, result
