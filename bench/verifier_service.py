"""`magv serve verifier` over HTTP against the same scoring path in-process, measured in one run.

Setup (not timed): a verifier trained on the real features of synthetic trajectories
(tests/service_helpers.py), saved to a temporary file; N requests, each one production trajectory
in OpenAI chat messages with two sibling runs (a third of the questions' runs disagree and fail);
the fake OpenAI-compatible server (bench/_common.py, its own process) answering the embeddings of
both sides at once.

Timed, at 1, 8 and 64 concurrent clients:

* HTTP: `magv serve verifier --model-file ...` in its own process, N POST /v1/verify requests from
  an asyncio httpx client keeping C requests in flight (client and service share the machine's
  cores);
* in-process: the same N request bodies through the service's own path without HTTP
  (`parse_request` then `score_entries`), from C threads.

Figures: verdicts per second and p50 / p99 latency of each, and HTTP / in-process throughput.
For scale, the same client against an HTTP server whose handler only reads the body and answers a
fixed verdict (its own process): what the HTTP round trip and the client alone cost here.

    .venv/bin/python bench/verifier_service.py [--requests 1500 --clients 1,8,64 --model xgboost]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BIN, REPO, fake_llm, free_port, quiet_env, write_result  # noqa: E402


def bodies(n: int, seed: int = 7) -> list[bytes]:
    from tests.service_helpers import example

    rng = random.Random(seed)
    out = []
    for i in range(n):
        _, runs = example(rng, 10_000 + i, i % 3 != 0)
        out.append(json.dumps({"id": f"r{i}", "messages": runs[0], "siblings": runs[1:]}).encode())
    return out


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"requests": len(latencies), "wall_s": wall, "verdicts_per_s": len(latencies) / wall,
            "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * q[98]}  # fmt: skip


async def over_http(url: str, payloads: list[bytes], clients: int) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    todo = iter(payloads)
    # One client (one keep-alive connection) per simulated caller: httpx's shared connection pool
    # costs more CPU per request the more requests wait on it, which at 64 would measure the pool.
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    callers = [httpx.AsyncClient(limits=one, timeout=120) for _ in range(clients)]

    async def worker(client: httpx.AsyncClient) -> None:
        for body in todo:
            t0 = time.perf_counter()
            r = await client.post(url, content=body, headers={"content-type": "application/json"})
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise SystemExit(f"service answered {r.status_code}: {r.text[:500]}")

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in callers))
        return summary(latencies, time.perf_counter() - started)
    finally:
        for c in callers:
            await c.aclose()


def in_process(scorer: Any, payloads: list[bytes], clients: int) -> dict[str, float]:
    from magv.service.app import score_entries
    from magv.service.payload import parse_request

    def one(body: bytes) -> float:
        t0 = time.perf_counter()
        entries, _ = parse_request(body, 256)
        score_entries(scorer, entries)
        return time.perf_counter() - t0

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, payloads))
    return summary(latencies, time.perf_counter() - started)


def serve_noop(port: int) -> None:
    """An HTTP server that reads the body and answers a fixed verdict: what HTTP itself costs."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def verify(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"verdict": "correct", "probability": 1.0, "threshold": 0.5, "reasons": []})

    app = Starlette(routes=[Route("/v1/verify", verify, methods=["POST"]), Route("/health", verify)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_service(cmd: list[str], env: dict[str, str], work: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    cmd = [*cmd, "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise SystemExit(
                f"magv serve verifier exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1/verify"
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{cmd[1]} did not start within 120 s")
        time.sleep(0.2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=1500, help="requests per concurrency level and side")
    p.add_argument("--clients", default="1,8,64", help="concurrency levels")
    p.add_argument("--model", default="xgboost")
    args = p.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from magv.config import load_settings
    from magv.verify.scoring import load_scorer
    from tests.service_helpers import train_model

    payloads = bodies(args.requests)
    with tempfile.TemporaryDirectory() as tmp, fake_llm(0.0) as base_url:
        work = Path(tmp)
        model_file = train_model(work / "verifier.skops", model=args.model, n=60)
        env = quiet_env(MAGV_EMBEDDINGS__BACKEND="endpoint", MAGV_EMBEDDINGS__ENDPOINT=base_url)
        os.environ.update({k: v for k, v in env.items() if k.startswith("MAGV_")})
        scorer = load_scorer(load_settings(), model_file=model_file)
        serve = [str(BIN / "magv"), "serve", "verifier", "--model-file", str(model_file)]
        noop = [sys.executable, str(Path(__file__).resolve()), "noop"]
        (proc, url), (noop_proc, noop_url) = start_service(serve, env, work), start_service(noop, env, work)
        try:
            asyncio.run(over_http(url, payloads[:20], 4))  # warm-up: connections, first-call costs
            in_process(scorer, payloads[:20], 4)
            results = {}
            for c in levels:
                http = asyncio.run(over_http(url, payloads, c))
                local = in_process(scorer, payloads, c)
                empty = asyncio.run(over_http(noop_url, payloads, c))
                results[c] = {"http": http, "in_process": local, "http_empty_handler": empty,
                              "ratio": http["verdicts_per_s"] / local["verdicts_per_s"]}  # fmt: skip
        finally:
            for p in (proc, noop_proc):
                p.terminate()
                p.wait(timeout=20)
    for c, r in results.items():
        h, i = r["http"], r["in_process"]
        print(f"{c:>3} clients: HTTP {h['verdicts_per_s']:.0f} verdicts/s (p50 {h['p50_ms']:.1f} ms, p99 "
              f"{h['p99_ms']:.1f} ms); in-process {i['verdicts_per_s']:.0f} verdicts/s (p50 {i['p50_ms']:.1f} ms, "
              f"p99 {i['p99_ms']:.1f} ms); HTTP / in-process {r['ratio']:.2f}; HTTP alone (empty handler) "
              f"{r['http_empty_handler']['verdicts_per_s']:.0f} requests/s")  # fmt: skip
    path = write_result("verifier_service", {"settings": vars(args), "levels": results})
    print(f"results written to {path.relative_to(path.parents[2])}")
    print("FIGURES verifier service verdicts/s HTTP vs in-process (p50/p99 ms): " + "; ".join(
        f"{c} clients {r['http']['verdicts_per_s']:.0f} vs {r['in_process']['verdicts_per_s']:.0f} = "
        f"{r['ratio']:.2f}x ({r['http']['p50_ms']:.1f}/{r['http']['p99_ms']:.1f} vs "
        f"{r['in_process']['p50_ms']:.1f}/{r['in_process']['p99_ms']:.1f})" for c, r in results.items()))  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["noop"]:
        serve_noop(int(sys.argv[sys.argv.index("--port") + 1]))
    else:
        main()
