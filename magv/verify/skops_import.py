"""`skops.io`, imported without the array libraries that scikit-learn's estimator walk would load.

Importing `skops.io` lists scikit-learn's estimators (its default trusted types) with
`sklearn.utils.all_estimators`, which imports every scikit-learn package, among them the array-API
adapters for torch, dask, cupy and jax: with torch installed (for sentence embeddings) that alone
costs seconds in every process that loads a model, though no model file holds an array of theirs.
While skops is imported those libraries are hidden: their import raises ImportError, which the walk
skips, and the trusted types are the same estimators. Afterwards they import as usual; one that is
already imported is not hidden.
"""

from __future__ import annotations

import importlib.abc
import sys

HIDDEN = ("torch", "dask", "cupy", "jax")


class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        root = name.split(".", 1)[0]
        if root in HIDDEN and root not in sys.modules:
            raise ImportError(f"{name} is not imported while skops lists its trusted types")
        return None


def _import_skops():
    hide = _Hide()
    sys.meta_path.insert(0, hide)
    try:
        import skops.io

        return skops.io
    finally:
        sys.meta_path.remove(hide)


sio = _import_skops()
