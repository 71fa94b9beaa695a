"""Helpers for the scoring-in-production tests and benchmark: OpenAI-message trajectories and a
verifier trained on their real features (saved to a temporary file, never committed)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from magv.messages import messages_to_trajectory
from magv.verify import FEATURE_NAMES, FEATURE_VERSION, TrajectoryFeaturizer, Verifier
from magv.verify.models import save_model
from tests.verify_helpers import TOOLS, HashEmbedder


def messages(
    question: str, names: list[str], failed: bool = False, response: str = "All done."
) -> list[dict]:
    """An OpenAI chat-completions trajectory: one assistant tool call per name, each with its tool
    message (the last one an error when `failed`), then the final reply."""
    out: list[dict[str, Any]] = [{"role": "user", "content": question}]
    for i, name in enumerate(names):
        out.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": json.dumps({"order_id": i})}}]})  # fmt: skip
        error = failed and i == len(names) - 1
        out.append({"role": "tool", "tool_call_id": f"c{i}",
                    "content": json.dumps({"error": "order not found"} if error else {"ok": True, "i": i})})  # fmt: skip
    out.append({"role": "assistant", "content": response})
    return out


def example(rng: random.Random, i: int, good: bool) -> tuple[str, list[list[dict]]]:
    """(question, three runs): a good question's runs agree and succeed; a bad one's scatter and fail."""
    names = rng.sample(TOOLS[:4], rng.randint(1, 3))
    question = f"customer question {i}: please check order {i}"
    runs = []
    for r in range(3):
        these = list(names) if good or r == 0 else rng.sample(TOOLS, rng.randint(1, 4))
        runs.append(messages(question, these, failed=not good, response="Done." if good else "Sorry."))
    return question, runs


def train_model(path: Path, model: str = "logreg", n: int = 40, seed: int = 0) -> Path:
    """A verifier trained on the real features of `n` synthetic questions of three runs each."""
    rng = random.Random(seed)
    trajectories, groups, labels, questions = [], [], [], {}
    for i in range(n):
        good = i % 2 == 0
        question, runs = example(rng, i, good)
        questions[i] = question
        for m in runs:
            trajectories.append(messages_to_trajectory(m)[0])
            groups.append(i)
            labels.append(int(good))
    X = TrajectoryFeaturizer(HashEmbedder()).transform(trajectories, groups, questions=questions)
    v = Verifier(model, random_state=seed).fit(X, np.asarray(labels), groups=groups)
    return save_model(path, v, FEATURE_NAMES, FEATURE_VERSION, model_id="test-model", name=model)


def import_lines(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """Import-format lines (docs/export.md) of `n` questions with three runs each, half good."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        _, runs = example(rng, 1000 + i, i % 2 == 0)
        out += [{"question_id": f"p{i}", "run": r, "messages": m} for r, m in enumerate(runs)]
    return out


def worst_case(n: int, seed: int = 0) -> dict[str, Any]:
    """A request of one group of n runs, each calling 9 to 12 of 14 tools in its own order and
    three of them again: graphs too large for exact graph edit distance, every pair distinct (the
    load that kept every scoring worker busy for minutes before GED was budgeted)."""
    rng = random.Random(seed)
    tools = [f"tool_{k}" for k in range(14)]
    items = []
    for i in range(n):
        names = rng.sample(tools, rng.randint(9, 12))
        names += rng.sample(names, 3)
        items.append({"id": f"t{i}", "group": "g", "messages": messages("where is my order 7?", names)})
    return {"trajectories": items}


class ServedApp:
    """An ASGI app served by uvicorn on a free loopback port in a thread, for tests over real HTTP."""

    def __init__(self, app: Any):
        import socket

        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error", access_log=False, lifespan="off"))

    def __enter__(self) -> ServedApp:
        import asyncio
        import threading
        import time

        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self._sock])), daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
