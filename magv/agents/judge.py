"""LLM-judge baseline: the same question, trajectory and response the verifier sees, shown to an
LLM that answers correct / incorrect with a reason. Verdicts keep tokens and latency so reports can
compare the judge's accuracy and cost with the classical verifier's."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from magv.models import JudgeVerdict, Step, Trajectory
from magv.prompts import load_prompt

if TYPE_CHECKING:
    from magv.store import Store

RESULT_CHARS = 300  # per tool result: small judge models have small contexts
RESPONSE_CHARS = 1500

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["correct", "incorrect"]},
        "reason": {"type": "string", "maxLength": 400},
    },
    "required": ["verdict", "reason"],
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT_SCHEMA}}

_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
# The error of a judgement the LLM never answered (connection, timeout, HTTP error): not a verdict.
LLM_ERROR = "LLM error: "


def _step_line(step: Step) -> str:
    if step.kind == "invalid" or step.call is None:
        return f"(unusable reply: {(step.raw or '')[:120]!r})"
    outcome = (
        f"ERROR {step.error}" if step.error else json.dumps(step.result, default=str, ensure_ascii=False)
    )
    if len(outcome) > RESULT_CHARS:
        outcome = outcome[:RESULT_CHARS] + " …"
    return f"{step.call.canonical()} -> {outcome}"


def render(question: str, trajectory: Trajectory) -> tuple[str, str, str]:
    """(prompt text, template name, template hash)."""
    prompt = load_prompt("judge")
    response = (trajectory.response or "(no response)")[:RESPONSE_CHARS]
    text = prompt.render(
        question=question, steps=[_step_line(s) for s in trajectory.steps], response=response
    )
    return text, prompt.name, prompt.hash


def parse_verdict(text: str | None) -> tuple[bool | None, str, str | None]:
    """(correct, reason, error) of a judge reply; correct is None when it does not parse."""
    if not text or not text.strip():
        return None, "", "unparsable verdict: empty reply"
    candidates = [text.strip()]
    found = _OBJECT.search(text)
    if found:
        candidates.append(found.group(0))
    for candidate in candidates:
        try:
            data = json.loads(candidate, strict=False)
        except json.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            continue
        verdict = str(data.get("verdict", "")).strip().lower()
        reason = data.get("reason")
        reason = reason if isinstance(reason, str) else ""
        if verdict in ("correct", "incorrect"):
            return verdict == "correct", reason, None
        return (
            None,
            reason,
            f"unparsable verdict: 'verdict' is {data.get('verdict')!r}, not correct/incorrect",
        )
    return None, "", f"unparsable verdict: not a JSON object: {text.strip()[:200]!r}"


async def judge(
    client, run_id: str, question: str, trajectory: Trajectory, *, temperature: float | None = 0.0
) -> JudgeVerdict:
    """One verdict. An unparsable reply is a verdict with correct=None and the error; an LLM failure
    comes back the same way, its error starting with LLM_ERROR, so a batch never stops on one bad
    call, but it is no verdict: `split_failures` keeps it out of the store, to be asked again."""
    text, template, template_hash = render(question, trajectory)
    result = await client.chat(
        "judge",
        [{"role": "user", "content": text}],
        template=template,
        template_hash=template_hash,
        response_format=RESPONSE_FORMAT,
        temperature=temperature,
        context_key=f"judge:{run_id}",
    )
    if result.error:
        correct, reason, error = None, "", f"{LLM_ERROR}{result.error}"
    else:
        correct, reason, error = parse_verdict(result.text)
    return JudgeVerdict(
        run_id=run_id,
        model=result.model or "unknown",
        correct=correct,
        reason=reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        latency_s=result.latency_s,
        error=error,
    )


def failed_on_llm(verdict: JudgeVerdict) -> bool:
    return bool(verdict.error and verdict.error.startswith(LLM_ERROR))


def split_failures(verdicts: Sequence[JudgeVerdict]) -> tuple[list[JudgeVerdict], list[JudgeVerdict]]:
    """(verdicts to store, judgements that failed on the LLM and are to be retried)."""
    return [v for v in verdicts if not failed_on_llm(v)], [v for v in verdicts if failed_on_llm(v)]


def pending_judgements(
    store: Store, model: str, limit: int | None = None
) -> list[tuple[str, str, Trajectory]]:
    """(run_id, question, trajectory) of verified trajectories this judge model has not judged. A
    stored LLM failure (older versions kept them) counts as not judged."""
    done = {v.run_id for v in store.judge_verdicts() if v.model == model and not failed_on_llm(v)}
    mct = {m["question_id"]: m["run_id"] for m in store.mct() if m["run_id"] not in done}
    questions = {q.id: q for q in store.questions(ids=list(mct)) if q.origin != "alternate"}
    items = [
        (run.id, questions[run.question_id].text, run.trajectory)
        for run in store.runs(question_ids=list(questions))
        if mct.get(run.question_id) == run.id
    ]
    return items[:limit] if limit is not None else items
