"""The data card beside every export, and the warning when an export holds unverified runs."""

from __future__ import annotations

import json
from pathlib import Path

from magv.cli import main
from magv.store import Store
from tests.report_fixtures import MODELS, build_report_store, populate


def test_export_writes_a_data_card_with_provenance(tmp_path, monkeypatch, capsys):
    db = tmp_path / "magv.duckdb"
    info = build_report_store(db)
    monkeypatch.chdir(tmp_path)
    assert main(["--database", str(db), "export", "--out", "all.jsonl", "--json"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    card = json.loads(Path(printed["card"]["json"]).read_text())
    assert Path(printed["card"]["json"]) == Path("all.jsonl.card.json")
    assert Path(printed["card"]["markdown"]).is_file()
    c = card["counts"]
    # the jsonl export holds the alternates' runs (one each) beside the base questions' runs
    runs = info.base_runs + len(info.alternates)
    assert c["runs"] == printed["rows"] == runs
    assert c["questions"] == printed["questions"] == len(info.base_questions)
    assert c["alternates"] == printed["alternates"] == len(info.alternates)
    assert card["export"]["format"] == "jsonl" and card["domains"] == {"retail": runs}
    # the verified count is the one --verified-only exports
    assert main(["--database", str(db), "export", "--out", "v.jsonl", "--verified-only", "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert c["verified_runs"] == verified["rows"] == printed["verified_runs"]
    assert 0 < c["verified_runs"] < c["runs"]
    assert "--verified-only exports only" in captured.err and printed["warning"]
    with Store(db, read_only=True) as store:
        labelled = store.query(
            "SELECT count(DISTINCT l.run_id) AS n FROM labels l JOIN runs r ON r.id = l.run_id "
            "JOIN questions q ON q.id = r.question_id WHERE q.origin <> 'alternate'"
        )[0]["n"]
    assert c["labelled_runs"] == labelled and sum(card["label_sources"].values()) == labelled
    roles = {p["role"] for p in card["prompts"]}
    assert roles == {"investigator", "responder", "reverse", "judge"}
    assert all(p["template_hash"] == "abc123" for p in card["prompts"])
    v = card["verifier"]
    assert v["model_id"] == printed["model_id"] == info.model_id
    assert set(v["cross_validation"]) == set(MODELS)
    assert v["cross_validation"]["knn"]["f1"] == info.cv["knn"]["f1"]
    md = Path(printed["card"]["markdown"]).read_text()
    assert md.startswith("# Data card: all.jsonl")
    assert (
        f"verified runs (label correct, or no label and verifier verdict correct): {c['verified_runs']}" in md
    )
    assert "| responder | gemma-3-270m | responder.j2 | `abc123` |" in md and "| knn |" in md


def test_export_without_verified_runs_warns(tmp_path, monkeypatch, capsys):
    db = tmp_path / "m.duckdb"
    with Store(db) as store:
        populate(store, with_verifier=False, with_eval=False)
        store.query("DELETE FROM labels")
    monkeypatch.chdir(tmp_path)
    assert main(["--database", str(db), "export", "--out", "x.jsonl"]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "none of the" in captured.err and "--verified-only" in captured.err
    assert captured.out.strip().splitlines()[-1] == "x.jsonl"
    card = json.loads((tmp_path / "x.jsonl.card.json").read_text())
    assert card["counts"]["verified_runs"] == 0 and card["verifier"] is None
    assert "No verifier scored these runs." in (tmp_path / "x.jsonl.card.md").read_text()
