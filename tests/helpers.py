"""Helpers shared by several test modules."""

from __future__ import annotations

import h5py

from feature_extract import store


def store_contents(path) -> dict:
    """Every split's dataset bytes and attributes: equal iff two stores hold the same content.

    The bookkeeping attributes (``store.INTERNAL_ATTRS``: the random writer token) are left out;
    they differ between two runs by design.
    """
    with h5py.File(path, "r") as f:
        return {
            split: (
                {k: f[split][k][()].tobytes() for k in ("features", "labels", "ids")},
                {
                    k: store._plain(v)
                    for k, v in f[split].attrs.items()
                    if k not in store.INTERNAL_ATTRS
                },
            )
            for split in f
        }


def blobs(n: int = 240, d: int = 8, k: int = 3, *, seed: int = 0, separation: float = 3.0):
    """Gaussian class blobs ``(x float32 [n, d], y int32 [n])``: class c around ``separation``
    times a random unit vector."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    centres *= separation / np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, k, n).astype(np.int32)
    x = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    return x, y


def write_store(path, splits: dict, num_classes: int, dtype=None, attrs=None) -> str:
    """Write ``{split: (x, y)}`` to a store at ``path`` (each split with ``attrs``, e.g. a
    declared ``feature_groups``); returns the path as a string."""
    import numpy as np

    for split, (x, y) in splits.items():
        x = np.asarray(x) if dtype is None else np.asarray(x, dtype)
        store.write_split(str(path), split, x, y, num_classes=num_classes, attrs=attrs)
    return str(path)


def numbers_in(tree) -> list:
    """Every number (and every integer in a string) in a JSON-like tree."""
    import re

    found: list = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += numbers_in(key) + numbers_in(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            found += numbers_in(value)
    elif isinstance(tree, bool) or tree is None:
        pass
    elif isinstance(tree, (int, float)):
        found.append(tree)
    elif isinstance(tree, str):
        found += [int(m) for m in re.findall(r"(?<![\d.])\d+(?![\d.])", tree)]
    return found
