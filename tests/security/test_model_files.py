"""Model files run no code: magv loads only the exact types it saves itself, from its own folder.

A skops file lists the type of every object in it and builds them on load; a file that names
`builtins.exec` (built here by hand, as an attacker would) gets it called with the file's own
arguments. `load_model` must refuse such a file before skops builds anything.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio

from magv.cli import main
from magv.errors import BadInput, RunFailed
from magv.store import Store
from magv.verify.models import MODEL_NAMES, TRUSTED_TYPES, Verifier, check_model_path, load_model, save_model
from tests.reliability_helpers import read_counts


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, (X[:, 0] + rng.normal(size=n) * 0.3 > 0).astype(int)


def _saved(path: Path, name: str, n: int, calibrate: bool) -> Path:
    X, y = _data(n)
    v = Verifier(name, 0, calibrate=calibrate).fit(X, y, groups=np.arange(n) % 6)
    return save_model(path, v, ["a", "b", "c", "d"], "1", model_id="m", name=name, calibrated=v.calibrated_)


def test_the_trusted_types_are_exactly_what_magv_saves(tmp_path):
    """Each of the five verifiers, small (uncalibrated, in-sample Platt for the SVM) and calibrated."""
    seen: set[str] = set()
    for name in MODEL_NAMES:
        for n, calibrate in ((8, False), (60, True)):
            path = _saved(tmp_path / f"{name}-{n}.skops", name, n, calibrate)
            types = set(sio.get_untrusted_types(file=path))
            assert types <= TRUSTED_TYPES, (name, types - TRUSTED_TYPES)
            seen |= types
            bundle = load_model(path)
            assert isinstance(bundle["verifier"], Verifier) and bundle["name"] == name
    assert seen == TRUSTED_TYPES
    assert not any(t.endswith(".") for t in TRUSTED_TYPES)  # names, not prefixes


def _hostile_file(
    path: Path, marker: Path, loader: str = "ConstructorFromReduceNode", func: str = "exec"
) -> Path:
    """A model bundle with one more entry: builtins.exec called on code that writes `marker`."""
    X, y = _data(60)
    good = sio.dumps({"verifier": Verifier("logreg").fit(X, y), "features": ["a", "b", "c", "d"],
                      "feature_version": "1", "payload": (f"open({str(marker)!r}, 'w').write('pwned')",)})  # fmt: skip
    source = zipfile.ZipFile(io.BytesIO(good))
    schema = json.loads(source.read("schema.json"))
    payload = schema["content"]["payload"]
    schema["content"]["payload"] = {"__class__": func, "__module__": "builtins", "__loader__": loader,
                                    "content": payload, "__id__": 1}  # fmt: skip
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("schema.json", json.dumps(schema))
        for name in source.namelist():
            if name != "schema.json":
                z.writestr(name, source.read(name))
    return path


def test_the_hostile_file_would_run_code_if_loaded_blindly(tmp_path):
    """The attack is real: skops trusting what the file lists calls exec (so the refusal matters)."""
    marker = tmp_path / "pwned"
    path = _hostile_file(tmp_path / "m.skops", marker)
    assert "builtins.exec" in sio.get_untrusted_types(file=path)
    sio.load(path, trusted=sio.get_untrusted_types(file=path))
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("func", ["exec", "eval", "__import__", "compile", "open", "getattr"])
def test_a_file_naming_a_builtin_function_is_refused_and_nothing_runs(tmp_path, func):
    marker = tmp_path / "pwned"
    path = _hostile_file(tmp_path / "m.skops", marker, func=func)
    with pytest.raises(RunFailed) as info:
        load_model(path)
    assert f"holds types magv does not trust and was not loaded: builtins.{func}" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
            "is damaged or not a skops file",
        ),
        (lambda p: p.write_bytes(b"not a zip at all"), "is damaged or not a skops file"),
        (lambda p: p.write_bytes(b""), "is damaged or not a skops file"),
        (lambda p: p.write_bytes(sio.dumps({"features": ["a"]})), "does not hold a magv verifier"),
        (lambda p: p.write_bytes(sio.dumps([1, 2, 3])), "does not hold a magv verifier"),
    ],
    ids=["truncated", "not a zip", "empty", "no verifier", "a list"],
)
def test_a_damaged_model_file_is_a_clear_error(tmp_path, damage, expected):
    path = _saved(tmp_path / "m.skops", "logreg", 60, False)
    damage(path)
    with pytest.raises(RunFailed, match=expected):
        load_model(path)


def test_a_model_path_outside_the_models_directory_is_refused(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    inside = models / "m.skops"
    assert check_model_path(inside, models) == inside
    for outside in (tmp_path / "elsewhere.skops", models / ".." / "escape.skops", Path("/etc/passwd")):
        with pytest.raises(BadInput, match="is outside verify.models_dir"):
            check_model_path(outside, models)
    assert (
        check_model_path(tmp_path / "elsewhere.skops", models, explicit=True) == tmp_path / "elsewhere.skops"
    )


# -- through the command -----------------------------------------------------------------------


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """A database whose registered model points at `path`; the caller writes that file."""
    db = tmp_path / "magv.duckdb"
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("MAGV_DATABASE", str(db))
    monkeypatch.setenv("MAGV_VERIFY__MODELS_DIR", str(models))

    def register(path: Path) -> Path:
        with Store(db) as store:
            store.add_verifier_model({"id": "m1", "name": "logreg", "path": str(path), "feature_version": "1",
                                      "features": ["a"], "metrics": {}})  # fmt: skip
        return db

    return register, models


def _cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, " ".join(capsys.readouterr().err.split())


def test_score_refuses_a_hostile_model_file_and_runs_nothing(tmp_path, registered, capsys):
    register, models = registered
    marker = tmp_path / "pwned"
    db = register(_hostile_file(models / "m1.skops", marker))
    before = read_counts(db)
    code, err = _cli(["verify", "score"], capsys)
    assert code == 1 and "holds types magv does not trust and was not loaded: builtins.exec" in err
    assert not marker.exists() and "Traceback" not in err
    assert read_counts(db) == before


def test_score_refuses_a_registered_path_outside_models_dir_unless_named(tmp_path, registered, capsys):
    register, models = registered
    marker = tmp_path / "pwned"
    elsewhere = _hostile_file(tmp_path / "elsewhere.skops", marker)
    db = register(elsewhere)
    before = read_counts(db)
    code, err = _cli(["verify", "score"], capsys)
    assert code == 2 and f"model file {elsewhere} is outside verify.models_dir ({models})" in err
    # Named explicitly it is the user's choice of file, but its types are still checked.
    code, err = _cli(["verify", "score", "--model-file", str(elsewhere)], capsys)
    assert code == 1 and "builtins.exec" in err
    assert not marker.exists() and read_counts(db) == before


def test_score_with_a_truncated_model_file_is_a_clear_error(tmp_path, registered, capsys):
    register, models = registered
    path = _saved(models / "m1.skops", "xgboost", 60, False)
    path.write_bytes(path.read_bytes()[:500])
    db = register(path)
    before = read_counts(db)
    code, err = _cli(["verify", "score"], capsys)
    assert code == 1 and f"model file {path} is damaged or not a skops file" in err and "Traceback" not in err
    assert read_counts(db) == before


@pytest.mark.parametrize(
    ("version", "names", "expected"),
    [
        ("0-old", None, "was trained on feature version '0-old'; this magv computes version"),
        (None, ["a", "b", "c", "d"], "holds features this magv does not compute (['a', 'b', 'c', 'd'])"),
    ],
    ids=["other feature version", "other feature names"],
)
def test_score_refuses_a_model_file_of_another_feature_set(
    tmp_path, registered, capsys, version, names, expected
):
    from magv.verify.features import FEATURE_NAMES, FEATURE_VERSION

    register, models = registered
    X, y = _data(60)
    names = names or list(FEATURE_NAMES[:4])
    v = Verifier("logreg").fit(X, y)
    path = save_model(models / "m1.skops", v, names, version or FEATURE_VERSION, model_id="m1", name="logreg")
    db = register(path)
    before = read_counts(db)
    code, err = _cli(["verify", "score"], capsys)
    assert code == 1 and expected in err and "Traceback" not in err
    assert read_counts(db) == before


def test_text_verifiers_hold_only_trusted_types(tmp_path):
    """The text model (TF-IDF + logistic regression) inside a saved verifier, alone and stacked,
    needs no type beyond TRUSTED_TYPES: such files load under the same refusal rules."""
    from magv.verify.document import with_documents
    from magv.verify.models import make_verifier

    X, y = _data(60)
    docs = [
        f"call_find arg_find_id_{int(a > 0)} call_refund" if t else "call_find error_find"
        for a, t in zip(X[:, 1], y)
    ]
    for label in ("text", "logreg + text", "xgboost + text", "random_forest + text"):
        v = make_verifier(label, calibrate=True).fit(with_documents(X, docs), y, groups=np.arange(60) % 6)
        path = save_model(tmp_path / f"{label}.skops", v, ["a", "b", "c", "d"], "1", model_id="m", name=label)
        assert set(sio.get_untrusted_types(file=path)) <= TRUSTED_TYPES
        loaded = load_model(path)["verifier"]
        assert np.allclose(
            loaded.proba_correct(with_documents(X, docs)), v.proba_correct(with_documents(X, docs))
        )


def test_loading_the_model_module_imports_no_array_library_and_trusts_every_estimator():
    """skops lists scikit-learn's estimators as it is imported; the array libraries that walk would
    import (torch: seconds) are hidden then, and the trusted estimators are all of them."""
    import subprocess
    import sys

    code = (
        "import sys, magv.verify.models\n"
        "from skops.io._trusted_types import SKLEARN_ESTIMATOR_TYPE_NAMES as names\n"
        "loaded = sorted(m for m in ('torch', 'dask', 'cupy', 'jax') if m in sys.modules)\n"
        "from sklearn.utils import all_estimators\n"
        "from skops.io._utils import get_type_name\n"
        "every = {get_type_name(c) for _, c in all_estimators()}\n"
        "import torch\n"
        "print(loaded, len(names), len(every - set(names)), torch.tensor([1]).sum().item())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "[]", out
    assert int(out[1]) > 150 and out[2] == "0", out
    assert out[3] == "1", "torch imports as usual afterwards"
