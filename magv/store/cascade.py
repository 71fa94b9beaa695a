"""`cascade_decisions`: the step of `magv verify cascade` that decided each trajectory, its verdict
and the LLM cost spent on it. A row of the human queue has no verdict (`correct` NULL)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from magv.models import utcnow
from magv.store.connection import Connection, to_json

COLUMNS = (
    "run_id",
    "question_id",
    "step",
    "correct",
    "confidence",
    "probability",
    "detail",
    "prompt_tokens",
    "completion_tokens",
    "calls",
    "costs",
    "cascade_id",
)


class CascadeDecisions(Connection):
    def add_cascade_decisions(self, rows: Iterable[dict[str, Any]]) -> int:
        """A decision with a verdict, once stored, stays (a rerun does not redo it); a row of the
        human queue is replaced by a later decision."""
        now = utcnow()
        rows = [
            {**{c: r.get(c) for c in COLUMNS}, "costs": to_json(r.get("costs") or {}), "created_at": now}
            for r in rows
        ]
        update = ", ".join(f'"{c}"=excluded."{c}"' for c in (*COLUMNS[1:], "created_at"))
        return self._insert(
            "cascade_decisions",
            rows,
            conflict=f"(run_id) DO UPDATE SET {update} WHERE cascade_decisions.correct IS NULL",
        )

    def cascade_decisions(self) -> list[dict[str, Any]]:
        return [
            {**r, "costs": json.loads(r["costs"]) if isinstance(r["costs"], str) else (r["costs"] or {})}
            for r in self.query("SELECT * FROM cascade_decisions ORDER BY run_id")
        ]

    def human_queue(self) -> list[dict[str, Any]]:
        """Trajectories the cascade left to a human, most uncertain first (no probability last)."""
        return self.query(
            "SELECT * FROM cascade_decisions WHERE correct IS NULL ORDER BY confidence NULLS LAST, run_id"
        )
