"""Investigator agent: new questions that need a target trajectory, by in-context learning.

As in MAG-V: a seed pair (Q1, T1) is the style example, the target trajectory T2 is another seed's
gold trajectory, and the model writes N questions a customer would ask that need T2. The prompt
names the values the customer has to state for T2 (magv/quality.py `needed_values`), so that the
assistant can answer the question from its tools.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from magv.agents.parsing import QuestionsReply, ask_for_questions
from magv.models import Seed
from magv.prompts import load_prompt
from magv.quality import Need


def pick_example(target: Seed, seeds: list[Seed], rng: random.Random) -> Seed | None:
    """An example seed whose trajectory differs from the target's (any other seed if none differs)."""
    others = [s for s in seeds if s.id != target.id and s.signature() != target.signature()]
    others = others or [s for s in seeds if s.id != target.id]
    return rng.choice(others) if others else None


async def investigate(
    client, domain, target: Seed, example: Seed | None, n: int, context_key: str, needs: Sequence[Need] = ()
) -> QuestionsReply:
    """N questions that need the target's calls; `needs` are the values each must state."""
    prompt = load_prompt("investigator")
    example = example or target
    text = prompt.render(
        domain_description=domain.description,
        tools=domain.tools,
        example_question=example.question,
        example_calls=example.trajectory,
        target_calls=target.trajectory,
        customer_values=[n.value for n in needs if n.kind == "value"],
        time_phrase=next((n.value for n in needs if n.kind == "time"), None),
        n=n,
    )
    return await ask_for_questions(client, "investigator", prompt, text, n, context_key)
