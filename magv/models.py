"""Pydantic models for every record that flows through the pipeline.

Ids are content-derived (`make_id`): the same content always yields the same id, so a rerun of a
stage produces rows the store already has and inserts nothing twice.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

QuestionOrigin = Literal["seed", "investigator", "alternate", "import"]
TrajectoryStatus = Literal["ok", "max_steps", "llm_error"]
LabelSource = Literal["gold", "import", "human"]
StepKind = Literal["tool", "invalid"]

# Higher number wins when several labels exist for one run.
LABEL_TRUST: dict[str, int] = {"gold": 0, "import": 1, "human": 2}


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def text_hash(text: str) -> str:
    """The key of a text in the embeddings table (DuckDB's sha256() gives the same)."""
    return hashlib.sha256(text.encode()).hexdigest()


NO_CALLS_TEXT = "(no tool calls)"


def serialised_calls(canonical: list[str] | tuple[str, ...]) -> str:
    """A trajectory's calls as the text embedded for its semantic similarity (SS): one canonical
    call per line."""
    return "\n".join(canonical) if canonical else NO_CALLS_TEXT


def _by_value(value: Any) -> Any:
    """Integral floats as ints, recursively (JSON 1 and 1.0 are one number)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _by_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_by_value(v) for v in value]
    return value


def make_id(*parts: Any, length: int = 16) -> str:
    digest = hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()
    return digest[:length]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Marks a parameter whose value must come from the conversation (magv.llm.grounding).
GROUNDED = "x-magv-grounded"


def without_grounding(schema: Any) -> Any:
    """A copy of a JSON schema without magv's grounded keyword, for those who do not know it."""
    if isinstance(schema, dict):
        return {k: without_grounding(v) for k, v in schema.items() if k != GROUNDED}
    if isinstance(schema, list):
        return [without_grounding(v) for v in schema]
    return schema


class ToolSpec(_Model):
    """A tool in OpenAI function format, plus whether it changes data."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    description: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    writes: bool = False

    def openai(self) -> dict[str, Any]:
        """The OpenAI function spec, without magv's own schema keywords (see magv.llm.grounding)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": without_grounding(self.parameters),
            },
        }


class ToolCall(_Model):
    """A tool call. `group` marks parallel calls: consecutive calls with the same group number
    came from one assistant message (their order carries no meaning); None is a call on its own."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    group: int | None = None

    @model_serializer(mode="wrap")
    def _without_default_group(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Calls outside a parallel group serialise as before groups existed (stored rows, exports).
        data = handler(self)
        if data.get("group") is None:
            data.pop("group", None)
        return data

    def canonical(self) -> str:
        """name(arguments) with sorted keys; numbers by value (1.0 is written 1), as matching
        compares them, so that MCT voting and the features agree with the match modes."""
        return f"{self.name}({canonical_json(_by_value(self.arguments))})"


class Step(_Model):
    """One turn of the agent loop: a tool call and what came back, or an invalid reply."""

    kind: StepKind = "tool"
    call: ToolCall | None = None
    result: Any = None
    error: str | None = None
    raw: str | None = None  # the model's text when it could not be parsed into a call
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        """A tool call that did not fail (`magv.definitions.is_tool_error` is the failure)."""
        return self.kind == "tool" and not self.error


class Trajectory(_Model):
    steps: list[Step] = Field(default_factory=list)
    response: str | None = None
    status: TrajectoryStatus = "ok"
    # How many steps came before the response, when steps came after it (a log where the agent
    # spoke, then acted: a hand-off, say); None: the response came last.
    response_at: int | None = None

    @model_serializer(mode="wrap")
    def _without_default_response_at(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Trajectories whose response came last serialise as before the field existed.
        data = handler(self)
        if data.get("response_at") is None:
            data.pop("response_at", None)
        return data

    def steps_after_response(self) -> list[Step]:
        """The steps the agent took after its last words (none when the response came last)."""
        return self.steps[self.response_at :] if self.response_at is not None else []

    @property
    def calls(self) -> list[ToolCall]:
        return [s.call for s in self.steps if s.kind == "tool" and s.call is not None]

    def tool_names(self) -> list[str]:
        return [c.name for c in self.calls]

    def call_groups(self) -> list[list[ToolCall]]:
        """The calls cut into parallel groups, in order (see `call_groups`)."""
        return call_groups(self.calls)

    def canonical_calls(self) -> list[str]:
        return [c.canonical() for c in self.calls]

    def signature(self) -> str:
        """Identity of the trajectory for MCT voting: tool names with canonical arguments."""
        return make_id(self.canonical_calls())

    @classmethod
    def from_calls(cls, calls: list[ToolCall], response: str | None = None) -> Trajectory:
        return cls(steps=[Step(call=c) for c in calls], response=response)


def call_groups(calls: list[ToolCall]) -> list[list[ToolCall]]:
    """Consecutive calls with the same non-null `group` form one parallel group; every other call
    is a group of its own."""
    out: list[list[ToolCall]] = []
    for c in calls:
        if out and c.group is not None and out[-1][-1].group == c.group:
            out[-1].append(c)
        else:
            out.append([c])
    return out


class Seed(_Model):
    """A seed question with its verified (gold) trajectory, one line of a domain's seeds.jsonl.
    `acceptable` lists further trajectories that are also correct (say, with or without an
    optional lookup); `trajectory` stays the one the investigator generates questions for."""

    id: str
    question: str
    trajectory: list[ToolCall]
    acceptable: list[list[ToolCall]] = Field(default_factory=list)
    notes: str | None = None

    def signature(self) -> str:
        return Trajectory.from_calls(self.trajectory).signature()

    def golds(self) -> list[list[ToolCall]]:
        """Every trajectory that counts as correct, the main one first."""
        return [self.trajectory, *self.acceptable]

    def question_meta(self) -> dict[str, Any]:
        """What a question made from this seed keeps in its meta: the notes and the further
        acceptable trajectories (gold matching reads them back with `gold_trajectories`)."""
        meta: dict[str, Any] = {"notes": self.notes} if self.notes else {}
        if self.acceptable:
            meta["acceptable"] = [[c.model_dump() for c in t] for t in self.acceptable]
        return meta


class Question(_Model):
    id: str
    domain: str
    text: str
    origin: QuestionOrigin
    parent_id: str | None = None  # base question of an alternate
    seed_id: str | None = None  # seed whose gold trajectory is the target
    example_seed_id: str | None = None  # seed shown as the in-context example
    target: list[ToolCall] | None = None
    group_id: str  # CV group: the seed family; alternates share their base question's group
    status: str = "new"  # new | failed
    meta: dict[str, Any] = Field(default_factory=dict)

    @staticmethod
    def derive_id(domain: str, origin: str, text: str, parent: str | None = None) -> str:
        return make_id("question", domain, origin, text.strip(), parent)


class Run(_Model):
    id: str
    question_id: str
    run_index: int
    trajectory: Trajectory
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    # Which agent answered (magv.agents.contract.AgentIdentity) and what the run cost when it said.
    agent: dict[str, Any] | None = None
    cost_usd: float | None = None

    @staticmethod
    def derive_id(question_id: str, run_index: int) -> str:
        return make_id("run", question_id, run_index)


class Label(_Model):
    run_id: str
    source: LabelSource
    correct: bool
    detail: str | None = None  # e.g. the gold match mode, the annotator, the import file
    created_at: datetime = Field(default_factory=utcnow)


class Features(_Model):
    run_id: str
    version: str
    values: dict[str, float]


class Prediction(_Model):
    run_id: str
    model_id: str
    probability: float
    verdict: bool
    threshold: float
    contributions: dict[str, float] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)


class JudgeVerdict(_Model):
    run_id: str
    model: str
    correct: bool | None  # None when the judge's reply could not be parsed
    reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class LLMCall(_Model):
    id: str
    key: str  # replay key: same role + request + context gives the same key
    role: str
    model: str
    endpoint: str
    template: str | None = None
    template_hash: str | None = None
    request: dict[str, Any]
    response: dict[str, Any] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    retries: int = 0
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
