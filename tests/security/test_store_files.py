"""The store never changes a file it should not: another application's database (DuckDB or not) is
refused byte-for-byte untouched, a read-only open never creates or migrates a file, and a `db
backup` that fails half-way (a full disk) leaves nothing behind that blocks its retry."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3

import duckdb
import pytest

from magv.cli import main
from magv.errors import BadInput, RunFailed
from magv.models import Question
from magv.store import Store


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _foreign_duckdb(path) -> None:
    """A database of another application that happens to have a `runs` table."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, started TIMESTAMP, outcome VARCHAR)")
    con.execute("CREATE TABLE meta (key VARCHAR, value VARCHAR)")  # even one named like magv's
    con.execute("INSERT INTO runs VALUES (1, now(), 'ok'), (2, now(), 'failed')")
    con.execute("INSERT INTO meta VALUES ('owner', 'someone else')")
    con.close()


def _question() -> Question:
    return Question(id="q1", domain="retail", text="Where is my order?", origin="seed", group_id="q1")


@pytest.mark.parametrize("read_only", [False, True], ids=["write", "read"])
def test_a_duckdb_file_of_another_application_is_refused_untouched(tmp_path, read_only):
    path = tmp_path / "other.duckdb"
    _foreign_duckdb(path)
    before = _sha256(path)
    with pytest.raises(BadInput) as err:
        Store(path, read_only=read_only)
    message = str(err.value)
    assert str(path) in message and "not a magv database" in message and "meta, runs" in message
    assert _sha256(path) == before
    assert not path.with_name("other.duckdb.wal").exists()
    con = duckdb.connect(str(path), read_only=True)  # still exactly the other application's
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
        assert {
            r[0]
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name='runs'"
            ).fetchall()
        } == {"id", "started", "outcome"}
        assert {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()} == {
            "runs",
            "meta",
        }
    finally:
        con.close()


@pytest.mark.parametrize("argv", [["db", "info"], ["db", "backup", "copy.duckdb"], ["import", "trajectories", "x.jsonl"]],
                         ids=lambda a: " ".join(a[:2]))  # fmt: skip
def test_the_cli_refuses_another_applications_database_with_exit_2(argv, tmp_path, monkeypatch, capsys):
    path = tmp_path / "other.duckdb"
    _foreign_duckdb(path)
    # a valid line: the file passes its own checks, so what is refused is the database
    line = {
        "question_id": "q",
        "question": "hi",
        "run": 0,
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    }
    (tmp_path / "x.jsonl").write_text(json.dumps(line) + "\n")
    before = _sha256(path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAGV_DATABASE", str(path))
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "not a magv database" in err and str(path) in err
    assert _sha256(path) == before and not (tmp_path / "copy.duckdb").exists()


def test_a_foreign_file_with_a_schema_version_of_its_own_is_refused_untouched(tmp_path):
    path = tmp_path / "other.duckdb"
    _foreign_duckdb(path)
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.close()
    before = _sha256(path)
    with pytest.raises(
        BadInput, match="not a magv database: it has a meta.schema_version but not the tables"
    ):
        Store(path)
    assert _sha256(path) == before


def test_a_sqlite_file_is_refused_before_duckdb_opens_it(tmp_path):
    # DuckDB would try to load (or download) its sqlite extension to open this
    path = tmp_path / "app.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (id INTEGER)")
    con.commit()
    con.close()
    before = _sha256(path)
    for read_only in (False, True):
        with pytest.raises(BadInput, match="is not a DuckDB database file"):
            Store(path, read_only=read_only)
    assert _sha256(path) == before


@pytest.mark.parametrize("content", [b"", b"just some text\n"], ids=["empty", "text"])
def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path, content):
    path = tmp_path / "magv.duckdb"
    path.write_bytes(content)
    with pytest.raises(BadInput, match="not a DuckDB database file"):
        Store(path)
    assert path.read_bytes() == content


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_path_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    path = tmp_path / "magv.duckdb"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)  # reading it would block until a writer comes
    for read_only in (False, True):
        with pytest.raises(BadInput, match=f"database: {path} is (a directory|not a regular file)"):
            Store(path, read_only=read_only)


def test_a_read_only_open_never_creates_a_file_or_its_directory(tmp_path):
    path = tmp_path / "missing" / "magv.duckdb"
    with pytest.raises(BadInput, match="no such file"):
        Store(path, read_only=True)
    assert not path.parent.exists()


def test_a_read_only_open_of_an_empty_duckdb_file_does_not_make_it_a_magv_one(tmp_path):
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    before = _sha256(path)
    with pytest.raises(BadInput, match="not a magv database"):
        Store(path, read_only=True)
    assert _sha256(path) == before
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] == 0


def test_the_read_only_cli_commands_create_nothing(tmp_path, monkeypatch):
    path = tmp_path / "data" / "magv.duckdb"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAGV_DATABASE", str(path))
    for argv in (["db", "info"], ["report"], ["export", "--out", "out.jsonl"]):
        main(argv)
        assert not path.exists() and not path.parent.exists(), argv


def _full_disk_after(n_bytes: int):
    """shutil.copyfile that writes n_bytes of the copy and then fails as a full disk does."""

    def copyfile(src, dst, *args, **kwargs):
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            fout.write(fin.read(n_bytes))
        raise OSError(errno.ENOSPC, "No space left on device")

    return copyfile


def test_a_backup_onto_a_full_disk_leaves_nothing_and_the_retry_succeeds(tmp_path, monkeypatch):
    store = Store(tmp_path / "magv.duckdb")
    store.add_questions([_question()])
    dest = tmp_path / "backup" / "copy.duckdb"
    dest.parent.mkdir()
    real_copy = shutil.copyfile
    monkeypatch.setattr("magv.store.connection.shutil.copyfile", _full_disk_after(4096))
    with pytest.raises(RunFailed, match="No space left on device"):
        store.backup(dest)
    assert list(dest.parent.iterdir()) == []  # neither the partial copy nor a temporary file
    monkeypatch.setattr("magv.store.connection.shutil.copyfile", real_copy)
    assert store.backup(dest) == dest
    store.close()
    with Store(dest, read_only=True) as copy:
        assert [q.id for q in copy.questions()] == ["q1"]


def test_db_backup_on_a_full_disk_exits_1_and_can_be_retried(tmp_path, monkeypatch, capsys):
    db = tmp_path / "magv.duckdb"
    with Store(db) as store:
        store.add_questions([_question()])
    monkeypatch.setenv("MAGV_DATABASE", str(db))
    dest = tmp_path / "copy.duckdb"
    monkeypatch.setattr("magv.store.connection.shutil.copyfile", _full_disk_after(100))
    assert main(["db", "backup", str(dest)]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not dest.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["magv.duckdb"]
    monkeypatch.undo()
    monkeypatch.setenv("MAGV_DATABASE", str(db))
    assert main(["db", "backup", str(dest)]) == 0
    with Store(dest, read_only=True) as copy:
        assert copy.counts()["questions"] == 1
