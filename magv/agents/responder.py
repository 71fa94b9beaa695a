"""Responder: the tool-using assistant whose trajectories MAG-V verifies.

Loop: the model picks a tool call or answers; the call runs in the domain sandbox (its own
transaction, rolled back after the run); the result goes back; stop at an answer or at max steps.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from magv.agents.contract import AgentEnv, AgentIdentity, AgentTask, RunResult
from magv.llm.actions import FinalAnswer, InvalidReply, choose_action
from magv.models import Step, ToolCall, ToolSpec, Trajectory, canonical_json, make_id
from magv.prompts import load_prompt

RETRY_HINT = {
    "json": 'Reply with one JSON object: a tool call {"tool": ..., "arguments": {...}} or {"answer": ...}.',
    "native": "Call one of the tools with valid arguments, or answer the customer in plain text.",
}
RESULT_CHARS = 1500  # tool results shown to the model are cut here: small models have small contexts


@dataclass
class Demo:
    """A verified example shown in the responder's prompt (see magv.demonstrations)."""

    question: str
    calls: list[ToolCall]


def _signature_line(spec: ToolSpec) -> str:
    props = spec.parameters.get("properties", {})
    required = set(spec.parameters.get("required", []))
    parts = []
    for name, schema in props.items():
        kind = schema.get("type", "any") if isinstance(schema, dict) else "any"
        parts.append(f"{name}{'' if name in required else '?'}: {kind}")
    return ", ".join(parts)


def system_prompt(domain, tool_mode: str, demos: Sequence[Demo] = ()) -> tuple[str, str, str]:
    """(text, template name, template hash) of the responder's system message."""
    prompt = load_prompt("responder")
    tools = [
        {"name": t.name, "description": t.description, "arguments": _signature_line(t)} for t in domain.tools
    ]
    text = prompt.render(
        system_prompt=domain.system_prompt, tools=tools, json_mode=tool_mode == "json", demos=list(demos)
    )
    return text, prompt.name, prompt.hash


def _result_text(step: Step) -> str:
    if step.error:
        return f"ERROR: {step.error}"
    text = canonical_json(step.result)
    return text if len(text) <= RESULT_CHARS else text[:RESULT_CHARS] + " …(truncated)"


async def respond(
    client,
    domain,
    pool,
    question: str,
    *,
    run_index: int,
    max_steps: int,
    tool_mode: str,
    context_key: str,
    demos: Sequence[Demo] = (),
    temperature: float | None = None,
) -> RunResult:
    """One run of the responder on one question."""
    started = time.perf_counter()
    system, template, template_hash = system_prompt(domain, tool_mode, demos)
    messages: list[dict] = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    seen = [question]  # what grounded arguments may be copied from: the question and the results shown
    out = RunResult(trajectory=Trajectory(status="max_steps"))
    steps = out.trajectory.steps
    with pool.session() as sandbox:
        for step_index in range(max_steps):
            action, result = await choose_action(
                client,
                "responder",
                messages,
                domain.tools,
                mode=tool_mode,
                template=template,
                template_hash=template_hash,
                seed=run_index,
                temperature=temperature,
                context_key=f"{context_key}:{step_index}",
                context=seen,
                made=[s.call for s in steps if s.kind == "tool" and s.call is not None],
            )
            out.prompt_tokens += result.prompt_tokens
            out.completion_tokens += result.completion_tokens
            if result.error:
                out.llm_errors.append(result.error)
                out.trajectory.status = "llm_error"
                break
            if isinstance(action, FinalAnswer):
                out.trajectory.response = action.text
                out.trajectory.status = "ok"
                break
            if isinstance(action, InvalidReply):
                steps.append(Step(kind="invalid", raw=action.raw[:2000], error=action.error))
                messages += [
                    {"role": "assistant", "content": action.raw[:2000]},
                    {"role": "user", "content": f"Invalid reply: {action.error}. {RETRY_HINT[tool_mode]}"},
                ]
                continue
            step = await asyncio.to_thread(sandbox.execute, action)
            steps.append(step)
            seen.append(_result_text(step))
            messages += _exchange(action, step, tool_mode, len(steps))
    out.latency_s = time.perf_counter() - started
    return out


class Responder:
    """magv's own responder as an implementation of the agent contract (the default agent): its
    prompt, its json or native tool protocol, tools in magv's sandbox. Its identity hashes the
    prompt template and the responder role's model and tool mode."""

    def __init__(self, settings):
        self.settings = settings
        role = settings.llm.role("responder")
        self.tool_mode = role["tool_mode"]
        self.identity = AgentIdentity(
            kind="responder",
            name="magv responder",
            hash=make_id(load_prompt("responder").hash, role["model"], self.tool_mode, length=12),
            version=settings.responder.agent_version,
        )

    async def run(self, task: AgentTask, env: AgentEnv) -> RunResult:
        return await respond(
            env.client,
            env.domain,
            env.pool(),
            task.question,
            run_index=task.run_index,
            max_steps=task.max_steps,
            tool_mode=self.tool_mode,
            context_key=task.context_key,
            demos=task.demos,
            temperature=task.temperature,
        )


def _exchange(call: ToolCall, step: Step, tool_mode: str, n: int) -> list[dict]:
    """The assistant's call and the tool's result as chat messages, in the format of the tool mode."""
    if tool_mode == "native":
        call_id = f"call_{n}"
        return [
            # "" not None: llama-cpp-python's server rejects a null content.
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": _result_text(step)},
        ]
    return [
        {"role": "assistant", "content": json.dumps({"tool": call.name, "arguments": call.arguments})},
        {"role": "user", "content": f"Result of {call.name}: {_result_text(step)}"},
    ]
