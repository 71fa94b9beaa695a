"""Alternates survive an export and import: the jsonl lines of an alternate's run name its base
question, and the importer restores the link, so the verifier's alternate features are the same
in the store the dataset moved to."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from magv.errors import BadInput
from magv.export import export
from magv.mct import most_common_trajectory as most_common
from magv.models import Run
from magv.store import Store
from magv.verify.features import FEATURE_NAMES, FEATURE_VERSION, compute_features
from magv.verify.importer import import_trajectories
from tests.verify_helpers import HashEmbedder, synthetic_store

# A run's id is the store's own; everything else of a line moves with it.
STORE_SPECIFIC = ("run_id",)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _by_run(lines: list[dict]) -> dict[tuple[str, int], dict]:
    out = {}
    for line in lines:
        line = {**line, "meta": {k: v for k, v in line["meta"].items() if k not in STORE_SPECIFIC}}
        out[(line["question_id"], line["run"])] = line
    return out


def _features(store: Store) -> dict[str, dict[str, float]]:
    return {f.run_id: f.values for f in store.features(FEATURE_VERSION)}


@pytest.fixture()
def moved(tmp_path):
    """A pipeline-like store, its jsonl export, and a fresh store that imported it."""
    source = Store(tmp_path / "source.duckdb")
    synthetic_store(source, n_questions=9, per_group=3, runs=3, alternates=2, seed=3)
    # as the respond_alternates stage does, an alternate's run is its MCT (the helper leaves it out)
    source.set_mct([most_common([r]) for r in source.runs() if "_a" in r.question_id])
    out = tmp_path / "dataset.jsonl"
    result = export(source, "jsonl", out)
    target = Store(tmp_path / "target.duckdb")
    imported = import_trajectories(target, out, domain="retail")
    yield source, target, out, result, imported
    source.close()
    target.close()


def test_export_and_import_keep_questions_runs_and_alternates(moved):
    source, target, out, result, imported = moved
    assert result.rows == 9 * 3 + 9 * 2 and result.questions == 9 and result.alternates == 18
    assert Counter(q.origin for q in source.questions()) == {"investigator": 9, "alternate": 18}
    assert Counter(q.origin for q in target.questions()) == {"import": 9, "alternate": 18}
    assert target.counts()["runs"] == source.counts()["runs"] == 45 and imported.alternates == 18
    ids = imported.question_ids
    stored = {q.id: q for q in target.questions()}
    for alt in source.questions(origin="alternate"):
        moved_alt = stored[ids[alt.id]]
        assert moved_alt.parent_id == ids[alt.parent_id] and moved_alt.text == alt.text
        # grouped cross-validation keeps an alternate with its base, as in the source store
        assert moved_alt.group_id == stored[ids[alt.parent_id]].group_id
        assert alt.group_id == next(q for q in source.questions() if q.id == alt.parent_id).group_id
    # a re-import adds nothing and refuses nothing
    again = import_trajectories(target, out, domain="retail")
    assert (again.questions, again.runs, again.labels) == (0, 0, 0)


def test_alternate_features_are_the_same_in_both_stores(moved):
    source, target, _out, _result, imported = moved
    assert compute_features(source, HashEmbedder()) > 0
    assert compute_features(target, HashEmbedder()) > 0
    before, after = _features(source), _features(target)
    base_runs = [r for r in source.runs() if not r.question_id.count("_a")]
    assert base_runs and all(r.id in before for r in base_runs)
    alternate_names = [
        n for n in FEATURE_NAMES if n.split("_")[0] in {"em", "edit", "gedit", "ss", "question"}
    ]
    assert {"em_mean", "gedit_max", "ss_min", "question_sim_mean"} <= set(alternate_names)
    for run in base_runs:
        want = before[run.id]
        got = after[Run.derive_id(imported.question_ids[run.question_id], run.run_index)]
        assert want["n_alternates"] == got["n_alternates"] == 2
        for name in FEATURE_NAMES:  # the alternate features and every other one
            assert got[name] == pytest.approx(want[name], abs=1e-9), (run.id, name)
    # the features do use the alternates: without them the EM against alternates is neutral
    assert any(v["em_mean"] != 0.5 for v in after.values())


def test_an_imported_dataset_exports_back_to_the_same_lines(moved, tmp_path):
    _source, target, out, _result, _imported = moved
    back = tmp_path / "back.jsonl"
    export(target, "jsonl", back)
    first, second = _by_run(_lines(out)), _by_run(_lines(back))
    assert second == first
    # and a store that imported the re-export writes it byte for byte again
    with Store(tmp_path / "third.duckdb") as third:
        import_trajectories(third, back, domain="retail")
        export(third, "jsonl", tmp_path / "third.jsonl")
    assert sorted(_lines(tmp_path / "third.jsonl"), key=str) == sorted(_lines(back), key=str)


def _alternate_line(parent: str, qid: str = "alt-1") -> dict:
    return {"question_id": qid, "question": "where is my parcel, asked another way", "run": 0,
            "messages": [{"role": "user", "content": "where is my parcel, asked another way"},
                         {"role": "assistant", "content": "on its way"}],
            "label": None, "meta": {"origin": "alternate", "parent_question_id": parent}}  # fmt: skip


def _base_line(qid: str = "base-1") -> dict:
    return {"question_id": qid, "question": "where is my parcel?", "run": 0,
            "messages": [{"role": "user", "content": "where is my parcel?"},
                         {"role": "assistant", "content": "on its way"}], "label": None, "meta": {}}  # fmt: skip


def _write(path: Path, *lines: dict) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_an_alternate_of_an_unknown_base_is_refused_naming_the_line(tmp_path):
    bad = _write(tmp_path / "bad.jsonl", _base_line(), _alternate_line("no-such-question"))
    with Store(tmp_path / "s.duckdb") as store:
        with pytest.raises(BadInput, match=r"bad\.jsonl:2: meta\.parent_question_id: 'no-such-question'"):
            import_trajectories(store, bad)
        assert store.counts()["questions"] == 0 and store.counts()["runs"] == 0  # nothing half written
        missing = _alternate_line("base-1")
        del missing["meta"]["parent_question_id"]
        with pytest.raises(BadInput, match=r"bad\.jsonl:1: meta\.parent_question_id: an alternate"):
            import_trajectories(store, _write(bad, missing))


def test_an_alternate_links_to_a_base_imported_before_and_keeps_its_origin(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        base = import_trajectories(store, _write(tmp_path / "base.jsonl", _base_line()))
        alt = import_trajectories(store, _write(tmp_path / "alt.jsonl", _alternate_line("base-1")))
        stored = {q.id: q for q in store.questions()}
        linked = stored[alt.question_ids["alt-1"]]
        assert linked.origin == "alternate" and linked.parent_id == base.question_ids["base-1"]
        assert linked.group_id == stored[base.question_ids["base-1"]].group_id
        # the same question_id given as a base question now conflicts with the stored alternate
        plain = _alternate_line("base-1")
        plain["meta"] = {}
        with pytest.raises(BadInput, match=r"alt2\.jsonl:1: meta\.origin: .*already stored as an alternate"):
            import_trajectories(store, _write(tmp_path / "alt2.jsonl", plain))
        replaced = import_trajectories(store, tmp_path / "alt2.jsonl", replace=True)
        assert store.questions(ids=[replaced.question_ids["alt-1"]])[0].origin == "import"


def test_an_alternate_may_come_first_and_name_its_base_by_group(tmp_path):
    base = {**_base_line("trial-7"), "group_id": "task-7"}
    path = _write(tmp_path / "grouped.jsonl", _alternate_line("task-7"), base)
    with Store(tmp_path / "s.duckdb") as store:
        result = import_trajectories(store, path)
        stored = {q.id: q for q in store.questions()}
        linked, parent = stored[result.question_ids["alt-1"]], stored[result.question_ids["task-7"]]
        assert (linked.origin, linked.parent_id, linked.group_id) == ("alternate", parent.id, "task-7")
        export(store, "jsonl", tmp_path / "out.jsonl")
    back = {line["question_id"]: line for line in _lines(tmp_path / "out.jsonl")}
    assert back["alt-1"]["meta"]["parent_question_id"] == "task-7" and back["trial-7"]["group_id"] == "task-7"
