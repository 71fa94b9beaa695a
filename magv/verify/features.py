"""Distant-supervision features of a verified trajectory (MAG-V).

The verified trajectory is the MCT run of a base question. Its features compare it with the runs of
the alternate questions reverse-engineered from its response (the paper's EM, EDIT, GEDIT, SS and
more), aggregated over alternates with mean / min / max, plus counts and the self-consistency of the
base question's own runs. Pair functions are pure; `compute_features` is the stage that writes rows.

With no alternates (or `alternates=False`) every alternate feature takes `NEUTRAL` and
`n_alternates` is 0, so one model can score both kinds of rows.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any, Protocol

import networkx as nx
import numpy as np
from rapidfuzz.distance import LCSseq, Levenshtein

from magv.models import Features, Question, Run, Trajectory

FEATURE_VERSION = "1"

# Midway between "agrees completely" (1 for similarities, 0 for distances) and "nothing in common":
# a row without alternates carries no evidence either way.
NEUTRAL = 0.5

# Exact GED explores every node mapping; beyond this many nodes in the larger graph, or when the exact
# search runs past GED_TIMEOUT_S, the best path found by the bounded search is used instead.
GED_EXACT_NODES = 8
GED_TIMEOUT_S = 1.0
GED_APPROX_TIMEOUT_S = 0.2

START = "__start__"

PAIR_FEATURES = (
    "em", "edit", "gedit", "ss", "call_edit", "jaccard", "lcs", "arg_agreement", "response_sim",
    "write_agreement",
)  # fmt: skip
ALTERNATE_FEATURES = (*PAIR_FEATURES, "question_sim")
BASE_FEATURES = (
    "n_steps", "n_calls", "n_tool_errors", "n_invalid", "has_response", "status_ok",
    "mct_share", "n_runs", "n_distinct", "distinct_ratio", "self_edit_mean", "self_jaccard_mean",
)  # fmt: skip
FEATURE_NAMES: tuple[str, ...] = (
    *BASE_FEATURES,
    "n_alternates",
    "n_alternate_runs",
    "gedit_exact",
    *(f"{name}_{agg}" for name in ALTERNATE_FEATURES for agg in ("mean", "min", "max")),
)


class SupportsEmbed(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class LazyEmbedder:
    """Builds the real embedder on first use: rows without alternates never load a model."""

    def __init__(self, factory: Callable[[], SupportsEmbed]):
        self._factory = factory
        self._embedder: SupportsEmbed | None = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._embedder is None:
            self._embedder = self._factory()
        return self._embedder.embed(texts)


# -- pure pair functions -------------------------------------------------------------------------


def serialise(trajectory: Trajectory) -> str:
    """The text embedded for SS: one canonical call per line."""
    calls = [c.canonical() for c in trajectory.calls]
    return "\n".join(calls) if calls else "(no tool calls)"


def exact_match(a: Trajectory, b: Trajectory) -> float:
    """EM: the same calls with the same canonical arguments in the same order."""
    return float([c.canonical() for c in a.calls] == [c.canonical() for c in b.calls])


def name_edit_distance(a: Trajectory, b: Trajectory) -> float:
    """EDIT: Levenshtein distance of the tool-name sequences divided by the longer length."""
    return float(Levenshtein.normalized_distance(a.tool_names(), b.tool_names()))


def call_edit_distance(a: Trajectory, b: Trajectory) -> float:
    """Like EDIT, but a call only matches a call with the same canonical arguments."""
    return float(
        Levenshtein.normalized_distance([c.canonical() for c in a.calls], [c.canonical() for c in b.calls])
    )


def lcs_ratio(a: Trajectory, b: Trajectory) -> float:
    """Longest common subsequence of tool names over the longer length (1 = identical)."""
    return float(LCSseq.normalized_similarity(a.tool_names(), b.tool_names()))


def _jaccard(x: Iterable[Any], y: Iterable[Any]) -> float:
    sx, sy = set(x), set(y)
    if not sx and not sy:
        return 1.0
    return len(sx & sy) / len(sx | sy)


def tool_jaccard(a: Trajectory, b: Trajectory) -> float:
    return _jaccard(a.tool_names(), b.tool_names())


def argument_agreement(a: Trajectory, b: Trajectory) -> float:
    """For each tool both trajectories call, the Jaccard of the argument sets it was called with;
    averaged over those tools. 1 when neither calls a tool, 0 when they share none."""
    if not a.calls and not b.calls:
        return 1.0
    args_a: dict[str, set[str]] = {}
    args_b: dict[str, set[str]] = {}
    for calls, into in ((a.calls, args_a), (b.calls, args_b)):
        for c in calls:
            into.setdefault(c.name, set()).add(c.canonical())
    shared = args_a.keys() & args_b.keys()
    if not shared:
        return 0.0
    return sum(_jaccard(args_a[n], args_b[n]) for n in shared) / len(shared)


def write_agreement(a: Trajectory, b: Trajectory, write_tools: frozenset[str]) -> float:
    """Multiset Jaccard of the calls that change data (canonical); 1 when neither writes."""
    wa = Counter(c.canonical() for c in a.calls if c.name in write_tools)
    wb = Counter(c.canonical() for c in b.calls if c.name in write_tools)
    union = sum((wa | wb).values())
    return 1.0 if union == 0 else sum((wa & wb).values()) / union


def tool_graph(trajectory: Trajectory) -> nx.DiGraph:
    """The trajectory as a directed graph: one node per tool, an edge per transition, from START."""
    graph = nx.DiGraph()
    graph.add_node(START, label=START)
    previous = START
    for name in trajectory.tool_names():
        graph.add_node(name, label=name)
        graph.add_edge(previous, name)
        previous = name
    return graph


def _same_label(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["label"] == b["label"]


def graph_edit_distance(
    a: Trajectory | nx.DiGraph, b: Trajectory | nx.DiGraph, *, exact_nodes: int = GED_EXACT_NODES
) -> tuple[float, bool]:
    """GEDIT: (cost, exact). Unit costs; START is pinned to START. Exact search for graphs of up to
    `exact_nodes` nodes, else (or when the exact search times out) a time-bounded upper bound."""
    ga = a if isinstance(a, nx.DiGraph) else tool_graph(a)
    gb = b if isinstance(b, nx.DiGraph) else tool_graph(b)
    roots = (START, START)
    if max(ga.number_of_nodes(), gb.number_of_nodes()) <= exact_nodes:
        started = time.perf_counter()
        cost = nx.graph_edit_distance(ga, gb, node_match=_same_label, roots=roots, timeout=GED_TIMEOUT_S)
        if cost is not None and time.perf_counter() - started < GED_TIMEOUT_S:
            return float(cost), True
    best = math.inf
    paths = nx.optimize_edit_paths(
        ga, gb, node_match=_same_label, roots=roots, strictly_decreasing=True, timeout=GED_APPROX_TIMEOUT_S
    )
    for _, _, cost in paths:
        best = min(best, cost)
    return float(best), False


def graph_size(trajectory: Trajectory) -> int:
    g = tool_graph(trajectory)
    return g.number_of_nodes() + g.number_of_edges()


def pair_features(
    base: Trajectory,
    other: Trajectory,
    *,
    write_tools: frozenset[str] = frozenset(),
    ss: float,
    response_sim: float,
) -> tuple[dict[str, float], bool]:
    """Features of one (base, alternate run) pair, and whether the GED was exact. The embedding
    similarities are passed in because they are computed for many pairs in one batch."""
    ged, exact = graph_edit_distance(base, other)
    # Deleting one graph and inserting the other always works, so this bounds GED to [0, 1].
    gedit = ged / max(1, graph_size(base) + graph_size(other))
    values = {
        "em": exact_match(base, other),
        "edit": name_edit_distance(base, other),
        "gedit": gedit,
        "ss": ss,
        "call_edit": call_edit_distance(base, other),
        "jaccard": tool_jaccard(base, other),
        "lcs": lcs_ratio(base, other),
        "arg_agreement": argument_agreement(base, other),
        "response_sim": response_sim,
        "write_agreement": write_agreement(base, other, write_tools),
    }
    return values, exact


def aggregate(rows: Sequence[dict[str, float]], names: Sequence[str]) -> dict[str, float]:
    """name_mean / name_min / name_max over rows; NEUTRAL for all when there are none."""
    out: dict[str, float] = {}
    for name in names:
        vals = [r[name] for r in rows if name in r]
        for agg, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
            out[f"{name}_{agg}"] = float(fn(vals)) if vals else NEUTRAL
    return out


def base_features(mct: Run, runs: Sequence[Run], share: float | None = None) -> dict[str, float]:
    """Counts of the MCT run and the self-consistency of the question's own runs."""
    t = mct.trajectory
    signatures = Counter(r.trajectory.signature() for r in runs) or Counter([t.signature()])
    n_runs = max(1, len(runs))
    others = [r.trajectory for r in runs if r.id != mct.id]
    return {
        "n_steps": float(len(t.steps)),
        "n_calls": float(len(t.calls)),
        "n_tool_errors": float(sum(1 for s in t.steps if s.kind == "tool" and s.error)),
        "n_invalid": float(sum(1 for s in t.steps if s.kind == "invalid")),
        "has_response": float(bool(t.response and t.response.strip())),
        "status_ok": float(t.status == "ok"),
        "mct_share": float(share if share is not None else signatures[t.signature()] / n_runs),
        "n_runs": float(n_runs),
        "n_distinct": float(len(signatures)),
        "distinct_ratio": len(signatures) / n_runs,
        "self_edit_mean": float(np.mean([name_edit_distance(t, o) for o in others])) if others else 0.0,
        "self_jaccard_mean": float(np.mean([tool_jaccard(t, o) for o in others])) if others else 1.0,
    }


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0.0 or nv == 0.0:
        return 0.0
    return float(np.clip(np.dot(u, v) / (nu * nv), -1.0, 1.0))


# -- one verified trajectory ---------------------------------------------------------------------


class _Embeddings:
    """Embeds a batch of texts once (deduplicated) and looks vectors up by text."""

    def __init__(self, embedder: SupportsEmbed | None, texts: Iterable[str]):
        unique = list(dict.fromkeys(texts))
        self._index = {t: i for i, t in enumerate(unique)}
        if unique and embedder is None:
            raise ValueError("alternate features need an embedder")
        self._vectors = np.asarray(embedder.embed(unique), dtype=np.float32) if unique else np.zeros((0, 1))
        if len(self._vectors) != len(unique):
            raise ValueError(f"embedder returned {len(self._vectors)} vectors for {len(unique)} texts")

    def sim(self, a: str, b: str) -> float:
        return cosine(self._vectors[self._index[a]], self._vectors[self._index[b]])


def verified_features(
    question: Question,
    mct: Run,
    runs: Sequence[Run],
    alternates: Sequence[tuple[Question, Sequence[Run]]],
    embeddings: _Embeddings | None,
    *,
    share: float | None = None,
    write_tools: frozenset[str] = frozenset(),
) -> dict[str, float]:
    """The full feature row of one verified trajectory (the MCT run of `question`)."""
    values = base_features(mct, runs, share)
    pairs: list[dict[str, float]] = []
    question_sims: list[dict[str, float]] = []
    all_exact = True
    base = mct.trajectory
    if alternates and embeddings is None:
        raise ValueError("alternate features need embeddings")
    for alt_question, alt_runs in alternates:
        question_sims.append({"question_sim": embeddings.sim(question.text, alt_question.text)})
        for run in alt_runs:
            t = run.trajectory
            row, exact = pair_features(
                base, t, write_tools=write_tools,
                ss=embeddings.sim(serialise(base), serialise(t)),
                response_sim=embeddings.sim(base.response or "", t.response or ""),
            )  # fmt: skip
            all_exact = all_exact and exact
            pairs.append(row)
    values["n_alternates"] = float(len(question_sims))
    values["n_alternate_runs"] = float(len(pairs))
    values["gedit_exact"] = float(all_exact)
    values.update(aggregate(pairs, PAIR_FEATURES))
    values.update(aggregate(question_sims, ("question_sim",)))
    return {name: values[name] for name in FEATURE_NAMES}


def _texts(question: Question, mct: Run, alternates: Sequence[tuple[Question, Sequence[Run]]]) -> list[str]:
    base = mct.trajectory
    texts = [question.text, serialise(base), base.response or ""]
    for alt_question, alt_runs in alternates:
        texts.append(alt_question.text)
        for run in alt_runs:
            texts += [serialise(run.trajectory), run.trajectory.response or ""]
    return texts


# -- the stage -----------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def write_tools_of(domain: str) -> frozenset[str]:
    """Names of the domain's tools that change data; empty for unknown domains (imported data)."""
    try:
        from magv.domains import load_domain

        return frozenset(t.name for t in load_domain(domain).tools if t.writes)
    except Exception:
        # Imported trajectories often come from a domain magv does not have: no writes known.
        return frozenset()


def compute_features(
    store: Any,
    embedder: SupportsEmbed | None,
    *,
    alternates: bool = True,
    replace: bool = False,
    chunk_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write a feature row for the MCT run of every base question; returns rows written.

    Rows already stored for this FEATURE_VERSION are kept unless `replace`, or unless the run or
    alternate counts they were computed from have changed since (a later reverse stage)."""
    questions = store.questions()
    by_id = {q.id: q for q in questions}
    bases = [q for q in questions if q.origin != "alternate"]
    alts_of: dict[str, list[Question]] = {}
    for q in questions:
        if q.origin == "alternate" and q.parent_id in by_id:
            alts_of.setdefault(q.parent_id, []).append(q)
    mct_rows = {m["question_id"]: m for m in store.mct()}
    existing = {f.run_id: f.values for f in store.features(FEATURE_VERSION)}

    written = 0
    for start in range(0, len(bases), chunk_size):
        chunk = bases[start : start + chunk_size]
        wanted_ids = [q.id for q in chunk] + [a.id for q in chunk for a in alts_of.get(q.id, [])]
        runs_of: dict[str, list[Run]] = {}
        for run in store.runs(question_ids=wanted_ids):
            runs_of.setdefault(run.question_id, []).append(run)
        jobs = []
        for q in chunk:
            runs = runs_of.get(q.id, [])
            mct, share = _mct(runs, mct_rows.get(q.id))
            if mct is None:
                continue
            alts = [(a, runs_of.get(a.id, [])) for a in alts_of.get(q.id, [])] if alternates else []
            alts = [(a, rs) for a, rs in alts if rs]
            old = existing.get(mct.id)
            if old is not None and not replace and _still_current(old, runs, alts):
                continue
            jobs.append((q, mct, runs, alts, share))
        texts = [t for q, mct, _, alts, _ in jobs if alts for t in _texts(q, mct, alts)]
        embeddings = _Embeddings(embedder, texts) if texts else None
        rows = [
            Features(
                run_id=mct.id, version=FEATURE_VERSION,
                values=verified_features(q, mct, runs, alts, embeddings, share=share,
                                         write_tools=write_tools_of(q.domain)),
            )
            for q, mct, runs, alts, share in jobs
        ]  # fmt: skip
        if rows:
            store.bulk_add_features(rows, replace=True)
        written += len(rows)
        if progress is not None:
            progress(min(start + chunk_size, len(bases)), len(bases))
    return written


def _mct(runs: list[Run], row: dict[str, Any] | None) -> tuple[Run | None, float | None]:
    if row is not None:
        for r in runs:
            if r.id == row["run_id"]:
                return r, row["share"]
    if not runs:
        return None, None
    # No MCT row yet (an older store, or runs written by hand): the same vote the responder takes.
    from magv.verify.importer import most_common

    chosen = most_common(runs)
    return (next(r for r in runs if r.id == chosen["run_id"]), chosen["share"]) if chosen else (None, None)


def _still_current(old: dict[str, float], runs: list[Run], alts: list[tuple[Question, list[Run]]]) -> bool:
    return old.get("n_runs") == float(max(1, len(runs))) and old.get("n_alternate_runs") == float(
        sum(len(rs) for _, rs in alts)
    )
