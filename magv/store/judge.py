"""`judge_verdicts`: the LLM-judge baseline's verdict on each run, per judge model."""

from __future__ import annotations

from collections.abc import Iterable

from magv.models import JudgeVerdict
from magv.store.connection import Connection


class JudgeVerdicts(Connection):
    def add_judge_verdicts(self, verdicts: Iterable[JudgeVerdict]) -> int:
        return self._insert("judge_verdicts", [v.model_dump() for v in verdicts])

    def judge_verdicts(self) -> list[JudgeVerdict]:
        return [JudgeVerdict(**r) for r in self.query("SELECT * FROM judge_verdicts ORDER BY run_id")]
