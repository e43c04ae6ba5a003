"""The training rows, wherever they live: the one path every method's passes over the data take.

``Rows.sum(stat, args, preprocessing)`` returns ``sum_i stat(x'_i, y_i; args)`` over the rows, for a
``_statistics.Statistic`` (clipped gradient sums, class sums and counts, Gram and X^T Y, validation
scores). The per-row preprocessing ``x' = preprocess(x)`` runs on the device inside the same
compiled pass as the statistic, chunk by chunk: the preprocessed rows are never written to the
host. ``Rows`` owns the rest:

- **where the rows are**: a device array (one device, or sharded over a 1-D ``"data"`` mesh of all
  devices), a host array streamed in chunks, or a feature-store split streamed from disk; with
  several JAX processes, each process holds only its contiguous share ``[floor(iN/P),
  floor((i+1)N/P))`` and every chunk is one global row-sharded array;
- **chunking**: every pass uses chunks of one size (``chunk_rows``, the last one padded with mask
  0), so one compiled pass serves every chunk; a host chunk is copied into one of two reused,
  64-byte aligned staging buffers (zero-copy for the device on CPU) by a background thread while
  the device works on the previous chunk;
- **the reduction**: XLA adds the per-device partial sums of a sharded chunk; the chunk sums are
  added on the device; results are local (replicated) arrays;
- **validation**: labels are checked on the host before any pass; features are checked inside the
  passes (a row whose norm is not finite holds NaN/inf), and the first pass that finds one stops
  with an error naming the rows, before anything is released;
- **the memory budget**: ``max_device_bytes`` when given, else the device's free memory (GPU/TPU
  ``memory_stats``) or the available RAM (CPU), times ``BUDGET_SHARE``; rows that do not fit stay
  on the host and stream. On CPU a host array is never copied whole (the device is the host): a
  64-byte aligned array is used in place, any other streams through the staging buffers.

The true row count is held here for the passes and is never an output.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from feature_extract import store
from private_head._options import Performance
from private_head._preprocessing import (
    IDENTITY,
    Preprocessing,
    finite_rows,
    fold_factors,
    needs_rescale,
    relative_fold_factors,
    rescaled,
    row_exponents,
    rows32,
    safe_norms,
)
from private_head._statistics import Chunk, Nothing, Stage1, Statistic
from private_head._validation import (
    HALF_DTYPES,
    check_feature_dtype,
    check_labels,
    check_num_classes,
)

AXIS = "data"
BUDGET_SHARE = 0.5  # of the free device memory / available RAM, for the rows and the pass
MAX_CHUNK_BYTES = 64 << 20  # one streamed chunk of features at most (small: staging stays warm)
# On CPU every per-chunk array (rows x max(D, K) float32) stays below this: XLA:CPU's outputs come
# from malloc, and glibc returns blocks above 32 MB to the OS, so a larger output page-faults in
# on every call (measured: a 67 MB elementwise output at 1.1 GB/s, a 15 MB one at 6.3 GB/s).
CPU_ARRAY_BYTES = 16 << 20
ALIGN = 64
_HIGHEST = jax.lax.Precision.HIGHEST


@dataclass(frozen=True)
class Part:
    """A hash split of the rows (``select``): row i is a validation row when a keyed hash of its
    own values and label falls below ``fraction`` (so a row's side depends on that row alone);
    ``validation`` picks that side, else the other."""

    salt: int
    fraction: float
    validation: bool


def device_budget(max_device_bytes: int | None) -> int:
    """Bytes the rows and a pass may use on the device (module docstring)."""
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
    """Half precision stays half precision; everything else is float32 on the device."""
    dtype = np.dtype(dtype)
    return dtype if dtype.name in HALF_DTYPES else np.dtype(np.float32)


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array whose data start on a 64-byte boundary (zero-copy on CPU)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, np.uint8)
    offset = (-raw.ctypes.data) % ALIGN
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def _zero_copy_ok(x: np.ndarray) -> bool:
    return (
        jax.local_devices()[0].platform == "cpu"
        and x.flags.c_contiguous
        and x.ctypes.data % ALIGN == 0
        and x.dtype == device_dtype(x.dtype)
    )


def nonfinite_error(rows: np.ndarray) -> ValueError:
    """The error for rows holding NaN/inf (indices in the whole split); it names private rows,
    so it says that it is private itself (``store.PRIVATE_MESSAGE``)."""
    shown = ", ".join(str(i) for i in rows[:10]) + (" ..." if rows.size > 10 else "")
    return ValueError(
        f"features hold NaN or infinite values (or overflow in the float32 cast) in "
        f"{rows.size} row(s): {shown}. Fix or drop these rows; they are never silently zeroed. "
        + store.PRIVATE_MESSAGE
    )


# ------------------------------------------------------------------------------- compiled pass
def _part_mask(x: jax.Array, y: jax.Array, part: tuple[int, float, bool]) -> jax.Array:
    """1.0 for rows on the asked side of the hash split (``Part``), else 0.0."""
    salt, fraction, validation = part
    words = _row_words(x)
    rng = np.random.default_rng([salt & 0xFFFFFFFF, salt >> 32 & 0xFFFFFFFF, 0x5E1EC7])
    keys = rng.integers(1, 2**32, size=(2, words.shape[1] + 1), dtype=np.uint64).astype(np.uint32)
    keys |= np.uint32(1)  # odd multipliers
    lanes = []
    for lane in range(2):
        k = jnp.asarray(keys[lane])
        h = jnp.sum(words * k[None, :-1], axis=1, dtype=jnp.uint32)
        h = h + y.astype(jnp.uint32) * k[-1] + jnp.uint32(lane)
        lanes.append(_fmix32(h))
    threshold = int(fraction * 2.0**64)
    hi, lo = jnp.uint32(threshold >> 32), jnp.uint32(threshold & 0xFFFFFFFF)
    below = (lanes[0] < hi) | ((lanes[0] == hi) & (lanes[1] < lo))
    side = below if validation else ~below
    return side.astype(jnp.float32)


def _row_words(x: jax.Array) -> jax.Array:
    """Each row's bytes as uint32 words [c, W] (16-bit values two per word)."""
    if x.dtype.itemsize == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    half = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    if half.shape[1] % 2:
        half = jnp.pad(half, ((0, 0), (0, 1)))
    return half[:, 0::2] | (half[:, 1::2] << 16)


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _mapped_chunk(x, y, mask, mean, transform, static) -> tuple[Chunk, jax.Array]:
    """The chunk of mapped (``transform``) or centred rows: materialised float32 rows."""
    _, radius, _ = static
    if transform is not None:  # rows already mapped: x' = pre(x) A, float32
        x32 = jnp.matmul(rows32(x, mean, static)[0], transform, precision=_HIGHEST)
        norms = safe_norms(x32)
        return Chunk(x32, y, mask, jnp.ones_like(mask), norms, None, IDENTITY.static), norms
    x32, norms = rows32(x, mean, static)  # centred rows cannot be folded into a scale
    flag = ("identity", radius, "none")
    return Chunk(x32, y, mask, jnp.ones_like(mask), norms, None, flag), norms


def _bad(norms: jax.Array, valid: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(jnp.isfinite(norms), 0.0, valid))


@functools.partial(jax.jit, static_argnames=("stat", "static", "part"))
def _pass(x, y, valid, weights, mean, transform, args, *, stat, static, part):
    """One chunk: ``(stat(chunk, args), number of real rows that are not finite)``. Without
    centring the preprocessing is folded (``fold_factors``); a chunk with extreme entries takes
    the branch that rescales its rows by powers of two first."""
    mask = valid if weights is None else valid * weights
    if part is not None:
        mask = mask * _part_mask(x, y, part)
    if transform is not None or static[2] != "none":
        chunk, norms = _mapped_chunk(x, y, mask, mean, transform, static)
        return stat(chunk, args), _bad(norms, valid)

    def folded(x_in, e):
        a, norms = fold_factors(x_in, static, e)
        return stat(Chunk(x_in, y, mask, a, norms, None, static), args), _bad(norms, valid)

    if isinstance(stat, Stage1):  # a large output: no branch around it, powers of two inside
        a, norms, e = relative_fold_factors(x, static)
        chunk = Chunk(x, y, mask, a, norms, None, static, exponents=e)
        return stat(chunk, args), _bad(norms, valid)

    e = row_exponents(x)
    return jax.lax.cond(
        needs_rescale(e), lambda: folded(rescaled(x, e), e), lambda: folded(x, None)
    )


@functools.partial(jax.jit, static_argnames=("static",))
def _bad_rows(x, valid, mean, *, static):
    del mean, static
    return (~finite_rows(x)) & (valid > 0)


@functools.partial(jax.jit, static_argnames=("static", "part"))
def _mapped_rows(x, y, valid, mean, transform, *, static, part):
    mask = valid if part is None else valid * _part_mask(x, y, part)
    return jnp.matmul(rows32(x, mean, static)[0], transform, precision=_HIGHEST) * mask[:, None]


@functools.partial(jax.jit, static_argnames=("num_segments",))
def _scatter(Z, ids, *, num_segments):
    return jax.ops.segment_sum(Z, ids, num_segments=num_segments)


@functools.partial(jax.jit, static_argnames=("stat",))
def _stage2(S, rest, *, stat):
    return stat.stage2(S, rest)


@jax.jit
def _tree_add(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)


# ------------------------------------------------------------------------------------ sources
class _HostSource:
    """Rows of a host array (or of this process's share of it), copied into staging buffers."""

    def __init__(self, x: np.ndarray, offset: int, stop: int):
        self.x, self.offset, self.stop = x, offset, stop
        self.dtype = device_dtype(x.dtype)

    def fill(self, start: int, stop: int, out: np.ndarray) -> None:
        with np.errstate(over="ignore", invalid="ignore"):
            np.copyto(out, self.x[self.offset + start : self.offset + stop], casting="unsafe")

    def view(self, start: int, stop: int) -> np.ndarray | None:
        """The rows in place when the device can use them without a copy, else None."""
        rows = self.x[self.offset + start : self.offset + stop]
        return rows if _zero_copy_ok(rows) else None


class _StoreSource:
    """Rows of a store split (or of this process's share of it), read into staging buffers."""

    def __init__(self, path: str, split: str, offset: int, stop: int, dtype: np.dtype):
        self.path, self.split, self.offset, self.stop = path, split, offset, stop
        self.dtype = device_dtype(dtype)
        self._reader: store.SplitReader | None = None
        self._labels: np.ndarray | None = None

    def open(self) -> None:
        if self._reader is None:
            self._reader = store.SplitReader(self.path, self.split)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def fill(self, start: int, stop: int, out: np.ndarray) -> None:
        if self._labels is None or self._labels.shape[0] < out.shape[0]:
            self._labels = np.empty(out.shape[0], np.int32)
        self._reader.read_into(
            self.offset + start, self.offset + stop, out, self._labels[: stop - start]
        )

    def view(self, start: int, stop: int) -> None:
        return None

    @property
    def chunk_rows_hint(self) -> int:
        self.open()
        return self._reader.chunk_rows_hint


# --------------------------------------------------------------------------------------- rows
class Rows:
    """The training rows and their labels (module docstring). Build with ``open_rows``."""

    def __init__(
        self,
        *,
        labels: np.ndarray,
        dim: int,
        dtype: np.dtype,
        num_classes: int,
        performance: Performance,
        device_x: jax.Array | None = None,
        source: _HostSource | _StoreSource | None = None,
        offset: int = 0,
        kind: str,
        part: Part | None = None,
        transform: jax.Array | None = None,
        transform_pre: Preprocessing | None = None,
    ):
        self.labels, self.dim, self.dtype = labels, int(dim), np.dtype(dtype)
        self.num_classes, self.performance, self.kind = num_classes, performance, kind
        self.device_x, self.source, self.offset = device_x, source, offset
        self.part, self.transform, self.transform_pre = part, transform, transform_pre
        self.validated = False
        self.local_rows = int(labels.shape[0])
        self.mesh = _mesh()
        self.processes = jax.process_count()
        counts = _allgather_int(self.local_rows)
        self.global_rows = int(sum(counts))
        self.max_local_rows = int(max(counts))
        self.budget = device_budget(performance.max_device_bytes)
        self.chunk_cap = self._chunk_cap()
        self.chunk_rows = self._chunk_rule()
        self.num_chunks = max(1, -(-self.max_local_rows // self.chunk_rows))
        self.stats = {"passes": 0}  # shared with the views (with_part, mapped)
        self.resident: dict[str, Any] = {}  # a single staged chunk, kept for later passes

    # ------------------------------------------------------------------ operator facts
    def describe(self) -> dict[str, Any]:
        """The facts of this data path, for the operator log only: where the rows were, the
        chunk, its cap, the budget, the passes. They depend on the row count (the path is chosen
        by N x D x itemsize against the budget, the chunk by N and the store's chunk), so they are
        never part of a published report (docs/architecture.md, "The whole artefact")."""
        return {
            "rows": self.kind,
            "dtype": self.dtype.name,
            "chunk_rows": self.chunk_rows,
            "chunk_rows_max": self.chunk_cap,
            "memory_budget_bytes": self.budget,
            "devices": len(jax.devices()),
            "processes": self.processes,
            "passes": self.stats["passes"],
        }

    def with_part(self, part: Part | None) -> Rows:
        """The same rows, restricted to one side of a hash split (masks, no copy)."""
        other = object.__new__(Rows)
        other.__dict__.update(self.__dict__)
        other.part = part
        return other

    # ------------------------------------------------------------------ the chunk-size rule
    def _chunk_rule(self) -> int:
        """Rows per chunk: ``min(chunk cap, local rows)`` rounded up to a multiple of the local
        device count (both are operator facts, ``describe``)."""
        per_device = len(self.mesh.local_devices) if self.mesh is not None else 1
        rows = max(per_device, min(self.chunk_cap, _round_up(self.max_local_rows, per_device)))
        return _round_up(rows, per_device)

    def _chunk_cap(self) -> int:
        """The given ``chunk_rows``, else what the budget holds of a row and its working memory
        (``4 (max(4K, D) + 16)`` bytes): a resident array leaves half the budget for the work, a
        streamed chunk (three copies in flight) is at most ``MAX_CHUNK_BYTES`` of features; on CPU
        every per-chunk array is at most ``CPU_ARRAY_BYTES``; a multiple of the store's chunk
        rows."""
        if self.performance.chunk_rows is not None:
            return int(self.performance.chunk_rows)
        row_bytes = self.dim * self.dtype.itemsize
        work = 4 * (max(4 * self.num_classes, self.dim) + 16)
        if self.device_x is not None:
            rows = (self.budget // 2) // max(work, 1)
        else:
            rows = min(self.budget // (3 * row_bytes + work), MAX_CHUNK_BYTES // row_bytes)
        if jax.local_devices()[0].platform == "cpu":
            rows = min(rows, CPU_ARRAY_BYTES // (4 * max(self.dim, self.num_classes, 1)))
        hint = getattr(self.source, "chunk_rows_hint", 1) if self.source is not None else 1
        return max(hint, rows // hint * hint)

    # ------------------------------------------------------------------ passes
    def sum(
        self,
        stat: Statistic,
        args: Any = None,
        preprocessing: Preprocessing = IDENTITY,
        *,
        weights: jax.Array | None = None,
    ) -> Any:
        """``sum over rows of stat`` (module docstring); ``weights`` [local rows] multiplies each
        row's mask (e.g. a Poisson sample). Raises ValueError naming non-finite rows."""
        mean = preprocessing.device_mean()
        static = preprocessing.static
        transform = self.transform
        if transform is not None:  # mapped rows: the parent's preprocessing, then A
            mean, static = self.transform_pre.device_mean(), self.transform_pre.static
        part = (
            None
            if self.part is None
            else (self.part.salt, self.part.fraction, self.part.validation)
        )
        args = self._replicated(args)
        mean = self._replicated(mean)
        transform = self._replicated(transform)
        if weights is not None:
            padded = self.num_chunks * self.chunk_rows
            weights = jnp.pad(weights.astype(jnp.float32), (0, padded - weights.shape[0]))
        staged = stat.scatters()
        run = functools.partial(
            _pass, stat=Stage1(stat) if staged else stat, static=static, part=part
        )
        rows, K = self.chunk_rows, self.num_classes

        def one(start, x, y, valid):
            w = None if weights is None else self._place_rows(weights[start : start + rows])
            out, bad = run(x, y, valid, w, mean, transform, args)
            if staged:  # the scatter as its own program (Statistic docstring)
                Z, ids, rest = out
                out = (_scatter(Z, ids, num_segments=K), rest)
            return out, bad

        result, bad = self._for_each_chunk(one, accumulate=True)
        if staged:
            result = _stage2(result[0], result[1], stat=stat)
        self.stats["passes"] += 1
        if not self.validated:
            if float(_local(bad)) > 0:
                raise nonfinite_error(self._find_bad_rows(static, mean))
            self.validated = True
        return jax.tree_util.tree_map(_local, result)

    def validate(self, preprocessing: Preprocessing = IDENTITY) -> None:
        """One pass that only checks the features (a ValueError names non-finite rows)."""
        if not self.validated:
            self.sum(Nothing(), None, preprocessing)

    def mapped(self, transform: jax.Array, preprocessing: Preprocessing) -> Rows:
        """The rows ``x -> preprocess(x) A`` (float32; DP-FC's whitened rows): materialised on
        the device once when they fit the budget, else mapped chunk by chunk in every pass."""
        if not self.validated:
            raise RuntimeError("map rows only after a pass has validated them")
        other = object.__new__(Rows)
        other.__dict__.update(self.__dict__)
        other.dim = int(transform.shape[1])
        fits = self.max_local_rows * other.dim * 4 * 2 <= self.budget
        if fits and self.processes == 1:
            mean = self._replicated(preprocessing.device_mean())
            A = self._replicated(transform)
            static = preprocessing.static
            parts = self._for_each_chunk(
                lambda start, x, y, valid: _mapped_rows(
                    x, y, valid, mean, A, static=static, part=None
                )
            )
            rows = jnp.concatenate(parts)[: self.local_rows]
            other.device_x, other.source, other.offset = rows, None, 0
            other.dtype, other.kind = np.dtype(np.float32), "device"
            other.transform, other.transform_pre = None, None
            other.chunk_cap = other._chunk_cap()
            other.chunk_rows = other._chunk_rule()
            other.num_chunks = max(1, -(-other.max_local_rows // other.chunk_rows))
        else:
            other.transform, other.transform_pre = transform, preprocessing
            other.chunk_rows = other._chunk_rule()
            other.num_chunks = max(1, -(-other.max_local_rows // other.chunk_rows))
        return other

    # ------------------------------------------------------------------ chunks
    def _for_each_chunk(self, fn, accumulate: bool = False) -> Any:
        """``fn(start, x, y, valid)`` on every device chunk (``start``: local row index); the
        outputs' sum when ``accumulate``, else their list. Host chunks are read on a background
        thread into two staging buffers; a buffer is refilled only once the output that last
        read it (in this pass or an earlier one) is ready."""
        outputs: list[Any] = []
        total = None
        chunks = self._device_chunks() if self.device_x is not None else self._host_chunks()
        for start, x, y, valid, release in chunks:
            out = fn(start, x, y, valid)
            release(out)
            if accumulate:
                total = out if total is None else _tree_add(total, out)
            else:
                outputs.append(out)
        return total if accumulate else outputs

    def _device_chunks(self):
        rows, n = self.chunk_rows, self.local_rows
        for j in range(self.num_chunks):
            start = j * rows
            stop = min(n, start + rows)
            if start == 0 and stop == n == rows:
                x = self.device_x
            else:
                x = self.device_x[start:stop]
                if stop - start < rows:
                    x = jnp.pad(x, ((0, rows - (stop - start)), (0, 0)))
            yield (
                start,
                *self._place(x, self._labels_chunk(start, stop), stop - start),
                _no_release,
            )

    def _labels_chunk(self, start: int, stop: int) -> np.ndarray:
        y = np.zeros(self.chunk_rows, np.int32)
        y[: max(0, stop - start)] = self.labels[start:stop]
        return y

    def _host_chunks(self):
        rows, n, source = self.chunk_rows, self.local_rows, self.source
        if self.num_chunks == 1:  # stage it once; later passes reuse the device copy
            if "chunk" not in self.resident:
                host = self._fill_one(np.empty(0), 0, n, rows)
                self.resident["chunk"] = self._place(host, self._labels_chunk(0, n), n)
            yield (0, *self.resident["chunk"], _no_release)
            return
        if "buffers" not in self.resident:  # two staging buffers, allocated once, reused
            self.resident["buffers"] = [
                aligned_empty((rows, self.dim), source.dtype) for _ in range(2)
            ]
            # the pass output that last read each buffer, kept across passes: the device reads
            # a staging buffer in place (zero copy on CPU) and asynchronously, so a buffer may
            # be refilled only once that output is ready, even if a previous pass made it
            self.resident["readers"] = [None, None]
        buffers, readers = self.resident["buffers"], self.resident["readers"]

        def fill(j: int) -> np.ndarray:
            start = j * rows
            return self._fill_one(buffers[j % 2], start, min(n, start + rows), rows)

        def submit(j: int) -> concurrent.futures.Future:
            if readers[j % 2] is not None:
                jax.block_until_ready(readers[j % 2])
                readers[j % 2] = None
            return _READER.submit(fill, j)

        if isinstance(source, _StoreSource):
            source.open()
        try:
            pending = submit(0)
            for j in range(self.num_chunks):
                host = pending.result()
                start = j * rows
                stop = min(n, start + rows)
                x, y, valid = self._place(host, self._labels_chunk(start, stop), stop - start)
                outputs: list[Any] = []
                if j + 1 < self.num_chunks:
                    pending = submit(j + 1)
                yield start, x, y, valid, outputs.append
                readers[j % 2] = outputs[0] if outputs else x
            pending = None
        finally:
            if pending is not None:
                pending.result()  # never leave a read running into a buffer
            if isinstance(source, _StoreSource):
                source.close()

    def _fill_one(self, buf: np.ndarray, start: int, stop: int, rows: int) -> np.ndarray:
        """Rows ``[start, stop)`` padded with zero rows to ``rows``: the caller's rows in place
        when the device can use them, else copied into ``buf`` (allocated when empty)."""
        source = self.source
        view = source.view(start, stop) if stop - start == rows else None
        if view is not None:
            return view
        if buf.size == 0:
            buf = aligned_empty((rows, self.dim), source.dtype)
        if stop > start:
            if isinstance(source, _StoreSource):
                source.open()
            source.fill(start, stop, buf[: stop - start])
        buf[max(0, stop - start) :] = 0
        return buf

    def _place(self, x: Any, y: np.ndarray, real: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Device arrays (row-sharded over the mesh, global over processes) for one chunk."""
        valid = np.zeros(self.chunk_rows, np.float32)
        valid[: max(0, real)] = 1.0
        return self._place_rows(x), self._place_rows(y), self._place_rows(valid)

    def _place_rows(self, a: Any) -> jax.Array:
        if self.mesh is None:
            return jnp.asarray(a) if isinstance(a, jax.Array) else jax.device_put(a)
        spec = PartitionSpec(AXIS, *([None] * (np.ndim(a) - 1)))
        sharding = NamedSharding(self.mesh, spec)
        if self.processes == 1:
            return jax.device_put(a, sharding)
        shape = (np.shape(a)[0] * self.processes, *np.shape(a)[1:])
        return jax.make_array_from_process_local_data(sharding, np.asarray(a), shape)

    def _replicated(self, tree: Any) -> Any:
        """Arguments of a pass, replicated over the mesh (committed to its devices)."""
        if self.mesh is None or tree is None:
            return tree
        sharding = NamedSharding(self.mesh, PartitionSpec())

        def put(a):
            if self.processes == 1:
                return jax.device_put(a, sharding)
            return jax.make_array_from_process_local_data(sharding, np.asarray(a), np.shape(a))

        return jax.tree_util.tree_map(put, tree)

    def _find_bad_rows(self, static: tuple, mean: Any) -> np.ndarray:
        flags = self._for_each_chunk(
            lambda start, x, y, valid: (start, _bad_rows(x, valid, mean, static=static))
        )
        bad = [np.flatnonzero(np.asarray(_local(f))) + start + self.offset for start, f in flags]
        return np.concatenate(bad)


_READER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rows-reader")


def _no_release(output: Any) -> None:
    del output


def _local(a: Any) -> Any:
    """A replicated result of several processes as a local array (the first addressable copy)."""
    if jax.process_count() > 1 and isinstance(a, jax.Array) and not a.is_fully_addressable:
        return a.addressable_data(0)
    return a


def _round_up(n: int, multiple: int) -> int:
    return -(-max(n, 1) // multiple) * multiple


def _mesh() -> Mesh | None:
    devices = jax.devices()
    return Mesh(np.asarray(devices), (AXIS,)) if len(devices) > 1 else None


def _allgather_int(value: int) -> list[int]:
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    return [int(v) for v in multihost_utils.process_allgather(np.int64(value))]


# ---------------------------------------------------------------------------------- open_rows
def process_share(num_rows: int) -> tuple[int, int]:
    """This process's rows ``[floor(i N / P), floor((i + 1) N / P))``."""
    from feature_extract.multihost import process_rows

    if num_rows < jax.process_count():
        raise ValueError(
            f"{num_rows} rows cannot be split over {jax.process_count()} processes; "
            "every process needs at least one row"
        )
    return process_rows(num_rows, jax.process_index(), jax.process_count())


def is_store_spec(features: Any) -> bool:
    return isinstance(features, (str, bytes)) or hasattr(features, "__fspath__")


def open_rows(
    features: Any,
    labels: Any = None,
    *,
    num_classes: int,
    feature_norm: float = 1.0,
    split: str = "train",
    performance: Performance | None = None,
) -> Rows:
    """Rows from an array [N, D] with labels [N], or a store spec ``"file.h5[:split]"`` (which
    brings its labels). Checks shapes, dtype and labels now (features are checked in the first
    pass); loads nothing but the labels and, on an accelerator, the rows when they fit."""
    performance = performance or Performance()
    num_classes = check_num_classes(num_classes)
    if is_store_spec(features):
        return _store_rows(features, labels, num_classes, feature_norm, split, performance)
    x = features if isinstance(features, jax.Array) else np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array [N, D], got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"features are empty (shape {x.shape}); need at least one row and column")
    check_feature_dtype(x.dtype, feature_norm)
    total = int(x.shape[0])
    y_all = np.asarray(labels) if labels is not None else None
    start, stop = process_share(total)
    y = check_labels(y_all, total, num_classes)[start:stop]
    common = dict(
        labels=y,
        dim=x.shape[1],
        dtype=device_dtype(x.dtype),
        num_classes=num_classes,
        performance=performance,
        offset=start,
    )
    if isinstance(x, jax.Array):
        if jax.process_count() > 1:
            x = np.asarray(x)
        else:
            local = x if x.dtype == device_dtype(x.dtype) else x.astype(jnp.float32)
            return Rows(device_x=local, kind="device", **common)
    source = _HostSource(x, start, stop)
    budget = device_budget(performance.max_device_bytes)
    share_bytes = (stop - start) * x.shape[1] * source.dtype.itemsize
    if jax.process_count() == 1 and _mesh() is None:
        whole = x[start:stop]
        if _zero_copy_ok(whole) and share_bytes <= budget:
            return Rows(device_x=jax.device_put(whole), kind="host_in_place", **common)
        on_accelerator = jax.local_devices()[0].platform != "cpu"
        if on_accelerator and 2 * share_bytes <= budget:
            dev = jax.device_put(np.asarray(whole, dtype=source.dtype))
            return Rows(device_x=dev, kind="device", **common)
    return Rows(source=source, kind="host_streamed", **common)


def _store_rows(features, labels, num_classes, feature_norm, split, performance) -> Rows:
    if labels is not None:
        raise ValueError("labels come from the store; do not pass labels with a store path")
    path, split = store.parse_store_path(str(features), split)
    info = store.split_info(path, split)
    if info.num_classes != num_classes:
        raise ValueError(
            f"num_classes={num_classes} but the store {path}:{split} declares "
            f"{info.num_classes} classes"
        )
    if info.num_rows == 0:
        raise ValueError(f"split {split!r} of {path} is empty; need at least one row")
    check_feature_dtype(info.feature_dtype, feature_norm)
    start, stop = process_share(info.num_rows)
    with store.SplitReader(path, split) as reader:
        y = reader.labels(start, stop)
    y = check_labels(y, stop - start, num_classes)
    source = _StoreSource(path, split, start, stop, np.dtype(info.feature_dtype))
    return Rows(
        labels=y,
        dim=info.dim,
        dtype=source.dtype,
        num_classes=num_classes,
        performance=performance,
        source=source,
        offset=start,
        kind="store_streamed",
    )


def validation_mask(features: Any, labels: Any, fraction: float, salt: int = 0) -> np.ndarray:
    """Bool [N]: the rows a ``Part(salt, fraction, validation=True)`` keeps (``select``'s split),
    computed from each row's own values and label."""
    x = jnp.asarray(features)
    mask = _part_jit(x, jnp.asarray(labels, jnp.int32), part=(int(salt), float(fraction), True))
    return np.asarray(mask) > 0


_part_jit = jax.jit(_part_mask, static_argnames=("part",))
