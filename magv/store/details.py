"""One stored thing by its id and what hangs off it, as `magv show` reads them: ids by prefix,
a run, a question, an LLM call or a pipeline run, with their labels, predictions, verdicts,
feature rows, selection, MCT and alternates. Rows come back as stored (JSON columns as text)."""

from __future__ import annotations

from typing import Any

from magv.store.connection import Connection

# the tables whose `id` `magv show` looks up, in the order they are searched
ID_TABLES = ("questions", "runs", "llm_calls", "pipeline_runs")


class Details(Connection):
    def ids(self, table: str, ident: str, prefix: bool = False, limit: int = 5) -> list[str]:
        """The ids of `table` equal to `ident` (or, with `prefix`, that start with it; at most
        `limit`)."""
        if table not in ID_TABLES:
            raise ValueError(f"ids: {table!r} is not one of {', '.join(ID_TABLES)}")
        if not prefix:
            return [r["id"] for r in self.query(f"SELECT id FROM {table} WHERE id = ?", [ident])]
        rows = self.query(f"SELECT id FROM {table} WHERE starts_with(id, ?) LIMIT {int(limit)}", [ident])
        return [r["id"] for r in rows]

    def _one(self, sql: str, key: str) -> dict[str, Any] | None:
        rows = self.query(sql, [key])
        return rows[0] if rows else None

    def run_row(self, run_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM runs WHERE id = ?", run_id)

    def question_row(self, question_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM questions WHERE id = ?", question_id)

    def llm_call_row(self, call_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM llm_calls WHERE id = ?", call_id)

    def pipeline_run_row(self, run_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM pipeline_runs WHERE id = ?", run_id)

    def mct_of(self, question_id: str) -> dict[str, Any] | None:
        return self._one(
            "SELECT run_id, share, n_runs, n_distinct FROM mct WHERE question_id = ?", question_id
        )

    def selection_of(self, question_id: str) -> dict[str, Any] | None:
        return self._one("SELECT kept, reason, cluster FROM selections WHERE question_id = ?", question_id)

    def run_ids_of(self, question_id: str) -> list[str]:
        rows = self.query("SELECT id FROM runs WHERE question_id = ? ORDER BY run_index", [question_id])
        return [r["id"] for r in rows]

    def alternates_of(self, question_id: str) -> list[dict[str, Any]]:
        """The alternate questions of a question: id, text and how many runs each has."""
        return self.query(
            "SELECT q.id, q.text, (SELECT count(*) FROM runs r WHERE r.question_id = q.id) AS runs "
            "FROM questions q WHERE q.parent_id = ? ORDER BY q.id",
            [question_id],
        )

    def labels_of(self, run_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT source, correct, detail, created_at FROM labels WHERE run_id = ? ORDER BY created_at",
            [run_id],
        )

    def predictions_of(self, run_id: str) -> list[dict[str, Any]]:
        """Every model's prediction for the run, newest first."""
        return self.query("SELECT * FROM predictions WHERE run_id = ? ORDER BY created_at DESC", [run_id])

    def judge_verdicts_of(self, run_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT model, correct, reason, error FROM judge_verdicts WHERE run_id = ?", [run_id]
        )

    def feature_rows_of(self, run_id: str) -> list[dict[str, Any]]:
        return self.query('SELECT version, "values" FROM features WHERE run_id = ?', [run_id])
