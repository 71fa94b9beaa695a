"""The tables of the pipeline's DuckDB file and the numbered migrations that build them.

A file's `meta.schema_version` is the number of the last migration applied to it. Opening a file
for writing applies the missing ones in order, in one transaction with the new version number; a
file of a newer magv is refused untouched, and so is a file with tables but no magv metadata (a
database of another application).

To change the schema, append a migration; never edit one that has shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from magv.errors import BadInput


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


_TABLES_V1 = """
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE pipeline_runs (
    id VARCHAR PRIMARY KEY, domain VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP,
    status VARCHAR, settings JSON, stages JSON, summary JSON);
CREATE TABLE questions (
    id VARCHAR PRIMARY KEY, domain VARCHAR NOT NULL, text VARCHAR NOT NULL, origin VARCHAR NOT NULL,
    parent_id VARCHAR, seed_id VARCHAR, example_seed_id VARCHAR, target JSON, group_id VARCHAR,
    status VARCHAR, meta JSON, created_at TIMESTAMP);
CREATE TABLE generations (
    id VARCHAR PRIMARY KEY, domain VARCHAR, seed_id VARCHAR, example_seed_id VARCHAR,
    status VARCHAR, error VARCHAR, n_questions INTEGER, created_at TIMESTAMP);
CREATE TABLE selections (
    question_id VARCHAR PRIMARY KEY, kept BOOLEAN, reason VARCHAR, cluster INTEGER,
    x DOUBLE, y DOUBLE, created_at TIMESTAMP);
CREATE TABLE runs (
    id VARCHAR PRIMARY KEY, question_id VARCHAR NOT NULL, run_index INTEGER NOT NULL,
    trajectory JSON, status VARCHAR, signature VARCHAR, n_steps INTEGER, n_tool_errors INTEGER,
    n_invalid INTEGER, response VARCHAR, prompt_tokens INTEGER, completion_tokens INTEGER,
    latency_s DOUBLE, created_at TIMESTAMP);
CREATE TABLE mct (
    question_id VARCHAR PRIMARY KEY, run_id VARCHAR, signature VARCHAR, share DOUBLE,
    n_runs INTEGER, n_distinct INTEGER);
CREATE TABLE llm_calls (
    id VARCHAR PRIMARY KEY, key VARCHAR, role VARCHAR, model VARCHAR, endpoint VARCHAR,
    template VARCHAR, template_hash VARCHAR, request JSON, response JSON, prompt_tokens INTEGER,
    completion_tokens INTEGER, latency_s DOUBLE, retries INTEGER, error VARCHAR,
    created_at TIMESTAMP);
CREATE INDEX llm_calls_key ON llm_calls (key);
CREATE TABLE features (
    run_id VARCHAR, version VARCHAR, "values" JSON, created_at TIMESTAMP,
    PRIMARY KEY (run_id, version));
CREATE TABLE labels (
    run_id VARCHAR, source VARCHAR, correct BOOLEAN, detail VARCHAR, created_at TIMESTAMP,
    PRIMARY KEY (run_id, source));
CREATE TABLE verifier_models (
    id VARCHAR PRIMARY KEY, name VARCHAR, path VARCHAR, feature_version VARCHAR, features JSON,
    metrics JSON, created_at TIMESTAMP);
CREATE TABLE cv_results (
    training_id VARCHAR, name VARCHAR, metrics JSON, created_at TIMESTAMP,
    PRIMARY KEY (training_id, name));
CREATE TABLE predictions (
    run_id VARCHAR, model_id VARCHAR, probability DOUBLE, verdict BOOLEAN, threshold DOUBLE,
    contributions JSON, created_at TIMESTAMP, PRIMARY KEY (run_id, model_id));
CREATE TABLE judge_verdicts (
    run_id VARCHAR, model VARCHAR, correct BOOLEAN, reason VARCHAR, prompt_tokens INTEGER,
    completion_tokens INTEGER, latency_s DOUBLE, error VARCHAR, created_at TIMESTAMP,
    PRIMARY KEY (run_id, model));
CREATE TABLE eval_results (
    eval_id VARCHAR, config VARCHAR, question_id VARCHAR, results JSON, created_at TIMESTAMP,
    PRIMARY KEY (eval_id, config, question_id));
"""

# What magv releases added to files while the version stayed 1, so a version-1 file may have any of
# it already: IF NOT EXISTS.
_ADDED_UNDER_V1 = """
ALTER TABLE generations ADD COLUMN IF NOT EXISTS kind VARCHAR;
CREATE TABLE IF NOT EXISTS embeddings (
    model VARCHAR, text_hash VARCHAR, dim INTEGER, vector BLOB, created_at TIMESTAMP,
    PRIMARY KEY (model, text_hash));
ALTER TABLE questions ADD COLUMN IF NOT EXISTS text_hash VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS tools VARCHAR[];
ALTER TABLE runs ADD COLUMN IF NOT EXISTS calls VARCHAR[];
ALTER TABLE runs ADD COLUMN IF NOT EXISTS response_hash VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS calls_hash VARCHAR;
"""

_CASCADE = """
CREATE TABLE cascade_decisions (
    run_id VARCHAR PRIMARY KEY, question_id VARCHAR, step VARCHAR NOT NULL, correct BOOLEAN,
    confidence DOUBLE, probability DOUBLE, detail VARCHAR, prompt_tokens BIGINT, completion_tokens BIGINT,
    calls DOUBLE, costs JSON, cascade_id VARCHAR, created_at TIMESTAMP);
"""

_QUESTION_CHECKS = """
CREATE TABLE question_checks (
    question_id VARCHAR PRIMARY KEY, version VARCHAR, passed BOOLEAN, answerable BOOLEAN, voice BOOLEAN,
    identifiers BOOLEAN, reasons JSON, repair VARCHAR, original VARCHAR, created_at TIMESTAMP);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the pipeline tables as first released", _TABLES_V1),
    Migration(
        2,
        "added while the version stayed 1: generations.kind; the embeddings table; stored text hashes and "
        "calls: questions.text_hash (the embeddings key of the text), runs.tools and runs.calls (each "
        "call's tool name and canonical call), runs.response_hash, runs.calls_hash. NULL in rows "
        "written before them",
        _ADDED_UNDER_V1,
    ),
    Migration(
        3,
        "the cascade_decisions table: which step of `magv verify cascade` decided each trajectory, its "
        "verdict (NULL while it waits in the human queue) and the LLM cost spent on it",
        _CASCADE,
    ),
    Migration(
        4,
        "the question_checks table: the rule checks of each generated question (answerable, one request "
        "in a customer's voice, an alternate's identifiers), why it failed, and what a rule repaired",
        _QUESTION_CHECKS,
    ),
    Migration(
        5,
        "runs.agent (which agent answered: kind, name, code hash, version; docs/agents.md) and runs.cost_usd "
        "(what the run cost when the agent said). NULL in rows written before them",
        "ALTER TABLE runs ADD COLUMN agent JSON; ALTER TABLE runs ADD COLUMN cost_usd DOUBLE;",
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version

TABLES = (
    "pipeline_runs", "questions", "generations", "selections", "runs", "mct", "llm_calls",
    "features", "labels", "verifier_models", "cv_results", "predictions", "judge_verdicts",
    "eval_results", "embeddings", "cascade_decisions", "question_checks",
)  # fmt: skip
# Tables that migrations after the first add: a file at an older version lacks them rightly.
_LATER_TABLES = ("embeddings", "cascade_decisions", "question_checks")


def _user_objects(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Tables and views of the file (not DuckDB's own, not temporary)."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT internal AND NOT temporary "
        "UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT internal AND NOT temporary"
    ).fetchall()
    return sorted(r[0] for r in rows)


def file_version(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """The schema version of an open file: 0 for a file without tables (a new one), the version
    its magv metadata records otherwise. A file with tables but no magv metadata is refused: magv
    would otherwise add its tables and columns to another application's database."""
    objects = _user_objects(con)
    if not objects:
        return 0
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except duckdb.Error:
        row = None
    if row is None:
        shown = ", ".join(objects[:5]) + (", ..." if len(objects) > 5 else "")
        raise BadInput(
            f"database: {path} is not a magv database: it holds tables ({shown}) but no magv metadata "
            "(meta.schema_version); magv leaves it unchanged. Give a magv database or a new path "
            "(--database or MAGV_DATABASE)"
        )
    try:
        version = int(row[0])
    except (TypeError, ValueError):
        raise BadInput(
            f"database: {path}: meta.schema_version is {row[0]!r}, not a number; the file is damaged"
        ) from None
    missing = [t for t in TABLES if t not in objects and t not in _LATER_TABLES]  # migration 1 made them
    if version >= 1 and missing:
        raise BadInput(
            f"database: {path} is not a magv database: it has a meta.schema_version but not the tables "
            f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}; magv leaves it unchanged"
        )
    return version


def check_readable(path: Path, version: int, read_only: bool) -> None:
    """Refuse a file this magv cannot use: a newer schema, or (to read) a file without tables."""
    if version > SCHEMA_VERSION:
        raise BadInput(
            f"database: {path} has schema version {version}, newer than this magv "
            f"understands ({SCHEMA_VERSION}); upgrade magv to read it"
        )
    if read_only and version == 0:
        raise BadInput(f"database: {path}: not a magv database (no tables; run a stage first)")


def migrate(con: duckdb.DuckDBPyConnection, version: int) -> int:
    """Apply the migrations after `version`, all in one transaction with the new version number;
    returns the version reached."""
    con.execute("BEGIN")
    try:
        for m in MIGRATIONS:
            if m.version > version:
                con.execute(m.sql)
        con.execute(
            "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [str(SCHEMA_VERSION)],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
