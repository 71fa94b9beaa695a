"""Python's `re` against RE2 (google-re2) for grounded-id patterns (magv/llm/grounding.py), measured in
one run: the catastrophic pattern `^(a+)+$` on n a's and a '!' (re's time grows about 2.5x a
character; RE2's is linear), and the ordinary workload, the retail id patterns over tool results.

    python bench/grounding_patterns.py
"""

from __future__ import annotations

import json
import random
import re
import time

import re2

from magv.domains.retail.tools import TRACKING_NUMBER

CATASTROPHIC = r"^(a+)+$"
RETAIL = [r"\bC\d{5}\b", r"\bW\d{7}\b", r"\bpm_\d{5}\b", r"\bW\d{7}-\d+\b", r"\bP\d{4}\b", TRACKING_NUMBER]


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def _all_matches(compiled: list, texts: list[str]) -> list[str]:
    return [m.group(0) for c in compiled for s in texts for m in c.finditer(s)]


def main() -> None:
    for n in (18, 20, 22, 24):
        text = "a" * n + "!"
        print(f"re  {CATASTROPHIC} n={n}: {_timed(re.compile(CATASTROPHIC).search, text):.4f} s")
    for n in (40, 100_000):
        text = "a" * n + "!"
        print(f"re2 {CATASTROPHIC} n={n}: {_timed(re2.compile(CATASTROPHIC).search, text):.6f} s")
    rng = random.Random(0)
    texts = [json.dumps({"order_id": f"W{rng.randint(1000000, 9999999)}", "customer": f"C{rng.randint(10000, 99999)}",
                         "items": [{"item_id": f"W{rng.randint(1000000, 9999999)}-{i}", "name": "x" * 40}
                                   for i in range(10)]}) for _ in range(2000)]  # fmt: skip
    best = {}
    for name, engine in (("re", re), ("re2", re2)):
        compiled = [engine.compile(p) for p in RETAIL]
        best[name] = min(_timed(_all_matches, compiled, texts) for _ in range(5))
        print(f"{name} retail patterns over {len(texts)} tool results ({sum(map(len, texts)):,} chars): "
              f"{best[name] * 1000:.1f} ms (best of 5)")  # fmt: skip
    print(f"FIGURES re2_over_re_ordinary={best['re2'] / best['re']:.2f}")


if __name__ == "__main__":
    main()
