"""Synthetic pipeline output written into a real magv store, for the verifier benchmarks.

Each case is what the pipeline makes for one base question: a question from one of 22 families
(the seed trajectories, built from the retail domain's tools), R = 3 responder runs whose MCT is
the verified trajectory, and k = 3 alternate questions with one run each. A third of the verified
trajectories are wrong (a call dropped or the wrong tool), and alternates tend to follow the
family's gold trajectory, so wrong ones disagree with their alternates: the features carry the
signal the paper relies on, and the gold label says which is which.

Arguments name one of 997 orders, so calls and responses repeat the way a real agent's do (the
same question families, the same customers) without being few.
"""

from __future__ import annotations

import random
from typing import Any

from magv.models import Label, Question, Run, ToolCall, Trajectory

TOOLS = ["find_customer_by_email", "find_customer_by_name_zip", "get_customer_details", "list_customer_orders",
         "get_order_details", "get_product_details", "search_products", "track_shipment", "cancel_pending_order",
         "modify_pending_order_address", "return_delivered_items", "exchange_delivered_items"]  # fmt: skip
FAMILIES = 22
R, K = 3, 3
DOMAIN = "retail"


def _family_gold(rng: random.Random) -> list[str]:
    return [rng.choice(TOOLS) for _ in range(rng.randint(1, 5))]


def _calls(names: list[str], i: int) -> list[ToolCall]:
    return [ToolCall(name=n, arguments={"order_id": f"W{i % 997}", "n": j}) for j, n in enumerate(names)]


def _corrupt(names: list[str], rng: random.Random) -> list[str]:
    if len(names) > 1 and rng.random() < 0.5:
        return names[:-1]
    return names[:-1] + [rng.choice([t for t in TOOLS if t != names[-1]])]


def _trajectory(names: list[str], i: int) -> Trajectory:
    return Trajectory.from_calls(_calls(names, i), response=f"done: {' '.join(names)} for W{i % 997}")


def fill_store(store: Any, n: int, seed: int = 0, batch: int = 2000) -> dict[str, Any]:
    """Write n synthetic cases (questions, runs, MCT rows, gold labels); returns truth and groups
    by verified run id."""
    rng = random.Random(seed)
    golds = [_family_gold(rng) for _ in range(FAMILIES)]
    truth: dict[str, int] = {}
    group: dict[str, str] = {}
    questions: list[Question] = []
    runs: list[Run] = []
    mct: list[dict[str, Any]] = []
    labels: list[Label] = []

    def question(i: int, parent: str | None, text: str, fam: int) -> Question:
        origin = "alternate" if parent else "investigator"
        q = Question(id=Question.derive_id(DOMAIN, origin, text, parent), domain=DOMAIN, text=text,
                     origin=origin, parent_id=parent, seed_id=f"f{fam}", group_id=f"f{fam}")  # fmt: skip
        questions.append(q)
        return q

    def flush() -> None:
        store.add_questions(questions)
        store.add_runs(runs)
        store.set_mct(mct)
        store.add_labels(labels)
        for rows in (questions, runs, mct, labels):
            rows.clear()

    for i in range(n):
        fam = i % FAMILIES
        gold = golds[fam]
        correct = rng.random() >= 1 / 3
        verified = gold if correct else _corrupt(gold, rng)
        q = question(i, None, f"question {i} of family {fam} about order W{i % 997}", fam)
        names_per_run = [
            verified if r == 0 or rng.random() < 0.8 else _corrupt(verified, rng) for r in range(R)
        ]
        for r, names in enumerate(names_per_run):
            runs.append(
                Run(
                    id=Run.derive_id(q.id, r), question_id=q.id, run_index=r, trajectory=_trajectory(names, i)
                )
            )
        run_id = Run.derive_id(q.id, 0)
        share = sum(names == verified for names in names_per_run) / R
        mct.append({"question_id": q.id, "run_id": run_id, "signature": runs[-R].trajectory.signature(),
                    "share": share, "n_runs": R, "n_distinct": len({tuple(x) for x in names_per_run})})  # fmt: skip
        labels.append(Label(run_id=run_id, source="gold", correct=correct))
        truth[run_id], group[run_id] = int(correct), f"f{fam}"
        for a in range(K):
            alt = question(i, q.id, f"alternate {a} of question {i} family {fam}", fam)
            follows_gold = rng.random() < (0.85 if correct else 0.7)
            names = gold if follows_gold else _corrupt(gold, rng)
            runs.append(Run(id=Run.derive_id(alt.id, 0), question_id=alt.id, run_index=0,
                            trajectory=_trajectory(names, i)))  # fmt: skip
        if len(mct) >= batch:
            flush()
    flush()
    return {"truth": truth, "group": group}
