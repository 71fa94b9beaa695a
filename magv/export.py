"""Export the dataset: every run of every base question with its trajectory, response, label and
verifier score, as

- `jsonl`: the import format of `magv import trajectories` (one run per line, OpenAI chat messages),
  so an export can be imported into another store; alternates' runs are lines too, their meta
  naming `origin: "alternate"` and `parent_question_id` (the question_id of the base's lines), so
  the import restores the link the verifier's features need;
- `openai`: chat-format JSONL `{"messages", "tools"}` for fine-tuning or evaluating an agent; an
  alternate's run is an example only where it is verified (`magv.definitions.is_verified`);
- `parquet`: one flat row per run for warehouses, written by DuckDB's COPY, alternates included
  with their `origin` and `parent_question_id`.

Files are written by `magv.outputs` (whole or not at all, never onto the database).
Field by field description: docs/export.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from magv import definitions
from magv.errors import BadInput, RunFailed
from magv.interchange import exported_question_id, run_to_record
from magv.jsonl import dumps_line
from magv.messages import trajectory_to_messages
from magv.models import Question, Run, Trajectory, without_grounding
from magv.outputs import atomic_output, target
from magv.store import Store

FORMATS = ("jsonl", "parquet", "openai")
SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet", "openai": ".openai.jsonl"}

PARQUET_COLUMNS = {
    "question_id": "VARCHAR", "question": "VARCHAR", "run": "INTEGER", "run_id": "VARCHAR",
    "domain": "VARCHAR", "origin": "VARCHAR", "parent_question_id": "VARCHAR", "group_id": "VARCHAR", "seed_id": "VARCHAR",
    "target": "JSON", "is_mct": "BOOLEAN", "mct_share": "DOUBLE", "status": "VARCHAR",
    "n_steps": "INTEGER", "n_tool_errors": "INTEGER", "n_invalid": "INTEGER", "tools": "VARCHAR[]",
    "messages": "JSON", "response": "VARCHAR", "label": "BOOLEAN", "label_source": "VARCHAR",
    "score": "DOUBLE", "verdict": "BOOLEAN", "threshold": "DOUBLE", "model_id": "VARCHAR",
    "judge_correct": "BOOLEAN", "judge_model": "VARCHAR", "judge_prompt_tokens": "INTEGER",
    "judge_completion_tokens": "INTEGER", "prompt_tokens": "INTEGER",
    "completion_tokens": "INTEGER", "latency_s": "DOUBLE",
}  # fmt: skip


@dataclass
class ExportResult:
    path: Path
    format: str
    rows: int
    questions: int  # base questions
    skipped: int = 0  # openai: runs without a final answer cannot be training examples
    alternates: int = 0  # alternate questions with runs in the export
    orphan_alternates: int = 0  # jsonl: runs of alternates left out because their base has no line
    model_id: str | None = None
    tools_source: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "rows": self.rows,
            "questions": self.questions,
            "skipped": self.skipped,
            "alternates": self.alternates,
            "orphan_alternates": self.orphan_alternates,
            "model_id": self.model_id,
            "tools_source": self.tools_source,
        }


def to_messages(question: str, trajectory: Trajectory, system: str | None = None) -> list[dict[str, Any]]:
    """Training-ready conversation: the import format's messages without the unparseable replies
    (a model must not learn them) and with the domain's system prompt first."""
    clean = trajectory.model_copy(
        update={"steps": [s for s in trajectory.steps if s.kind == "tool" and s.call]}
    )
    messages = trajectory_to_messages(question, clean)
    return ([{"role": "system", "content": system}] if system else []) + messages


def _record(row: dict[str, Any], trajectory: Trajectory) -> dict[str, Any]:
    """One line of the import format, built by the import codec's own writer (magv.interchange) so the two cannot drift;
    magv's verification fields are added to meta."""
    question = Question(
        id=row["question_id"],
        domain=row["domain"],
        text=row["question"],
        origin=row["origin"],
        group_id=row["group_id"] or row["question_id"],
        meta=json.loads(row["question_meta"] or "{}"),
    )
    run = Run(
        id=row["run_id"],
        question_id=row["question_id"],
        run_index=row["run_index"],
        trajectory=trajectory,
        prompt_tokens=row["prompt_tokens"] or 0,
        completion_tokens=row["completion_tokens"] or 0,
        latency_s=row["latency_s"] or 0.0,
    )
    record = run_to_record(question, run, row["label"])
    here = _meta(row, trajectory)
    if "import" in question.meta:  # where the dataset came from outlives the stores it moved through
        here.update({k: record["meta"][k] for k in PROVENANCE if record["meta"].get(k) is not None})
    record["meta"] = {**record["meta"], **here}
    return record


# What the lines of an imported question keep of the meta they were imported with.
PROVENANCE = ("origin", "group_id", "seed_id", "target")


def export_rows(
    store: Store,
    fmt: str,
    model_id: str | None,
    *,
    verified_only: bool = False,
    min_score: float | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """(the rows an export in `fmt` holds, alternates' runs left out for want of their base): the
    store's `runs_with_verdicts` with alternates, each with `parent_question_id`. jsonl keeps an
    alternate only beside a line of its base (so the file imports on its own), openai only where it
    is verified; openai's runs without a final answer are skipped later."""
    rows = store.runs_with_verdicts(
        model_id, verified_only=verified_only, min_score=min_score, alternates=True
    )
    bases = {r["question_id"] for r in rows if r["origin"] != "alternate"}
    out, orphans = [], 0
    for row in rows:
        row["parent_question_id"] = None
        if row["origin"] == "alternate":
            if fmt == "openai" and not definitions.is_verified(row["label"], row["score"], row["threshold"]):
                continue
            if fmt == "jsonl" and row["parent_id"] not in bases:
                orphans += 1
                continue
            row["parent_question_id"] = exported_question_id(
                row["parent_id"], json.loads(row["parent_meta"] or "{}")
            )
        out.append(row)
    return out, orphans


def _meta(row: dict[str, Any], trajectory: Trajectory) -> dict[str, Any]:
    link = {"parent_question_id": row["parent_question_id"]} if row["origin"] == "alternate" else {}
    return {
        **link,
        "run_id": row["run_id"],
        "domain": row["domain"],
        "origin": row["origin"],
        "group_id": row["group_id"],
        "seed_id": row["seed_id"],
        "target": json.loads(row["target"]) if row["target"] else None,
        "mct": bool(row["is_mct"]),
        "mct_share": row["mct_share"],
        "status": row["status"],
        "score": row["score"],
        "verdict": row["verdict"],
        "threshold": row["threshold"],
        "model_id": row["model_id"],
        "label_source": row["label_source"],
        "judge_correct": row["judge_correct"],
        "judge_model": row["judge_model"],
        "judge_prompt_tokens": row["judge_prompt_tokens"],
        "judge_completion_tokens": row["judge_completion_tokens"],
        "n_steps": row["n_steps"],
        "n_tool_errors": row["n_tool_errors"],
        "n_invalid": row["n_invalid"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "latency_s": row["latency_s"],
    }


def export(
    store: Store,
    fmt: str,
    out: str | Path,
    *,
    verified_only: bool = False,
    min_score: float | None = None,
    tools: dict[str, tuple[list[dict[str, Any]], str | None]] | None = None,
) -> ExportResult:
    """Write the export. `tools` maps a domain to (OpenAI tool specs, system prompt) for the
    openai format; domains not given are loaded with `domain_tools`."""
    if fmt not in FORMATS:
        raise BadInput(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if min_score is not None and not 0.0 <= min_score <= 1.0:
        raise BadInput(f"--min-score: {min_score} is not a probability between 0 and 1")
    model_id = store.scored_model_id()
    rows, orphans = export_rows(store, fmt, model_id, verified_only=verified_only, min_score=min_score)
    base = {r["question_id"] for r in rows if r["origin"] != "alternate"}
    result = ExportResult(
        path=Path(out),
        format=fmt,
        rows=0,
        questions=len(base),
        model_id=model_id,
        alternates=len({r["question_id"] for r in rows}) - len(base),
        orphan_alternates=orphans,
    )
    if fmt == "parquet":
        _write_parquet(store, rows, result)
        return result
    tools = dict(tools or {})
    with atomic_output(result.path, "export") as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            trajectory = Trajectory.model_validate_json(row["trajectory"])
            if fmt == "jsonl":
                line = _record(row, trajectory)
            else:
                if trajectory.response is None:
                    result.skipped += 1
                    continue
                if row["domain"] not in tools:
                    tools[row["domain"]] = domain_tools(row["domain"], result.tools_source)
                specs, system = tools[row["domain"]]
                line = {
                    "messages": to_messages(row["question"], trajectory, system),
                    "tools": _with_called(specs, trajectory),
                }
            fh.write(_line(line, row) + "\n")
            result.rows += 1
    return result


def _line(value: Any, row: dict[str, Any]) -> str:
    """Valid JSON or nothing: a value JSON cannot hold (NaN from an older import) stops the export
    naming the run, before the file replaces anything."""
    try:
        return dumps_line(value)
    except ValueError as exc:
        raise RunFailed(f"run {row['run_id']}: cannot be exported as JSON: {exc}") from None


def _write_parquet(store: Store, rows: list[dict[str, Any]], result: ExportResult) -> None:
    if target(result.path, "export").kind != "file":
        raise BadInput(f"export {result.path}: parquet is written whole to a regular file; give a file path")
    with atomic_output(result.path, "export") as tmp:
        staging = tmp.with_name(tmp.name + ".ndjson")
        try:
            with staging.open("w", encoding="utf-8") as fh:
                for row in rows:
                    trajectory = Trajectory.model_validate_json(row["trajectory"])
                    flat = {k: row.get(k) for k in PARQUET_COLUMNS}
                    flat.update(
                        {
                            "run": row["run_index"],
                            "target": json.loads(row["target"]) if row["target"] else None,
                            "tools": trajectory.tool_names(),
                            "messages": trajectory_to_messages(row["question"], trajectory),
                        }
                    )
                    fh.write(json.dumps(flat, ensure_ascii=False, default=str) + "\n")
            result.rows = store.write_parquet(staging, tmp, PARQUET_COLUMNS)
        finally:
            staging.unlink(missing_ok=True)


def domain_tools(
    domain: str, sources: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The domain's tools in OpenAI format and its system prompt. A domain that cannot be loaded
    here (a user module not installed on this machine) gives no tools; the export then lists the
    tools that the trajectories call, with parameters inferred from their arguments."""
    try:
        from magv.domains import load_domain

        loaded = load_domain(domain)
    except Exception as exc:  # any failure of a user's domain module must not stop an export
        if sources is not None:
            sources[domain] = f"inferred from calls (domain not loadable: {exc})"
        return [], None
    specs = []
    for t in getattr(loaded, "tools", []):
        spec = getattr(t, "spec", t)
        specs.append(
            {
                "type": "function",
                "function": {
                    "name": spec.name,
                    "description": spec.description,
                    "parameters": without_grounding(spec.parameters),
                },
            }
        )
    if sources is not None:
        sources[domain] = "domain"
    return specs, getattr(loaded, "system_prompt", None)


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def _with_called(specs: list[dict[str, Any]], trajectory: Trajectory) -> list[dict[str, Any]]:
    """Every tool the conversation calls must be declared, or the example is invalid."""
    names = {s["function"]["name"] for s in specs}
    extra: dict[str, dict[str, Any]] = {}
    for call in trajectory.calls:
        if call.name in names:
            continue
        spec = extra.setdefault(
            call.name,
            {
                "type": "function",
                "function": {
                    "name": call.name,
                    "description": "Not in the domain's tool list; parameters inferred from calls.",
                    "parameters": {"type": "object", "properties": {}},
                },
            },
        )
        props = spec["function"]["parameters"]["properties"]
        for k, v in call.arguments.items():
            props.setdefault(k, {"type": _JSON_TYPES.get(type(v), "string")})
    return specs + list(extra.values())
