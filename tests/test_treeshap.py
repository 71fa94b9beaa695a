"""Table TreeSHAP: the same contributions as XGBoost's pred_contribs, saved with the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from xgboost import DMatrix, XGBClassifier

from magv.verify.models import Verifier, load_model, save_model
from magv.verify.treeshap import build_tables, table_contributions


def _data(seed: int, n: int = 400, d: int = 8):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[:, 2] = rng.integers(0, 2, n)  # binary, as most magv features are
    X[:, 3] = rng.integers(0, 4, n)
    X[:, 4] = 1.5  # constant
    X[rng.random(X.shape) < 0.1] = np.nan
    Z = np.nan_to_num(X)
    y = (Z[:, 0] + Z[:, 2] - Z[:, 1] * Z[:, 3] + rng.normal(scale=0.5, size=n) > 0.5).astype(int)
    return X, y


def _with_thresholds(X: np.ndarray, booster) -> np.ndarray:
    """X plus one row per split whose feature sits exactly on the split's threshold."""
    rows = []
    model = json.loads(booster.save_raw(raw_format="json"))["learner"]["gradient_booster"]["model"]
    for tree in model["trees"]:
        for node, child in enumerate(tree["left_children"]):
            if child != -1:
                row = X[len(rows) % len(X)].copy()
                row[tree["split_indices"][node]] = tree["split_conditions"][node]
                rows.append(row)
    return np.vstack([X, *rows])


def _xgboost(booster, X: np.ndarray) -> np.ndarray:
    return booster.predict(DMatrix(X), pred_contribs=True)[:, :-1]


def _assert_same(mine: np.ndarray, xgb: np.ndarray) -> None:
    assert mine.shape == xgb.shape
    assert np.allclose(mine, xgb, atol=1e-5, rtol=1e-4), np.abs(mine - xgb).max()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "params",
    [
        {"max_depth": 3, "n_estimators": 60},
        {"max_depth": 1, "n_estimators": 10},
        # Paths five splits deep, a feature split on twice along one, but at most 7 splits a tree.
        {"max_depth": 5, "max_leaves": 8, "grow_policy": "lossguide", "n_estimators": 40},
    ],
)
def test_tables_give_xgboosts_contributions(seed, params):
    X, y = _data(seed)
    booster = XGBClassifier(learning_rate=0.3, random_state=seed, **params).fit(X, y).get_booster()
    tables = build_tables(booster)
    assert tables is not None
    X = _with_thresholds(X, booster)
    _assert_same(table_contributions(tables, X), _xgboost(booster, X))


def test_full_depth_four_trees_with_a_higher_limit():
    X, y = _data(3)
    booster = XGBClassifier(max_depth=4, n_estimators=4, random_state=3).fit(X, y).get_booster()
    assert build_tables(booster) is None  # 15 splits a tree: above the default limit
    tables = build_tables(booster, max_splits=15)
    assert tables is not None and tables["values"].shape[1] == 1 << 15
    X = _with_thresholds(X, booster)
    _assert_same(table_contributions(tables, X), _xgboost(booster, X))


def test_boosters_the_tables_do_not_cover():
    X, y = _data(4)
    dart = XGBClassifier(booster="dart", max_depth=3, n_estimators=5).fit(X, y).get_booster()
    assert build_tables(dart) is None
    three = XGBClassifier(max_depth=3, n_estimators=5).fit(X, np.arange(len(y)) % 3).get_booster()
    assert build_tables(three) is None


def test_verifier_keeps_the_tables_in_its_model_file(tmp_path):
    X, y = _data(5, n=300)
    groups = np.arange(len(y)) // 3
    v = Verifier("xgboost", seed=5).fit(X, y, groups=groups, calibrate=True)
    assert v.calibrated_ and not hasattr(v, "shap_tables_")  # a fit alone builds none
    booster = v.estimator_.get_booster()
    X = _with_thresholds(X, booster)
    C = v.contributions(X)
    _assert_same(C, _xgboost(booster, X))
    approx = booster.predict(DMatrix(X), pred_contribs=True, approx_contribs=True)[:, :-1]
    np.testing.assert_allclose(v.contributions(X, "approx"), approx)

    loaded = load_model(save_model(tmp_path / "v.skops", v, [f"f{i}" for i in range(X.shape[1])], "1"))
    old = loaded["verifier"]
    assert old.shap_tables_ is not None  # saved with the model
    np.testing.assert_array_equal(old.contributions(X), C)
    del old.shap_tables_  # a file saved before the tables existed
    np.testing.assert_array_equal(old.contributions(X), C)
    assert old.shap_tables_ is not None  # built once, on first use


def test_too_deep_trees_fall_back_to_xgboost(monkeypatch):
    X, y = _data(6)
    v = Verifier("xgboost", seed=6)
    monkeypatch.setattr(v, "_new", lambda y: XGBClassifier(max_depth=6, n_estimators=20, random_state=6))
    v.fit(X, y)
    assert v.shap_tables() is None
    _assert_same(v.contributions(X), _xgboost(v.estimator_.get_booster(), X))
