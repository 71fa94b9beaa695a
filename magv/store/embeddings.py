"""`embeddings`: stored text vectors, keyed by embedding model and text hash, so no text is embedded
twice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from magv.models import utcnow
from magv.store.connection import Connection


class Embeddings(Connection):
    def embeddings(self, model: str, hashes: Sequence[str]) -> dict[str, Any]:
        """text hash -> stored float32 vector of `model`, for the hashes that are stored."""
        if not hashes:
            return {}
        with self._lock:
            # a join, not list_contains: that compares every stored row with every wanted hash
            res = self.con.execute(
                "SELECT e.text_hash, e.dim, e.vector FROM embeddings e "
                "JOIN (SELECT DISTINCT unnest(?::VARCHAR[]) AS text_hash) w USING (text_hash) WHERE e.model=?",
                [list(hashes), model],
            ).fetchall()
        return {h: np.frombuffer(v, dtype=np.float32, count=d) for h, d, v in res}

    def add_embeddings(self, model: str, hashes: Sequence[str], vectors: Any) -> int:
        """Keep float32 vectors (rows of a matrix) of texts by their hash; an existing one stays."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        first = list({h: i for i, h in reversed(list(enumerate(hashes)))}.values())  # one row per hash
        hashes, vectors = [hashes[i] for i in first], vectors[first]
        if len(hashes) == 0:
            return 0
        columns = {
            "text_hash": np.asarray(list(hashes), dtype=object),
            "vector": np.asarray([row.tobytes() for row in vectors], dtype=object),
        }
        with self._registered("embeddings_new", columns):
            return self._insert_from(
                "embeddings",
                "SELECT ?, text_hash, ?, vector::BLOB, ? FROM embeddings_new",
                [model, int(vectors.shape[1]), utcnow()],
            )

    def forget_embeddings(self, model: str | None = None) -> int:
        """Drop stored vectors (of one embedding key, or all); returns how many."""
        with self._lock, self.transaction():
            where, params = ("WHERE model = ?", [model]) if model else ("", [])
            return len(self.con.execute(f"DELETE FROM embeddings {where} RETURNING 1", params).fetchall())
