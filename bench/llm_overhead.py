"""How much the LLM layer costs on top of the model server, measured in one run.

1. Fake server (a subprocess with fixed latency L): N calls through LLMClient with concurrency C
   take N*L/C ideally; prints measured/ideal (target <= 1.10) and the client's own CPU time per
   call. The same N requests sent with bare httpx show what the fake server and the machine cost
   by themselves (the floor).
2. Embedded model: completion tokens/s through the layer (LLMClient -> llama.cpp server
   subprocess) vs a direct llama_cpp.Llama call on the same GGUF, same chat format, same prompts
   (target >= 0.90).

Writes bench/results/llm_overhead.json; the figures are the last line.
    .venv/bin/python bench/llm_overhead.py [--n 400 --concurrency 8 --latency 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from magv.config import LlamaSettings, Settings  # noqa: E402
from magv.llm import LLMClient  # noqa: E402

RESULTS = REPO / "bench" / "results" / "llm_overhead.json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_health(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


# -- 1. fake server ------------------------------------------------------------------------------


async def _through_layer(base_url: str, n: int, concurrency: int) -> tuple[float, float]:
    settings = Settings()
    settings.llm.concurrency_per_endpoint = concurrency
    settings.llm.retries = 0
    async with LLMClient(settings, endpoints=[base_url]) as client:
        warm = await asyncio.gather(*(client.chat("bench", [{"role": "user", "content": "warm"}])
                                      for _ in range(concurrency)))  # fmt: skip
        assert all(r.ok for r in warm), warm[0].error
        t0, c0 = time.perf_counter(), time.process_time()
        results = await asyncio.gather(
            *(client.chat("bench", [{"role": "user", "content": f"question {i}"}]) for i in range(n))
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} calls failed: {failed[0]}")
    return wall, cpu


async def _bare_httpx(base_url: str, n: int, concurrency: int) -> tuple[float, float]:
    import openai  # noqa: F401  (imports httpx2, the HTTP stack the layer uses)

    try:
        import httpx2 as http
    except ImportError:
        http = httpx
    slots = asyncio.Semaphore(concurrency)
    limits = http.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with http.AsyncClient(limits=limits, timeout=30) as client:

        async def one(i: int) -> None:
            async with slots:
                body = {"model": "m", "messages": [{"role": "user", "content": f"question {i}"}]}
                r = await client.post(f"{base_url}/chat/completions", json=body)
                r.raise_for_status()
                r.json()

        await asyncio.gather(*(one(i) for i in range(concurrency)))
        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0, time.process_time() - c0


def fake_overhead(n: int, concurrency: int, latency: float, reps: int) -> dict:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakellm", "--port", str(port), "--latency", str(latency)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_health(f"http://127.0.0.1:{port}/health", proc)
        ideal = n * latency / concurrency
        layer, bare = [], []
        for _ in range(reps):  # interleaved, so load from elsewhere hits both alike
            layer.append(asyncio.run(_through_layer(base, n, concurrency)))
            bare.append(asyncio.run(_bare_httpx(base, n, concurrency)))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    layer_walls = [w for w, _ in layer]
    bare_walls = [w for w, _ in bare]
    return {
        "n": n, "concurrency": concurrency, "latency_s": latency, "reps": reps, "ideal_s": ideal,
        "layer_wall_s": layer_walls, "bare_httpx_wall_s": bare_walls,
        "ratio": statistics.median(layer_walls) / ideal,
        "bare_httpx_ratio": statistics.median(bare_walls) / ideal,
        "client_cpu_ms_per_call": statistics.median(c for _, c in layer) / n * 1000,
        "bare_httpx_cpu_ms_per_call": statistics.median(c for _, c in bare) / n * 1000,
    }  # fmt: skip


# -- 2. embedded model ---------------------------------------------------------------------------

SYSTEM = ("You are a support agent for an online shop. Tools: get_order(order_id), refund(order_id, reason), "
          "track_parcel(tracking_id). Answer briefly and politely.")  # fmt: skip
QUESTIONS = ["Where is my order 4411?", "I want a refund for order 98, it came broken.",
             "How long does shipping to Lisbon take?", "Can I change the address of order 1203?"]  # fmt: skip


def embedded_throughput(prompts: int, max_tokens: int, reps: int) -> dict:
    from llama_cpp import Llama

    from magv.llm.llama_serve import register_gemma_format
    from magv.llm.servers import LlamaServer, embedded_model, llama_threads

    work = Path(tempfile.mkdtemp(prefix="magv-bench-"))
    settings = Settings(database=work / "magv.duckdb", llama=LlamaSettings(port=free_port(), n_ctx=4096))
    settings.llm.timeout_s = 600
    server = LlamaServer(settings, log_path=work / "llama-server.log")
    server.start()
    register_gemma_format()
    # Same GGUF, context, chat format and thread defaults as the server (logits_all is off in both).
    model = embedded_model(settings.llama)
    threads = llama_threads(settings.llama)
    direct = Llama(model_path=str(model.path), n_ctx=settings.llama.n_ctx, chat_format=model.chat_format,
                   n_threads=threads, n_threads_batch=threads, verbose=False)  # fmt: skip
    rows = []

    async def through_layer(client: LLMClient, messages: list[dict]) -> tuple[int, float]:
        t0 = time.perf_counter()
        r = await client.chat("bench", messages, temperature=0.0, max_tokens=max_tokens, seed=0)
        if not r.ok:
            raise SystemExit(f"layer call failed: {r.error}")
        return r.completion_tokens, time.perf_counter() - t0

    async def run_all() -> None:
        async with LLMClient(settings, endpoints=[server.url]) as client:
            warm = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}]
            await through_layer(client, warm)
            direct.create_chat_completion(warm, max_tokens=8, temperature=0.0, seed=0)
            for rep in range(reps):
                for q in QUESTIONS[:prompts]:
                    # a fresh question each time: neither side gets a whole prompt from a cache
                    messages = [{"role": "system", "content": SYSTEM},
                                {"role": "user", "content": f"(ticket {rep}-{len(rows)}) {q}"}]  # fmt: skip
                    t0 = time.perf_counter()
                    d = direct.create_chat_completion(
                        messages, max_tokens=max_tokens, temperature=0.0, seed=0
                    )
                    d_time = time.perf_counter() - t0
                    l_tokens, l_time = await through_layer(client, messages)
                    rows.append({"direct_tokens": d["usage"]["completion_tokens"], "direct_s": d_time,
                                 "layer_tokens": l_tokens, "layer_s": l_time})  # fmt: skip

    try:
        asyncio.run(run_all())
    finally:
        server.stop()
        direct.close()
    direct_tps = sum(r["direct_tokens"] for r in rows) / sum(r["direct_s"] for r in rows)
    layer_tps = sum(r["layer_tokens"] for r in rows) / sum(r["layer_s"] for r in rows)
    return {
        "calls_each": len(rows), "max_tokens": max_tokens, "rows": rows,
        "same_completions": all(r["direct_tokens"] == r["layer_tokens"] for r in rows),
        "direct_tokens_per_s": direct_tps, "layer_tokens_per_s": layer_tps, "ratio": layer_tps / direct_tps,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=400, help="calls against the fake server")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--latency", type=float, default=0.1, help="fake server latency L in seconds")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--prompts", type=int, default=4, help="prompts per rep for the embedded model")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--skip-embedded", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    fake = fake_overhead(args.n, args.concurrency, args.latency, args.reps)
    print(f"fake server: N={fake['n']} L={fake['latency_s']}s C={fake['concurrency']} ideal={fake['ideal_s']:.2f}s "
          f"layer walls={[round(w, 3) for w in fake['layer_wall_s']]} -> measured/ideal {fake['ratio']:.3f}; "
          f"bare httpx {fake['bare_httpx_ratio']:.3f}; client CPU {fake['client_cpu_ms_per_call']:.2f} ms/call "
          f"(bare httpx {fake['bare_httpx_cpu_ms_per_call']:.2f})")  # fmt: skip
    result = {"fake": fake, "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}}
    if not args.skip_embedded:
        emb = embedded_throughput(args.prompts, args.max_tokens, args.reps)
        result["embedded"] = emb
        print(f"embedded model: {emb['calls_each']} calls each, direct {emb['direct_tokens_per_s']:.1f} tok/s, "
              f"through the layer {emb['layer_tokens_per_s']:.1f} tok/s -> ratio {emb['ratio']:.3f} "
              f"(same completions: {emb['same_completions']})")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    figures = (f"FIGURES fake measured/ideal={fake['ratio']:.3f} (target <= 1.10), "
               f"client CPU={fake['client_cpu_ms_per_call']:.2f} ms/call")  # fmt: skip
    if "embedded" in result:
        figures += f", layer/direct tokens/s={result['embedded']['ratio']:.3f} (target >= 0.90)"
    print(f"results written to {RESULTS.relative_to(REPO)}")
    print(figures)


if __name__ == "__main__":
    main()
