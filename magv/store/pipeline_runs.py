"""`pipeline_runs`: one row per `magv run` / flow, its settings, stage reports and outcome."""

from __future__ import annotations

from typing import Any

from magv.models import utcnow
from magv.store.connection import Connection, to_json


class PipelineRuns(Connection):
    def start_pipeline_run(self, run_id: str, domain: str, settings: dict[str, Any]) -> None:
        self._insert(
            "pipeline_runs",
            [
                {
                    "id": run_id,
                    "domain": domain,
                    "started_at": utcnow(),
                    "finished_at": None,
                    "status": "running",
                    "settings": to_json(settings),
                    "stages": "{}",
                    "summary": "{}",
                }
            ],
        )

    def finish_pipeline_run(
        self, run_id: str, status: str, stages: dict[str, Any], summary: dict[str, Any]
    ) -> None:
        with self._lock:
            self.con.execute(
                "UPDATE pipeline_runs SET finished_at=?, status=?, stages=?, summary=? WHERE id=?",
                [utcnow(), status, to_json(stages), to_json(summary), run_id],
            )

    def pipeline_runs(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM pipeline_runs ORDER BY started_at")

    def mark_abandoned_runs(self) -> int:
        """Runs still 'running' when a writer opens the file were killed (the file lock admits one
        writer, so nobody else is running them): say so instead of leaving them running forever."""
        rows = self.query("UPDATE pipeline_runs SET status='abandoned' WHERE status='running' RETURNING id")
        return len(rows)
