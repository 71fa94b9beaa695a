"""`eval_results`: `magv eval`'s per-question results of each configuration."""

from __future__ import annotations

from typing import Any

from magv.models import utcnow
from magv.store.connection import Connection, to_json


class EvalResults(Connection):
    def add_eval_results(self, eval_id: str, config: str, rows: dict[str, dict[str, Any]]) -> int:
        now = utcnow()
        return self._insert(
            "eval_results",
            [
                {
                    "eval_id": eval_id,
                    "config": config,
                    "question_id": q,
                    "results": to_json(r),
                    "created_at": now,
                }
                for q, r in rows.items()
            ],
        )
