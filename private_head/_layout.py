"""Where the rows go and in what pieces: the memory budget, the process share, the chunk size.

The plan of a pass over the rows is made once, when the rows are opened (docs/architecture.md,
"Rows"): every process learns the others' row counts (the one collective, here), the memory
budget is fixed and the chunk size chosen. Nothing here reads a row.

- **budget**: ``max_device_bytes`` when given, else ``BUDGET_SHARE`` of the free device memory
  (GPU/TPU ``memory_stats``) or of the available RAM (CPU);
- **process share**: process i of P holds rows ``[floor(iN/P), floor((i+1)N/P))``;
- **chunk**: ``min(cap, bucket(local rows))``, where the cap is what the budget holds of a row and
  its working memory and ``bucket`` rounds up to ``unit * 2^j`` (``unit``: the store's HDF5 chunk
  rows times the local device count, at least ``MIN_CHUNK_ROWS``). Chunk shapes come from a short
  list, so a compiled pass serves datasets of many sizes (the cold cost of a fit is paid once per
  process, not once per N). A given ``chunk_rows`` is used as it is (rounded up to the devices).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from private_head._options import Performance
from private_head._validation import HALF_DTYPES

AXIS = "data"
BUDGET_SHARE = 0.5  # of the free device memory / available RAM, for the rows and the pass
MAX_CHUNK_BYTES = 64 << 20  # one streamed chunk of features at most (small: staging stays warm)
# On CPU every per-chunk array (rows x max(D, K) float32) stays below this: XLA:CPU's outputs come
# from malloc, and glibc returns blocks above 32 MB to the OS, so a larger output page-faults in
# on every call (measured: a 67 MB elementwise output at 1.1 GB/s, a 15 MB one at 6.3 GB/s).
CPU_ARRAY_BYTES = 16 << 20
MIN_CHUNK_ROWS = 32  # a chunk of 32 rows starts 64-byte aligned in any 2-byte or 4-byte dtype


def on_cpu() -> bool:
    return jax.local_devices()[0].platform == "cpu"


def device_budget(max_device_bytes: int | None) -> int:
    """Bytes the rows and a pass may use (module docstring)."""
    if max_device_bytes is not None:
        return int(max_device_bytes)
    device = jax.local_devices()[0]
    free = None
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    if free is None:
        free = available_ram()
    return max(1 << 24, int(BUDGET_SHARE * free))


def available_ram() -> int:
    """``MemAvailable`` of /proc/meminfo (else total physical memory / 2)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def device_dtype(dtype: Any) -> np.dtype:
    """The dtype a compiled pass sees: half precision stays half on an accelerator; on CPU, and
    for every other dtype, float32 (XLA:CPU's half-precision matmuls are emulated, about 5x
    slower: 16-bit rows are decoded per chunk, on the host, into a reused buffer)."""
    dtype = np.dtype(dtype)
    return dtype if dtype.name in HALF_DTYPES and not on_cpu() else np.dtype(np.float32)


def mesh() -> Mesh | None:
    """A 1-D ``"data"`` mesh of every device, or None with one device."""
    devices = jax.devices()
    return Mesh(np.asarray(devices), (AXIS,)) if len(devices) > 1 else None


def allgather_int(value: int) -> list[int]:
    """``value`` of every process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    return [int(v) for v in multihost_utils.process_allgather(np.int64(value))]


def process_share(num_rows: int) -> tuple[int, int]:
    """This process's rows ``[floor(i N / P), floor((i + 1) N / P))``."""
    from feature_extract.multihost import process_rows

    if num_rows < jax.process_count():
        raise ValueError(
            f"{num_rows} rows cannot be split over {jax.process_count()} processes; "
            "every process needs at least one row"
        )
    return process_rows(num_rows, jax.process_index(), jax.process_count())


def round_up(n: int, multiple: int) -> int:
    return -(-max(n, 1) // multiple) * multiple


def bucket(n: int, unit: int) -> int:
    """The least ``unit * 2^j >= n``."""
    units = -(-max(n, 1) // unit)
    return unit * (1 << (units - 1).bit_length())


@dataclass(frozen=True)
class Layout:
    """The plan of every pass over one set of rows (module docstring). Operator facts only: it
    depends on the row count and the machine, never part of a published output."""

    local_rows: int
    global_rows: int
    max_local_rows: int
    processes: int
    per_device: int  # local devices a chunk is split over
    budget: int
    chunk_cap: int
    chunk_rows: int

    @property
    def num_chunks(self) -> int:
        return max(1, -(-self.max_local_rows // self.chunk_rows))

    @classmethod
    def plan(
        cls,
        local_rows: int,
        *,
        row_bytes: int,
        num_classes: int,
        performance: Performance,
        resident: bool,
        hint: int = 1,
        dim: int,
    ) -> Layout:
        """Gather the row counts of every process and choose the chunk (module docstring).
        ``resident``: the rows stay in memory (else each chunk is staged: three in flight)."""
        counts = allgather_int(local_rows)
        the_mesh = mesh()
        per_device = len(the_mesh.local_devices) if the_mesh is not None else 1
        layout = cls(
            local_rows=int(local_rows),
            global_rows=int(sum(counts)),
            max_local_rows=int(max(counts)),
            processes=jax.process_count(),
            per_device=per_device,
            budget=device_budget(performance.max_device_bytes),
            chunk_cap=1,
            chunk_rows=1,
        )
        return layout.rechunk(
            row_bytes=row_bytes,
            num_classes=num_classes,
            dim=dim,
            performance=performance,
            resident=resident,
            hint=hint,
        )

    def rechunk(
        self,
        *,
        row_bytes: int,
        num_classes: int,
        dim: int,
        performance: Performance,
        resident: bool,
        hint: int = 1,
    ) -> Layout:
        """The same rows with the chunk chosen for rows of ``row_bytes`` bytes and ``dim``
        columns (mapped rows change both)."""
        if performance.chunk_rows is not None:
            cap = round_up(int(performance.chunk_rows), self.per_device)
            return replace(self, chunk_cap=cap, chunk_rows=cap)
        work = 4 * (max(4 * num_classes, dim) + 16)
        if resident:
            rows = (self.budget // 2) // max(work, 1)
        else:
            rows = min(self.budget // (3 * row_bytes + work), MAX_CHUNK_BYTES // row_bytes)
        if on_cpu():
            rows = min(rows, CPU_ARRAY_BYTES // (4 * max(dim, num_classes, 1)))
        unit = hint * self.per_device
        if unit < MIN_CHUNK_ROWS:
            unit *= -(-MIN_CHUNK_ROWS // unit)
        cap = max(unit, unit << max(0, (rows // unit).bit_length() - 1))  # unit * 2^j <= rows
        return replace(self, chunk_cap=cap, chunk_rows=min(cap, bucket(self.max_local_rows, unit)))
