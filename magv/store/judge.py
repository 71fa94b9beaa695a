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
            "judge_verdicts", rows,
            conflict=f"(run_id, model) DO UPDATE SET {update} WHERE judge_verdicts.error LIKE 'LLM error:%'",
        )  # fmt: skip

    def judge_verdicts(self) -> list[JudgeVerdict]:
        return [JudgeVerdict(**r) for r in self.query("SELECT * FROM judge_verdicts ORDER BY run_id")]
