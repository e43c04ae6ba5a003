"""Labelled images in memory as a dataset: ``image_arrays`` and the ``ArrayDataset`` it returns.

``image_arrays({"train": (images, labels), "test": (...)}, class_names=[...])`` (or
``num_classes=K``) makes a dataset that ``feature_extract.extract`` takes in place of a name:
``images`` ``uint8 [N, H, W, C]`` (``C`` in 1, 3, 4) or ``[N, H, W]``, ``labels`` integers in
``[0, K)``. The label space is the caller's (public): ``K`` is never read from the labels. A row's
id is its index in its split's array. Its ``version`` is ``arrays-sha256:`` and the first 16 hex
digits of a SHA-256 over the class names and each split's name, images (shape, bytes) and labels,
unless the caller names one: the identity a resumed extraction must match. The bundled ``digits``
and ``mnist5k`` are ``ArrayDataset``s too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from feature_extract.sources import DatasetError, Source, read_instructions
from feature_extract.store import check_labels

Split = tuple[np.ndarray, np.ndarray, np.ndarray]  # images, labels int32, ids int64


class ArraySource(Source):
    """Rows of one or more base splits of an ``ArrayDataset``, in split-string order."""

    def __init__(self, dataset: ArrayDataset, split: str, pieces: list[tuple[str, int, int]]):
        self.name, self.version, self.split = dataset.name, dataset.version, split
        self.class_names, self.num_classes = dataset.class_names, len(dataset.class_names)
        self._parts = [(dataset.splits[base], start) for base, start, _ in pieces]
        self._offsets = np.cumsum([0] + [stop - start for _, start, stop in pieces])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def get(self, indices: Sequence[int]) -> tuple[list, np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        part = np.searchsorted(self._offsets, indices, side="right") - 1
        images, labels, ids = [], np.zeros(indices.size, np.int32), np.zeros(indices.size, np.int64)
        for n, (i, p) in enumerate(zip(indices.tolist(), part.tolist(), strict=True)):
            (x, y, row_ids), start = self._parts[p]
            row = start + i - int(self._offsets[p])
            images.append(x[row])
            labels[n], ids[n] = y[row], row_ids[row]
        return images, labels, ids


class ArrayDataset:
    """Base splits ``{name: (images, labels int32, ids int64)}`` with a public label space."""

    def __init__(
        self,
        name: str,
        version: str,
        splits: Mapping[str, Split],
        class_names: Sequence[str],
    ):
        self.name, self.version = name, version
        self.splits, self.class_names = dict(splits), tuple(class_names)

    def source(self, split: str) -> ArraySource:
        """The rows of a TFDS-style split string over the base splits (``train[:90%]+test``)."""
        sizes = {name: len(labels) for name, (_, labels, _) in self.splits.items()}
        return ArraySource(self, split, read_instructions(split, sizes))


def _checked(name: str, images: np.ndarray, labels: np.ndarray, k: int) -> Split:
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DatasetError(
            f"images of split {name!r} must be uint8 [N, H, W, C] or [N, H, W]; got "
            f"{images.dtype} {images.shape}"
        )
    if images.ndim == 4 and images.shape[-1] not in (1, 3, 4):
        raise DatasetError(f"images of split {name!r} have {images.shape[-1]} channels, not 1/3/4")
    if labels.shape != images.shape[:1] or images.shape[0] == 0:
        raise DatasetError(
            f"split {name!r} needs N >= 1 images and N labels; got {images.shape[0]} images and "
            f"labels of shape {labels.shape}"
        )
    try:
        check_labels(labels, k, what=f"labels of split {name!r}")
    except ValueError as err:
        raise DatasetError(str(err)) from None
    return images, labels.astype(np.int32), np.arange(labels.size, dtype=np.int64)


def arrays_digest(class_names: Sequence[str], splits: Mapping[str, Split]) -> str:
    """``arrays-sha256:<16 hex>`` over the class names and every split (module docstring)."""
    h = hashlib.sha256("\n".join(class_names).encode())
    for name, (images, labels, _) in sorted(splits.items()):
        h.update(f"\0{name}\0{images.shape}".encode())
        h.update(memoryview(np.ascontiguousarray(images)).cast("B"))
        h.update(labels.astype("<i4").tobytes())
    return "arrays-sha256:" + h.hexdigest()[:16]


def image_arrays(
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    name: str = "arrays",
    version: str | None = None,
) -> ArrayDataset:
    """A dataset of images in memory (module docstring); give ``class_names`` or
    ``num_classes`` (class names default to ``"0" .. "K-1"``)."""
    if class_names is None and num_classes is None:
        raise DatasetError(
            "image_arrays needs the public label space: class_names=[...] or num_classes=K "
            "(never read from the labels)"
        )
    names = tuple(str(c) for c in class_names) if class_names is not None else None
    k = len(names) if names is not None else int(num_classes)
    if names is not None and num_classes is not None and num_classes != k:
        raise DatasetError(f"{k} class names for num_classes={num_classes}")
    if k < 2 or (names is not None and len(set(names)) != k):
        raise DatasetError(f"the label space needs >= 2 distinct classes; got {names or k}")
    if not splits:
        raise DatasetError("image_arrays needs at least one split, e.g. {'train': (x, y)}")
    checked = {str(s): _checked(str(s), x, y, k) for s, (x, y) in splits.items()}
    names = names or tuple(str(c) for c in range(k))
    return ArrayDataset(name, version or arrays_digest(names, checked), checked, names)
