"""The user's own images as sources: ``folder:DIR`` and ``list:FILE.csv`` (files on disk).

``open_files_source("folder:DIR", "train[:90%]")`` lists the base splits the split string names
(``listing``: their files in the public hash order, the label space), takes the TFDS-style slice,
and returns a ``FileSource`` whose ``get`` reads and decodes the files
(``decoding.decode_image``) in the pipeline's worker threads. A row's id is ``hash_id`` of its
key (its path relative to ``DIR``, or as written in the list), so a resumed run finds the same
rows.

Unreadable files. Without ``skip_unreadable`` the first unreadable file is an error naming it:
at open time for what the listing finds (a missing file, a broken link, a loop), during the
extraction for a file that fails to decode (the rows already written are kept). With
``skip_unreadable`` every selected file is first decoded the cheap way (``check_image``: JPEGs at
1/8 scale) on ``workers`` threads; the unreadable ones are dropped after the slice is taken (so
slices keep their files) and listed in the split's ``skipped_files`` and ``skipped_reasons``
attributes, and a warning says how many. The names of the skipped files are the user's private
file names; they stay in the store, which is private anyway.

The source's ``version`` is ``files-sha256:`` and the first 16 hex digits of a SHA-256 over the
label space and the rows' keys and labels: the identity a resumed extraction must match, so a
folder changed between two runs is never appended to.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from feature_extract import interrupts, listing
from feature_extract.decoding import check_image, decode_image
from feature_extract.sources import DatasetError, Source, hash_id, read_instructions

KINDS = ("folder", "list")
CHECK_CHUNK = 256  # files per task of the check pass
_BASE_SPLIT = re.compile(r"(?:^|\+)\s*([^\[\]+\s]+)")
_ALL = re.compile(r"(?<![\w-])all(?![\w-])")
ALL_ALIAS = "all__files"


def is_files_spec(name: str) -> bool:
    """Whether ``name`` is ``folder:DIR`` or ``list:FILE``."""
    return isinstance(name, str) and name.partition(":")[0] in KINDS and ":" in name


def base_splits(split: str) -> list[str]:
    """The base split names of a split string (``train[:10%]+test`` -> ``[train, test]``)."""
    return list(dict.fromkeys(_BASE_SPLIT.findall(split)))


def digest(names: Sequence[str], keys: Sequence[str], labels: np.ndarray) -> str:
    """``files-sha256:<16 hex>`` over the class names, then each row's key and label."""
    h = hashlib.sha256("\n".join(names).encode())
    for key, label in zip(keys, labels.tolist(), strict=True):
        h.update(f"\0{key}\t{label}".encode())
    return "files-sha256:" + h.hexdigest()[:16]


def find_unreadable(
    paths: Sequence[str], *, workers: int | None = None, progress: bool = False, desc: str = ""
) -> dict[int, str]:
    """``{index: reason}`` of the ``paths`` that do not decode (``check_image``), checked in
    chunks of ``CHECK_CHUNK`` on ``workers`` threads."""
    from feature_extract.pipeline import default_workers

    chunks = [range(s, min(s + CHECK_CHUNK, len(paths))) for s in range(0, len(paths), CHECK_CHUNK)]
    found: dict[int, str] = {}
    bar = tqdm(
        total=len(paths),
        unit="img",
        unit_scale=True,
        desc=desc,
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    with bar, interrupts.thread_pool(workers or default_workers(), "check") as pool:
        for chunk, reasons in zip(
            chunks, pool.map(lambda c: [check_image(paths[i]) for i in c], chunks), strict=True
        ):
            found.update({i: r for i, r in zip(chunk, reasons, strict=True) if r is not None})
            bar.update(len(chunk))
    return found


class FileSource(Source):
    """Rows ``keys`` (paths relative to ``root``) with ``labels``; decodes on ``get``."""

    def __init__(
        self,
        name: str,
        split: str,
        root: str,
        keys: list[str],
        labels: np.ndarray,
        class_names: tuple[str, ...],
        skipped: dict[str, str] | None = None,
    ):
        self.name, self.split, self._root = name, split, root
        self._keys, self._labels = keys, labels
        self.class_names, self.num_classes = class_names, len(class_names)
        self.version = digest(class_names, keys, labels)
        self._skipped = skipped

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> list[str]:
        """The rows' paths relative to the folder (or as a list writes them), in row order."""
        return list(self._keys)

    @property
    def root(self) -> str:
        """The folder the keys are relative to."""
        return self._root

    def get(self, indices: Sequence[int]) -> tuple[list, np.ndarray, np.ndarray]:
        keys = [self._keys[int(i)] for i in indices]
        images = [decode_image(os.path.join(self._root, key)) for key in keys]
        labels = self._labels[np.asarray(indices, dtype=np.int64)]
        return images, labels, np.array([hash_id(k) for k in keys], dtype=np.int64)

    def attrs(self) -> dict[str, Any]:
        """``skipped_files`` and ``skipped_reasons`` when unreadable files were skipped."""
        if self._skipped is None:
            return {}
        return {
            "skipped_files": list(self._skipped),
            "skipped_reasons": list(self._skipped.values()),
        }


def _list(kind: str, path: str, bases: list[str], classes: str | None):
    """``({base: Files}, class names)`` for the base splits ``bases`` of a folder or list."""
    if kind == "list":
        splits, names = listing.list_rows(path, classes)
        missing = [b for b in bases if b not in splits]
        if missing:
            raise DatasetError(
                f"the list {path} has no split {missing[0]!r}; its splits are "
                f"{', '.join(sorted(splits))} (the optional third column; without it: 'all', "
                "e.g. --splits train=all[:90%],test=all[90%:])"
            )
        return {b: splits[b] for b in bases}, names
    out, names = {}, ()
    for base in bases:
        out[base], names = listing.list_folder(path, base, classes)
    return out, names


def _warn_empty(kind: str, path: str, files: dict, names: tuple[str, ...]) -> None:
    if kind != "folder":
        return
    for base, found in files.items():
        folder = path if base == listing.ALL else os.path.join(path, base)
        present = set(listing.class_folders(folder))
        counts = np.bincount(np.asarray(found.labels, dtype=np.int64), minlength=len(names))
        empty = [n for i, n in enumerate(names) if n in present and counts[i] == 0]
        if empty:
            warnings.warn(
                f"class folder(s) with no images in {folder}: {', '.join(empty)} (kept in the "
                "label space, which is public: the class folder names)",
                stacklevel=3,
            )


def open_files_source(
    spec: str,
    split: str,
    *,
    classes: str | None = None,
    skip_unreadable: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> FileSource:
    """The split ``split`` (a TFDS-style split string over the base splits) of ``folder:DIR`` or
    ``list:FILE.csv`` (module docstring)."""
    kind, _, where = spec.partition(":")
    path = os.path.abspath(os.path.expanduser(where))
    name = f"{kind}:{path}"
    try:
        files, names = _list(kind, path, base_splits(split), classes)
    except listing.ListingError as err:
        raise DatasetError(str(err)) from None
    _warn_empty(kind, path, files, names)
    ordered = {b: listing.in_row_order(f) for b, f in files.items()}
    problems = {k: r for f in files.values() for k, r in f.problems.items()}
    # TFDS reserves the name 'all' (no slices): it is parsed under another name
    alias = {(ALL_ALIAS if b == listing.ALL else b): b for b in ordered}
    sizes = {a: len(ordered[b][0]) for a, b in alias.items()}
    keys: list[str] = []
    labels = []
    try:
        pieces = read_instructions(_ALL.sub(ALL_ALIAS, split), sizes)
    except DatasetError as err:
        raise DatasetError(str(err).replace(ALL_ALIAS, listing.ALL)) from None
    for base, start, stop in pieces:
        keys += ordered[alias[base]][0][start:stop]
        labels.append(ordered[alias[base]][1][start:stop])
    label_array = np.concatenate(labels) if labels else np.zeros(0, np.int32)
    root = path if kind == "folder" else os.path.dirname(path)
    bad = {k: problems[k] for k in keys if k in problems}
    if not skip_unreadable:
        if bad:
            key, reason = next(iter(bad.items()))
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise DatasetError(
                f"cannot read {os.path.join(root, key)}: {reason}{more}; fix or remove it, or "
                "pass --skip-unreadable (skip_unreadable=True) to skip unreadable files and "
                "list them in the store"
            )
        return FileSource(name, split, root, keys, label_array, names)
    todo = [i for i, k in enumerate(keys) if k not in bad]
    found = find_unreadable(
        [os.path.join(root, keys[i]) for i in todo],
        workers=workers,
        progress=progress,
        desc=f"checking {kind}:{os.path.basename(path)}:{split}",
    )
    bad.update({keys[todo[i]]: reason for i, reason in found.items()})
    keep = [i for i, k in enumerate(keys) if k not in bad]
    skipped = {k: bad[k] for k in keys if k in bad}
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable file(s) of {name} split {split!r}, listed in the "
            f"store's skipped_files attribute (e.g. {next(iter(skipped))}: "
            f"{next(iter(skipped.values()))})",
            stacklevel=2,
        )
    return FileSource(name, split, root, [keys[i] for i in keep], label_array[keep], names, skipped)
