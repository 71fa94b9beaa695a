"""SIGKILL `magv run` inside generation, responding, reverse engineering and features, rerun, and
get the store an uninterrupted run makes, without paying any finished LLM call twice.

`magv run` is a real subprocess (its own DuckDB connection, threads, Prefect client); the fake
server runs in the test process so it can kill the subprocess while a request of the wanted stage is
open, i.e. exactly inside that stage. pipeline_runs is left out of the comparison: it is the log of
attempts (five here, against one), not of results.
"""

from __future__ import annotations

import json

import pytest

from tests.reliability_helpers import (
    MagvProcess,
    StageServer,
    duplicate_keys,
    magv_env,
    paid_twice,
    query,
    read_counts,
    run_here,
    runs_per_question,
    successful_keys,
)

R, K = 2, 2
ARGS = ["run", "--json", "--targets", "4", "--per-target", "3", "--questions", "6", "--runs", str(R),
        "--alternates", str(K)]  # fmt: skip
# Small chunks, two in flight: a kill lands between written and unwritten chunks of a stage.
SETTINGS = {"pipeline__chunk_size": 2, "pipeline__workers": 2, "pipeline__concurrency": 2}


def _results(db) -> dict[str, int]:
    counts = read_counts(db)
    counts.pop("pipeline_runs")
    counts.pop("meta")
    return counts


def _count(db, sql: str) -> int:
    return query(db, sql)[0][0]


@pytest.mark.integration
def test_sigkill_in_each_stage_then_rerun_equals_an_uninterrupted_run(
    tmp_path, prefect_harness, monkeypatch, capsys
):
    full, part = tmp_path / "full", tmp_path / "part"
    full.mkdir()
    part.mkdir()
    with StageServer(latency_s=0.03) as srv:
        # The uninterrupted run and the final rerun run here: only the killed ones need a process.
        code, _, err = run_here(ARGS, magv_env(full, srv.base_url, **SETTINGS), monkeypatch, capsys)
        assert code == 0, err[-3000:]
        per_stage = dict(srv.stage_counts)
        reference_replies = srv.counts["reply"]
        assert {"generate", "respond", "reverse", "respond_alternates", "features"} <= set(per_stage)
        expected = _results(full / "magv.duckdb")
        origins = [origin for origin, _ in runs_per_question(full / "magv.duckdb").values()]
        n_base, n_alt = len(origins) - origins.count("alternate"), origins.count("alternate")
        assert n_base == 6 + 4 and n_alt == K * n_base
        db = part / "magv.duckdb"
        env = magv_env(part, srv.base_url, **SETTINGS)

        def killed_in(stage: str, n: int) -> None:
            srv.reset()
            proc = MagvProcess(ARGS, env, part, name=f"killed-in-{stage}")
            srv.kill(proc.pid, stage, n)
            code = proc.wait()
            assert srv.killed.is_set() and code == -9, f"not killed in {stage}: {proc.stderr[-2000:]}"

        # Each kill comes with the stage's last request: earlier chunks are written, the last is not.
        killed_in("generate", per_stage["generate"])
        assert _count(db, "SELECT count(*) FROM generations") < 4
        assert _count(db, "SELECT count(*) FROM runs") == 0

        killed_in("respond", per_stage["respond"])
        base_runs = sum(n for origin, n in runs_per_question(db).values() if origin != "alternate")
        assert 0 < base_runs < n_base * R  # some chunks written, some not
        assert _count(db, "SELECT count(*) FROM generations") == 4

        killed_in("reverse", per_stage["reverse"])
        reversed_ = _count(db, "SELECT count(*) FROM generations WHERE kind = 'reverse'")
        assert 0 < reversed_ < n_base
        assert all(n == R for origin, n in runs_per_question(db).values() if origin != "alternate")

        killed_in("features", 1)
        assert _count(db, "SELECT count(*) FROM features") == 0
        assert sum(n for _, n in runs_per_question(db).values()) == n_base * R + n_alt

        srv.reset()
        code, out, err = run_here(ARGS, env, monkeypatch, capsys)
        assert code == 0, err[-3000:]
        # Answers the server gave beyond the uninterrupted run's and those the kills cut off: calls
        # answered in the moments before a kill, not yet in the call log, are sent again (a handful;
        # every call the log holds is replayed, as the checks below show).
        resent = srv.counts["reply"] - 2 * reference_replies - srv.open_at_kills
        assert 0 <= resent <= 4 * SETTINGS["pipeline__workers"] * SETTINGS["pipeline__concurrency"] * 2

    assert _results(db) == expected
    assert duplicate_keys(db) == dict.fromkeys(duplicate_keys(db), 0)
    assert paid_twice(db) == []
    # The same finished calls, each paid once: the killed runs' calls were replayed, not re-sent.
    assert successful_keys(db) == successful_keys(full / "magv.duckdb")
    runs = runs_per_question(db)
    assert all(n == (1 if origin == "alternate" else R) for origin, n in runs.values())
    assert len(runs) == n_base + n_alt
    statuses = [r[0] for r in query(db, "SELECT status FROM pipeline_runs ORDER BY started_at")]
    assert statuses == ["abandoned"] * 4 + ["completed"]
    summary = json.loads(out)["summary"]
    assert summary["faults"]["llm_errors"] == 0 and summary["llm_calls"]["errors"] == 0
