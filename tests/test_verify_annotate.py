"""`magv verify annotate`: keys from a pipe, labels saved at once, a new session resumes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from magv.cli import main
from magv.store import Store
from magv.verify.labels import annotate, describe, pending_annotations
from tests.verify_helpers import synthetic_store

MAGV = Path(sys.executable).parent / "magv"


def _store(tmp_path: Path, n: int = 4) -> Path:
    path = tmp_path / "data" / "magv.duckdb"
    with Store(path) as store:
        synthetic_store(store, n_questions=n)
    return path


def _human(path: Path) -> dict[str, bool]:
    with Store(path, read_only=True) as store:
        return {lb.run_id: lb.correct for lb in store.labels() if lb.source == "human"}


def test_session_saves_each_answer_and_stops_on_quit(tmp_store):
    synthetic_store(tmp_store, n_questions=3)
    items = pending_annotations(tmp_store)
    assert [i.question.id for i in items] == ["q0000", "q0001", "q0002"]
    keys = iter(["c", "s", "q"])
    counts = annotate(tmp_store, items, lambda item, n, total: next(keys))
    assert counts == {"correct": 1, "incorrect": 0, "skipped": 1, "remaining": 1}
    # Skipped and unanswered ones come back; the labelled one does not.
    assert [i.question.id for i in pending_annotations(tmp_store)] == ["q0001", "q0002"]
    assert "Question: customer question 0" in describe(items[0]) and "Response: answer 0" in describe(
        items[0]
    )


def test_cli_reads_keys_from_stdin_and_resumes(tmp_path, monkeypatch, capsys):
    db = _store(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("c\nx\ni\n"))  # x is refused and asked again
    assert main(["verify", "annotate"]) == 0  # input ends after two answers: stop, keep them
    out = capsys.readouterr().out
    assert "unknown key 'x'" in out and "saved 1 correct, 1 incorrect" in out and "2 left" in out
    assert sorted(_human(db).values()) == [False, True]
    monkeypatch.setattr(sys, "stdin", io.StringIO("i\nc\n"))
    assert main(["verify", "annotate"]) == 0
    assert "Question: customer question 2" in capsys.readouterr().out  # starts where it stopped
    assert len(_human(db)) == 4
    assert main(["verify", "annotate"]) == 0
    assert "nothing to annotate" in capsys.readouterr().out


@pytest.mark.integration
def test_annotate_driven_through_a_real_pipe(tmp_path):
    db = _store(tmp_path, n=3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGV_")}
    env["MAGV_DATABASE"] = str(db)
    proc = subprocess.run([str(MAGV), "verify", "annotate"], input="i\ns\nq\n", capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "saved 0 correct, 1 incorrect; skipped 1; 1 left" in proc.stdout
    assert list(_human(db).values()) == [False]
