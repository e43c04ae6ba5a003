"""Training with several JAX processes (hosts): each process holds only its share of the rows.

Under ``jax.distributed`` (started by ``feature_extract.multihost.initialize``, e.g. from the
CLI's ``--coordinator/--num-processes/--process-id``) ``fit`` runs the same call on every process:

- process i of P loads only its contiguous rows ``[floor(i N/P), floor((i+1) N/P))`` of the
  store split (or of the array every process passes) and validates and preprocesses them;
- ``sharding.shard_rows`` makes them one global row-sharded array over the mesh of all devices
  of all processes (every process pads to the same local size with mask 0), so the jitted clipped
  sums contract over all N rows and XLA reduces them across processes;
- the noise key is the same on every process (the given seed, or process 0's OS draw broadcast
  by ``api.noise_seed``) and the noise is added to the replicated sum, so it enters once;
- N, the divisor, is the global row count.

The result equals the one-process result for the same seed (up to float summation order).
A share above ``max_device_bytes`` is streamed from the store in chunks and the streamed sums are
added over processes (``sum_over_processes``) before the noise. Methods other than
``single_step`` and ``dp_gd`` and a private mean (``center="private"``) are refused with several
processes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from feature_extract import store
from feature_extract.multihost import process_rows

MULTIPROCESS_METHODS = ("single_step", "dp_gd")


def share(num_rows: int) -> tuple[int, int]:
    """This process's contiguous rows ``[start, stop)`` of ``num_rows``."""
    return process_rows(num_rows, jax.process_index(), jax.process_count())


def check_supported(config: Any) -> None:
    """Refuse what does not (yet) run across processes, before any data is read."""
    problems = []
    if config.method not in MULTIPROCESS_METHODS:
        problems.append(f"method {config.method!r} (supported: {', '.join(MULTIPROCESS_METHODS)})")
    if config.center == "private":
        problems.append("center='private' (use a public mean or none)")
    if problems:
        raise ValueError(
            f"with {jax.process_count()} JAX processes, fit does not support "
            + " and ".join(problems)
            + "; run it in one process instead"
        )


def sum_over_processes(tree: Any) -> Any:
    """``sum_p tree_p``: each process's partial sums added over all processes (an XLA all-gather
    collective, then a sum in process order, so every process holds the same result)."""
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(tree)
    return jax.tree_util.tree_map(lambda a: jax.numpy.asarray(np.sum(a, axis=0)), gathered)


def load_process_rows(
    features: Any, labels: Any, *, config: Any, num_classes: int, public_mean: Any, split: str
) -> Any:
    """TrainData holding this process's share of the rows, with ``total_rows`` = global N.

    ``features`` is a store spec (only the share is read from disk; streamed in chunks when it
    exceeds ``config.max_device_bytes``) or an array that every process passes whole (each keeps
    its share).
    """
    from private_head import data as train_data

    check_supported(config)
    limit = config.max_device_bytes
    if isinstance(features, (str, bytes)) or hasattr(features, "__fspath__"):
        path, split, info = train_data.open_store_split(features, labels, num_classes, split)
        total = _check_rows(info.num_rows)
        start, stop = share(total)
        itemsize = np.dtype(info.feature_dtype).itemsize
        if limit is not None and (stop - start) * info.dim * itemsize > limit:
            source = train_data.ChunkSource(
                path=path,
                split=split,
                rows=(start, stop),
                chunk_rows=train_data._chunk_rows(limit, info.dim),
            )
            data = train_data._stream(source, config, num_classes, public_mean, None, None)
            return dataclasses.replace(data, total_rows=total)
        with store.SplitReader(path, split) as reader:
            x, y = reader.read(start, stop)
    else:
        x, y = np.asarray(features), None if labels is None else np.asarray(labels)
        total = _check_rows(x.shape[0] if x.ndim else 0)
        start, stop = share(total)
        x, y = x[start:stop], None if y is None or y.shape != (total,) else y[start:stop]
        if limit is not None and x.nbytes > limit:
            raise ValueError(
                f"this process's {x.shape[0]} rows ({x.nbytes} bytes) exceed "
                f"max_device_bytes={limit}; with several processes only a store "
                "path streams: write the features to a store"
            )
    data = train_data.preprocess(
        x, labels if y is None else y, config, num_classes=num_classes, public_mean=public_mean
    )
    return dataclasses.replace(data, total_rows=total)


def _check_rows(total: int) -> int:
    if total < jax.process_count():
        raise ValueError(
            f"{total} rows cannot be split over {jax.process_count()} processes; "
            "every process needs at least one row"
        )
    return total
