"""Example agent 2: the assistant of `openai_loop.py` as a LangGraph graph (ChatOpenAI with the
domain's tools bound, a tool node that runs them through magv's sandbox, a loop between them).

    pip install 'magv[langgraph]'
    magv eval --agent examples/langgraph_agent.py:agent --questions seeds --max-steps 4 --temperature 0

It returns LangChain messages; magv reads them with the same reader as imported logs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openai_loop import SYSTEM, model_settings, text_call  # noqa: E402


def build_graph(task: Any) -> Any:
    m = model_settings(task)
    model = ChatOpenAI(
        model=m["model"], base_url=m["base_url"], api_key=m["api_key"], temperature=m["temperature"],
        seed=m["seed"], max_tokens=256, timeout=300, max_retries=1,
    ).bind_tools(task.tools)  # fmt: skip

    def call_model(state: MessagesState) -> dict[str, Any]:
        reply = model.invoke(state["messages"])
        if not reply.tool_calls and (found := text_call(reply.content)):
            # llama-cpp-python leaves the call in the text (see openai_loop.text_call)
            name, args = found
            n = sum(isinstance(x, AIMessage) for x in state["messages"])
            reply = AIMessage(content=reply.content, usage_metadata=reply.usage_metadata,
                              tool_calls=[{"name": name, "args": _args(args), "id": f"call_{n}"}])  # fmt: skip
        return {"messages": [reply]}

    def run_tools(state: MessagesState) -> dict[str, Any]:
        last = state["messages"][-1]
        return {"messages": [ToolMessage(content=task.call_tool(c["name"], c["args"]), tool_call_id=c["id"])
                             for c in last.tool_calls]}  # fmt: skip

    def route(state: MessagesState) -> str:
        steps = sum(isinstance(x, AIMessage) for x in state["messages"])
        return "tools" if state["messages"][-1].tool_calls and steps < task.max_steps else END

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", run_tools)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", route, ["tools", END])
    graph.add_edge("tools", "model")
    return graph.compile()


def _args(text: str) -> dict[str, Any]:
    import json

    return json.loads(text)


def agent(task: Any) -> dict[str, Any]:
    graph = build_graph(task)
    start = [
        SystemMessage(f"{SYSTEM}\n\nThe shop's policies:\n{task.system_prompt}"),
        HumanMessage(task.question),
    ]
    state = graph.invoke({"messages": start}, {"recursion_limit": 2 * task.max_steps + 2})
    messages = state["messages"]
    usage = [x.usage_metadata or {} for x in messages if isinstance(x, AIMessage)]
    last = messages[-1]
    return {
        "messages": messages,
        "status": "max_steps" if isinstance(last, AIMessage) and last.tool_calls else "ok",
        "prompt_tokens": sum(u.get("input_tokens", 0) for u in usage),
        "completion_tokens": sum(u.get("output_tokens", 0) for u in usage),
    }
