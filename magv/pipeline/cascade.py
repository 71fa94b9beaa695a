"""cascade: decide each verified trajectory (the MCT of a base question with a feature row) by the
cheapest confident step — agreement rules, the verifier, the verifier after alternates, the LLM
judge — and queue the rest for a human, within an LLM budget (magv.verify.cascade holds the rules).

Decisions are written after each step, so a killed cascade keeps what it decided; a rerun skips
decided rows, and what the LLM steps made (alternates and their runs, judge verdicts) is in the
store and reused, not paid again. A row in the human queue is reconsidered by a rerun.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from magv.models import make_id, utcnow
from magv.pipeline.base import StageReport
from magv.pipeline.respond import BASE_ORIGINS
from magv.pipeline.session import Session
from magv.verify.cascade import (
    LLM_STEPS,
    RULE_FEATURES,
    Budget,
    agent_calls,
    alternates_pay,
    check_options,
    confident,
    cost_curve,
    rule_decisions,
)

# The estimate of a judgement before calling: its prompt at 3 characters a token, plus the reply.
JUDGE_REPLY_TOKENS = 64


def judge_prompt_estimate(question: str, trajectory: Any) -> float:
    from magv.agents.judge import render

    return len(render(question, trajectory)[0]) / 3 + JUDGE_REPLY_TOKENS


@dataclass
class CascadeOptions:
    max_judge_share: float = 0.2
    max_llm_tokens: int | None = None
    margin: float = 0.25  # the verifier decides when |p - threshold| >= margin
    rule_confidence: float = 0.9
    threshold: float | None = None  # default: the threshold the predictions were scored with
    alternates: bool = True
    judge: bool = True

    def check(self) -> None:
        check_options(self.max_judge_share, self.max_llm_tokens, self.margin, self.rule_confidence)


@dataclass
class Row:
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

    def decision(
        self, step: str, correct: bool | None, confidence: float | None, detail: str, cascade_id: str
    ):
        return {
            "run_id": self.run_id, "question_id": self.question_id, "step": step, "correct": correct,
            "confidence": confidence, "probability": self.probability, "detail": detail, "costs": self.costs,
            "prompt_tokens": sum(c["prompt_tokens"] for c in self.costs.values()),
            "completion_tokens": sum(c["completion_tokens"] for c in self.costs.values()),
            "calls": sum(c["calls"] for c in self.costs.values()), "cascade_id": cascade_id,
        }  # fmt: skip


def population(store: Any, imported: bool = False) -> list[Row]:
    """The cascade's trajectories: each base question's MCT that has a feature row. With
    `imported`, imported questions count as base questions too (an offline replay of an imported
    dataset; the live cascade cannot reverse-engineer alternates for them)."""
    from magv.verify.features import FEATURE_VERSION

    origins = (*BASE_ORIGINS, "import") if imported else BASE_ORIGINS
    mct = {m["run_id"]: m["question_id"] for m in store.mct()}
    questions = {q.id: q for q in store.questions(ids=list(set(mct.values()))) if q.origin in origins}
    run_ids, X = store.feature_matrix(FEATURE_VERSION, list(RULE_FEATURES) + ["n_alternates"])
    names = [*RULE_FEATURES, "n_alternates"]
    rows = []
    for run_id, values in zip(run_ids, X):
        qid = mct.get(run_id)
        if qid in questions:
            q = questions[qid]
            rows.append(Row(run_id, qid, q.group_id or qid, dict(zip(names, map(float, values)))))
    return rows


class Cascade:
    def __init__(self, sess: Session, options: CascadeOptions):
        options.check()
        self.sess, self.store, self.options = sess, sess.store, options
        self.cascade_id = make_id("cascade", sess.run_id, str(utcnow()))
        stored = {d["run_id"]: d for d in self.store.cascade_decisions()}
        self.queued = {run_id for run_id, d in stored.items() if d["correct"] is None}
        self.rows = population(self.store)
        self.decided = {r.run_id for r in self.rows if stored.get(r.run_id, {}).get("correct") is not None}
        self.pending = [r for r in self.rows if r.run_id not in self.decided]
        for r in self.pending:  # a queued row keeps what earlier invocations spent on it
            for step, c in (stored.get(r.run_id, {}).get("costs") or {}).items():
                r.add_cost(step, c.get("prompt_tokens", 0), c.get("completion_tokens", 0), c.get("calls", 0))
        self.labels = {k: v.correct for k, v in self.store.effective_labels().items()}
        judged_before = sum(1 for d in stored.values() if d["step"] == "judge" and d["correct"] is not None)
        self.budget = Budget(options.max_llm_tokens,
                             max(0, math.floor(options.max_judge_share * len(self.rows)) - judged_before))  # fmt: skip
        self.model_id = self.store.scored_model_id()
        self.threshold = options.threshold
        self.scored_threshold: float | None = None  # what the stored predictions were scored with
        self.report = StageReport("cascade", planned=len(self.pending))
        self.by_step: dict[str, int] = {}
        self.notes: list[str] = []
        self._read_predictions()

    def _read_predictions(self) -> None:
        if self.model_id is None:
            return
        preds = {p.run_id: p for p in self.store.predictions(self.model_id)}
        for r in self.rows:
            p = preds.get(r.run_id)
            r.probability = p.probability if p else None
            if p:
                self.scored_threshold = p.threshold
                if self.threshold is None:
                    self.threshold = p.threshold
        if self.threshold is None:
            self.threshold = self.sess.settings.verify.threshold

    def _decide(self, step: str, decided: list[tuple[Row, bool | None, float | None, str]]) -> None:
        """Store one step's decisions in one transaction; a verdict takes the row out of `pending`."""
        if not decided:
            return
        rows = [
            r.decision(step, correct, conf, detail, self.cascade_id) for r, correct, conf, detail in decided
        ]
        with self.store.transaction():
            self.report.written += self.store.add_cascade_decisions(rows) or 0
        done = {r.run_id for r, correct, _, _ in decided if correct is not None}
        self.pending = [r for r in self.pending if r.run_id not in done]
        self.decided |= done
        if done:
            self.by_step[step] = self.by_step.get(step, 0) + len(done)
        self.report.done += len(done)

    # -- the steps ---------------------------------------------------------------------------

    def agreement(self) -> None:
        rules = rule_decisions(
            {r.run_id: r.features for r in self.rows}, self.labels, self.options.rule_confidence
        )
        self._decide("agreement", [(r, rules[r.run_id].verdict, round(rules[r.run_id].confidence, 4),
                                    f"rule {rules[r.run_id].rule}") for r in self.pending if r.run_id in rules])  # fmt: skip

    def verifier(self, step: str = "verifier", only: set[str] | None = None) -> None:
        if self.model_id is None:
            self.notes.append(f"{step}: no scored verifier model (run `magv verify train` and `score`)")
            return
        t, margin = self.threshold, self.options.margin
        self._decide(step, [
            (r, r.probability >= t, round(abs(r.probability - t), 4), f"model {self.model_id}, p={r.probability:.3f}")
            for r in self.pending
            if (only is None or r.run_id in only) and confident(r.probability, t, margin)
        ])  # fmt: skip

    def _uncertainty(self, r: Row) -> float:
        return abs(r.probability - self.threshold) if r.probability is not None else float("inf")

    def alternates(self) -> None:
        """Reverse engineer alternates for the uncertain rows that have none, run the responder on
        them, recompute features and score again with the same model."""
        from magv.pipeline import features, reverse, score
        from magv.pipeline.runner import run_in_process, run_stage

        if not self.options.alternates or self.model_id is None:
            return
        wanted = [r for r in self.pending if r.features.get("n_alternates", 0) == 0]
        if not wanted:
            return
        cfg = self.sess.settings
        k = cfg.pipeline.alternates or 2
        if k != cfg.pipeline.alternates:
            cfg = cfg.model_copy(update={"pipeline": cfg.pipeline.model_copy(update={"alternates": k})})
        sess = dataclasses.replace(
            self.sess, settings=cfg, ctx=dataclasses.replace(self.sess.ctx, settings=cfg)
        )
        by_question = {r.question_id: r for r in wanted}
        wanted.sort(key=self._uncertainty)
        estimate = self._alternates_estimate(k, cfg.pipeline.alternate_runs)
        verdict = self._judge_estimate(wanted[0])
        if not alternates_pay(
            estimate, verdict, self.options.judge and self.budget.max_judged > self.budget.judged
        ):
            self.budget.stopped.append(
                f"alternates: skipped, ~{estimate:.0f} tokens a question against ~{verdict:.0f} for a verdict"
            )
            return
        spent_on: set[str] = set()
        while wanted:
            n = self.budget.affordable(estimate, len(wanted))
            if n == 0:
                self.budget.stopped.append(f"alternates: token budget left no room for {len(wanted)} more")
                break
            batch, wanted = wanted[:n], wanted[n:]
            ids = {r.question_id for r in batch}
            before = self.budget.used_tokens
            self._run_alternates(sess, ids, by_question, run_stage, reverse)
            spent_on |= {r.run_id for r in batch}
            measured = (self.budget.used_tokens - before) / len(batch)
            estimate = max(estimate, measured)
        if not spent_on:
            return
        run_in_process(sess, "cascade_features", features.run, self.store, cfg, alternates=True)
        # scored again as they were scored before (the stored verdicts keep their threshold)
        run_in_process(sess, "cascade_score", score.run, self.store, cfg, model_id=self.model_id,
                       threshold=self.scored_threshold)  # fmt: skip
        self.rows_changed()
        self.verifier("alternates", only=spent_on)

    def _alternates_estimate(self, k: int, runs_per_alternate: int) -> float:
        """Tokens the alternates of one question may cost, kept on the safe side: the largest
        reverse-engineer call in the log and k x R' times the largest responder run (0 when the log
        has none: then one question is run first and measured)."""
        row = self.store.query(
            "SELECT max(prompt_tokens + completion_tokens) AS t FROM llm_calls WHERE role='reverse' AND error IS NULL"
        )[0]
        runs = self.store.query("SELECT max(prompt_tokens + completion_tokens) AS t FROM runs")[0]["t"]
        return float(row["t"] or 0) + k * runs_per_alternate * float(runs or 0)

    def _judge_estimate(self, row: Row) -> float:
        """Tokens a verdict costs: the mean judge call of the log, else `row`'s prompt estimate."""
        mean = self.store.query(
            "SELECT avg(prompt_tokens + completion_tokens) AS t FROM llm_calls WHERE role='judge' AND error IS NULL"
        )[0]["t"]
        if mean:
            return float(mean)
        (run,) = [r for r in self.store.runs([row.question_id]) if r.id == row.run_id]
        (question,) = self.store.questions(ids=[row.question_id])
        return judge_prompt_estimate(question.text, run.trajectory)

    def _run_alternates(self, sess, ids, by_question, run_stage, reverse) -> None:
        from magv.pipeline import respond

        def reverse_write(store, ctx, results, report) -> None:
            reverse.write(store, ctx, results, report)
            for res in results:
                row = by_question[res.item.question.id]
                row.add_cost("alternates", res.reply.prompt_tokens, res.reply.completion_tokens, 1)
                self._spend(res.reply.prompt_tokens, res.reply.completion_tokens)

        parent = {}

        def respond_write(store, ctx, results, report) -> None:
            respond.write(store, ctx, results, report)
            for res in results:
                row = by_question.get(parent.get(res.question.id))
                for outcome in res.runs:
                    run = outcome.run
                    if row is not None:
                        row.add_cost("alternates", run.prompt_tokens, run.completion_tokens,
                                     agent_calls(run.trajectory))  # fmt: skip
                    self._spend(run.prompt_tokens, run.completion_tokens)

        items = [i for i in reverse.plan(self.store, sess.ctx) if i.question.id in ids]
        if items:
            run_stage(sess, reverse.STAGE, items=items, write=reverse_write)
        alternates = [i for i in respond.plan_alternates(self.store, sess.ctx) if i.question.parent_id in ids]
        parent.update({i.question.id: i.question.parent_id for i in alternates})
        if alternates:
            run_stage(sess, respond.ALTERNATES, items=alternates, write=respond_write)

    def _spend(self, prompt: int, completion: int) -> None:
        self.budget.spend(prompt + completion)
        self.report.prompt_tokens += prompt
        self.report.completion_tokens += completion

    def rows_changed(self) -> None:
        """Re-read features (n_alternates) and predictions after the alternates' runs."""
        fresh = {r.run_id: r for r in population(self.store)}
        for r in self.rows:
            if r.run_id in fresh:
                r.features = fresh[r.run_id].features
        self._read_predictions()

    def judge(self) -> None:
        from magv.agents.judge import split_failures
        from magv.pipeline import judge
        from magv.pipeline.runner import run_stage

        if not self.options.judge or not self.pending:
            return
        model = self.sess.settings.llm.role("judge")["model"]
        stored = {
            v.run_id: v for v in self.store.judge_verdicts() if v.model == model and v.correct is not None
        }
        order = sorted(self.pending, key=self._uncertainty)
        allowed = min(len(order), self.budget.max_judged - self.budget.judged)
        if allowed < len(order):
            self.budget.stopped.append(
                f"judge: --max-judge-share left room for {max(allowed, 0)} of {len(order)}"
            )
        chosen = order[: max(allowed, 0)]
        runs = {run.id: run for run in self.store.runs([r.question_id for r in chosen])}
        texts = {q.id: q.text for q in self.store.questions(ids=[r.question_id for r in chosen])}
        largest = self.store.query(
            "SELECT max(prompt_tokens + completion_tokens) AS t FROM llm_calls WHERE role='judge' AND error IS NULL"
        )[0]["t"]
        verdicts: dict[str, Any] = {}
        ask = []
        for r in chosen:
            if r.run_id in stored:
                v = stored[r.run_id]
                cost = (v.prompt_tokens or 0) + (v.completion_tokens or 0)
                if self.budget.affordable(cost, 1) == 0:
                    self.budget.stopped.append("judge: token budget reached")
                    break
                verdicts[r.run_id] = v
                self.budget.spend(cost)  # paid by an earlier `magv verify judge`; counted all the same
                continue
            item = judge.JudgeItem(r.run_id, texts[r.question_id], runs[r.run_id].trajectory)
            estimate = max(float(largest or 0), judge_prompt_estimate(item.question, item.trajectory))
            if self.budget.affordable(estimate, 1) == 0:
                self.budget.stopped.append("judge: token budget reached")
                break
            self.budget.spend(int(math.ceil(estimate)))  # reserved; settled when the verdict is back
            ask.append((item, int(math.ceil(estimate))))
        reserved = {item.run_id: est for item, est in ask}

        def keep(store, ctx, results, report) -> None:
            judge.write(store, ctx, results, report)
            for v in results:
                verdicts[v.run_id] = v
                self.budget.spend(-reserved.pop(v.run_id, 0))
                self._spend(v.prompt_tokens, v.completion_tokens)

        if ask:
            run_stage(self.sess, judge.STAGE, items=[item for item, _ in ask], write=keep)
        for est in reserved.values():  # judgements whose chunk failed: nothing was spent
            self.budget.spend(-est)
        by_id = {r.run_id: r for r in chosen}
        decided = []
        for run_id, v in verdicts.items():
            r = by_id[run_id]
            r.add_cost("judge", v.prompt_tokens or 0, v.completion_tokens or 0, 1)
            self.budget.judged += v.correct is not None
            kept, _ = split_failures([v])
            decided.append((r, v.correct if kept else None, None,
                            f"judge {v.model}: {v.reason or v.error or ''}"[:300]))  # fmt: skip
        # an unparsed verdict or a failed call decides nothing: the row goes on to the human queue
        self._decide("judge", [d for d in decided if d[1] is not None])

    def human(self) -> None:
        self._decide("human", [
            (r, None, None if r.probability is None else round(abs(r.probability - self.threshold), 4),
             "left for a human (`magv verify annotate --uncertain`)") for r in self.pending
        ])  # fmt: skip

    def answered(self) -> None:
        """Rows of the human queue that a human has labelled since (`magv verify annotate`) are
        decided by that label."""
        human = {lb.run_id: lb.correct for lb in self.store.labels() if lb.source == "human"}
        self._decide("human", [(r, human[r.run_id], None, "human label") for r in self.pending
                               if r.run_id in self.queued and r.run_id in human])  # fmt: skip

    def free_steps(self) -> None:
        """The steps that call no model: the human queue's answers, agreement rules, then the
        verifier's stored scores."""
        self.answered()
        self.agreement()
        if self.pending:
            self.verifier()

    def needs_llm(self) -> bool:
        return bool(self.pending) and (self.options.alternates or self.options.judge)

    def llm_steps(self, sess: Session | None = None) -> None:
        """Alternates, then the judge, on a session with model endpoints."""
        if sess is not None:
            self.sess = sess
        if self.pending:
            self.alternates()
        if self.pending:
            self.judge()

    def finish(self) -> StageReport:
        self.human()
        self.report.result = self.summary()
        return self.report

    def run(self) -> StageReport:
        self.free_steps()
        self.llm_steps()
        return self.finish()

    def summary(self) -> dict[str, Any]:
        return {
            "cascade_id": self.cascade_id, "trajectories": len(self.rows), "pending_at_start": self.report.planned,
            "decided_by": self.by_step, "queued_for_human": len(self.pending),
            "tokens_spent": self.budget.used_tokens, "max_llm_tokens": self.options.max_llm_tokens,
            "judged": self.budget.judged, "max_judged": self.budget.max_judged,
            "budget_stops": self.budget.stopped, "notes": self.notes,
            "curve": curve(self.store),
        }  # fmt: skip


def curve(store: Any) -> dict[str, Any]:
    """The accuracy-against-cost curve of every stored decision (magv.verify.cascade.cost_curve),
    with the judge-everything reference from the judge's mean tokens per verdict."""
    decisions = store.cascade_decisions()
    labels = {
        k: v.correct for k, v in store.effective_labels().items() if k in {d["run_id"] for d in decisions}
    }
    model_id = store.scored_model_id()
    fallback = {p.run_id: p.verdict for p in store.predictions(model_id)} if model_id else {}
    mean = store.query(
        "SELECT avg(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)) AS t FROM judge_verdicts "
        "WHERE error IS NULL OR error NOT LIKE 'LLM error:%'"
    )[0]["t"]
    human = {lb.run_id for lb in store.labels() if lb.source == "human"}
    return cost_curve(decisions, labels, fallback, None if mean is None else float(mean), human)


def run(sess: Session, options: CascadeOptions | None = None) -> StageReport:
    return Cascade(sess, options or CascadeOptions()).run()


__all__ = ["LLM_STEPS", "Cascade", "CascadeOptions", "curve", "population", "run"]
