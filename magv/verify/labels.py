"""Labels of verified trajectories from three sources: gold (the MCT matched against the target
trajectory the question was generated for), import (a file) and human (`magv verify annotate`).
All are kept; the store's `effective_labels()` lets the most trusted win (human > import > gold).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from magv.definitions import ARG_MODES, MATCH_MODES, ArgMode, MatchMode
from magv.errors import BadInput
from magv.jsonl import read_jsonl
from magv.models import Label, Question, Run, ToolCall, call_groups

if TYPE_CHECKING:
    from magv.store import Store

__all__ = ["ARG_MODES", "MATCH_MODES", "ArgMode", "MatchMode"]  # re-exported: callers import them from here
_MISSING = object()


@dataclass(frozen=True)
class ArgRule:
    """How one tool's arguments are compared: a mode over all keys, or only `keys` (dotted paths
    into nested objects) compared for equality; `ignore` keys are dropped first."""

    mode: str = "exact"
    keys: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()


def arg_mode(arguments: bool | str | None) -> str:
    """The argument mode of the older `arguments` flag (False: names only; True: exact) or a mode."""
    if arguments is None or arguments is False:
        return "ignore"
    if arguments is True:
        return "exact"
    if arguments not in ARG_MODES:
        raise BadInput(f"argument match mode {arguments!r}: expected one of {', '.join(ARG_MODES)}")
    return arguments


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(k, str) and k for k in value):
        raise BadInput(f"{where}: expected a list of argument names")
    return tuple(value)


def parse_overrides(value: Any, where: str = "overrides") -> dict[str, ArgRule]:
    """Per-tool argument rules: {tool: "subset"} (a mode), {tool: ["order_id"]} (only these keys),
    or {tool: {"mode": ..., "keys": [...], "ignore": [...]}}."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadInput(f"{where}: expected an object of tool name -> rule")
    rules: dict[str, ArgRule] = {}
    for tool, rule in value.items():
        at = f"{where}.{tool}"
        if isinstance(rule, ArgRule):
            rules[tool] = rule
        elif isinstance(rule, str):
            rules[tool] = ArgRule(mode=arg_mode(rule))
        elif isinstance(rule, list):
            rules[tool] = ArgRule(keys=_names(rule, at))
        elif isinstance(rule, Mapping):
            unknown = set(rule) - {"mode", "keys", "ignore"}
            if unknown:
                raise BadInput(f"{at}: unknown field {sorted(unknown)[0]!r}; expected mode, keys, ignore")
            rules[tool] = ArgRule(
                mode=arg_mode(rule.get("mode", "exact")),
                keys=_names(rule["keys"], f"{at}.keys") if "keys" in rule else None,
                ignore=_names(rule.get("ignore", []), f"{at}.ignore"),
            )
        else:
            raise BadInput(f"{at}: expected a mode, a list of keys or an object with mode/keys/ignore")
    return rules


def same_value(a: Any, b: Any) -> bool:
    """JSON equality with numbers compared by value (1 == 1.0); true/false are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _at(args: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(args, dict) or part not in args:
            return _MISSING
        args = args[part]
    return args


def args_match(predicted: dict[str, Any], gold: dict[str, Any], rule: ArgRule) -> bool:
    """exact: the same arguments; ignore: any; subset: every predicted argument is in gold with its
    value (some may be missing); superset: every gold argument is in predicted (extras allowed)."""
    if rule.keys is not None:
        return all(
            (pv := _at(predicted, k)) is _MISSING
            and _at(gold, k) is _MISSING
            or (pv is not _MISSING and same_value(pv, _at(gold, k)))
            for k in rule.keys
        )
    p = {k: v for k, v in predicted.items() if k not in rule.ignore}
    g = {k: v for k, v in gold.items() if k not in rule.ignore}
    if rule.mode == "ignore":
        return True
    if rule.mode == "exact":
        return same_value(p, g)
    small, large = (p, g) if rule.mode == "subset" else (g, p)
    return all(k in large and same_value(v, large[k]) for k, v in small.items())


def _pairs(
    left: Sequence[ToolCall], right: Sequence[ToolCall], same: Callable[[ToolCall, ToolCall], bool]
) -> int:
    """Size of a maximum one-to-one pairing of left with right calls (Kuhn's augmenting paths):
    a greedy first fit can miss a pairing when argument rules are not equalities."""
    owner: list[int | None] = [None] * len(right)

    def place(i: int, seen: set[int]) -> bool:
        for j, r in enumerate(right):
            if j in seen or not same(left[i], r):
                continue
            seen.add(j)
            if owner[j] is None or place(owner[j], seen):  # type: ignore[arg-type]
                owner[j] = i
                return True
        return False

    return sum(place(i, set()) for i in range(len(left)))


def _blocks(calls: Sequence[ToolCall]) -> set[int]:
    """Positions after which a new parallel group starts (the end of the list included)."""
    cuts, n = set(), 0
    for group in call_groups(list(calls)):
        n += len(group)
        cuts.add(n)
    return cuts


def match(
    predicted: Sequence[ToolCall],
    gold: Sequence[ToolCall],
    mode: str = "strict",
    arguments: bool | str = False,
    overrides: Mapping[str, Any] | None = None,
) -> bool:
    """Whether a trajectory's calls satisfy the gold calls.

    strict: the same calls in the same order, except that the calls of one parallel group (on
    either side) may come in any order; unordered: the same calls as a multiset; subset: every
    predicted call pairs with its own gold call (nothing extra, some may be missing); superset:
    every gold call pairs with its own predicted call (extra calls allowed).

    Calls pair when names are equal and arguments satisfy the argument mode (`arguments`: False =
    ignore, True = exact, or exact / ignore / subset / superset, always read as "predicted against
    gold"), or the tool's rule in `overrides` (see `parse_overrides`)."""
    if mode not in MATCH_MODES:
        raise BadInput(f"match mode {mode!r}: expected one of {', '.join(MATCH_MODES)}")
    default = ArgRule(mode=arg_mode(arguments))
    rules = parse_overrides(overrides)

    def same(p: ToolCall, g: ToolCall) -> bool:
        return p.name == g.name and args_match(p.arguments, g.arguments, rules.get(g.name, default))

    p, g = list(predicted), list(gold)
    if mode == "strict":
        if len(p) != len(g):
            return False
        cuts = sorted(_blocks(p) & _blocks(g))
        start = 0
        for end in cuts:
            if _pairs(p[start:end], g[start:end], same) != end - start:
                return False
            start = end
        return True
    if mode == "unordered":
        return len(p) == len(g) and _pairs(p, g, same) == len(p)
    if mode == "subset":
        return _pairs(p, g, same) == len(p)
    return _pairs(p, g, same) == len(g)


def match_any(
    predicted: Sequence[ToolCall],
    golds: Sequence[Sequence[ToolCall]],
    mode: str = "strict",
    arguments: bool | str = False,
    overrides: Mapping[str, Any] | None = None,
) -> bool:
    """Whether the calls match any of several acceptable gold trajectories."""
    return any(match(predicted, g, mode, arguments, overrides) for g in golds)


def gold_trajectories(question: Question) -> list[list[ToolCall]]:
    """The target trajectory of a question and the further acceptable ones its seed lists."""
    if question.target is None:
        return []
    extra = question.meta.get("acceptable") or []
    return [list(question.target), *([ToolCall(**c) for c in t] for t in extra)]


def match_detail(mode: str, arguments: bool | str = False, overrides: Mapping[str, Any] | None = None) -> str:
    """How a gold label was decided, e.g. gold:strict, gold:strict+arguments, gold:unordered+subset."""
    args = arg_mode(arguments)
    suffix = {"ignore": "", "exact": "+arguments"}.get(args, f"+{args}")
    return f"gold:{mode}{suffix}{'+overrides' if overrides else ''}"


def gold_labels(
    store: Store,
    mode: str = "strict",
    arguments: bool | str = False,
    overrides: Mapping[str, Any] | None = None,
    mct_only: bool = False,
) -> int:
    """Label every run of every question that has a target trajectory (with `mct_only`, the
    paper's reading: only each question's MCT run); a match with any of its acceptable
    trajectories is correct. Returns labels written (a rerun with another mode replaces the
    previous gold labels)."""
    detail = match_detail(mode, arguments, overrides)
    parse_overrides(overrides)
    targets = {
        q.id: gold_trajectories(q)
        for q in store.questions()
        if q.origin != "alternate" and q.target is not None
    }
    only = {m["run_id"] for m in store.mct() if m["question_id"] in targets} if mct_only else None
    labels = [
        Label(
            run_id=run.id,
            source="gold",
            correct=match_any(run.trajectory.calls, targets[run.question_id], mode, arguments, overrides),
            detail=detail,
        )
        for run in store.runs(question_ids=sorted(targets))
        if only is None or run.id in only
    ]
    store.add_labels(labels)
    return len(labels)


def read_label_file(store: Store, path: Path) -> list[Label]:
    """Labels from a JSONL file: one {"run_id": ..., "correct": true|false} or
    {"question_id": ..., "correct": ...} (the question's MCT run) per line. Checked whole first."""
    known_runs = set(store.run_questions())
    mct = {m["question_id"]: m["run_id"] for m in store.mct()}
    labels: list[Label] = []
    for n, where, obj in read_jsonl(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("correct"), bool):
            raise BadInput(f'{where}: expected an object with "correct": true|false')
        if isinstance(obj.get("run_id"), str):
            run_id = obj["run_id"]
            if run_id not in known_runs:
                raise BadInput(f"{where}: run_id {run_id!r} is not in the database")
        elif isinstance(obj.get("question_id"), str):
            run_id = mct.get(obj["question_id"])
            if run_id is None:
                raise BadInput(f"{where}: question_id {obj['question_id']!r} has no most common trajectory")
        else:
            raise BadInput(f'{where}: expected "run_id" or "question_id" (a string)')
        labels.append(
            Label(run_id=run_id, source="import", correct=obj["correct"], detail=f"file:{path.name}:{n}")
        )
    if not labels:
        raise BadInput(f"{path}: no labels in the file")
    return labels


# -- human annotation ----------------------------------------------------------------------------

AnnotationKey = Literal["c", "i", "s", "q"]
KEYS = {"c": "correct", "i": "incorrect", "s": "skip", "q": "quit"}


@dataclass
class AnnotationItem:
    question: Question
    run: Run


def pending_annotations(store: Store, limit: int | None = None) -> list[AnnotationItem]:
    """Verified trajectories (MCT runs of base questions) without a human label, oldest first:
    a second session resumes where the first stopped."""
    done = {lb.run_id for lb in store.labels() if lb.source == "human"}
    mct = {m["question_id"]: m["run_id"] for m in store.mct() if m["run_id"] not in done}
    questions = [q for q in store.questions() if q.id in mct and q.origin != "alternate"]
    runs = {r.id: r for r in store.runs(question_ids=[q.id for q in questions])}
    items = [AnnotationItem(q, runs[mct[q.id]]) for q in questions if mct[q.id] in runs]
    return items[:limit] if limit is not None else items


def describe(item: AnnotationItem) -> str:
    """What the annotator sees: the question, each step, the response."""
    t = item.run.trajectory
    lines = [f"Question: {item.question.text}", f"Trajectory ({len(t.steps)} steps, status {t.status}):"]
    for n, step in enumerate(t.steps, start=1):
        if step.kind == "invalid" or step.call is None:
            lines.append(f"  {n}. (invalid reply) {(step.raw or '')[:200]}")
            continue
        outcome = f"ERROR {step.error}" if step.error else json.dumps(step.result, default=str)[:300]
        lines.append(f"  {n}. {step.call.canonical()}\n     -> {outcome}")
    if not t.steps:
        lines.append("  (no tool calls)")
    lines.append(f"Response: {t.response if t.response is not None else '(none)'}")
    return "\n".join(lines)


def annotate(
    store: Store,
    items: Sequence[AnnotationItem],
    ask: Callable[[AnnotationItem, int, int], str | None],
    annotator: str = "human",
) -> dict[str, int]:
    """Ask for a key per item (c correct, i incorrect, s skip, q quit; None = end of input, as q).
    Each answer is saved at once, so quitting or a crash loses nothing already answered."""
    counts = {"correct": 0, "incorrect": 0, "skipped": 0, "remaining": 0}
    for n, item in enumerate(items, start=1):
        key = ask(item, n, len(items))
        if key is None or key == "q":
            counts["remaining"] = len(items) - n + 1
            break
        if key == "s":
            counts["skipped"] += 1
            continue
        correct = key == "c"
        store.add_labels(
            [Label(run_id=item.run.id, source="human", correct=correct, detail=f"annotate:{annotator}")]
        )
        counts["correct" if correct else "incorrect"] += 1
    return counts
