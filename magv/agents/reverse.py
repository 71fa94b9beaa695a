"""Reverse engineer: alternate questions that the assistant's response would answer (MAG-V).

If similar questions lead the responder down the same trajectory, that trajectory is trusted. So
an alternate is one request in the customer's voice, carrying the identifiers (emails, ids) the
original question gave: the prompt names them and caps an alternate's length.
"""

from __future__ import annotations

from collections.abc import Sequence

from magv.agents.parsing import QuestionsReply, ask_for_questions
from magv.prompts import load_prompt

# Characters an alternate may have: one request, not a chain of them.
MAX_LENGTH = 240


async def reverse_engineer(
    client,
    domain,
    response: str,
    k: int,
    context_key: str,
    base_question: str | None = None,
    identifiers: Sequence[str] = (),
) -> QuestionsReply:
    """k alternate questions from a response, each stating `identifiers` (the base question's).
    The base question is shown only when given, for prompts that want it as context; the default
    pipeline shows the response and the identifiers."""
    prompt = load_prompt("reverse")
    text = prompt.render(
        domain_description=domain.description,
        response=response[:2000],
        base_question=base_question,
        k=k,
        identifiers=list(identifiers),
    )
    return await ask_for_questions(client, "reverse", prompt, text, k, context_key, max_length=MAX_LENGTH)
