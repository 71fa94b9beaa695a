"""Demonstrations: verified question + trajectory pairs, indexed by question embedding, so the
responder can see the m most similar solved examples in its prompt.

Verified is `magv.definitions.is_verified`: the effective label (human > import > gold) where a
run has one, else the latest verifier's score at or above its threshold. Only the MCT run of a base
question is an example (alternates share their base question's group and would add near-copies of
it).

Leakage: `nearest` never returns an example of an excluded group, so a question never sees itself,
its alternates, or anything generated from its own seed; nor an example with the same text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from magv.agents.responder import Demo
from magv.definitions import is_verified
from magv.models import Seed, ToolCall

if TYPE_CHECKING:
    from magv.store import Store


@dataclass
class Example(Demo):
    """A verified example; it is a `Demo`, so it goes into the responder's prompt as it is."""

    question_id: str = ""
    group_id: str = ""
    source: str = ""  # human | import | gold | verifier | seed
    score: float | None = None


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def verified_examples(
    store: Store, domain: str, threshold: float | None = None, model_id: str | None = None
) -> list[Example]:
    """The verified MCT trajectories of the domain's base questions. `threshold` overrides the one
    each prediction was made with; `model_id` defaults to the verifier that scored last."""
    model_id = model_id or store.scored_model_id()
    out = []
    for row in store.runs_with_verdicts(model_id=model_id):
        if not row["is_mct"] or row["domain"] != domain:
            continue
        cut = row["threshold"] if threshold is None else threshold
        verified = is_verified(row["label"], row["score"], cut)
        source = row["label_source"] or "verifier"
        calls = _calls(row["trajectory"])
        # An example without a tool call shows the model nothing about tools.
        if verified and calls:
            out.append(
                Example(
                    question=row["question"],
                    calls=calls,
                    question_id=row["question_id"],
                    group_id=row["group_id"] or row["question_id"],
                    source=source,
                    score=row["score"],
                )
            )
    return out


def seed_examples(seeds: Iterable[Seed]) -> list[Example]:
    """The seeds' gold trajectories as examples; each seed is its own group."""
    return [
        Example(
            question=s.question,
            calls=list(s.trajectory),
            question_id=f"seed:{s.id}",
            group_id=s.id,
            source="seed",
        )
        for s in seeds
    ]


def _calls(trajectory_json: str | None) -> list[ToolCall]:
    steps = json.loads(trajectory_json or "{}").get("steps") or []
    return [ToolCall(**s["call"]) for s in steps if s.get("kind", "tool") == "tool" and s.get("call")]


class DemonstrationIndex:
    """Examples indexed by the embedding of their question; `embedder.embed(texts)` must return
    L2-normalised rows (magv.llm.Embedder does). Nothing is embedded until the first lookup, and
    never when there are no examples."""

    def __init__(self, examples: Sequence[Example], embedder: Any):
        seen: set[str] = set()
        self.examples: list[Example] = []
        for ex in examples:  # the same question twice (store and seed file) would fill two slots
            if _key(ex.question) not in seen:
                seen.add(_key(ex.question))
                self.examples.append(ex)
        self.embedder = embedder
        self._matrix: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.examples)

    @classmethod
    def from_store(
        cls,
        store: Store,
        domain: str,
        embedder: Any,
        seeds: Iterable[Seed] = (),
        threshold: float | None = None,
    ) -> DemonstrationIndex:
        """The store's verified examples of a domain, plus the given seeds' gold trajectories."""
        return cls(verified_examples(store, domain, threshold) + seed_examples(seeds), embedder)

    def _index(self) -> np.ndarray:
        if self._matrix is None:
            self._matrix = np.asarray(
                self.embedder.embed([e.question for e in self.examples]), dtype=np.float32
            )
        return self._matrix

    def nearest(self, question: str, m: int, exclude_groups: Iterable[str] = ()) -> list[Example]:
        return self.nearest_many([question], m, [exclude_groups])[0]

    def nearest_many(
        self, questions: Sequence[str], m: int, exclude_groups: Sequence[Iterable[str]]
    ) -> list[list[Example]]:
        """For each question, the m most similar examples (highest cosine first; ties keep the
        store's order) outside its excluded groups and not of the same text."""
        if len(exclude_groups) != len(questions):
            raise ValueError("exclude_groups needs one collection per question")
        if m <= 0 or not self.examples or not questions:
            return [[] for _ in questions]
        index = self._index()
        queries = np.asarray(self.embedder.embed(list(questions)), dtype=np.float32)
        similarity = queries @ index.T
        out = []
        for row, text, groups in zip(similarity, questions, exclude_groups):
            banned = set(groups)
            own = _key(text)
            picked: list[Example] = []
            for j in np.argsort(-row, kind="stable"):
                ex = self.examples[j]
                if ex.group_id in banned or _key(ex.question) == own:
                    continue
                picked.append(ex)
                if len(picked) == m:
                    break
            out.append(picked)
        return out
