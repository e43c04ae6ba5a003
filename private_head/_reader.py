"""The rows on the host: a caller's array used in place, or a store split read from disk.

A source hands out the rows ``[start, stop)`` of this process's share, as stored or cast
(docs/architecture.md, "Rows"):

- ``ArraySource``: a host array. Any C-contiguous array is used in place whatever its alignment
  (the host kernels read it directly; a compiled pass gets a zero-copy view when the chunk starts
  64-byte aligned, the alignment XLA:CPU needs, else the chunk is copied into a staging buffer);
  another layout or dtype is copied chunk by chunk.
- ``StoreSource``: a store split, read with ``SplitReader.read_into``. When the split fits the
  memory budget it is read once, on the first pass, into one array kept for the later passes
  (``cached``); otherwise every pass streams it through staging buffers.

``staged(...)`` walks the chunks of a pass: each chunk is prepared (read, cast) on one background
thread while the caller works on the previous one, into two reused 64-byte aligned staging
buffers. A compiled pass reads a staging buffer in place and asynchronously, so a buffer is
refilled only once the output that last read it is ready (``Staging.readers``, kept across
passes). The thread pool is made on first use.
"""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from feature_extract import store

ALIGN = 64


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array whose data start on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, np.uint8)
    offset = (-raw.ctypes.data) % ALIGN
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def is_aligned(x: np.ndarray) -> bool:
    return x.flags.c_contiguous and x.ctypes.data % ALIGN == 0


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rows-reader")


class ArraySource:
    """Rows ``[offset, stop)`` of a host array."""

    def __init__(self, x: np.ndarray, offset: int, stop: int):
        self.rows = x[offset:stop]
        self.stored = np.dtype(x.dtype)

    def whole(self) -> np.ndarray | None:
        """The rows in place (C-contiguous, as stored), or None when they must be copied."""
        return self.rows if self.rows.flags.c_contiguous else None

    def rows_at(self, start: int, stop: int, buf: np.ndarray) -> np.ndarray:
        """Rows ``[start, stop)`` as stored, in place (a view; ``buf`` is not used)."""
        del buf
        return self.rows[start:stop]

    def close(self) -> None:
        pass


class StoreSource:
    """Rows ``[offset, stop)`` of a store split; ``cache``: keep them once read (module
    docstring)."""

    def __init__(
        self, path: str, split: str, offset: int, stop: int, stored: Any, dim: int, cache: bool
    ):
        self.path, self.split, self.offset, self.stop = path, split, offset, stop
        self.stored, self.dim = np.dtype(stored), dim
        self.cache = cache
        self.cached: np.ndarray | None = None
        self._filled = 0  # rows of the cache read so far (a pass fills it in order)
        self._reader: store.SplitReader | None = None
        self._labels = np.empty(0, np.int32)

    def whole(self) -> np.ndarray | None:
        return self.cached if self._filled == self.stop - self.offset else None

    def fill(self, start: int, stop: int, out: np.ndarray) -> None:
        """Rows ``[start, stop)`` into ``out[: stop - start]`` (the store's dtype)."""
        if self._reader is None:
            self._reader = store.SplitReader(self.path, self.split)
        if self._labels.shape[0] < stop - start:
            self._labels = np.empty(stop - start, np.int32)
        self._reader.read_into(self.offset + start, self.offset + stop, out, self._labels)

    def cached_rows(self, start: int, stop: int) -> np.ndarray | None:
        """Rows ``[start, stop)`` of the cache, read into it first when this pass is the first
        (chunks come in order); None when the split is not cached."""
        if not self.cache:
            return None
        if self.cached is None:
            self.cached = np.empty((self.stop - self.offset, self.dim), self.stored)
        if stop > self._filled:
            if start != self._filled:  # an earlier pass stopped half-way: start the cache over
                self._filled = 0
                self.fill(0, start, self.cached[:start])
            self.fill(start, stop, self.cached[start:stop])
            self._filled = stop
        return self.cached[start:stop]

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def rows_at(self, start: int, stop: int, buf: np.ndarray) -> np.ndarray:
        """Rows ``[start, stop)`` as stored: the cache's (read into it on the first pass), else
        read into ``buf`` (the store's dtype)."""
        cached = self.cached_rows(start, stop)
        if cached is not None:
            return cached
        self.fill(start, stop, buf)
        return buf[: stop - start]


Source = ArraySource | StoreSource


@dataclass
class Staging:
    """Two reused staging buffers per (rows, dtype), and the output that last read each."""

    buffers: dict[tuple, list[np.ndarray]] = field(default_factory=dict)
    readers: dict[tuple, list[Any]] = field(default_factory=dict)

    def pair(self, shape: tuple[int, int], dtype: np.dtype) -> tuple[list, list]:
        key = (shape, np.dtype(dtype).str)
        if key not in self.buffers:
            self.buffers[key] = [aligned_empty(shape, dtype) for _ in range(2)]
            self.readers[key] = [None, None]
        return self.buffers[key], self.readers[key]


def staged(
    prepare: Callable[[int, np.ndarray], np.ndarray],
    num_chunks: int,
    shape: tuple[int, int],
    dtype: np.dtype,
    staging: Staging,
) -> Iterator[tuple[int, np.ndarray, Callable[[Any], None]]]:
    """``(j, chunk, release)`` for chunk j = 0..num_chunks-1, where ``chunk = prepare(j, buf)``
    runs on the reader thread one chunk ahead, with ``buf`` one of two staging buffers of
    ``shape`` and ``dtype``; ``release(output)`` names the output that reads the chunk (the
    buffer is refilled only once it is ready)."""
    buffers, readers = staging.pair(shape, dtype)

    def submit(j: int) -> concurrent.futures.Future:
        if readers[j % 2] is not None:
            jax.block_until_ready(readers[j % 2])
            readers[j % 2] = None
        return _pool().submit(prepare, j, buffers[j % 2])

    pending = submit(0)
    try:
        for j in range(num_chunks):
            chunk = pending.result()
            pending = submit(j + 1) if j + 1 < num_chunks else None
            outputs: list[Any] = []
            yield j, chunk, outputs.append
            readers[j % 2] = outputs[0] if outputs else chunk
    finally:
        if pending is not None:
            pending.result()  # never leave a read running into a buffer
