"""Reads for the report and the export: rows of a table in a time window, one row per run with
everything known about it, and Parquet written by DuckDB."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from magv import definitions
from magv.store.labels import Labels
from magv.store.schema import TABLES


class ReportRows(Labels):
    def report_rows(
        self, table: str, columns: Sequence[str] | None = None, window: tuple[Any, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Rows of one table for the report. `window` (start, end) keeps rows created in that time;
        mct rows follow their run, and pipeline_runs are never filtered."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        cols = ", ".join(f'"{c}"' for c in columns) if columns else "*"
        sql, params = f"SELECT {cols} FROM {table}", []
        if window is not None and table != "pipeline_runs":
            if table == "mct":
                sql += " WHERE run_id IN (SELECT id FROM runs WHERE created_at BETWEEN ? AND ?)"
            else:
                sql += " WHERE created_at BETWEEN ? AND ?"
            params = [window[0], window[1]]
        return self.query(sql, params)

    def runs_with_verdicts(
        self,
        model_id: str | None = None,
        verified_only: bool = False,
        min_score: float | None = None,
        alternates: bool = False,
    ) -> list[dict[str, Any]]:
        """Every run of a non-alternate question with its question, MCT mark, effective label
        (`label`, `label_source`), the score of verifier `model_id` and the latest judge verdict
        (`judge_correct`, `judge_model` and its tokens `judge_prompt_tokens`, `judge_completion_tokens`).
        With `alternates`, also the runs of alternates whose base question is stored, each with its
        base's `parent_meta` (base questions have None). `verified_only` keeps the runs that
        `magv.definitions.is_verified` accepts."""
        where = [
            "(q.origin <> 'alternate' OR pq.id IS NOT NULL)" if alternates else "q.origin <> 'alternate'"
        ]
        params: list[Any] = [model_id]
        if min_score is not None:
            where.append("p.probability >= ?")
            params.append(min_score)
        sql = f"""
            WITH judge AS (
                SELECT run_id, model, correct, prompt_tokens, completion_tokens FROM judge_verdicts QUALIFY row_number() OVER (
                    PARTITION BY run_id ORDER BY created_at DESC) = 1)
            SELECT r.id AS run_id, r.question_id, r.run_index, r.trajectory, r.status, r.n_steps,
                r.n_tool_errors, r.n_invalid, r.response, r.prompt_tokens, r.completion_tokens,
                r.latency_s, q.text AS question, q.domain, q.origin, q.parent_id, q.seed_id,
                q.group_id, q.target, q.meta AS question_meta, coalesce(m.run_id = r.id, false) AS is_mct,
                m.share AS mct_share, p.probability AS score, p.verdict, p.threshold, p.model_id,
                judge.correct AS judge_correct, judge.model AS judge_model,
                judge.prompt_tokens AS judge_prompt_tokens, judge.completion_tokens AS judge_completion_tokens,
                CASE WHEN q.origin = 'alternate' THEN pq.meta END AS parent_meta
            FROM runs r JOIN questions q ON q.id = r.question_id
            LEFT JOIN questions pq ON pq.id = q.parent_id
            LEFT JOIN mct m ON m.question_id = r.question_id
            LEFT JOIN predictions p ON p.run_id = r.id AND p.model_id = ?
            LEFT JOIN judge ON judge.run_id = r.id
            WHERE {" AND ".join(where)}
            ORDER BY q.created_at, q.id, r.run_index"""
        labels = self.effective_labels()
        out = []
        for row in self.query(sql, params):
            label = labels.get(row["run_id"])
            row["label"] = None if label is None else label.correct
            row["label_source"] = None if label is None else label.source
            if verified_only and not definitions.is_verified(row["label"], row["score"], row["threshold"]):
                continue
            out.append(row)
        return out

    def write_parquet(self, source_jsonl: str | Path, dest: str | Path, columns: dict[str, str]) -> int:
        """Convert newline-delimited JSON with the given DuckDB column types into a Parquet file;
        returns the row count. Works on a read-only store (nothing is written to the database)."""
        spec = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items()) + "}"
        names = ", ".join(f'"{name}"' for name in columns)
        src, out = str(source_jsonl).replace("'", "''"), str(dest).replace("'", "''")
        with self._lock:
            self.con.execute(
                f"COPY (SELECT {names} FROM read_json('{src}', format='newline_delimited', "
                f"columns={spec})) TO '{out}' (FORMAT parquet)"
            )
            return self.con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
