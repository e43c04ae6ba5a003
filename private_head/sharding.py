"""Rows sharded over every visible device: a 1-D ``Mesh`` named ``"data"``.

With several devices (or several processes under ``jax.distributed``) the rows of X, y and a 0/1
mask are split over the mesh's ``"data"`` axis and everything else is replicated; the jitted sums of
``kernel`` then contract over the sharded row axis and XLA inserts the cross-device reduction, so
the result equals the single-device one. Rows are padded to a multiple of the device count with
mask 0 (padded rows contribute nothing). Global arrays are assembled with
``jax.make_array_from_process_local_data``: each process passes only the rows it holds.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


class Rows(NamedTuple):
    """Training rows as the kernels take them; ``mask`` is None when no row is padding."""

    X: jax.Array
    y: jax.Array
    mask: jax.Array | None


def data_mesh() -> Mesh | None:
    """A 1-D mesh over all devices of all processes, or None when there is a single device."""
    devices = jax.devices()
    return Mesh(np.asarray(devices), (AXIS,)) if len(devices) > 1 else None


def padded_rows(local_rows: int, mesh: Mesh) -> int:
    """Local row count rounded up to a multiple of this process's device count."""
    per = len(mesh.local_devices)
    return -(-local_rows // per) * per


def shard_rows(X_local, y_local, mesh: Mesh, *, local_rows: int | None = None) -> Rows:
    """Global row-sharded ``(X, y, mask)`` from this process's rows.

    Every process must pass the same padded local size ``local_rows`` (default: its own row count
    rounded up to a multiple of its device count, which is right for a single process); the global
    row count is ``local_rows * process_count``.
    """
    X_local, y_local = np.asarray(X_local), np.asarray(y_local)
    n = X_local.shape[0]
    target = padded_rows(n if local_rows is None else local_rows, mesh)
    if target < n:
        raise ValueError(f"local_rows={local_rows} is smaller than the {n} rows this process holds")
    pad = target - n
    X_pad = np.concatenate([X_local, np.zeros((pad, X_local.shape[1]), X_local.dtype)])
    y_pad = np.concatenate([y_local.astype(np.int32), np.zeros(pad, np.int32)])
    m_pad = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    rows = NamedSharding(mesh, PartitionSpec(AXIS))
    rows2 = NamedSharding(mesh, PartitionSpec(AXIS, None))
    total = target * jax.process_count()
    return Rows(
        jax.make_array_from_process_local_data(rows2, X_pad, (total, X_local.shape[1])),
        jax.make_array_from_process_local_data(rows, y_pad, (total,)),
        jax.make_array_from_process_local_data(rows, m_pad, (total,)),
    )


def device_rows(features: jax.Array, labels: jax.Array) -> Rows:
    """In-memory rows placed for the kernels: sharded over all devices when there are several."""
    mesh = data_mesh()
    if mesh is None:
        return Rows(jnp.asarray(features), jnp.asarray(labels), None)
    local_rows = None
    if jax.process_count() > 1:  # this process's share; every process pads to the largest
        from jax.experimental import multihost_utils

        counts = multihost_utils.process_allgather(np.int64(np.shape(labels)[0]))
        local_rows = int(np.max(counts))
    return shard_rows(np.asarray(features), np.asarray(labels), mesh, local_rows=local_rows)
