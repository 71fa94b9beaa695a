"""Built-in domain `retail`: customer support of an online shop (orders, shipping, returns)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from magv.domains.base import Domain
from magv.domains.retail import data
from magv.domains.retail.tools import TOOLS

HERE = Path(__file__).resolve().parent

DOMAIN = Domain(
    "retail",
    description="Customer support of an online shop: customers, orders, shipments, returns and exchanges.",
    system_prompt=(HERE / "prompt.md").read_text(encoding="utf-8"),
    tools=TOOLS,
    generate=data.generate,
    seeds_path=HERE / "seeds.jsonl",
    # The generator's source is its version: editing it rebuilds existing databases.
    data_version=hashlib.sha256(Path(data.__file__).read_bytes()).hexdigest()[:16],
)
