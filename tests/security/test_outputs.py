"""The one rule for every file magv writes (magv/outputs.py), held writer by writer: `verify score
--output`, `export` (jsonl and parquet) with its data card, `report`, `report --compare`, `db
backup` and the model file of `verify train`. Never onto an input, the live database or a file
DuckDB owns beside it, or a model file; a device or FIFO written through, a symlink followed, an
existing file's mode kept; `-` and /dev/stdout are standard output."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from magv import outputs
from magv.cli import main
from magv.errors import BadInput
from magv.store import Store
from magv.verify.importer import import_trajectories
from tests.service_helpers import import_lines, train_model


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _jsonl(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def null_device(tmp_path: Path) -> Path:
    """A character device that discards what is written, made in tmp_path when this process may
    (as root: a check that fails must not replace the machine's /dev/null), else /dev/null."""
    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        return node
    except (PermissionError, OSError):
        if os.geteuid() == 0:
            pytest.skip("root without mknod: a failing check could replace /dev/null")
        return Path("/dev/null")


class FifoReader:
    """Reads a FIFO in a thread, as the other end of a shell pipe would."""

    def __init__(self, path: Path):
        os.mkfifo(path)
        self.path, self.data = path, b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with open(self.path, "rb") as fh:
            self.data = fh.read()

    def text(self) -> str:
        self.thread.join(timeout=30)
        return self.data.decode()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return train_model(tmp_path_factory.mktemp("model") / "verifier.skops")


@pytest.fixture
def embeddings(monkeypatch):
    """The settings' embedder pointed at the fake server (no sentence model loaded)."""
    from tests.fakellm import FakeLLMServer

    with FakeLLMServer() as srv:
        monkeypatch.setenv("MAGV_EMBEDDINGS__BACKEND", "endpoint")
        monkeypatch.setenv("MAGV_EMBEDDINGS__ENDPOINT", srv.base_url)
        yield


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    """A small store of imported trajectories, the settings' database."""
    path = tmp_path / "data" / "magv.duckdb"
    src = _jsonl(tmp_path / "import.jsonl", import_lines(2))
    with Store(path) as store:
        import_trajectories(store, src)
        store.con.execute("CHECKPOINT")
    monkeypatch.setenv("MAGV_DATABASE", str(path))
    return path


# -- verify score --output --------------------------------------------------------------------------


def _score(src: Path, out: str | Path, model: Path) -> int:
    return main(["verify", "score", "--input", str(src), "--output", str(out), "--model-file", str(model)])


def test_score_output_onto_its_input_is_refused_and_the_input_kept(tmp_path, model_file, capsys):
    src = _jsonl(tmp_path / "traj.jsonl", import_lines(1))
    before = _sha(src)
    assert _score(src, src, model_file) == 2
    err = capsys.readouterr().err
    assert "--output" in err and "input file" in err and "traj.jsonl" in err
    assert _sha(src) == before


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_score_output_through_a_link_to_its_input_is_refused(tmp_path, model_file, capsys, link):
    src = _jsonl(tmp_path / "traj.jsonl", import_lines(1))
    before = _sha(src)
    alias = tmp_path / "alias.jsonl"
    (os.symlink if link == "symlink" else os.link)(src, alias)
    assert _score(src, alias, model_file) == 2
    assert "input file" in capsys.readouterr().err
    assert _sha(src) == before and (alias.is_symlink() == (link == "symlink"))


def test_score_output_onto_the_model_file_is_refused_and_the_model_kept(tmp_path, model_file, capsys):
    src = _jsonl(tmp_path / "traj.jsonl", import_lines(1))
    before = _sha(model_file)
    assert _score(src, model_file, model_file) == 2
    assert "model file" in capsys.readouterr().err
    assert _sha(model_file) == before


@pytest.mark.parametrize("suffix", ["", ".wal"])
def test_score_output_onto_the_live_database_or_its_log_is_refused(tmp_path, db, model_file, capsys, suffix):
    src = _jsonl(tmp_path / "traj.jsonl", import_lines(1))
    target = Path(f"{db}{suffix}")
    before = _sha(db)
    assert _score(src, target, model_file) == 2
    err = capsys.readouterr().err
    assert "database" in err and str(target) in err
    assert _sha(db) == before and not Path(f"{db}.wal").exists()
    with Store(db, read_only=True) as store:
        assert len(store.runs()) == 6


def test_score_output_to_a_character_device_is_written_through(tmp_path, model_file, embeddings, capsys):
    """The CI idiom `--output /dev/null --fail-under X`: the device stays a device."""
    src = _jsonl(tmp_path / "traj.jsonl", import_lines(2))
    null = null_device(tmp_path)
    args = ["verify", "score", "--input", str(src), "--output", str(null), "--model-file", str(model_file)]
    assert main([*args, "--fail-under", "0.4"]) == 0
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert "gate passed" in capsys.readouterr().err
    assert not [p for p in null.parent.iterdir() if p.name.startswith(f".{null.name}")]


def test_score_output_to_a_fifo_is_written_through(tmp_path, model_file, embeddings):
    src = _jsonl(tmp_path / "traj.jsonl", import_lines(1))
    reader = FifoReader(tmp_path / "pipe")
    assert _score(src, reader.path, model_file) == 0
    rows = [json.loads(x) for x in reader.text().splitlines()]
    assert len(rows) == 3 and rows[0]["question_id"] == "p0"
    assert stat.S_ISFIFO(os.lstat(reader.path).st_mode)


def test_score_output_through_a_symlink_replaces_its_target_and_keeps_the_link(
    tmp_path, model_file, embeddings
):
    src = _jsonl(tmp_path / "traj.jsonl", import_lines(1))
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    assert _score(src, link, model_file) == 0
    assert link.is_symlink() and len(real.read_text().splitlines()) == 3


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o664])
def test_score_output_keeps_the_mode_of_the_file_it_replaces(tmp_path, model_file, embeddings, mode):
    src = _jsonl(tmp_path / "traj.jsonl", import_lines(1))
    out = tmp_path / "verdicts.jsonl"
    out.write_text("old\n")
    out.chmod(mode)
    assert _score(src, out, model_file) == 0
    assert stat.S_IMODE(out.stat().st_mode) == mode and len(out.read_text().splitlines()) == 3


def test_a_new_score_output_gets_the_usual_mode_not_a_private_one(tmp_path, model_file, embeddings):
    src = _jsonl(tmp_path / "traj.jsonl", import_lines(1))
    out = tmp_path / "verdicts.jsonl"
    old = os.umask(0o022)
    try:
        assert _score(src, out, model_file) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_score_output_dev_stdout_is_standard_output(tmp_path, model_file, embeddings, capsys):
    src = _jsonl(tmp_path / "traj.jsonl", import_lines(1))
    assert _score(src, "/dev/stdout", model_file) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


# -- export and its data card -----------------------------------------------------------------------


def _export(out: str | Path, fmt: str = "jsonl", force: bool = True, *extra: str) -> int:
    return main(["export", "--format", fmt, "--out", str(out), *(["--force"] if force else []), *extra])


@pytest.mark.parametrize("fmt", ["jsonl", "openai", "parquet"])
def test_export_onto_the_database_is_refused_even_with_force(db, capsys, fmt):
    before = _sha(db)
    assert _export(db, fmt) == 2
    assert "the database" in capsys.readouterr().err
    assert _sha(db) == before


def test_an_export_whose_data_card_would_land_on_the_database_writes_nothing_there(
    tmp_path, monkeypatch, capsys
):
    path = tmp_path / "x.jsonl.card.json"  # a database named like the card of `--out x.jsonl`
    with Store(path) as store:
        import_trajectories(store, _jsonl(tmp_path / "import.jsonl", import_lines(1)))
        store.con.execute("CHECKPOINT")
    monkeypatch.setenv("MAGV_DATABASE", str(path))
    before = _sha(path)
    assert _export(tmp_path / "x.jsonl") == 2
    assert "data card" in capsys.readouterr().err
    assert _sha(path) == before


def test_export_keeps_the_mode_of_the_export_and_card_it_replaces(tmp_path, db):
    out = tmp_path / "e.jsonl"
    assert _export(out) == 0
    card = out.with_name("e.jsonl.card.md")
    out.chmod(0o640)
    card.chmod(0o604)
    assert _export(out) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and stat.S_IMODE(card.stat().st_mode) == 0o604


def test_export_to_a_character_device_is_written_through_without_a_card(tmp_path, db, capsys):
    null = null_device(tmp_path)
    assert _export(null, "jsonl", False, "--json") == 0
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert not list(null.parent.glob(f"{null.name}.card.*"))
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 6 and summary["card"] is None


def test_export_to_a_fifo_is_written_through(tmp_path, db):
    reader = FifoReader(tmp_path / "pipe")
    assert _export(reader.path, force=False) == 0
    assert len(reader.text().splitlines()) == 6 and stat.S_ISFIFO(os.lstat(reader.path).st_mode)


def test_a_parquet_export_to_a_device_is_refused(tmp_path, db, capsys):
    null = null_device(tmp_path)
    assert _export(null, "parquet") == 2
    assert "regular file" in capsys.readouterr().err
    assert stat.S_ISCHR(os.stat(null).st_mode)


# -- report and report --compare ------------------------------------------------------------------


def test_report_files_keep_their_mode_and_never_land_on_the_database(tmp_path, db, capsys):
    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--worst", "0", "--samples", "0"]) == 0
    (out / "report.html").chmod(0o640)
    assert main(["report", "--out", str(out), "--worst", "0", "--samples", "0"]) == 0
    assert stat.S_IMODE((out / "report.html").stat().st_mode) == 0o640
    (out / "metrics.json").unlink()
    (out / "metrics.json").symlink_to(db)
    before = _sha(db)
    assert main(["report", "--out", str(out), "--worst", "0", "--samples", "0"]) == 2
    assert "database" in capsys.readouterr().err
    assert _sha(db) == before


def test_report_compare_never_lands_on_a_compared_database(tmp_path, db, capsys):
    other = tmp_path / "other.duckdb"
    with Store(other) as store:
        import_trajectories(store, _jsonl(tmp_path / "o.jsonl", import_lines(1)))
        store.con.execute("CHECKPOINT")
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.json").symlink_to(other)
    before = _sha(other)
    assert main(["report", "--compare", str(db), str(other), "--out", str(out)]) == 2
    assert "database" in capsys.readouterr().err
    assert _sha(other) == before


# -- db backup -----------------------------------------------------------------------------------


def test_backup_onto_the_databases_write_ahead_log_is_refused(db, capsys):
    wal = Path(f"{db}.wal")
    assert main(["db", "backup", str(wal)]) == 2
    assert "DuckDB owns" in capsys.readouterr().err
    assert not wal.exists()
    assert main(["db", "info"]) == 0  # the store still opens, whole


def test_backup_beside_a_stale_write_ahead_log_is_refused(tmp_path, db, capsys):
    dest = tmp_path / "copy.duckdb"
    Path(f"{dest}.wal").write_bytes(b"a log of another database")
    assert main(["db", "backup", str(dest)]) == 2
    assert "replay" in capsys.readouterr().err
    assert not dest.exists()


def test_backup_keeps_refusing_an_existing_file(tmp_path, db, capsys):
    dest = tmp_path / "copy.duckdb"
    dest.write_text("mine")
    assert main(["db", "backup", str(dest)]) == 2
    assert dest.read_text() == "mine"


# -- model files --------------------------------------------------------------------------------


def test_a_model_file_keeps_its_mode_and_never_lands_on_the_database(tmp_path, tmp_store):
    path = tmp_path / "models" / "m.skops"
    train_model(path)
    path.chmod(0o640)
    train_model(path, seed=1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    with pytest.raises(BadInput, match="the database"):
        train_model(tmp_store.path)


# -- the helper's own cases ----------------------------------------------------------------------


def test_a_directory_socket_or_stdout_for_a_file_only_writer_is_refused(tmp_path):
    with pytest.raises(BadInput, match="is a directory"):
        outputs.write_text(tmp_path, "x")
    sock_path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(sock_path))
        with pytest.raises(BadInput, match="socket"):
            outputs.write_text(sock_path, "x")
    finally:
        sock.close()
    with pytest.raises(BadInput, match="standard output"), outputs.atomic_output("-"):
        pass


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "a.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError), outputs.atomic_output(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
