"""How the verifier's cost grows with the number of trajectories: features and training for 1k,
10k and 100k synthetic verified trajectories, measured in one run. No LLM, no database.

Each synthetic case is what the pipeline makes for one base question: a question from one of 22
families (the seed trajectories), R = 3 responder runs (the MCT is the verified trajectory), k = 3
alternate questions with one run each. A third of the verified trajectories are wrong (a call
dropped or the wrong tool), and alternates tend to follow the family's gold trajectory, so wrong
ones disagree with their alternates: the features carry the signal the paper relies on.

Features: the real stage, `magv.verify.features.compute_features`, over an in-memory store with the
methods it uses, and a hash embedder in place of the sentence model (SS needs vectors, not
meaning; the model's cost is the embedding server's, see docs/performance.md). One change, said in
the output: graph edit distance is memoised by the pair of tool-name sequences, the only thing it
depends on (tool_graph is built from tool names); without it GED is ~2/3 of the time and 100k
takes ~15 min on 2 cores. `--no-memo` measures the unmemoised cost too.

Training: grouped 5-fold CV plus the calibrated refit, per model, as `magv verify train` does.
Models that grow faster than linearly (SVM, k-NN) are skipped at a size where their time, projected
from the smaller sizes, would pass --budget seconds; the projection is printed.

    .venv/bin/python bench/scale.py [--sizes 1000,10000,100000 --budget 150]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import resource
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result  # noqa: E402

from magv.models import Features, Question, Run, ToolCall, Trajectory, make_id  # noqa: E402
from magv.verify import features as F  # noqa: E402
from magv.verify.models import MODEL_NAMES, Verifier, cross_validate_models  # noqa: E402

TOOLS = ["find_customer", "get_customer", "list_orders", "get_order", "track_shipment", "search_products",
         "get_product", "cancel_order", "return_items", "exchange_items", "update_address", "refund"]  # fmt: skip
FAMILIES = 22
R, K = 3, 3


# -- synthetic data ------------------------------------------------------------------------------


def _family_gold(rng: random.Random) -> list[str]:
    return [rng.choice(TOOLS) for _ in range(rng.randint(1, 5))]


def _calls(names: list[str], i: int) -> list[ToolCall]:
    return [ToolCall(name=n, arguments={"id": f"W{i % 997}", "n": j}) for j, n in enumerate(names)]


def _corrupt(names: list[str], rng: random.Random) -> list[str]:
    if len(names) > 1 and rng.random() < 0.5:
        return names[:-1]
    return names[:-1] + [rng.choice([t for t in TOOLS if t != names[-1]])]


class SyntheticStore:
    """The store methods compute_features uses, over lists in memory."""

    def __init__(self, n: int, seed: int = 0):
        rng = random.Random(seed)
        golds = [_family_gold(rng) for _ in range(FAMILIES)]
        self._questions: list[Question] = []
        self._runs: dict[str, tuple[list[list[str]], int]] = {}
        self._mct: list[dict[str, Any]] = []
        self.truth: dict[str, int] = {}
        self.group: dict[str, str] = {}
        self.written: list[Features] = []
        for i in range(n):
            fam = i % FAMILIES
            gold = golds[fam]
            correct = rng.random() >= 1 / 3
            verified = gold if correct else _corrupt(gold, rng)
            q = self._question(i, None, f"question {i} of family {fam} about order W{i % 997}", fam)
            runs = [verified if r == 0 or rng.random() < 0.8 else _corrupt(verified, rng) for r in range(R)]
            self._add_runs(q, runs, i)
            self._mct.append({"question_id": q.id, "run_id": Run.derive_id(q.id, 0), "share": None})
            self.truth[Run.derive_id(q.id, 0)] = int(correct)
            self.group[Run.derive_id(q.id, 0)] = f"f{fam}"
            for a in range(K):
                alt = self._question(i, q.id, f"alternate {a} of question {i} family {fam}", fam)
                follows_gold = rng.random() < (0.85 if correct else 0.7)
                self._add_runs(alt, [gold if follows_gold else _corrupt(gold, rng)], i)

    def _question(self, i: int, parent: str | None, text: str, fam: int) -> Question:
        q = Question(id=make_id("q", text), domain="synthetic", text=text,
                     origin="alternate" if parent else "investigator", parent_id=parent,
                     seed_id=f"f{fam}", group_id=f"f{fam}")  # fmt: skip
        self._questions.append(q)
        return q

    def _add_runs(self, q: Question, names_per_run: list[list[str]], i: int) -> None:
        self._runs[q.id] = (names_per_run, i)  # Run objects are made when read, as a store parses rows

    def _make_runs(self, qid: str) -> list[Run]:
        names_per_run, i = self._runs[qid]
        return [
            Run(id=Run.derive_id(qid, r), question_id=qid, run_index=r,
                trajectory=Trajectory.from_calls(_calls(names, i), response=f"done: {' '.join(names)} for W{i % 997}"))
            for r, names in enumerate(names_per_run)
        ]  # fmt: skip

    # -- what compute_features calls --
    def questions(self) -> list[Question]:
        return self._questions

    def mct(self) -> list[dict[str, Any]]:
        return self._mct

    def features(self, version: str | None = None) -> list[Features]:
        return []

    def runs(self, question_ids: list[str] | None = None) -> list[Run]:
        return [r for qid in question_ids or [] if qid in self._runs for r in self._make_runs(qid)]

    def bulk_add_features(self, rows: list[Features], replace: bool = False) -> int:
        self.written.extend(rows)
        return len(rows)


class HashEmbedder:
    """Deterministic 64-d vectors from a hash of the text: equal texts, equal vectors."""

    def embed(self, texts) -> np.ndarray:
        raw = b"".join(hashlib.blake2b(t.encode(), digest_size=64).digest() for t in texts)
        v = np.frombuffer(raw, dtype=np.uint8).reshape(len(texts), 64).astype(np.float32) - 127.5
        return v / np.linalg.norm(v, axis=1, keepdims=True)


_ged = F.graph_edit_distance


@cache
def _ged_by_names(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[float, bool]:
    return _ged(Trajectory.from_calls([ToolCall(name=n) for n in a]),
                Trajectory.from_calls([ToolCall(name=n) for n in b]))  # fmt: skip


def _memo_ged(a: Trajectory, b: Trajectory, **kwargs: Any) -> tuple[float, bool]:
    return _ged_by_names(tuple(a.tool_names()), tuple(b.tool_names()))


# -- measuring -----------------------------------------------------------------------------------


def time_features(store: SyntheticStore, memo: bool) -> float:
    F.graph_edit_distance = _memo_ged if memo else _ged
    _ged_by_names.cache_clear()
    try:
        t0 = time.perf_counter()
        n = F.compute_features(store, HashEmbedder(), chunk_size=1024)
        elapsed = time.perf_counter() - t0
    finally:
        F.graph_edit_distance = _ged
    if n != len(store.truth):
        raise SystemExit(f"{n} feature rows for {len(store.truth)} verified trajectories")
    return elapsed


def matrix(store: SyntheticStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = store.written[-len(store.truth) :]
    X = np.array([[r.values[name] for name in F.FEATURE_NAMES] for r in rows], dtype=np.float64)
    y = np.array([store.truth[r.run_id] for r in rows])
    groups = np.array([store.group[r.run_id] for r in rows])
    return X, y, groups


def time_training(name: str, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    t0 = time.perf_counter()
    cv = cross_validate_models(X, y, groups, folds=5, seed=0, names=[name])
    Verifier(name, 0).fit(X, y, groups=groups, calibrate=True)
    return time.perf_counter() - t0, cv[name]["roc_auc"]


def exponent(n1: int, t1: float, n2: int, t2: float) -> float:
    return math.log(t2 / t1) / math.log(n2 / n1) if t1 > 0 and t2 > 0 else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument(
        "--budget", type=float, default=150.0, help="skip a model whose projected training time passes this"
    )
    p.add_argument(
        "--no-memo", action="store_true", help="also time features without the GED memo (1k and 10k)"
    )
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"features: compute_features on synthetic stores (R={R}, k={K}, hash embeddings, GED memoised by "
          "tool-name sequences); training: 5-fold grouped CV + calibrated refit per model", flush=True)  # fmt: skip
    warm = SyntheticStore(200, seed=1)  # imports and first-call costs are not growth
    time_features(warm, memo=True)
    for name in MODEL_NAMES:
        time_training(name, *matrix(warm))
    rows: list[dict[str, Any]] = []
    for n in sizes:
        t0 = time.perf_counter()
        store = SyntheticStore(n)
        synth = time.perf_counter() - t0
        row: dict[str, Any] = {"n": n, "synthesis_s": synth, "features_s": time_features(store, memo=True)}
        if args.no_memo and n <= 10_000:
            row["features_unmemoised_s"] = time_features(store, memo=False)
        X, y, groups = matrix(store)
        row["positives"] = int(y.sum())
        row["train_s"], row["roc_auc"], row["skipped"] = {}, {}, {}
        for name in MODEL_NAMES:
            projected = _projected(rows, name, n)
            if projected is not None and projected > args.budget:
                row["skipped"][name] = projected
                continue
            row["train_s"][name], row["roc_auc"][name] = time_training(name, X, y, groups)
        rows.append(row)
        trains = ", ".join(f"{k} {v:.1f} s" for k, v in row["train_s"].items())
        skipped = ", ".join(f"{k} (projected {v:.0f} s)" for k, v in row["skipped"].items())
        unmemo = (
            f" (unmemoised {row['features_unmemoised_s']:.1f} s)" if "features_unmemoised_s" in row else ""
        )
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{n:>7} trajectories: features {row['features_s']:.1f} s{unmemo} = "
              f"{row['features_s'] / n * 1e6:.0f} us each; training {trains}"
              + (f"; skipped {skipped}" if skipped else "") + f" [synthesis {synth:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB]",
              flush=True)  # fmt: skip
    growth = _growth(rows)
    for key, value in growth.items():
        print(f"growth exponent {key}: {value:.2f} (1 = linear)")
    path = write_result("scale", {"settings": vars(args), "rows": rows, "growth_exponents": growth})
    print(f"results written to {path.relative_to(path.parents[2])}")
    feats = ", ".join(f"{r['n'] // 1000}k {r['features_s']:.1f} s" for r in rows)
    xgb = ", ".join(
        f"{r['n'] // 1000}k {r['train_s']['xgboost']:.1f} s" for r in rows if "xgboost" in r["train_s"]
    )
    print(
        f"FIGURES features {feats} (growth exponent {growth.get('features', float('nan')):.2f}); "
        f"xgboost training {xgb} (exponent {growth.get('train xgboost', float('nan')):.2f})"
    )


def _projected(rows: list[dict[str, Any]], name: str, n: int) -> float | None:
    done = [(r["n"], r["train_s"][name]) for r in rows if name in r["train_s"]]
    if len(done) < 2:  # one point is mostly fixed costs: no projection from it
        return None
    (n1, t1), (n2, t2) = done[-2:]
    # SVM's fit and k-NN's predictions grow with the square of the rows, whatever small sizes show
    k = max(2.0 if name in ("svm", "knn") else 1.0, exponent(n1, t1, n2, t2))
    return t2 * (n / n2) ** k


def _growth(rows: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    if len(rows) < 2:
        return out
    a, b = rows[-2], rows[-1]
    out["features"] = exponent(a["n"], a["features_s"], b["n"], b["features_s"])
    for name in MODEL_NAMES:
        done = [r for r in rows if name in r["train_s"]]
        if len(done) >= 2:
            out[f"train {name}"] = exponent(done[-2]["n"], done[-2]["train_s"][name], done[-1]["n"],
                                            done[-1]["train_s"][name])  # fmt: skip
    return out


if __name__ == "__main__":
    main()
