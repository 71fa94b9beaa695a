"""`--log-to DATABASE`: the trajectories the service scored, stored as imported runs, so production
traffic can be labelled (`magv verify annotate`) and become training data.

Each request's sibling group (a trajectory with its `siblings`, or the trajectories of one
`group`) is one question whose id is a hash of its messages, statuses and ids: a trajectory sent
again is recognised and not stored twice, within a batch as across requests, and the same messages
scored with another status are another run. Each run keeps the status it was scored with. The
lines go through the importer's own checks and writer (`check_import_lines`, `import_lines`),
exactly as `magv import trajectories` would store them.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

from magv.interchange import check_import_lines
from magv.models import canonical_json
from magv.service.payload import Entry
from magv.verify.importer import DEFAULT_DOMAIN, import_lines
from magv.verify.toolspec import LogTools

SOURCE = "magv serve verifier"


def records(entries: list[Entry]) -> list[dict[str, Any]]:
    """Import lines (docs/export.md) of the entries, one question per sibling group."""
    groups: dict[Any, list[tuple[Entry, int | None]]] = {}
    for e in entries:
        key = e.key
        groups.setdefault(key, []).append((e, None))
        groups[key].extend((e, j) for j in range(len(e.siblings)))
    out, seen = [], set()
    for members in groups.values():
        runs = [(e, e.run if j is None else e.siblings[j], j) for e, j in members]
        # A status other than ok is hashed too (an ok run keeps the id it always had).
        digest = hashlib.sha256(
            canonical_json(
                [
                    [
                        e.id,
                        e.group,
                        j,
                        run.messages,
                        *([run.trajectory.status] if run.trajectory.status != "ok" else []),
                    ]
                    for e, run, j in runs
                ]
            ).encode()
        ).hexdigest()[:20]
        if digest in seen:  # the same sibling group twice in one batch is stored once
            continue
        seen.add(digest)
        qid = f"serve-{digest}"
        for n, (e, run, j) in enumerate(runs):
            meta: dict[str, Any] = {"source": SOURCE, "scored": j is None, "status": run.trajectory.status}
            if e.id is not None:
                meta["id"] = e.id
            if e.group is not None:
                meta["group"] = e.group
            if j is not None:
                meta["sibling_of"] = e.index
            out.append(
                {
                    "question_id": qid,
                    "group_id": qid,
                    "question": run.question,
                    "run": n,
                    "messages": run.messages,
                    "meta": meta,
                }
            )
    return out


class TrajectoryLog:
    """The store the service writes to, open for the service's lifetime (DuckDB has one writer)."""

    def __init__(self, database: Path, domain: str | None = None, tools: LogTools | None = None):
        from magv.store import Store

        self.database = Path(database)
        self.domain = domain or DEFAULT_DOMAIN
        self.tools = tools if tools is not None else LogTools()
        self.store = Store(self.database)
        self._lock = threading.Lock()

    def add(self, entries: list[Entry]) -> int:
        """Store the entries' runs; returns how many were new."""
        lines = check_import_lines(
            ((n, f"request:{n}", r) for n, r in enumerate(records(entries), start=1)),
            "request",
            errors=self.tools.errors,
        )
        with self._lock:
            result = import_lines(self.store, lines, Path("serve-verifier"), self.domain, tools=self.tools)
        return result.runs

    def add_calls(self, calls: list[Any]) -> int:
        """Store the agent calls re-asking made (magv.pipeline.reask), in the call log."""
        with self._lock:
            return self.store.add_llm_calls(calls)

    def close(self) -> None:
        with self._lock:
            self.store.close()
