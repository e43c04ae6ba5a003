"""Your own embeddings in NumPy files, and every path a head reads rows from
(docs/architecture.md, "Data given as paths").

    "X.npy"        features [N, D]; the labels [N] come from a second .npy (or an array)
    "F.npz"        the arrays ``features`` (or ``x``) and ``labels`` (or ``y``); when F has
                   none, the default split's (below)
    "F.npz:S"      split S: ``S_features`` (or ``S_x``, ``x_S``) and ``S_labels`` (or ``S_y``,
                   ``y_S``): ``np.savez(F, x_train=..., y_train=..., x_test=..., y_test=...)``
                   holds the splits ``train`` and ``test``

The default split is ``train`` for ``fit`` and ``test`` for a head's ``predict``/``accuracy``
(a store path without ``:split`` reads the same splits). A ``.npy`` is memory-mapped (rows are
read as a pass needs them); a ``.npz`` member is read whole when it is loaded.
``ArraySplit.shape`` reads only the arrays' headers, so a run can be checked (and refused)
before any row is read. Only numpy and the store's reader (numpy, h5py) are imported here.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from feature_extract import store

SUFFIXES = (".npy", ".npz")
CHUNK_ROWS = 65536
PLAIN = {"features": ("features", "x"), "labels": ("labels", "y")}


def split_spec(spec: str | os.PathLike) -> tuple[str, str | None]:
    """``"F.npz:test"`` -> ``("F.npz", "test")``; ``"F.npz"`` -> ``("F.npz", None)``."""
    path, sep, split = os.fspath(spec).rpartition(":")
    if sep and split and os.sep not in split and path:
        return path, split
    return os.fspath(spec), None


def is_array_file(spec: Any) -> bool:
    """Whether ``spec`` names a ``.npy`` or ``.npz`` file (with an optional ``:split``)."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    return split_spec(spec)[0].lower().endswith(SUFFIXES)


def _names(split: str | None, what: str) -> tuple[str, ...]:
    """The members that may hold ``what`` of ``split`` (None: the plain names)."""
    if split is None:
        return PLAIN[what]
    short = PLAIN[what][1]
    return (f"{split}_{what}", f"{split}_{short}", f"{short}_{split}")


@dataclass(frozen=True)
class ArraySplit:
    """One split of rows held in NumPy files: the features (a ``.npy``, or a member of a
    ``.npz``) and their labels (a ``.npy`` path, a member of the same ``.npz``, an array, or
    None when there are none: prediction only)."""

    path: str
    split: str | None  # the .npz split; None for a .npy or the .npz's plain arrays
    member: str | None  # the .npz member of the features; None for a .npy
    labels: Any

    @property
    def name(self) -> str:
        """The file's name and the split (never its folder), for messages and reports."""
        base = os.path.basename(self.path)
        return base if self.split is None else f"{base}:{self.split}"

    def shape(self) -> tuple[int, int]:
        """``(N, D)`` from the headers alone; a ValueError unless the features are [N, D] and
        the labels [N]."""
        features = _header(self.path, self.member)
        if len(features) != 2 or 0 in features:
            raise ValueError(
                f"the features of {self.name} must be a non-empty 2-D array [N, D], got shape "
                f"{features}"
            )
        if self.labels is None:
            labels = features[:1]
        elif isinstance(self.labels, str) and self.member is not None:
            labels = _header(self.path, self.labels)
        elif isinstance(self.labels, str):
            labels = _header(self.labels, None)
        else:
            labels = np.shape(self.labels)
        if labels != features[:1]:
            raise ValueError(
                f"{self.name} has {features[0]} rows of features but labels of shape {labels}"
            )
        return int(features[0]), int(features[1])

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(features, labels)``, checked by ``shape``; a ``.npy`` is memory-mapped."""
        self.shape()
        if self.member is None:
            x = np.load(self.path, mmap_mode="r", allow_pickle=False)
        else:
            x = _member(self.path, self.member)
        if self.labels is None:
            return x, None
        if isinstance(self.labels, str) and self.member is not None:
            return x, _member(self.path, self.labels)
        if isinstance(self.labels, str):
            return x, np.load(self.labels, allow_pickle=False)
        return x, np.asarray(self.labels)


def _member(path: str, name: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as f:
        return f[name]


def _header(path: str, member: str | None) -> tuple[int, ...]:
    """The shape in the header of a ``.npy`` file, or of a ``.npz`` member."""
    try:
        if member is None:
            with open(path, "rb") as f:
                return _read_shape(f)
        with zipfile.ZipFile(path) as z, z.open(member + ".npy") as f:
            return _read_shape(f)
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as err:
        what = path if member is None else f"array {member!r} of {path}"
        raise ValueError(f"cannot read {what} as a NumPy array: {err}") from err


def _read_shape(f: Any) -> tuple[int, ...]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, _ = np.lib.format.read_array_header_1_0(f)
    else:
        shape, _, _ = np.lib.format.read_array_header_2_0(f)
    return tuple(int(s) for s in shape)


def _members(path: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return sorted(n[: -len(".npy")] for n in z.namelist() if n.endswith(".npy"))
    except (OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read {path} as a .npz file: {err}") from err


def _find(members: list[str], split: str | None, what: str) -> str | None:
    return next((n for n in _names(split, what) if n in members), None)


def array_split(
    spec: str | os.PathLike,
    labels: Any = None,
    default_split: str = "train",
    *,
    need_labels: bool = True,
) -> ArraySplit:
    """The split ``spec`` names (``"X.npy"``, ``"F.npz"``, ``"F.npz:test"``; module docstring)
    with ``labels`` (a ``.npy`` path or an array, only beside a ``.npy``); a ValueError naming
    what is missing. Without ``need_labels`` the split may have no labels."""
    path, split = split_spec(spec)
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path}")
    if path.lower().endswith(".npy"):
        if split is not None:
            raise ValueError(f"a .npy file holds one array, it has no split: {spec}")
        if labels is None and need_labels:
            raise ValueError(
                f"{path} holds features only: give their labels too (--labels Y.npy; in Python "
                "an array, or the path of a .npy)"
            )
        if isinstance(labels, os.PathLike):
            labels = os.fspath(labels)
        if isinstance(labels, str) and not os.path.isfile(labels):
            raise ValueError(f"no such labels file: {labels}")
        return ArraySplit(path, None, None, labels)
    if labels is not None:
        raise ValueError(f"{path} brings its labels; give no labels with a .npz file")
    members = _members(path)
    if split is None and _find(members, None, "features") is None:
        split = default_split
    features = _find(members, split, "features")
    found = _find(members, split, "labels")
    for what, name in (("features", features), ("labels", found)):
        if name is None and (what == "features" or need_labels):
            raise ValueError(
                f"{path} has no {what} array{f' for split {split!r}' if split else ''}: name it "
                f"{' or '.join(repr(n) for n in _names(split, what))}; it holds {members}"
            )
    return ArraySplit(path, split, features, found)


def has_split(path: str, split: str) -> bool:
    """Whether the ``.npz`` at ``path`` holds features for ``split``."""
    return _find(_members(path), split, "features") is not None


def read_chunks(
    spec: str | os.PathLike, labels: Any = None, *, need_labels: bool
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """``(features, labels)`` chunks of ``CHUNK_ROWS`` rows of a store split (its ``test`` split
    unless one is named) or of an array file with its ``labels`` (module docstring); the
    labels are None where the data has none and ``need_labels`` is false."""
    if is_array_file(spec):
        x, y = array_split(spec, labels, "test", need_labels=need_labels).load()
        for start in range(0, x.shape[0], CHUNK_ROWS):
            stop = start + CHUNK_ROWS
            yield x[start:stop], None if y is None else y[start:stop]
        return
    if labels is not None:
        raise ValueError("labels come from the store; give no labels with a store path")
    path, split = store.parse_store_path(os.fspath(spec), "test")
    with store.SplitReader(path, split) as reader:
        yield from reader.iter_chunks(CHUNK_ROWS)


__all__ = [
    "SUFFIXES",
    "ArraySplit",
    "array_split",
    "has_split",
    "is_array_file",
    "read_chunks",
    "split_spec",
]
