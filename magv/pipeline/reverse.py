"""reverse: the reverse engineer writes k alternate questions from each MCT's response.

It is told the identifiers the base question gave (magv/quality.py `identifiers`); each alternate
is checked (one request in the customer's voice, those identifiers), repaired where a rule can,
and stored with its check. An alternate that fails is never answered (respond_alternates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from magv.agents.parsing import QuestionsReply
from magv.agents.reverse import reverse_engineer
from magv.models import Question, Run, Trajectory, canonical_json, make_id
from magv.pipeline.base import AgentStage, StageReport
from magv.pipeline.respond import BASE_ORIGINS
from magv.pipeline.worker import WorkerContext
from magv.quality import QualityCheck, identifier_patterns, identifiers, needed_values, repair_all

if TYPE_CHECKING:
    from magv.store import Store


@dataclass
class ReverseItem:
    gen_id: str
    question: Question
    response: str


@dataclass
class ReverseResult:
    item: ReverseItem
    reply: QuestionsReply
    checked: list[tuple[str, QualityCheck]] = field(default_factory=list)  # final text, its check


def plan(store: Store, ctx: WorkerContext, imported: bool = False) -> list[ReverseItem]:
    """One item per kept base question (and, with `imported`, per imported conversation of any
    domain: the cascade's, when the user's agent answers the alternates) without alternates yet."""
    domain = ctx.domain()
    k = ctx.settings.pipeline.alternates
    if k == 0:
        return []
    done = {g["id"] for g in store.generations(domain.name) if g["status"] == "ok"}  # failed: try again
    base = {q.id: q for q in store.questions(domain.name, origin=BASE_ORIGINS, kept_only=True)}
    if imported:
        base.update({q.id: q for q in store.questions(origin="import")})
    mct_runs = {m["question_id"]: m["run_id"] for m in store.mct() if m["question_id"] in base}
    runs = {r.id: r for r in store.runs(list(mct_runs))}
    items = []
    for qid, run_id in mct_runs.items():
        gen_id = make_id("reverse", qid, k)
        if gen_id not in done:
            items.append(ReverseItem(gen_id, base[qid], response_text(runs[run_id])))
    return items


def response_text(run: Run) -> str:
    """The MCT's answer; a run that stopped without one is described by its last tool result."""
    return trajectory_response(run.trajectory)


def trajectory_response(t: Trajectory) -> str:
    """A trajectory's answer, else its last tool result (what alternates are written from)."""
    if t.response:
        return t.response
    for step in reversed(t.steps):
        if step.kind == "tool" and step.result is not None:
            return canonical_json(step.result)[:1500]
    return "(no answer)"


def base_identifiers(domain, question: Question) -> list[str]:
    """The identifiers a base question states (with its target seed's customer values, if any)."""
    specs = {t.name: t for t in domain.tools}
    seed = next((s for s in domain.seeds() if s.id == question.seed_id), None)
    needs = needed_values(seed, specs) if seed is not None else []
    return identifiers(question.text, identifier_patterns(domain.tools), needs)


async def work(client, ctx: WorkerContext, item: ReverseItem) -> ReverseResult:
    domain = ctx.domain()
    ids = base_identifiers(domain, item.question)
    reply = await reverse_engineer(
        client,
        domain,
        item.response,
        ctx.settings.pipeline.alternates,
        context_key=f"reverse:{item.gen_id}",
        identifiers=ids,
    )
    return ReverseResult(
        item, reply, repair_all(reply.questions, None, ids, identifier_patterns(domain.tools))
    )


def write(store: Store, ctx: WorkerContext, results: list[ReverseResult], report: StageReport) -> None:
    domain = ctx.domain()
    with store.transaction():
        for r in results:
            base = r.item.question
            alternates = [
                Question(
                    id=Question.derive_id(domain.name, "alternate", text, base.id),
                    domain=domain.name,
                    text=text,
                    origin="alternate",
                    parent_id=base.id,
                    seed_id=base.seed_id,
                    target=base.target,
                    group_id=base.group_id,
                )
                for text, _ in r.checked
            ]
            report.written += store.add_questions(alternates)
            store.add_question_checks(check.as_row(q.id) for q, (_, check) in zip(alternates, r.checked))
            store.add_generation(
                r.item.gen_id,
                "reverse",
                domain.name,
                base.id,
                None,
                "failed" if r.reply.error else "ok",
                r.reply.error,
                len(alternates),
            )
            report.tally(r.reply, r.reply.error and f"question {base.id}: {r.reply.error}")


STAGE = AgentStage("reverse", plan, work, write)
