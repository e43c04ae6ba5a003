"""The HDF5 feature store: one file per (dataset, backbone), one group per split (DESIGN.md sec. 3).

Each split group holds
    features  float16/float32 [N, D], chunked by rows, fletcher32 checksums
    labels    int32 [N]
    ids       int64 [N]   stable per-example ids (source index, or a hash of the TFDS id)
and attributes: ``backbone``, ``checkpoint``, ``checkpoint_sha256``, ``dataset``,
``dataset_version``,
``split``, ``preprocessing``, ``feature_dtype``, ``num_classes``, ``class_names``, ``total_rows``,
``rows_written`` and ``complete``. The file carries ``format_version``.

Crash consistency: the writer opens the file only while it appends a batch. An append resizes the
datasets, writes the rows, flushes, and only then commits ``rows_written``; a resumed writer first
truncates the datasets back to the committed count. A run killed at any point between appends
therefore resumes with no gap and no duplicate.

This module imports nothing heavier than numpy and h5py: ``private_head`` reads stores through it.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

FORMAT_VERSION = 1
FEATURE_DTYPES = ("float16", "float32")
# Attributes that must agree between a store and a writer that wants to append to it.
IDENTITY_ATTRS = (
    "backbone",
    "checkpoint_sha256",
    "dataset",
    "dataset_version",
    "preprocessing",
    "feature_dtype",
    "num_classes",
)
_CHUNK_BYTES = 1 << 20
_METADATA_BYTES = 1 << 16  # headroom for the B-tree and attribute updates of one append


class StoreError(ValueError):
    """A feature store that is missing, malformed, corrupt or does not match what was asked."""


class IncompleteSplitError(StoreError):
    """A split whose extraction has not finished."""


@dataclass(frozen=True)
class SplitInfo:
    """The public metadata of one split of a store."""

    path: str
    split: str
    num_rows: int
    dim: int
    feature_dtype: str
    num_classes: int
    class_names: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)


def parse_store_path(spec: str, default_split: str | None = None) -> tuple[str, str | None]:
    """Split ``"file.h5:train"`` into ``("file.h5", "train")``; no ``:split`` gives the default."""
    path, sep, split = str(spec).rpartition(":")
    if sep and split and os.sep not in split and path:
        return path, split
    return str(spec), default_split


def check_finite(features: np.ndarray, what: str = "features") -> None:
    """Raise a ValueError naming the first rows that hold NaN or infinite values."""
    finite = np.isfinite(features).all(axis=tuple(range(1, features.ndim)))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ValueError(
            f"{what} hold NaN or infinite values in {bad.size} row(s): {shown}. "
            "Fix or drop these rows; they are never silently zeroed."
        )


def check_labels(labels: np.ndarray, num_classes: int, what: str = "labels") -> None:
    """Raise a ValueError if a label lies outside ``[0, num_classes)`` (the public label space)."""
    if labels.ndim != 1:
        raise ValueError(f"{what} must be a 1-D integer array, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what} must be integers, got dtype {labels.dtype}")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        shown = ", ".join(f"row {i}: {labels[i]}" for i in bad[:5])
        raise ValueError(
            f"{bad.size} {what} lie outside the label space [0, {num_classes}) "
            f"({shown}). num_classes must come from public metadata."
        )


def _chunk_rows(dim: int, itemsize: int) -> int:
    return max(1, _CHUNK_BYTES // max(1, dim * itemsize))


class SplitWriter:
    """Append-only, resumable writer of one split.

    ``SplitWriter(path, split, dim=..., total_rows=..., num_classes=..., attrs=...)`` creates the
    split or reopens an unfinished one with the same identity (``IDENTITY_ATTRS``).
    ``rows_written`` says where to resume; ``append`` writes the next rows; ``finish`` marks the
    split complete.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str,
        *,
        dim: int,
        total_rows: int,
        num_classes: int,
        class_names: Sequence[str] = (),
        feature_dtype: str = "float32",
        attrs: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ):
        if feature_dtype not in FEATURE_DTYPES:
            raise ValueError(
                f"feature_dtype must be one of {FEATURE_DTYPES}, got {feature_dtype!r}"
            )
        if dim < 1 or total_rows < 0 or num_classes < 1:
            raise ValueError(
                f"need dim >= 1, total_rows >= 0, num_classes >= 1; got {dim}, "
                f"{total_rows}, {num_classes}"
            )
        self.path, self.split, self.dim, self.total_rows = os.fspath(path), split, dim, total_rows
        self.num_classes = num_classes
        wanted = {
            **(attrs or {}),
            "split": split,
            "feature_dtype": feature_dtype,
            "num_classes": int(num_classes),
            "total_rows": int(total_rows),
        }
        with h5py.File(self.path, "a") as f:
            f.attrs.setdefault("format_version", FORMAT_VERSION)
            if split in f:
                group = f[split]
                if overwrite:
                    del f[split]
                elif group.attrs.get("complete", False):
                    raise StoreError(
                        f"split {split!r} of {self.path} is already complete; pass "
                        "overwrite=True (--overwrite) to write it again."
                    )
                else:
                    self._check_same_identity(group, wanted)
            if split not in f:
                self._create(f, wanted, class_names, feature_dtype)
            group = f[split]
            self.rows_written = int(group.attrs["rows_written"])
            for name in ("features", "labels", "ids"):  # drop rows written after the last commit
                group[name].resize(self.rows_written, axis=0)

    def _check_same_identity(self, group: h5py.Group, wanted: Mapping[str, Any]) -> None:
        diffs = [
            f"{k}: store has {_plain(group.attrs.get(k))!r}, this run has {wanted.get(k)!r}"
            for k in (*IDENTITY_ATTRS, "total_rows")
            if k in wanted and _plain(group.attrs.get(k)) != wanted.get(k)
        ]
        if group["features"].shape[1] != self.dim:
            diffs.append(f"dim: store has {group['features'].shape[1]}, this run has {self.dim}")
        if diffs:
            raise StoreError(
                f"refusing to append to split {self.split!r} of {self.path}, "
                "which was written by a different run (" + "; ".join(diffs) + "). "
                "Use another "
                "output path, or overwrite=True (--overwrite) to replace it."
            )

    def _create(
        self, f: h5py.File, attrs: Mapping[str, Any], class_names: Sequence[str], feature_dtype: str
    ) -> None:
        group = f.create_group(self.split)
        rows = min(_chunk_rows(self.dim, np.dtype(feature_dtype).itemsize), max(1, self.total_rows))
        group.create_dataset(
            "features",
            shape=(0, self.dim),
            maxshape=(None, self.dim),
            dtype=feature_dtype,
            chunks=(rows, self.dim),
            fletcher32=True,
        )
        for name, dtype in (("labels", "int32"), ("ids", "int64")):
            group.create_dataset(
                name,
                shape=(0,),
                maxshape=(None,),
                dtype=dtype,
                chunks=(max(rows, 1024),),
                fletcher32=True,
            )
        for key, value in attrs.items():
            group.attrs[key] = value
        names = [str(c) for c in class_names]
        group.attrs["class_names"] = np.array(names, dtype=h5py.string_dtype())
        group.attrs["rows_written"] = 0
        group.attrs["complete"] = False

    def append(self, features: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> None:
        """Write the next rows, flush them, then commit the new row count."""
        features, labels, ids = np.asarray(features), np.asarray(labels), np.asarray(ids)
        n = features.shape[0]
        if features.shape != (n, self.dim) or labels.shape != (n,) or ids.shape != (n,):
            raise ValueError(
                f"append needs features [n, {self.dim}], labels [n], ids [n]; got "
                f"{features.shape}, {labels.shape}, {ids.shape}"
            )
        if self.rows_written + n > self.total_rows:
            raise ValueError(
                f"appending {n} rows would exceed total_rows={self.total_rows} "
                f"(already {self.rows_written})"
            )
        check_finite(features)
        check_labels(labels, self.num_classes)
        start, stop = self.rows_written, self.rows_written + n
        with h5py.File(self.path, "a") as f:
            group = f[self.split]
            _check_space(self.path, group, start, stop)
            for name, rows in (("features", features), ("labels", labels), ("ids", ids)):
                group[name].resize(stop, axis=0)
                group[name][start:stop] = rows
            f.flush()
            group.attrs["rows_written"] = stop
        self.rows_written = stop

    def finish(self) -> None:
        """Mark the split complete; every expected row must have been written."""
        if self.rows_written != self.total_rows:
            raise StoreError(
                f"cannot finish split {self.split!r}: {self.rows_written} of "
                f"{self.total_rows} rows written"
            )
        with h5py.File(self.path, "a") as f:
            f[self.split].attrs["complete"] = True


def _check_space(path: str, group: h5py.Group, start: int, stop: int) -> None:
    """Refuse an append that the disk or the file-size limit (RLIMIT_FSIZE) cannot hold.

    HDF5 does not fail cleanly when a write runs out of space (h5py crashes in ``flush``), so the
    room is checked first: the chunks the rows [start, stop) newly touch, per dataset, plus
    metadata headroom (a rewritten chunk keeps its size and place). Nothing is written on refusal.
    """
    need = _METADATA_BYTES
    for name in ("features", "labels", "ids"):
        ds = group[name]
        rows = ds.chunks[0]
        chunk_bytes = int(np.prod(ds.chunks)) * ds.dtype.itemsize + 4
        need += (-(-stop // rows) - (-(-start // rows))) * chunk_bytes
    size = os.path.getsize(path)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    stat = os.statvfs(os.path.dirname(os.path.abspath(path)))
    free = stat.f_bavail * stat.f_frsize
    if limit != resource.RLIM_INFINITY and size + need > limit:
        why = f"the file-size limit (ulimit -f) is {limit} bytes and the file has {size}"
    elif need > free:
        why = f"the disk has {free} bytes free"
    else:
        return
    raise StoreError(
        f"no room to append rows {start}:{stop} to {path}: about {need} more bytes "
        f"are needed and {why}. The {start} rows written so far are kept; free "
        "some space and run the same command again to resume."
    )


def write_split(
    path: str | os.PathLike,
    split: str,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    class_names: Sequence[str] = (),
    ids: np.ndarray | None = None,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> SplitInfo:
    """Write a whole split at once: the public writer for embeddings produced anywhere.

    ``features`` [N, D] (float16 keeps float16, anything else is stored as float32), ``labels`` [N]
    in ``[0, num_classes)``, ``ids`` [N] (default: the row index). ``attrs`` adds metadata such as
    ``backbone`` and ``dataset``.
    """
    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"features must be [N, D] and labels [N]; got {features.shape} and {labels.shape}"
        )
    if class_names and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}")
    dtype = "float16" if features.dtype == np.float16 else "float32"
    check_labels(labels, num_classes)  # before any cast: 1.7 or 2**32 + 1 must not become a label
    with np.errstate(over="ignore"):
        stored = features.astype(dtype)
    check_finite(stored, what=f"features (as {dtype})")
    ids = np.arange(features.shape[0], dtype=np.int64) if ids is None else np.asarray(ids)
    writer = SplitWriter(
        path,
        split,
        dim=features.shape[1],
        total_rows=features.shape[0],
        num_classes=num_classes,
        class_names=class_names,
        feature_dtype=dtype,
        attrs=attrs,
        overwrite=overwrite,
    )
    writer.append(stored, labels.astype(np.int32), ids.astype(np.int64))
    writer.finish()
    return split_info(path, split)


def _plain(value: Any) -> Any:
    """HDF5 attribute values as plain Python values (numpy scalars and bytes decoded)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _open_group(f: h5py.File, path: str, split: str) -> h5py.Group:
    version = f.attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise StoreError(
            f"{path} is not a feature store of format {FORMAT_VERSION} "
            f"(format_version={version!r}); write it with feature_extract."
        )
    if split not in f:
        raise StoreError(f"{path} has no split {split!r}; it has {sorted(f.keys())}")
    group = f[split]
    missing = [k for k in ("features", "labels", "ids") if k not in group]
    if missing:
        raise StoreError(f"split {split!r} of {path} lacks dataset(s) {missing}")
    rows = int(group.attrs.get("rows_written", -1))
    if not group.attrs.get("complete", False):
        total = group.attrs.get("total_rows", "?")
        raise IncompleteSplitError(
            f"split {split!r} of {path} is incomplete: {rows} of {total} rows were written before "
            "the extraction stopped. Run the same extraction command again to resume it."
        )
    shapes = {k: group[k].shape[0] for k in ("features", "labels", "ids")}
    if any(n != rows for n in shapes.values()):
        raise StoreError(
            f"split {split!r} of {path} is inconsistent: rows_written={rows} but "
            f"dataset lengths {shapes}; the file is damaged, extract it again."
        )
    _check_virtual_sources(path, group)
    return group


def _check_virtual_sources(path: str, group: h5py.Group) -> None:
    """Refuse a virtual dataset (a store assembled from shard files) whose source is missing,
    shorter than mapped, or incomplete: HDF5 would silently read fill values there."""
    folder = os.path.dirname(os.path.abspath(path))
    for name in ("features", "labels", "ids"):
        if not group[name].is_virtual:
            continue
        for source in group[name].virtual_sources():
            if source.file_name == ".":
                continue
            shard = os.path.join(folder, source.file_name)  # relative to the virtual file
            try:
                with h5py.File(shard, "r") as f:
                    have, complete = (
                        f[source.dset_name].shape[0],
                        f[source.dset_name].parent.attrs.get("complete", False),
                    )
            except (OSError, KeyError) as err:
                raise StoreError(
                    f"{path} is assembled from shard files, and {shard} "
                    f"({source.dset_name}) cannot be read: {err}. Keep the shards "
                    "next to it, or extract them again."
                ) from err
            low, high = source.vspace.get_select_bounds()
            need = high[0] - low[0] + 1
            if have < need or not complete:
                raise StoreError(
                    f"shard {shard} of {path} has {have} rows of "
                    f"{source.dset_name} (complete: {bool(complete)}) where the "
                    f"assembled store maps {need}; extract the shards again."
                )


def split_info(path: str | os.PathLike, split: str) -> SplitInfo:
    """The metadata of a complete split (raises ``IncompleteSplitError`` for an unfinished one)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise StoreError(
            f"no feature store at {path}; run `make features` (or feature_extract) "
            "first, or write your embeddings with feature_extract.store.write_split"
        )
    try:
        with h5py.File(path, "r") as f:
            group = _open_group(f, path, split)
            attrs = {k: _plain(v) for k, v in group.attrs.items()}
            return SplitInfo(
                path=path,
                split=split,
                num_rows=int(attrs["rows_written"]),
                dim=int(group["features"].shape[1]),
                feature_dtype=str(group["features"].dtype),
                num_classes=int(attrs["num_classes"]),
                class_names=tuple(attrs.get("class_names") or ()),
                attrs=attrs,
            )
    except OSError as err:
        raise StoreError(
            f"cannot read {path}: {err}. The file is truncated or not HDF5; extract it again."
        ) from err


def split_names(path: str | os.PathLike) -> list[str]:
    """The splits stored in a file, complete or not."""
    with h5py.File(os.fspath(path), "r") as f:
        return sorted(k for k in f if isinstance(f[k], h5py.Group))


class SplitReader:
    """Streaming reader of one complete split; use as a context manager.

    ``read(start, stop)`` returns ``(features, labels)`` rows; ``iter_chunks(rows)`` yields them in
    order. Checksum failures (flipped bytes) raise ``StoreError``, never wrong numbers.
    """

    def __init__(self, path: str | os.PathLike, split: str):
        self.info = split_info(path, split)
        self._file = h5py.File(self.info.path, "r")
        self._group = self._file[split]

    def __enter__(self) -> SplitReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _read(self, name: str, start: int, stop: int) -> np.ndarray:
        try:
            return self._group[name][start:stop]
        except OSError as err:
            raise StoreError(
                f"checksum or read failure in {name}[{start}:{stop}] of split "
                f"{self.info.split!r} of {self.info.path}: {err}. The file is "
                "corrupt; extract it again."
            ) from err

    def read(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        stop = self.info.num_rows if stop is None else min(stop, self.info.num_rows)
        return self._read("features", start, stop), self._read("labels", start, stop)

    def ids(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.info.num_rows if stop is None else min(stop, self.info.num_rows)
        return self._read("ids", start, stop)

    def iter_chunks(self, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if rows < 1:
            raise ValueError(f"rows per chunk must be >= 1, got {rows}")
        for start in range(0, self.info.num_rows, rows):
            yield self.read(start, start + rows)


def read_split(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray, SplitInfo]:
    """Load a whole complete split: ``(features, labels, info)``."""
    with SplitReader(path, split) as reader:
        features, labels = reader.read()
        return features, labels, reader.info
