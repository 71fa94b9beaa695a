"""Helpers for the verifier tests: a deterministic embedder and a synthetic pipeline store."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import numpy as np

from magv.mct import most_common_trajectory
from magv.models import Question, Run, ToolCall, Trajectory

TOOLS = [
    "find_customer",
    "get_order",
    "list_orders",
    "get_product",
    "update_address",
    "cancel_order",
    "refund",
]


class HashEmbedder:
    """Bag of hashed word tokens, L2-normalised: equal texts give equal vectors, shared words raise
    the cosine. Deterministic and instant, unlike a real sentence model."""

    def __init__(self, dim: int = 64):
        self.dim = dim
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for tok in text.replace("(", " ").replace(")", " ").replace(",", " ").split():
                h = int(hashlib.md5(tok.encode()).hexdigest(), 16)
                out[i, h % self.dim] += 1.0 if (h >> 8) % 2 else -1.0
            norm = np.linalg.norm(out[i])
            if norm:
                out[i] /= norm
        return out


def calls(*names: str, **args) -> list[ToolCall]:
    return [ToolCall(name=n, arguments=dict(args)) for n in names]


def traj(*names: str, response: str | None = "done", **args) -> Trajectory:
    return Trajectory.from_calls(calls(*names, **args), response=response)


def _perturb(names: list[str], rng: random.Random) -> list[str]:
    out = list(names)
    choice = rng.randrange(3)
    if choice == 0 and len(out) > 1:
        out.pop(rng.randrange(len(out)))
    elif choice == 1:
        out.insert(rng.randrange(len(out) + 1), rng.choice(TOOLS))
    else:
        out[rng.randrange(len(out))] = rng.choice(TOOLS)
    return out


def synthetic_store(
    store, n_questions: int = 60, per_group: int = 3, runs: int = 3, alternates: int = 2, seed: int = 0
) -> dict[str, bool]:
    """A store shaped like the pipeline's output: investigator questions with targets, R runs,
    MCTs, alternates with one run each. A question whose MCT is right gets alternates that mostly
    follow it; a wrong one gets scattered alternates (the distant-supervision signal).
    Returns question id -> whether its MCT matches the target."""
    rng = random.Random(seed)
    questions, all_runs, truth = [], [], {}
    for i in range(n_questions):
        group = f"seed{i // per_group}"
        target = rng.sample(TOOLS[:4], rng.randint(1, 3)) + rng.sample(TOOLS[4:], rng.randint(0, 1))
        q = Question(
            id=f"q{i:04d}", domain="retail", text=f"customer question {i} about {' '.join(target)}",
            origin="investigator", target=calls(*target, order_id=i % 5), group_id=group,
        )  # fmt: skip
        correct = rng.random() < 0.5
        mct_names = target if correct else _perturb(target, rng)
        truth[q.id] = mct_names == target  # a perturbation can land on the target itself
        questions.append(q)
        base_runs = []
        for r in range(runs):
            names = (
                mct_names if (r < 2 or rng.random() < (0.8 if correct else 0.3)) else _perturb(mct_names, rng)
            )
            t = Trajectory.from_calls(calls(*names, order_id=i % 5), response=f"answer {i} {' '.join(names)}")
            base_runs.append(Run(id=f"r{i:04d}_{r}", question_id=q.id, run_index=r, trajectory=t))
        all_runs += base_runs
        for k in range(alternates):
            a = Question(
                id=f"q{i:04d}_a{k}", domain="retail", text=f"alternate {k} of question {i} {' '.join(target)}",
                origin="alternate", parent_id=q.id, group_id=group,
            )  # fmt: skip
            questions.append(a)
            follow = rng.random() < (0.85 if correct else 0.25)
            names = mct_names if follow else _perturb(_perturb(mct_names, rng), rng)
            t = Trajectory.from_calls(calls(*names, order_id=i % 5), response=f"answer {i} {' '.join(names)}")
            all_runs.append(Run(id=f"r{i:04d}_a{k}", question_id=a.id, run_index=0, trajectory=t))
    store.add_questions(questions)
    store.add_runs(all_runs)
    by_q: dict[str, list[Run]] = {}
    for r in all_runs:
        by_q.setdefault(r.question_id, []).append(r)
    store.set_mct([most_common_trajectory(rs) for qid, rs in by_q.items() if "_a" not in qid])
    return truth
