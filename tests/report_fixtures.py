"""A small but realistic store for report and export tests, built only through the Store API.

`populate` writes one pipeline run's worth of rows (questions of every origin, selections, R runs per
question with tool errors and invalid steps, MCTs, alternates, the LLM call log, features, labels,
cross-validation of five models, a verifier model, predictions and judge verdicts) and returns what
it wrote, so tests can check the report against numbers known by construction.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from magv.definitions import best_model
from magv.models import (
    Features,
    JudgeVerdict,
    Label,
    LLMCall,
    Prediction,
    Question,
    Run,
    Step,
    ToolCall,
    Trajectory,
    make_id,
)
from magv.store import Store
from tests.store_helpers import write_features, write_predictions

MODELS = ("logistic_regression", "svm", "random_forest", "knn", "xgboost")
FEATURES = ("EM_mean", "EDIT_mean", "GEDIT_mean", "SS_mean", "mct_share", "n_tool_errors")
# How noisy each model's out-of-fold probabilities are: the CV table must differ between models.
MODEL_NOISE = {"logistic_regression": 1.0, "svm": 1.2, "random_forest": 0.9, "knn": 1.5, "xgboost": 0.8}

_NAMES = ["Ana Silva", "Li Wei", "Omar Haddad", "Grace Kim", "Jonas Berg", "Priya Nair", "Tom Reyes",
          "Mia Novak", "Sam Okafor", "Eva Lund", "Noah Weiss", "Ines Costa"]  # fmt: skip

# target trajectory per seed, and question templates in a customer's voice
_SEEDS: list[tuple[str, list[ToolCall], list[str]]] = [
    (
        "orders-of-customer",
        [
            ToolCall(name="find_customer_by_email", arguments={"email": "{email}"}),
            ToolCall(name="list_orders", arguments={"customer_id": "C{cid}"}),
        ],
        [
            "Hi, I'm {name} ({email}). Can you list all my orders?",
            "What orders do I have on file? My email is {email}.",
            "{name} here, email {email}: show me everything I've ordered.",
            "Could you pull up my order history? I use {email}.",
            "Which orders are under my account {email}?",
            "I lost track of my purchases, email is {email}, list them please.",
            "Show the orders for the customer with email {email}.",
        ],
    ),
    (
        "where-is-my-order",
        [
            ToolCall(name="find_customer_by_email", arguments={"email": "{email}"}),
            ToolCall(name="list_orders", arguments={"customer_id": "C{cid}"}),
            ToolCall(name="order_details", arguments={"order_id": "#W{oid}"}),
            ToolCall(name="track_shipment", arguments={"order_id": "#W{oid}"}),
        ],
        [
            "Where is my latest order? I'm {email}.",
            "My package from order #W{oid} hasn't arrived, email {email}. Where is it?",
            "Can you track my most recent shipment? Account {email}.",
            "{name} here. When will order #W{oid} be delivered?",
            "Has my last order shipped yet? My email is {email}.",
            "I need the tracking number for my newest order, {email}.",
            "Is order #W{oid} still in transit? Email {email}.",
        ],
    ),
    (
        "product-lookup",
        [
            ToolCall(name="search_products", arguments={"query": "{product}"}),
            ToolCall(name="product_details", arguments={"product_id": "P{pid}"}),
        ],
        [
            "Do you have the {product} in stock?",
            "What colours does the {product} come in?",
            "How much is the {product} right now?",
            "Tell me about the {product}, is it available in size M?",
            "Is there a cheaper variant of the {product}?",
            "What are the specs of your {product}?",
            "Can I still buy the {product}?",
        ],
    ),
    (
        "cancel-pending",
        [
            ToolCall(name="find_customer_by_email", arguments={"email": "{email}"}),
            ToolCall(name="list_orders", arguments={"customer_id": "C{cid}"}),
            ToolCall(name="cancel_order", arguments={"order_id": "#W{oid}", "reason": "no longer needed"}),
        ],
        [
            "Please cancel my pending order, I no longer need it. Email {email}.",
            "I ordered by mistake, cancel order #W{oid} please ({email}).",
            "{name} here, can you cancel what I ordered yesterday?",
            "Cancel my open order, account {email}, I don't need it anymore.",
            "I want to cancel order #W{oid} before it ships. My email: {email}.",
            "Stop my pending order please, {email}.",
            "How do I cancel #W{oid}? Just do it for me, I'm {email}.",
        ],
    ),
    (
        "return-delivered",
        [
            ToolCall(name="order_details", arguments={"order_id": "#W{oid}"}),
            ToolCall(name="return_items", arguments={"order_id": "#W{oid}", "item_ids": ["I{pid}"]}),
        ],
        [
            "I want to return the items from order #W{oid}.",
            "Order #W{oid} arrived but the jacket doesn't fit, can I send it back?",
            "Please start a return for #W{oid}.",
            "How do I return what came in order #W{oid}? Please process it.",
            "The shoes in #W{oid} are too small, return them please.",
            "Return everything from my delivered order #W{oid}.",
            "I'd like a refund for order #W{oid}, the item is faulty.",
        ],
    ),
]
_PRODUCTS = ["trail running shoes", "rain jacket", "espresso grinder", "desk lamp", "yoga mat"]
_EXTRA_TOOLS = ["get_customer_details", "search_products", "transfer_to_human"]


@dataclass
class FixtureInfo:
    """What `populate` wrote: the truths the report must show."""

    pipeline_run_id: str
    domain: str
    generated: dict[str, int] = field(default_factory=dict)  # seed id -> investigator questions
    kept: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, Counter] = field(default_factory=dict)  # seed id -> reason -> count
    base_questions: list[str] = field(default_factory=list)
    alternates: list[str] = field(default_factory=list)
    runs: int = 0
    base_runs: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    invalid_steps: int = 0
    mct_runs: list[str] = field(default_factory=list)
    labels: dict[str, bool] = field(default_factory=dict)  # effective labels
    cv: dict[str, dict[str, Any]] = field(default_factory=dict)
    predictions: dict[str, float] = field(default_factory=dict)
    judge: dict[str, bool | None] = field(default_factory=dict)
    judge_tokens: int = 0
    judge_seconds: float = 0.0
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_id: str = ""
    eval_configs: list[str] = field(default_factory=list)


def build_report_store(path: str | Path, **kwargs: Any) -> FixtureInfo:
    with Store(path) as store:
        return populate(store, **kwargs)


def populate(
    store: Store,
    *,
    pipeline_run_id: str = "pipeline-a",
    seed: int = 0,
    quality: float = 0.7,
    runs_per_question: int = 3,
    alternates_per_question: int = 2,
    with_verifier: bool = True,
    with_eval: bool = True,
    domain: str = "retail",
) -> FixtureInfo:
    """quality: the chance that a responder run follows the target trajectory."""
    rng = random.Random(seed)
    info = FixtureInfo(pipeline_run_id=pipeline_run_id, domain=domain)
    store.start_pipeline_run(pipeline_run_id, domain, {"pipeline": {"runs": runs_per_question}})
    calls: list[LLMCall] = []

    def log(role: str, prompt: int, completion: int, latency: float, error: str | None = None) -> None:
        n = len(calls)
        calls.append(LLMCall(
            id=make_id("call", pipeline_run_id, seed, n), key=make_id("key", pipeline_run_id, seed, n),
            role=role, model="gemma-3-270m" if role != "judge" else "gemma-3-270m-judge",
            endpoint="http://127.0.0.1:8765/v1", template=f"{role}.j2", template_hash="abc123",
            request={"messages": [{"role": "user", "content": "…"}]},
            response=None if error else {"choices": [{"message": {"content": "…"}}]},
            prompt_tokens=prompt, completion_tokens=completion, latency_s=latency,
            retries=1 if error else 0, error=error,
        ))  # fmt: skip

    # -- seeds and generated questions --------------------------------------------------------
    questions: list[Question] = []
    selections: list[dict[str, Any]] = []
    base: list[Question] = []
    used: set[str] = set()
    for s_index, (seed_name, target_template, templates) in enumerate(_SEEDS):
        seed_id = f"{seed_name}-{seed}"
        slots = _slots(rng, s_index)
        target = _fill(target_template, slots)
        seed_q = Question(
            id=Question.derive_id(domain, "seed", _fill_text(templates[0], slots)), domain=domain,
            text=_fill_text(templates[0], slots), origin="seed", seed_id=seed_id, target=target,
            group_id=seed_id,
        )  # fmt: skip
        questions.append(seed_q)
        base.append(seed_q)
        example = _SEEDS[(s_index + 1) % len(_SEEDS)][0] + f"-{seed}"
        failed_generation = s_index == 4
        store.add_generation(
            gen_id=make_id("gen", seed_id, example),
            kind="investigator",
            domain=domain,
            seed_id=seed_id,
            example_seed_id=example,
            status="ok",
            error=None,
            n_questions=4 if failed_generation else 6,
        )
        log("investigator", 1400 + 20 * s_index, 310, 6.5 + s_index)
        if failed_generation:  # one reply could not be parsed: retried, then recorded as failed
            store.add_generation(
                gen_id=make_id("gen", seed_id, "retry"),
                kind="investigator",
                domain=domain,
                seed_id=seed_id,
                example_seed_id=example,
                status="failed",
                error="reply is not a JSON list of questions",
                n_questions=0,
            )
            log("investigator", 1450, 290, 7.1, error="unparseable reply")
        n_generated = 6 if not failed_generation else 4
        info.generated[seed_id] = n_generated
        info.dropped[seed_id] = Counter()
        centre = (math.cos(s_index * 1.3) * 4, math.sin(s_index * 1.3) * 4)
        for i in range(n_generated):
            while True:
                q_slots = _slots(rng, s_index)
                text = _fill_text(templates[1 + (i % 6)], q_slots)
                if text not in used:
                    used.add(text)
                    break
            q = Question(
                id=Question.derive_id(domain, "investigator", text), domain=domain, text=text,
                origin="investigator", seed_id=seed_id, example_seed_id=example,
                target=_fill(target_template, q_slots), group_id=seed_id,
            )  # fmt: skip
            questions.append(q)
            if i == 4:
                kept, reason = False, f"near-duplicate of {questions[-2].id} (cosine 0.971 >= 0.95)"
            elif i == 5:
                kept, reason = False, f"not nearest to the centre of cluster {s_index}"
            else:
                kept, reason = True, "nearest to its cluster centre"
            if kept:
                base.append(q)
                info.kept[seed_id] = info.kept.get(seed_id, 0) + 1
            else:
                info.dropped[seed_id]["near-duplicate" if i == 4 else "not nearest to the centre"] += 1
            selections.append({
                "question_id": q.id, "kept": kept, "reason": reason, "cluster": s_index,
                "x": centre[0] + rng.gauss(0, 0.8), "y": centre[1] + rng.gauss(0, 0.8),
            })  # fmt: skip
    store.add_questions(questions)
    store.add_selections(selections)
    info.base_questions = [q.id for q in base]

    # -- responder runs, MCT, alternates --------------------------------------------------------
    runs: list[Run] = []
    mct_rows: list[dict[str, Any]] = []
    alternates: list[Question] = []
    mct_of: dict[str, Run] = {}
    for q in base:
        q_runs = [_respond(rng, q, i, quality) for i in range(runs_per_question)]
        runs.extend(q_runs)
        for r in q_runs:
            log("responder", r.prompt_tokens, r.completion_tokens, r.latency_s)
        votes = Counter(r.trajectory.signature() for r in q_runs if r.trajectory.status != "llm_error")
        if not votes:
            continue
        signature, count = votes.most_common(1)[0]
        winner = next(r for r in q_runs if r.trajectory.signature() == signature)
        mct_of[q.id] = winner
        mct_rows.append({"question_id": q.id, "run_id": winner.id, "signature": signature,
                         "share": count / len(q_runs), "n_runs": len(q_runs), "n_distinct": len(votes)})  # fmt: skip
        log("reverse", 600, 90, 2.2)
        for k in range(alternates_per_question):
            text = f"{q.text.rstrip('?.')} (asked differently #{k + 1})"
            alt = Question(
                id=Question.derive_id(domain, "alternate", text, q.id), domain=domain, text=text,
                origin="alternate", parent_id=q.id, seed_id=q.seed_id, group_id=q.group_id,
            )  # fmt: skip
            alternates.append(alt)
    store.add_questions(alternates)
    for alt in alternates:
        parent = next(q for q in base if q.id == alt.parent_id)
        r = _respond(rng, Question(**{**parent.model_dump(), "id": alt.id}), 0, quality)
        runs.append(r)
        log("responder", r.prompt_tokens, r.completion_tokens, r.latency_s)
    store.add_runs(runs)
    store.set_mct(mct_rows)
    info.alternates = [a.id for a in alternates]
    info.runs = len(runs)
    info.base_runs = len(base) * runs_per_question
    for r in runs:
        for s in r.trajectory.steps:
            if s.kind == "invalid":
                info.invalid_steps += 1
            else:
                info.tool_calls += 1
                info.tool_errors += s.error is not None
    info.mct_runs = [mct_of[q].id for q in mct_of]

    # -- verifier -----------------------------------------------------------------------------
    if with_verifier:
        _verifier(store, rng, info, base, mct_of, log)
    store.add_llm_calls(calls)

    if with_eval:
        _evaluation(store, rng, info, base)

    n_alt = len(alternates)
    stages = {
        "generate": _stage(48.2, len(_SEEDS), len(_SEEDS) - 1, 1, sum(info.generated.values()), 8650, 1840),
        "select": _stage(3.1, sum(info.generated.values()), sum(info.generated.values()), 0, len(selections)),
        "respond": _stage(
            212.4, info.base_runs, info.base_runs, 0, info.base_runs, 124240 - 30000, 13575 - 4000
        ),
        "reverse": _stage(31.7, len(mct_rows), len(mct_rows), 0, n_alt, 15000, 2250),
        "respond_alternates": _stage(88.0, n_alt, n_alt, 0, n_alt, 30000, 4000),
        "features": _stage(4.4, len(mct_rows), len(mct_rows), 0, len(mct_rows)),
        "train": _stage(2.9, 5, 5, 0, 5),
        "score": _stage(0.012, len(info.mct_runs), len(info.mct_runs), 0, len(info.mct_runs)),
        "judge": _stage(61.0, len(info.mct_runs), len(info.mct_runs) - 1, 1, len(info.mct_runs), 26291, 2089),
    }
    if not with_verifier:
        stages = {k: v for k, v in stages.items() if k not in ("features", "train", "score", "judge")}
    info.stages = stages
    summary = {
        "questions": len(questions) + len(alternates), "runs": len(runs),
        "tokens": {"prompt": sum(c.prompt_tokens for c in calls),
                   "completion": sum(c.completion_tokens for c in calls)},
        "failures": {"failed_generations": 1, "llm_errors": sum(c.error is not None for c in calls),
                     "failed_questions": 0},
    }  # fmt: skip
    store.finish_pipeline_run(pipeline_run_id, "completed", stages, summary)
    return info


def _stage(
    seconds: float, planned: int, done: int, failed: int, written: int, pt: int = 0, ct: int = 0
) -> dict:
    """A stage record shaped like magv.pipeline.base.StageReport.as_dict()."""
    return {"planned": planned, "done": done, "failed": failed, "written": written, "prompt_tokens": pt,
            "completion_tokens": ct, "seconds": seconds, "errors": ["reply is not a JSON list"] if failed else []}  # fmt: skip


def _slots(rng: random.Random, s_index: int) -> dict[str, Any]:
    name = rng.choice(_NAMES)
    return {
        "name": name, "email": name.lower().replace(" ", ".") + f"{rng.randint(1, 99)}@example.com",
        "cid": rng.randint(1000, 9999), "oid": rng.randint(10000, 99999),
        "pid": rng.randint(100, 999), "product": rng.choice(_PRODUCTS),
    }  # fmt: skip


def _fill_text(template: str, slots: dict[str, Any]) -> str:
    return template.format(**slots)


def _fill(calls: list[ToolCall], slots: dict[str, Any]) -> list[ToolCall]:
    def sub(v: Any) -> Any:
        if isinstance(v, str):
            return v.format(**slots)
        if isinstance(v, list):
            return [sub(x) for x in v]
        return v

    return [ToolCall(name=c.name, arguments={k: sub(v) for k, v in c.arguments.items()}) for c in calls]


def _respond(rng: random.Random, q: Question, run_index: int, quality: float) -> Run:
    """One responder run: the target trajectory, or a plausible mistake, with the faults a small
    model makes (tool errors, unparseable replies, running out of steps, LLM timeouts)."""
    assert q.target is not None
    roll = rng.random()
    status = "ok"
    if roll < 0.03:
        traj = Trajectory(steps=[], response=None, status="llm_error")
    else:
        planned = list(q.target)
        if rng.random() > quality:  # a wrong trajectory: drop the last call or take a wrong tool
            if len(planned) > 1 and rng.random() < 0.5:
                planned = planned[:-1]
            else:
                planned[-1] = ToolCall(name=rng.choice(_EXTRA_TOOLS), arguments={"query": q.text[:20]})
        steps: list[Step] = []
        for call in planned:
            if rng.random() < 0.08:
                steps.append(
                    Step(kind="invalid", raw='{"tool": "list_orders", "arguments": {"customer', latency_s=0.4)
                )
            error = None
            if "order_id" in call.arguments and rng.random() < 0.15:
                error = f"order {call.arguments['order_id']} not found"
            elif "email" in call.arguments and rng.random() < 0.06:
                error = "no customer with that email"
            result = None if error else {"ok": True, "rows": rng.randint(1, 4), "tool": call.name}
            steps.append(
                Step(call=call, result=result, error=error, latency_s=round(rng.uniform(0.01, 0.2), 3))
            )
        if rng.random() < 0.05:
            steps = (steps * 3)[:6]
            status = "max_steps"
        response = (
            None
            if status == "max_steps"
            else f"Here is what I found for you: {planned[-1].name} returned the details."
        )
        traj = Trajectory(steps=steps, response=response, status=status)
    prompt = 500 + 180 * len(traj.steps)
    return Run(
        id=Run.derive_id(q.id, run_index), question_id=q.id, run_index=run_index, trajectory=traj,
        prompt_tokens=prompt, completion_tokens=40 + 25 * len(traj.steps),
        latency_s=round(0.8 + 0.6 * len(traj.steps) + rng.random(), 3),
    )  # fmt: skip


def _verifier(store: Store, rng: random.Random, info: FixtureInfo, base: list[Question], mct_of, log) -> None:
    targets = {q.id: q.target for q in base}
    gold: dict[str, bool] = {}
    features: list[Features] = []
    for qid, run in mct_of.items():
        names = run.trajectory.tool_names()
        correct = names == [c.name for c in targets[qid] or []]
        gold[run.id] = correct
        signal = 1.0 if correct else 0.0
        values = {
            "EM_mean": min(1.0, max(0.0, 0.35 + 0.4 * signal + rng.gauss(0, 0.15))),
            "EDIT_mean": min(1.0, max(0.0, 0.45 - 0.3 * signal + rng.gauss(0, 0.12))),
            "GEDIT_mean": max(0.0, 2.5 - 1.6 * signal + rng.gauss(0, 0.6)),
            "SS_mean": min(1.0, 0.7 + 0.2 * signal + rng.gauss(0, 0.05)),
            "mct_share": 1.0,
            "n_tool_errors": float(sum(1 for s in run.trajectory.steps if s.error)),
        }
        features.append(Features(run_id=run.id, version="v1", values=values))
    write_features(store, features)
    labels = [Label(run_id=r, source="gold", correct=c, detail="strict") for r, c in gold.items()]
    human = sorted(gold)[:2]  # two expert labels; the first disagrees with the gold match
    labels += [Label(run_id=human[0], source="human", correct=not gold[human[0]], detail="annotator:ana"),
               Label(run_id=human[1], source="human", correct=gold[human[1]], detail="annotator:ana")]  # fmt: skip
    store.add_labels(labels)
    effective = dict(gold)
    effective[human[0]] = not gold[human[0]]
    info.labels = effective

    order = sorted(effective)
    y = [int(effective[r]) for r in order]
    cv: dict[str, dict[str, Any]] = {}
    for name in MODELS:
        proba = [
            round(1 / (1 + math.exp(-(2.2 * (2 * t - 1) + rng.gauss(0, 2.2 * MODEL_NOISE[name])))), 4)
            for t in y
        ]
        pred = [int(p >= 0.5) for p in proba]
        tn = sum(1 for t, p in zip(y, pred) if t == 0 and p == 0)
        fp = sum(1 for t, p in zip(y, pred) if t == 0 and p == 1)
        fn = sum(1 for t, p in zip(y, pred) if t == 1 and p == 0)
        tp = sum(1 for t, p in zip(y, pred) if t == 1 and p == 1)
        cv[name] = {
            "accuracy": round(accuracy_score(y, pred), 4),
            "precision": round(precision_score(y, pred, zero_division=0), 4),
            "recall": round(recall_score(y, pred, zero_division=0), 4),
            "f1": round(f1_score(y, pred, zero_division=0), 4),
            "roc_auc": round(roc_auc_score(y, proba), 4) if len(set(y)) > 1 else None,
            "confusion": [[tn, fp], [fn, tp]],
            "oof": {"y": y, "proba": proba},
        }
    store.add_cv_results(f"train-{info.pipeline_run_id}", cv)
    info.cv = cv
    best = best_model(cv)  # the one definition training, report and data card use
    model_id = make_id("model", info.pipeline_run_id, best)
    importances = {f: round(rng.uniform(0.02, 0.4), 4) for f in FEATURES}
    store.add_verifier_model({
        "id": model_id, "name": best, "path": f"data/models/{model_id}.skops", "feature_version": "v1",
        "features": list(FEATURES),
        "metrics": {"cv": {k: v for k, v in cv[best].items() if k != "oof"}, "feature_importances": importances},
    })  # fmt: skip
    info.model_id = model_id
    preds = []
    for r, p in zip(order, cv[best]["oof"]["proba"], strict=True):
        prob = round(min(0.999, max(0.001, p + rng.gauss(0, 0.05))), 4)
        contrib = {f: round(rng.gauss(0, 0.6), 4) for f in FEATURES}
        preds.append(Prediction(run_id=r, model_id=model_id, probability=prob, verdict=prob >= 0.5,
                                threshold=0.5, contributions=contrib))  # fmt: skip
        info.predictions[r] = prob
    write_predictions(store, preds)

    verdicts = []
    for i, r in enumerate(order):
        agree = rng.random() < 0.72
        correct: bool | None = effective[r] if agree else not effective[r]
        error = None
        if i == 3:  # the judge's reply could not be parsed
            correct, error = None, "no verdict in reply"
        pt, ct, lat = 900 + rng.randint(0, 300), 60 + rng.randint(0, 40), round(rng.uniform(1.5, 3.5), 3)
        verdicts.append(JudgeVerdict(run_id=r, model="gemma-3-270m-judge", correct=correct,
                                     reason="the calls answer the question" if correct else "missing a step",
                                     prompt_tokens=pt, completion_tokens=ct, latency_s=lat, error=error))  # fmt: skip
        log("judge", pt, ct, lat)
        info.judge[r] = correct
        info.judge_tokens += pt + ct
        info.judge_seconds += lat
    store.add_judge_verdicts(verdicts)


def _evaluation(store: Store, rng: random.Random, info: FixtureInfo, base: list[Question]) -> None:
    seeds = [q for q in base if q.origin == "seed"]
    for config, skill in (("demos=0", 0.4), ("demos=3", 0.6)):
        rows = {}
        for q in seeds:
            strict = rng.random() < skill
            rows[q.id] = {
                "strict": strict, "unordered": strict or rng.random() < 0.3,
                "subset": strict or rng.random() < 0.5, "superset": strict or rng.random() < 0.4,
                "strict_args": strict and rng.random() < 0.7, "valid_calls": round(rng.uniform(0.7, 1.0), 3),
                "steps": rng.randint(1, 5), "tokens": rng.randint(600, 1400), "latency_s": round(rng.uniform(1, 4), 2),
            }  # fmt: skip
        store.add_eval_results(f"eval-{info.pipeline_run_id}", config, rows)
        info.eval_configs.append(config)
