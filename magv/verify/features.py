"""Distant-supervision features of a verified trajectory (MAG-V).

The verified trajectory is the MCT run of a base question. Its features compare it with the runs of
the alternate questions reverse-engineered from its response (the paper's EM, EDIT, GEDIT, SS and
more), aggregated over alternates with mean / min / max, plus counts and the self-consistency of the
base question's own runs.

The pair functions and `verified_features` define each feature for one trajectory, readably.
`compute_features` is the stage: it computes the same rows for the whole store at once — DuckDB
joins the runs, every pair function runs once per distinct pair of call signatures (runs repeat
calls), similarities are one dot product per distinct pair of texts, and the aggregates over
alternates are numpy reductions. tests/test_verify_features.py holds the two to each other.

With no alternates (or `alternates=False`) every alternate feature takes `NEUTRAL` and
`n_alternates` is 0, so one model can score both kinds of rows.
"""

from __future__ import annotations

import gc
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, NamedTuple

import networkx as nx
import numpy as np
from rapidfuzz.distance import LCSseq, Levenshtein

from magv.definitions import tool_error_count
from magv.errors import RunFailed
from magv.llm.embeddings import SupportsEmbed, embed_cached
from magv.models import NO_CALLS_TEXT, Question, Run, Trajectory, serialised_calls, text_hash

# 2: graph edit distance of graphs with self-loops (a tool called twice in a row) is exact; networkx's
# search, used for version 1, matched a self-loop with another edge for free.
FEATURE_VERSION = "2"

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


# Runs repeat calls, and a flow or a rerun computes the same pairs again: pair values are memoised
# by signature pair (tens of µs each, GED most of it).
_PAIR_CACHE: dict[tuple[str, str, frozenset[str]], tuple[float, ...]] = {}
_PAIR_CACHE_MAX = 200_000  # ~40 MB


def clear_caches() -> None:
    """Forget the memoised pair values and graph edit distances (benchmarks measure without them)."""
    _PAIR_CACHE.clear()
    _name_pair_features.cache_clear()
    _ged_of_names.cache_clear()
    _tool_graph_arrays.cache_clear()


# -- pure pair functions -------------------------------------------------------------------------


class Calls(NamedTuple):
    """What the pair functions read of a trajectory: its tool names and canonical calls, in order.
    Made once per trajectory, since canonical JSON is most of their cost."""

    names: tuple[str, ...]
    canonical: tuple[str, ...]


def calls_of(trajectory: Trajectory | Calls) -> Calls:
    if isinstance(trajectory, Calls):
        return trajectory
    return Calls(tuple(trajectory.tool_names()), tuple(trajectory.canonical_calls()))


def serialise(trajectory: Trajectory | Calls) -> str:
    """The text embedded for SS: one canonical call per line."""
    return serialised_calls(calls_of(trajectory).canonical)


def exact_match(a: Trajectory | Calls, b: Trajectory | Calls) -> float:
    """EM: the same calls with the same canonical arguments in the same order."""
    return float(calls_of(a).canonical == calls_of(b).canonical)


def name_edit_distance(a: Trajectory | Calls, b: Trajectory | Calls) -> float:
    """EDIT: Levenshtein distance of the tool-name sequences divided by the longer length."""
    return float(Levenshtein.normalized_distance(calls_of(a).names, calls_of(b).names))


def call_edit_distance(a: Trajectory | Calls, b: Trajectory | Calls) -> float:
    """Like EDIT, but a call only matches a call with the same canonical arguments."""
    return float(Levenshtein.normalized_distance(calls_of(a).canonical, calls_of(b).canonical))


def lcs_ratio(a: Trajectory | Calls, b: Trajectory | Calls) -> float:
    """Longest common subsequence of tool names over the longer length (1 = identical)."""
    return float(LCSseq.normalized_similarity(calls_of(a).names, calls_of(b).names))


def _jaccard(x: Iterable[Any], y: Iterable[Any]) -> float:
    sx, sy = set(x), set(y)
    if not sx and not sy:
        return 1.0
    return len(sx & sy) / len(sx | sy)


def tool_jaccard(a: Trajectory | Calls, b: Trajectory | Calls) -> float:
    return _jaccard(calls_of(a).names, calls_of(b).names)


def argument_agreement(a: Trajectory | Calls, b: Trajectory | Calls) -> float:
    """For each tool both trajectories call, the Jaccard of the argument sets it was called with;
    averaged over those tools. 1 when neither calls a tool, 0 when they share none."""
    ca, cb = calls_of(a), calls_of(b)
    return _argument_agreement(ca, cb, _args_by_tool(ca), _args_by_tool(cb))


def _args_by_tool(calls: Calls) -> dict[str, set[str]]:
    by_tool: dict[str, set[str]] = {}
    for name, canonical in zip(calls.names, calls.canonical, strict=True):
        by_tool.setdefault(name, set()).add(canonical)
    return by_tool


def _argument_agreement(
    ca: Calls, cb: Calls, args_a: dict[str, set[str]], args_b: dict[str, set[str]]
) -> float:
    if not ca.names and not cb.names:
        return 1.0
    shared = args_a.keys() & args_b.keys()
    if not shared:
        return 0.0
    return sum(_jaccard(args_a[n], args_b[n]) for n in shared) / len(shared)


def write_agreement(a: Trajectory | Calls, b: Trajectory | Calls, write_tools: frozenset[str]) -> float:
    """Multiset Jaccard of the calls that change data (canonical); 1 when neither writes."""
    return _multiset_jaccard(_writes(calls_of(a), write_tools), _writes(calls_of(b), write_tools))


def _writes(calls: Calls, write_tools: frozenset[str]) -> dict[str, int]:
    """How many times each canonical call that changes data was made."""
    counts: dict[str, int] = {}
    for name, canonical in zip(calls.names, calls.canonical, strict=True):
        if name in write_tools:
            counts[canonical] = counts.get(canonical, 0) + 1
    return counts


def _multiset_jaccard(wa: dict[str, int], wb: dict[str, int]) -> float:
    if not wa and not wb:
        return 1.0
    shared = sum(min(n, wb.get(c, 0)) for c, n in wa.items())
    return shared / (sum(wa.values()) + sum(wb.values()) - shared)


def tool_graph(trajectory: Trajectory | Calls) -> nx.DiGraph:
    """The trajectory as a directed graph: one node per tool, an edge per transition, from START."""
    graph = nx.DiGraph()
    graph.add_node(START, label=START)
    previous = START
    for name in calls_of(trajectory).names:
        graph.add_node(name, label=name)
        graph.add_edge(previous, name)
        previous = name
    return graph


def _same_label(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["label"] == b["label"]


def graph_edit_distance(
    a: Trajectory | Calls | nx.DiGraph,
    b: Trajectory | Calls | nx.DiGraph,
    *,
    exact_nodes: int = GED_EXACT_NODES,
) -> tuple[float, bool]:
    """GEDIT: (cost, exact). Unit costs; START is pinned to START. Exact search for graphs of up to
    `exact_nodes` nodes, else (or when the exact search times out) a time-bounded upper bound."""
    if not isinstance(a, nx.DiGraph) and not isinstance(b, nx.DiGraph) and exact_nodes == GED_EXACT_NODES:
        return _ged_of_names(calls_of(a).names, calls_of(b).names)
    return _ged(a if isinstance(a, nx.DiGraph) else tool_graph(a),
                b if isinstance(b, nx.DiGraph) else tool_graph(b), exact_nodes)  # fmt: skip


@lru_cache(maxsize=65536)
def _ged_of_names(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[float, bool]:
    """GED depends only on the tool-name sequences (tool_graph reads nothing else): memoised.
    Graphs of up to GED_EXACT_NODES nodes take the exact enumeration below (~30x faster than
    networkx's search, the same cost); larger ones networkx's bounded search."""
    if a == b:
        return 0.0, True
    ga, gb = _tool_graph_arrays(a), _tool_graph_arrays(b)
    if max(len(ga[0]), len(gb[0])) <= GED_EXACT_NODES:
        return _ged_by_enumeration(ga, gb), True
    return _ged(tool_graph(Calls(a, a)), tool_graph(Calls(b, b)), GED_EXACT_NODES)


@lru_cache(maxsize=65536)
def _tool_graph_arrays(names: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """tool_graph as (node labels, START first; adjacency matrix). Memoised: a sequence meets many
    others; callers do not modify the result."""
    nodes = [START, *dict.fromkeys(names)]
    index = {n: i for i, n in enumerate(nodes)}
    adjacency = np.zeros((len(nodes), len(nodes)), dtype=np.int64)
    previous = 0
    for name in names:
        adjacency[previous, index[name]] = 1
        previous = index[name]
    return nodes, adjacency


@lru_cache(maxsize=64)
def _injections(k: int, n: int) -> np.ndarray:
    """Every map of the k non-START nodes of a graph (1..k) injectively onto the n of another
    (1..n), START (0) onto START, one per row."""
    maps = list(itertools.permutations(range(1, n + 1), k))
    return np.array([(0, *m) for m in maps], dtype=np.int64).reshape(len(maps), k + 1)


def _ged_by_enumeration(ga: tuple[list[str], np.ndarray], gb: tuple[list[str], np.ndarray]) -> float:
    """Exact unit-cost GED of two tool graphs, START pinned to START. Mapping one more node pair
    never costs more than deleting one and inserting the other (at most 1 against 2, and an edge
    can only be kept), so some optimum maps every node of the smaller graph: enumerate those maps
    and take the cheapest of substitutions + unmatched nodes + edges not carried over."""
    (la, A), (lb, B) = (ga, gb) if len(ga[0]) <= len(gb[0]) else (gb, ga)
    phi = _injections(len(la) - 1, len(lb) - 1)
    mismatch = np.array([[x != y for y in lb] for x in la], dtype=np.int64)
    node_cost = mismatch[np.arange(len(la)), phi].sum(axis=1) + (len(lb) - len(la))
    us, vs = np.nonzero(A)
    kept = B[phi[:, us], phi[:, vs]].sum(axis=1)
    return float((node_cost + A.sum() + B.sum() - 2 * kept).min())


def _ged(ga: nx.DiGraph, gb: nx.DiGraph, exact_nodes: int) -> tuple[float, bool]:
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


def graph_size(trajectory: Trajectory | Calls) -> int:
    """Nodes + edges of tool_graph: START, one node per distinct tool, one edge per distinct step."""
    names = calls_of(trajectory).names
    return 1 + len(set(names)) + len(set(zip((START, *names), names)))


def pair_features(
    base: Trajectory | Calls,
    other: Trajectory | Calls,
    *,
    write_tools: frozenset[str] = frozenset(),
    ss: float,
    response_sim: float,
) -> tuple[dict[str, float], bool]:
    """Features of one (base, alternate run) pair, and whether the GED was exact. The embedding
    similarities are passed in because they are computed for many pairs in one batch."""
    base, other = calls_of(base), calls_of(other)
    by_names, exact = _name_pair_features(base.names, other.names)
    values = {
        **by_names,
        **_call_pair_features(base, other, write_tools),
        "ss": ss,
        "response_sim": response_sim,
    }
    return {name: values[name] for name in PAIR_FEATURES}, exact


@lru_cache(maxsize=65536)
def _name_pair_features(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[dict[str, float], bool]:
    """The pair features that read tool names only (few distinct pairs: memoised)."""
    ca, cb = Calls(a, a), Calls(b, b)  # names stand in for the calls: nothing here reads arguments
    ged, exact = graph_edit_distance(ca, cb)
    # Deleting one graph and inserting the other always works, so this bounds GED to [0, 1].
    gedit = ged / max(1, graph_size(ca) + graph_size(cb))
    values = {"edit": name_edit_distance(ca, cb), "gedit": gedit, "jaccard": tool_jaccard(ca, cb),
              "lcs": lcs_ratio(ca, cb)}  # fmt: skip
    return values, exact


def _call_pair_features(a: Calls, b: Calls, write_tools: frozenset[str]) -> dict[str, float]:
    """The pair features that read the calls' arguments."""
    return {"em": exact_match(a, b), "call_edit": call_edit_distance(a, b),
            "arg_agreement": argument_agreement(a, b), "write_agreement": write_agreement(a, b, write_tools)}  # fmt: skip


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
        "n_tool_errors": float(tool_error_count(t)),
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
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write a feature row for the MCT run of every base question; returns rows written.

    Rows already stored for this FEATURE_VERSION are kept unless `replace`, or unless the run or
    alternate counts they were computed from have changed since (a later reverse stage). Texts are
    embedded through the store's cache (`embed_cached`): each once per embedding model."""
    with _collector_paused():
        return _compute_features(store, embedder, alternates, replace, progress)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The stage makes some 10^5 short-lived, acyclic containers; each pass of the cyclic garbage
    collector they trigger walks every object of the process (~25% of the stage's time measured
    on 5,000 trajectories)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _compute_features(
    store: Any, embedder: SupportsEmbed | None, alternates: bool, replace: bool,
    progress: Callable[[int, int], None] | None,
) -> int:  # fmt: skip
    picks = _votes(store, store.bases_without_mct())
    key = getattr(embedder, "key", None)
    data = store.feature_inputs(FEATURE_VERSION, alternates=alternates, replace=replace, picks=picks,
                                embedding_model=key, no_calls_text=NO_CALLS_TEXT)  # fmt: skip
    jobs, alts, own = data["jobs"], data["alts"], data["own"]
    n = len(jobs["job"])
    if progress is not None:
        progress(0, n)
    if n == 0:
        return 0
    signatures = data["signatures"]
    # codes number the distinct signatures 0..k-1 in order, so a code indexes these lists
    trajectories = _signature_calls(len(signatures["code"]), data["calls"], data["parse"])
    sig_keys = [str(sig) for sig in signatures["signature"]]
    values = _base_values(jobs, own, trajectories)
    if len(alts["job"]):
        values.update(_alternate_values(store, embedder, data, trajectories, sig_keys))
    else:  # no alternate runs: every alternate feature is NEUTRAL and no text is embedded
        values.update({name: np.full(n, NEUTRAL) for name in FEATURE_NAMES if name not in values})
        values.update(n_alternates=np.zeros(n), n_alternate_runs=np.zeros(n), gedit_exact=np.ones(n))
    X = np.column_stack([values[name] for name in FEATURE_NAMES])
    written = store.write_feature_matrix(FEATURE_VERSION, list(jobs["run_id"]), FEATURE_NAMES, X)
    if progress is not None:
        progress(n, n)
    return written


def _signature_calls(n: int, calls: dict[str, Any], parse: dict[str, Any]) -> list[Calls]:
    """The Calls of each of the n signature codes: the stored tool names and canonical calls, or
    for runs stored before magv kept them, parsed from the trajectory."""
    bounds = np.searchsorted(np.asarray(calls["code"], dtype=np.int64), np.arange(n + 1))
    tools, canonical = calls["tool"].tolist(), calls["call"].tolist()
    out = [
        Calls(tuple(tools[a:b]), tuple(canonical[a:b])) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    for code, trajectory in zip(parse["code"].tolist(), parse["trajectory"].tolist(), strict=True):
        out[code] = calls_of(Trajectory.model_validate_json(trajectory))
    return out


def _base_values(
    jobs: dict[str, Any], own: dict[str, Any], trajectories: list[Calls]
) -> dict[str, np.ndarray]:
    """Counts of each MCT run and the self-consistency of its question's runs (base_features)."""
    n = len(jobs["job"])
    job_sig = np.asarray(jobs["sig"], dtype=np.int64)
    values = {name: _floats(jobs[column]) for name, column in (
        ("n_steps", "n_steps"), ("n_tool_errors", "n_tool_errors"), ("n_invalid", "n_invalid"),
        ("has_response", "has_response"), ("status_ok", "status_ok"), ("mct_share", "share"),
        ("n_runs", "n_runs"), ("n_distinct", "n_distinct"))}  # fmt: skip
    values["n_calls"] = np.asarray([len(t.names) for t in trajectories], dtype=np.float64)[job_sig]
    values["distinct_ratio"] = values["n_distinct"] / values["n_runs"]
    # the MCT against each other run of its question, computed once per signature pair
    own_job = np.asarray(own["job"], dtype=np.int64)
    pairs, inverse = _distinct_pairs(job_sig[own_job], np.asarray(own["sig"], dtype=np.int64))
    named = [_name_pair_features(trajectories[a].names, trajectories[b].names)[0] for a, b in pairs.tolist()]
    per_pair = np.array([(v["edit"], v["jaccard"]) for v in named], dtype=np.float64).reshape(-1, 2)
    mean, _, _ = _grouped(own_job, per_pair[inverse], n, np.array([0.0, 1.0]))
    values["self_edit_mean"], values["self_jaccard_mean"] = mean[:, 0], mean[:, 1]
    return values


def _alternate_values(
    store: Any, embedder: SupportsEmbed | None, data: dict[str, dict[str, Any]], trajectories: list[Calls],
    sig_keys: list[str],
) -> dict[str, np.ndarray]:  # fmt: skip
    """The pair features of each MCT run against its alternates' runs, aggregated per MCT run."""
    jobs, alts = data["jobs"], data["alts"]
    n = len(jobs["job"])
    alt_job = np.asarray(alts["job"], dtype=np.int64)
    job_sig = np.asarray(jobs["sig"], dtype=np.int64)
    base_sig, other_sig = job_sig[alt_job], np.asarray(alts["sig"], dtype=np.int64)

    write_sets = [write_tools_of(d) for d in jobs["domain"]]
    sets = list(dict.fromkeys(write_sets))
    job_set = np.asarray([sets.index(ws) for ws in write_sets], dtype=np.int64)
    pairs, inverse = _distinct_pairs(base_sig, other_sig, job_set[alt_job])
    table = _pair_table(trajectories, sig_keys, pairs, sets)[inverse]
    names = _CALL_VALUES
    per_run = {name: table[:, k] for k, name in enumerate(names)}

    serial_code = np.asarray(data["signatures"]["serial_code"], dtype=np.int64)
    text_vec, sig_vec = _text_vectors(
        store, embedder, data["texts"], trajectories, np.unique(np.r_[base_sig, other_sig]), serial_code
    )
    per_run["ss"] = _similarity(sig_vec, base_sig, other_sig)
    job_response = np.asarray(jobs["response_code"], dtype=np.int64)
    per_run["response_sim"] = _similarity(
        text_vec, job_response[alt_job], np.asarray(alts["response_code"], dtype=np.int64)
    )
    alt_index = np.asarray(alts["alt"], dtype=np.int64)
    first = np.r_[True, alt_index[1:] != alt_index[:-1]]  # one row per alternate question
    q_job = alt_job[first]
    job_text = np.asarray(jobs["text_code"], dtype=np.int64)
    question_sim = _similarity(
        text_vec, job_text[q_job], np.asarray(alts["text_code"], dtype=np.int64)[first]
    )

    values = {"n_alternates": np.bincount(q_job, minlength=n).astype(np.float64),
              "n_alternate_runs": np.bincount(alt_job, minlength=n).astype(np.float64)}  # fmt: skip
    _, all_exact, _ = _grouped(alt_job, table[:, len(names) : len(names) + 1], n, np.array([1.0]))
    values["gedit_exact"] = all_exact[:, 0]
    aggregated = [(name, per_run[name]) for name in PAIR_FEATURES] + [("question_sim", None)]
    for name, column in aggregated:
        group, col = (q_job, question_sim) if column is None else (alt_job, column)
        mean, low, high = _grouped(group, col[:, None], n, np.array([NEUTRAL]))
        values[f"{name}_mean"], values[f"{name}_min"], values[f"{name}_max"] = (
            mean[:, 0],
            low[:, 0],
            high[:, 0],
        )
    return values


def _floats(column: Any) -> np.ndarray:
    return np.asarray(column, dtype=np.float64)


def _distinct_pairs(*codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of equal-length non-negative integer columns (sorted), and each row's
    index among them."""
    if len(codes[0]) == 0:
        return np.zeros((0, len(codes)), dtype=np.int64), np.zeros(0, dtype=np.int64)
    columns = np.column_stack(codes).astype(np.int64)
    spans = [int(c.max()) + 1 for c in codes]
    if math.prod(spans) >= 2**62:
        distinct, inverse = np.unique(columns, axis=0, return_inverse=True)
        return distinct, inverse.reshape(-1)
    # one mixed-radix key per row: a 1-d unique sorts ~10x faster than rows, in the same order
    key = np.zeros(len(columns), dtype=np.int64)
    for column, span in zip(columns.T, spans, strict=True):
        key = key * span + column
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return columns[first], inverse.reshape(-1)


def _grouped(group: np.ndarray, values: np.ndarray, n: int, default: np.ndarray):
    """(mean, min, max) of `values` rows per group 0..n-1 (rows sorted by group); `default` where a
    group has no rows."""
    k = values.shape[1] if values.ndim == 2 else 1
    means, mins, maxs = (np.tile(np.asarray(default, dtype=np.float64), (n, 1)) for _ in range(3))
    if len(group) == 0:
        return means, mins, maxs
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ids = group[starts]
    counts = np.diff(np.r_[starts, len(group)])
    values = values.reshape(len(group), k)
    means[ids] = np.add.reduceat(values, starts, axis=0) / counts[:, None]
    mins[ids] = np.minimum.reduceat(values, starts, axis=0)
    maxs[ids] = np.maximum.reduceat(values, starts, axis=0)
    return means, mins, maxs


def _similarity(vectors: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of rows a[i] and b[i] of L2-normalised vectors (a zero row gives 0), clipped to
    [-1, 1]; each distinct pair is computed once."""
    pairs, inverse = _distinct_pairs(a, b)
    if len(pairs) == 0:
        return np.zeros(0)
    dots = np.einsum("ij,ij->i", vectors[pairs[:, 0]], vectors[pairs[:, 1]], dtype=np.float64)
    return np.clip(dots, -1.0, 1.0)[inverse]


# The columns of _pair_table, in the order its loop writes them.
_CALL_VALUES = ("em", "edit", "gedit", "call_edit", "jaccard", "lcs", "arg_agreement", "write_agreement")
assert set(_CALL_VALUES) == set(PAIR_FEATURES) - {"ss", "response_sim"}


def _pair_table(
    trajectories: list[Calls], sig_keys: list[str], pairs: np.ndarray, sets: list[frozenset[str]]
) -> np.ndarray:
    """One row per (base code, other code, write-set index) of `pairs`: pair_features without the
    embedding similarities (columns _CALL_VALUES), then whether GED was exact. Each signature's
    argument sets and writes are gathered once; values are memoised by the pair of call signatures
    (what every one of them depends on)."""
    args: dict[int, dict[str, set[str]]] = {}
    writes: dict[tuple[int, int], dict[str, int]] = {}
    rows = []
    for a, b, w in pairs.tolist():
        key = (sig_keys[a], sig_keys[b], sets[w])
        hit = _PAIR_CACHE.get(key)
        if hit is None:
            ta, tb = trajectories[a], trajectories[b]
            names, exact = _name_pair_features(ta.names, tb.names)
            if ta.canonical == tb.canonical:  # the same calls agree completely
                em, call_edit, arguments, writes_agree = 1.0, 0.0, 1.0, 1.0
            else:
                for code, t in ((a, ta), (b, tb)):
                    if code not in args:
                        args[code] = _args_by_tool(t)
                    if (code, w) not in writes:
                        writes[code, w] = _writes(t, sets[w])
                em, call_edit = 0.0, Levenshtein.normalized_distance(ta.canonical, tb.canonical)
                arguments = _argument_agreement(ta, tb, args[a], args[b])
                writes_agree = _multiset_jaccard(writes[a, w], writes[b, w])
            hit = (em, names["edit"], names["gedit"], call_edit, names["jaccard"], names["lcs"], arguments,
                   writes_agree, float(exact))  # fmt: skip
            if len(_PAIR_CACHE) >= _PAIR_CACHE_MAX:
                _PAIR_CACHE.clear()
            _PAIR_CACHE[key] = hit
        rows.append(hit)
    return np.array(rows, dtype=np.float64).reshape(len(pairs), len(_CALL_VALUES) + 1)


def _text_vectors(
    store: Any, embedder: SupportsEmbed | None, texts: dict[str, Any], trajectories: list[Calls],
    used: np.ndarray, serial_code: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Vectors of the job texts (rows = text codes; stored ones come with `texts`) and of the
    serialised calls of each signature in `used` (rows = signature codes: the text of
    `serial_code`, or for signatures parsed from older runs serialised here), embedding the rest
    in one batch through the store's cache."""
    if embedder is None:
        raise ValueError("alternate features need an embedder")
    dims = np.asarray(texts["dim"], dtype=np.int64)
    missing = np.flatnonzero(dims == 0)
    stored = np.flatnonzero(dims > 0)
    as_text = used[serial_code[used] >= 0]
    parsed = used[serial_code[used] < 0]
    wanted = [str(texts["text"][i]) for i in missing] + [serialise(trajectories[c]) for c in parsed]
    # the inputs query hashed its texts already; only serialisations made here need hashing
    hashes = [str(h) for h in texts["hash"][missing]] + [text_hash(t) for t in wanted[len(missing) :]]
    fresh = embed_cached(store, embedder, wanted, hashes) if wanted else None
    sizes = set(dims[stored].tolist()) | ({fresh.shape[1]} if fresh is not None else set())
    if len(sizes) != 1:
        raise RunFailed(
            f"stored embeddings do not all have the embedder's size ({sorted(sizes)}): the model changed under "
            "the same name; drop them with `magv db forget-embeddings`"
        )
    dim = sizes.pop()
    text_vec = np.zeros((len(dims), dim), dtype=np.float32)
    if len(stored):
        text_vec[stored] = np.frombuffer(b"".join(texts["vector"][stored]), dtype=np.float32).reshape(-1, dim)
    sig_vec = np.zeros((len(trajectories), dim), dtype=np.float32)
    if fresh is not None:
        text_vec[missing] = fresh[: len(missing)]
        sig_vec[parsed] = fresh[len(missing) :]
    sig_vec[as_text] = text_vec[serial_code[as_text]]
    return text_vec, sig_vec


def _votes(store: Any, question_ids: list[str]) -> list[tuple[str, str, float]]:
    """(question_id, run_id, share) of the responder's vote, for bases the mct table lacks."""
    if not question_ids:
        return []
    from magv.verify.importer import most_common

    runs_of: dict[str, list[Run]] = {}
    for run in store.runs(question_ids=question_ids):
        runs_of.setdefault(run.question_id, []).append(run)
    picks = []
    for qid, runs in runs_of.items():
        chosen = most_common(runs)
        if chosen:
            picks.append((qid, chosen["run_id"], float(chosen["share"])))
    return picks
