"""Example agent 1: a plain tool loop over the openai SDK, with its own system prompt.

magv calls `agent(task)` once per run (docs/agents.md). The tools are the domain's (`task.tools`,
OpenAI function specs) and run in magv's sandbox over the domain's database (`task.call_tool`);
the model is the OpenAI-compatible server magv uses (`task.llm`), or $OPENAI_BASE_URL.

    magv eval --agent examples/openai_loop.py:agent --questions seeds --max-steps 4 --temperature 0
    magv run --agent examples/openai_loop.py:agent --questions 6 --runs 2

magv imports this file and runs it: an agent is the user's own code.
"""

from __future__ import annotations

import json
import os
from typing import Any

from openai import OpenAI

from magv.llm.actions import call_in_text

SYSTEM = """You help the customers of an online shop. Work step by step:
call one tool at a time, only with ids that the customer gave or that a tool returned;
once the results answer the request, reply to the customer in one or two sentences."""


def model_settings(task: Any) -> dict[str, Any]:
    """Where the model is and how to sample, from the task (or the environment)."""
    return {
        "base_url": task.llm.get("base_url") or os.environ.get("OPENAI_BASE_URL"),
        "model": task.llm.get("model") or os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
        "api_key": os.environ.get("OPENAI_API_KEY", "none"),  # local servers take any key
        "temperature": task.temperature,
        "seed": task.seed,
    }


def text_call(content: str | None) -> tuple[str, str] | None:
    """A tool call the server left in the reply's text: llama-cpp-python renders the tools into the
    prompt but does not parse the model's `<tool_call>` back into `tool_calls`."""
    found = call_in_text(content or "")
    if found is None or not isinstance(found[1], dict):
        return None
    return found[0], json.dumps(found[1])


def agent(task: Any) -> dict[str, Any]:
    m = model_settings(task)
    client = OpenAI(base_url=m["base_url"], api_key=m["api_key"], timeout=300, max_retries=1)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"{SYSTEM}\n\nThe shop's policies:\n{task.system_prompt}"},
        {"role": "user", "content": task.question},
    ]
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for step in range(task.max_steps):
        reply = client.chat.completions.create(
            model=m["model"], messages=messages, tools=task.tools, temperature=m["temperature"],
            seed=m["seed"], max_tokens=256,
        )  # fmt: skip
        if reply.usage:
            usage["prompt_tokens"] += reply.usage.prompt_tokens
            usage["completion_tokens"] += reply.usage.completion_tokens
        message = reply.choices[0].message
        calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
        if not calls and (found := text_call(message.content)):
            calls = [(f"call_{step}", *found)]
        if not calls:
            messages.append({"role": "assistant", "content": message.content or ""})
            return {"messages": messages, "status": "ok", **usage}
        messages.append({"role": "assistant", "content": message.content or "", "tool_calls": [
            {"id": i, "type": "function", "function": {"name": name, "arguments": args}} for i, name, args in calls]})  # fmt: skip
        for call_id, name, args in calls:
            messages.append({"role": "tool", "tool_call_id": call_id, "content": task.call_tool(name, args)})
    return {"messages": messages, "status": "max_steps", **usage}
