"""The demo's domain: the built-in retail shop with four of its seeds, chosen so that the verifier
gets both classes by construction. With the demo's max_steps of 3 the responder cannot make the
4 and 5 calls of `retail-change-address` and `retail-exchange-size` (their questions' trajectories
are incorrect whatever the model does), while the one-call `retail-track-number` and
`retail-lookup-email` are seeds the default model answers right at temperature 0."""

from pathlib import Path

from magv.domains.base import Domain
from magv.domains.retail import DOMAIN as RETAIL
from magv.domains.retail.tools import TOOLS

DOMAIN = Domain(
    "retail-demo",
    description=RETAIL.description,
    system_prompt=RETAIL.system_prompt,
    tools=TOOLS,
    generate=RETAIL.generate,
    seeds_path=Path(__file__).resolve().parent / "seeds.jsonl",
    data_version=RETAIL.data_version,
)
