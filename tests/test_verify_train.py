"""Labels, training and scoring over a store, through the library and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from magv.cli import main
from magv.commands.common import console
from magv.config import load_settings
from magv.errors import BadInput, RunFailed
from magv.models import Features, Label, ToolCall
from magv.store import Store
from magv.verify import scoring, training
from magv.verify.features import FEATURE_NAMES, FEATURE_VERSION, compute_features
from magv.verify.labels import gold_labels, match, read_label_file
from magv.verify.models import TEXT_FEATURE, candidate_names
from tests.store_helpers import write_features
from tests.verify_helpers import HashEmbedder, synthetic_store


def _c(*names: str, **args) -> list[ToolCall]:
    return [ToolCall(name=n, arguments=args) for n in names]


@pytest.mark.parametrize(
    ("predicted", "mode", "arguments", "expected"),
    [
        (_c("a", "b"), "strict", False, True),
        (_c("b", "a"), "strict", False, False),
        (_c("b", "a"), "unordered", False, True),
        (_c("a"), "subset", False, True),
        (_c("a", "c"), "subset", False, False),
        (_c("a", "b", "c"), "superset", False, True),
        (_c("a"), "superset", False, False),
        (_c("a", "b", x=2), "strict", False, True),
        (_c("a", "b", x=2), "strict", True, False),
        (_c("a", "a"), "unordered", False, False),  # multiset: one extra call is a difference
    ],
)
def test_match_modes(predicted, mode, arguments, expected):
    assert match(predicted, _c("a", "b", x=1), mode, arguments) is expected


def test_match_rejects_unknown_mode():
    with pytest.raises(BadInput, match="expected one of strict"):
        match([], [], "fuzzy")


def test_gold_labels_and_trust_order(tmp_store):
    truth = synthetic_store(tmp_store, n_questions=20)
    assert gold_labels(tmp_store, "strict", mct_only=True) == 20  # the paper's reading: each MCT
    assert gold_labels(tmp_store, "strict") == 60  # every run of the 20 base questions (R = 3)
    labels = tmp_store.effective_labels()
    mct = {m["run_id"]: m["question_id"] for m in tmp_store.mct()}
    agreement = np.mean([labels[r].correct == truth[q] for r, q in mct.items()])
    assert agreement == 1.0  # runs 0 and 1 always follow the intended trajectory, so it is the MCT
    run_id = next(iter(mct))
    tmp_store.add_labels([Label(run_id=run_id, source="human", correct=not labels[run_id].correct)])
    gold_labels(tmp_store, "unordered")  # a later gold run does not override the human
    assert tmp_store.effective_labels()[run_id].source == "human"
    assert len([lb for lb in tmp_store.labels() if lb.run_id == run_id]) == 2


def test_label_file_errors_name_the_line(tmp_store):
    synthetic_store(tmp_store, n_questions=3)
    run_id = tmp_store.mct()[0]["run_id"]
    path = Path("labels.jsonl")
    path.write_text(
        json.dumps({"run_id": run_id, "correct": True}) + "\n" + '{"run_id": "nope", "correct": false}\n'
    )
    with pytest.raises(BadInput, match="labels.jsonl:2: run_id 'nope' is not in the database"):
        read_label_file(tmp_store, path)
    path.write_text(json.dumps({"question_id": "q0001", "correct": False}) + "\n")
    (label,) = read_label_file(tmp_store, path)
    assert label.source == "import" and label.run_id == tmp_store.mct()[1]["run_id"]


def _trained_store(tmp_path: Path, n: int = 60) -> tuple[Store, object]:
    store = Store(tmp_path / "data" / "magv.duckdb")
    synthetic_store(store, n_questions=n)
    compute_features(store, HashEmbedder())
    gold_labels(store)
    cfg = load_settings(None, database=store.path, verify={"models_dir": str(tmp_path / "models")})
    return store, cfg


def test_train_registers_the_best_model_and_score_predicts_every_row(tmp_path):
    store, cfg = _trained_store(tmp_path)
    result = training.train(store, cfg, repeats=0)
    assert set(result.results) == set(candidate_names())  # the five models, the text model, stacked
    # gold labels are on every base run (180), and every run with siblings has a row and is scored
    assert result.path.is_file() and result.calibrated and result.n_rows == 180
    assert store.latest_verifier_model()["id"] == result.model_id
    assert len(store.cv_results(result.training_id)) == len(candidate_names())
    # Retraining the same data is the same model: nothing new is registered.
    assert training.train(store, cfg, repeats=0).model_id == result.model_id
    assert store.counts()["verifier_models"] == 1

    scored = scoring.score(store, cfg)
    preds = store.predictions(result.model_id)
    assert scored.n == len(preds) == 180
    p = preds[0]
    assert 0.0 <= p.probability <= 1.0 and p.verdict == (p.probability >= 0.5)
    assert 1 <= len(p.contributions) <= 5 and set(p.contributions) <= {*FEATURE_NAMES, TEXT_FEATURE}
    # Verdicts agree with the labels far better than chance on this learnable data.
    labels = store.effective_labels()
    assert np.mean([labels[q.run_id].correct == q.verdict for q in preds if q.run_id in labels]) > 0.75
    store.close()


def test_labels_on_any_run_train_the_model(tmp_path):
    """A label on a run that is not its question's MCT trains the model like any other."""
    store, cfg = _trained_store(tmp_path, n=30)
    store.con.execute("DELETE FROM labels")  # only the labels below
    gold_labels(store, mct_only=True)
    mct = {m["run_id"] for m in store.mct()}
    others = [r for r in store.runs() if "_a" not in r.question_id and r.id not in mct][:20]
    store.add_labels([Label(run_id=r.id, source="human", correct=bool(i % 2)) for i, r in enumerate(others)])
    data = training.training_data(store)
    assert len(data.y) == 50 and {r.id for r in others} <= set(data.run_ids)
    assert set(data.groups) <= {q.group_id for q in store.questions()}
    store.close()


def test_scoring_ten_thousand_rows_stores_one_prediction_each(tmp_path):
    """The score stage over 10,090 feature rows stores one prediction per row with its reasons, and
    says how long each part took (the speed itself: bench/verifier_speed.py, scoring alone)."""
    store, cfg = _trained_store(tmp_path, n=30)
    training.train(store, cfg, names=["logreg", "xgboost"], text=False, repeats=0)
    template = store.features(FEATURE_VERSION)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(10_000):
        base = template[i % len(template)].values
        rows.append(Features(run_id=f"bulk{i:05d}", version=FEATURE_VERSION,
                             values={k: v + float(rng.normal(scale=0.01)) for k, v in base.items()}))  # fmt: skip
    write_features(store, rows)
    result = scoring.score(store, cfg)
    predictions = store.predictions()
    assert result.n == 10_090 and len(predictions) == 10_090
    assert set(result.seconds) == {"load", "predict", "write"} and all(
        v >= 0 for v in result.seconds.values()
    )
    assert len({p.run_id for p in predictions}) == 10_090
    store.close()


def test_training_without_both_classes_fails_clearly(tmp_path):
    store, cfg = _trained_store(tmp_path, n=6)
    for r in store.runs():
        store.add_labels([Label(run_id=r.id, source="human", correct=True)])
    with pytest.raises(RunFailed, match="all 18 labelled trajectories are correct"):
        training.train(store, cfg)
    with pytest.raises(RunFailed, match="no trained verifier"):
        scoring.score(store, cfg)
    store.close()


def test_cli_verify_train_prints_exactly_the_table_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(console, "width", 160)
    store = Store(tmp_path / "data" / "magv.duckdb")
    synthetic_store(store, n_questions=45)
    store.close()
    assert main(["verify", "features", "--no-alternates", "--mct-only", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == 45
    assert main(["verify", "features", "--no-alternates", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == 90  # the other runs of each question
    assert main(["verify", "label", "--json"]) == 0
    labelled = json.loads(capsys.readouterr().out)
    assert labelled["written"] == 135 and labelled["source"] == "gold"  # every run of the 45 questions
    assert main(["verify", "train", "--json", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"models", "best", "select_by", "n", "groups", "bootstrap", "baselines", "judges",
                        "differences", "ablation", "selected"}  # fmt: skip
    assert [m["name"] for m in out["models"]] == [
        "logreg", "svm", "random_forest", "knn", "xgboost", "text", "logreg + text", "random_forest + text",
        "xgboost + text", "agreement + text",
    ]  # fmt: skip
    selected = out["selected"]
    assert set(selected["rows"]) == {"selected", "majority", "agreement", "write agreement", "tfidf"}
    assert selected["seeds"] == [0] and len(selected["chosen"]) == 5
    assert {c["model"] for c in selected["chosen"]} <= {m["name"] for m in out["models"]}
    coverage = [a["coverage"] for a in selected["abstention"]]
    assert coverage[0] == 1.0 and coverage == sorted(coverage, reverse=True)
    metrics = {"accuracy", "balanced_accuracy", "roc_auc", "mcc", "brier", "precision", "recall", "f1"}
    for m in out["models"]:
        assert metrics | {"name", "intervals", "confusion"} <= set(m)
        assert set(m["intervals"]) == {"accuracy", "balanced_accuracy", "roc_auc", "mcc", "brier"}
        assert sum(map(sum, m["confusion"])) == out["n"] == 135
    assert out["best"] in {m["name"] for m in out["models"]} and out["select_by"] == "roc_auc"
    assert (
        set(out["baselines"]) == {"majority", "agreement", "write agreement", "tfidf"} and out["judges"] == []
    )
    assert [a["features"] for a in out["ablation"]][0] == "paper" and out["ablation"][-1]["features"] == "all"
    assert (
        main(["verify", "train", "--bootstrap", "200", "--no-ablation", "--no-text", "--repeats", "1"]) == 0
    )
    table_text = capsys.readouterr().out
    for name in (
        "logreg",
        "svm",
        "random_forest",
        "knn",
        "xgboost",
        "AUROC",
        "baseline: majority",
        "baseline: agreement",
        "baseline: write agreement",
        "baseline: tfidf",
        "nested CV",
        "abstention",
    ):
        assert name in table_text
    assert re.search(r"\[0\.\d{3}, [01]\.\d{3}\]", table_text)  # an interval under each value
    assert "feature ablation" not in table_text
    assert main(["verify", "score", "--json", "--threshold", "0.7"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["scored"] == 135 and scored["threshold"] == 0.7
    assert main(["verify", "score", "--model", "missing"]) == 2


def test_contributions_setting_exact_approx_or_none(tmp_path):
    """verify.contributions picks what scoring explains: the probabilities never change."""
    store, cfg = _trained_store(tmp_path)
    training.train(store, cfg, names=["xgboost"], text=False, repeats=0)
    stored = {}
    for method in ("exact", "approx", "none"):
        scoring.score(
            store, cfg.model_copy(update={"verify": cfg.verify.model_copy(update={"contributions": method})})
        )
        stored[method] = {p.run_id: p for p in store.predictions(store.latest_verifier_model()["id"])}
    runs = list(stored["exact"])
    assert all(stored[m][r].probability == stored["exact"][r].probability for m in stored for r in runs)
    assert all(len(stored["exact"][r].contributions) == 5 for r in runs)
    assert all(len(stored["approx"][r].contributions) == 5 for r in runs)
    assert all(stored["none"][r].contributions == {} for r in runs)
    # Saabas attribution is not TreeSHAP: some row's values differ
    assert any(stored["approx"][r].contributions != stored["exact"][r].contributions for r in runs)
    # Each stored object is the row's largest contributions by magnitude, largest first.
    _, bundle = training.load_registered(store)
    run_ids, X = training.checked_matrix(store, bundle["feature_version"], bundle["features"])
    C = bundle["verifier"].contributions(X)
    for i in range(len(run_ids)):
        ranked = sorted(zip(bundle["features"], C[i].tolist()), key=lambda kv: -abs(kv[1]))[:5]
        ranked = [(k, v) for k, v in ranked if abs(v) > 1e-6]  # below that, ties make any order right
        got = stored["exact"][run_ids[i]].contributions
        assert list(got)[: len(ranked)] == [k for k, _ in ranked]
        assert [got[k] for k, _ in ranked] == pytest.approx([v for _, v in ranked], abs=1e-6)
    store.close()
