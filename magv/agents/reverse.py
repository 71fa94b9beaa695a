"""Reverse engineer: alternate questions that the assistant's response would answer (MAG-V).

If similar questions lead the responder down the same trajectory, that trajectory is trusted.
"""

from __future__ import annotations

from magv.agents.parsing import QuestionsReply, ask_for_questions
from magv.prompts import load_prompt


async def reverse_engineer(
    client, domain, response: str, k: int, context_key: str, base_question: str | None = None
) -> QuestionsReply:
    """k alternate questions from a response. The base question is shown only when given, for
    prompts that want it as context; the default pipeline shows the response alone."""
    prompt = load_prompt("reverse")
    text = prompt.render(
        domain_description=domain.description, response=response[:2000], base_question=base_question, k=k
    )
    return await ask_for_questions(client, "reverse", prompt, text, k, context_key)
