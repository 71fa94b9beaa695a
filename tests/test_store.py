import duckdb
import pytest

from magv.errors import BadInput, StoreLocked
from magv.models import Label, LLMCall, Question, Run, ToolCall, Trajectory, text_hash
from magv.store import MIGRATIONS, SCHEMA_VERSION, TABLES, Store


def _question(i: int) -> Question:
    text = f"where is my order {i}?"
    return Question(
        id=Question.derive_id("retail", "investigator", text), domain="retail", text=text,
        origin="investigator", target=[ToolCall(name="track", arguments={"order": i})], group_id="s1",
    )  # fmt: skip


def _run(q: Question, i: int) -> Run:
    t = Trajectory.from_calls([ToolCall(name="track", arguments={"order": i})], response="shipped")
    return Run(id=Run.derive_id(q.id, i), question_id=q.id, run_index=i, trajectory=t, prompt_tokens=5)


def test_writing_the_same_rows_twice_leaves_one_copy(tmp_store):
    qs = [_question(i) for i in range(5)]
    assert tmp_store.add_questions(qs) == 5
    assert tmp_store.add_questions(qs) == 0
    runs = [_run(q, i) for q in qs for i in range(3)]
    assert tmp_store.add_runs(runs) == 15
    assert tmp_store.add_runs(runs) == 0
    call = LLMCall(
        id="c1", key="k1", role="responder", model="m", endpoint="e", request={}, response={"x": 1}
    )
    assert tmp_store.add_llm_calls([call, call]) == 1
    counts = tmp_store.counts()
    assert counts["questions"] == 5 and counts["runs"] == 15 and counts["llm_calls"] == 1


def test_rows_read_back_equal(tmp_store):
    q = _question(1)
    tmp_store.add_questions([q])
    tmp_store.add_runs([_run(q, 0)])
    assert tmp_store.questions() == [q]
    (run,) = tmp_store.runs()
    assert run.trajectory == _run(q, 0).trajectory


def test_a_run_keeps_its_tools_calls_and_text_hashes(tmp_store):
    q = _question(1)
    t = Trajectory.from_calls([ToolCall(name="get_order", arguments={"z": 1, "a": [2, {"y": 3, "b": 4}]}),
                               ToolCall(name="cancel_order", arguments={})])  # fmt: skip
    tmp_store.add_questions([q])
    tmp_store.add_runs([Run(id="r1", question_id=q.id, run_index=0, trajectory=t)])
    row = tmp_store.query("SELECT signature, tools, calls FROM runs")[0]
    assert row["tools"] == ["get_order", "cancel_order"]
    assert row["calls"] == ['get_order({"a":[2,{"b":4,"y":3}],"z":1})', "cancel_order({})"]
    assert row["signature"] == t.signature()
    hashes = tmp_store.query("SELECT response_hash, calls_hash FROM runs")[0]
    assert hashes["response_hash"] == text_hash("")
    assert hashes["calls_hash"] == text_hash('get_order({"a":[2,{"b":4,"y":3}],"z":1})\ncancel_order({})')
    assert tmp_store.query("SELECT text_hash FROM questions")[0]["text_hash"] == text_hash(q.text)


def test_label_trust_order(tmp_store):
    tmp_store.add_labels([Label(run_id="r", source="gold", correct=True)])
    assert tmp_store.effective_labels()["r"].source == "gold"
    tmp_store.add_labels([Label(run_id="r", source="human", correct=False)])
    tmp_store.add_labels([Label(run_id="r", source="import", correct=True)])
    eff = tmp_store.effective_labels()["r"]
    assert eff.source == "human" and eff.correct is False
    assert len(tmp_store.labels()) == 3  # all kept


def test_transaction_rolls_back_every_write(tmp_store):
    with pytest.raises(RuntimeError), tmp_store.transaction():
        tmp_store.add_questions([_question(1)])
        tmp_store.add_runs([_run(_question(1), 0)])
        raise RuntimeError("fault mid-stage")
    assert tmp_store.counts()["questions"] == 0 and tmp_store.counts()["runs"] == 0


def test_replay_cache_returns_only_successful_calls(tmp_store):
    ok = LLMCall(id="a", key="k", role="r", model="m", endpoint="e", request={}, response={"text": "hi"})
    bad = LLMCall(id="b", key="k2", role="r", model="m", endpoint="e", request={}, error="500")
    tmp_store.add_llm_calls([ok, bad])
    assert tmp_store.cached_response("k") == {"text": "hi"}
    assert tmp_store.cached_response("k2") is None


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", [str(SCHEMA_VERSION + 1)])
    con.close()
    with pytest.raises(BadInput, match="newer"):
        Store(path)


def test_not_a_magv_database_is_refused(tmp_path):
    path = tmp_path / "other.duckdb"
    duckdb.connect(str(path)).close()
    with pytest.raises(BadInput, match="not a magv database"):
        Store(path, read_only=True)


def test_second_writer_is_refused_with_a_clear_message(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "locked.duckdb"
    Store(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(path)!r}); print('ok',flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(StoreLocked, match="in use by another magv process"):
            Store(path)
    finally:
        holder.kill()
        holder.wait()


def test_backup_is_a_consistent_copy(tmp_store, tmp_path):
    tmp_store.add_questions([_question(i) for i in range(3)])
    dest = tmp_store.backup(tmp_path / "copy.duckdb")
    with Store(dest, read_only=True) as copy:
        assert copy.counts()["questions"] == 3
    with pytest.raises(BadInput, match="already exists"):
        tmp_store.backup(dest)


def test_all_tables_exist(tmp_store):
    assert set(tmp_store.counts()) == set(TABLES)


# -- schema migrations -------------------------------------------------------------------------


def _version_1_file(path, with_later_columns: bool = False) -> None:
    """A file as magv wrote it at schema version 1: migration 1's tables (as first released),
    optionally with some of what releases added while the version stayed 1."""
    con = duckdb.connect(str(path))
    con.execute(MIGRATIONS[0].sql)
    if with_later_columns:
        con.execute("ALTER TABLE questions ADD COLUMN text_hash VARCHAR")
        con.execute("ALTER TABLE runs ADD COLUMN tools VARCHAR[]")
        con.execute("ALTER TABLE generations ADD COLUMN kind VARCHAR")
        con.execute("CREATE TABLE embeddings (model VARCHAR, text_hash VARCHAR, dim INTEGER, vector BLOB, "
                    "created_at TIMESTAMP, PRIMARY KEY (model, text_hash))")  # fmt: skip
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.execute(
        "INSERT INTO questions (id, domain, text, origin, group_id) VALUES ('q1', 'retail', 'Where?', 'seed', 'q1')"
    )
    con.close()


def _columns(path, table: str) -> set[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {
            r[0]
            for r in con.execute(
                f"SELECT column_name FROM duckdb_columns() WHERE table_name = '{table}'"
            ).fetchall()
        }
    finally:
        con.close()


def test_migrations_are_numbered_from_one_and_a_new_file_gets_them_all(tmp_store):
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert tmp_store.schema_version == SCHEMA_VERSION == MIGRATIONS[-1].version >= 2
    assert {"tools", "calls", "response_hash", "calls_hash"} <= _columns_of(tmp_store, "runs")


def _columns_of(store, table: str) -> set[str]:
    rows = store.query("SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table])
    return {r["column_name"] for r in rows}


@pytest.mark.parametrize("with_later_columns", [False, True], ids=["plain", "columns-already-added"])
def test_a_version_1_file_is_migrated_forward_keeping_its_rows(tmp_path, with_later_columns):
    path = tmp_path / "v1.duckdb"
    _version_1_file(path, with_later_columns)
    assert "calls" not in _columns(path, "runs")
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [q.id for q in store.questions()] == ["q1"]
        assert {"text_hash"} <= _columns_of(store, "questions")
        assert {"tools", "calls", "response_hash", "calls_hash"} <= _columns_of(store, "runs")
        assert "kind" in _columns_of(store, "generations") and set(store.counts()) == set(TABLES)
        q = _question(1)
        store.add_questions([q])
        store.add_runs([_run(q, 0)])  # writes the migrated columns
        assert store.query("SELECT tools FROM runs")[0]["tools"] == ["track"]


def test_a_failing_migration_leaves_the_file_at_its_old_version(tmp_path, monkeypatch):
    from magv.store import schema

    path = tmp_path / "v1.duckdb"
    _version_1_file(path)
    broken = schema.Migration(
        SCHEMA_VERSION + 1, "broken", "ALTER TABLE runs ADD COLUMN extra INTEGER; SELECT * FROM no_such_table"
    )
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, broken))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", broken.version)
    with pytest.raises(duckdb.CatalogException, match="no_such_table"):
        Store(path)
    monkeypatch.undo()
    with Store(path, read_only=True) as store:
        assert store.schema_version == 1  # not even migration 2 was kept: one transaction
    assert not {"extra", "calls"} & _columns(path, "runs")


def test_a_read_only_store_reads_a_version_1_file_without_migrating_it(tmp_path):
    path = tmp_path / "v1.duckdb"
    _version_1_file(path)
    before = path.read_bytes()
    with Store(path, read_only=True) as store:
        assert store.schema_version == 1 and [q.id for q in store.questions()] == ["q1"]
    assert path.read_bytes() == before
