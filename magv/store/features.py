"""`features`: one row of feature values per run and feature version, written and read as a
matrix by the features stage (the feature definitions are in magv/verify/features.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from magv.models import Features, utcnow
from magv.store.connection import Connection


class FeatureRows(Connection):
    def features(self, version: str | None = None) -> list[Features]:
        sql = 'SELECT run_id, version, "values" FROM features'
        params: list[Any] = []
        if version:
            sql += " WHERE version=?"
            params.append(version)
        sql += " ORDER BY run_id"
        return [
            Features(run_id=r["run_id"], version=r["version"], values=json.loads(r["values"]))
            for r in self.query(sql, params)
        ]

    def write_feature_matrix(self, version: str, run_ids: Sequence[str], names: Sequence[str], X: Any) -> int:
        """Feature rows (one JSON object per row of X, keys `names`) replacing stored ones of the
        same run and version; DuckDB writes the JSON (~10x faster than json.dumps per row)."""
        _check_feature_names(names)
        X = np.asarray(X, dtype=np.float64)
        if len(run_ids) == 0:
            return 0
        columns = {"run_id": np.asarray(list(run_ids), dtype=object)}
        columns.update({f"c{i}": np.ascontiguousarray(X[:, i]) for i in range(len(names))})
        fields = ", ".join(f'"{n}" := c{i}' for i, n in enumerate(names))
        with self._registered("features_new", columns), self.transaction():
            self.con.execute(
                f"INSERT INTO features SELECT run_id, ?, to_json(struct_pack({fields})), ? "
                "FROM features_new ON CONFLICT (run_id, version) DO UPDATE "
                'SET "values"=excluded."values", created_at=excluded.created_at',
                [version, utcnow()],
            )
        return len(run_ids)

    def feature_matrix(self, version: str, names: Sequence[str]) -> tuple[list[str], Any]:
        """(run_ids, float matrix with one column per name) of every feature row of a version.
        DuckDB parses each JSON row once into a struct (50x faster than a json.loads loop); a
        feature a row lacks is NaN."""
        _check_feature_names(names)
        struct = "{" + ", ".join(f'"{n}": "DOUBLE"' for n in names) + "}"
        cols = ", ".join(f"coalesce(s.\"{n}\", 'NaN'::DOUBLE) AS c{i}" for i, n in enumerate(names))
        if names:
            sql = (
                f"SELECT run_id, {cols} FROM (SELECT run_id, from_json(\"values\", '{struct}') AS s "
                "FROM features WHERE version=?) ORDER BY run_id"
            )
        else:  # which runs have a row (a model that reads no feature, the text model alone)
            sql = "SELECT run_id FROM features WHERE version=? ORDER BY run_id"
        with self._lock:
            res = self.con.execute(sql, [version]).fetchnumpy()
        run_ids = [str(r) for r in res["run_id"]]
        X = np.empty((len(run_ids), len(names)), dtype=np.float64)
        for i in range(len(names)):
            X[:, i] = np.asarray(res[f"c{i}"], dtype=np.float64)
        return run_ids, X


def _check_feature_names(names: Sequence[str]) -> None:
    """Feature names go into SQL as identifiers."""
    if not all(re.fullmatch(r"[A-Za-z0-9_]+", n) for n in names):
        raise ValueError("feature names must be letters, digits and _")
