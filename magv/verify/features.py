"""Distant-supervision features of trajectories (MAG-V), one row per trajectory.

A trajectory's row compares it with its *siblings* (the other runs of its question or task group)
and, where they exist, with the runs of the *alternate* questions reverse-engineered from the
group's answer. Against each sibling and each alternate run it computes the paper's EM, EDIT,
GEDIT and SS and a few more pair features (`pair_features`), aggregated with mean / min / max; it
adds the trajectory's own counts, whether it follows the group's most common trajectory (MCT), and
the share of siblings with the same calls, the same arguments and the same writes.

`TrajectoryFeaturizer` turns trajectories (no database needed) into the feature matrix; the stage
`compute_features` reads a store's runs, featurizes them and writes one row per run that has
siblings or alternates (or, with `mct_only`, the paper's reading: one row per question's MCT).

Where there is nothing to compare with (no sibling, no alternate, no embedder for SS), a feature
takes `NEUTRAL`, so one model can score every kind of row.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import networkx as nx
import numpy as np
from rapidfuzz.distance import LCSseq, Levenshtein

from magv.definitions import is_tool_error
from magv.errors import BadInput, RunFailed
from magv.llm.embeddings import SupportsEmbed, embed_cached
from magv.mct import mct_signature
from magv.models import Step, Trajectory, make_id, serialised_calls
from magv.verify import budget as work

if TYPE_CHECKING:
    from magv.store import Store

# 4: the run's own content (error share, an error at the end, retries, repeated and stagnant calls,
# writes, calls after the response), write-set agreement with siblings; a most common trajectory,
# and every sibling aggregate, that does not depend on the order runs are listed in.
# 3: a row for every run, compared with its siblings as well as with alternates' runs.
# 2: graph edit distance of graphs with self-loops (a tool called twice in a row) is exact; networkx's
# search, used for version 1, matched a self-loop with another edge for free.
FEATURE_VERSION = "4"

# Midway between "agrees completely" (1 for similarities, 0 for distances) and "nothing in common":
# a row with nothing to compare with carries no evidence either way.
NEUTRAL = 0.5

# Exact GED explores every node mapping; beyond this many nodes in the larger graph, or when the exact
# search runs past GED_TIMEOUT_S, the best path found by the bounded search is used instead.
GED_EXACT_NODES = 8
GED_TIMEOUT_S = 1.0
GED_APPROX_TIMEOUT_S = 0.2
# networkx's bounded search solves an assignment problem over every node and edge pair at each step
# before it looks at its clock: above this many nodes + edges in either graph it is not started and
# the linear-time upper bound (`label_bound`) is the GED.
GED_SEARCH_SIZE = 64

# The start node of a tool graph: not a string, so that no tool name (a tool may be called
# "__start__") can be taken for it.
START = ("start",)
AGGREGATES = ("mean", "min", "max")

PAIR_FEATURES = (
    "em", "edit", "gedit", "ss", "call_edit", "jaccard", "lcs", "arg_agreement", "response_sim",
    "write_agreement",
)  # fmt: skip
ALTERNATE_FEATURES = (*PAIR_FEATURES, "question_sim")
OWN_FEATURES = (
    "n_steps", "n_calls", "n_tool_errors", "n_invalid", "has_response", "status_ok",
    "tool_error_share", "error_at_end", "n_retries", "n_repeated_calls", "n_stagnant_calls", "n_distinct_tools",
    "n_writes", "n_write_errors", "calls_after_response", "response_words",
)  # fmt: skip
SIBLING_COUNTS = (
    "n_runs", "n_distinct", "distinct_ratio", "is_mct", "mct_share", "signature_share",
    "sibling_same_calls", "sibling_same_arguments", "sibling_same_writes", "sibling_same_write_sequence",
    "is_write_mode",
)  # fmt: skip
# The features read from sentence embeddings: a model that reads none of them needs no embedder.
EMBEDDING_PAIRS = ("ss", "response_sim", "question_sim")
FEATURE_NAMES: tuple[str, ...] = (
    *OWN_FEATURES,
    *SIBLING_COUNTS,
    *(f"sibling_{name}_{agg}" for name in PAIR_FEATURES for agg in AGGREGATES),
    "n_alternates",
    "n_alternate_runs",
    "gedit_exact",
    *(f"{name}_{agg}" for name in ALTERNATE_FEATURES for agg in AGGREGATES),
)


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
    if not ca.names and not cb.names:
        return 1.0
    args_a, args_b = _args_by_tool(ca), _args_by_tool(cb)
    shared = args_a.keys() & args_b.keys()
    if not shared:
        return 0.0
    return sum(_jaccard(args_a[n], args_b[n]) for n in shared) / len(shared)


def _args_by_tool(calls: Calls) -> dict[str, set[str]]:
    by_tool: dict[str, set[str]] = {}
    for name, canonical in zip(calls.names, calls.canonical, strict=True):
        by_tool.setdefault(name, set()).add(canonical)
    return by_tool


def write_agreement(a: Trajectory | Calls, b: Trajectory | Calls, write_tools: frozenset[str]) -> float:
    """Multiset Jaccard of the calls that change data (canonical); 1 when neither writes."""
    wa, wb = _writes(calls_of(a), write_tools), _writes(calls_of(b), write_tools)
    if not wa and not wb:
        return 1.0
    shared = sum((wa & wb).values())
    return shared / (sum(wa.values()) + sum(wb.values()) - shared)


def _writes(calls: Calls, write_tools: frozenset[str]) -> Counter[str]:
    """How many times each canonical call that changes data was made."""
    return Counter(c for n, c in zip(calls.names, calls.canonical, strict=True) if n in write_tools)


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


def graph_size(trajectory: Trajectory | Calls) -> int:
    """Nodes + edges of tool_graph: START, one node per distinct tool, one edge per distinct step."""
    names = calls_of(trajectory).names
    return 1 + len(set(names)) + len(set(zip((START, *names), names)))


def graph_edit_distance(
    a: Trajectory | Calls | nx.DiGraph,
    b: Trajectory | Calls | nx.DiGraph,
    *,
    exact_nodes: int = GED_EXACT_NODES,
) -> tuple[float, bool]:
    """GEDIT: (cost, exact). Unit costs; START is pinned to START. Exact for graphs of up to
    `exact_nodes` nodes, else (or when the exact search times out) a time-bounded upper bound."""
    if isinstance(a, nx.DiGraph) or isinstance(b, nx.DiGraph) or exact_nodes != GED_EXACT_NODES:
        ga = a if isinstance(a, nx.DiGraph) else tool_graph(a)
        gb = b if isinstance(b, nx.DiGraph) else tool_graph(b)
        return _ged(ga, gb, exact_nodes)
    return _ged_of_names(calls_of(a).names, calls_of(b).names, {})


def _ged_of_names(
    a: tuple[str, ...], b: tuple[str, ...], injections: dict[tuple[int, int], np.ndarray]
) -> tuple[float, bool]:
    """GED of two tool-name sequences (all tool_graph reads). Graphs of up to GED_EXACT_NODES nodes
    take the exact enumeration below (networkx's exact search miscounts self-loops); larger ones
    the lower of `label_bound` and networkx's bounded search. Under a WorkBudget both count against
    its seconds, and once they are spent every pair gets `label_bound` alone. `injections` keeps
    the node maps of each size between calls."""
    if a == b:
        return 0.0, True
    if b < a:  # one value per unordered pair: the bounded search is not symmetric
        a, b = b, a
    budget = work.current()
    if budget is not None and budget.left() <= 0:
        budget.bounded_pairs += 1
        return label_bound(a, b), False
    timed = budget.timed() if budget is not None else nullcontext()
    ga, gb = _graph_arrays(a), _graph_arrays(b)
    if max(len(ga[0]), len(gb[0])) <= GED_EXACT_NODES:
        with timed:
            return _ged_by_enumeration(ga, gb, injections), True
    bound = label_bound(a, b)
    if budget is not None:
        budget.bounded_pairs += 1
    if max(graph_size(Calls(a, a)), graph_size(Calls(b, b))) > GED_SEARCH_SIZE:
        return bound, False
    seconds = GED_APPROX_TIMEOUT_S if budget is None else min(GED_APPROX_TIMEOUT_S, budget.left())
    with timed:
        return min(bound, _searched(tool_graph(Calls(a, a)), tool_graph(Calls(b, b)), seconds, bound)), False


def label_bound(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    """An upper bound of the GED of two tool-name sequences' graphs, in linear time: the cost of the
    edit path that keeps every tool both call, substitutes the tools only one calls for the other's
    (in order of first call), deletes or inserts the rest, and keeps every edge that path carries
    over."""
    set_a, set_b = set(a), set(b)
    only_a = [x for x in dict.fromkeys(a) if x not in set_b]
    only_b = [x for x in dict.fromkeys(b) if x not in set_a]
    rename = dict(zip(only_a, only_b, strict=False))
    edges_a, edges_b = set(zip((START, *a), a, strict=False)), set(zip((START, *b), b, strict=False))
    kept = len({(rename.get(u, u), rename.get(v, v)) for u, v in edges_a} & edges_b)
    return float(max(len(only_a), len(only_b)) + len(edges_a) + len(edges_b) - 2 * kept)


def _graph_arrays(names: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """tool_graph as (node labels, START first; adjacency matrix)."""
    nodes = [START, *dict.fromkeys(names)]
    index = {n: i for i, n in enumerate(nodes)}
    adjacency = np.zeros((len(nodes), len(nodes)), dtype=np.int64)
    previous = 0
    for name in names:
        adjacency[previous, index[name]] = 1
        previous = index[name]
    return nodes, adjacency


def _injections(k: int, n: int) -> np.ndarray:
    """Every map of the k non-START nodes of a graph (1..k) injectively onto the n of another
    (1..n), START (0) onto START, one per row."""
    maps = list(itertools.permutations(range(1, n + 1), k))
    return np.array([(0, *m) for m in maps], dtype=np.int64).reshape(len(maps), k + 1)


def _ged_by_enumeration(
    ga: tuple[list[str], np.ndarray], gb: tuple[list[str], np.ndarray], injections: dict
) -> float:
    """Exact unit-cost GED of two tool graphs, START pinned to START. Mapping one more node pair
    never costs more than deleting one and inserting the other (at most 1 against 2, and an edge
    can only be kept), so some optimum maps every node of the smaller graph: enumerate those maps
    and take the cheapest of substitutions + unmatched nodes + edges not carried over."""
    (la, A), (lb, B) = (ga, gb) if len(ga[0]) <= len(gb[0]) else (gb, ga)
    size = (len(la) - 1, len(lb) - 1)
    if size not in injections:
        injections[size] = _injections(*size)
    phi = injections[size]
    mismatch = np.array([[x != y for y in lb] for x in la], dtype=np.int64)
    node_cost = mismatch[np.arange(len(la)), phi].sum(axis=1) + (len(lb) - len(la))
    us, vs = np.nonzero(A)
    kept = B[phi[:, us], phi[:, vs]].sum(axis=1)
    return float((node_cost + A.sum() + B.sum() - 2 * kept).min())


def _same_label(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["label"] == b["label"]


def _ged(ga: nx.DiGraph, gb: nx.DiGraph, exact_nodes: int) -> tuple[float, bool]:
    roots = (START, START)
    if max(ga.number_of_nodes(), gb.number_of_nodes()) <= exact_nodes:
        started = time.perf_counter()
        cost = nx.graph_edit_distance(ga, gb, node_match=_same_label, roots=roots, timeout=GED_TIMEOUT_S)
        if cost is not None and time.perf_counter() - started < GED_TIMEOUT_S:
            return float(cost), True
    cost = _searched(ga, gb, GED_APPROX_TIMEOUT_S)
    if math.isinf(cost):  # no path within the time: delete one graph and insert the other, START kept
        cost = ga.number_of_nodes() + ga.number_of_edges() + gb.number_of_nodes() + gb.number_of_edges() - 2
    return float(cost), False


def _searched(ga: nx.DiGraph, gb: nx.DiGraph, seconds: float, upper_bound: float | None = None) -> float:
    """The cheapest edit path networkx's search finds within `seconds` (inf if none beats
    `upper_bound`)."""
    best = math.inf
    if seconds <= 0:
        return best
    paths = nx.optimize_edit_paths(
        ga,
        gb,
        node_match=_same_label,
        roots=(START, START),
        strictly_decreasing=True,
        timeout=seconds,
        upper_bound=upper_bound,
    )
    for _, _, cost in paths:
        best = min(best, cost)
    return float(best)


# The pair features that read the calls (all but the embedding similarities), in this order.
CALL_FEATURES = ("em", "edit", "gedit", "call_edit", "jaccard", "lcs", "arg_agreement", "write_agreement")


def _call_features(
    a: Calls, b: Calls, write_tools: frozenset[str], injections: dict
) -> tuple[tuple[float, ...], bool]:
    """The CALL_FEATURES of a pair, and whether its GED is exact."""
    ged, exact = _ged_of_names(a.names, b.names, injections)
    # Deleting one graph and inserting the other always works, so this bounds GED to [0, 1].
    gedit = ged / max(1, graph_size(a) + graph_size(b))
    values = (
        exact_match(a, b),
        name_edit_distance(a, b),
        gedit,
        call_edit_distance(a, b),
        tool_jaccard(a, b),
        lcs_ratio(a, b),
        argument_agreement(a, b),
        write_agreement(a, b, write_tools),
    )
    return values, exact


def pair_features(
    base: Trajectory | Calls,
    other: Trajectory | Calls,
    *,
    write_tools: frozenset[str] = frozenset(),
    ss: float,
    response_sim: float,
) -> tuple[dict[str, float], bool]:
    """Features of one (trajectory, other run) pair, and whether the GED was exact. The embedding
    similarities are passed in because they are computed for many pairs in one batch."""
    values, exact = _call_features(calls_of(base), calls_of(other), write_tools, {})
    named = {**dict(zip(CALL_FEATURES, values, strict=True)), "ss": ss, "response_sim": response_sim}
    return {name: named[name] for name in PAIR_FEATURES}, exact


def own_features(trajectory: Trajectory, write_tools: frozenset[str] = frozenset()) -> dict[str, float]:
    """What one trajectory shows on its own: counts of steps, calls and errors (is_tool_error); the
    share of calls that failed, whether the last call failed, retries (a call of the tool whose
    previous call just failed), repeated calls (the same call with the same arguments as before)
    and stagnant ones (a repeat that got the same answer: no new information), distinct tools,
    calls that change data (`write_tools`) and how many of them failed, calls made after the
    agent's last words, and how many words those were (log1p)."""
    t = trajectory
    calls = [s for s in t.steps if s.kind == "tool" and s.call is not None]
    failed = [is_tool_error(s) for s in calls]
    seen: dict[str, list[Step]] = {}
    repeated = stagnant = retries = 0
    for k, step in enumerate(calls):
        canonical = step.call.canonical()  # type: ignore[union-attr]
        earlier = seen.setdefault(canonical, [])
        if earlier:
            repeated += 1
            stagnant += any(e.result == step.result and e.error == step.error for e in earlier)
        earlier.append(step)
        if k and failed[k - 1] and calls[k - 1].call.name == step.call.name:  # type: ignore[union-attr]
            retries += 1
    writes = [k for k, s in enumerate(calls) if s.call.name in write_tools]  # type: ignore[union-attr]
    response = (t.response or "").strip()
    return {
        "n_steps": float(len(t.steps)),
        "n_calls": float(len(calls)),
        "n_tool_errors": float(sum(failed)),
        "n_invalid": float(sum(1 for s in t.steps if s.kind == "invalid")),
        "has_response": float(bool(response)),
        "status_ok": float(t.status == "ok"),
        "tool_error_share": sum(failed) / len(calls) if calls else 0.0,
        "error_at_end": float(bool(failed) and failed[-1]),
        "n_retries": float(retries),
        "n_repeated_calls": float(repeated),
        "n_stagnant_calls": float(stagnant),
        "n_distinct_tools": float(len({s.call.name for s in calls})),  # type: ignore[union-attr]
        "n_writes": float(len(writes)),
        "n_write_errors": float(sum(failed[k] for k in writes)),
        "calls_after_response": float(sum(1 for s in t.steps_after_response() if s.kind == "tool")),
        "response_words": math.log1p(len(response.split())),
    }


def needs_embeddings(names: Iterable[str]) -> bool:
    """Whether any of the feature names is read from sentence embeddings (EMBEDDING_PAIRS)."""
    return any(name.rpartition("_")[0].removeprefix("sibling_") in EMBEDDING_PAIRS for name in names)


def aggregate(rows: Sequence[dict[str, float]], names: Sequence[str], prefix: str = "") -> dict[str, float]:
    """prefix+name_mean / _min / _max over rows; NEUTRAL for all when there are none."""
    out: dict[str, float] = {}
    for name in names:
        vals = [r[name] for r in rows if name in r]
        for agg, fn in zip(AGGREGATES, (np.mean, np.min, np.max), strict=True):
            out[f"{prefix}{name}_{agg}"] = float(fn(vals)) if vals else NEUTRAL
    return out


# -- the featurizer --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alternate:
    """An alternate question reverse-engineered from a group's answer, with the trajectories the
    agent produced for it."""

    question: str
    trajectories: Sequence[Trajectory]


class TrajectoryFeaturizer:
    """Trajectories in, the feature matrix (one row each, columns FEATURE_NAMES) out.

        X = TrajectoryFeaturizer(embedder).transform(trajectories, groups=task_ids)

    embedder: anything with `embed(texts) -> array (n, d)` (magv's Embedder, or a wrapper around
        a sentence-transformers model's `encode`); SS and response / question similarity need it,
        without one they are NEUTRAL.
    write_tools: names of the tools that change data (write_agreement and sibling_same_writes
        compare only their calls; with none known nothing can disagree).

    Pair values are memoised by the pair of call signatures within one `transform` call: runs
    repeat calls, and graph edit distance is most of the cost."""

    def __init__(self, embedder: SupportsEmbed | None = None, write_tools: Iterable[str] = ()):
        self.embedder = embedder
        self.write_tools = frozenset(write_tools)

    def get_feature_names_out(self) -> np.ndarray:
        return np.asarray(FEATURE_NAMES, dtype=object)

    def transform(
        self,
        trajectories: Sequence[Trajectory | dict[str, Any]],
        groups: Sequence[Hashable] | None = None,
        *,
        questions: Mapping[Hashable, str] | None = None,
        alternates: Mapping[Hashable, Sequence[Alternate]] | None = None,
        rows: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Feature rows of `trajectories` (Trajectory objects or their JSON-shaped dicts).

        groups: one key per trajectory; trajectories with the same key are siblings (runs of one
            question or task). None: all are siblings of each other. The order siblings are listed
            in changes no row (magv.mct breaks ties by content).
        questions: group -> its question text (question_sim against alternates needs it).
        alternates: group -> its alternate questions with their trajectories.
        rows: the indices of the trajectories whose rows to compute (default all), in that order;
            the others are context (siblings) only."""
        ts = [_as_trajectory(t, i) for i, t in enumerate(trajectories)]
        keys = [0] * len(ts) if groups is None else list(groups)
        if len(keys) != len(ts):
            raise BadInput(
                f"groups: {len(keys)} keys for {len(ts)} trajectories; expected one per trajectory"
            )
        wanted = list(range(len(ts))) if rows is None else [int(i) for i in rows]
        if any(not 0 <= i < len(ts) for i in wanted):
            raise BadInput(f"rows: expected indices in 0..{len(ts) - 1}")
        return _Batch(self, ts, keys, questions or {}, alternates or {}).matrix(wanted)


def _as_trajectory(t: Trajectory | dict[str, Any], i: int) -> Trajectory:
    if isinstance(t, Trajectory):
        return t
    if isinstance(t, dict):
        try:
            return Trajectory.model_validate(t)
        except ValueError as exc:
            raise BadInput(f"trajectories[{i}]: not a trajectory ({exc})") from exc
    raise BadInput(f"trajectories[{i}]: expected a Trajectory or a dict, got {type(t).__name__}")


# The SIBLING_COUNTS that count the group rather than compare pairs.
_GROUP_COUNTS = ("n_runs", "n_distinct", "distinct_ratio", "is_mct", "mct_share", "signature_share")


class _Batch:
    """The work of one transform call: trajectories numbered (alternates' runs after the given
    ones), their distinct call signatures numbered, pair values memoised by signature pair, texts
    collected and embedded once."""

    def __init__(
        self,
        featurizer: TrajectoryFeaturizer,
        ts: list[Trajectory],
        keys: list[Hashable],
        questions: Mapping[Hashable, str],
        alternates: Mapping[Hashable, Sequence[Alternate]],
    ):
        self.embedder = featurizer.embedder
        self.write_tools = featurizer.write_tools
        self.members: dict[Hashable, list[int]] = {}
        for i, key in enumerate(keys):
            self.members.setdefault(key, []).append(i)
        self.keys = keys
        self.questions = questions
        self.trajectories = list(ts)
        # group -> [(question text, indices of its runs)], alternates without runs left out
        self.alternates: dict[Hashable, list[tuple[str, list[int]]]] = {}
        for key, alts in alternates.items():
            if key not in self.members:
                continue
            for alt in alts:
                if alt.trajectories:
                    start = len(self.trajectories)
                    self.trajectories += [_as_trajectory(t, i) for i, t in enumerate(alt.trajectories)]
                    self.alternates.setdefault(key, []).append(
                        (alt.question, list(range(start, len(self.trajectories))))
                    )
        self.calls = [calls_of(t) for t in self.trajectories]
        codes: dict[tuple[str, ...], int] = {}
        self.code = [codes.setdefault(c.canonical, len(codes)) for c in self.calls]
        # each code's signature (Trajectory.signature), what the MCT vote breaks ties by
        self.signature = [make_id(list(canonical)) for canonical in codes]
        # each trajectory's calls that change data (canonical), in order
        self.writes = [
            tuple(c for n, c in zip(t.names, t.canonical, strict=True) if n in self.write_tools)
            for t in self.calls
        ]
        self.pairs: dict[tuple[int, int], tuple[float, ...]] = {}
        self.injections: dict[tuple[int, int], np.ndarray] = {}
        self.texts: dict[str, int] = {}
        self.budget = work.current()

    def pair(self, i: int, j: int) -> tuple[float, ...]:
        """CALL_FEATURES of trajectories i and j, then 1.0 if their GED is exact. Every one of them
        is symmetric: one value per unordered pair."""
        key = (min(self.code[i], self.code[j]), max(self.code[i], self.code[j]))
        if key not in self.pairs:
            if self.budget is not None:
                self.budget.check()
            values, exact = _call_features(self.calls[i], self.calls[j], self.write_tools, self.injections)
            self.pairs[key] = (*values, float(exact))
        return self.pairs[key]

    def text(self, text: str) -> int:
        return self.texts.setdefault(text, len(self.texts))

    def matrix(self, wanted: list[int]) -> np.ndarray:
        n = len(wanted)
        votes = {key: _vote(self, members) for key, members in self.members.items()}
        write_modes = {key: _write_mode(self, members) for key, members in self.members.items()}
        counts = [self._counts(i, votes[self.keys[i]], write_modes[self.keys[i]]) for i in wanted]
        # (output row, trajectory, other trajectory) of every comparison
        sibling_pairs = [
            (r, i, j) for r, i in enumerate(wanted) for j in self.members[self.keys[i]] if j != i
        ]
        alternate_pairs = [
            (r, i, j)
            for r, i in enumerate(wanted)
            for _, runs in self.alternates.get(self.keys[i], [])
            for j in runs
        ]
        question_pairs = [
            (r, self.text(q), self.text(alt_question))
            for r, i in enumerate(wanted)
            if (q := self.questions.get(self.keys[i])) is not None
            for alt_question, _ in self.alternates.get(self.keys[i], [])
        ]
        sib, alt = self._pair_values(sibling_pairs), self._pair_values(alternate_pairs)
        vectors = self._vectors()  # every text is numbered by now
        for values in (sib, alt):
            values["ss"] = _similarity(vectors, values["serial_a"], values["serial_b"])
            values["response_sim"] = _similarity(vectors, values["response_a"], values["response_b"])
        q_row, q_base, q_alt = _columns(question_pairs, 3)
        question_sim = _similarity(vectors, q_base, q_alt)

        columns = {
            name: np.array([c[name] for c in counts], dtype=np.float64).reshape(n)
            for name in (*OWN_FEATURES, *_GROUP_COUNTS, "is_write_mode", "n_alternates")
        }
        same = {
            "calls": sib["edit"] == 0.0,
            "arguments": sib["arg_agreement"] == 1.0,
            "writes": sib["write_agreement"] == 1.0,
            "write_sequence": sib["same_write_sequence"] == 1.0,
        }
        for name, test in same.items():
            columns[f"sibling_same_{name}"] = _grouped(sib["row"], test.astype(np.float64), n, NEUTRAL)[0]
        for name in PAIR_FEATURES:
            columns.update(_aggregated(f"sibling_{name}", sib["row"], sib[name], n))
            columns.update(_aggregated(name, alt["row"], alt[name], n))
        columns.update(_aggregated("question_sim", q_row, question_sim, n))
        columns["n_alternate_runs"] = np.bincount(alt["row"], minlength=n).astype(np.float64)
        exact = np.r_[sib["exact"], alt["exact"]]
        columns["gedit_exact"] = _grouped(np.r_[sib["row"], alt["row"]], exact, n, 1.0)[1]
        if self.budget is not None:
            self.budget.exact_rows.append(columns["gedit_exact"].copy())
        return np.column_stack([columns[name] for name in FEATURE_NAMES]).reshape(n, len(FEATURE_NAMES))

    def _counts(
        self, i: int, vote: tuple[Counter[int], int, int], write_mode: tuple[str, ...] | None
    ) -> dict[str, float]:
        """Trajectory i's own counts, its group's, and its alternates'."""
        counts, mct_code, mct_count = vote
        n_runs = len(self.members[self.keys[i]])
        return {
            **own_features(self.trajectories[i], self.write_tools),
            "is_write_mode": NEUTRAL
            if write_mode is None
            else float(tuple(sorted(self.writes[i])) == write_mode),
            "n_runs": n_runs,
            "n_distinct": len(counts),
            "distinct_ratio": len(counts) / n_runs,
            "is_mct": float(self.code[i] == mct_code),
            "mct_share": mct_count / n_runs,
            "signature_share": counts[self.code[i]] / n_runs,
            "n_alternates": len(self.alternates.get(self.keys[i], [])),
        }

    def _pair_values(self, pairs: list[tuple[int, int, int]]) -> dict[str, np.ndarray]:
        """Columns over (row, i, j) pairs: the row, CALL_FEATURES and exact of trajectories i and
        j, and the text numbers of their serialised calls and responses (-1 without an embedder)."""
        rows, a, b = _columns(pairs, 3)
        table = np.array([self.pair(i, j) for _, i, j in pairs], dtype=np.float64)
        table = table.reshape(len(pairs), len(CALL_FEATURES) + 1)
        out = {name: table[:, k] for k, name in enumerate((*CALL_FEATURES, "exact"))}
        out["row"] = rows
        out["same_write_sequence"] = np.array([float(self.writes[i] == self.writes[j]) for _, i, j in pairs])
        used = np.unique(np.r_[a, b])
        serial, response = np.full(len(self.trajectories), -1), np.full(len(self.trajectories), -1)
        if self.embedder is not None:
            for i in used.tolist():
                serial[i] = self.text(serialise(self.calls[i]))
                response[i] = self.text(self.trajectories[i].response or "")
        out.update(serial_a=serial[a], serial_b=serial[b], response_a=response[a], response_b=response[b])
        return out

    def _vectors(self) -> np.ndarray | None:
        """L2-normalised vectors of the collected texts (rows = text numbers), one embed call."""
        if self.embedder is None or not self.texts:
            return None
        vectors = np.asarray(self.embedder.embed(list(self.texts)), dtype=np.float64)
        if vectors.ndim != 2 or len(vectors) != len(self.texts):
            raise RunFailed(
                f"embedder returned {vectors.shape} for {len(self.texts)} texts; expected one row each"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def _similarity(vectors: np.ndarray | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of text rows a[k] and b[k] (a zero vector gives 0); NEUTRAL without vectors."""
    if vectors is None:
        return np.full(len(a), NEUTRAL)
    return np.clip(np.einsum("ij,ij->i", vectors[a], vectors[b]), -1.0, 1.0)


def _columns(rows: list[tuple[int, ...]], width: int) -> list[np.ndarray]:
    """Integer columns of a list of tuples (empty columns for no rows)."""
    table = np.array(rows, dtype=np.int64).reshape(len(rows), width)
    return [table[:, k] for k in range(width)]


def _aggregated(name: str, group: np.ndarray, values: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """name_mean / _min / _max of values per output row (NEUTRAL for a row without any)."""
    return {
        f"{name}_{agg}": col for agg, col in zip(AGGREGATES, _grouped(group, values, n, NEUTRAL), strict=True)
    }


def _vote(batch: _Batch, members: list[int]) -> tuple[Counter[int], int, int]:
    """(runs per signature code, the MCT's code (-1 for none), its count among the runs that did not
    fail on the model), by magv.mct's rule."""
    counts = Counter(batch.code[i] for i in members)
    signature, top = mct_signature(
        (batch.signature[batch.code[i]], batch.trajectories[i].status != "llm_error") for i in members
    )
    code = next((batch.code[i] for i in members if batch.signature[batch.code[i]] == signature), -1)
    return counts, code, top


def _write_mode(batch: _Batch, members: list[int]) -> tuple[str, ...] | None:
    """The group's most common set of write calls (a sorted multiset; ties to the smallest), or None
    when the group has one run (nothing to agree with)."""
    if len(members) < 2:
        return None
    counts = Counter(tuple(sorted(batch.writes[i])) for i in members)
    top = max(counts.values())
    return min(s for s, n in counts.items() if n == top)


def _grouped(
    group: np.ndarray, values: np.ndarray, n: int, default: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, min, max) of `values` per group 0..n-1 (rows in any order); `default` where a group has no rows. Values are summed in sorted order within a group, so a mean
    does not change in its last bits with the order siblings were listed in."""
    means, mins, maxs = (np.full(n, default, dtype=np.float64) for _ in range(3))
    if len(group) == 0:
        return means, mins, maxs
    order = np.lexsort((values, group))
    group, values = group[order], values[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ids = group[starts]
    means[ids] = np.add.reduceat(values, starts) / np.diff(np.r_[starts, len(group)])
    mins[ids] = np.minimum.reduceat(values, starts)
    maxs[ids] = np.maximum.reduceat(values, starts)
    return means, mins, maxs


# -- the stage -------------------------------------------------------------------------------------


class StoreCachedEmbedder:
    """An embedder whose vectors go through the store's cache (`embed_cached`): each text is
    embedded once per embedding model."""

    def __init__(self, store: Store, embedder: SupportsEmbed):
        self.store = store
        self.embedder = embedder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return embed_cached(self.store, self.embedder, texts)


def write_tools_of(domain: str) -> frozenset[str]:
    """Names of the domain's tools that change data; empty for unknown domains (imported data)."""
    from magv.verify.toolspec import domain_tools

    return domain_tools(domain).writes


def sibling_key(question: Mapping[str, Any]) -> str:
    """Runs with the same key are siblings: the runs of one question, or for imported questions
    the runs of one task group (trials of a task may open with other words)."""
    if question["origin"] == "import" and question["group_id"]:
        return f"group:{question['group_id']}"
    return f"question:{question['id']}"


# Sibling groups featurized (and their trajectories parsed) at a time: memory stays bounded.
CHUNK_GROUPS = 500


@dataclass
class _Plan:
    """What the stage reads before any trajectory: each sibling group's runs (ids, in run order),
    question text, domain and the write tools its import named, and its alternates as (question
    text, run ids)."""

    runs: dict[str, list[str]]
    text: dict[str, str]
    domain: dict[str, str]
    alternates: dict[str, list[tuple[str, list[str]]]]
    writes: dict[str, frozenset[str]] = field(default_factory=dict)


def compute_features(
    store: Store,
    embedder: SupportsEmbed | None,
    *,
    alternates: bool = True,
    replace: bool = False,
    mct_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write a feature row for every run that has siblings or alternates (with `mct_only`: for the
    MCT run of every base question, the paper's reading); returns rows written.

    Rows already stored for this FEATURE_VERSION are kept unless `replace`, or unless the run or
    alternate counts they were computed from have changed since (a later respond or reverse stage).
    With `alternates` False, alternates are left out and no text is embedded (SS and the other
    similarities are NEUTRAL). Texts are embedded through the store's cache."""
    with _collector_paused():
        return _compute_features(store, embedder, alternates, replace, mct_only, progress)


def _compute_features(
    store: Store,
    embedder: SupportsEmbed | None,
    alternates: bool,
    replace: bool,
    mct_only: bool,
    progress: Callable[[int, int], None] | None,
) -> int:
    questions = {q["id"]: q for q in store.question_heads(passing_alternates_only=True)}
    runs = store.run_signatures()
    plan = _plan(questions, runs, alternates)
    chosen = _rows_to_compute(store, questions, runs, plan, replace, mct_only)
    total = sum(len(v) for v in chosen.values())
    if progress is not None:
        progress(0, total)
    cached = StoreCachedEmbedder(store, embedder) if alternates and embedder is not None else None
    written = 0
    writes_of = {d: write_tools_of(d) for d in {plan.domain[k] for k in chosen}}
    tools = {k: writes_of[plan.domain[k]] | plan.writes.get(k, frozenset()) for k in chosen}
    for write_tools in sorted(set(tools.values()), key=sorted):
        featurizer = TrajectoryFeaturizer(cached, write_tools)
        keys = [k for k in chosen if tools[k] == write_tools]
        for start in range(0, len(keys), CHUNK_GROUPS):
            chunk = keys[start : start + CHUNK_GROUPS]
            X, run_ids = _featurize(store, featurizer, plan, {k: chosen[k] for k in chunk})
            written += store.write_feature_matrix(FEATURE_VERSION, run_ids, FEATURE_NAMES, X)
            if progress is not None:
                progress(written, total)
    return written


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while the stage runs. The rows read and the parsed
    trajectories of a chunk live until it is written, so they reach the oldest generation, and
    every few tens of thousands of them set off a full pass over every object of the process (a
    CLI process holds some 10^5, most of them the OpenAI client's types). This stage, as `magv
    verify features --replace` runs it, on 10,000 synthetic questions (30,000 rows) took 29 s with
    the collector on and 17 s with it paused. Nothing the stage makes is cyclic: nothing is left
    for the collector to find."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _plan(questions: dict[str, dict[str, Any]], runs: list[dict[str, Any]], alternates: bool) -> _Plan:
    plan = _Plan({}, {}, {}, {})
    runs_of: dict[str, list[str]] = {}
    for r in runs:
        if r["question_id"] in questions:
            runs_of.setdefault(r["question_id"], []).append(r["id"])
    for qid, ids in runs_of.items():
        q = questions[qid]
        key = sibling_key(q)
        plan.runs.setdefault(key, []).extend(ids)
        plan.text.setdefault(key, q["text"])
        plan.domain.setdefault(key, q["domain"])
        if q.get("write_tools"):
            plan.writes.setdefault(key, frozenset(json.loads(q["write_tools"])))
    if alternates:
        for qid, ids in runs_of.items():
            q = questions[qid]
            parent = questions.get(q["parent_id"] or "")
            if q["origin"] == "alternate" and parent is not None and parent["id"] in runs_of:
                plan.alternates.setdefault(sibling_key(parent), []).append((q["text"], ids))
    return plan


def _featurize(
    store: Store, featurizer: TrajectoryFeaturizer, plan: _Plan, chosen: dict[str, list[str]]
) -> tuple[np.ndarray, list[str]]:
    """The rows of `chosen` (sibling group -> run ids), with each group's runs and alternates."""
    needed = [r for k in chosen for r in plan.runs[k]]
    needed += [r for k in chosen for _, ids in plan.alternates.get(k, []) for r in ids]
    trajectory = {
        r["id"]: Trajectory.model_validate_json(r["trajectory"]) for r in store.trajectories_json(needed)
    }
    ids = [r for k in chosen for r in plan.runs[k]]
    position = {r: i for i, r in enumerate(ids)}
    wanted = [position[r] for k in chosen for r in chosen[k]]
    alternates = {
        k: [Alternate(text, [trajectory[r] for r in alt_ids]) for text, alt_ids in plan.alternates[k]]
        for k in chosen
        if k in plan.alternates
    }
    X = featurizer.transform(
        [trajectory[r] for r in ids],
        [k for k in chosen for _ in plan.runs[k]],
        questions={k: plan.text[k] for k in chosen},
        alternates=alternates,
        rows=wanted,
    )
    return X, [ids[i] for i in wanted]


def _rows_to_compute(
    store: Store,
    questions: dict[str, dict[str, Any]],
    runs: list[dict[str, Any]],
    plan: _Plan,
    replace: bool,
    mct_only: bool,
) -> dict[str, list[str]]:
    """Sibling group -> the ids of its runs that need a (new) row."""
    if mct_only:
        candidates: dict[str, list[str]] = {}
        for qid, mct in _mct_runs(questions, runs).items():
            candidates.setdefault(sibling_key(questions[qid]), []).append(mct)
    else:
        candidates = {k: ids for k, ids in plan.runs.items() if len(ids) > 1 or k in plan.alternates}
    if replace:
        return candidates
    # A stored row is current while it counts the same sibling runs and alternate runs.
    stored_ids, stored = store.feature_matrix(FEATURE_VERSION, ["n_runs", "n_alternate_runs"])
    counts = dict(zip(stored_ids, map(tuple, stored.tolist()), strict=True))
    out = {}
    for key, run_ids in candidates.items():
        now = (float(len(plan.runs[key])), float(sum(len(ids) for _, ids in plan.alternates.get(key, []))))
        stale = [r for r in run_ids if counts.get(r) != now]
        if stale:
            out[key] = stale
    return out


def _mct_runs(questions: dict[str, dict[str, Any]], runs: list[dict[str, Any]]) -> dict[str, str]:
    """Base question -> its MCT run by magv.mct's rule over the stored signatures (runs in run
    order: of the runs with the MCT's signature, the earliest)."""
    by_question: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        q = questions.get(r["question_id"])
        if q is not None and q["origin"] != "alternate" and r["status"] != "llm_error":
            by_question.setdefault(r["question_id"], []).append(r)
    out = {}
    for qid, usable in by_question.items():
        signature, _ = mct_signature((r["signature"], True) for r in usable)
        out[qid] = next(r["id"] for r in usable if r["signature"] == signature)
    return out
