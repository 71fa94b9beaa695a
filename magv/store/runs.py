"""`runs` (the responder's trajectories) and `mct` (each question's most common trajectory)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from magv.definitions import tool_error_count
from magv.models import Run, Trajectory, canonical_json, make_id, serialised_calls, text_hash
from magv.store.connection import Connection


class Runs(Connection):
    def add_runs(self, runs: Iterable[Run]) -> int:
        rows = []
        for r in runs:
            t = r.trajectory
            calls = t.canonical_calls()
            rows.append(
                {
                    "id": r.id,
                    "question_id": r.question_id,
                    "run_index": r.run_index,
                    "trajectory": t.model_dump_json(),
                    "status": t.status,
                    "signature": make_id(calls),
                    "n_steps": len(t.steps),
                    "n_tool_errors": tool_error_count(t),
                    "n_invalid": sum(1 for s in t.steps if s.kind == "invalid"),
                    "response": t.response,
                    "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens,
                    "latency_s": r.latency_s,
                    "created_at": r.created_at,
                    "tools": t.tool_names(),
                    "calls": calls,
                    "response_hash": text_hash(t.response or ""),
                    "calls_hash": text_hash(serialised_calls(calls)),
                    "agent": None if r.agent is None else canonical_json(r.agent),
                    "cost_usd": r.cost_usd,
                }
            )
        if not rows:
            return 0
        # A run that failed on the model (llm_error) is redone by a rerun and replaced; any
        # other stored run is final.
        updates = ", ".join(f'"{c}"=excluded."{c}"' for c in rows[0] if c != "id")
        return self._insert(
            "runs", rows, conflict=f"(id) DO UPDATE SET {updates} WHERE runs.status = 'llm_error'"
        )

    def runs(self, question_ids: Sequence[str] | None = None) -> list[Run]:
        sql = "SELECT * FROM runs"
        params: list[Any] = []
        if question_ids is not None:
            sql += " WHERE list_contains(?, question_id)"
            params.append(list(question_ids))
        sql += " ORDER BY question_id, run_index"
        return [_run(r) for r in self.query(sql, params)]

    def run_counts(self) -> dict[str, int]:
        rows = self.query("SELECT question_id, count(*) AS n FROM runs GROUP BY question_id")
        return {r["question_id"]: r["n"] for r in rows}

    def run_questions(self, run_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """run_id -> question_id, group_id, origin, domain of the run's question."""
        sql = (
            "SELECT r.id AS run_id, q.id AS question_id, q.group_id, q.origin, q.domain "
            "FROM runs r JOIN questions q ON q.id = r.question_id"
        )
        params: list[Any] = []
        if run_ids is not None:
            sql += " WHERE list_contains(?, r.id)"
            params.append(list(run_ids))
        return {r["run_id"]: r for r in self.query(sql, params)}

    def forget_verdicts(self, run_ids: Sequence[str]) -> None:
        """Drop what the verifier derived from these runs (features, gold labels, predictions), so
        its stages compute it again after the runs changed. Human and imported labels stay."""
        with self._lock, self.transaction():
            for table, only in (("features", ""), ("labels", " AND source = 'gold'"), ("predictions", "")):
                self.con.execute(f"DELETE FROM {table} WHERE list_contains(?, run_id){only}", [list(run_ids)])

    def replace_runs(self, runs: Sequence[Run]) -> int:
        """Replace stored runs by new content, in one transaction: their labels (every source:
        they judged the old content) and judge verdicts go, so do the features and predictions of
        every run of their questions (features compare a run with its siblings)."""
        ids = [r.id for r in runs]
        questions = sorted({r.question_id for r in runs})
        with self._lock, self.transaction():
            siblings = "SELECT id FROM runs WHERE list_contains(?, question_id)"
            for table in ("features", "predictions"):
                self.con.execute(f"DELETE FROM {table} WHERE run_id IN ({siblings})", [questions])
            for table in ("labels", "judge_verdicts"):
                self.con.execute(f"DELETE FROM {table} WHERE list_contains(?, run_id)", [ids])
            self.con.execute("DELETE FROM runs WHERE list_contains(?, id)", [ids])
            return self.add_runs(runs)

    def finished_run_indices(self) -> dict[str, set[int]]:
        """question_id -> run indices of its runs that did not fail on the model (those that did
        are to be redone)."""
        rows = self.query(
            "SELECT question_id, list(run_index) AS indices FROM runs WHERE status IS DISTINCT FROM 'llm_error' "
            "GROUP BY question_id"
        )
        return {r["question_id"]: set(r["indices"]) for r in rows}

    def set_mct(self, rows: Iterable[dict[str, Any]]) -> int:
        """rows: question_id, run_id, signature, share, n_runs, n_distinct. Newer wins."""
        return self._insert(
            "mct",
            list(rows),
            conflict="(question_id) DO UPDATE SET run_id=excluded.run_id, signature=excluded.signature, "
            "share=excluded.share, n_runs=excluded.n_runs, n_distinct=excluded.n_distinct",
        )

    def mct(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM mct ORDER BY question_id")

    def run_signatures(self) -> list[dict[str, Any]]:
        """id, question_id, status and signature ('' when none) of every run, by question and index."""
        return self.query(
            "SELECT id, question_id, status, coalesce(signature, '') AS signature FROM runs "
            "ORDER BY question_id, run_index"
        )

    def trajectories_json(self, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        """id and trajectory (JSON text, unparsed) of the given runs."""
        return self.query(
            "SELECT r.id, r.trajectory::VARCHAR AS trajectory FROM runs r "
            "JOIN (SELECT unnest(?::VARCHAR[]) AS id) w USING (id)",
            [list(run_ids)],
        )

    def largest_run_tokens(self) -> float:
        """The most prompt + completion tokens one stored run took (0 with none)."""
        return float(self.scalar("SELECT max(prompt_tokens + completion_tokens) FROM runs") or 0)

    def alternate_runs(self) -> list[tuple[str, Run]]:
        """(the question's parent question id, run) of every run of an alternate question."""
        rows = self.query(
            "SELECT q.parent_id, r.* FROM runs r JOIN questions q ON q.id = r.question_id "
            "WHERE q.origin = 'alternate' ORDER BY r.id"
        )
        return [(r["parent_id"], _run(r)) for r in rows]


def _run(r: dict[str, Any]) -> Run:
    return Run(
        id=r["id"],
        question_id=r["question_id"],
        run_index=r["run_index"],
        trajectory=Trajectory.model_validate_json(r["trajectory"]),
        prompt_tokens=r["prompt_tokens"] or 0,
        completion_tokens=r["completion_tokens"] or 0,
        latency_s=r["latency_s"] or 0.0,
        created_at=r["created_at"],
        agent=json.loads(r["agent"]) if r.get("agent") else None,
        cost_usd=r.get("cost_usd"),
    )
