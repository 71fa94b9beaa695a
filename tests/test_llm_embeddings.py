"""Embedder: local all-MiniLM-L6-v2 (slow: loads the model) and an /v1/embeddings endpoint."""

from __future__ import annotations

import numpy as np
import pytest

from magv.config import Settings
from magv.errors import BadInput, RunFailed
from magv.llm import Embedder
from tests.fakellm import FakeLLMServer


@pytest.mark.slow
def test_local_embedder_gives_normalised_vectors_that_rank_similar_sentences_higher():
    embedder = Embedder(Settings())
    v = embedder.embed([
        "Where is my package? It has not arrived yet.",
        "My parcel still hasn't been delivered.",
        "The quarterly tax filing deadline is in April.",
    ])  # fmt: skip
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    similar, unrelated = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert similar > unrelated + 0.2
    assert Embedder(Settings()).embed([]).shape == (0, 384)


@pytest.mark.slow
def test_local_model_is_loaded_once_per_process():
    from magv.llm import embeddings

    Embedder(Settings()).embed(["warm up"])
    model = embeddings._MODELS["all-MiniLM-L6-v2"]
    Embedder(Settings()).embed(["again"])
    assert embeddings._MODELS["all-MiniLM-L6-v2"] is model


def test_endpoint_embedder_batches_and_normalises():
    with FakeLLMServer(embedding_dim=12) as srv:
        s = Settings()
        s.embeddings.backend = "endpoint"
        s.embeddings.endpoint = srv.base_url
        s.embeddings.batch_size = 2
        texts = ["a", "b", "c", "a"]
        v = Embedder(s).embed(texts)
    assert v.shape == (4, 12) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    assert np.allclose(v[0], v[3]) and not np.allclose(v[0], v[1])
    assert srv.counts["embeddings"] == 2  # two batches of two


def test_endpoint_backend_needs_an_endpoint():
    s = Settings()
    s.embeddings.backend = "endpoint"
    with pytest.raises(BadInput, match="embeddings.endpoint"):
        Embedder(s)


def test_unknown_local_model_is_bad_input(tmp_path):
    s = Settings()
    s.embeddings.model = str(tmp_path / "no-such-model")
    with pytest.raises(BadInput, match="embeddings.model"):
        Embedder(s).embed(["x"])


def test_endpoint_embedder_retries_server_errors_then_names_the_endpoint():
    with FakeLLMServer(embedding_dim=8, embedding_failures=2) as srv:
        s = Settings()
        s.embeddings.backend = "endpoint"
        s.embeddings.endpoint = srv.base_url
        s.llm.retries = 2
        v = Embedder(s).embed(["x", "y"])
        assert v.shape == (2, 8) and srv.counts["embeddings"] == 3  # two 500s, then the answer
    with FakeLLMServer(embedding_failures=10) as srv:
        s = Settings()
        s.embeddings.backend = "endpoint"
        s.embeddings.endpoint = srv.base_url
        s.llm.retries = 1
        with pytest.raises(
            RunFailed, match=r"embeddings endpoint http://127\.0\.0\.1:\d+/v1: HTTP 500.*2 attempts"
        ):
            Embedder(s).embed(["x"])
