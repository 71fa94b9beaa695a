"""The agent contract: what every assistant magv tests does, whoever wrote it.

Given one task (a question, the run index and a seed, the domain's tool specs), an agent returns one
run: a `RunResult` whose trajectory magv verifies, with the tokens and cost it knows. magv's own
responder is one implementation (`magv.agents.responder.Responder`, the default); a user's Python
callable (`responder.agent`) and an HTTP service (`responder.agent_url`) are the others
(`magv.agents.external`). Every place that answers questions (respond, respond to alternates, the
cascade's alternates step, `magv eval`, schedules, Dask / Ray workers) asks `build_agent(settings)`
for the agent and calls `run`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from magv.models import ToolCall, ToolSpec, Trajectory, canonical_json, make_id


@dataclass
class RunResult:
    """One run of an agent on one question. `cost_usd` is None when the agent does not say."""

    trajectory: Trajectory
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    llm_errors: list[str] = field(default_factory=list)
    cost_usd: float | None = None


@dataclass(frozen=True)
class AgentIdentity:
    """Which agent answered, stored with every run: its kind (responder, callable, http), its name
    (the callable's `module:function`, the URL), a hash of its code where magv can read it, and the
    version string the user set (`responder.agent_version`)."""

    kind: str
    name: str
    hash: str | None = None
    version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "hash": self.hash, "version": self.version}

    def label(self) -> str:
        tag = self.version or self.hash
        return f"{self.name}@{tag}" if tag else self.name


class ToolExecutor:
    """magv's sandbox lent to an agent that runs over a magv domain's database: one session (its
    writes private to the run) opened at the first call and closed by `close`. A call returns the
    text of the tool message, JSON of the result or `{"error": ...}`, the form the import reader
    takes back. Once closed, a call raises: the run it belonged to is over."""

    def __init__(self, pool_factory: Callable[[], Any]):
        self._pool_factory = pool_factory
        self._session: Any = None
        self._sandbox: Any = None
        self._closed = False

    def call(self, name: str, arguments: dict[str, Any] | str | None = None) -> str:
        if self._closed:
            # A sync agent that timed out goes on in its thread (Python cannot stop it): it must not
            # open a sandbox session no one closes, nor keep calling the model for a run already lost.
            raise RuntimeError("this run is over (finished or timed out): no more tool calls")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                return json.dumps({"error": f"invalid_arguments: not valid JSON: {exc}"})
        if not isinstance(arguments, dict):
            return json.dumps({"error": "invalid_arguments: expected a JSON object"})
        if self._sandbox is None:
            self._session = self._pool_factory().session()
            self._sandbox = self._session.__enter__()
        step = self._sandbox.execute(ToolCall(name=name, arguments=arguments))
        return json.dumps(
            {"error": step.error} if step.error else step.result, ensure_ascii=False, default=str
        )

    async def acall(self, name: str, arguments: dict[str, Any] | str | None = None) -> str:
        return await asyncio.to_thread(self.call, name, arguments)

    def close(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session, self._sandbox = self._session, None, None
            session.__exit__(None, None, None)


@dataclass
class AgentTask:
    """One run asked of an agent. `tools` are the domain's tool specs in OpenAI form; `llm` the
    OpenAI-compatible endpoint and model magv uses for its responder role (an agent may use them or
    its own); `call_tool` / `acall_tool` run a tool in magv's sandbox when the domain has a
    database. `demos` and `context_key` are for magv's own responder."""

    question: str
    run_index: int
    seed: int
    tools: list[dict[str, Any]]
    system_prompt: str
    max_steps: int
    temperature: float | None = None
    llm: dict[str, Any] = field(default_factory=dict)
    context_key: str = ""
    demos: Sequence[Any] = ()
    specs: list[ToolSpec] = field(default_factory=list)
    executor: ToolExecutor | None = None

    def payload(self) -> dict[str, Any]:
        """The task as JSON: what an HTTP agent is sent."""
        return {
            "question": self.question,
            "run_index": self.run_index,
            "seed": self.seed,
            "tools": self.tools,
            "system_prompt": self.system_prompt,
            "max_steps": self.max_steps,
            "temperature": self.temperature,
            "llm": self.llm,
        }

    def key(self, identity: AgentIdentity) -> str:
        """The replay key of this task asked of this agent (the call log answers a finished one)."""
        return make_id("agent", identity.as_dict(), canonical_json(self.payload()), self.context_key)

    def call_tool(self, name: str, arguments: dict[str, Any] | str | None = None) -> str:
        return self._executor().call(name, arguments)

    async def acall_tool(self, name: str, arguments: dict[str, Any] | str | None = None) -> str:
        return await self._executor().acall(name, arguments)

    def _executor(self) -> ToolExecutor:
        if self.executor is None:
            raise RuntimeError("this domain has no database: the agent must run its own tools")
        return self.executor


@dataclass
class AgentEnv:
    """Where a run happens: the LLM client of this process (its call log), the domain, and its
    sandbox pool, built on first use (a domain without a database has none)."""

    client: Any
    domain: Any
    pool: Callable[[], Any]


@runtime_checkable
class Agent(Protocol):
    identity: AgentIdentity

    async def run(self, task: AgentTask, env: AgentEnv) -> RunResult: ...


def build_agent(settings: Any) -> Agent:
    """The agent the settings name: `responder.agent` (a callable), `responder.agent_url` (an
    HTTP service), else magv's own responder."""
    r = settings.responder
    if r.agent:
        from magv.agents.external import CallableAgent

        return CallableAgent(r.agent, version=r.agent_version, timeout_s=r.agent_timeout_s)
    if r.agent_url:
        from magv.agents.external import HttpAgent

        return HttpAgent(
            r.agent_url,
            version=r.agent_version,
            timeout_s=r.agent_timeout_s,
            retries=r.agent_retries,
            concurrency=r.agent_concurrency,
        )
    from magv.agents.responder import Responder

    return Responder(settings)


def check_tools_run(settings: Any, domain: Any) -> None:
    """A domain without a database needs an agent that runs its own tools."""
    if not getattr(domain, "has_database", True) and not (
        settings.responder.agent or settings.responder.agent_url
    ):
        from magv.errors import BadInput

        raise BadInput(
            f"domain {domain.name} has no database: magv's responder cannot run its tools; "
            "give your agent (--agent or --agent-url, docs/agents.md)"
        )


def task_for(
    settings: Any,
    env: AgentEnv,
    question: str,
    *,
    run_index: int,
    context_key: str,
    demos: Sequence[Any] = (),
    temperature: float | None = None,
) -> AgentTask:
    """The task of one run under these settings: the domain's tools and prompt, max steps, the
    responder role's endpoint, and the domain's sandbox when it has a database."""
    role = settings.llm.role("responder")
    try:
        urls = env.client.endpoints_for("responder")
    except Exception:  # an agent with its own model needs no endpoint of magv's
        urls = []
    domain = env.domain
    has_db = getattr(domain, "has_database", True)
    return AgentTask(
        question=question,
        run_index=run_index,
        seed=settings.pipeline.seed + run_index,
        tools=[t.openai() for t in domain.tools],
        system_prompt=domain.system_prompt,
        max_steps=settings.pipeline.max_steps,
        temperature=role["temperature"] if temperature is None else temperature,
        llm={"base_url": urls[0] if urls else None, "model": role["model"]},
        context_key=context_key,
        demos=demos,
        specs=list(domain.tools),
        executor=ToolExecutor(env.pool) if has_db else None,
    )
