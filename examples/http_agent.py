"""Example agent 3: the assistant of `openai_loop.py` as an HTTP service (Starlette).

magv POSTs each task as JSON to the URL (docs/agents.md: question, run_index, seed, tools,
system_prompt, max_steps, temperature, llm) and reads the conversation from the reply. The service
runs the tools itself, here over its own copy of the retail database (magv's sandbox, built under
$AGENT_DATA_DIR, default data/domains).

    python examples/http_agent.py --port 8790
    magv eval --agent-url http://127.0.0.1:8790/agent --questions seeds --max-steps 4 --temperature 0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openai_loop  # noqa: E402

from magv.agents.contract import AgentTask, ToolExecutor  # noqa: E402
from magv.domains import load_domain  # noqa: E402

DOMAIN = os.environ.get("AGENT_DOMAIN", "retail")
_pool: Any = None
_lock = threading.Lock()


def pool() -> Any:
    """The domain's data in memory, built once for the service's life."""
    global _pool
    with _lock:
        if _pool is None:
            domain = load_domain(DOMAIN)
            _pool = domain.sandbox_pool(Path(os.environ.get("AGENT_DATA_DIR", "data/domains")))
        return _pool


FIELDS = {
    "question": str,
    "run_index": int,
    "seed": int,
    "tools": list,
    "system_prompt": str,
    "max_steps": int,
}


def task_from(body: Any) -> AgentTask:
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    for name, kind in FIELDS.items():
        if not isinstance(body.get(name), kind):
            raise ValueError(f"{name}: expected {kind.__name__}")
    return AgentTask(**{k: body[k] for k in FIELDS}, temperature=body.get("temperature"),
                     llm=body.get("llm") or {}, executor=ToolExecutor(pool))  # fmt: skip


def run(task: AgentTask) -> dict[str, Any]:
    try:
        return openai_loop.agent(task)
    finally:
        task.executor.close()  # type: ignore[union-attr]


async def answer(request: Request) -> JSONResponse:
    try:
        task = task_from(await request.json())
    except ValueError as exc:
        return JSONResponse({"error": f"bad task: {exc}"}, status_code=400)
    return JSONResponse(await asyncio.to_thread(run, task))


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/agent", answer, methods=["POST"]), Route("/health", health)])

if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    args = parser.parse_args()
    pool()  # build the data before the first request
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
