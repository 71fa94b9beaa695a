"""The pipeline's DuckDB file: schema, idempotent writes and queries.

This is the only module that writes pipeline SQL. Every row has a content-derived key and every
insert is `ON CONFLICT DO NOTHING` (or an explicit upsert where a newer value must win), so a rerun
of a stage inserts nothing twice and a killed run resumes where it stopped.

One process writes at a time (DuckDB's file lock); within the process a lock serialises the
threads that share the connection.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from magv.errors import BadInput, StoreLocked
from magv.models import (
    Features,
    JudgeVerdict,
    Label,
    LLMCall,
    Prediction,
    Question,
    Run,
    ToolCall,
    Trajectory,
    canonical_json,
    make_id,
    serialised_calls,
    text_hash,
    utcnow,
)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS pipeline_runs (
    id VARCHAR PRIMARY KEY, domain VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP,
    status VARCHAR, settings JSON, stages JSON, summary JSON);
CREATE TABLE IF NOT EXISTS questions (
    id VARCHAR PRIMARY KEY, domain VARCHAR NOT NULL, text VARCHAR NOT NULL, origin VARCHAR NOT NULL,
    parent_id VARCHAR, seed_id VARCHAR, example_seed_id VARCHAR, target JSON, group_id VARCHAR,
    status VARCHAR, meta JSON, created_at TIMESTAMP, text_hash VARCHAR);
-- text_hash / response_hash: the embeddings key of the text, kept so the features stage need not
-- hash every text again. NULL in rows of stores made before them.
ALTER TABLE questions ADD COLUMN IF NOT EXISTS text_hash VARCHAR;
CREATE TABLE IF NOT EXISTS generations (
    id VARCHAR PRIMARY KEY, kind VARCHAR, domain VARCHAR, seed_id VARCHAR, example_seed_id VARCHAR,
    status VARCHAR, error VARCHAR, n_questions INTEGER, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS selections (
    question_id VARCHAR PRIMARY KEY, kept BOOLEAN, reason VARCHAR, cluster INTEGER,
    x DOUBLE, y DOUBLE, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS runs (
    id VARCHAR PRIMARY KEY, question_id VARCHAR NOT NULL, run_index INTEGER NOT NULL,
    trajectory JSON, status VARCHAR, signature VARCHAR, n_steps INTEGER, n_tool_errors INTEGER,
    n_invalid INTEGER, response VARCHAR, prompt_tokens INTEGER, completion_tokens INTEGER,
    latency_s DOUBLE, created_at TIMESTAMP, tools VARCHAR[], calls VARCHAR[], response_hash VARCHAR,
    calls_hash VARCHAR);
-- tools / calls: each call's tool name and canonical call, kept from computing the signature so the
-- verifier's features need not parse trajectories again. NULL in rows of stores made before them.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS tools VARCHAR[];
ALTER TABLE runs ADD COLUMN IF NOT EXISTS calls VARCHAR[];
ALTER TABLE runs ADD COLUMN IF NOT EXISTS response_hash VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS calls_hash VARCHAR;
CREATE TABLE IF NOT EXISTS mct (
    question_id VARCHAR PRIMARY KEY, run_id VARCHAR, signature VARCHAR, share DOUBLE,
    n_runs INTEGER, n_distinct INTEGER);
CREATE TABLE IF NOT EXISTS llm_calls (
    id VARCHAR PRIMARY KEY, key VARCHAR, role VARCHAR, model VARCHAR, endpoint VARCHAR,
    template VARCHAR, template_hash VARCHAR, request JSON, response JSON, prompt_tokens INTEGER,
    completion_tokens INTEGER, latency_s DOUBLE, retries INTEGER, error VARCHAR,
    created_at TIMESTAMP);
CREATE INDEX IF NOT EXISTS llm_calls_key ON llm_calls (key);
CREATE TABLE IF NOT EXISTS features (
    run_id VARCHAR, version VARCHAR, "values" JSON, created_at TIMESTAMP,
    PRIMARY KEY (run_id, version));
CREATE TABLE IF NOT EXISTS labels (
    run_id VARCHAR, source VARCHAR, correct BOOLEAN, detail VARCHAR, created_at TIMESTAMP,
    PRIMARY KEY (run_id, source));
CREATE TABLE IF NOT EXISTS verifier_models (
    id VARCHAR PRIMARY KEY, name VARCHAR, path VARCHAR, feature_version VARCHAR, features JSON,
    metrics JSON, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS cv_results (
    training_id VARCHAR, name VARCHAR, metrics JSON, created_at TIMESTAMP,
    PRIMARY KEY (training_id, name));
CREATE TABLE IF NOT EXISTS predictions (
    run_id VARCHAR, model_id VARCHAR, probability DOUBLE, verdict BOOLEAN, threshold DOUBLE,
    contributions JSON, created_at TIMESTAMP, PRIMARY KEY (run_id, model_id));
CREATE TABLE IF NOT EXISTS judge_verdicts (
    run_id VARCHAR, model VARCHAR, correct BOOLEAN, reason VARCHAR, prompt_tokens INTEGER,
    completion_tokens INTEGER, latency_s DOUBLE, error VARCHAR, created_at TIMESTAMP,
    PRIMARY KEY (run_id, model));
CREATE TABLE IF NOT EXISTS embeddings (
    model VARCHAR, text_hash VARCHAR, dim INTEGER, vector BLOB, created_at TIMESTAMP,
    PRIMARY KEY (model, text_hash));
CREATE TABLE IF NOT EXISTS eval_results (
    eval_id VARCHAR, config VARCHAR, question_id VARCHAR, results JSON, created_at TIMESTAMP,
    PRIMARY KEY (eval_id, config, question_id));
"""

TABLES = (
    "pipeline_runs", "questions", "generations", "selections", "runs", "mct", "llm_calls",
    "features", "labels", "verifier_models", "cv_results", "predictions", "judge_verdicts",
    "eval_results", "embeddings",
)  # fmt: skip


def _json(value: Any) -> str | None:
    return None if value is None else canonical_json(value)


def _lock_holder(message: str) -> str:
    """' (PID n: its command line)' of the process DuckDB names as holding the lock, if it says."""
    m = re.search(r"\(PID (\d+)\)", message)
    if not m:
        return ""
    pid = m.group(1)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        command = " ".join(a.decode(errors="replace") for a in argv if a)[:160]
    except OSError:
        command = ""
    return f" (PID {pid}: {command})" if command else f" (PID {pid})"


class Store:
    """One DuckDB file. Use as a context manager or call `close()`."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        self._in_tx = False
        self.con = self._connect()
        if not read_only:
            self._migrate()
        self._check_version()

    # -- opening -----------------------------------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self.read_only and not self.path.exists():
            raise BadInput(f"database: {self.path}: no such file (run a stage first)")
        parent = self.path.parent
        if not parent.exists():
            try:
                parent.mkdir(parents=True)
            except OSError as exc:
                raise BadInput(
                    f"database: {self.path}: cannot create directory {parent}: {exc.strerror}"
                ) from None
        try:
            return duckdb.connect(str(self.path), read_only=self.read_only)
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" in text.lower():
                holder = _lock_holder(text)
                if self.read_only:
                    # DuckDB's file lock is exclusive while a process writes: readers cannot share it.
                    raise StoreLocked(
                        f"database: {self.path} is being written by another process{holder}; DuckDB lets "
                        "no other process open the file meanwhile, not even to read: try again when it finishes"
                    ) from None
                raise StoreLocked(
                    f"database: {self.path} is in use by another magv process{holder} "
                    "(DuckDB allows one writer; wait for it to finish or use --wait)"
                ) from None
            raise BadInput(f"database: {self.path}: cannot open: {text}") from None
        except duckdb.Error as exc:
            raise BadInput(f"database: {self.path}: not a DuckDB database: {exc}") from None

    def _migrate(self) -> None:
        with self._lock:
            self.con.execute("BEGIN")
            try:
                self.con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
                row = self.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is not None and int(row[0]) > SCHEMA_VERSION:
                    self.con.execute("ROLLBACK")
                    return  # _check_version explains
                self.con.execute(_SCHEMA)
                self.con.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO NOTHING",
                    [str(SCHEMA_VERSION)],
                )
                self.con.execute("COMMIT")
            except Exception:
                self.con.execute("ROLLBACK")
                raise

    def _check_version(self) -> None:
        try:
            row = self.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except duckdb.CatalogException:
            raise BadInput(f"database: {self.path}: not a magv database (no meta table)") from None
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            self.close()
            raise BadInput(
                f"database: {self.path} has schema version {version}, newer than this magv "
                f"understands ({SCHEMA_VERSION}); upgrade magv to read it"
            )

    @property
    def schema_version(self) -> int:
        row = self.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        try:
            self.con.close()
        except Exception:
            pass

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- primitives ----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all."""
        with self._lock:
            if self._in_tx:  # nested: the outer transaction decides
                yield
                return
            self.con.execute("BEGIN")
            self._in_tx = True
            try:
                yield
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            finally:
                self._in_tx = False
            self.con.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Read-only helper: rows as dicts."""
        with self._lock:
            cur = self.con.execute(sql, params or [])
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        with self._lock:
            row = self.con.execute(sql, params or []).fetchone()
        return row[0] if row else None

    def _insert(self, table: str, rows: Sequence[dict[str, Any]], conflict: str = "DO NOTHING") -> int:
        """Insert rows; returns how many were written (new, or updated by an upsert `conflict`)."""
        if not rows:
            return 0
        cols = list(rows[0])
        quoted = ", ".join(f'"{c}"' for c in cols)
        row_marks = "(" + ", ".join("?" for _ in cols) + ")"
        inserted = 0
        with self._lock, self.transaction():
            # Multi-row VALUES with RETURNING counts the new rows without scanning the table.
            for start in range(0, len(rows), 500):
                batch = rows[start : start + 500]
                sql = (
                    f"INSERT INTO {table} ({quoted}) VALUES {', '.join(row_marks for _ in batch)} "
                    f"ON CONFLICT {conflict} RETURNING 1"
                )
                params = [r[c] for r in batch for c in cols]
                inserted += len(self.con.execute(sql, params).fetchall())
        return inserted

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {t: self.con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}

    def backup(self, dest: str | Path) -> Path:
        """A consistent copy: checkpoint, then copy the file while holding the lock."""
        dest = Path(dest)
        if dest.exists():
            raise BadInput(f"backup: {dest} already exists; choose a new path")
        if not dest.parent.exists():
            raise BadInput(f"backup: directory {dest.parent} does not exist")
        with self._lock:
            self.con.execute("CHECKPOINT")
            shutil.copyfile(self.path, dest)
        return dest

    # -- pipeline runs -------------------------------------------------------------------------

    def start_pipeline_run(self, run_id: str, domain: str, settings: dict[str, Any]) -> None:
        self._insert(
            "pipeline_runs",
            [{"id": run_id, "domain": domain, "started_at": utcnow(), "finished_at": None,
              "status": "running", "settings": _json(settings), "stages": "{}", "summary": "{}"}],
        )  # fmt: skip

    def finish_pipeline_run(
        self, run_id: str, status: str, stages: dict[str, Any], summary: dict[str, Any]
    ) -> None:
        with self._lock:
            self.con.execute(
                "UPDATE pipeline_runs SET finished_at=?, status=?, stages=?, summary=? WHERE id=?",
                [utcnow(), status, _json(stages), _json(summary), run_id],
            )

    def pipeline_runs(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM pipeline_runs ORDER BY started_at")

    def mark_abandoned_runs(self) -> int:
        """Runs still 'running' when a writer opens the file were killed (the file lock admits one
        writer, so nobody else is running them): say so instead of leaving them running forever."""
        rows = self.query("UPDATE pipeline_runs SET status='abandoned' WHERE status='running' RETURNING id")
        return len(rows)

    # -- questions -----------------------------------------------------------------------------

    def add_questions(self, questions: Iterable[Question]) -> int:
        now = utcnow()
        rows = [
            {
                "id": q.id, "domain": q.domain, "text": q.text, "origin": q.origin,
                "parent_id": q.parent_id, "seed_id": q.seed_id, "example_seed_id": q.example_seed_id,
                "target": _json([c.model_dump() for c in q.target] if q.target is not None else None),
                "group_id": q.group_id, "status": q.status, "meta": _json(q.meta), "created_at": now,
                "text_hash": text_hash(q.text),
            }
            for q in questions
        ]  # fmt: skip
        return self._insert("questions", rows)

    def set_question_status(self, question_id: str, status: str) -> None:
        with self._lock:
            self.con.execute("UPDATE questions SET status=? WHERE id=?", [status, question_id])

    def questions(
        self,
        domain: str | None = None,
        origin: str | Sequence[str] | None = None,
        kept_only: bool = False,
        ids: Sequence[str] | None = None,
    ) -> list[Question]:
        sql = "SELECT q.* FROM questions q"
        where, params = [], []
        if kept_only:
            sql += " JOIN selections s ON s.question_id = q.id AND s.kept"
        if domain:
            where.append("q.domain = ?")
            params.append(domain)
        if origin:
            origins = [origin] if isinstance(origin, str) else list(origin)
            where.append(f"q.origin IN ({', '.join('?' for _ in origins)})")
            params.extend(origins)
        if ids is not None:
            where.append("list_contains(?, q.id)")
            params.append(list(ids))
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY q.created_at, q.id"
        return [_question(r) for r in self.query(sql, params)]

    def add_generation(
        self, gen_id: str, kind: str, domain: str, seed_id: str, example_seed_id: str | None,
        status: str, error: str | None, n_questions: int,
    ) -> int:  # fmt: skip
        """One LLM generation attempt: kind investigator (seed_id = target seed) or reverse
        (seed_id = base question id)."""
        return self._insert(
            "generations",
            [{"id": gen_id, "kind": kind, "domain": domain, "seed_id": seed_id, "example_seed_id": example_seed_id,
              "status": status, "error": error, "n_questions": n_questions, "created_at": utcnow()}],
            conflict="(id) DO UPDATE SET status=excluded.status, error=excluded.error, "
            "n_questions=excluded.n_questions",
        )  # fmt: skip

    def generations(self, domain: str | None = None) -> list[dict[str, Any]]:
        if domain:
            return self.query("SELECT * FROM generations WHERE domain=? ORDER BY id", [domain])
        return self.query("SELECT * FROM generations ORDER BY id")

    # -- selection -----------------------------------------------------------------------------

    def add_selections(self, rows: Iterable[dict[str, Any]]) -> int:
        """rows: question_id, kept, reason, cluster, x, y."""
        now = utcnow()
        return self._insert("selections", [{**r, "created_at": now} for r in rows])

    def selections(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM selections ORDER BY question_id")

    # -- runs ----------------------------------------------------------------------------------

    def add_runs(self, runs: Iterable[Run]) -> int:
        rows = []
        for r in runs:
            t = r.trajectory
            calls = t.canonical_calls()
            rows.append({
                "id": r.id, "question_id": r.question_id, "run_index": r.run_index,
                "trajectory": t.model_dump_json(), "status": t.status, "signature": make_id(calls),
                "n_steps": len(t.steps),
                "n_tool_errors": sum(1 for s in t.steps if s.kind == "tool" and s.error),
                "n_invalid": sum(1 for s in t.steps if s.kind == "invalid"),
                "response": t.response, "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens, "latency_s": r.latency_s,
                "created_at": r.created_at, "tools": t.tool_names(), "calls": calls,
                "response_hash": text_hash(t.response or ""), "calls_hash": text_hash(serialised_calls(calls)),
            })  # fmt: skip
        if not rows:
            return 0
        # A run that failed on the model (llm_error) is redone by a rerun and replaced; any
        # other stored run is final.
        updates = ", ".join(f'"{c}"=excluded."{c}"' for c in rows[0] if c != "id")
        return self._insert(
            "runs", rows, conflict=f"(id) DO UPDATE SET {updates} WHERE runs.status = 'llm_error'"
        )

    def runs(self, question_ids: Sequence[str] | None = None) -> list[Run]:
        sql = "SELECT * FROM runs"
        params: list[Any] = []
        if question_ids is not None:
            sql += " WHERE list_contains(?, question_id)"
            params.append(list(question_ids))
        sql += " ORDER BY question_id, run_index"
        return [_run(r) for r in self.query(sql, params)]

    def run_counts(self) -> dict[str, int]:
        rows = self.query("SELECT question_id, count(*) AS n FROM runs GROUP BY question_id")
        return {r["question_id"]: r["n"] for r in rows}

    def forget_verdicts(self, run_ids: Sequence[str]) -> None:
        """Drop what the verifier derived from these runs (features, gold labels, predictions), so
        its stages compute it again after the runs changed. Human and imported labels stay."""
        with self._lock, self.transaction():
            for table, only in (("features", ""), ("labels", " AND source = 'gold'"), ("predictions", "")):
                self.con.execute(f"DELETE FROM {table} WHERE list_contains(?, run_id){only}", [list(run_ids)])

    def finished_run_indices(self) -> dict[str, set[int]]:
        """question_id -> run indices of its runs that did not fail on the model (those that did
        are to be redone)."""
        rows = self.query(
            "SELECT question_id, list(run_index) AS indices FROM runs WHERE status IS DISTINCT FROM 'llm_error' "
            "GROUP BY question_id"
        )
        return {r["question_id"]: set(r["indices"]) for r in rows}

    def set_mct(self, rows: Iterable[dict[str, Any]]) -> int:
        """rows: question_id, run_id, signature, share, n_runs, n_distinct. Newer wins."""
        return self._insert(
            "mct", list(rows),
            conflict="(question_id) DO UPDATE SET run_id=excluded.run_id, signature=excluded.signature, "
            "share=excluded.share, n_runs=excluded.n_runs, n_distinct=excluded.n_distinct",
        )  # fmt: skip

    def mct(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM mct ORDER BY question_id")

    # -- LLM call log --------------------------------------------------------------------------

    def add_llm_calls(self, calls: Iterable[LLMCall]) -> int:
        rows = [
            {
                "id": c.id, "key": c.key, "role": c.role, "model": c.model, "endpoint": c.endpoint,
                "template": c.template, "template_hash": c.template_hash, "request": _json(c.request),
                "response": _json(c.response), "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens, "latency_s": c.latency_s,
                "retries": c.retries, "error": c.error, "created_at": c.created_at,
            }
            for c in calls
        ]  # fmt: skip
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

    # -- verifier ------------------------------------------------------------------------------

    def add_features(self, features: Iterable[Features], replace: bool = False) -> int:
        now = utcnow()
        rows = [{"run_id": f.run_id, "version": f.version, "values": _json(f.values), "created_at": now}
                for f in features]  # fmt: skip
        conflict = '(run_id, version) DO UPDATE SET "values"=excluded."values"' if replace else "DO NOTHING"
        return self._insert("features", rows, conflict=conflict)

    def features(self, version: str | None = None) -> list[Features]:
        sql = 'SELECT run_id, version, "values" FROM features'
        params: list[Any] = []
        if version:
            sql += " WHERE version=?"
            params.append(version)
        sql += " ORDER BY run_id"
        return [
            Features(run_id=r["run_id"], version=r["version"], values=json.loads(r["values"]))
            for r in self.query(sql, params)
        ]

    def add_labels(self, labels: Iterable[Label]) -> int:
        """A newer label of the same source replaces the older; other sources are kept."""
        rows = [{"run_id": lb.run_id, "source": lb.source, "correct": lb.correct, "detail": lb.detail,
                 "created_at": lb.created_at} for lb in labels]  # fmt: skip
        return self._insert(
            "labels", rows,
            conflict="(run_id, source) DO UPDATE SET correct=excluded.correct, detail=excluded.detail, "
            "created_at=excluded.created_at",
        )  # fmt: skip

    def labels(self) -> list[Label]:
        return [Label(**r) for r in self.query("SELECT * FROM labels ORDER BY run_id, source")]

    def effective_labels(self) -> dict[str, Label]:
        """run_id -> the label of the most trusted source (human > import > gold)."""
        rows = self.query(
            "SELECT * FROM labels QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY "
            "CASE source WHEN 'human' THEN 2 WHEN 'import' THEN 1 ELSE 0 END DESC, created_at DESC) = 1"
        )
        return {r["run_id"]: Label(**r) for r in rows}

    def add_verifier_model(self, row: dict[str, Any]) -> int:
        """row: id, name, path, feature_version, features (list), metrics (dict)."""
        return self._insert(
            "verifier_models",
            [{**row, "features": _json(row["features"]), "metrics": _json(row["metrics"]),
              "created_at": utcnow()}],
        )  # fmt: skip

    def latest_verifier_model(self) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM verifier_models ORDER BY created_at DESC LIMIT 1")
        return rows[0] if rows else None

    def add_cv_results(self, training_id: str, results: dict[str, dict[str, Any]]) -> int:
        now = utcnow()
        rows = [{"training_id": training_id, "name": name, "metrics": _json(m), "created_at": now}
                for name, m in results.items()]  # fmt: skip
        return self._insert("cv_results", rows)

    def cv_results(self, training_id: str | None = None) -> list[dict[str, Any]]:
        if training_id is None:
            training_id = self.scalar("SELECT training_id FROM cv_results ORDER BY created_at DESC LIMIT 1")
        return self.query("SELECT * FROM cv_results WHERE training_id=? ORDER BY name", [training_id])

    def add_predictions(self, predictions: Iterable[Prediction]) -> int:
        rows = [{"run_id": p.run_id, "model_id": p.model_id, "probability": p.probability,
                 "verdict": p.verdict, "threshold": p.threshold, "contributions": _json(p.contributions),
                 "created_at": p.created_at} for p in predictions]  # fmt: skip
        return self._insert(
            "predictions", rows,
            conflict="(run_id, model_id) DO UPDATE SET probability=excluded.probability, "
            "verdict=excluded.verdict, threshold=excluded.threshold, contributions=excluded.contributions",
        )  # fmt: skip

    def predictions(self, model_id: str | None = None) -> list[Prediction]:
        sql = "SELECT * FROM predictions"
        params: list[Any] = []
        if model_id:
            sql += " WHERE model_id=?"
            params.append(model_id)
        return [Prediction(**{**r, "contributions": json.loads(r["contributions"] or "{}")})
                for r in self.query(sql + " ORDER BY run_id", params)]  # fmt: skip

    def add_judge_verdicts(self, verdicts: Iterable[JudgeVerdict]) -> int:
        rows = [v.model_dump() for v in verdicts]
        return self._insert("judge_verdicts", rows)

    def judge_verdicts(self) -> list[JudgeVerdict]:
        return [JudgeVerdict(**r) for r in self.query("SELECT * FROM judge_verdicts ORDER BY run_id")]

    def add_eval_results(self, eval_id: str, config: str, rows: dict[str, dict[str, Any]]) -> int:
        now = utcnow()
        return self._insert(
            "eval_results",
            [{"eval_id": eval_id, "config": config, "question_id": q, "results": _json(r), "created_at": now}
             for q, r in rows.items()],
        )  # fmt: skip

    # -- report and export ---------------------------------------------------------------------

    def report_rows(
        self, table: str, columns: Sequence[str] | None = None, window: tuple[Any, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Rows of one table for the report. `window` (start, end) keeps rows created in that time;
        mct rows follow their run, and pipeline_runs are never filtered."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        cols = ", ".join(f'"{c}"' for c in columns) if columns else "*"
        sql, params = f"SELECT {cols} FROM {table}", []
        if window is not None and table != "pipeline_runs":
            if table == "mct":
                sql += " WHERE run_id IN (SELECT id FROM runs WHERE created_at BETWEEN ? AND ?)"
            else:
                sql += " WHERE created_at BETWEEN ? AND ?"
            params = [window[0], window[1]]
        return self.query(sql, params)

    def scored_model_id(self) -> str | None:
        """The verifier model that scored most recently."""
        return self.scalar(
            "SELECT model_id FROM predictions GROUP BY model_id ORDER BY max(created_at) DESC LIMIT 1"
        )

    def export_rows(
        self, model_id: str | None = None, verified_only: bool = False, min_score: float | None = None
    ) -> list[dict[str, Any]]:
        """Every run of a non-alternate question with its question, MCT mark, effective label,
        verifier score and latest judge verdict. Verified = the effective label if there is one,
        else the verifier's verdict."""
        where = ["q.origin <> 'alternate'"]
        params: list[Any] = [model_id]
        if verified_only:
            where.append("coalesce(lab.correct, p.verdict)")
        if min_score is not None:
            where.append("p.probability >= ?")
            params.append(min_score)
        sql = f"""
            WITH lab AS (
                SELECT run_id, correct, source FROM labels QUALIFY row_number() OVER (
                    PARTITION BY run_id ORDER BY CASE source WHEN 'human' THEN 2 WHEN 'import' THEN 1
                    ELSE 0 END DESC, created_at DESC) = 1),
            judge AS (
                SELECT run_id, model, correct FROM judge_verdicts QUALIFY row_number() OVER (
                    PARTITION BY run_id ORDER BY created_at DESC) = 1)
            SELECT r.id AS run_id, r.question_id, r.run_index, r.trajectory, r.status, r.n_steps,
                r.n_tool_errors, r.n_invalid, r.response, r.prompt_tokens, r.completion_tokens,
                r.latency_s, q.text AS question, q.domain, q.origin, q.parent_id, q.seed_id,
                q.group_id, q.target, q.meta AS question_meta, coalesce(m.run_id = r.id, false) AS is_mct,
                m.share AS mct_share, lab.correct AS label, lab.source AS label_source,
                p.probability AS score, p.verdict, p.threshold, p.model_id,
                judge.correct AS judge_correct, judge.model AS judge_model
            FROM runs r JOIN questions q ON q.id = r.question_id
            LEFT JOIN mct m ON m.question_id = r.question_id
            LEFT JOIN lab ON lab.run_id = r.id
            LEFT JOIN predictions p ON p.run_id = r.id AND p.model_id = ?
            LEFT JOIN judge ON judge.run_id = r.id
            WHERE {" AND ".join(where)}
            ORDER BY q.created_at, q.id, r.run_index"""
        return self.query(sql, params)

    def write_parquet(self, source_jsonl: str | Path, dest: str | Path, columns: dict[str, str]) -> int:
        """Convert newline-delimited JSON with the given DuckDB column types into a Parquet file;
        returns the row count. Works on a read-only store (nothing is written to the database)."""
        spec = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items()) + "}"
        names = ", ".join(f'"{name}"' for name in columns)
        src, out = str(source_jsonl).replace("'", "''"), str(dest).replace("'", "''")
        with self._lock:
            self.con.execute(
                f"COPY (SELECT {names} FROM read_json('{src}', format='newline_delimited', "
                f"columns={spec})) TO '{out}' (FORMAT parquet)"
            )
            return self.con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]

    # -- verifier: bulk writes and lookups -----------------------------------------------------

    def _insert_columns(
        self, table: str, columns: dict[str, tuple[str, Any]], n: int, conflict: str = "DO NOTHING"
    ) -> int:
        """Insert n rows given column-wise as (DuckDB type, list of n values or one scalar): one
        statement over unnest()ed lists, ~100x faster than executemany for thousands of rows."""
        if n == 0:
            return 0
        names = ", ".join(f'"{c}"' for c in columns)
        exprs = [
            f"unnest(?::{kind}[])" if isinstance(v, list) else f"?::{kind}" for kind, v in columns.values()
        ]
        return self._insert_from(
            f"{table} ({names})", f"SELECT {', '.join(exprs)}", [v for _, v in columns.values()], conflict
        )

    def bulk_add_features(self, features: Sequence[Features], replace: bool = False) -> int:
        conflict = (
            '(run_id, version) DO UPDATE SET "values"=excluded."values", created_at=excluded.created_at'
        )
        cols = {
            "run_id": ("VARCHAR", [f.run_id for f in features]),
            "version": ("VARCHAR", [f.version for f in features]),
            "values": ("JSON", [canonical_json(f.values) for f in features]),
            "created_at": ("TIMESTAMP", utcnow()),
        }
        return self._insert_columns("features", cols, len(features), conflict if replace else "DO NOTHING")

    def bulk_add_predictions(
        self, model_id: str, threshold: float, run_ids: Sequence[str], probabilities: Any, verdicts: Any,
        names: Sequence[str], top_index: Any, top_values: Any,
    ) -> int:  # fmt: skip
        """Predictions of one model, column-wise (numpy). Row i's contributions are the JSON object
        {names[top_index[i, j]]: top_values[i, j]} in order of j, written by DuckDB (a Python
        string per row cost more than the rest of scoring). Newer wins."""
        import numpy as np

        if len(run_ids) == 0:
            return 0
        top_index = np.asarray(top_index, dtype=np.int64).reshape(len(run_ids), -1)
        top_values = np.asarray(top_values, dtype=np.float64).reshape(top_index.shape)
        columns = {"run_id": np.asarray(list(run_ids), dtype=object),
                   "probability": np.asarray(probabilities, dtype=np.float64),
                   "verdict": np.asarray(verdicts, dtype=bool)}  # fmt: skip
        for j in range(top_index.shape[1]):
            columns[f"i{j}"] = top_index[:, j] + 1  # SQL lists count from 1
            columns[f"v{j}"] = np.ascontiguousarray(top_values[:, j])
        pairs = ", ".join(f"n.names[i{j}], v{j}" for j in range(top_index.shape[1]))
        contributions = f"json_object({pairs})" if pairs else "'{}'::JSON"
        with self._registered("predictions_new", columns):
            return self._insert_from(
                "predictions (run_id, model_id, probability, verdict, threshold, contributions, created_at)",
                f"SELECT run_id, ?, probability, verdict, ?, {contributions}, ? "
                "FROM predictions_new, (SELECT ?::VARCHAR[] AS names) n",
                [model_id, float(threshold), utcnow(), list(names)],
                "(run_id, model_id) DO UPDATE SET probability=excluded.probability, verdict=excluded.verdict, "
                "threshold=excluded.threshold, contributions=excluded.contributions, created_at=excluded.created_at",
            )  # fmt: skip

    def run_questions(self, run_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """run_id -> question_id, group_id, origin, domain of the run's question."""
        sql = (
            "SELECT r.id AS run_id, q.id AS question_id, q.group_id, q.origin, q.domain "
            "FROM runs r JOIN questions q ON q.id = r.question_id"
        )
        params: list[Any] = []
        if run_ids is not None:
            sql += " WHERE list_contains(?, r.id)"
            params.append(list(run_ids))
        return {r["run_id"]: r for r in self.query(sql, params)}

    # -- embeddings cache ------------------------------------------------------------------------

    def embeddings(self, model: str, hashes: Sequence[str]) -> dict[str, Any]:
        """text hash -> stored float32 vector of `model`, for the hashes that are stored."""
        import numpy as np

        if not hashes:
            return {}
        with self._lock:
            # a join, not list_contains: that compares every stored row with every wanted hash
            res = self.con.execute(
                "SELECT e.text_hash, e.dim, e.vector FROM embeddings e "
                "JOIN (SELECT DISTINCT unnest(?::VARCHAR[]) AS text_hash) w USING (text_hash) WHERE e.model=?",
                [list(hashes), model],
            ).fetchall()
        return {h: np.frombuffer(v, dtype=np.float32, count=d) for h, d, v in res}

    def add_embeddings(self, model: str, hashes: Sequence[str], vectors: Any) -> int:
        """Keep float32 vectors (rows of a matrix) of texts by their hash; an existing one stays."""
        import numpy as np

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        first = list({h: i for i, h in reversed(list(enumerate(hashes)))}.values())  # one row per hash
        hashes, vectors = [hashes[i] for i in first], vectors[first]
        if len(hashes) == 0:
            return 0
        columns = {"text_hash": np.asarray(list(hashes), dtype=object),
                   "vector": np.asarray([row.tobytes() for row in vectors], dtype=object)}  # fmt: skip
        with self._registered("embeddings_new", columns):
            return self._insert_from(
                "embeddings", "SELECT ?, text_hash, ?, vector::BLOB, ? FROM embeddings_new",
                [model, int(vectors.shape[1]), utcnow()],
            )  # fmt: skip

    def forget_embeddings(self, model: str | None = None) -> int:
        """Drop stored vectors (of one embedding key, or all); returns how many."""
        with self._lock, self.transaction():
            where, params = ("WHERE model = ?", [model]) if model else ("", [])
            return len(self.con.execute(f"DELETE FROM embeddings {where} RETURNING 1", params).fetchall())

    def _insert_from(
        self, target: str, select: str, params: Sequence[Any], conflict: str = "DO NOTHING"
    ) -> int:
        """INSERT INTO <target> <select> ON CONFLICT <conflict>, in a transaction; returns how many
        rows the table gained (an upsert's updates are not counted)."""
        table = target.split(" ", 1)[0]
        with self._lock:
            before = self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            with self.transaction():
                self.con.execute(f"INSERT INTO {target} {select} ON CONFLICT {conflict}", list(params))
            return self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] - before

    @contextmanager
    def _registered(self, name: str, columns: dict[str, Any]) -> Iterator[None]:
        """numpy columns visible to SQL as the view `name` while the block runs."""
        with self._lock:
            self.con.register(name, columns)
            try:
                yield
            finally:
                self.con.unregister(name)

    # -- verifier features in bulk (the definitions are in magv/verify/features.py) ------------

    def bases_without_mct(self) -> list[str]:
        """Base questions with runs but no MCT row naming one of their runs (an older store, or runs
        written by hand): the features stage takes the vote itself."""
        rows = self.query(
            "SELECT DISTINCT q.id FROM questions q JOIN runs r ON r.question_id = q.id "
            "WHERE q.origin <> 'alternate' AND NOT EXISTS (SELECT 1 FROM mct m JOIN runs x ON x.id = m.run_id "
            "AND x.question_id = m.question_id WHERE m.question_id = q.id) ORDER BY q.id"
        )
        return [r["id"] for r in rows]

    def feature_inputs(
        self, version: str, *, alternates: bool, replace: bool, picks: Sequence[tuple[str, str, float]],
        embedding_model: str | None, no_calls_text: str,
    ) -> dict[str, dict[str, Any]]:  # fmt: skip
        """Everything the features stage needs, as numpy columns, with strings replaced by codes.

        jobs: one row per verified trajectory to (re)compute: the MCT run of a base question (from
        the mct table, or `picks` (question_id, run_id, share) for bases without one), unless its
        stored row of `version` still counts the same runs and alternate runs (and not `replace`).
        alts: the runs of each job's alternate questions, sorted by job; own: the job question's
        other runs; signatures: one row per distinct call signature (code = row), with the text
        code of its serialised calls (one per line, `no_calls_text` for none; -1 where not stored or
        not needed); calls: the stored (tool, canonical call) of each signature, in order, by code;
        parse: (code, trajectory JSON) of signatures whose run predates stored calls;
        texts: the distinct question and response texts and serialised calls of jobs that have
        alternate runs (code = row), with the stored vector of `embedding_model` where there is
        one (else dim 0 and the text). No column holds NULL, so none comes back as a masked array."""
        q_ids, r_ids, shares = (list(c) for c in zip(*picks)) if picks else ([], [], [])
        # Python's str.strip() whitespace, which RE2's \s does not cover entirely.
        non_space = r"[^\s\x{0b}\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
        # Unless replacing, a job is a verified trajectory without a row, or whose row counted other runs.
        stale = """
            LEFT JOIN features f ON f.run_id = p.run_id AND f.version = ?
            WHERE f.run_id IS NULL
                OR json_extract(f."values", '$.n_runs')::DOUBLE IS DISTINCT FROM own.n_runs
                OR json_extract(f."values", '$.n_alternate_runs')::DOUBLE IS DISTINCT FROM coalesce(alt.n_alt_runs, 0)"""
        if replace:
            stale = ""
        statements = [
            ("""CREATE OR REPLACE TEMP TABLE fx_pick AS
                SELECT m.question_id, m.run_id, m.share FROM mct m
                JOIN runs r ON r.id = m.run_id AND r.question_id = m.question_id
                UNION ALL SELECT * FROM (SELECT unnest(?::VARCHAR[]) AS question_id,
                    unnest(?::VARCHAR[]) AS run_id, unnest(?::DOUBLE[]) AS share)""", [q_ids, r_ids, shares]),
            ("""CREATE OR REPLACE TEMP TABLE fx_job AS
                WITH own AS (SELECT question_id, count(*) AS n_runs, count(DISTINCT signature) AS n_distinct
                             FROM runs GROUP BY question_id),
                same AS (SELECT question_id, coalesce(signature, '') AS signature, count(*) AS n
                         FROM runs GROUP BY ALL),
                alt AS (SELECT a.parent_id, count(*) AS n_alt_runs FROM questions a
                        JOIN runs r ON r.question_id = a.id WHERE a.origin = 'alternate' AND ?
                        GROUP BY a.parent_id)
                SELECT (row_number() OVER (ORDER BY q.id) - 1)::BIGINT AS job, q.id AS question_id, q.domain,
                    q.text, coalesce(q.text_hash, sha256(q.text)) AS text_hash, p.run_id,
                    coalesce(r.signature, '') AS signature, coalesce(r.response, '') AS response,
                    coalesce(r.response_hash, sha256(coalesce(r.response, ''))) AS response_hash,
                    coalesce(p.share, same.n / own.n_runs) AS share,
                    (r.status = 'ok') AS status_ok, r.n_steps, r.n_tool_errors, r.n_invalid,
                    regexp_matches(coalesce(r.response, ''), '""" + non_space + """') AS has_response,
                    own.n_runs, own.n_distinct, coalesce(alt.n_alt_runs, 0) AS n_alt_runs
                FROM fx_pick p JOIN questions q ON q.id = p.question_id AND q.origin <> 'alternate'
                JOIN runs r ON r.id = p.run_id
                JOIN own ON own.question_id = q.id
                JOIN same ON same.question_id = q.id AND same.signature = coalesce(r.signature, '')
                LEFT JOIN alt ON alt.parent_id = q.id
                """ + stale, [alternates, *([] if replace else [version])]),
            ("""CREATE OR REPLACE TEMP TABLE fx_alt AS
                SELECT j.job, a.id AS alt_id, r.id AS run_id, a.text, coalesce(a.text_hash, sha256(a.text)) AS text_hash,
                    coalesce(r.signature, '') AS signature, coalesce(r.response, '') AS response,
                    coalesce(r.response_hash, sha256(coalesce(r.response, ''))) AS response_hash
                FROM fx_job j JOIN questions a ON a.parent_id = j.question_id AND a.origin = 'alternate'
                JOIN runs r ON r.question_id = a.id WHERE ?""", [alternates]),
            ("""CREATE OR REPLACE TEMP TABLE fx_own AS
                SELECT j.job, r.id AS run_id, coalesce(r.signature, '') AS signature FROM fx_job j
                JOIN runs r ON r.question_id = j.question_id AND r.id <> j.run_id""", []),
            # each distinct signature with one of its runs (whose calls stand for all of them)
            ("""CREATE OR REPLACE TEMP TABLE fx_sig AS
                SELECT (row_number() OVER (ORDER BY signature) - 1)::BIGINT AS code, signature,
                    any_value(run_id) AS run_id FROM (
                    SELECT signature, run_id FROM fx_job UNION ALL SELECT signature, run_id FROM fx_alt
                    UNION ALL SELECT signature, run_id FROM fx_own) GROUP BY signature""", []),
            # The calls of each signature's run (parsed from the trajectory where the run predates
            # stored calls); the serialised calls (hashed) only of signatures compared with alternates.
            ("""CREATE OR REPLACE TEMP TABLE fx_calls AS
                WITH compared AS (SELECT signature FROM fx_job WHERE n_alt_runs > 0 UNION SELECT signature FROM fx_alt)
                SELECT code, signature, run_id, tools, calls, serial,
                    CASE WHEN serial IS NOT NULL THEN coalesce(calls_hash, sha256(serial)) END AS serial_hash FROM (
                    SELECT s.code, s.signature, s.run_id, r.tools, r.calls, r.calls_hash,
                        CASE WHEN r.calls IS NULL OR c.signature IS NULL THEN NULL
                             WHEN len(r.calls) = 0 THEN ? ELSE array_to_string(r.calls, chr(10)) END AS serial
                    FROM fx_sig s JOIN runs r ON r.id = s.run_id LEFT JOIN compared c ON c.signature = s.signature)""",
             [no_calls_text]),
            ("""CREATE OR REPLACE TEMP TABLE fx_text AS
                SELECT (row_number() OVER (ORDER BY hash) - 1)::BIGINT AS code, hash, any_value(text) AS text FROM (
                    SELECT text_hash AS hash, text FROM fx_job WHERE n_alt_runs > 0
                    UNION ALL SELECT response_hash, response FROM fx_job WHERE n_alt_runs > 0
                    UNION ALL SELECT text_hash, text FROM fx_alt UNION ALL SELECT response_hash, response FROM fx_alt
                    UNION ALL SELECT serial_hash, serial FROM fx_calls WHERE serial IS NOT NULL) GROUP BY hash""", []),
        ]  # fmt: skip
        reads = {
            "jobs": ("""SELECT j.job, j.run_id, j.domain, s.code AS sig, j.share, j.status_ok, j.n_steps,
                        j.n_tool_errors, j.n_invalid, j.has_response, j.n_runs, j.n_distinct,
                        coalesce(t.code, -1) AS text_code, coalesce(tr.code, -1) AS response_code
                     FROM fx_job j JOIN fx_sig s ON s.signature = j.signature
                     LEFT JOIN fx_text t ON t.hash = j.text_hash AND j.n_alt_runs > 0
                     LEFT JOIN fx_text tr ON tr.hash = j.response_hash AND j.n_alt_runs > 0
                     ORDER BY j.job""", []),
            "alts": ("""SELECT a.job, (dense_rank() OVER (ORDER BY a.job, a.alt_id) - 1)::BIGINT AS alt,
                        s.code AS sig, t.code AS text_code, tr.code AS response_code
                     FROM fx_alt a JOIN fx_sig s ON s.signature = a.signature
                     JOIN fx_text t ON t.hash = a.text_hash JOIN fx_text tr ON tr.hash = a.response_hash
                     ORDER BY a.job, a.alt_id""", []),
            "own": ("""SELECT o.job, s.code AS sig FROM fx_own o
                       JOIN fx_sig s ON s.signature = o.signature ORDER BY o.job""", []),
            "signatures": ("""SELECT c.code, c.signature, coalesce(t.code, -1) AS serial_code
                              FROM fx_calls c LEFT JOIN fx_text t ON t.hash = c.serial_hash ORDER BY c.code""", []),
            # trajectories are read (a large column) only for the few runs without stored calls
            "parse": ("""SELECT c.code, r.trajectory::VARCHAR AS trajectory FROM fx_calls c
                         JOIN runs r ON r.id = c.run_id WHERE c.calls IS NULL ORDER BY c.code""", []),
            "calls": ("""SELECT code, unnest(tools) AS tool, unnest(calls) AS call,
                             unnest(generate_series(1, len(calls))) AS pos
                         FROM fx_calls WHERE calls IS NOT NULL ORDER BY code, pos""", []),
            "texts": ("""SELECT t.code, t.hash, coalesce(e.dim, 0) AS dim, coalesce(e.vector, ''::BLOB) AS vector,
                            CASE WHEN e.vector IS NULL THEN t.text ELSE '' END AS text
                         FROM fx_text t LEFT JOIN embeddings e ON e.model = ? AND e.text_hash = t.hash
                         ORDER BY t.code""", [embedding_model]),
        }  # fmt: skip
        out: dict[str, dict[str, Any]] = {}
        # One transaction: the scratch tables never reach a commit (each commit of a table costs ~10 ms),
        # and a failed statement's rollback takes them away with it.
        with self._lock, self.transaction():
            for sql, params in statements:
                self.con.execute(sql, params)
            for name, (sql, params) in reads.items():
                out[name] = self.con.execute(sql, params).fetchnumpy()
            for table in ("fx_pick", "fx_job", "fx_alt", "fx_own", "fx_sig", "fx_calls", "fx_text"):
                self.con.execute(f"DROP TABLE temp.{table}")
        return out

    def write_feature_matrix(self, version: str, run_ids: Sequence[str], names: Sequence[str], X: Any) -> int:
        """Feature rows (one JSON object per row of X, keys `names`) replacing stored ones of the
        same run and version; DuckDB writes the JSON (~10x faster than json.dumps per row)."""
        import numpy as np

        _check_feature_names(names)
        X = np.asarray(X, dtype=np.float64)
        if len(run_ids) == 0:
            return 0
        columns = {"run_id": np.asarray(list(run_ids), dtype=object)}
        columns.update({f"c{i}": np.ascontiguousarray(X[:, i]) for i in range(len(names))})
        fields = ", ".join(f'"{n}" := c{i}' for i, n in enumerate(names))
        with self._registered("features_new", columns), self.transaction():
            self.con.execute(
                f'INSERT INTO features SELECT run_id, ?, to_json(struct_pack({fields})), ? '
                'FROM features_new ON CONFLICT (run_id, version) DO UPDATE '
                'SET "values"=excluded."values", created_at=excluded.created_at',
                [version, utcnow()],
            )  # fmt: skip
        return len(run_ids)

    def feature_matrix(self, version: str, names: Sequence[str]) -> tuple[list[str], Any]:
        """(run_ids, float matrix with one column per name) of every feature row of a version.
        DuckDB parses each JSON row once into a struct (50x faster than a json.loads loop); a
        feature a row lacks is NaN."""
        import numpy as np

        _check_feature_names(names)
        struct = "{" + ", ".join(f'"{n}": "DOUBLE"' for n in names) + "}"
        cols = ", ".join(f"coalesce(s.\"{n}\", 'NaN'::DOUBLE) AS c{i}" for i, n in enumerate(names))
        sql = (f"SELECT run_id{', ' + cols if cols else ''} FROM (SELECT run_id, from_json(\"values\", "
               f"'{struct}') AS s FROM features WHERE version=?) ORDER BY run_id")  # fmt: skip
        with self._lock:
            res = self.con.execute(sql, [version]).fetchnumpy()
        run_ids = [str(r) for r in res["run_id"]]
        X = np.empty((len(run_ids), len(names)), dtype=np.float64)
        for i in range(len(names)):
            X[:, i] = np.asarray(res[f"c{i}"], dtype=np.float64)
        return run_ids, X

    def verifier_model(self, model_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM verifier_models WHERE id=?", [model_id])
        return rows[0] if rows else None


def _check_feature_names(names: Sequence[str]) -> None:
    """Feature names go into SQL as identifiers."""
    if not all(re.fullmatch(r"[A-Za-z0-9_]+", n) for n in names):
        raise ValueError("feature names must be letters, digits and _")


def _question(r: dict[str, Any]) -> Question:
    target = json.loads(r["target"]) if r["target"] else None
    return Question(
        id=r["id"], domain=r["domain"], text=r["text"], origin=r["origin"], parent_id=r["parent_id"],
        seed_id=r["seed_id"], example_seed_id=r["example_seed_id"],
        target=[ToolCall(**c) for c in target] if target is not None else None,
        group_id=r["group_id"], status=r["status"] or "new", meta=json.loads(r["meta"] or "{}"),
    )  # fmt: skip


def _run(r: dict[str, Any]) -> Run:
    return Run(
        id=r["id"], question_id=r["question_id"], run_index=r["run_index"],
        trajectory=Trajectory.model_validate_json(r["trajectory"]), prompt_tokens=r["prompt_tokens"] or 0,
        completion_tokens=r["completion_tokens"] or 0, latency_s=r["latency_s"] or 0.0,
        created_at=r["created_at"],
    )  # fmt: skip
