"""generate: the investigator writes questions for each target seed trajectory.

Each question is checked by rule (magv/quality.py) where it is made: one that lacks a value its
target needs from the customer, or chains requests, is repaired where a rule can; every question
is stored with its check, and selection keeps only those that pass (`pipeline.min_quality`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from magv.agents.investigator import investigate, pick_example
from magv.agents.parsing import QuestionsReply
from magv.models import Question, Seed, make_id
from magv.pipeline.base import AgentStage, StageReport
from magv.pipeline.worker import WorkerContext
from magv.quality import QualityCheck, identifier_patterns, needed_values, repair_all, target_values

if TYPE_CHECKING:
    from magv.store import Store

# Without --per-target: questions generated per question kept (spread over the targets), and the
# most any one target gets, so that a small run asks for little.
AUTO_MAX_PER_TARGET = 10


@dataclass
class GenerateItem:
    gen_id: str
    target: Seed
    example: Seed | None
    n: int  # questions to ask for


@dataclass
class GenerateResult:
    item: GenerateItem
    reply: QuestionsReply
    # (final text, its check) for each question of the reply, after the rule repairs
    checked: list[tuple[str, QualityCheck]] = field(default_factory=list)


def target_seeds(seeds: list[Seed], max_targets: int | None) -> list[Seed]:
    """The seeds whose trajectories are targets: all, or `max_targets` spread evenly over the file."""
    if not max_targets or max_targets >= len(seeds):
        return list(seeds)
    step = len(seeds) / max_targets
    return [seeds[int(i * step)] for i in range(max_targets)]


def per_target(settings, targets: int) -> int:
    """Questions to generate for each target: `pipeline.questions_per_target` when set, else a
    small multiple (`pipeline.generate_multiple`) of the kept count spread over the targets."""
    p = settings.pipeline
    if p.questions_per_target is not None:
        return p.questions_per_target
    if targets == 0:
        return 0
    return max(1, min(AUTO_MAX_PER_TARGET, math.ceil(p.generate_multiple * p.questions / targets)))


def seed_questions(domain_name: str, seeds: list[Seed]) -> list[Question]:
    return [
        Question(
            id=Question.derive_id(domain_name, "seed", s.question),
            domain=domain_name,
            text=s.question,
            origin="seed",
            seed_id=s.id,
            target=s.trajectory,
            group_id=s.id,
            meta=s.question_meta(),
        )
        for s in seeds
    ]


def plan(store: Store, ctx: WorkerContext) -> list[GenerateItem]:
    """One item per target seed trajectory without a finished investigator generation."""
    domain = ctx.domain()
    all_seeds = domain.seeds()
    seeds = target_seeds(all_seeds, ctx.settings.pipeline.max_targets)
    p = ctx.settings.pipeline
    n = per_target(ctx.settings, len(seeds))
    done = {g["id"] for g in store.generations(domain.name) if g["status"] == "ok"}  # failed: try again
    items = []
    for target in seeds:
        gen_id = make_id("investigator", domain.name, target.id, n, p.seed)
        if gen_id in done:
            continue
        rng = random.Random(make_id(p.seed, target.id))
        items.append(GenerateItem(gen_id, target, pick_example(target, all_seeds, rng), n))
    return items


async def work(client, ctx: WorkerContext, item: GenerateItem) -> GenerateResult:
    domain = ctx.domain()
    specs = {t.name: t for t in domain.tools}
    needs = needed_values(item.target, specs)
    reply = await investigate(
        client,
        domain,
        item.target,
        item.example,
        item.n,
        context_key=f"investigator:{item.gen_id}",
        needs=needs,
    )
    known = target_values(item.target.trajectory)
    checked = repair_all(reply.questions, needs, None, identifier_patterns(domain.tools), known)
    return GenerateResult(item, reply, checked)


def write(store: Store, ctx: WorkerContext, results: list[GenerateResult], report: StageReport) -> None:
    domain = ctx.domain()
    with store.transaction():
        for r in results:
            target, example = r.item.target, r.item.example
            questions = [
                Question(
                    id=Question.derive_id(domain.name, "investigator", text, target.id),
                    domain=domain.name,
                    text=text,
                    origin="investigator",
                    seed_id=target.id,
                    example_seed_id=example.id if example else None,
                    target=target.trajectory,
                    group_id=target.id,
                    meta={k: v for k, v in target.question_meta().items() if k == "acceptable"},
                )
                for text, _ in r.checked
            ]
            report.written += store.add_questions(questions)
            store.add_question_checks(check.as_row(q.id) for q, (_, check) in zip(questions, r.checked))
            store.add_generation(
                r.item.gen_id,
                "investigator",
                domain.name,
                target.id,
                example.id if example else None,
                "failed" if r.reply.error else "ok",
                r.reply.error,
                len(questions),
            )
            report.tally(r.reply, r.reply.error and f"seed {target.id}: {r.reply.error}")


STAGE = AgentStage("generate", plan, work, write)
