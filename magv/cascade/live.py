"""The live cascade: `magv.cascade.loop` over an oracle that runs the stages. It decides each
verified trajectory (the MCT of a base question with a feature row) and stores the decisions.

Decisions are written after each step, so a killed cascade keeps what it decided; a rerun skips
decided rows, and what the LLM steps made (alternates and their runs, judge verdicts) is in the
store and reused, not paid again. A row in the human queue is reconsidered by a rerun.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from magv.cascade.loop import CascadeOptions, Decision, JudgeOutcome, Row, decide
from magv.cascade.rules import RULE_FEATURES, agent_calls, cost_curve
from magv.models import make_id, utcnow
from magv.pipeline.base import StageReport
from magv.pipeline.respond import BASE_ORIGINS
from magv.pipeline.session import Session
from magv.store import Store

# The estimate of a judgement before calling: its prompt at 3 characters a token, plus the reply.
JUDGE_REPLY_TOKENS = 64


def judge_prompt_estimate(question: str, trajectory: Any) -> float:
    from magv.agents.judge import render

    return len(render(question, trajectory)[0]) / 3 + JUDGE_REPLY_TOKENS


def population(store: Store, imported: bool = False) -> list[Row]:
    """The cascade's trajectories: each base question's MCT that has a feature row. With
    `imported`, imported questions count as base questions too (an offline replay of an imported
    dataset; the live cascade cannot reverse-engineer alternates for them)."""
    from magv.verify.features import FEATURE_VERSION

    origins = (*BASE_ORIGINS, "import") if imported else BASE_ORIGINS
    mct = {m["run_id"]: m["question_id"] for m in store.mct()}
    questions = {q.id: q for q in store.questions(ids=list(set(mct.values()))) if q.origin in origins}
    names = [*RULE_FEATURES, "n_alternates"]
    run_ids, X = store.feature_matrix(FEATURE_VERSION, names)
    rows = []
    for run_id, values in zip(run_ids, X):
        qid = mct.get(run_id)
        if qid in questions:
            q = questions[qid]
            rows.append(Row(run_id, qid, q.group_id or qid, dict(zip(names, map(float, values)))))
    return rows


class LiveOracle:
    """Answers the loop from the store and by running the stages: the reverse engineer and the
    responder for alternates, the features and score stages after them, the judge. `connect`
    opens a session with model endpoints for the LLM steps; without it `sess` has them."""

    def __init__(
        self,
        sess: Session,
        options: CascadeOptions,
        connect: Callable[[], AbstractContextManager[Session]] | None = None,
    ) -> None:
        self.sess, self.store, self.options, self._connect = sess, sess.store, options, connect
        self._llm: Session | None = None
        self.cascade_id = make_id("cascade", sess.run_id, str(utcnow()))
        stored = {d["run_id"]: d for d in self.store.cascade_decisions()}
        self.queued = {run_id for run_id, d in stored.items() if d["correct"] is None}
        self.rows = population(self.store, imported=bool(options.reask))
        self.pending = [r for r in self.rows if stored.get(r.run_id, {}).get("correct") is None]
        for r in self.pending:  # a queued row keeps what earlier invocations spent on it
            for step, c in (stored.get(r.run_id, {}).get("costs") or {}).items():
                r.add_cost(step, c.get("prompt_tokens", 0), c.get("completion_tokens", 0), c.get("calls", 0))
        self.judged_before = sum(
            1 for d in stored.values() if d["step"] == "judge" and d["correct"] is not None
        )
        self.labels = {k: v.correct for k, v in self.store.effective_labels().items()}
        self.model_id = self.store.scored_model_id()
        self.scored_threshold: float | None = None  # what the stored predictions were scored with
        self.threshold: float = options.threshold if options.threshold is not None else math.nan
        self._read_predictions()
        self.report = StageReport("cascade", planned=len(self.pending))
        self._alternates_measured = 0.0
        self._judge_stored: dict[str, Any] | None = None

    # -- what the store says ---------------------------------------------------------------

    def _read_predictions(self) -> None:
        preds = {p.run_id: p for p in self.store.predictions(self.model_id)} if self.model_id else {}
        for r in self.rows:
            p = preds.get(r.run_id)
            r.probability = p.probability if p else None
            if p:
                self.scored_threshold = p.threshold
        if math.isnan(self.threshold):
            t = self.scored_threshold
            self.threshold = t if t is not None else self.sess.settings.verify.threshold

    def answers(self) -> dict[str, bool]:
        return {
            lb.run_id: lb.correct
            for lb in self.store.labels()
            if lb.source == "human" and lb.run_id in self.queued
        }

    def record(self, decisions: Sequence[Decision]) -> None:
        with self.store.transaction():
            written = self.store.add_cascade_decisions(
                [{**d.record(), "cascade_id": self.cascade_id} for d in decisions]
            )
        self.report.written += written or 0
        self.report.done += sum(d.correct is not None for d in decisions)

    # -- costs ------------------------------------------------------------------------------

    def _settings(self):
        """The settings with at least 2 alternates a question (the cascade needs some)."""
        cfg = self.sess.settings
        if cfg.pipeline.alternates:
            return cfg
        return cfg.model_copy(update={"pipeline": cfg.pipeline.model_copy(update={"alternates": 2})})

    def _alternates_estimate(self) -> float:
        """Tokens the alternates of one question may cost, kept on the safe side: the largest
        reverse-engineer call in the log and k x R' times the largest responder run (0 when the log
        has none: then one question is run first and measured), or more when measured so."""
        p = self._settings().pipeline
        logged = (self.store.call_tokens("reverse", "max") or 0.0) + p.alternates * p.alternate_runs * (
            self.store.largest_run_tokens()
        )
        return max(logged, self._alternates_measured)

    def _judge_prompt(self, row: Row) -> float:
        (run,) = [r for r in self.store.runs([row.question_id]) if r.id == row.run_id]
        (question,) = self.store.questions(ids=[row.question_id])
        return judge_prompt_estimate(question.text, run.trajectory)

    def _stored_verdicts(self) -> dict[str, Any]:
        if self._judge_stored is None:
            model = self.sess.settings.llm.role("judge")["model"]
            self._judge_stored = {
                v.run_id: v for v in self.store.judge_verdicts() if v.model == model and v.correct is not None
            }
        return self._judge_stored

    def typical_cost(self, step: str, row: Row) -> float | None:
        if step == "alternates":
            return self._alternates_estimate()
        # a verdict: the mean judge call of the log, else the row's prompt estimate
        return self.store.call_tokens("judge", "avg") or self._judge_prompt(row)

    def cost(self, step: str, row: Row) -> float:
        if step == "alternates":
            return self._alternates_estimate()
        stored = self._stored_verdicts().get(row.run_id)
        if stored is not None:  # paid by an earlier `magv verify judge`; counted all the same
            return (stored.prompt_tokens or 0) + (stored.completion_tokens or 0)
        return float(math.ceil(max(self.store.call_tokens("judge", "max") or 0.0, self._judge_prompt(row))))

    # -- the stages -------------------------------------------------------------------------

    @contextmanager
    def models(self) -> Iterator[Session]:
        if self._connect is None:
            yield self.sess
            return
        with self._connect() as sess:
            self._llm = sess
            try:
                yield sess
            finally:
                self._llm = None

    def _session(self) -> Session:
        sess = self._llm or self.sess
        cfg = self._settings()
        if cfg is sess.settings:
            return sess
        return dataclasses.replace(sess, settings=cfg, ctx=dataclasses.replace(sess.ctx, settings=cfg))

    def can_add_alternates(self, row: Row) -> bool:
        return row.features.get("n_alternates", 0) == 0

    def can_judge(self, row: Row) -> bool:
        return True

    def _spend(self, prompt: int, completion: int) -> None:
        self.report.prompt_tokens += prompt
        self.report.completion_tokens += completion

    def add_alternates(self, rows: Sequence[Row]) -> int:
        """Reverse engineer alternates for the rows' questions and run the responder on them."""
        from magv.pipeline import respond, reverse
        from magv.pipeline.runner import run_stage

        sess = self._session()
        by_question = {r.question_id: r for r in rows}
        spent = 0

        def reverse_write(store, ctx, results, report) -> None:
            nonlocal spent
            reverse.write(store, ctx, results, report)
            for res in results:
                row = by_question[res.item.question.id]
                row.add_cost("alternates", res.reply.prompt_tokens, res.reply.completion_tokens, 1)
                self._spend(res.reply.prompt_tokens, res.reply.completion_tokens)
                spent += res.reply.prompt_tokens + res.reply.completion_tokens

        parent: dict[str, str | None] = {}

        def respond_write(store, ctx, results, report) -> None:
            nonlocal spent
            respond.write(store, ctx, results, report)
            for res in results:
                row = by_question.get(parent.get(res.question.id) or "")
                for outcome in res.runs:
                    run = outcome.run
                    if row is not None:
                        row.add_cost(
                            "alternates",
                            run.prompt_tokens,
                            run.completion_tokens,
                            agent_calls(run.trajectory),
                        )
                    self._spend(run.prompt_tokens, run.completion_tokens)
                    spent += run.prompt_tokens + run.completion_tokens

        # imported conversations are in the population only when the user's agent answers (--reask)
        imported = bool(self.options.reask)
        items = [i for i in reverse.plan(self.store, sess.ctx, imported) if i.question.id in by_question]
        if items:
            run_stage(sess, reverse.STAGE, items=items, write=reverse_write)
        alternates = [
            i for i in respond.plan_alternates(self.store, sess.ctx) if i.question.parent_id in by_question
        ]
        parent.update({i.question.id: i.question.parent_id for i in alternates})
        if alternates:
            run_stage(sess, respond.ALTERNATES, items=alternates, write=respond_write)
        self._alternates_measured = max(self._alternates_measured, spent / len(rows))
        return spent

    def rescore(self, rows: Sequence[Row]) -> None:
        """Recompute features and score again with the same model, as the predictions were scored
        before (the stored verdicts keep their threshold); then re-read the rows."""
        from magv.pipeline import verifier
        from magv.pipeline.runner import run_in_process

        sess, cfg = self._session(), self._settings()
        run_in_process(sess, "cascade_features", verifier.features, self.store, cfg, alternates=True)
        run_in_process(
            sess,
            "cascade_score",
            verifier.score,
            self.store,
            cfg,
            model_id=self.model_id,
            threshold=self.scored_threshold,
        )
        fresh = {r.run_id: r for r in population(self.store, imported=bool(self.options.reask))}
        for r in self.rows:
            if r.run_id in fresh:
                r.features = fresh[r.run_id].features
        self._read_predictions()

    def judge(self, rows: Sequence[Row]) -> dict[str, JudgeOutcome]:
        from magv.agents.judge import split_failures
        from magv.pipeline import judge
        from magv.pipeline.runner import run_stage

        stored = self._stored_verdicts()
        verdicts = {r.run_id: stored[r.run_id] for r in rows if r.run_id in stored}
        ask = [r for r in rows if r.run_id not in stored]
        if ask:
            runs = {run.id: run for run in self.store.runs([r.question_id for r in ask])}
            texts = {q.id: q.text for q in self.store.questions(ids=[r.question_id for r in ask])}

            def keep(store, ctx, results, report) -> None:
                judge.write(store, ctx, results, report)
                for v in results:
                    verdicts[v.run_id] = v
                    self._spend(v.prompt_tokens, v.completion_tokens)

            items = [judge.JudgeItem(r.run_id, texts[r.question_id], runs[r.run_id].trajectory) for r in ask]
            run_stage(self._llm or self.sess, judge.STAGE, items=items, write=keep)
        out = {}
        for run_id, v in verdicts.items():
            kept, _ = split_failures([v])
            out[run_id] = JudgeOutcome(
                v.correct if kept else None,
                v.prompt_tokens or 0,
                v.completion_tokens or 0,
                f"judge {v.model}: {v.reason or v.error or ''}",
            )
        return out


def curve(store: Store) -> dict[str, Any]:
    """The accuracy-against-cost curve of every stored decision (magv.cascade.rules.cost_curve),
    with the judge-everything reference from the judge's mean tokens per verdict."""
    decisions = store.cascade_decisions()
    ids = {d["run_id"] for d in decisions}
    labels = {k: v.correct for k, v in store.effective_labels().items() if k in ids}
    model_id = store.scored_model_id()
    fallback = {p.run_id: p.verdict for p in store.predictions(model_id)} if model_id else {}
    human = {lb.run_id for lb in store.labels() if lb.source == "human"}
    return cost_curve(decisions, labels, fallback, store.mean_verdict_tokens(), human)


def run(
    sess: Session,
    options: CascadeOptions | None = None,
    connect: Callable[[], AbstractContextManager[Session]] | None = None,
) -> StageReport:
    """The cascade on the session's store; `connect` opens the model endpoints when an LLM step
    needs them (without it, `sess` has them)."""
    options = options or CascadeOptions()
    options.check()
    reasked = reask_lone_imports(sess, options, connect) if options.reask else None
    oracle = LiveOracle(sess, options, connect)
    outcome = decide(oracle, options)
    oracle.report.result = {"cascade_id": oracle.cascade_id, **outcome.summary(), "curve": curve(sess.store)}
    if reasked is not None:
        oracle.report.result["reask"] = reasked
    return oracle.report


def reask_lone_imports(
    sess: Session, options: CascadeOptions, connect: Callable[[], AbstractContextManager[Session]] | None
) -> dict[str, Any]:
    """Before deciding: the user's agent answers the lone imported conversations' questions again
    (`magv.pipeline.reask.reask_imported`), and their features and scores are computed with those
    runs as siblings, by the model (and threshold) that scored the store; imported conversations
    then join the cascade. What it did and spent is returned for the result."""
    from contextlib import nullcontext

    from magv.pipeline import verifier
    from magv.pipeline.reask import reask_imported
    from magv.pipeline.runner import run_in_process

    with connect() if connect is not None else nullcontext(sess) as llm:
        report = reask_imported(llm, options.reask, options.reask_max)
    if report.written:
        store = sess.store
        model_id = store.scored_model_id()
        scored = store.predictions(model_id) if model_id else []
        run_in_process(sess, "reask_features", verifier.features, store, sess.settings, alternates=True)
        if model_id is not None:
            run_in_process(
                sess,
                "reask_score",
                verifier.score,
                store,
                sess.settings,
                model_id=model_id,
                threshold=scored[0].threshold if scored else None,
            )
    return {
        "questions": report.done,
        "runs": report.written - report.llm_errors,
        "failed": report.llm_errors,
        "prompt_tokens": report.prompt_tokens,
        "completion_tokens": report.completion_tokens,
        "errors": report.errors[:5],
    }


__all__ = ["CascadeOptions", "LiveOracle", "curve", "population", "run"]
