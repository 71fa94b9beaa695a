"""Built-in domain `logs`: investigating a customer's machine data (events, alerts, incidents)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from magv.domains.base import Domain
from magv.domains.logs import data
from magv.domains.logs.tools import TOOLS

HERE = Path(__file__).resolve().parent

DOMAIN = Domain(
    "logs",
    description="Investigating a web shop's machine data: events from five sources, alerts and incidents.",
    system_prompt=(HERE / "prompt.md").read_text(encoding="utf-8"),
    tools=TOOLS,
    generate=data.generate,
    seeds_path=HERE / "seeds.jsonl",
    # The generator's source is its version: editing it rebuilds existing databases.
    data_version=hashlib.sha256(Path(data.__file__).read_bytes()).hexdigest()[:16],
)
