"""The service's worst case: two requests of about 100 KB whose runs share a group and call more
than 8 distinct tools (every sibling pair a graph edit distance too large to enumerate), sent at
once to `magv serve verifier`'s app with its default limits, while another client sends a small
request every half second.

Setup (not timed): a verifier trained on synthetic trajectories (tests/service_helpers.py), saved
to a temporary file; the app served by uvicorn on loopback in this process, scoring in its default
worker threads (one per CPU); embeddings from a hashing embedder (no model: GED is what is
measured).

Figures: seconds until each heavy request is answered, how many of its rows say
`"ged": "bounded"`, and the latency of the other client's requests meanwhile (max and median).
`--timeout` caps the wait (a code without the budget takes minutes).

    .venv/bin/python bench/service_worst_case.py [--runs 31 --timeout 900]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result  # noqa: E402


def main() -> None:
    import httpx

    from magv.config import load_settings
    from magv.service.app import create_app
    from magv.verify.scoring import load_scorer
    from tests.service_helpers import ServedApp, messages, train_model, worst_case
    from tests.verify_helpers import HashEmbedder

    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=31, help="runs per heavy request (31: about 100 KB)")
    p.add_argument("--timeout", type=float, default=900.0)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = train_model(Path(tmp) / "verifier.skops")
        scorer = load_scorer(load_settings(), model_file=model, embedder=HashEmbedder())
    heavy = [json.dumps(worst_case(args.runs, seed=s)).encode() for s in (11, 12)]
    small = {"messages": messages("where is my order 7?", ["find_customer", "get_order"])}
    answers: dict[int, dict] = {}
    other: list[float] = []
    done = threading.Event()

    with ServedApp(create_app(scorer)) as srv:

        def send(k: int) -> None:
            started = time.perf_counter()
            try:
                r = httpx.post(f"{srv.url}/v1/verify", content=heavy[k], timeout=args.timeout,
                               headers={"content-type": "application/json"})  # fmt: skip
                results = r.json().get("results", [])
                answers[k] = {"status": r.status_code, "seconds": time.perf_counter() - started,
                              "bounded": sum(x.get("ged") == "bounded" for x in results), "rows": len(results)}  # fmt: skip
            except httpx.TimeoutException:
                answers[k] = {"status": None, "seconds": f"> {args.timeout}"}

        def poll() -> None:
            while not done.is_set():
                started = time.perf_counter()
                try:
                    httpx.post(f"{srv.url}/v1/verify", json=small, timeout=args.timeout)
                except httpx.TimeoutException:
                    pass
                other.append(time.perf_counter() - started)
                done.wait(0.5)

        threads = [threading.Thread(target=send, args=(k,)) for k in (0, 1)]
        poller = threading.Thread(target=poll)
        for t in threads:
            t.start()
        time.sleep(0.2)
        poller.start()
        for t in threads:
            t.join()
        done.set()
        poller.join()

    out = {"request_bytes": [len(b) for b in heavy], "runs_per_request": args.runs, "heavy": answers,
           "other_client": {"requests": len(other), "max_s": max(other), "median_s": statistics.median(other)}}  # fmt: skip
    path = write_result("service_worst_case", out)
    print(json.dumps(out, indent=2, default=str))
    seconds = [a["seconds"] for a in answers.values()]
    print(f"FIGURES heavy_s={seconds} other_max_s={max(other):.3f} other_median_s={statistics.median(other):.3f} "
          f"({path})")  # fmt: skip


if __name__ == "__main__":
    main()
