"""`questions`, `generations` (one row per investigator or reverse-engineer attempt) and
`selections` (what the filter kept and why)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from magv.models import Question, ToolCall, text_hash, utcnow
from magv.store.connection import Connection
from magv.store.quality import FAILED_ALTERNATE, to_json


class Questions(Connection):
    def add_questions(self, questions: Iterable[Question]) -> int:
        now = utcnow()
        rows = [
            {
                "id": q.id,
                "domain": q.domain,
                "text": q.text,
                "origin": q.origin,
                "parent_id": q.parent_id,
                "seed_id": q.seed_id,
                "example_seed_id": q.example_seed_id,
                "target": to_json([c.model_dump() for c in q.target] if q.target is not None else None),
                "group_id": q.group_id,
                "status": q.status,
                "meta": to_json(q.meta),
                "created_at": now,
                "text_hash": text_hash(q.text),
            }
            for q in questions
        ]
        return self._insert("questions", rows)

    def update_question(self, q: Question) -> None:
        """Overwrite a stored question's text, meta and link (origin, parent, group): an import adding
        runs or replacing them."""
        with self._lock, self.transaction():
            self.con.execute(
                "UPDATE questions SET text=?, meta=?, text_hash=?, origin=?, parent_id=?, group_id=? WHERE id=?",
                [q.text, to_json(q.meta), text_hash(q.text), q.origin, q.parent_id, q.group_id, q.id],
            )

    def set_question_status(self, question_id: str, status: str) -> None:
        with self._lock:
            self.con.execute("UPDATE questions SET status=? WHERE id=?", [status, question_id])

    def questions(
        self,
        domain: str | None = None,
        origin: str | Sequence[str] | None = None,
        kept_only: bool = False,
        ids: Sequence[str] | None = None,
        passing_only: bool = False,
    ) -> list[Question]:
        """`passing_only`: without the questions whose rule checks failed (magv/quality.py); a
        question never checked (a seed, an import) passes."""
        sql = "SELECT q.* FROM questions q"
        where, params = [], []
        if kept_only:
            sql += " JOIN selections s ON s.question_id = q.id AND s.kept"
        if passing_only:
            where.append("q.id NOT IN (SELECT question_id FROM question_checks WHERE NOT passed)")
        if domain:
            where.append("q.domain = ?")
            params.append(domain)
        if origin:
            origins = [origin] if isinstance(origin, str) else list(origin)
            where.append(f"q.origin IN ({', '.join('?' for _ in origins)})")
            params.extend(origins)
        if ids is not None:
            where.append("list_contains(?, q.id)")
            params.append(list(ids))
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY q.created_at, q.id"
        return [_question(r) for r in self.query(sql, params)]

    def question_heads(self, passing_alternates_only: bool = False) -> list[dict[str, Any]]:
        """id, domain, text, origin, parent_id, group_id and the write tools an import named
        (`meta.import.write_tools`, JSON text) of every question, by id; with
        `passing_alternates_only`, without the alternates whose checks failed (magv.quality)."""
        where = f" WHERE NOT ({FAILED_ALTERNATE})" if passing_alternates_only else ""
        return self.query(
            "SELECT id, domain, text, origin, parent_id, group_id, "
            "json_extract(meta, '$.import.write_tools')::VARCHAR AS write_tools "
            f"FROM questions{where} ORDER BY id"
        )

    def add_generation(
        self,
        gen_id: str,
        kind: str,
        domain: str,
        seed_id: str,
        example_seed_id: str | None,
        status: str,
        error: str | None,
        n_questions: int,
    ) -> int:
        """One LLM generation attempt: kind investigator (seed_id = target seed) or reverse
        (seed_id = base question id)."""
        return self._insert(
            "generations",
            [
                {
                    "id": gen_id,
                    "kind": kind,
                    "domain": domain,
                    "seed_id": seed_id,
                    "example_seed_id": example_seed_id,
                    "status": status,
                    "error": error,
                    "n_questions": n_questions,
                    "created_at": utcnow(),
                }
            ],
            conflict="(id) DO UPDATE SET status=excluded.status, error=excluded.error, "
            "n_questions=excluded.n_questions",
        )

    def generations(self, domain: str | None = None) -> list[dict[str, Any]]:
        if domain:
            return self.query("SELECT * FROM generations WHERE domain=? ORDER BY id", [domain])
        return self.query("SELECT * FROM generations ORDER BY id")

    def add_selections(self, rows: Iterable[dict[str, Any]]) -> int:
        """rows: question_id, kept, reason, cluster, x, y."""
        now = utcnow()
        return self._insert("selections", [{**r, "created_at": now} for r in rows])

    def selections(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM selections ORDER BY question_id")


def _question(r: dict[str, Any]) -> Question:
    target = json.loads(r["target"]) if r["target"] else None
    return Question(
        id=r["id"],
        domain=r["domain"],
        text=r["text"],
        origin=r["origin"],
        parent_id=r["parent_id"],
        seed_id=r["seed_id"],
        example_seed_id=r["example_seed_id"],
        target=[ToolCall(**c) for c in target] if target is not None else None,
        group_id=r["group_id"],
        status=r["status"] or "new",
        meta=json.loads(r["meta"] or "{}"),
    )
