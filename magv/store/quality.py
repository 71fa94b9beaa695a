"""`question_checks`: the rule checks of each generated question (magv/quality.py), why it failed
and what a rule repaired."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from magv.models import utcnow
from magv.store.connection import Connection, to_json

COLUMNS = (
    "question_id",
    "version",
    "passed",
    "answerable",
    "voice",
    "identifiers",
    "reasons",
    "repair",
    "original",
)

# An alternate whose checks failed: the responder does not answer it and the verifier's features
# leave it out (its runs would compare a trajectory with another request's).
FAILED_ALTERNATE = "origin = 'alternate' AND id IN (SELECT question_id FROM question_checks WHERE NOT passed)"


class QuestionChecks(Connection):
    def add_question_checks(self, rows: Iterable[dict[str, Any]]) -> int:
        """Rows of `QualityCheck.as_row`; a question checked again (a newer version) is replaced."""
        now = utcnow()
        rows = [
            {**{c: r.get(c) for c in COLUMNS}, "reasons": to_json(r.get("reasons") or []), "created_at": now}
            for r in rows
        ]
        update = ", ".join(f'"{c}"=excluded."{c}"' for c in (*COLUMNS[1:], "created_at"))
        return self._insert("question_checks", rows, conflict=f"(question_id) DO UPDATE SET {update}")

    def question_checks(self, domain: str | None = None) -> list[dict[str, Any]]:
        """Each checked question with its text, origin, target seed, base question and whether
        selection kept it (None: not selected, as alternates)."""
        sql = (
            "SELECT c.*, q.text, q.origin, q.domain, q.seed_id, q.parent_id, s.kept "
            "FROM question_checks c JOIN questions q ON q.id = c.question_id "
            "LEFT JOIN selections s ON s.question_id = q.id"
        )
        params: list[Any] = []
        if domain:
            sql += " WHERE q.domain = ?"
            params.append(domain)
        rows = self.query(sql + " ORDER BY q.origin, q.created_at, q.id", params)
        for r in rows:
            r["reasons"] = json.loads(r["reasons"]) if isinstance(r["reasons"], str) else (r["reasons"] or [])
        return rows

    def mct_steps_by_question(self, domain: str | None = None) -> list[dict[str, Any]]:
        """origin, target, meta and the MCT's steps (JSON text) of every question with an MCT."""
        where, params = ("WHERE q.domain = ?", [domain]) if domain else ("", [])
        return self.query(
            "SELECT q.origin, q.target, q.meta, json_extract(r.trajectory, '$.steps') AS steps FROM questions q "
            f"JOIN mct m ON m.question_id = q.id JOIN runs r ON r.id = m.run_id {where}",
            params,
        )

    def selections_with_questions(self, domain: str | None = None) -> list[dict[str, Any]]:
        """Each selection decision (kept, reason) with its question's origin, seed and target."""
        where, params = ("WHERE q.domain = ?", [domain]) if domain else ("", [])
        return self.query(
            "SELECT s.kept, s.reason, q.origin, q.seed_id, q.target FROM selections s "
            f"JOIN questions q ON q.id = s.question_id {where}",
            params,
        )
