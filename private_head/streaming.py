"""Out-of-core sums: a full-batch sum accumulated chunk by chunk from rows kept off the device.

The full-batch clipped gradient is a sum over rows, so for rows streamed from a store it is

    sum_i g_i = sum_chunks (sum_{i in chunk} g_i),

computed by one compiled kernel per chunk shape (the last chunk is padded with mask 0 to the same
shape). ``TrainData.iter_chunks`` reads chunk j+1 on a background thread while chunk j is
preprocessed, and JAX dispatches the kernel asynchronously, so reading overlaps computing. Noise is
added once to the total, never per chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from private_head.data import DEFAULT_CHUNK_ROWS, TrainData

ChunkFn = Callable[[jax.Array, jax.Array, jax.Array], Any]


def chunk_rows(data: TrainData, max_device_bytes: int | None) -> int:
    """Rows per chunk: about a quarter of ``max_device_bytes`` per chunk (two chunks in flight,
    plus their float32 copies), at least 1 row, at most ``DEFAULT_CHUNK_ROWS``."""
    if max_device_bytes is None:
        return DEFAULT_CHUNK_ROWS
    row_bytes = data.dim * 4
    return int(max(1, min(DEFAULT_CHUNK_ROWS, max_device_bytes // (4 * row_bytes))))


def _padded(X: jax.Array, y: jax.Array, rows: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    n = X.shape[0]
    mask = jnp.ones(rows, jnp.float32)
    if n == rows:
        return X, y, mask
    X = jnp.pad(X, ((0, rows - n), (0, 0)))
    y = jnp.pad(y, (0, rows - n))
    return X, y, mask.at[n:].set(0.0)


def streamed_sum(
    data: TrainData, fn: ChunkFn, rows: int, *, row_weights: jax.Array | None = None
) -> Any:
    """``sum_chunks fn(X_chunk, y_chunk, mask_chunk)`` over ``data.iter_chunks(rows)``.

    ``fn`` must be a sum over rows that ignores rows with mask 0. ``row_weights`` ([N] 0/1, e.g. a
    Poisson sample) multiplies the mask of each row.
    """
    total = None
    start = 0
    for X, y in data.iter_chunks(rows):
        n = X.shape[0]
        X, y, mask = _padded(X, y, rows)
        if row_weights is not None:
            mask = mask * jnp.pad(row_weights[start : start + n].astype(jnp.float32), (0, rows - n))
        part = fn(X, y, mask)
        total = part if total is None else jax.tree_util.tree_map(jnp.add, total, part)
        start += n
    if jax.process_count() > 1:  # several processes each streamed their share: add the shares
        from private_head.distributed import sum_over_processes

        total = sum_over_processes(total)
    return total
