"""The generation half of MAG-V as stages: plan the pending work from the store, do it in chunks
(anywhere), write the results back (only where the store is).

Each stage is idempotent: `plan_*` returns only what the store does not hold yet, so a rerun
skips finished work and a killed run resumes. Flows in `flows/` compose these; the CLI calls flows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from magv.agents.investigator import investigate, pick_example
from magv.agents.responder import Demo, respond
from magv.agents.reverse import reverse_engineer
from magv.mct import most_common_trajectory
from magv.models import Question, Run, Seed, make_id
from magv.runtime import WorkerContext
from magv.store import Store

BASE_ORIGINS = ("seed", "investigator")


@dataclass
class StageReport:
    """What a stage did: counts, tokens and failures, summed over chunks."""

    name: str
    planned: int = 0
    done: int = 0
    failed: int = 0
    written: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    # Faults recorded on the rows written: LLM calls that failed after their retries (the run or
    # generation says so), unusable model replies (invalid steps) and tool calls that errored.
    llm_errors: int = 0
    invalid_steps: int = 0
    tool_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "planned": self.planned, "done": self.done, "failed": self.failed, "written": self.written,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 3), "llm_errors": self.llm_errors,
            "invalid_steps": self.invalid_steps, "tool_errors": self.tool_errors, "errors": self.errors[:20],
        }  # fmt: skip


# -- generate: the investigator ------------------------------------------------------------------


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
        )  # fmt: skip
        for s in seeds
    ]


def target_seeds(seeds: list[Seed], max_targets: int | None) -> list[Seed]:
    """The seeds whose trajectories are targets: all, or `max_targets` spread evenly over the file."""
    if not max_targets or max_targets >= len(seeds):
        return list(seeds)
    step = len(seeds) / max_targets
    return [seeds[int(i * step)] for i in range(max_targets)]


def plan_generate(store: Store, ctx: WorkerContext) -> list[dict]:
    """One item per target seed trajectory without a finished investigator generation."""
    domain = ctx.domain()
    all_seeds = domain.seeds()
    seeds = target_seeds(all_seeds, ctx.settings.pipeline.max_targets)
    p = ctx.settings.pipeline
    done = {g["id"] for g in store.generations(domain.name) if g["status"] == "ok"}  # failed: try again
    items = []
    for target in seeds:
        gen_id = make_id("investigator", domain.name, target.id, p.questions_per_target, p.seed)
        if gen_id in done:
            continue
        rng = random.Random(make_id(p.seed, target.id))
        example = pick_example(target, all_seeds, rng)
        items.append({"gen_id": gen_id, "target": target, "example": example})
    return items


async def work_generate(client, ctx: WorkerContext, item: dict) -> dict:
    reply = await investigate(
        client, ctx.domain(), item["target"], item["example"], ctx.settings.pipeline.questions_per_target,
        context_key=f"investigator:{item['gen_id']}",
    )  # fmt: skip
    return {**item, "reply": reply}


def write_generate(store: Store, ctx: WorkerContext, results: list[dict], report: StageReport) -> None:
    domain = ctx.domain()
    with store.transaction():
        for r in results:
            reply, target, example = r["reply"], r["target"], r["example"]
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
                )  # fmt: skip
                for text in reply.questions
            ]
            report.written += store.add_questions(questions)
            status = "failed" if reply.error else "ok"
            store.add_generation(
                r["gen_id"], "investigator", domain.name, target.id, example.id if example else None,
                status, reply.error, len(questions),
            )  # fmt: skip
            _tally(
                report,
                reply,
                failed=bool(reply.error),
                error=reply.error and f"seed {target.id}: {reply.error}",
            )


# -- select -------------------------------------------------------------------------------------


def run_select(store: Store, ctx: WorkerContext, embedder) -> StageReport:
    """Keep a diverse, balanced subset of the investigator's questions; seeds are always kept."""
    from magv.select import select

    report = StageReport("select")
    domain = ctx.domain()
    store.add_questions(
        seed_questions(domain.name, target_seeds(domain.seeds(), ctx.settings.pipeline.max_targets))
    )
    decided = {s["question_id"] for s in store.selections()}
    seeds = store.questions(domain.name, origin="seed")
    generated = store.questions(domain.name, origin="investigator")
    report.planned = len(generated) + len(seeds)
    new_seeds = [q for q in seeds if q.id not in decided]
    rows = [{"question_id": q.id, "kept": True, "reason": "seed", "cluster": None, "x": 0.0, "y": 0.0}
            for q in new_seeds]  # fmt: skip
    if generated and any(q.id not in decided for q in generated):
        from magv.llm.embeddings import embed_cached

        # kept in the store: the features stage embeds the same questions again
        vectors = embed_cached(store, embedder, [q.text for q in generated])
        picked = select(
            [q.id for q in generated], [q.seed_id or "" for q in generated], vectors,
            target_count=ctx.settings.pipeline.questions, threshold=ctx.settings.pipeline.dedup_threshold,
            seed=ctx.settings.pipeline.seed,
        )  # fmt: skip
        rows += [r for r in picked if r["question_id"] not in decided]
    with store.transaction():
        report.written = store.add_selections(rows)
    report.done = report.planned
    return report


# -- respond: the responder, R runs per question --------------------------------------------------


def plan_respond(store: Store, ctx: WorkerContext, alternates: bool) -> list[dict]:
    """One item per question that lacks some of its runs (R for base questions, R' for alternates)."""
    domain = ctx.domain()
    p = ctx.settings.pipeline
    if alternates:
        questions, wanted = store.questions(domain.name, origin="alternate"), p.alternate_runs
    else:
        questions, wanted = store.questions(domain.name, origin=BASE_ORIGINS, kept_only=True), p.runs
    finished = store.finished_run_indices()  # runs that failed on the model are done again
    stored = store.run_counts()
    items = []
    for q in questions:
        done = finished.get(q.id, set())
        missing = [i for i in range(wanted) if i not in done]
        if missing:
            items.append({"question": q, "run_indices": missing, "redo": stored.get(q.id, 0) > len(done)})
    if p.demos and items:
        _attach_demos(store, ctx, items)
    return items


def _attach_demos(store: Store, ctx: WorkerContext, items: list[dict]) -> None:
    """Give each item the `pipeline.demos` nearest verified examples outside its question's group
    (so never the question itself, its alternates or its seed's family)."""
    from magv.demos import DemoStore
    from magv.llm.embeddings import Embedder

    demos = DemoStore.from_store(store, ctx.domain().name, Embedder(ctx.settings))
    questions = [item["question"] for item in items]
    picks = demos.nearest_many([q.text for q in questions], ctx.settings.pipeline.demos,
                               [{q.group_id} for q in questions])  # fmt: skip
    for item, chosen in zip(items, picks):
        item["demos"] = chosen


async def work_respond(client, ctx: WorkerContext, item: dict, demos: list[Demo] | None = None) -> dict:
    q: Question = item["question"]
    p = ctx.settings.pipeline
    mode = ctx.settings.llm.role("responder")["tool_mode"]
    runs = []
    for i in item["run_indices"]:
        result = await respond(
            client, ctx.domain(), ctx.pool(), q.text, run_index=i, max_steps=p.max_steps, tool_mode=mode,
            context_key=f"respond:{q.id}:{i}", demos=demos or item.get("demos") or (),
        )  # fmt: skip
        runs.append(
            (Run(id=Run.derive_id(q.id, i), question_id=q.id, run_index=i, trajectory=result.trajectory,
                 prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                 latency_s=result.latency_s), result.llm_errors)
        )  # fmt: skip
    return {"question": q, "runs": runs, "redo": item.get("redo", False)}


def write_respond(store: Store, ctx: WorkerContext, results: list[dict], report: StageReport) -> None:
    with store.transaction():
        for r in results:
            q: Question = r["question"]
            for run, llm_errors in r["runs"]:
                report.written += store.add_runs([run])
                report.prompt_tokens += run.prompt_tokens
                report.completion_tokens += run.completion_tokens
                steps = run.trajectory.steps
                report.invalid_steps += sum(1 for s in steps if s.kind == "invalid")
                report.tool_errors += sum(1 for s in steps if s.kind == "tool" and s.error)
                report.llm_errors += run.trajectory.status == "llm_error"
                if llm_errors:
                    report.errors.append(f"question {q.id} run {run.run_index}: {llm_errors[-1]}")
            all_runs = store.runs([q.id])
            if r.get("redo"):  # runs were replaced: what the verifier derived from them is stale
                store.forget_verdicts([run.id for run in all_runs])
            mct = most_common_trajectory(all_runs)
            if mct is None:
                store.set_question_status(q.id, "failed")
                report.failed += 1
            else:
                store.set_mct([mct])
                if q.status == "failed":  # a rerun redid the runs it had lost to the model
                    store.set_question_status(q.id, "new")
                report.done += 1


# -- reverse: alternates from the MCT's response --------------------------------------------------


def plan_reverse(store: Store, ctx: WorkerContext) -> list[dict]:
    domain = ctx.domain()
    k = ctx.settings.pipeline.alternates
    if k == 0:
        return []
    done = {g["id"] for g in store.generations(domain.name) if g["status"] == "ok"}  # failed: try again
    base = {q.id: q for q in store.questions(domain.name, origin=BASE_ORIGINS, kept_only=True)}
    mct_runs = {m["question_id"]: m["run_id"] for m in store.mct() if m["question_id"] in base}
    runs = {r.id: r for r in store.runs(list(mct_runs))}
    items = []
    for qid, run_id in mct_runs.items():
        gen_id = make_id("reverse", qid, k)
        if gen_id in done:
            continue
        items.append({"gen_id": gen_id, "question": base[qid], "response": _response_text(runs[run_id])})
    return items


def _response_text(run: Run) -> str:
    """The MCT's answer; a run that stopped without one is described by its last tool result."""
    t = run.trajectory
    if t.response:
        return t.response
    for step in reversed(t.steps):
        if step.kind == "tool" and step.result is not None:
            from magv.models import canonical_json

            return canonical_json(step.result)[:1500]
    return "(no answer)"


async def work_reverse(client, ctx: WorkerContext, item: dict) -> dict:
    reply = await reverse_engineer(
        client, ctx.domain(), item["response"], ctx.settings.pipeline.alternates,
        context_key=f"reverse:{item['gen_id']}",
    )  # fmt: skip
    return {**item, "reply": reply}


def write_reverse(store: Store, ctx: WorkerContext, results: list[dict], report: StageReport) -> None:
    domain = ctx.domain()
    with store.transaction():
        for r in results:
            base: Question = r["question"]
            reply = r["reply"]
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
                )  # fmt: skip
                for text in reply.questions
            ]
            report.written += store.add_questions(alternates)
            store.add_generation(
                r["gen_id"], "reverse", domain.name, base.id, None, "failed" if reply.error else "ok",
                reply.error, len(alternates),
            )  # fmt: skip
            _tally(
                report,
                reply,
                failed=bool(reply.error),
                error=reply.error and f"question {base.id}: {reply.error}",
            )


def _tally(report: StageReport, reply, failed: bool, error: str | None) -> None:
    report.prompt_tokens += reply.prompt_tokens
    report.completion_tokens += reply.completion_tokens
    if reply.error:
        report.llm_errors += reply.error.startswith("LLM error")
    if failed:
        report.failed += 1
        if error:
            report.errors.append(error)
    else:
        report.done += 1


STAGES = {
    "generate": (plan_generate, work_generate, write_generate),
    "respond": (lambda s, c: plan_respond(s, c, alternates=False), work_respond, write_respond),
    "reverse": (plan_reverse, work_reverse, write_reverse),
    "respond_alternates": (lambda s, c: plan_respond(s, c, alternates=True), work_respond, write_respond),
}
