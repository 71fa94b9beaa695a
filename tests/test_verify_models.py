"""The five verifiers as one scikit-learn estimator, grouped cross-validation and model files."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from magv.errors import RunFailed
from magv.verify.models import (
    METRICS,
    MODEL_NAMES,
    Verifier,
    best_model,
    cross_validate_models,
    grouped_splits,
    load_model,
    save_model,
)


def _data(n: int = 90, seed: int = 0, group_size: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    groups = np.repeat(np.arange(n // group_size + 1), group_size)[:n].astype(str)
    return X, y, groups


@pytest.mark.parametrize("folds", [2, 5, 10])
def test_grouped_cv_never_puts_a_group_on_both_sides(folds):
    X, y, groups = _data(60)
    splits = grouped_splits(y, groups, folds, seed=1)
    assert len(splits) == folds
    seen_in_test = []
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        seen_in_test += list(test)
    assert sorted(seen_in_test) == list(range(len(y)))  # every row is tested exactly once


def test_fewer_groups_than_folds_gives_one_fold_per_group():
    y = np.array([0, 1, 0, 1, 1, 0])
    groups = np.array(["a", "a", "b", "b", "c", "c"])
    splits = grouped_splits(y, groups, folds=5, seed=0)
    assert len(splits) == 3
    results = cross_validate_models(np.arange(12.0).reshape(6, 2), y, groups, folds=5)
    assert set(results) == set(MODEL_NAMES) and all(r["folds"] == 3 for r in results.values())


def test_one_class_only_is_a_clear_failure():
    with pytest.raises(RunFailed, match="all 4 labelled trajectories are incorrect"):
        cross_validate_models(np.zeros((4, 2)), np.zeros(4), np.array(["a", "b", "c", "d"]))
    with pytest.raises(RunFailed, match="one question group"):
        cross_validate_models(np.zeros((4, 2)), np.array([0, 1, 0, 1]), np.array(["a"] * 4))


def test_every_model_learns_a_separable_signal():
    X, y, groups = _data(120)
    results = cross_validate_models(X, y, groups, folds=5, seed=0)
    assert list(results) == list(MODEL_NAMES)
    for name, m in results.items():
        assert set(METRICS) <= set(m)
        assert m["accuracy"] > 0.7, name
        assert m["roc_auc"] > 0.75, name
    assert best_model(results) in MODEL_NAMES


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_saved_and_loaded_model_scores_identically(tmp_path, name):
    X, y, groups = _data(90)
    v = Verifier(name, random_state=3, calibrate=True).fit(X, y, groups=groups)
    path = save_model(tmp_path / f"{name}.skops", v, ["f0", "f1", "f2", "f3", "f4"], "1", name=name)
    bundle = load_model(path)
    loaded = bundle["verifier"]
    assert bundle["features"] == ["f0", "f1", "f2", "f3", "f4"] and bundle["feature_version"] == "1"
    np.testing.assert_array_equal(loaded.predict_proba(X), v.predict_proba(X))
    np.testing.assert_allclose(loaded.contributions(X), v.contributions(X))
    assert loaded.score(X, y) == v.score(X, y) > 0.7


def test_contributions_explain_the_models_log_odds():
    X, y, _ = _data(90)
    xgb = Verifier("xgboost").fit(X, y)
    C = xgb.contributions(X)
    assert C.shape == X.shape
    # TreeSHAP values plus the bias sum to the margin; the bias is the same for every row.
    margin = xgb.estimator_.predict(X, output_margin=True)
    bias = margin - C.sum(axis=1)
    assert np.allclose(bias, bias[0], atol=1e-4)
    lr = Verifier("logreg").fit(X, y)
    proba = lr.estimator_.predict_proba(X)[:, 1]
    logit = np.log(proba / (1 - proba))
    assert np.allclose(lr.contributions(X).sum(axis=1) + lr.estimator_[-1].intercept_[0], logit)
    # The surrogate of a forest points the same way as the signal: feature 0 drives y up.
    rf = Verifier("random_forest").fit(X, y)
    assert rf.contribution_method == "linear_surrogate"
    assert np.corrcoef(rf.contributions(X)[:, 0], X[:, 0])[0, 1] > 0.9


def test_single_class_training_fold_predicts_that_class():
    v = Verifier("logreg").fit(np.zeros((3, 2)), np.ones(3))
    assert list(v.predict(np.zeros((2, 2)))) == [1, 1]
    assert list(v.proba_correct(np.zeros((2, 2)))) == [1.0, 1.0]
    wrong = Verifier("xgboost").fit(np.zeros((3, 2)), np.zeros(3))
    assert list(wrong.proba_correct(np.zeros((1, 2)))) == [0.0]
    assert not v.contributions(np.zeros((2, 2))).any()


def test_untrusted_model_file_is_refused(tmp_path):
    import skops.io as sio

    path = tmp_path / "evil.skops"
    sio.dump({"verifier": _Foreign()}, path)
    with pytest.raises(RunFailed, match="does not trust"):
        load_model(path)


class _Foreign:
    pass


@pytest.mark.parametrize("n", [3, 4, 6])
def test_tiny_labelled_sets_train_every_model(n):
    """A small demo run labels a handful of trajectories: CV and calibration must still work."""
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, 4))
    y = np.array(([0, 1] * n)[:n])
    groups = np.arange(n)
    results = cross_validate_models(X, y, groups, folds=5, seed=0)
    assert set(results) == {"logreg", "svm", "random_forest", "knn", "xgboost"}
    for name in results:
        proba = Verifier(name, 0, calibrate=True).fit(X, y, groups=groups).predict_proba(X)
        assert proba.shape == (n, 2) and np.all((proba >= 0) & (proba <= 1))
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)


# -- the scikit-learn contract ---------------------------------------------------------------------


@parametrize_with_checks(
    [Verifier("logreg"), Verifier("xgboost", params={"n_estimators": 20}), Verifier("logreg", calibrate=True)]
)
def test_scikit_learn_estimator_checks(estimator, check):
    """Every check scikit-learn runs on a binary classifier. Its multiclass checks do not apply
    (the tag multi_class is False, and fit says "Only binary classification is supported");
    it skips the pandas and array-API checks itself when those libraries are not set up."""
    check(estimator)


def test_hyper_parameters_are_kept_unchanged_and_fitted_attributes_appear_only_in_fit():
    params = {"n_estimators": 10}
    v = Verifier("random_forest", random_state=4, params=params, calibrate=True)
    assert v.get_params() == {
        "model": "random_forest",
        "random_state": 4,
        "params": params,
        "calibrate": True,
        "text": None,
        "text_params": None,
    }
    assert not [k for k in vars(v) if k.endswith("_")]
    X, y, _ = _data(40)
    v.fit(X, y)
    assert v.params is params and params == {"n_estimators": 10}
    assert list(v.classes_) == [0, 1] and v.n_features_in_ == 5
    assert v.estimator_.n_estimators == 10


def test_predict_before_fit_raises_not_fitted_error():
    X, _, _ = _data(10)
    for method in ("predict", "predict_proba", "proba_correct", "contributions"):
        with pytest.raises(NotFittedError):
            getattr(Verifier("logreg"), method)(X)


def test_predict_proba_has_one_column_per_class_and_predict_returns_labels():
    X, y, _ = _data(80)
    labels = np.where(y == 1, "correct", "wrong")
    v = Verifier("xgboost", params={"n_estimators": 30}).fit(X, labels)
    proba = v.predict_proba(X)
    assert proba.shape == (80, 2) and list(v.classes_) == ["correct", "wrong"]
    np.testing.assert_array_equal(v.predict(X), v.classes_[proba.argmax(axis=1)])
    assert v.score(X, labels) > 0.9
    with pytest.raises(ValueError, match="Only binary classification"):
        Verifier("logreg").fit(X[:9], np.arange(9) % 3)
    with pytest.raises(ValueError, match="unknown verifier model 'tree'"):
        Verifier("tree").fit(X, y)


def test_clone_and_cross_val_score_work():
    X, y, groups = _data(90)
    v = Verifier("logreg", random_state=2, calibrate=True)
    copy = clone(v)
    assert copy is not v and copy.get_params() == v.get_params()
    scores = cross_val_score(Verifier("logreg"), X, y, groups=groups, cv=GroupKFold(3), scoring="roc_auc")
    assert scores.shape == (3,) and scores.mean() > 0.8
    assert cross_val_score(Verifier("xgboost", params={"n_estimators": 30}), X, y, cv=3).mean() > 0.7


# -- the text model --------------------------------------------------------------------------------


def _text_data(n: int = 60, seed: int = 0):
    """Runs whose document tells the label (a refund call, or an error) and whose numeric
    features are noise; 3 runs a group."""
    from magv.models import Step, ToolCall, Trajectory
    from magv.verify.document import document

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    ts = []
    for label in y:
        steps = [Step(call=ToolCall(name="find_order", arguments={"id": int(rng.integers(1000))}))]
        if label:
            steps.append(Step(call=ToolCall(name="refund", arguments={"reason": "damaged"})))
        else:
            steps.append(Step(call=ToolCall(name="refund", arguments={"reason": "x"}), error="Error: no"))
        ts.append(Trajectory(steps=steps))
    groups = np.repeat(np.arange(n // 3 + 1), 3)[:n].astype(str)
    return rng.normal(size=(n, 3)), y, groups, [document(t) for t in ts]


@pytest.mark.parametrize("label", ["text", "logreg + text", "xgboost + text"])
def test_a_text_model_learns_from_the_documents_inside_its_folds(label):
    from magv.verify.models import cross_validate_models

    X, y, groups, docs = _text_data()
    numeric = cross_validate_models(X, y, groups, names=["logreg"])["logreg"]
    text = cross_validate_models(X, y, groups, names=[label], documents=docs)[label]
    assert text["roc_auc"] > 0.95 > 0.75 > numeric["roc_auc"]
    with pytest.raises(ValueError, match="reads documents"):
        cross_validate_models(X, y, groups, names=[label])


def test_a_text_verifier_saves_loads_and_scores_the_same(tmp_path):
    from magv.verify.document import with_documents
    from magv.verify.models import TEXT_FEATURE, make_verifier

    X, y, groups, docs = _text_data()
    Xd = with_documents(X, docs)
    v = make_verifier("xgboost + text", calibrate=True).fit(Xd, y, groups=groups)
    assert v.uses_document and v.label == "xgboost + text" and v.n_features_in_ == 4
    path = save_model(tmp_path / "m.skops", v, ["a", "b", "c"], "1")
    loaded = load_model(path)["verifier"]
    assert np.allclose(loaded.proba_correct(Xd), v.proba_correct(Xd))
    C = v.contributions(Xd)
    assert C.shape == (60, 4)  # the three features, then TEXT_FEATURE
    assert np.abs(C[:, -1]).mean() > np.abs(C[:, :-1]).mean(), TEXT_FEATURE
    with pytest.raises(ValueError, match="document"):
        v.predict_proba(with_documents(X, docs).astype(object)[:, [0, 1, 2, 0]])


def test_a_stacked_text_model_scores_its_training_rows_out_of_fold():
    """The numeric model of "stack" learns from text scores of rows the text model did not see:
    fitted in sample, the text score of a memorised training row would look perfect."""
    from magv.verify.models import _text_oof, text_model

    X, y, groups, docs = _text_data(90, seed=3)
    # a label per group, told only by a token of the group: learnable from siblings, not across groups
    by_group = dict(zip(np.unique(groups), np.random.default_rng(1).integers(0, 2, size=90), strict=False))
    y = np.array([by_group[g] for g in groups])
    noisy = np.array([f"call_find_order grp{g}" for g in groups], dtype=object)
    oof = _text_oof(noisy, y, groups, None, 0)[:, 0]
    in_sample = text_model().fit(noisy, y).decision_function(noisy)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, in_sample) > 0.95 and roc_auc_score(y, oof) < 0.75


def test_lone_conversations_get_spread_and_ranked_scores():
    """Each run of the committed real-model set scored alone (no siblings: the agreement
    features are all neutral) by models fitted on the other tasks, over three task-disjoint
    splits: the feature model and the stacked text model give nearly one score per run (not a
    handful of levels), and those scores rank correct runs above incorrect ones."""
    from pathlib import Path

    from sklearn.metrics import roc_auc_score

    from magv.interchange import read_import_file
    from magv.verify.document import documents
    from magv.verify.features import FEATURE_NAMES, TrajectoryFeaturizer
    from magv.verify.models import candidate_features, make_verifier, model_input

    lines = [
        x
        for x in read_import_file(
            Path(__file__).resolve().parent.parent / "data" / "fixtures" / "real_dataset.jsonl"
        )
        if x.label is not None
    ]
    ts, y = [x.trajectory for x in lines], np.array([int(x.label) for x in lines])
    groups = np.array([str(x.meta.get("group_id") or x.key) for x in lines])
    X = TrajectoryFeaturizer().transform(ts, groups=[str(i) for i in range(len(ts))])  # each alone
    docs = documents(ts)
    for k in range(3):
        test = np.isin(groups, np.unique(groups)[k::3])
        for label in ("logreg", "logreg + text"):
            v = make_verifier(label)
            cols = [FEATURE_NAMES.index(f) for f in candidate_features(label, FEATURE_NAMES)]
            Xin = model_input(v, X[:, cols], docs)
            v.fit(Xin[~test], y[~test], groups=groups[~test])
            scores = v.proba_correct(Xin[test])
            assert len(np.unique(scores.round(6))) >= 0.75 * test.sum(), (k, label)
            assert roc_auc_score(y[test], scores) >= 0.75, (k, label)


def test_the_text_model_fits_runs_whose_documents_share_no_token():
    """A few runs with no token in two documents leave TF-IDF's min_df nothing to keep: the text
    model then keeps every token instead of failing. Runs none of which called a tool give it
    nothing to read: a clear error that says how to train without it."""
    from magv.errors import RunFailed
    from magv.verify.document import with_documents
    from magv.verify.models import make_verifier

    with pytest.raises(RunFailed, match="called a tool.*--no-text"):
        make_verifier("text").fit(with_documents(np.zeros((4, 0)), [""] * 4), np.array([0, 1, 0, 1]))
    docs = ["call_a", "call_b", "call_c", "call_d", "call_e", "call_f"]
    y = np.array([0, 1, 0, 1, 0, 1])
    for label in ("text", "logreg + text"):
        v = make_verifier(label).fit(with_documents(np.zeros((6, 1)), docs), y, groups=np.arange(6) % 3)
        assert v.proba_correct(with_documents(np.zeros((6, 1)), docs)).shape == (6,)


def test_training_on_two_question_groups_skips_the_nested_selection_and_says_why():
    """With two groups an outer training fold holds one group, which the nested selection cannot
    split again: the evaluation gives every other figure and names the reason instead."""
    from magv.verify.evaluation import evaluate, summary_tables
    from magv.verify.features import FEATURE_NAMES
    from magv.verify.models import candidate_names, cross_validate_models

    rng = np.random.default_rng(0)
    X = rng.random((12, len(FEATURE_NAMES)))
    y, groups = np.array([1, 0, 0, 0, 0, 1] * 2), np.array(["a"] * 6 + ["b"] * 6)
    results = cross_validate_models(
        X, y, groups, names=candidate_names(text=False), features=list(FEATURE_NAMES)
    )
    ev = evaluate(X, y, groups, list(FEATURE_NAMES), results, run_ids=[str(i) for i in range(12)], judge_verdicts=[],
                  folds=5, seed=0, n_bootstrap=20, select_by="roc_auc", ablation=False, repeats=1)  # fmt: skip
    assert "needs 3 question groups" in ev["selected"]["skipped"] and "have 2" in ev["selected"]["skipped"]
    tables = dict(summary_tables({**ev, "models": []}))
    assert any("nested" in title for title in tables)
