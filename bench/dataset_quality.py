"""Dataset quality before and after: the rule checks of magv/quality.py over generated questions.

    python bench/dataset_quality.py fixture [--file data/fixtures/real_dataset.jsonl]
        "before": the checks (no repair) over the committed real-model set, made before the checks
        existed; fidelity from its gold labels of each question's most common trajectory (MCT)
    python bench/dataset_quality.py store DB [DB ...]
        "after": `magv.report.quality.dataset_quality` of stores made by `magv run` / `magv generate`
        with the checks and repairs on
    python bench/dataset_quality.py reverse --endpoint URL [--file ...] [--limit N]
        alternates "after" on the same inputs as "before": the reverse engineer of today (prompt,
        identifiers, repairs) on the committed set's MCT answers, with the model at URL

Each prints one JSON object (pass rates per origin, failures with examples).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from magv.domains.loader import load_domain  # noqa: E402
from magv.errors import BadInput  # noqa: E402
from magv.models import Seed  # noqa: E402
from magv.quality import (  # noqa: E402
    check_question,
    identifier_patterns,
    identifiers,
    needed_values,
    target_values,
)
from magv.report.quality import summarize_checks  # noqa: E402

FIXTURE = REPO / "data" / "fixtures" / "real_dataset.jsonl"


def _questions(path: Path) -> dict[str, dict[str, Any]]:
    """question id -> text, meta (of its first run) and its MCT run's final answer and label."""
    out: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        meta = ast.literal_eval(row["meta"]) if isinstance(row["meta"], str) else row["meta"]
        q = out.setdefault(
            row["question_id"], {"id": row["question_id"], "text": row["question"], "meta": meta}
        )
        if meta.get("mct"):
            answers = [
                m.get("content") for m in row["messages"] if m["role"] == "assistant" and m.get("content")
            ]
            q["mct_answer"] = answers[-1] if answers else None
            q["mct_label"] = row.get("label")
    return out


class Domains:
    """The built-in domains' seeds, tool specs and identifier forms, loaded once."""

    def __init__(self) -> None:
        self._domains: dict[str, Any] = {}
        self._cache: dict[str, Any] = {}

    def domain(self, name: str) -> Any:
        """The domain a store names: a built-in, or a packaged one by its module."""
        if name not in self._domains:
            try:
                self._domains[name] = load_domain(name)
            except BadInput:  # a packaged domain stores its name ("retail-demo"), not its module
                self._domains[name] = load_domain(f"magv.domains.{name.replace('-', '_')}")
        return self._domains[name]

    def get(self, name: str) -> tuple[dict[str, Seed], dict[str, Any], list]:
        if name not in self._cache:
            d = self.domain(name)
            self._cache[name] = ({s.id: s for s in d.seeds()}, {t.name: t for t in d.tools},
                                 identifier_patterns(d.tools))  # fmt: skip
        return self._cache[name]

    def base_ids(self, q: dict[str, Any]) -> list[str]:
        seeds, specs, patterns = self.get(q["meta"]["domain"])
        seed = seeds.get(q["meta"].get("seed_id") or "")
        return identifiers(q["text"], patterns, needed_values(seed, specs) if seed else [])


def fixture_rows(path: Path = FIXTURE) -> list[dict[str, Any]]:
    """Check rows (as `question_checks` holds them) of the set's investigator questions and
    alternates, checked as they were written (no repair)."""
    qs = _questions(path)
    domains = Domains()
    rows = []
    for q in qs.values():
        m = q["meta"]
        seeds, specs, _ = domains.get(m["domain"])
        if m["origin"] == "investigator":
            seed = seeds[m["seed_id"]]
            check = check_question(q["text"], needed_values(seed, specs), None, domains.get(m["domain"])[2],
                                   target_values(seed.trajectory))  # fmt: skip
        elif m["origin"] == "alternate" and m.get("parent_question_id") in qs:
            check = check_question(q["text"], None, domains.base_ids(qs[m["parent_question_id"]]))
        else:
            continue
        rows.append(
            {**check.as_row(q["id"]), "text": q["text"], "origin": m["origin"], "domain": m["domain"]}
        )
    return rows


def fixture_fidelity(path: Path = FIXTURE) -> dict[str, Any]:
    """Per origin: questions whose MCT carries a gold label, and how many are labelled correct."""
    out: dict[str, dict[str, int]] = {}
    for q in _questions(path).values():
        if q.get("mct_label") is not None:
            f = out.setdefault(q["meta"]["origin"], {"questions": 0, "matched": 0})
            f["questions"] += 1
            f["matched"] += bool(q["mct_label"])
    return out


def by_domain(rows: list[dict[str, Any]]) -> dict[str, Any]:
    domains = sorted({r["domain"] for r in rows})
    return {
        "all": summarize_checks(rows),
        **{d: summarize_checks([r for r in rows if r["domain"] == d]) for d in domains},
    }


async def _reverse(path: Path, endpoint: str, limit: int | None, rows_out: Path | None) -> dict[str, Any]:
    from magv.agents.reverse import reverse_engineer
    from magv.config import Settings
    from magv.llm.client import LLMClient
    from magv.quality import repair_all

    qs = _questions(path)
    domains = Domains()
    base = [q for q in qs.values() if q["meta"]["origin"] in ("seed", "investigator") and q.get("mct_answer")]
    # the domains in turn, so that a prefix (--limit, or a stopped run) holds both alike
    per_domain = [
        [q for q in base if q["meta"]["domain"] == d] for d in sorted({q["meta"]["domain"] for q in base})
    ]
    base = [q for group in itertools.zip_longest(*per_domain) for q in group if q is not None][:limit]
    settings = Settings()
    client = LLMClient(settings, endpoints=[endpoint])
    rows, tokens, started = [], 0, time.perf_counter()
    for i, q in enumerate(base):
        domain = domains.domain(q["meta"]["domain"])
        ids = domains.base_ids(q)
        reply = await reverse_engineer(
            client, domain, q["mct_answer"], 1, f"bench-reverse:{q['id']}", identifiers=ids
        )
        tokens += reply.prompt_tokens + reply.completion_tokens
        for text, check in repair_all(reply.questions, None, ids, domains.get(q["meta"]["domain"])[2]):
            rows.append({**check.as_row(f"{q['id']}:{len(rows)}"), "text": text, "origin": "alternate",
                         "domain": q["meta"]["domain"], "base": q["text"]})  # fmt: skip
            if rows_out is not None:
                with rows_out.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(rows[-1]) + "\n")
        print(f"{i + 1}/{len(base)}", file=sys.stderr, flush=True)
    return {"base_questions": len(base), "alternates": len(rows), "tokens": tokens,
            "seconds": round(time.perf_counter() - started, 1), "quality": by_domain(rows)}  # fmt: skip


def recheck(rows: list[dict[str, Any]], path: Path = FIXTURE) -> list[dict[str, Any]]:
    """Rows of a `reverse --rows-out` file checked and repaired again with today's rules, from the
    model's own text (`original` when a repair changed it)."""
    from magv.quality import repair

    base = {q["text"]: q for q in _questions(path).values()}
    domains = Domains()
    out = []
    for r in rows:
        ids = domains.base_ids(base[r["base"]])
        text, check = repair(r.get("original") or r["text"], None, ids, domains.get(r["domain"])[2])
        out.append({**r, **check.as_row(r["question_id"]), "text": text})
    return out


def recheck_store(store: Any) -> dict[str, Any]:
    """The store's investigator questions checked and repaired again with today's rules, from
    the model's own text (`original` when a repair changed it): figures for a store generated
    before a rule changed."""
    from magv.quality import repair

    domains = Domains()
    rows = []
    for c in store.question_checks():
        if c["origin"] != "investigator":
            continue
        seeds, specs, patterns = domains.get(c["domain"])
        seed = seeds[c["seed_id"]]
        text, check = repair(c["original"] or c["text"], needed_values(seed, specs), None, patterns,
                             target_values(seed.trajectory))  # fmt: skip
        rows.append(
            {**check.as_row(c["question_id"]), "text": text, "origin": "investigator", "domain": c["domain"]}
        )
    return summarize_checks(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    fx = sub.add_parser("fixture")
    fx.add_argument("--file", type=Path, default=FIXTURE)
    st = sub.add_parser("store")
    st.add_argument("databases", nargs="+", type=Path)
    rv = sub.add_parser("reverse")
    rv.add_argument("--file", type=Path, default=FIXTURE)
    rv.add_argument("--endpoint", required=True)
    rv.add_argument("--limit", type=int)
    rv.add_argument("--rows-out", type=Path, help="append each checked alternate to this JSONL as it is made")
    rows = sub.add_parser(
        "rows", help="the figures of a --rows-out file (a run stopped early), checked again"
    )
    rows.add_argument("file", type=Path)
    args = ap.parse_args(argv)
    if args.mode == "fixture":
        out = {"file": str(args.file), "quality": by_domain(fixture_rows(args.file)),
               "fidelity": fixture_fidelity(args.file)}  # fmt: skip
    elif args.mode == "store":
        from magv.report.quality import dataset_quality
        from magv.store import Store

        out = {}
        for db in args.databases:
            with Store(db, read_only=True) as store:
                out[str(db)] = dataset_quality(store)
                out[str(db)]["rechecked"] = recheck_store(store)
    elif args.mode == "rows":
        lines = args.file.read_text(encoding="utf-8").splitlines()
        out = {"file": str(args.file), "quality": by_domain(recheck([json.loads(line) for line in lines]))}
    else:
        out = asyncio.run(_reverse(args.file, args.endpoint, args.limit, args.rows_out))
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
