"""The pipeline database keeps only whole writes: a stage's write that fails (or whose process is
killed) half-way leaves nothing of it; a file from a newer magv is refused untouched; `magv db
backup` copies every committed row, also those still in the write-ahead log."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from magv.cli import main
from magv.config import Settings
from magv.models import Question, Run, ToolCall, Trajectory, make_id
from magv.pipeline.base import StageReport
from magv.pipeline.generate import GenerateItem, GenerateResult
from magv.pipeline.generate import write as write_generate
from magv.pipeline.respond import RespondResult, RunOutcome
from magv.pipeline.respond import write as write_respond
from magv.pipeline.worker import WorkerContext
from magv.store import SCHEMA_VERSION, Store
from tests.reliability_helpers import ROOT, read_counts


def _question(i: int) -> Question:
    return Question(id=f"q{i}", domain="retail", text=f"Where is order W100000{i}?", origin="investigator",
                    seed_id="s1", group_id="s1", target=[ToolCall(name="get_order_details", arguments={})])  # fmt: skip


def _run(qid: str, i: int) -> Run:
    t = Trajectory.from_calls([ToolCall(name="get_order_details", arguments={"order_id": "W1000001"})], "ok")
    return Run(id=Run.derive_id(qid, i), question_id=qid, run_index=i, trajectory=t)


class Boom(RuntimeError):
    pass


def test_a_respond_write_that_fails_half_way_keeps_nothing(tmp_store, monkeypatch):
    results = [
        RespondResult(_question(i), [RunOutcome(_run(f"q{i}", r), []) for r in range(3)]) for i in range(4)
    ]
    calls = {"n": 0}
    set_mct = tmp_store.set_mct

    def fail_on_third(rows):
        calls["n"] += 1
        if calls["n"] == 3:  # two questions' runs and MCTs are written inside the transaction by now
            raise Boom("disk full")
        return set_mct(rows)

    monkeypatch.setattr(tmp_store, "set_mct", fail_on_third)
    with pytest.raises(Boom):
        write_respond(tmp_store, None, results, StageReport("respond"))
    assert tmp_store.counts()["runs"] == 0 and tmp_store.counts()["mct"] == 0
    monkeypatch.setattr(tmp_store, "set_mct", set_mct)
    write_respond(tmp_store, None, results, StageReport("respond"))  # the retry writes it whole
    assert tmp_store.counts()["runs"] == 12 and tmp_store.counts()["mct"] == 4


def test_a_generate_write_that_fails_half_way_keeps_nothing(tmp_store, tmp_path, monkeypatch):
    from magv.agents.parsing import QuestionsReply

    ctx = WorkerContext(Settings(database=tmp_path / "x.duckdb", domain="retail"))
    seeds = ctx.domain().seeds()
    results = [
        GenerateResult(GenerateItem(make_id("gen", s.id), s, seeds[0], 3),
                       QuestionsReply(questions=[f"Question {j} about {s.id}?" for j in range(3)]))
        for s in seeds[1:4]
    ]  # fmt: skip
    add_generation = tmp_store.add_generation
    done = {"n": 0}

    def fail_on_second(*args):
        done["n"] += 1
        if done["n"] == 2:
            raise Boom("lost the connection")
        return add_generation(*args)

    monkeypatch.setattr(tmp_store, "add_generation", fail_on_second)
    with pytest.raises(Boom):
        write_generate(tmp_store, ctx, results, StageReport("generate"))
    counts = tmp_store.counts()
    assert counts["questions"] == 0 and counts["generations"] == 0


def test_a_bulk_insert_failing_in_its_third_batch_keeps_none_of_the_first_two(tmp_store):
    rows = [{"id": f"q{i}", "domain": "d", "text": f"question {i}", "origin": "import", "group_id": "g"}
            for i in range(1200)]  # fmt: skip
    rows[1100]["text"] = None  # NOT NULL: the third batch of 500 fails
    with pytest.raises(Exception, match="NOT NULL"):
        tmp_store._insert("questions", rows)
    assert tmp_store.counts()["questions"] == 0


KILLED_WRITER = """
import os, signal, sys
from magv.store import Store
from tests.test_store_safety import _question, _run
store = Store(sys.argv[1])
store.add_questions([_question(0)])  # committed
with store.transaction():
    store.add_questions([_question(i) for i in range(1, 50)])
    store.add_runs([_run("q1", r) for r in range(3)])
    os.kill(os.getpid(), signal.SIGKILL)  # killed inside the stage's write
"""


def test_a_process_killed_inside_a_write_leaves_none_of_it(tmp_path):
    db = tmp_path / "magv.duckdb"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(db)], cwd=ROOT, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    counts = read_counts(db)
    assert counts["questions"] == 1 and counts["runs"] == 0
    with Store(db) as store:  # opens cleanly for the rerun, which writes the rest
        store.add_questions([_question(i) for i in range(1, 50)])
        assert store.counts()["questions"] == 50


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "argv",
    [["db", "info"], ["db", "backup", "copy.duckdb"], ["report"], ["export"],
     ["run", "--targets", "1", "--runs", "1"], ["import", "trajectories", "lines.jsonl"], ["verify", "features"]],
    ids=lambda a: " ".join(a[:2]),
)  # fmt: skip
def test_a_database_from_a_newer_magv_is_refused_untouched(argv, tmp_path, monkeypatch, capsys):
    db = tmp_path / "magv.duckdb"
    with Store(db) as store:
        store.add_questions([_question(1)])
        store.con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
        store.con.execute("CHECKPOINT")
    (tmp_path / "lines.jsonl").write_text(
        (ROOT / "tests" / "fixtures" / "import_multiturn.jsonl").read_text()
    )
    monkeypatch.setenv("MAGV_DATABASE", str(db))
    monkeypatch.setenv("MAGV_LLM__ENDPOINTS", '["http://127.0.0.1:9/v1"]')
    before = _sha256(db)
    assert main(argv) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert (
        f"database: {db} has schema version {SCHEMA_VERSION + 1}, newer than this magv understands "
        f"({SCHEMA_VERSION}); upgrade magv to read it" in message
    )
    assert _sha256(db) == before
    assert not (tmp_path / "copy.duckdb").exists() and not (tmp_path / "report").exists()


WAL_WRITER = """
import os, signal, sys
from magv.store import Store
from tests.test_store_safety import _question, _run
store = Store(sys.argv[1])
store.con.execute("CHECKPOINT")
store.add_questions([_question(i) for i in range(30)])
store.add_runs([_run("q1", r) for r in range(5)])
os.kill(os.getpid(), signal.SIGKILL)  # committed, but only in the write-ahead log
"""


def test_backup_of_a_crashed_runs_database_holds_every_committed_row(tmp_path, monkeypatch, capsys):
    db = tmp_path / "magv.duckdb"
    proc = subprocess.run([sys.executable, "-c", WAL_WRITER, str(db)], cwd=ROOT, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (tmp_path / "magv.duckdb.wal").stat().st_size > 0
    monkeypatch.setenv("MAGV_DATABASE", str(db))
    copy = tmp_path / "backup" / "copy.duckdb"
    copy.parent.mkdir()
    assert main(["db", "backup", str(copy), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backup"] == str(copy) and out["tables"]["questions"] == 30 and out["tables"]["runs"] == 5
    assert not copy.with_name("copy.duckdb.wal").exists()  # the copy stands alone
    assert read_counts(copy) == read_counts(db)
    with Store(copy, read_only=True) as store:
        assert len(store.runs(["q1"])) == 5 and store.schema_version == SCHEMA_VERSION
    assert main(["db", "backup", str(copy)]) == 2  # never over an existing file
    assert "already exists" in capsys.readouterr().err
