"""A scripted stand-in for the four agents, served by the fake OpenAI-compatible server.

It lets the whole pipeline run fast over real HTTP with realistic structure:

* investigator: questions that carry a marker of their target seed, e.g. ``… [s3#2]``;
* responder: follows the marked seed's gold trajectory one call per turn, then answers with the
  marker in the reply; a deterministic share of questions (and of single runs) goes wrong (drops
  or swaps a call), so gold labels and the verifier have both classes to learn;
* reverse engineer: alternates that keep the marker, so they lead back to the same trajectory;
* judge: a verdict.

Everything depends only on the request, so reruns are reproducible.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import jinja2

from magv.domains import load_domain
from magv.models import Seed

_TOJSON_TEMPLATE = jinja2.Environment().from_string("{{ v | tojson }}")


def _TOJSON(value: Any) -> str:
    return _TOJSON_TEMPLATE.render(v=value)


MARKER = re.compile(r"\[([A-Za-z0-9_.-]+?)(?:#(\d+))?\]")


def _h(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(json.dumps(parts, default=str).encode()).digest()[:8], "little")


class AgentScript:
    def __init__(
        self, domain: str = "retail", wrong_question_rate: float = 0.3, wrong_run_rate: float = 0.15
    ):
        self.domain = load_domain(domain)
        self.seeds: dict[str, Seed] = {s.id: s for s in self.domain.seeds()}
        # valid calls to borrow when a run goes wrong: every seed's first call
        self.first_calls = [
            (s.trajectory[0].name, dict(s.trajectory[0].arguments)) for s in self.seeds.values()
        ]
        self.wrong_question_rate = wrong_question_rate
        self.wrong_run_rate = wrong_run_rate

    def __call__(self, body: dict[str, Any]) -> str | dict[str, Any]:
        messages = body.get("messages") or []
        first_user = next((m.get("content") or "" for m in messages if m.get("role") == "user"), "")
        schema = _schema(body)
        props = (schema or {}).get("properties", {})
        if "questions" in props:
            return self._questions(first_user, props["questions"].get("maxItems", 3))
        if "verdict" in props:
            return {
                "json": {"verdict": "correct" if _h(first_user) % 3 else "incorrect", "reason": "scripted"}
            }
        return self._respond(body, messages)

    # -- investigator and reverse engineer ---------------------------------------------------

    def _questions(self, prompt: str, n: int) -> dict[str, Any]:
        if "need exactly these tool calls" in prompt:
            target_part = prompt.split("need exactly these tool calls", 1)[1]
            seed = self._seed_for_calls(target_part)
            base = seed.question if seed else "I have a question"
            sid = seed.id if seed else "none"
            return {"json": {"questions": [f"{_reword(base, i)} [{sid}#{i}]" for i in range(n)]}}
        m = MARKER.search(prompt)
        sid = m.group(1) if m else "none"
        base = self.seeds[sid].question if sid in self.seeds else "What happened?"
        return {"json": {"questions": [f"Alternate {j}: {_reword(base, j + 7)} [{sid}]" for j in range(n)]}}

    def _seed_for_calls(self, text: str) -> Seed | None:
        """The seed whose gold calls the prompt lists as its target (rendered as the prompt does)."""
        for seed in self.seeds.values():
            block = "\n".join(
                f"{i}. {c.name}({_TOJSON(c.arguments)})" for i, c in enumerate(seed.trajectory, start=1)
            )
            if block in text:
                return seed
        return None

    # -- responder ---------------------------------------------------------------------------

    def _respond(self, body: dict[str, Any], messages: list[dict]) -> dict[str, Any]:
        question = next((m.get("content") or "" for m in messages if m.get("role") == "user"), "")
        m = MARKER.search(question)
        seed = self.seeds.get(m.group(1)) if m else None
        done = sum(1 for msg in messages if msg.get("role") == "tool" or
                   (msg.get("role") == "user" and (msg.get("content") or "").startswith("Result of ")))  # fmt: skip
        plan = self._plan(seed, question, body.get("seed"))
        native = bool(body.get("tools"))
        if done < len(plan):
            name, args = plan[done]
            if native:
                return {"tool_calls": [{"name": name, "arguments": args}]}
            return {"json": {"tool": name, "arguments": args}}
        marker = f"[{seed.id}]" if seed else ""
        answer = f"Here is what I found for you {marker}: {seed.question if seed else question}"[:300]
        return {"json": {"answer": answer}} if not native else answer

    def _plan(self, seed: Seed | None, question: str, run_seed: Any) -> list[tuple[str, dict]]:
        if seed is None:
            return []
        plan = [(c.name, dict(c.arguments)) for c in seed.trajectory]
        base_key = re.sub(r"^Alternate \d+: ", "", MARKER.sub("", question)).strip()
        wrong_question = _h("q", seed.id, base_key[:20]) % 1000 < self.wrong_question_rate * 1000
        wrong_run = _h("r", question, run_seed) % 1000 < self.wrong_run_rate * 1000
        if wrong_question or wrong_run:
            plan = _corrupt(plan, self.first_calls, _h(question, run_seed if wrong_run else 0))
        return plan


_SWAPS = ["Hi, ", "Hello! ", "Quick question: ", "Please help: ", "Hey, ", "Good morning, ", "Urgent: "]


def _reword(text: str, i: int) -> str:
    return _SWAPS[i % len(_SWAPS)] + text[0].lower() + text[1:] if text else text


def _corrupt(plan: list[tuple[str, dict]], others: list[tuple[str, dict]], h: int) -> list[tuple[str, dict]]:
    """A plausible wrong trajectory with valid calls: one call short, or a different tool at the end."""
    if len(plan) > 1 and h % 2 == 0:
        return plan[:-1]
    swaps = [c for c in others if c[0] != plan[-1][0]]
    return plan[:-1] + [swaps[h % len(swaps)]]


def _schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema")
    if fmt.get("type") == "json_object":
        return fmt.get("schema")
    return None
