"""Faults and interrupts at the command boundary: one clear line, the right exit code, and the
store as it was (or with exactly what the message says was saved)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from magv.cli import main
from magv.store import Store
from magv.verify.features import compute_features
from magv.verify.labels import gold_labels
from magv.verify.training import MIN_TRAINING_ROWS
from tests.reliability_helpers import read_counts
from tests.verify_helpers import HashEmbedder, synthetic_store

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
IMPORT = FIXTURES / "import_multiturn.jsonl"


def _cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, " ".join(capsys.readouterr().err.split())


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "magv.duckdb"
    monkeypatch.setenv("MAGV_DATABASE", str(path))
    monkeypatch.setenv("MAGV_VERIFY__MODELS_DIR", str(tmp_path / "models"))
    return path


def test_ctrl_c_during_import_says_nothing_was_saved_and_nothing_was(db, monkeypatch, capsys):
    with Store(db) as store:
        store.start_pipeline_run("earlier", "imported", {"kind": "import"})
    before = read_counts(db)

    def interrupted(self, runs):
        raise KeyboardInterrupt  # the user's Ctrl-C, after the questions were inserted

    monkeypatch.setattr(Store, "add_runs", interrupted)
    code, err = _cli(["import", "trajectories", str(IMPORT)], capsys)
    assert code == 130
    assert f"interrupted: nothing of {IMPORT} was saved (an import is written in one transaction)" in err
    assert read_counts(db) == before
    monkeypatch.undo()
    monkeypatch.setenv("MAGV_DATABASE", str(db))
    assert _cli(["import", "trajectories", str(IMPORT)], capsys)[0] == 0  # and the rerun does it all


def test_a_full_disk_during_export_is_one_line_and_leaves_no_file(db, tmp_path, monkeypatch, capsys):
    assert _cli(["import", "trajectories", str(IMPORT)], capsys)[0] == 0
    target = tmp_path / "out.jsonl"

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr("magv.outputs.os.replace", full)  # the one writer of every output
    code, err = _cli(["export", "--out", str(target)], capsys)
    assert code == 1 and f"{target}: No space left on device" in err and "Traceback" not in err
    assert not target.exists() and not list(tmp_path.glob(".out.jsonl*"))


@pytest.mark.parametrize("n_questions", [1, 2])  # 3 and 6 gold-labelled runs
def test_training_on_too_few_rows_refuses_instead_of_registering(db, capsys, n_questions):
    with Store(db) as store:
        synthetic_store(store, n_questions=n_questions)
        compute_features(store, HashEmbedder())
        gold_labels(store)
        n = len(store.effective_labels())
        store.con.execute("CHECKPOINT")
    before = read_counts(db)
    code, err = _cli(["verify", "train"], capsys)
    assert code == 1 and "nothing was trained" in err, err
    assert f"training needs at least {MIN_TRAINING_ROWS}" in err or "all" in err
    assert read_counts(db) == before and before["verifier_models"] == 0
    assert not (db.parent / "models").exists() or not list((db.parent / "models").iterdir())
    assert n < MIN_TRAINING_ROWS


def test_a_database_write_error_is_one_line_and_keeps_what_was_committed(db, monkeypatch, capsys):
    """No room for the .wal: DuckDB raises an IOException in the middle of a write."""
    import duckdb

    with Store(db) as store:
        store.start_pipeline_run("earlier", "imported", {"kind": "import"})
    before = read_counts(db)

    def no_room(self, runs):
        raise duckdb.IOException(f'Could not write file "{db}.wal": No space left on device\nmore detail')

    monkeypatch.setattr(Store, "add_runs", no_room)
    code, err = _cli(["import", "trajectories", str(IMPORT)], capsys)
    assert code == 1 and "Traceback" not in err
    assert f'database error: Could not write file "{db}.wal": No space left on device' in err
    assert "more detail" not in err and read_counts(db) == before
