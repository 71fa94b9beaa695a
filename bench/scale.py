"""How the verifier's cost grows with the number of trajectories: features and training for 1k,
10k and 100k synthetic verified trajectories, measured in one run. No LLM.

The trajectories are bench/_synthetic.py's, written into a real DuckDB store (one file per size):
what the pipeline makes for a base question (R = 3 runs, k = 3 alternates with a run each, a third
of the verified trajectories wrong, gold labels). Features: the real stage,
`magv.verify.features.compute_features` (as `magv verify features --replace`), twice: a row for
every run with siblings (3 per question) and `--mct-only` (one per question, the paper's reading),
with a hash embedder in place of the sentence model (SS needs vectors, not meaning; the model's
cost is the embedding server's, see docs/performance.md) that is not cached, so every text is
embedded each time.

Training: grouped 5-fold CV plus the calibrated refit, per model, as `magv verify train` does.
Models that grow faster than linearly (SVM, k-NN) are skipped at a size where their time, projected
from the smaller sizes, would pass --budget seconds; the projection is printed.

    .venv/bin/python bench/scale.py [--sizes 1000,10000,100000 --budget 150]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result  # noqa: E402
from _synthetic import K, R, fill_store  # noqa: E402

from magv.store import Store  # noqa: E402
from magv.verify import features as F  # noqa: E402
from magv.verify.models import MODEL_NAMES, Verifier, cross_validate_models  # noqa: E402


class HashEmbedder:
    """Deterministic 64-d vectors from a hash of the text: equal texts, equal vectors."""

    def embed(self, texts) -> np.ndarray:
        raw = b"".join(hashlib.blake2b(t.encode(), digest_size=64).digest() for t in texts)
        v = np.frombuffer(raw, dtype=np.uint8).reshape(len(texts), 64).astype(np.float32) - 127.5
        return v / np.linalg.norm(v, axis=1, keepdims=True)


# -- measuring -----------------------------------------------------------------------------------


def time_features(store: Store, n: int, mct_only: bool) -> float:
    t0 = time.perf_counter()
    written = F.compute_features(store, HashEmbedder(), replace=True, mct_only=mct_only)
    elapsed = time.perf_counter() - t0
    if written != (n if mct_only else n * R):
        raise SystemExit(f"{written} feature rows for {n} questions (mct_only={mct_only})")
    return elapsed


def matrix(store: Store, data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labelled rows (the verified trajectories')."""
    run_ids, X = store.feature_matrix(F.FEATURE_VERSION, F.FEATURE_NAMES)
    keep = [i for i, r in enumerate(run_ids) if r in data["truth"]]
    y = np.array([data["truth"][run_ids[i]] for i in keep])
    groups = np.array([data["group"][run_ids[i]] for i in keep])
    return X[keep], y, groups


def time_training(name: str, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    t0 = time.perf_counter()
    cv = cross_validate_models(X, y, groups, folds=5, seed=0, names=[name])
    Verifier(name, 0, calibrate=True).fit(X, y, groups=groups)
    return time.perf_counter() - t0, cv[name]["roc_auc"]


def exponent(n1: int, t1: float, n2: int, t2: float) -> float:
    return math.log(t2 / t1) / math.log(n2 / n1) if t1 > 0 and t2 > 0 else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument(
        "--budget", type=float, default=150.0, help="skip a model whose projected training time passes this"
    )
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"features: compute_features on synthetic stores (R={R}, k={K}, hash embeddings), every run and MCT only; "
          "training: 5-fold grouped CV + calibrated refit per model", flush=True)  # fmt: skip
    tmp = tempfile.TemporaryDirectory(prefix="magv-scale-")
    warm = Store(Path(tmp.name) / "warm.duckdb")  # imports and first-call costs are not growth
    warm_data = fill_store(warm, 200, seed=1)
    time_features(warm, 200, mct_only=False)
    for name in MODEL_NAMES:
        time_training(name, *matrix(warm, warm_data))
    warm.close()
    rows: list[dict[str, Any]] = []
    for n in sizes:
        store = Store(Path(tmp.name) / f"n{n}.duckdb")
        t0 = time.perf_counter()
        data = fill_store(store, n)
        synth = time.perf_counter() - t0
        row: dict[str, Any] = {"n": n, "synthesis_s": synth, "features_mct_only_s": time_features(store, n, True),
                               "features_s": time_features(store, n, False)}  # fmt: skip
        X, y, groups = matrix(store, data)
        store.close()
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
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{n:>7} questions: features of {n * R} runs {row['features_s']:.1f} s = "
              f"{row['features_s'] / (n * R) * 1e6:.0f} us each, of the {n} MCTs only {row['features_mct_only_s']:.1f} s; "
              f"training {trains}"
              + (f"; skipped {skipped}" if skipped else "") + f" [writing the store {synth:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB]",
              flush=True)  # fmt: skip
    growth = _growth(rows)
    for key, value in growth.items():
        print(f"growth exponent {key}: {value:.2f} (1 = linear)")
    path = write_result("scale", {"settings": vars(args), "rows": rows, "growth_exponents": growth})
    print(f"results written to {path.relative_to(path.parents[2])}")
    feats = ", ".join(f"{r['n'] // 1000}k {r['features_s']:.1f} s (MCT only {r['features_mct_only_s']:.1f} s)"
                      for r in rows)  # fmt: skip
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
