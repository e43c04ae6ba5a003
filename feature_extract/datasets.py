"""Labelled image sources: TFDS datasets (read without TensorFlow) and the bundled ``digits``.

Every source is a random-access sequence of examples with a public label space:
``len(source)``, ``source.num_classes``, ``source.class_names``, ``source.name``,
``source.version``, ``source.split``, and ``source.get(indices) -> (images, labels, ids)`` where
``images`` is a list of raw images (``uint8 [H, W, C]`` arrays or encoded bytes; sizes may differ),
``labels`` int32 and ``ids`` int64 stable per-example ids.

Ids: a TFDS example's string id (its ``tfds_id`` or ``id`` feature) hashed to int64 (the first 8
bytes of its BLAKE2b digest, little-endian, signed); when the dataset has none, the example's index
in its base split (``train[90%:]`` starts at the 90% offset, when the split sizes are known) else in
the split as given. ``digits`` ids are the row index in scikit-learn's ``load_digits``.
"""

from __future__ import annotations

import abc
import hashlib
import types
from collections.abc import Sequence
from functools import cache

import numpy as np

DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 0.2
DIGITS_VERSION = "1.0.0"  # bump if the split definition below ever changes


class DatasetError(ValueError):
    """A dataset or split that cannot be opened, with what to do about it."""


class Source(abc.ABC):
    """One split of a labelled image dataset, random access by row index."""

    name: str
    version: str
    split: str
    num_classes: int
    class_names: tuple[str, ...]

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of examples in the split."""

    @abc.abstractmethod
    def get(self, indices: Sequence[int]) -> tuple[list, np.ndarray, np.ndarray]:
        """``(images, labels int32, ids int64)`` of the rows ``indices`` (in that order)."""


def hash_id(text: str) -> int:
    """A stable signed int64 from a string id: BLAKE2b-64 of its UTF-8 bytes, little-endian."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _read_instructions(split: str, sizes: dict[str, int]) -> list[tuple[str, int, int]]:
    """``(base_split, start, stop)`` pieces of a TFDS split string such as ``train[:90%]+test``."""
    import tensorflow_datasets as tfds

    try:
        instruction = tfds.core.ReadInstruction.from_spec(split)
        infos = {k: types.SimpleNamespace(num_examples=n) for k, n in sizes.items()}
        pieces = instruction.to_absolute(infos)
    except (ValueError, KeyError, AttributeError, AssertionError) as err:
        raise DatasetError(
            f"bad split {split!r}: {err}. Use e.g. 'train', 'train[:90%]', "
            f"'test[100:200]'; splits available: {sorted(sizes)}"
        ) from None
    return [
        (p.splitname, p.from_ or 0, sizes[p.splitname] if p.to is None else p.to) for p in pieces
    ]


def base_indices(split: str, sizes: dict[str, int]) -> np.ndarray | None:
    """Each row's index in its base split (``train[90%:]`` of 100 rows -> 90..99), or None when
    the split string concatenates several base splits (their indices would collide)."""
    pieces = _read_instructions(split, sizes)
    if len({base for base, _, _ in pieces}) != 1:
        return None
    return np.concatenate([np.arange(start, stop, dtype=np.int64) for _, start, stop in pieces])


@cache
def _digits() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """scikit-learn's digits as ``uint8 [1797, 8, 8, 3]`` images, labels and the fixed split.

    Pixels 0..16 map to ``round(v * 255 / 16)``. The split is stratified: for each class in order,
    a permutation of its rows from ``default_rng(DIGITS_SEED)`` puts the first
    ``round(DIGITS_TEST_FRACTION * n_c)`` rows in ``test``, the rest in ``train``; both sorted.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    grey = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=-1)
    labels = data.target.astype(np.int32)
    rng = np.random.default_rng(DIGITS_SEED)
    train, test = [], []
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(DIGITS_TEST_FRACTION * rows.size)
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    splits = {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}
    return images, labels, splits


class DigitsSource(Source):
    """The bundled offline dataset: scikit-learn's 8x8 handwritten digits, 10 classes."""

    name = "digits"
    version = DIGITS_VERSION
    num_classes = 10
    class_names = tuple(str(c) for c in range(10))

    def __init__(self, split: str = "train"):
        images, labels, splits = _digits()
        sizes = {k: v.size for k, v in splits.items()}
        rows = [splits[base][start:stop] for base, start, stop in _read_instructions(split, sizes)]
        self.split, self._rows = split, np.concatenate(rows)
        self._images, self._labels = images, labels

    def __len__(self) -> int:
        return int(self._rows.size)

    def get(self, indices: Sequence[int]) -> tuple[list, np.ndarray, np.ndarray]:
        rows = self._rows[np.asarray(indices, dtype=np.int64)]
        return list(self._images[rows]), self._labels[rows], rows.astype(np.int64)


class TFDSSource(Source):
    """A TFDS split read through ``tfds.data_source`` (ArrayRecord; TensorFlow not needed).

    The label space and class names come from ``info.features[label_key]`` (public metadata).
    """

    def __init__(
        self,
        name: str,
        split: str = "train",
        *,
        data_dir: str | None = None,
        download: bool = True,
        image_key: str = "image",
        label_key: str = "label",
    ):
        import tensorflow_datasets as tfds

        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
        except Exception as err:  # tfds raises many types: say what to do, keep the cause
            raise DatasetError(
                f"cannot open TFDS dataset {name!r} split {split!r} (data_dir={data_dir!r}): "
                f"{type(err).__name__}: {str(err).rstrip('.')}. Prepare it once in ArrayRecord "
                f"format (e.g. `tfds build {name} --file_format=array_record`) and pass "
                "--data-dir, or allow downloading."
            ) from err
        info = self._source.dataset_info
        features = info.features
        for key in (image_key, label_key):
            if key not in features:
                raise DatasetError(
                    f"TFDS dataset {name!r} has no feature {key!r}; it has "
                    f"{sorted(features.keys())}"
                )
        label = features[label_key]
        if not hasattr(label, "num_classes"):
            raise DatasetError(
                f"feature {label_key!r} of {name!r} is not a ClassLabel; the label "
                "space must come from public metadata"
            )
        self.name, self.split, self.version = name, split, str(info.version)
        self.num_classes = int(label.num_classes)
        self.class_names = tuple(str(n) for n in label.names)
        self._image_key, self._label_key = image_key, label_key
        try:
            sizes = {k: int(v.num_examples) for k, v in info.splits.items()}
            self._base_index = base_indices(split, sizes)
        except (ValueError, AttributeError, TypeError):  # split sizes unknown (a mocked dataset)
            self._base_index = None

    def _index_id(self, index: int) -> int:
        return index if self._base_index is None else int(self._base_index[index])

    def __len__(self) -> int:
        return len(self._source)

    def get(self, indices: Sequence[int]) -> tuple[list, np.ndarray, np.ndarray]:
        examples = [self._source[int(i)] for i in indices]
        images = [ex[self._image_key] for ex in examples]
        labels = np.array([ex[self._label_key] for ex in examples], dtype=np.int32)
        ids = [self._example_id(ex, int(i)) for ex, i in zip(examples, indices, strict=True)]
        return images, labels, np.array(ids, dtype=np.int64)

    def _example_id(self, example: dict, index: int) -> int:
        for key in ("tfds_id", "id"):
            value = example.get(key)
            if isinstance(value, (str, bytes, np.bytes_, np.str_)):
                return hash_id(value.decode() if isinstance(value, bytes) else str(value))
        return self._index_id(index)


BUNDLED = {"digits": DigitsSource}


def open_source(
    name: str, split: str = "train", *, data_dir: str | None = None, download: bool = True
) -> Source:
    """The split ``split`` of dataset ``name``: a bundled dataset, else a TFDS dataset."""
    if name in BUNDLED:
        return BUNDLED[name](split)
    return TFDSSource(name, split, data_dir=data_dir, download=download)
