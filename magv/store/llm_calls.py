"""`llm_calls`: every model call (request, response, tokens, latency, error), also the replay cache."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from magv.models import LLMCall
from magv.store.connection import Connection, to_json


class LLMCalls(Connection):
    def add_llm_calls(self, calls: Iterable[LLMCall]) -> int:
        rows = [
            {
                "id": c.id,
                "key": c.key,
                "role": c.role,
                "model": c.model,
                "endpoint": c.endpoint,
                "template": c.template,
                "template_hash": c.template_hash,
                "request": to_json(c.request),
                "response": to_json(c.response),
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
                "latency_s": c.latency_s,
                "retries": c.retries,
                "error": c.error,
                "created_at": c.created_at,
            }
            for c in calls
        ]
        return self._insert("llm_calls", rows)

    def cached_response(self, key: str) -> dict[str, Any] | None:
        """The response of a finished, successful call with this replay key, if any."""
        with self._lock:
            row = self.con.execute(
                "SELECT response FROM llm_calls WHERE key=? AND error IS NULL AND response IS NOT NULL "
                "ORDER BY created_at LIMIT 1",
                [key],
            ).fetchone()
        return json.loads(row[0]) if row else None

    def replayable_keys(self) -> set[str]:
        """Replay keys that `cached_response` would answer: lets a caller skip the lookup of the
        (usual) key that was never called."""
        with self._lock:
            rows = self.con.execute(
                "SELECT DISTINCT key FROM llm_calls WHERE error IS NULL AND response IS NOT NULL"
            ).fetchall()
        return {r[0] for r in rows}

    def llm_calls(self, role: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM llm_calls"
        params: list[Any] = []
        if role:
            sql += " WHERE role=?"
            params.append(role)
        sql += " ORDER BY created_at DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self.query(sql, params)

    def llm_stats(self) -> list[dict[str, Any]]:
        return self.query(
            "SELECT role, model, count(*) AS calls, sum(prompt_tokens) AS prompt_tokens, "
            "sum(completion_tokens) AS completion_tokens, round(sum(latency_s), 3) AS latency_s, "
            "round(avg(latency_s), 3) AS mean_latency_s, sum(retries) AS retries, "
            "count(error) AS errors, sum(cached) AS cached_prompt_tokens, "
            "round(sum(cached) / nullif(sum(CASE WHEN cached IS NOT NULL THEN prompt_tokens END), 0), 3) "
            "AS prompt_cache_hit_rate FROM (SELECT *, TRY_CAST(json_extract(response, "
            "'$.usage.prompt_tokens_details.cached_tokens') AS BIGINT) AS cached FROM llm_calls) "
            "GROUP BY role, model ORDER BY role, model"
        )

    def llm_call_totals(self, since: Any) -> dict[str, int]:
        """Calls logged since a time (one pipeline run, as one process writes): how many, how many
        attempts were retried, how many failed after their retries."""
        row = self.query(
            "SELECT count(*) AS calls, coalesce(sum(retries), 0) AS retries, count(error) AS errors "
            "FROM llm_calls WHERE created_at >= ?",
            [since],
        )[0]
        return {k: int(v) for k, v in row.items()}

    def call_tokens(self, role: str, how: str = "max") -> float | None:
        """The `how` ("max" or "avg") of prompt + completion tokens over the role's successful
        calls; None when it logged none."""
        if how not in ("max", "avg"):
            raise ValueError(f"call_tokens: how={how!r}, expected 'max' or 'avg'")
        value = self.scalar(
            f"SELECT {how}(prompt_tokens + completion_tokens) FROM llm_calls WHERE role = ? AND error IS NULL",
            [role],
        )
        return None if value is None else float(value)

    def mean_call_cost(self, role: str) -> dict[str, Any] | None:
        """The mean `prompt_tokens` and `completion_tokens` of the role's logged calls (failed
        ones too), over `calls`; None when it logged none."""
        row = self.query(
            "SELECT avg(coalesce(prompt_tokens, 0)) AS p, avg(coalesce(completion_tokens, 0)) AS c, "
            "count(*) AS n FROM llm_calls WHERE role = ?",
            [role],
        )[0]
        if not row["n"]:
            return None
        return {
            "prompt_tokens": round(row["p"], 1),
            "completion_tokens": round(row["c"], 1),
            "calls": row["n"],
        }

    def mean_latencies(self) -> dict[str, float]:
        """Mean seconds of a successful call, by role, over the whole call log."""
        rows = self.query(
            "SELECT role, avg(latency_s) AS s FROM llm_calls WHERE error IS NULL AND latency_s > 0 GROUP BY role"
        )
        return {r["role"]: float(r["s"]) for r in rows if r["s"]}

    def call_templates(self) -> list[dict[str, Any]]:
        """Calls by role, model and prompt template (with its hash)."""
        return self.query(
            "SELECT role, model, template, template_hash, count(*) AS calls FROM llm_calls "
            "GROUP BY ALL ORDER BY role, model, template"
        )

    def logged_roles_models(self) -> list[dict[str, Any]]:
        """The distinct (role, model) pairs of the log."""
        return self.query("SELECT DISTINCT role, model FROM llm_calls")

    def find_calls(
        self,
        role: str | None = None,
        model: str | None = None,
        text: str | None = None,
        limit: int | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Logged calls, newest first, filtered by role, model, call ids and a text that the
        request, the response or the error contains (case-insensitive)."""
        where, params = [], []
        for column, value in (("role", role), ("model", model)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if text:
            where.append(
                "(CAST(request AS VARCHAR) ILIKE ? OR CAST(response AS VARCHAR) ILIKE ? OR error ILIKE ?)"
            )
            params += [f"%{text}%"] * 3
        if ids is not None:
            where.append("list_contains(?, id)")
            params.append(list(ids))
        sql = "SELECT * FROM llm_calls" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, id" + (f" LIMIT {int(limit)}" if limit else "")
        return self.query(sql, params)
