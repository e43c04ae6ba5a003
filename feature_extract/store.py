"""The HDF5 feature store: one file per (dataset, backbone), one group per split.

See docs/architecture.md, "The feature store".

Each split group holds
    features  float16/float32 [N, D], chunks of 1 MiB of rows (D and dtype only), fletcher32
    labels    int32 [N]
    ids       int64 [N]   stable per-example ids (source index, or a hash of the TFDS id), unique
and attributes: ``backbone``, ``checkpoint``, ``checkpoint_sha256``, ``dataset``,
``dataset_version``,
``split``, ``preprocessing``, ``feature_dtype``, ``num_classes``, ``class_names``, ``total_rows``,
``rows_written``, ``complete`` and ``writer_token``; ``feature_groups`` (the backbone's declared
contiguous feature groups, e.g. a ScatterNet's channels) when the backbone declares them (older
stores lack it and read as declaring none). The file carries ``format_version``. A split
has at least one row and ``num_classes >= 2``.

One writer at a time. A writer (``SplitWriter`` from creation to ``finish``/``close``,
``write_split``, a whole ``feature_extract`` run) holds ``lock_store(path)``: ``flock`` on the
sidecar ``<path>.lock``, which records the holder's pid, host, start time and command
(``feature_extract.lockfile``). A second writer gets ``StoreLockedError`` naming the holder; the
kernel drops the lock of a process that dies, so a stale lock never blocks. Readers take no lock;
a reader refused an incomplete split is told who is writing it and to wait when a live process
holds the lock, and to rerun the extraction (which resumes it) otherwise.

Writer token. ``writer_token`` is a random hex string set when a writer creates a split or takes
over an unfinished one. A writer checks, before every append and before ``finish``, that the
split in the file still carries its token (and its committed row count); otherwise the split was
replaced under it and it raises ``StoreError`` without writing anything. So a complete split only
holds rows written under the identity it declares. An assembled (virtual) split records the
``source_files`` and ``source_tokens`` of its shards, and the reader refuses a shard rewritten
since (its token changed).

Crash consistency: the writer opens the file only while it appends a batch. An append resizes the
datasets, writes the rows, flushes, and only then commits ``rows_written``; a resumed writer first
truncates the datasets back to the committed count. A run killed at any point between appends
therefore resumes with no gap and no duplicate. A Ctrl-C (SIGINT) never cuts a write short: it
takes effect when the write is done and the file closed (``interrupts.deferred_sigint``). A new
file is written under a temporary name and renamed into place, so a file is never left
half-created.

Damage. A file that cannot be opened as a store (truncated, not HDF5, damaged metadata) raises
``CorruptStoreError`` from every reader and from a writer; ``overwrite=True`` (``--overwrite``)
replaces such a file whole.

This module imports nothing heavier than numpy and h5py: ``private_head`` reads stores through it.
"""

from __future__ import annotations

import os
import resource
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from feature_extract import interrupts, lockfile

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
# Bookkeeping attributes, left out of SplitInfo.attrs (they differ between identical runs).
INTERNAL_ATTRS = ("writer_token", "source_files", "source_tokens")
_CHUNK_BYTES = 1 << 20
# Appended to every error that names rows: the guarantee does not cover the message.
PRIVATE_MESSAGE = (
    "This message names rows of the data, so for private data it is private itself: "
    "do not publish it."
)
_METADATA_BYTES = 1 << 16  # headroom for the B-tree and attribute updates of one append
# What h5py raises on a damaged file (a StoreError, itself a ValueError, is let through first).
_H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError)


class StoreError(ValueError):
    """A feature store that is missing, malformed, corrupt or does not match what was asked."""


class IncompleteSplitError(StoreError):
    """A split whose extraction has not finished."""


class CorruptStoreError(StoreError):
    """A file that cannot be opened as a store: truncated, not HDF5, or damaged metadata."""


class StoreLockedError(StoreError):
    """Another process is writing the store (``holder`` is what it recorded)."""

    def __init__(self, message: str, holder: dict[str, Any]):
        super().__init__(message)
        self.holder = holder


@contextmanager
def lock_store(path: str | os.PathLike, *, command: str | None = None) -> Iterator[None]:
    """Hold the store's writer lock (``<path>.lock``) for the block; re-entrant in one process.

    Raises ``StoreLockedError`` naming the holder when another process writes the store.
    ``command`` is recorded for that message (default: this process's command line).
    """
    path = os.fspath(path)
    try:
        lockfile.acquire(path, command)
    except lockfile.LockHeld as err:
        raise StoreLockedError(
            f"{path} is being written by another process: {lockfile.describe(err.holder)}. "
            "One writer at a time: wait for it to finish (or stop it), then run again; the lock "
            f"({err.lock_path}) is released automatically when its holder exits or dies.",
            err.holder,
        ) from None
    except OSError as err:
        raise StoreError(
            f"cannot create the writer lock {lockfile.lock_path(path)}: {err}. The folder of "
            "the store must exist and be writable."
        ) from err
    try:
        yield
    finally:
        lockfile.release(path)


def lock_holder(path: str | os.PathLike) -> dict[str, Any] | None:
    """What the process writing the store recorded (pid, host, started, command), or None."""
    return lockfile.holder(path)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _damaged(path: str, err: BaseException) -> StoreError:
    """The StoreError for an h5py failure on ``path``: corrupt, locked by HDF5, or unreadable."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return StoreError(f"cannot open the feature store {path}: {_one_line(err)}")
    if isinstance(err, OSError) and "unable to lock file" in str(err).lower():
        return StoreError(
            f"cannot open {path}: HDF5 reports it locked by another process that has it open "
            f"({_one_line(err)}); wait for it to close the file and try again"
        )
    kind = _numpy_kind(path)
    if kind is not None:  # someone's arrays: never advise replacing or deleting them
        return StoreError(
            f"{path} is a NumPy {kind} file, not a feature store. private_head trains on it as "
            "it is (--features X.npy --labels Y.npy --num-classes K, or --features F.npz "
            "--num-classes K; fit(path, ...)); feature_extract.store.write_split makes a store "
            "of its arrays"
        )
    return CorruptStoreError(
        f"{path} is corrupt (truncated or not HDF5, or its metadata is damaged: "
        f"{_one_line(err)}). Extract it again with --overwrite (overwrite=True), which replaces "
        "the file, or delete it."
    )


def _numpy_kind(path: str) -> str | None:
    """``".npy"`` or ``".npz"`` when the file at ``path`` starts like one, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return None
    if head == b"\x93NUMPY":
        return ".npy"
    if head.startswith(b"PK") and path.lower().endswith(".npz"):
        return ".npz"
    return None


@contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turn h5py's errors on a damaged file into ``StoreError``s (StoreErrors pass through)."""
    try:
        yield
    except StoreError:
        raise
    except _H5_ERRORS as err:
        raise _damaged(path, err) from err


def _not_a_directory(path: str) -> None:
    if os.path.isdir(path):
        raise StoreError(f"{path} is a directory; give a file path for the store")


def _check_openable(path: str) -> None:
    """Raise ``CorruptStoreError`` unless the file opens and every group's metadata reads."""
    _not_a_directory(path)
    with _reading(path), h5py.File(path, "r") as f:
        dict(f.attrs)  # reading every attribute, header and dataset shape is enough to tell
        for name in f:
            obj = f[name]
            if isinstance(obj, h5py.Group):
                dict(obj.attrs)
                _ = [item.shape for item in obj.values() if isinstance(item, h5py.Dataset)]


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

    @property
    def feature_groups(self) -> int | None:
        """The backbone's declared feature groups G (split attribute ``feature_groups``: the
        features are G contiguous groups, e.g. a ScatterNet's channels), a public fact of the
        architecture; None when the store does not declare them (older stores, most backbones)
        or declares a number that does not divide ``dim``."""
        value = self.attrs.get("feature_groups")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            return None
        groups = int(value)
        return groups if 1 <= groups <= self.dim and self.dim % groups == 0 else None


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
            f"Fix or drop these rows; they are never silently zeroed. {PRIVATE_MESSAGE}"
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
            f"({shown}). num_classes must come from public metadata. {PRIVATE_MESSAGE}"
        )


def _chunk_rows(dim: int, itemsize: int) -> int:
    """Rows per HDF5 chunk: ``max(1, 1 MiB // (D x itemsize))``, a function of D and the dtype
    alone. Never of the row count: readers size their reads by the chunk, and a chunk of N rows
    would tell anyone who sees a read size the private N (docs/architecture.md, "The feature
    store"). The datasets are resizable, so a chunk may hold more rows than the split; a split
    smaller than one chunk still takes a whole chunk (about 1 MiB) on disk."""
    return max(1, _CHUNK_BYTES // max(1, dim * itemsize))


class SplitWriter:
    """Append-only, resumable writer of one split; holds the store's writer lock while open.

    ``SplitWriter(path, split, dim=..., total_rows=..., num_classes=..., attrs=...)`` creates the
    split or reopens an unfinished one with the same identity (``IDENTITY_ATTRS``), and sets a new
    ``writer_token``. ``rows_written`` says where to resume; ``append`` writes the next rows;
    ``finish`` marks the split complete and releases the lock (``close`` releases it without
    finishing; a ``with`` block closes). ``overwrite=True`` replaces a complete split, and a file
    that is not a readable store (whose other splits are lost with it).
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
        if dim < 1 or total_rows < 1 or num_classes < 2:
            raise ValueError(
                f"a split needs dim >= 1, total_rows >= 1 and num_classes >= 2 (a classifier "
                f"needs two classes); got dim={dim}, total_rows={total_rows}, "
                f"num_classes={num_classes}"
            )
        self.path, self.split, self.dim, self.total_rows = os.fspath(path), split, dim, total_rows
        self.num_classes = num_classes
        self.rows_written = 0
        self._open = False
        wanted = {
            **(attrs or {}),
            "split": split,
            "feature_dtype": feature_dtype,
            "num_classes": int(num_classes),
            "total_rows": int(total_rows),
        }
        self._lock = lock_store(self.path)
        self._lock.__enter__()
        self._open = True
        try:
            self._start(wanted, class_names, feature_dtype, overwrite)
        except BaseException:
            self.close()
            raise

    def _start(
        self,
        wanted: Mapping[str, Any],
        class_names: Sequence[str],
        feature_dtype: str,
        overwrite: bool,
    ) -> None:
        self._token = uuid.uuid4().hex
        _not_a_directory(self.path)
        if os.path.exists(self.path):
            try:
                _check_openable(self.path)
            except CorruptStoreError:
                if not overwrite:
                    raise
                self._create_file(wanted, class_names, feature_dtype)  # replaces the damaged file
                return
        else:
            self._create_file(wanted, class_names, feature_dtype)
            return
        _check_room(
            self.path, os.path.getsize(self.path), _METADATA_BYTES, f"add split {self.split!r} to"
        )
        with self._writing("open"), h5py.File(self.path, "a") as f:
            f.attrs.setdefault("format_version", FORMAT_VERSION)
            if self.split in f:
                group = f[self.split]
                if overwrite:
                    del f[self.split]
                elif group.attrs.get("complete", False):
                    raise StoreError(
                        f"split {self.split!r} of {self.path} is already complete; pass "
                        "overwrite=True (--overwrite) to write it again."
                    )
                else:
                    self._check_same_identity(group, wanted)
            if self.split not in f:
                self._create(f, wanted, class_names, feature_dtype)
            group = f[self.split]
            group.attrs["writer_token"] = self._token  # take over: an older writer is fenced off
            self.rows_written = int(group.attrs["rows_written"])
            for name in ("features", "labels", "ids"):  # drop rows written after the last commit
                group[name].resize(self.rows_written, axis=0)

    def _create_file(
        self, wanted: Mapping[str, Any], class_names: Sequence[str], feature_dtype: str
    ) -> None:
        """Write a new file holding only this (empty) split under a temporary name, then rename
        it into place: a failure (no room, a file-size limit) leaves no half-created file."""
        folder = os.path.dirname(os.path.abspath(self.path))
        _check_room(self.path, 0, _METADATA_BYTES, "create the store")
        tmp = os.path.join(folder, f".{os.path.basename(self.path)}.tmp-{os.getpid()}")
        try:
            with self._writing("create"), h5py.File(tmp, "w") as f:
                f.attrs["format_version"] = FORMAT_VERSION
                self._create(f, wanted, class_names, feature_dtype)
                f[self.split].attrs["writer_token"] = self._token
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        self.rows_written = 0

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """One write: a Ctrl-C during it takes effect after it (``interrupts.deferred_sigint``),
        and h5py's failures become a StoreError saying what is kept and what to do."""
        try:
            with interrupts.deferred_sigint():
                yield
        except StoreError:
            raise
        except _H5_ERRORS as err:
            raise StoreError(
                f"cannot {what} split {self.split!r} of {self.path}: {_one_line(err)}. The "
                f"{self.rows_written} rows committed so far are kept; fix the cause (disk space, "
                "permissions) and run the same command again to resume."
            ) from err

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
        rows = _chunk_rows(self.dim, np.dtype(feature_dtype).itemsize)
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

    def _own_group(self, f: h5py.File) -> h5py.Group:
        """This writer's split in ``f``, after checking nobody replaced it since it was opened."""
        if not self._open:
            raise StoreError(f"this writer of split {self.split!r} of {self.path} is closed")
        group = f.get(self.split)
        token = None if group is None else _plain(group.attrs.get("writer_token"))
        rows = None if group is None else int(group.attrs.get("rows_written", -1))
        if token != self._token or rows != self.rows_written:
            raise StoreError(
                f"split {self.split!r} of {self.path} was replaced or taken over by another "
                f"writer after this one opened it (writer token {token!r}, {rows} rows "
                f"committed; this writer has {self._token!r}, {self.rows_written} rows); nothing "
                "was written. Only one writer at a time: run the extraction again once the "
                "other one is done."
            )
        return group

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
        with self._writing(f"append rows {start}:{stop} to"), h5py.File(self.path, "a") as f:
            group = self._own_group(f)
            _check_space(self.path, group, start, stop)
            for name, rows in (("features", features), ("labels", labels), ("ids", ids)):
                group[name].resize(stop, axis=0)
                group[name][start:stop] = rows
            f.flush()
            group.attrs["rows_written"] = stop
            self.rows_written = stop

    def finish(self) -> None:
        """Mark the split complete (every expected row written) and release the writer lock."""
        if self.rows_written != self.total_rows:
            raise StoreError(
                f"cannot finish split {self.split!r}: {self.rows_written} of "
                f"{self.total_rows} rows written"
            )
        with self._writing("finish"), h5py.File(self.path, "a") as f:
            self._own_group(f).attrs["complete"] = True
        self.close()

    def close(self) -> None:
        """Release the writer lock (an unfinished split stays resumable)."""
        if self._open:
            self._open = False
            self._lock.__exit__(None, None, None)

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_open", False):
            with suppress(Exception):  # at interpreter exit; the process's end drops it anyway
                self.close()


def _check_room(path: str, size: int, need: int, what: str) -> None:
    """Refuse to ``what`` the file ``path`` (now ``size`` bytes) when the file-size limit
    (RLIMIT_FSIZE) or the disk cannot hold ``need`` more bytes: HDF5 fails badly, and can leave a
    broken file, when a metadata write runs out of space."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    stat = os.statvfs(os.path.dirname(os.path.abspath(path)))
    free = stat.f_bavail * stat.f_frsize
    if limit != resource.RLIM_INFINITY and size + need > limit:
        why = f"the file-size limit (ulimit -f) is {limit} bytes"
    elif need > free:
        why = f"the disk has {free} bytes free"
    else:
        return
    raise StoreError(
        f"no room to {what} {path}: about {size + need} bytes are needed and {why}. Nothing was "
        "written; free some space (or raise the limit) and run the same command again."
    )


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


def check_ids(ids: np.ndarray, num_rows: int) -> np.ndarray:
    """``ids`` as int64 ``[num_rows]``; ValueError unless they are integers that fit and unique."""
    ids = np.asarray(ids)
    if ids.shape != (num_rows,):
        raise ValueError(f"ids must have shape ({num_rows},), one per row; got {ids.shape}")
    if ids.dtype == np.bool_ or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
    if ids.dtype == np.uint64 and ids.size and ids.max() > np.iinfo(np.int64).max:
        raise ValueError("ids must fit in int64; some uint64 ids are >= 2**63")
    ids = ids.astype(np.int64)
    values, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if values.size != ids.size:
        repeated = np.flatnonzero(counts > 1)
        value = values[repeated[0]]
        rows = np.flatnonzero(ids == value)[:5]
        raise ValueError(
            f"ids must be unique: {repeated.size} id(s) repeat, e.g. id {value} at rows "
            f"{', '.join(str(r) for r in rows)}. Pass one distinct id per example (or ids=None "
            "for the row index)."
        )
    return ids


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

    ``features`` [N, D] with N >= 1 (float16 keeps float16, anything else is stored as float32),
    ``labels`` [N] in ``[0, num_classes)`` with ``num_classes >= 2``, ``ids`` [N] unique integers
    (default: the row index). ``attrs`` adds metadata such as ``backbone`` and ``dataset``. The
    store's writer lock is held throughout (``StoreLockedError`` if another process writes it).
    """
    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"features must be [N, D] and labels [N]; got {features.shape} and {labels.shape}"
        )
    if features.shape[0] < 1 or features.shape[1] < 1:
        raise ValueError(
            f"a split needs at least one row and one feature; got features of shape "
            f"{features.shape}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an integer, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(
            f"num_classes must be >= 2 (a classifier needs two classes), got {num_classes}; "
            "it is the size of the public label space, not the number of labels present"
        )
    if class_names and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}")
    dtype = "float16" if features.dtype == np.float16 else "float32"
    check_labels(labels, num_classes)  # before any cast: 1.7 or 2**32 + 1 must not become a label
    with np.errstate(over="ignore"):
        stored = features.astype(dtype)
    check_finite(stored, what=f"features (as {dtype})")
    n = features.shape[0]
    ids = np.arange(n, dtype=np.int64) if ids is None else check_ids(ids, n)
    with lock_store(path):
        writer = SplitWriter(
            path,
            split,
            dim=features.shape[1],
            total_rows=n,
            num_classes=int(num_classes),
            class_names=class_names,
            feature_dtype=dtype,
            attrs=attrs,
            overwrite=overwrite,
        )
        with writer:
            writer.append(stored, labels.astype(np.int32), ids)
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
        raise _incomplete(path, split, rows, group.attrs.get("total_rows", "?"))
    shapes = {k: group[k].shape[0] for k in ("features", "labels", "ids")}
    if any(n != rows for n in shapes.values()):
        raise StoreError(
            f"split {split!r} of {path} is inconsistent: rows_written={rows} but "
            f"dataset lengths {shapes}; the file is damaged, extract it again."
        )
    _check_virtual_sources(path, group)
    return group


def _incomplete(path: str, split: str, rows: int, total: Any) -> IncompleteSplitError:
    """Why a split is incomplete: another live process is writing it (the lock names it: wait),
    or its extraction stopped (rerun it to resume)."""
    holder = lock_holder(path)
    if holder and holder.get("pid") and not _this_process(holder):
        return IncompleteSplitError(
            f"split {split!r} of {path} is being written right now by "
            f"{lockfile.describe(holder)}: {rows} of {total} rows so far. Wait for that run to "
            "finish, then read the split again."
        )
    return IncompleteSplitError(
        f"split {split!r} of {path} is incomplete: {rows} of {total} rows were written before "
        "the extraction stopped. Run the same extraction command again to resume it."
    )


def _this_process(holder: Mapping[str, Any]) -> bool:
    return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


def _check_virtual_sources(path: str, group: h5py.Group) -> None:
    """Refuse a virtual dataset (a store assembled from shard files) whose source is missing,
    shorter than mapped, incomplete, or rewritten since the assembly (its ``writer_token`` is not
    the one recorded in ``source_tokens``): HDF5 would silently read fill values or other rows."""
    folder = os.path.dirname(os.path.abspath(path))
    recorded = dict(
        zip(
            _plain(group.attrs.get("source_files", [])) or [],
            _plain(group.attrs.get("source_tokens", [])) or [],
            strict=False,
        )
    )
    for name in ("features", "labels", "ids"):
        if not group[name].is_virtual:
            continue
        for source in group[name].virtual_sources():
            if source.file_name == ".":
                continue
            shard = os.path.join(folder, source.file_name)  # relative to the virtual file
            try:
                with h5py.File(shard, "r") as f:
                    parent = f[source.dset_name].parent
                    have, complete, token = (
                        f[source.dset_name].shape[0],
                        parent.attrs.get("complete", False),
                        _plain(parent.attrs.get("writer_token")),
                    )
            except _H5_ERRORS as err:
                raise StoreError(
                    f"{path} is assembled from shard files, and {shard} "
                    f"({source.dset_name}) cannot be read: {_one_line(err)}. Keep the shards "
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
            if source.file_name in recorded and recorded[source.file_name] != token:
                raise StoreError(
                    f"shard {shard} of {path} was rewritten after the store was assembled (its "
                    "writer token changed), so the assembled split would read rows it does not "
                    "describe; run the multi-process extraction again to reassemble it."
                )


def split_info(path: str | os.PathLike, split: str) -> SplitInfo:
    """The metadata of a complete split (raises ``IncompleteSplitError`` for an unfinished one).

    ``attrs`` holds the split's attributes except the bookkeeping ones (``INTERNAL_ATTRS``).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise StoreError(
            f"no feature store at {path}; run `make features` (or feature_extract) "
            "first, or write your embeddings with feature_extract.store.write_split"
        )
    _not_a_directory(path)
    with _reading(path), h5py.File(path, "r") as f:
        group = _open_group(f, path, split)
        attrs = {k: _plain(v) for k, v in group.attrs.items() if k not in INTERNAL_ATTRS}
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


def stored_attrs(path: str | os.PathLike, split: str) -> dict[str, Any] | None:
    """All attributes of group ``split`` (complete or not), or None when the file or the group
    is absent; ``CorruptStoreError`` when the file cannot be opened as a store."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    _check_openable(path)
    with _reading(path), h5py.File(path, "r") as f:
        if split not in f:
            return None
        return {k: _plain(v) for k, v in f[split].attrs.items()}


def split_names(path: str | os.PathLike) -> list[str]:
    """The splits stored in a file, complete or not."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise StoreError(f"no feature store at {path}")
    _check_openable(path)
    with _reading(path), h5py.File(path, "r") as f:
        return sorted(k for k in f if isinstance(f[k], h5py.Group))


class SplitReader:
    """Streaming reader of one complete split; use as a context manager.

    ``read(start, stop)`` returns new ``(features, labels)`` arrays; ``iter_chunks(rows)`` yields
    them in order; ``read_into(start, stop, features_out, labels_out)`` fills caller-owned buffers
    (the fast path for streaming: size reads as multiples of ``chunk_rows_hint``). Checksum
    failures (flipped bytes) raise ``StoreError``, never wrong numbers.
    """

    def __init__(self, path: str | os.PathLike, split: str):
        self.info = split_info(path, split)
        with _reading(self.info.path):
            self._file = h5py.File(self.info.path, "r")
            try:
                self._group = self._file[split]
                self._features, self._labels = self._group["features"], self._group["labels"]
                self.chunk_rows_hint = self._chunk_rows_of(self._features)
            except BaseException:
                self._file.close()
                raise

    def _chunk_rows_of(self, ds: h5py.Dataset) -> int:
        """The HDF5 chunk row count of ``ds`` (of the first shard's dataset for a virtual one)."""
        if ds.chunks:
            return int(ds.chunks[0])
        if ds.is_virtual:
            source = ds.virtual_sources()[0]
            if source.file_name != ".":
                folder = os.path.dirname(os.path.abspath(self.info.path))
                with h5py.File(os.path.join(folder, source.file_name), "r") as f:
                    if f[source.dset_name].chunks:
                        return int(f[source.dset_name].chunks[0])
        return _chunk_rows(self.info.dim, np.dtype(self.info.feature_dtype).itemsize)

    def __enter__(self) -> SplitReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _failure(self, name: str, start: int, stop: int, err: BaseException) -> StoreError:
        return StoreError(
            f"checksum or read failure in {name}[{start}:{stop}] of split "
            f"{self.info.split!r} of {self.info.path}: {_one_line(err)}. The file is "
            "corrupt; extract it again."
        )

    def _read(self, name: str, start: int, stop: int) -> np.ndarray:
        try:
            return self._group[name][start:stop]
        except _H5_ERRORS as err:
            raise self._failure(name, start, stop, err) from err

    def read(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        stop = self.info.num_rows if stop is None else min(stop, self.info.num_rows)
        return self._read("features", start, stop), self._read("labels", start, stop)

    def read_into(
        self, start: int, stop: int, features_out: np.ndarray, labels_out: np.ndarray
    ) -> int:
        """Read rows ``[start, min(stop, N))`` into ``features_out[:n]`` and ``labels_out[:n]``;
        returns ``n``.

        ``features_out`` is a writeable C-contiguous ``[>= n, D]`` array of the store's dtype and
        ``labels_out`` a writeable ``[>= n]`` int32 array; both are reused across calls (no
        allocation, no copy beyond HDF5's checksum pass). HDF5 reads each chunk once when
        ``start`` and ``stop`` are multiples of ``chunk_rows_hint``. h5py releases the GIL while
        it reads, so a caller's background thread overlaps the read with its own work.
        """
        num_rows = self.info.num_rows
        if not 0 <= start <= num_rows or stop < start:
            raise ValueError(f"rows [{start}, {stop}) are not a range inside [0, {num_rows}]")
        n = min(stop, num_rows) - start
        dtype = np.dtype(self.info.feature_dtype)
        for what, out, shape, want in (
            ("features_out", features_out, (n, self.info.dim), dtype),
            ("labels_out", labels_out, (n,), np.dtype(np.int32)),
        ):
            if not isinstance(out, np.ndarray) or out.dtype != want:
                got = getattr(out, "dtype", type(out).__name__)
                raise ValueError(f"{what} must be a numpy array of dtype {want}, got {got}")
            if out.ndim != len(shape) or out.shape[0] < n or out.shape[1:] != shape[1:]:
                want_shape = ", ".join([f">= {n}", *map(str, shape[1:])])
                raise ValueError(f"{what} must have shape [{want_shape}], got {out.shape}")
            if not (out.flags.c_contiguous and out.flags.writeable):
                raise ValueError(f"{what} must be C-contiguous and writeable")
        if n == 0:
            return 0
        for name, ds, out in (
            ("features", self._features, features_out),
            ("labels", self._labels, labels_out),
        ):
            try:
                ds.read_direct(out, np.s_[start : start + n], np.s_[0:n])
            except _H5_ERRORS as err:
                raise self._failure(name, start, start + n, err) from err
        return n

    def ids(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.info.num_rows if stop is None else min(stop, self.info.num_rows)
        return self._read("ids", start, stop)

    def labels(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The labels of rows ``[start, stop)`` alone (the features are not read)."""
        stop = self.info.num_rows if stop is None else min(stop, self.info.num_rows)
        return self._read("labels", start, stop)

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
