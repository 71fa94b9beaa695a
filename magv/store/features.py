"""`features`: one row of feature values per verified trajectory and feature version. The bulk
SQL the features stage reads its inputs with and writes its matrix with lives here (the feature
definitions are in magv/verify/features.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from magv.models import Features, utcnow
from magv.store.connection import Connection


class FeatureRows(Connection):
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


def _check_feature_names(names: Sequence[str]) -> None:
    """Feature names go into SQL as identifiers."""
    if not all(re.fullmatch(r"[A-Za-z0-9_]+", n) for n in names):
        raise ValueError("feature names must be letters, digits and _")
