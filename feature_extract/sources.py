"""What every data source is built on: the ``Source`` base class, ``DatasetError``, the row ids
(``hash_id``) and TFDS split strings (``read_instructions``, ``base_indices``).

The concrete sources (``arrays``, ``bundled``, ``image_sources``, ``datasets``' TFDS source) and
the modules that read any source (``listing``, ``pipeline``, ``extraction``) import these from
here; ``datasets.open_source`` opens a source of any kind. This module imports no other module
of the package, so none of them forms an import circle through it.

Every source is a random-access sequence of examples with a public label space:
``len(source)``, ``source.num_classes``, ``source.class_names``, ``source.name``,
``source.version``, ``source.split``, and ``source.get(indices) -> (images, labels, ids)`` where
``images`` is a list of raw images (``uint8 [H, W, C]`` arrays or encoded bytes; sizes may differ),
``labels`` int32 and ``ids`` int64 stable per-example ids.
"""

from __future__ import annotations

import abc
import hashlib
import types
from collections.abc import Sequence
from typing import Any

import numpy as np


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

    def attrs(self) -> dict[str, Any]:
        """What the store records about this split beyond its identity (none by default)."""
        return {}


def hash_id(text: str) -> int:
    """A stable signed int64 from a string id: BLAKE2b-64 of its UTF-8 bytes, little-endian."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def read_instructions(split: str, sizes: dict[str, int]) -> list[tuple[str, int, int]]:
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
    pieces = read_instructions(split, sizes)
    if len({base for base, _, _ in pieces}) != 1:
        return None
    return np.concatenate([np.arange(start, stop, dtype=np.int64) for _, start, stop in pieces])
