"""Honest evaluation of the verifier: metrics and their group-bootstrap intervals, baselines and the
judge on the same rows, out-of-fold predictions stored for the report, one definition of the best
model, the feature ablation, bench/verifier_quality.py, and model files written atomically."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    matthews_corrcoef,
    roc_auc_score,
)

from magv.commands.common import console
from magv.config import load_settings
from magv.datacard import _verifier
from magv.definitions import best_model
from magv.export import export
from magv.models import JudgeVerdict
from magv.report.html import write_report
from magv.report.metrics import collect
from magv.store import Store
from magv.verify import models as models_module
from magv.verify import training
from magv.verify.evaluation import (
    AGREEMENT_FEATURES,
    FAMILIES,
    best_threshold,
    feature_family,
    feature_sets,
    majority_oof,
)
from magv.verify.features import FEATURE_NAMES, compute_features
from magv.verify.labels import gold_labels
from magv.verify.metrics import GroupBootstrap, ScoreColumns, evaluate_scorer, point_metrics, weighted_metrics
from magv.verify.models import Verifier, grouped_splits, load_model, save_model
from tests.verify_helpers import HashEmbedder, synthetic_store

REPO = Path(__file__).resolve().parent.parent
INTERVALS = ("accuracy", "balanced_accuracy", "roc_auc", "mcc", "brier")


# -- metrics -------------------------------------------------------------------------------------


def _scored(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    proba = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1).round(2)  # rounded: many ties
    return y, proba, rng.integers(0, 25, n)


def test_point_metrics_are_scikit_learns():
    y, proba, _ = _scored()
    m = point_metrics(y, ScoreColumns.from_proba(proba))
    pred = proba >= 0.5
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, proba))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, pred))
    assert m["brier"] == pytest.approx(brier_score_loss(y, proba))
    assert m["f1"] == pytest.approx(f1_score(y, pred))


def test_weights_are_repeated_rows():
    """A bootstrap replicate's weights score exactly like the rows repeated that often."""
    y, proba, _ = _scored()
    s = ScoreColumns.from_proba(proba)
    w = np.random.default_rng(1).integers(0, 4, len(y)).astype(float)
    idx = np.repeat(np.arange(len(y)), w.astype(int))
    weighted = weighted_metrics(y, s, w[None])
    repeated = point_metrics(y[idx], s.take(idx))
    for k, v in repeated.items():
        assert weighted[k][0] == pytest.approx(v), k


def test_group_bootstrap_draws_whole_groups_and_is_seeded():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    boot = GroupBootstrap(groups, n=50, seed=3)
    (w,) = list(boot.batches())
    assert w.shape == (50, 6)
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 3] == w[:, 5])  # a group's rows move together
    assert np.all(w[:, [0, 2, 3]].sum(axis=1) == 3)  # as many draws as groups
    assert np.array_equal(w, next(GroupBootstrap(groups, n=50, seed=3).batches()))
    sub = next(boot.batches(np.array([2, 3])))  # a subset keeps the same draws
    assert np.array_equal(sub, w[:, [2, 3]])


def test_intervals_contain_the_point_estimate_and_narrow_with_more_groups():
    y, proba, groups = _scored(400)
    small = evaluate_scorer(
        y[:80], ScoreColumns.from_proba(proba[:80]), GroupBootstrap(groups[:80] % 8, 500, 0)
    )
    large = evaluate_scorer(y, ScoreColumns.from_proba(proba), GroupBootstrap(np.arange(len(y)), 500, 0))
    for m in (small, large):
        for k in INTERVALS:
            low, high = m["intervals"][k]
            assert low <= m[k] <= high, k
    width = {
        k: m["intervals"]["accuracy"][1] - m["intervals"]["accuracy"][0]
        for k, m in (("s", small), ("l", large))
    }
    assert width["l"] < width["s"]


def test_best_threshold_and_majority():
    x = np.array([0.1, 0.2, 0.6, 0.7, 0.9, 0.3])
    y = np.array([0, 0, 1, 1, 1, 0])
    assert best_threshold(x, y) == (0.6, 1.0)
    assert best_threshold(np.zeros(4), np.zeros(4, dtype=int))[0] == float("inf")  # always incorrect
    splits = [(np.array([0, 1, 2]), np.array([3, 4, 5])), (np.array([3, 4, 5]), np.array([0, 1, 2]))]
    s = majority_oof(y, splits)
    assert s.pred.tolist() == [1, 1, 1, 0, 0, 0]  # each fold: the other fold's majority
    assert s.proba[:3] == pytest.approx([2 / 3] * 3) and s.proba[3:] == pytest.approx([1 / 3] * 3)


# -- best model ----------------------------------------------------------------------------------


def test_best_model_is_one_order_free_definition():
    results = {"b": {"roc_auc": 0.8, "accuracy": 0.7, "f1": 0.6}, "a": {"roc_auc": 0.8, "accuracy": 0.7, "f1": 0.6},
               "c": {"roc_auc": float("nan"), "accuracy": 0.9, "f1": 0.9}, "d": {"roc_auc": 0.8, "accuracy": 0.71}}  # fmt: skip
    assert best_model(results) == "d"  # ties on AUC: accuracy
    del results["d"]
    assert best_model(results) == best_model(dict(reversed(results.items()))) == "a"  # then the name
    assert best_model(results, "accuracy") == "c"  # NaN AUC is lowest, but it is not the metric here
    assert models_module.best_model is best_model
    with pytest.raises(ValueError, match="expected one of"):
        best_model(results, "speed")


# -- families ------------------------------------------------------------------------------------


def test_every_feature_has_a_family_and_the_paper_set_is_its_four_features():
    families = {n: feature_family(n) for n in FEATURE_NAMES}
    assert set(families.values()) == set(FAMILIES)
    paper = sorted(n for n, f in families.items() if f == "paper")
    assert paper == sorted(f"{p}_{a}" for p in ("em", "edit", "gedit", "ss") for a in ("mean", "min", "max"))
    sets = dict(feature_sets(list(FEATURE_NAMES)))
    assert list(sets) == ["paper", *(f"paper + {f}" for f in FAMILIES[1:]), "all"]
    assert len(sets["all"]) == len(FEATURE_NAMES)
    assert all(set(sets["paper"]) < set(cols) for label, cols in sets.items() if label != "paper")
    with pytest.raises(ValueError, match="no feature family"):
        feature_family("brand_new_feature")
    assert set(AGREEMENT_FEATURES) <= set(FEATURE_NAMES)


# -- training ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality")
    store = Store(tmp / "magv.duckdb")
    synthetic_store(store, n_questions=60)
    compute_features(store, HashEmbedder())
    gold_labels(store)
    data = training.training_data(store)
    rng = random.Random(0)
    # A judge with verdicts on two thirds of the rows (one unparsed), right 70 % of the time.
    verdicts = []
    for i, (run_id, label) in enumerate(zip(data.run_ids, data.y.tolist())):
        if i % 3 == 2:
            continue
        correct = None if i == 0 else (bool(label) if rng.random() < 0.7 else not label)
        verdicts.append(JudgeVerdict(run_id=run_id, model="tiny-judge", correct=correct))
    store.add_judge_verdicts(verdicts)
    cfg = load_settings(None, database=store.path, verify={"models_dir": str(tmp / "models")})
    result = training.train(
        store, cfg, names=["logreg", "random_forest"], bootstrap=300, text=False, repeats=1
    )
    yield store, cfg, result, data, verdicts
    store.close()


def test_out_of_fold_predictions_and_confusion_are_stored(trained):
    store, _, result, data, _ = trained
    rows = {r["name"]: json.loads(r["metrics"]) for r in store.cv_results(result.training_id)}
    assert set(rows) == {"logreg", "random_forest"}
    for m in rows.values():
        assert len(m["oof"]["proba"]) == len(m["oof"]["y"]) == len(data.y) == result.n_rows
        assert m["oof"]["y"] == data.y.tolist()
        assert sum(map(sum, m["confusion"])) == len(data.y)
        # the stored metrics are those of the stored predictions
        assert point_metrics(data.y, ScoreColumns.from_proba(np.array(m["oof"]["proba"])))[
            "accuracy"
        ] == pytest.approx(m["accuracy"], abs=1e-6)
        for k in INTERVALS:
            low, high = m["intervals"][k]
            assert low <= m[k] <= high, k


def test_baselines_are_on_the_same_rows_and_folds(trained):
    _, _, result, data, _ = trained
    ev = result.evaluation
    assert ev["n"] == len(data.y) and set(ev["baselines"]) >= {"majority", "agreement", "write agreement"}
    splits = grouped_splits(data.y, data.groups, 5, 0)
    assert sorted(np.concatenate([te for _, te in splits]).tolist()) == list(range(len(data.y)))
    expected = point_metrics(data.y, majority_oof(data.y, splits))
    majority = ev["baselines"]["majority"]
    assert majority["n"] == len(data.y) and majority["accuracy"] == pytest.approx(expected["accuracy"])
    agreement = ev["baselines"]["agreement"]
    assert sum(map(sum, agreement["confusion"])) == len(data.y)
    assert len(agreement["folds"]) == len(splits)
    assert {f["feature"] for f in agreement["folds"]} <= set(AGREEMENT_FEATURES)
    for b in ev["baselines"].values():
        for k in INTERVALS:
            if b[k] is not None and b["intervals"][k]:
                assert b["intervals"][k][0] <= b[k] <= b["intervals"][k][1], k
    best = result.results[result.best]
    assert ev["differences"][f"{result.best} - majority"]["value"] == pytest.approx(
        best["accuracy"] - majority["accuracy"]
    )


def test_the_judge_is_compared_on_the_rows_it_judged(trained):
    _, _, result, data, verdicts = trained
    (judge,) = result.evaluation["judges"]
    judged = {v.run_id: v.correct for v in verdicts if v.correct is not None}
    assert judge["model"] == "tiny-judge" and judge["n"] == len(judged) and judge["without_verdict"] == 1
    rows = np.array([i for i, r in enumerate(data.run_ids) if r in judged])
    y = data.y[rows]
    truth_acc = np.mean([judged[data.run_ids[i]] == bool(data.y[i]) for i in rows])
    assert judge["judge"]["accuracy"] == pytest.approx(truth_acc)
    oof = np.array(result.results[result.best]["oof"]["proba"])[rows]
    assert judge["best_model"]["accuracy"] == pytest.approx(
        point_metrics(y, ScoreColumns.from_proba(oof))["accuracy"]
    )
    d = judge["difference"]
    assert d["n"] == len(rows) and d["value"] == pytest.approx(judge["best_model"]["accuracy"] - truth_acc)
    assert d["interval"][0] <= d["value"] <= d["interval"][1]


def test_ablation_rows(trained):
    _, _, result, _, _ = trained
    rows = result.evaluation["ablation"]
    assert [r["features"] for r in rows][0] == "paper" and rows[-1]["features"] == "all"
    assert all(r["model"] == result.best for r in rows)
    # every feature is the training's own cross-validation of the best model
    assert rows[-1]["accuracy"] == pytest.approx(result.results[result.best]["accuracy"])


def test_report_and_data_card_name_the_model_training_picked(trained, tmp_path):
    store, cfg, result, _, _ = trained
    assert result.best == best_model(result.results, "roc_auc")
    data = collect(store)
    v = data.metrics["verifier"]
    assert v["best"]["name"] == result.best
    # real cross-validation curves and confusion grids, from the stored out-of-fold predictions
    assert set(data.series["curves"]) == {"logreg", "random_forest"}
    assert set(data.series["confusion"]) == {"logreg", "random_forest"}
    assert {b["name"] for b in v["baselines"]} >= {"majority", "agreement", "judge tiny-judge"}
    html = write_report(store, tmp_path / "report").html.read_text()
    assert (
        'id="cv-intervals"' in html
        and 'data-scorer="majority"' in html
        and 'data-scorer="judge tiny-judge"' in html
    )
    lo, hi = result.results[result.best]["intervals"]["accuracy"]
    assert f"[{lo:.3f}, {hi:.3f}]" in html
    card = _verifier(store, store.latest_verifier_model())
    assert card["best_by_cv"] == result.best and set(card["baselines"]) >= {"majority", "agreement"}
    # another selection metric: training, report and card still agree
    again = training.train(store, cfg, names=["logreg", "random_forest"], select_by="mcc", bootstrap=0, text=False, repeats=0,
                           ablation=False)  # fmt: skip
    assert again.best == best_model(again.results, "mcc")
    assert collect(store).metrics["verifier"]["best"]["name"] == again.best
    assert _verifier(store, store.latest_verifier_model())["best_by_cv"] == again.best


# -- model files ---------------------------------------------------------------------------------


def _xy() -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(0).normal(size=(40, 3))
    return X, (X[:, 0] > 0).astype(int)


def _saved_model(tmp_path: Path) -> tuple[Path, bytes]:
    """A small registered model file and its bytes, to check that a failed save leaves them."""
    path = tmp_path / "models" / "m.skops"
    save_model(path, Verifier("logreg").fit(*_xy()), ["a", "b", "c"], "1", name="logreg")
    return path, path.read_bytes()


def test_a_failing_model_write_leaves_the_registered_file_whole(tmp_path, monkeypatch):
    path, before = _saved_model(tmp_path)

    def dies_half_way(obj, file):
        Path(file).write_bytes(before[: len(before) // 2])  # a partial file, then the process "dies"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(models_module.sio, "dump", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        save_model(path, Verifier("knn").fit(*_xy()), ["a", "b", "c"], "1", name="knn")
    assert path.read_bytes() == before
    assert load_model(path)["name"] == "logreg"
    assert [p.name for p in path.parent.iterdir()] == ["m.skops"]  # no temporary file left behind


# -- the benchmark -------------------------------------------------------------------------------


def _bench():
    spec = importlib.util.spec_from_file_location("verifier_quality", REPO / "bench" / "verifier_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_verifier_quality_on_a_generated_labelled_file(tmp_path, capsys, monkeypatch):
    """A labelled file as `magv export --format jsonl` writes it, judge verdicts (without tokens) in
    its meta, no provenance file beside it; then the reverse cost from one."""
    monkeypatch.setattr(console, "width", 200)
    with Store(tmp_path / "src.duckdb") as store:
        synthetic_store(store, n_questions=45)
        gold_labels(store)
        labels = store.effective_labels()
        rng = random.Random(1)
        store.add_judge_verdicts([JudgeVerdict(run_id=r, model="j", correct=lb.correct if rng.random() < 0.6 else not lb.correct)
                                  for r, lb in labels.items()])  # fmt: skip
        export(store, "jsonl", tmp_path / "labelled.jsonl")
    out = tmp_path / "result.json"
    bench = _bench()
    assert bench.main([str(tmp_path / "labelled.jsonl"), "--bootstrap", "200", "--models", "logreg,knn",
                       "--no-embed", "--no-text", "--repeats", "1", "--out", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    for word in (
        "baseline: majority",
        "baseline: agreement",
        "judge j",
        "differences",
        "feature ablation",
        "simulated cascade on 45 labelled trajectories",
        "each step alone",
        "reverse cost unknown: no provenance file labelled.json (counted as 0)",
        "judge everything: unknown",
        "unknown: no stored verdict has tokens",
        "FIGURES",
    ):
        assert word in text
    summary = json.loads(out.read_text())
    assert summary["n"] == 135 and summary["groups"] == 15  # every run gold-labelled; groups: meta.group_id
    assert [m["name"] for m in summary["models"]] == ["logreg", "knn"]
    assert summary["selected"]["seeds"] == [0] and "selected" in summary["selected"]["rows"]
    assert summary["judges"][0]["n"] == 135
    keys = set(summary["differences"])
    assert f"{summary['best']} - majority" in keys and f"{summary['best']} - judge j" in keys
    cascade = summary["cascade"]
    assert cascade["rows"] == 45 and cascade["model"] == summary["best"]
    assert [p["step"] for p in cascade["curve"]["points"]] == [
        "agreement",
        "verifier",
        "alternates",
        "judge",
        "human",
    ]
    assert cascade["single"]["judge_rows"] == 45 and cascade["costs"]["reverse_call"]["known"] is False
    figures = text.split("FIGURES ")[1]
    assert f"cascade_accuracy={cascade['curve']['points'][-1]['accuracy_all']:.3f}" in figures
    assert "cascade_cost_ratio=unknown" in figures

    (tmp_path / "labelled.json").write_text(json.dumps({"reverse_call": {"prompt_tokens": 812.5,
                                                                         "completion_tokens": 40.0, "calls": 9}}))  # fmt: skip
    given = bench.reverse_cost(tmp_path / "labelled.jsonl")
    assert (given["prompt_tokens"], given["completion_tokens"]) == (812.5, 40.0) and "known" not in given
    assert given["source"].startswith("labelled.json: the mean of the 9 reverse calls")
    (tmp_path / "labelled.json").write_text(json.dumps({"counts": {}}))
    assert "labelled.json has no reverse_call" in bench.reverse_cost(tmp_path / "labelled.jsonl")["source"]
    (tmp_path / "labelled.json").write_text("{")
    assert "labelled.json is not valid JSON" in bench.reverse_cost(tmp_path / "labelled.jsonl")["source"]


def test_bench_without_a_dataset_says_so(tmp_path, capsys):
    assert _bench().main([str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "r.json")]) == 2
    assert "no labelled dataset at" in capsys.readouterr().err


def test_retraining_after_the_judge_ran_updates_the_stored_evaluation(tmp_path):
    """Same labels, same model id; the judge's verdicts arrived since, so the registry's evaluation
    (what the report and the data card read) must show them."""
    with Store(tmp_path / "m.duckdb") as store:
        synthetic_store(store, n_questions=30)
        compute_features(store, None, alternates=False)
        gold_labels(store)
        cfg = load_settings(None, database=store.path, verify={"models_dir": str(tmp_path / "models")})
        first = training.train(
            store, cfg, names=["logreg"], bootstrap=0, ablation=False, text=False, repeats=0
        )
        assert json.loads(store.latest_verifier_model()["metrics"])["evaluation"]["judges"] == []
        store.add_judge_verdicts(
            [JudgeVerdict(run_id=r, model="j", correct=True) for r in store.effective_labels()]
        )
        again = training.train(
            store, cfg, names=["logreg"], bootstrap=0, ablation=False, text=False, repeats=0
        )
        assert again.model_id == first.model_id and store.counts()["verifier_models"] == 1
        (judge,) = json.loads(store.latest_verifier_model()["metrics"])["evaluation"]["judges"]
        assert judge["n"] == 90 and judge["judge"]["recall"] == 1.0
        assert any(b["name"] == "judge j" for b in collect(store).metrics["verifier"]["baselines"])


def test_sigkill_while_saving_leaves_the_registered_model_file(tmp_path):
    """A real kill -9 in the middle of writing the new model: the old file is still the good one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path, before = _saved_model(tmp_path)
    ready = tmp_path / "half-written"
    script = f"""
import time
from pathlib import Path
import numpy as np
from magv.verify import models
real_dump = models.sio.dump
def slow_dump(obj, file):
    real_dump(obj, file)
    data = Path(file).read_bytes()
    Path(file).write_bytes(data[: len(data) // 2])
    Path({str(ready)!r}).write_text("x")
    time.sleep(60)
models.sio.dump = slow_dump
rng = np.random.default_rng(1)
X = rng.normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
models.save_model(Path({str(path)!r}), models.Verifier("knn").fit(X, y), ["a", "b", "c"], "1", name="knn")
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the writer never got half-way"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert path.read_bytes() == before and load_model(path)["name"] == "logreg"
