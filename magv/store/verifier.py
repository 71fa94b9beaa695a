"""The verifier's tables: `verifier_models` (registered models), `cv_results` (cross-validation of
each candidate) and `predictions` (a model's score of each run)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from magv.models import Prediction, utcnow
from magv.store.connection import Connection, to_json


class VerifierTables(Connection):
    def add_verifier_model(self, row: dict[str, Any]) -> int:
        """row: id, name, path, feature_version, features (list), metrics (dict). A model id already
        registered keeps its row but takes the new metrics: its evaluation can change without the
        model (judge verdicts added since, an older magv's metrics)."""
        return self._insert(
            "verifier_models",
            [
                {
                    **row,
                    "features": to_json(row["features"]),
                    "metrics": to_json(row["metrics"]),
                    "created_at": utcnow(),
                }
            ],
            conflict="(id) DO UPDATE SET metrics = excluded.metrics",
        )

    def latest_verifier_model(self) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM verifier_models ORDER BY created_at DESC LIMIT 1")
        return rows[0] if rows else None

    def verifier_model(self, model_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM verifier_models WHERE id=?", [model_id])
        return rows[0] if rows else None

    def add_cv_results(self, training_id: str, results: dict[str, dict[str, Any]]) -> int:
        now = utcnow()
        rows = [
            {"training_id": training_id, "name": name, "metrics": to_json(m), "created_at": now}
            for name, m in results.items()
        ]
        # the same training again replaces the metrics (an older magv stored no out-of-fold predictions)
        return self._insert(
            "cv_results", rows, conflict="(training_id, name) DO UPDATE SET metrics = excluded.metrics"
        )

    def cv_results(self, training_id: str | None = None) -> list[dict[str, Any]]:
        if training_id is None:
            training_id = self.scalar("SELECT training_id FROM cv_results ORDER BY created_at DESC LIMIT 1")
        return self.query("SELECT * FROM cv_results WHERE training_id=? ORDER BY name", [training_id])

    def bulk_add_predictions(
        self,
        model_id: str,
        threshold: float,
        run_ids: Sequence[str],
        probabilities: Any,
        verdicts: Any,
        names: Sequence[str],
        top_index: Any,
        top_values: Any,
    ) -> int:
        """Predictions of one model, column-wise (numpy). Row i's contributions are the JSON object
        {names[top_index[i, j]]: top_values[i, j]} in order of j, written by DuckDB (a Python
        string per row cost more than the rest of scoring). Newer wins."""
        if len(run_ids) == 0:
            return 0
        top_index = np.asarray(top_index, dtype=np.int64).reshape(len(run_ids), -1)
        top_values = np.asarray(top_values, dtype=np.float64).reshape(top_index.shape)
        columns = {
            "run_id": np.asarray(list(run_ids), dtype=object),
            "probability": np.asarray(probabilities, dtype=np.float64),
            "verdict": np.asarray(verdicts, dtype=bool),
        }
        for j in range(top_index.shape[1]):
            columns[f"i{j}"] = top_index[:, j] + 1  # SQL lists count from 1
            columns[f"v{j}"] = np.ascontiguousarray(top_values[:, j])
        pairs = ", ".join(f"n.names[i{j}], v{j}" for j in range(top_index.shape[1]))
        contributions = f"json_object({pairs})" if pairs else "'{}'::JSON"
        with self._registered("predictions_new", columns):
            return self._insert_from(
                "predictions (run_id, model_id, probability, verdict, threshold, contributions, created_at)",
                f"SELECT run_id, ?, probability, verdict, ?, {contributions}, ? "
                "FROM predictions_new, (SELECT ?::VARCHAR[] AS names) n",
                [model_id, float(threshold), utcnow(), list(names)],
                "(run_id, model_id) DO UPDATE SET probability=excluded.probability, verdict=excluded.verdict, "
                "threshold=excluded.threshold, contributions=excluded.contributions, created_at=excluded.created_at",
            )

    def predictions(self, model_id: str | None = None) -> list[Prediction]:
        sql = "SELECT * FROM predictions"
        params: list[Any] = []
        if model_id:
            sql += " WHERE model_id=?"
            params.append(model_id)
        return [
            Prediction(**{**r, "contributions": json.loads(r["contributions"] or "{}")})
            for r in self.query(sql + " ORDER BY run_id", params)
        ]

    def scored_model_id(self) -> str | None:
        """The verifier model that scored most recently."""
        return self.scalar(
            "SELECT model_id FROM predictions GROUP BY model_id ORDER BY max(created_at) DESC LIMIT 1"
        )
