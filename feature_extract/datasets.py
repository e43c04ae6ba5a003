"""Labelled image sources: ``open_source`` for every kind, and TFDS (read without TensorFlow).

Kinds: the bundled ``digits`` and ``mnist5k`` (``bundled``), ``folder:DIR`` and ``list:FILE.csv``
(``image_sources``), images in memory (``arrays.ArrayDataset``), and TFDS datasets (here). Each
is a ``sources.Source``; the base pieces (``Source``, ``DatasetError``, ``hash_id``, the split
strings' ``read_instructions`` and ``base_indices``) live in ``sources``, and all but
``read_instructions`` can be imported from here too.

Ids: a TFDS example's string id (its ``tfds_id`` or ``id`` feature) hashed to int64 (the first 8
bytes of its BLAKE2b digest, little-endian, signed); when the dataset has none, the example's index
in its base split (``train[90%:]`` starts at the 90% offset, when the split sizes are known) else in
the split as given. Bundled and in-memory sets: the row index of the image in its array; files: a
hash of the relative path.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from feature_extract import image_sources, netprobe
from feature_extract.arrays import ArrayDataset
from feature_extract.bundled import BUNDLED, bundled
from feature_extract.sources import DatasetError, Source, base_indices, hash_id


class TFDSSource(Source):
    """A TFDS split read through ``tfds.data_source`` (ArrayRecord; TensorFlow not needed).

    The label space and class names come from ``info.features[label_key]`` (public metadata).
    Opening: see ``_open_tfds`` (an unknown name, an offline download and a failed download each
    give one ``DatasetError`` line).
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
        self._source = _open_tfds(name, split, data_dir, download)
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


def _one_line(err: BaseException, limit: int = 400) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Silence TFDS's absl warnings (e.g. "Variant folder ... has no dataset_info.json") while it
    only looks for a prepared dataset: an error must stay one line."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _unknown_name(name: str) -> DatasetError:
    """``unknown dataset 'x'``, with the closest bundled or TFDS names."""
    import tensorflow_datasets as tfds

    base = name.split(":")[0].split("/")[0].lower()
    names = [*BUNDLED, *tfds.list_builders(with_community_datasets=False)]
    close = difflib.get_close_matches(base, names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return DatasetError(
        f"unknown dataset {name!r}: neither bundled ({', '.join(BUNDLED)}), folder:DIR, "
        "list:FILE.csv nor a TFDS dataset; "
        f"{hint}`python -c 'import tensorflow_datasets as t; print(t.list_builders())'` lists "
        "the TFDS names"
    )


def _snapshot(root: str, depth: int = 3) -> set[str]:
    """Paths under ``root`` down to ``depth`` levels (``root`` itself when it exists)."""
    if not os.path.isdir(root):
        return set()
    found = {root}
    for here, dirs, files in os.walk(root):
        level = os.path.relpath(here, root).count(os.sep) + (here != root)
        found.update(os.path.join(here, n) for n in (*dirs, *files))
        if level + 1 >= depth:
            dirs.clear()
    return found


def _remove_created(root: str, before: set[str]) -> None:
    """Remove what appeared under ``root`` since ``before`` (top-most new paths first)."""
    for path in sorted(_snapshot(root) - before, key=len):
        if not os.path.lexists(path):
            continue  # inside a folder removed just before
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)


def _open_tfds(name: str, split: str, data_dir: str | None, download: bool):
    """``tfds.data_source(name, split)``, with one-line errors and a fast offline failure.

    1. A prepared dataset (in ``data_dir``) is opened without any network access.
    2. An unknown name is a ``DatasetError`` naming the closest known names.
    3. Not prepared: with ``download`` off, say how to prepare it; with it on, first probe the
       dataset's download servers (``builder.url_infos``; ``netprobe``) and fail in a few seconds
       when they cannot be reached, before anything is written; otherwise download, and on any
       failure remove what the attempt created under the data directory.
    """
    import tensorflow_datasets as tfds

    not_found = tfds.core.registered.DatasetNotFoundError
    with _quiet_absl():
        try:
            return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except not_found:
            raise _unknown_name(name) from None
        except Exception as err:  # tfds raises many types: decide below what it meant
            first = err
        try:
            builder = tfds.builder(name, data_dir=data_dir)
            prepared = builder.is_prepared()
        except Exception:  # noqa: BLE001 - report the first error instead
            builder, prepared = None, True
    prepare = (
        f"prepare it once in ArrayRecord format on a machine with network (`tfds build {name} "
        "--file_format=array_record`), copy its data directory here and pass --data-dir DIR"
    )
    if prepared:  # or no builder: the first error is the one to report
        raise DatasetError(
            f"cannot open TFDS dataset {name!r} split {split!r} (data_dir={data_dir!r}): "
            f"{type(first).__name__}: {_one_line(first)}. {prepare[0].upper()}{prepare[1:]}."
        ) from first
    root = os.fspath(getattr(builder, "_data_dir_root", None) or data_dir or "")
    if not download:
        raise DatasetError(
            f"TFDS dataset {name!r} is not prepared in {root or data_dir!r} and downloading is "
            f"off (--no-download): {prepare}, or allow downloading."
        ) from None
    urls = list(getattr(builder, "url_infos", None) or {}) or ["https://storage.googleapis.com"]
    down = netprobe.unreachable(urls)
    if down:
        raise DatasetError(
            f"cannot reach the download servers of TFDS dataset {name!r} ({', '.join(down)}) "
            f"within {netprobe.DEFAULT_TIMEOUT:g} s, so it cannot be downloaded: {prepare}; or "
            "use --data mnist5k or digits (bundled, offline)."
        ) from None
    before = _snapshot(root) if root else set()
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=True)
    except BaseException as err:
        if root:
            _remove_created(root, before)
        if not isinstance(err, Exception):
            raise
        raise DatasetError(
            f"downloading TFDS dataset {name!r} failed ({type(err).__name__}: "
            f"{_one_line(err)}); what this run had created under {root} was removed. "
            f"Run again, or {prepare}."
        ) from err


def open_source(
    name: Any,
    split: str = "train",
    *,
    data_dir: str | None = None,
    download: bool = True,
    classes: str | None = None,
    skip_unreadable: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> Source:
    """The split ``split`` of dataset ``name``: an ``arrays.ArrayDataset``, a bundled name,
    ``folder:DIR`` or ``list:FILE.csv`` (``classes``: a class file; ``skip_unreadable``, with
    ``workers`` threads and a progress bar, see ``image_sources``), else a TFDS name."""
    if isinstance(name, ArrayDataset):
        return name.source(split)
    if image_sources.is_files_spec(name):
        return image_sources.open_files_source(
            name,
            split,
            classes=classes,
            skip_unreadable=skip_unreadable,
            workers=workers,
            progress=progress,
        )
    if classes is not None:
        raise DatasetError(
            f"--classes (classes=) applies to folder: and list: datasets, not to {name!r}, whose "
            "label space comes from its metadata"
        )
    if name in BUNDLED:
        return bundled(name).source(split)
    return TFDSSource(name, split, data_dir=data_dir, download=download)
