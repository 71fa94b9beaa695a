"""Re-asking the user's agent about conversations the verifier is unsure of (opt-in).

MAG-V's agreement features compare a run with the other runs of its question; a production
conversation arrives alone, so they are NEUTRAL. With the user's agent configured
(`responder.agent` / `responder.agent_url`), `magv verify score --input` and `magv serve verifier`
may ask it the conversation's first customer question `runs` more times, through the agent
contract, and score the conversation again with those runs as its siblings (context only: they
get no verdict of their own). `magv verify cascade --reask` stores such runs for the lone imported
conversations of a store instead (`reask_imported`).

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
from typing import TYPE_CHECKING, Any

from magv.errors import BadInput
from magv.models import LLMCall, Trajectory, make_id
from magv.pipeline.worker import WorkerContext, run_chunk
from magv.verify.budget import WorkCancelled
from magv.verify.features import Alternate

if TYPE_CHECKING:
    from magv.store import Store

log = logging.getLogger("magv.reask")


@dataclass(frozen=True)
class ReaskOptions:
    """runs: new runs asked per question (K). band: re-ask only conversations whose probability is
    in [low, high]. max_conversations: at most this many conversations re-asked per call.
    alternates: alternate questions reverse-engineered from the conversation's answer by magv's
    reverse engineer (one call of role `reverse`), each asked of the agent `alternate_runs` times."""

    runs: int = 3
    band: tuple[float, float] = (0.0, 1.0)
    max_conversations: int = 10
    alternates: int = 0
    alternate_runs: int = 1

    def __post_init__(self) -> None:
        low, high = self.band
        if not 0.0 <= low <= high <= 1.0:
            raise BadInput(f"--reask-band: expected 0 <= low <= high <= 1, got {low:g},{high:g}")
        if not 1 <= self.runs <= 20:
            raise BadInput(f"--reask: expected 1 to 20 runs, got {self.runs}")
        if self.max_conversations < 1:
            raise BadInput(f"--reask-max: expected at least 1, got {self.max_conversations}")
        if not 0 <= self.alternates <= 10 or not 1 <= self.alternate_runs <= 10:
            raise BadInput(
                f"--reask-alternates: expected 0 to 10 alternates of 1 to 10 runs, got {self.alternates} "
                f"of {self.alternate_runs}"
            )


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

    def take(self, n: int) -> bool:
        """Whether `n` more conversations may be re-asked now; if so they are counted."""
        if self.per_minute is None:
            return True
        with self._lock:
            now = time.monotonic()
            while self._times and now - self._times[0] >= 60.0:
                self._times.popleft()
            if len(self._times) + n > self.per_minute:
                return False
            self._times.extend([now] * n)
            return True


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
    alternates: dict[Hashable, list[Alternate]] = field(default_factory=dict)


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
        cancelled: threading.Event | None = None,
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
            elif not self.rate.take(n):
                reason = f"over the rate limit of {self.rate.per_minute} conversations a minute"
            else:
                chosen.append(key)
                budget -= n
                continue
            for pos in members[key]:
                notes[pos]["reason"] = reason
        outcome = ReaskOutcome(list(verdicts), notes, {})
        first = {key: trajectories[rows[pos[0]]] for key, pos in members.items()}
        asked = self._ask(chosen, questions, first, outcome, cancelled) if chosen else {}
        siblings = {key: a.trajectories() for key, a in asked.items()}
        alternates = {key: a.alternate_evidence() for key, a in asked.items()}
        evidence = {key for key in asked if siblings[key] or alternates[key]}
        if evidence:
            self._rescore(
                scorer, trajectories, groups, questions, rows, siblings, alternates, evidence, outcome
            )
        for key, a in asked.items():
            failures = a.errors()
            for pos in members[key]:
                note = outcome.notes[pos]
                note.update(
                    asked=len(a.runs), runs=len(siblings[key]), failed=len(a.runs) - len(siblings[key])
                )
                if self.options.alternates:
                    note.update(
                        alternates=len(alternates[key]),
                        alternate_runs=sum(len(x.trajectories) for x in alternates[key]),
                    )
                if failures:
                    note["error"] = failures[0]
                if key not in evidence:
                    note["reason"] = "the agent gave no run: " + (failures[0] if failures else "no answer")
        outcome.siblings = siblings
        outcome.alternates = alternates
        outcome.summary = self._summary(asked, outcome, len(distance), time.perf_counter() - started)
        return outcome

    def _ask(
        self,
        chosen: list[Hashable],
        questions: Mapping[Hashable, str],
        first: Mapping[Hashable, Trajectory],
        outcome: ReaskOutcome,
        cancelled: threading.Event | None = None,
    ) -> dict[Hashable, _Asked]:
        """What the agent answered per chosen group; an agent that cannot be run fails every run.
        WorkCancelled (the caller set `cancelled`) stops the agent's runs in flight and is raised."""
        items = [_Ask(key, questions[key], _answer(first[key]), self.options) for key in chosen]
        try:
            chunk = run_chunk(self.ctx, items, _ask_group, cancelled)
        except WorkCancelled:
            raise
        except Exception as exc:  # the domain, the sandbox, the loop: recorded, never fatal
            from magv.agents.contract import RunResult

            error = f"re-asking failed: {type(exc).__name__}: {exc}"
            log.warning(error)
            failed = RunResult(Trajectory(status="llm_error"), llm_errors=[error])
            return {key: _Asked([failed] * self.options.runs) for key in chosen}
        outcome.calls = chunk.calls
        asked = {item.key: a for item, a in zip(items, chunk.results, strict=True)}
        for key, a in asked.items():
            log.info(
                "re-asked %s about %r: %d of %d runs, %d alternates, %d tokens",
                self.ctx.agent().identity.label(),
                questions[key][:80],
                len(a.trajectories()),
                len(a.runs),
                len(a.alternate_evidence()),
                a.tokens(),
            )
        return asked

    def _rescore(
        self,
        scorer: Any,
        trajectories: Sequence[Trajectory],
        groups: Sequence[Hashable],
        questions: Mapping[Hashable, str],
        rows: list[int],
        siblings: dict[Hashable, list[Trajectory]],
        alternates: dict[Hashable, list[Alternate]],
        evidence: set[Hashable],
        outcome: ReaskOutcome,
    ) -> None:
        """Score the rows of the re-asked groups again: the groups' members, the new runs as their
        siblings, and the alternates' runs."""
        index: dict[int, int] = {}
        sub_t: list[Trajectory] = []
        sub_g: list[Hashable] = []
        for i, key in enumerate(groups):
            if key in evidence:
                index[i] = len(sub_t)
                sub_t.append(trajectories[i])
                sub_g.append(key)
        for key in evidence:
            sub_t += siblings[key]
            sub_g += [key] * len(siblings[key])
        positions = [pos for pos, r in enumerate(rows) if groups[r] in evidence]
        again = scorer.score(
            sub_t,
            sub_g,
            {k: questions[k] for k in evidence},
            [index[rows[p]] for p in positions],
            alternates={k: alternates[k] for k in evidence if alternates[k]},
        )
        for pos, verdict in zip(positions, again, strict=True):
            key = groups[rows[pos]]
            before = outcome.verdicts[pos]
            outcome.notes[pos].pop("reason", None)  # a member outside the band is scored again with its group
            outcome.notes[pos].update(
                reasked=True,
                evidence=[
                    name
                    for name, have in (("siblings", siblings[key]), ("alternates", alternates[key]))
                    if have
                ],
                before={
                    "verdict": "correct" if before.correct else "incorrect",
                    "probability": before.probability,
                },
            )
            outcome.verdicts[pos] = verdict
        outcome.rescored = positions

    def _summary(
        self, asked: dict[Hashable, _Asked], outcome: ReaskOutcome, candidates: int, seconds: float
    ) -> dict[str, Any]:
        runs = [r for a in asked.values() for r in a.all_runs()]
        costs = [r.cost_usd for r in runs if r.cost_usd is not None]
        replies = [a.reverse for a in asked.values() if a.reverse is not None]
        notes = outcome.notes
        changed = sum(
            n.get("reasked", False) and (n["before"]["verdict"] == "correct") != v.correct
            for n, v in zip(notes, outcome.verdicts, strict=True)
        )
        out = {
            "agent": WorkerContext(self.settings).agent().identity.as_dict(),
            "runs_per_question": self.options.runs,
            "band": list(self.options.band),
            "candidates": candidates,
            "reasked": sum(n["reasked"] for n in notes),
            "questions": len(asked),
            "agent_runs": sum(not r.llm_errors for r in runs),
            "agent_failures": sum(bool(r.llm_errors) for r in runs),
            "prompt_tokens": sum(r.prompt_tokens for r in runs),
            "completion_tokens": sum(r.completion_tokens for r in runs),
            "cost_usd": round(sum(costs), 6) if costs else None,
            "changed": changed,
            "not_reasked": sum(not n["reasked"] for n in notes),
            "seconds": round(seconds, 3),
        }
        if self.options.alternates:
            out["reverse"] = {
                "calls": len(replies),
                "failed": sum(r.error is not None for r in replies),
                "prompt_tokens": sum(r.prompt_tokens for r in replies),
                "completion_tokens": sum(r.completion_tokens for r in replies),
                "alternates": sum(len(a.alternate_evidence()) for a in asked.values()),
            }
        return out


def _answer(t: Trajectory) -> str:
    """The conversation's answer, what alternates are reverse-engineered from (as for an MCT)."""
    from magv.pipeline.reverse import trajectory_response

    return trajectory_response(t)


@dataclass(frozen=True)
class _Ask:
    key: Hashable
    question: str
    answer: str
    options: ReaskOptions


@dataclass
class _Asked:
    """The agent's runs of a group's question, and its alternates with their runs."""

    runs: list[Any]
    alternates: list[tuple[str, list[Any]]] = field(default_factory=list)
    reverse: Any = None  # the reverse engineer's QuestionsReply

    def all_runs(self) -> list[Any]:
        return self.runs + [r for _, rs in self.alternates for r in rs]

    def trajectories(self) -> list[Trajectory]:
        return [r.trajectory for r in self.runs if not r.llm_errors]

    def alternate_evidence(self) -> list[Alternate]:
        alts = [Alternate(q, [r.trajectory for r in rs if not r.llm_errors]) for q, rs in self.alternates]
        return [a for a in alts if a.trajectories]

    def errors(self) -> list[str]:
        out = [e for r in self.all_runs() for e in r.llm_errors]
        return out + (
            [f"reverse engineer: {self.reverse.error}"] if self.reverse and self.reverse.error else []
        )

    def tokens(self) -> int:
        return sum(r.prompt_tokens + r.completion_tokens for r in self.all_runs())


async def _ask_group(client: Any, ctx: WorkerContext, item: _Ask) -> _Asked:
    """K runs of the question; with alternates, k alternates reverse-engineered from the
    conversation's answer (stating the question's identifiers, checked as the pipeline checks
    them) and R' runs of each that passes."""
    import asyncio

    opts = item.options

    async def runs(question: str, n: int) -> list[Any]:
        key = f"reask:{make_id(question)}"
        done = await asyncio.gather(
            *(ctx.run_agent(client, question, run_index=i, context_key=key) for i in range(n))
        )
        return [result for result, _ in done]

    asked = _Asked(await runs(item.question, opts.runs))
    if opts.alternates:
        from magv.agents.reverse import reverse_engineer
        from magv.quality import identifier_patterns, identifiers, repair_all

        domain = ctx.domain()
        patterns = identifier_patterns(domain.tools)
        ids = identifiers(item.question, patterns)
        asked.reverse = await reverse_engineer(
            client,
            domain,
            item.answer,
            opts.alternates,
            context_key=f"reask-reverse:{make_id(item.question, item.answer)}",
            identifiers=ids,
        )
        for text, check in repair_all(asked.reverse.questions, None, ids, patterns):
            if check.passed:  # one that failed is not the same request: not answered (as in the pipeline)
                asked.alternates.append((text, await runs(text, opts.alternate_runs)))
    return asked


def reask_imported(sess: Any, runs: int, most: int) -> Any:
    """`magv verify cascade --reask N`: the lone imported conversations (imported questions with
    one finished run; at most `most`, in the store's order) get N runs of the user's agent stored as their
    siblings, so that the features stage gives them sibling features. The imported run stays its
    question's MCT: the conversation the cascade decides. Returns the stage's report."""
    from magv.pipeline import respond
    from magv.pipeline.base import AgentStage
    from magv.pipeline.runner import run_stage

    check_agent(sess.settings)
    store = sess.store
    # One finished run: a lone conversation (runs a failed re-ask left are replaced by this one's).
    done = store.finished_run_indices()
    lone = [q for q in store.questions(origin="import") if len(done.get(q.id, ())) == 1][:most]
    items = [respond.RespondItem(q, [max(done[q.id]) + 1 + i for i in range(runs)]) for q in lone]

    def write(store: Store, ctx: Any, results: list[Any], report: Any) -> None:
        with store.transaction():
            for r in results:
                for outcome in r.runs:
                    run = outcome.run
                    report.written += store.add_runs([run])
                    report.prompt_tokens += run.prompt_tokens
                    report.completion_tokens += run.completion_tokens
                    report.llm_errors += run.trajectory.status == "llm_error"
                    if outcome.llm_errors:
                        report.errors.append(
                            f"question {r.question.id} run {run.run_index}: {outcome.llm_errors[-1]}"
                        )
                report.done += 1

    stage = AgentStage("reask", lambda store, ctx: items, respond.work, write)
    return run_stage(sess, stage, items=items)
