"""`judge_verdicts`: the LLM-judge baseline's verdict on each run, per judge model."""

from __future__ import annotations

from collections.abc import Iterable

from magv.models import JudgeVerdict
from magv.store.connection import Connection


class JudgeVerdicts(Connection):
    def add_judge_verdicts(self, verdicts: Iterable[JudgeVerdict]) -> int:
        """A verdict replaces only a stored LLM failure (kept by versions before such failures
        stopped being stored): a real verdict, once stored, stays."""
        rows = [v.model_dump() for v in verdicts]
        cols = [c for c in (rows[0] if rows else {}) if c not in ("run_id", "model")]
        update = ", ".join(f'"{c}"=excluded."{c}"' for c in cols)
        return self._insert(
            "judge_verdicts",
            rows,
            conflict=f"(run_id, model) DO UPDATE SET {update} WHERE judge_verdicts.error LIKE 'LLM error:%'",
        )

    def judge_verdicts(self) -> list[JudgeVerdict]:
        return [JudgeVerdict(**r) for r in self.query("SELECT * FROM judge_verdicts ORDER BY run_id")]

    def judge_model_with_most_verdicts(self) -> str | None:
        return self.scalar("SELECT model FROM judge_verdicts GROUP BY model ORDER BY count(*) DESC LIMIT 1")

    def mean_verdict_tokens(self) -> float | None:
        """The mean prompt + completion tokens of the verdicts that did not fail on the LLM."""
        value = self.scalar(
            "SELECT avg(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)) FROM judge_verdicts "
            "WHERE error IS NULL OR error NOT LIKE 'LLM error:%'"
        )
        return None if value is None else float(value)
