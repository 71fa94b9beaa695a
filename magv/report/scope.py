"""What every report section shares: the store limited to one pipeline run (`Scope`), the result
container (`ReportData`) and the small value helpers. Sections import from here, never from each
other, so `metrics` can call every section without an import cycle."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from magv.errors import BadInput
from magv.models import canonical_json, utcnow
from magv.store import Store


@dataclass
class ReportData:
    metrics: dict[str, Any]
    series: dict[str, Any] = field(default_factory=dict)


class Scope:
    """Reads tables of one store, limited to one pipeline run's time window when given."""

    def __init__(self, store: Store, pipeline_run_id: str | None = None):
        self.store = store
        self.pipeline_runs = store.pipeline_runs()
        self.window: tuple[datetime, datetime] | None = None
        if pipeline_run_id is not None:
            run = next((r for r in self.pipeline_runs if r["id"] == pipeline_run_id), None)
            if run is None:
                known = ", ".join(r["id"] for r in self.pipeline_runs) or "none"
                raise BadInput(f"{store.path}: no pipeline run {pipeline_run_id!r} (known: {known})")
            self.run = run
            self.window = (run["started_at"], run["finished_at"] or utcnow())
        else:
            self.run = self.pipeline_runs[-1] if self.pipeline_runs else None

    def rows(self, table: str, columns: list[str] | None = None) -> list[dict[str, Any]]:
        return self.store.report_rows(table, columns, self.window)


def loads(value: Any, default: Any = None) -> Any:
    if value is None:
        return default
    return json.loads(value) if isinstance(value, str) else value


def rounded(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


def mean(values: list[float]) -> float | None:
    return rounded(sum(values) / len(values)) if values else None


def call_text(call: dict[str, Any]) -> str:
    return f"{call['name']}({canonical_json(call.get('arguments', {}))})"
