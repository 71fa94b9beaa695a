"""`labels`: every label of a run, one per source (gold, import, human); which one wins is
`magv.definitions.effective_labels`."""

from __future__ import annotations

from collections.abc import Iterable

from magv import definitions
from magv.models import Label
from magv.store.connection import Connection


class Labels(Connection):
    def add_labels(self, labels: Iterable[Label]) -> int:
        """A newer label of the same source replaces the older; other sources are kept."""
        rows = [
            {
                "run_id": lb.run_id,
                "source": lb.source,
                "correct": lb.correct,
                "detail": lb.detail,
                "created_at": lb.created_at,
            }
            for lb in labels
        ]
        return self._insert(
            "labels",
            rows,
            conflict="(run_id, source) DO UPDATE SET correct=excluded.correct, detail=excluded.detail, "
            "created_at=excluded.created_at",
        )

    def labels(self) -> list[Label]:
        return [Label(**r) for r in self.query("SELECT * FROM labels ORDER BY run_id, source")]

    def effective_labels(self) -> dict[str, Label]:
        """run_id -> the label that wins (`magv.definitions.effective_labels`)."""
        return definitions.effective_labels(self.labels())

    def labelled_run_statuses(self) -> dict[str, int]:
        """How the labelled runs ended (`ok`, `max_steps`, `llm_error`, ...): the count of each."""
        rows = self.query(
            "SELECT r.status, count(DISTINCT r.id) AS n FROM runs r JOIN labels l ON l.run_id = r.id "
            "GROUP BY r.status"
        )
        return {str(r["status"]): int(r["n"]) for r in rows}
