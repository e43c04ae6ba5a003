"""Deterministic, prefetched batches from a row range of a source.

``batches(source, preprocess, batch_size, start, stop)`` yields the rows ``[start, stop)`` in order,
``batch_size`` at a time. Worker threads fetch, decode and preprocess whole batches (PIL and the
array reads release the GIL); at most ``prefetch`` batches are in flight, and they are yielded in
row order whatever order the workers finish in. The final partial batch is padded with zero images
to ``batch_size`` and carries a ``mask`` (True on real rows), so one compiled function of fixed
shape serves every batch. A consumer that stops early (Ctrl-C included) drops the queued batches
without waiting for the ones being decoded (``interrupts.thread_pool``).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from feature_extract import interrupts
from feature_extract.sources import Source


@dataclass(frozen=True)
class Batch:
    """Rows ``[start, start + num_valid)`` of the source, padded to the batch size."""

    start: int
    images: np.ndarray  # [batch_size, H, W, C]
    labels: np.ndarray  # int32 [batch_size] (0 on padding)
    ids: np.ndarray  # int64 [batch_size] (0 on padding)
    mask: np.ndarray  # bool [batch_size], True on real rows

    @property
    def num_valid(self) -> int:
        return int(self.mask.sum())


def default_workers() -> int:
    """Threads for decoding: the CPUs this process may use, at most 32."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(32, cpus))


def load_batch(
    source: Source,
    preprocess: Callable[[np.ndarray], np.ndarray],
    start: int,
    stop: int,
    batch_size: int,
) -> Batch:
    """Fetch and preprocess rows ``[start, stop)`` and pad them to ``batch_size`` rows."""
    images, labels, ids = source.get(range(start, stop))
    arrays = [np.asarray(preprocess(image)) for image in images]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(
            f"rows {start}..{stop} of {source.name}:{source.split} have different "
            f"shapes after preprocessing {sorted(shapes)}; add resize(...) or "
            "central_crop(...) to the preprocessing so all images share one size"
        )
    n = stop - start
    out = np.zeros((batch_size, *arrays[0].shape), dtype=arrays[0].dtype)
    out[:n] = np.stack(arrays)
    mask = np.arange(batch_size) < n
    return Batch(
        start, out, _pad(labels, batch_size, np.int32), _pad(ids, batch_size, np.int64), mask
    )


def _pad(values: np.ndarray, size: int, dtype) -> np.ndarray:
    out = np.zeros(size, dtype=dtype)
    out[: len(values)] = values
    return out


def check_batch_size(batch_size: int) -> None:
    """Refuse a batch size below 1 (the one check every entry point makes first)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def batches(
    source: Source,
    preprocess: Callable[[np.ndarray], np.ndarray],
    batch_size: int,
    start: int = 0,
    stop: int | None = None,
    *,
    workers: int | None = None,
    prefetch: int | None = None,
) -> Iterator[Batch]:
    """Batches of rows ``[start, stop)`` (default: the whole source) in row order.

    ``workers`` threads (default: the usable CPUs) each build whole batches; at most ``prefetch``
    (default ``2 * workers``) batches are queued ahead of the consumer.
    """
    stop = len(source) if stop is None else stop
    check_batch_size(batch_size)
    if not 0 <= start <= stop <= len(source):
        raise ValueError(
            f"row range [{start}, {stop}) is not inside the {len(source)} rows of "
            f"{source.name}:{source.split}"
        )
    workers = default_workers() if workers is None else max(1, workers)
    prefetch = 2 * workers if prefetch is None else max(1, prefetch)
    starts = iter(range(start, stop, batch_size))
    pending: deque[Future[Batch]] = deque()
    # a consumer that stops (Ctrl-C, an error, a closed generator) drops the queued batches and
    # does not wait for the ones being decoded
    with interrupts.thread_pool(workers, "preprocess") as pool:
        for s in starts:
            pending.append(
                pool.submit(
                    load_batch, source, preprocess, s, min(s + batch_size, stop), batch_size
                )
            )
            if len(pending) >= prefetch:
                yield pending.popleft().result()  # a lock wait: Ctrl-C interrupts it
        while pending:
            yield pending.popleft().result()
