"""The training rows, wherever they live: the one path every method's passes over the data take.

``Rows.sum(stat, args, preprocessing)`` returns ``sum_i stat(x'_i, y_i; args)`` over the rows, for a
``_statistics.Statistic`` (clipped gradient sums, class sums and counts, Gram and X^T Y, validation
scores), with the per-row preprocessing ``x' = preprocess(x)`` computed inside the same pass, never
written out as a copy of X (docs/architecture.md, "Rows"). The parts:

- ``_layout``: the memory budget, this process's share, the chunk size (planned when the rows are
  opened; the only collective);
- ``_reader``: the rows on the host (an array used in place, a store split read once into memory
  when it fits the budget, else streamed) and the staging of chunks on a background thread;
- ``_host_pass``: on one CPU device, the zero-init class sums as one fused host kernel over the
  rows in place (16-bit rows decoded in the pass);
- ``_device_pass``: the compiled pass over one chunk, for every other statistic and place (a
  device array, one device or sharded over a 1-D ``"data"`` mesh; several JAX processes, each
  holding its share, every chunk one global row-sharded array).

Every compiled pass uses chunks of one bucketed size (the last padded with mask 0); on CPU a chunk
of rows in place is handed to XLA without a copy when it starts 64-byte aligned, and 16-bit rows
are decoded into a reused float32 buffer (XLA:CPU's half-precision matmuls are slow). Labels are
checked on the host before any pass; features inside the first pass (a row whose norm is not
finite holds NaN/inf), which stops with an error naming the rows, before anything is released.
The true row count is held here for the passes and is never an output.

One exact sum may be kept for the next (``Rows.sum(keep=True)``): ``auto``'s feature spread keeps
its Gram ``G = sum_i x'_i x'_i^T``, and DP-FC's Gram release, the next sum with the same
statistic and the same preprocessing object, takes it instead of a second pass over the rows.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from feature_extract import store
from private_head import _host_pass
from private_head._device_pass import (
    bad_rows,
    chunk_pass,
    mapped_rows,
    scatter,
    stage2,
    tree_add,
    validation_mask,
)
from private_head._layout import (
    AXIS,
    Layout,
    device_budget,
    device_dtype,
    mesh,
    on_cpu,
    process_share,
)
from private_head._options import Performance
from private_head._preprocessing import IDENTITY, Preprocessing
from private_head._reader import (
    ArraySource,
    Source,
    Staging,
    StoreSource,
    aligned_empty,
    is_aligned,
    staged,
)
from private_head._statistics import Nothing, PreprocessedRows, Stage1, Statistic
from private_head._validation import check_feature_dtype, check_labels, check_num_classes

__all__ = ["Part", "Rows", "aligned_empty", "is_store_spec", "open_rows", "validation_mask"]


@dataclass(frozen=True)
class Part:
    """A hash split of the rows (``select``): row i is a validation row when a keyed hash of its
    own values and label falls below ``fraction`` (so a row's side depends on that row alone);
    ``validation`` picks that side, else the other."""

    salt: int
    fraction: float
    validation: bool


def nonfinite_error(rows: np.ndarray) -> ValueError:
    """The error for rows holding NaN/inf (indices in the whole split); it names private rows,
    so it says that it is private itself (``store.PRIVATE_MESSAGE``)."""
    shown = ", ".join(str(i) for i in rows[:10]) + (" ..." if rows.size > 10 else "")
    return ValueError(
        f"features hold NaN or infinite values (or overflow in the float32 cast) in "
        f"{rows.size} row(s): {shown}. Fix or drop these rows; they are never silently zeroed. "
        + store.PRIVATE_MESSAGE
    )


@dataclass
class _Passes:
    """The passes of one fit over its rows, those of the host kernel apart; DP-FC's materialised
    whitened rows count theirs here too (the operator log's ``passes``)."""

    total: int = 0
    host: int = 0


@dataclass
class _Shared:
    """What the views of one set of rows share: pass counts, validation, reused buffers."""

    validated: bool = False
    passes: _Passes = field(default_factory=_Passes)
    staging: Staging = field(default_factory=Staging)
    resident: dict[str, Any] = field(default_factory=dict)  # a single staged chunk, kept


@dataclass(frozen=True, eq=False)
class _Kept:
    """An exact parameter-free sum kept for the next pass (``Rows.sum(keep=True)``)."""

    stat: Statistic
    preprocessing: Preprocessing
    value: Any

    def serves(
        self, stat: Statistic, args: Any, preprocessing: Preprocessing, weights: Any
    ) -> bool:
        """An equal statistic (statistics are values of public constants, static in the compiled
        pass), no arguments or weights, and the same preprocessing object: ``Preprocessing``
        holds arrays, so an equal map built anew is not assumed to be the same one."""
        return (
            args is None
            and weights is None
            and preprocessing is self.preprocessing
            and stat == self.stat
        )


@dataclass(frozen=True, eq=False)
class Rows:
    """The training rows and their labels (module docstring). Build with ``open_rows``; views
    (``with_part``, ``mapped``) are new values sharing ``shared``."""

    labels: np.ndarray
    dim: int
    dtype: np.dtype  # what a compiled pass sees (``_layout.device_dtype``)
    num_classes: int
    performance: Performance
    layout: Layout
    kind: str
    offset: int = 0
    device_x: jax.Array | None = None
    source: Source | None = None
    part: Part | None = None
    transform: jax.Array | None = None
    transform_pre: Preprocessing | None = None
    mesh: Mesh | None = None
    shared: _Shared = field(default_factory=_Shared)
    # at most one kept sum, of this value only: a view (``with_part``, ``mapped``) starts empty
    _kept: list[_Kept] = field(default_factory=list, init=False, repr=False)

    # ------------------------------------------------------------------ the layout's facts
    local_rows = property(lambda self: self.layout.local_rows)
    global_rows = property(lambda self: self.layout.global_rows)
    max_local_rows = property(lambda self: self.layout.max_local_rows)
    processes = property(lambda self: self.layout.processes)
    budget = property(lambda self: self.layout.budget)
    chunk_rows = property(lambda self: self.layout.chunk_rows)
    chunk_cap = property(lambda self: self.layout.chunk_cap)
    num_chunks = property(lambda self: self.layout.num_chunks)

    def describe(self) -> dict[str, Any]:
        """The facts of this data path, for the operator log only: where the rows were, the
        chunk, its cap, the budget, the passes (those run by the host kernel apart). They depend
        on the row count (the path is chosen by N x D x itemsize against the budget, the chunk
        by N and the store's chunk), so they are never part of a published report
        (docs/architecture.md, "The whole artefact")."""
        return {
            "rows": self.kind,
            "dtype": self.dtype.name,
            "chunk_rows": self.chunk_rows,
            "chunk_rows_max": self.chunk_cap,
            "memory_budget_bytes": self.budget,
            "devices": len(jax.devices()),
            "processes": self.processes,
            "passes": self.shared.passes.total,
            "host_kernel_passes": self.shared.passes.host,
            "store_kept_in_memory": isinstance(self.source, StoreSource) and self.source.cache,
        }

    def with_part(self, part: Part | None) -> Rows:
        """The same rows, restricted to one side of a hash split (masks, no copy)."""
        return dataclasses.replace(self, part=part)

    # ------------------------------------------------------------------ passes
    def sum(
        self,
        stat: Statistic,
        args: Any = None,
        preprocessing: Preprocessing = IDENTITY,
        *,
        weights: jax.Array | None = None,
        keep: bool = False,
    ) -> Any:
        """``sum over rows of stat`` (module docstring); ``weights`` [local rows] multiplies each
        row's mask (e.g. a Poisson sample). Raises ValueError naming non-finite rows.

        ``keep`` (a sum without ``args`` or ``weights``): the exact sum is also kept for the next
        ``sum`` on these rows, which returns that same array, without a pass, when it asks for the
        same statistic with the same preprocessing object (``_Kept.serves``); any other sum, or
        ``drop_kept``, drops it. A view (``with_part``, ``mapped``) keeps its own, none at first;
        like every sum, the kept one leaves the fit only through its caller's noisy release."""
        kept = self._kept.pop() if self._kept else None
        if kept is not None and kept.serves(stat, args, preprocessing, weights):
            return kept.value
        if keep and (args is not None or weights is not None):
            raise ValueError("only a sum without args or weights is kept for the next pass")
        plain = self._plain() and not _host_pass.traced(weights)
        if _host_pass.serves(stat, args, preprocessing, plain=plain):
            result, bad = self._host_sum(stat, args, preprocessing, weights)
            self.shared.passes.host += 1
        else:
            result, bad = self._device_sum(stat, args, preprocessing, weights)
        self.shared.passes.total += 1
        if not self.shared.validated:
            if bad > 0:
                raise nonfinite_error(self._find_bad_rows(preprocessing))
            self.shared.validated = True
        result = jax.tree_util.tree_map(_local, result)
        if keep:
            self._kept.append(_Kept(stat, preprocessing, result))
        return result

    def drop_kept(self) -> None:
        """Drop the sum kept by ``sum(keep=True)`` if no pass has taken it (the end of a fit)."""
        self._kept.clear()

    def validate(self, preprocessing: Preprocessing = IDENTITY) -> None:
        """One pass that only checks the features (a ValueError names non-finite rows)."""
        if not self.shared.validated:
            self.sum(Nothing(), None, preprocessing)

    def preprocessed(self, preprocessing: Preprocessing = IDENTITY) -> jax.Array | None:
        """The preprocessed rows ``x'`` [local rows, D] as one float32 device array, computed by
        the same compiled pass as every statistic (so every preprocessing applies), when twice
        their size fits the budget in one process and the view is whole; else None (stream
        them). Validates the rows first (a ValueError names non-finite rows). For the
        non-private ceiling only: a private method never sees rows outside a statistic."""
        if self.processes > 1 or self.part is not None:
            return None
        if 2 * self.max_local_rows * self.dim * 4 > self.budget:
            return None
        self.validate(preprocessing)
        mean, static, transform = self._pass_map(preprocessing)
        mean, transform = self._replicated((mean, transform))
        run = functools.partial(chunk_pass, stat=PreprocessedRows(), static=static, part=None)
        parts = self._for_each_chunk(
            lambda start, x, y, valid: run(x, y, valid, None, mean, transform, None)[0]
        )
        return jnp.concatenate(parts)[: self.local_rows]

    def mapped(self, transform: jax.Array, preprocessing: Preprocessing) -> Rows:
        """The rows ``x -> preprocess(x) A`` (float32; DP-FC's whitened rows): materialised once
        when they fit the budget (one process), else mapped chunk by chunk in every pass."""
        if not self.shared.validated:
            raise RuntimeError("map rows only after a pass has validated them")
        dim = int(transform.shape[1])
        if self.max_local_rows * dim * 4 * 2 > self.budget or self.processes > 1:
            return dataclasses.replace(
                self, dim=dim, transform=transform, transform_pre=preprocessing
            )
        mean = self._replicated(preprocessing.device_params())
        A = self._replicated(transform)
        static = preprocessing.static
        parts = self._for_each_chunk(
            lambda start, x, y, valid: mapped_rows(x, y, valid, mean, A, static=static, part=None)
        )
        rows = jnp.concatenate(parts)[: self.local_rows]
        layout = self.layout.rechunk(
            row_bytes=4 * dim,
            num_classes=self.num_classes,
            dim=dim,
            performance=self.performance,
            resident=True,
        )
        placed = _device_rows(rows, layout)
        return Rows(
            labels=self.labels,
            dim=dim,
            dtype=np.dtype(np.float32),
            num_classes=self.num_classes,
            performance=self.performance,
            layout=layout,
            kind="device",
            mesh=self.mesh,
            shared=_Shared(validated=True, passes=self.shared.passes),
            **placed,
        )

    # ------------------------------------------------------------------ the host kernel
    def _plain(self) -> bool:
        """Rows a host kernel may read: host rows, one CPU device, one process, unmapped, whole."""
        return (
            self.source is not None
            and self.mesh is None
            and self.processes == 1
            and self.transform is None
            and self.part is None
            and on_cpu()
        )

    def _host_sum(self, stat, args, preprocessing, weights) -> tuple[Any, int]:
        whole = self._whole_for_kernel()
        w = None if weights is None else np.asarray(weights, np.float32)
        if whole is not None:  # every thread on the rows in place
            acc = _host_pass.accumulator(stat, args, preprocessing, self.dim, None)
            acc.add(whole, self.labels, w)
            return acc.result()
        blocks = max(1, _host_pass.threads() - 1)  # a core for the reader thread
        acc = _host_pass.accumulator(stat, args, preprocessing, self.dim, blocks)
        for start, stop, x in self._host_chunks():
            acc.add(x, self.labels[start:stop], None if w is None else w[start:stop])
        return acc.result()

    def _whole_for_kernel(self) -> np.ndarray | None:
        """The rows in place in the host kernel's dtype, else None."""
        whole = self.source.whole()
        want = _host_pass.kernel_dtype(self.source.stored)
        return whole if whole is not None and whole.dtype == want else None

    def _host_chunks(self):
        """``(start, stop, rows)`` over this process's rows in the host kernel's dtype: the whole
        array at once when it is held in place, else chunk by chunk from the reader thread."""
        source, n = self.source, self.local_rows
        whole = self._whole_for_kernel()
        if whole is not None:
            yield 0, n, whole
            return
        want = _host_pass.kernel_dtype(source.stored)
        rows = self.chunk_rows
        num = -(-n // rows)
        scratch = self._scratch((rows, self.dim), source.stored, want)

        def prepare(j: int, buf: np.ndarray) -> np.ndarray:
            start, stop = j * rows, min(n, (j + 1) * rows)
            return _rows_as(source, start, stop, buf, scratch, pad=False, aligned=False)

        try:
            for j, x, release in staged(prepare, num, (rows, self.dim), want, self.shared.staging):
                release(None)
                yield j * rows, min(n, (j + 1) * rows), x
        finally:
            source.close()

    # ------------------------------------------------------------------ the compiled pass
    def _pass_map(self, preprocessing: Preprocessing) -> tuple[Any, tuple, jax.Array | None]:
        """``(params, static, transform)`` of the compiled pass: ``preprocessing``'s map, or on
        mapped rows the parent's preprocessing, then A."""
        if self.transform is None:
            return preprocessing.device_params(), preprocessing.static, None
        pre = self.transform_pre
        return pre.device_params(), pre.static, self.transform

    def _device_sum(self, stat, args, preprocessing, weights) -> tuple[Any, int]:
        mean, static, transform = self._pass_map(preprocessing)
        part = None if self.part is None else dataclasses.astuple(self.part)
        args, mean, transform = self._replicated((args, mean, transform))
        if weights is not None:
            padded = self.num_chunks * self.chunk_rows
            weights = jnp.pad(weights.astype(jnp.float32), (0, padded - weights.shape[0]))
        staged_stat = stat.scatters()
        run = functools.partial(
            chunk_pass, stat=Stage1(stat) if staged_stat else stat, static=static, part=part
        )
        rows, K = self.chunk_rows, self.num_classes

        def one(start, x, y, valid):
            w = None if weights is None else self._place_rows(weights[start : start + rows])
            out, bad = run(x, y, valid, w, mean, transform, args)
            if staged_stat:  # the scatter as its own program (Statistic docstring)
                Z, ids, rest = out
                out = (scatter(Z, ids, num_segments=K), rest)
            return out, bad

        result, bad = self._for_each_chunk(one, accumulate=True)
        if staged_stat:
            result = stage2(result[0], result[1], stat=stat)
        return result, (0 if self.shared.validated else float(_local(bad)))

    def _for_each_chunk(self, fn, accumulate: bool = False) -> Any:
        """``fn(start, x, y, valid)`` on every device chunk (``start``: local row index); the
        outputs' sum when ``accumulate``, else their list. A staging buffer is refilled only
        once the output that last read it (in this pass or an earlier one) is ready."""
        outputs: list[Any] = []
        total = None
        chunks = self._device_chunks() if self.device_x is not None else self._staged_chunks()
        for start, x, y, valid, release in chunks:
            out = fn(start, x, y, valid)
            release(out)
            if accumulate:
                total = out if total is None else tree_add(total, out)
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
            yield (start, *self._place(x, start, stop), _no_release)

    def _staged_chunks(self):
        rows, n, source = self.chunk_rows, self.local_rows, self.source
        shape = (rows, self.dim)
        if self.num_chunks == 1:  # stage it once; later passes reuse the device copy
            if "chunk" not in self.shared.resident:
                buf = aligned_empty(shape, self.dtype)
                scratch = self._scratch(shape, source.stored, self.dtype)
                host = _rows_as(source, 0, n, buf, scratch, pad=True, aligned=True)
                self.shared.resident["chunk"] = self._place(host, 0, n)
                source.close()
            yield (0, *self.shared.resident["chunk"], _no_release)
            return
        scratch = self._scratch(shape, source.stored, self.dtype)

        def prepare(j: int, buf: np.ndarray) -> np.ndarray:
            start, stop = j * rows, min(n, (j + 1) * rows)
            return _rows_as(source, start, stop, buf, scratch, pad=True, aligned=True)

        try:
            for j, host, release in staged(
                prepare, self.num_chunks, shape, self.dtype, self.shared.staging
            ):
                start, stop = j * rows, min(n, (j + 1) * rows)
                yield (start, *self._place(host, start, stop), release)
        finally:
            source.close()

    def _scratch(self, shape: tuple[int, int], stored: np.dtype, want: np.dtype) -> np.ndarray:
        """A buffer of the stored dtype for store rows read before their cast (else empty);
        used on the reader thread only, one chunk at a time."""
        if not isinstance(self.source, StoreSource) or stored == want:
            return np.empty((0, shape[1]), stored)
        key = ("scratch", shape, stored.str)
        if key not in self.shared.resident:
            self.shared.resident[key] = aligned_empty(shape, stored)
        return self.shared.resident[key]

    def _place(self, x: Any, start: int, stop: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Device arrays (row-sharded over the mesh, global over processes) for one chunk."""
        y = np.zeros(self.chunk_rows, np.int32)
        y[: max(0, stop - start)] = self.labels[start:stop]
        valid = np.zeros(self.chunk_rows, np.float32)
        valid[: max(0, stop - start)] = 1.0
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

    def _find_bad_rows(self, preprocessing: Preprocessing) -> np.ndarray:
        """Indices (in the whole split) of the rows holding NaN/inf, as the passes see them."""
        if self.device_x is None and self.mesh is None and self.processes == 1:
            flags = [
                np.flatnonzero(_host_pass.nonfinite(x)) + start
                for start, _, x in self._host_chunks()
            ]
            return np.concatenate(flags) + self.offset
        mean, static = preprocessing.device_params(), preprocessing.static
        flags = self._for_each_chunk(
            lambda start, x, y, valid: (start, bad_rows(x, valid, mean, static=static))
        )
        bad = [np.flatnonzero(np.asarray(_local(f))) + start + self.offset for start, f in flags]
        return np.concatenate(bad)


def _rows_as(
    source: Source,
    start: int,
    stop: int,
    buf: np.ndarray,
    scratch: np.ndarray,
    *,
    pad: bool,
    aligned: bool,
) -> np.ndarray:
    """Rows ``[start, stop)`` in ``buf``'s dtype: the source's own rows when they already are
    (C-contiguous, and 64-byte aligned when ``aligned``; ``pad``: a whole chunk of ``buf``'s
    rows), else cast into ``buf`` (with zero rows after them when ``pad``). A store split is read
    into ``buf`` when it holds the store's dtype, else into ``scratch`` first."""
    k = stop - start
    direct = isinstance(source, StoreSource) and source.stored == buf.dtype
    raw = source.rows_at(start, stop, buf if direct else scratch)
    usable = raw.dtype == buf.dtype and raw.flags.c_contiguous and (not pad or k == len(buf))
    if usable and (not aligned or is_aligned(raw)):
        return raw
    if raw.ctypes.data != buf.ctypes.data or raw.dtype != buf.dtype:
        with np.errstate(over="ignore", invalid="ignore"):
            np.copyto(buf[:k], raw, casting="unsafe")
    if not pad:
        return buf[:k]
    buf[k:] = 0
    return buf


def _device_rows(rows: jax.Array, layout: Layout) -> dict[str, Any]:
    """Where a device array's rows live: on one CPU device, its host view (used in place, as
    a host array is); elsewhere the device array."""
    traced = isinstance(rows, jax.core.Tracer)  # mapped under a transformation (the audit)
    if on_cpu() and layout.processes == 1 and mesh() is None and not traced:
        view = np.asarray(rows)
        return {"source": ArraySource(view, 0, view.shape[0])}
    return {"device_x": rows}


def _no_release(output: Any) -> None:
    del output


def _local(a: Any) -> Any:
    """A replicated result of several processes as a local array (the first addressable copy)."""
    if jax.process_count() > 1 and isinstance(a, jax.Array) and not a.is_fully_addressable:
        return a.addressable_data(0)
    return a


# ---------------------------------------------------------------------------------- open_rows
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
    total, dim = int(x.shape[0]), int(x.shape[1])
    y_all = np.asarray(labels) if labels is not None else None
    start, stop = process_share(total)
    y = check_labels(y_all, total, num_classes)[start:stop]
    dtype = device_dtype(x.dtype)
    the_mesh = mesh()
    single = jax.process_count() == 1 and the_mesh is None

    def rows(kind: str, resident: bool, **where) -> Rows:
        layout = Layout.plan(
            stop - start,
            row_bytes=dim * dtype.itemsize,
            num_classes=num_classes,
            performance=performance,
            resident=resident,
            dim=dim,
        )
        common = dict(labels=y, dim=dim, num_classes=num_classes, performance=performance)
        return Rows(
            dtype=dtype, layout=layout, kind=kind, offset=start, mesh=the_mesh, **common, **where
        )

    if isinstance(x, jax.Array) and jax.process_count() == 1:
        local = x if x.dtype in (dtype, np.float16, jnp.bfloat16) else x.astype(jnp.float32)
        if on_cpu() and single:  # the device is the host: the array's host view, in place
            return rows("device", True, source=ArraySource(np.asarray(local), 0, total))
        return rows("device", True, device_x=local if local.dtype == dtype else local.astype(dtype))
    x = np.asarray(x)
    source = ArraySource(x, start, stop)
    share_bytes = (stop - start) * dim * x.dtype.itemsize
    budget = device_budget(performance.max_device_bytes)
    in_place = source.whole() is not None and _host_pass.kernel_dtype(x.dtype) == x.dtype
    # on CPU the array already is where a pass reads it: in place it costs no memory, so only a
    # budget the caller set (max_device_bytes) sends it down the streamed path
    given = performance.max_device_bytes is not None
    if single and on_cpu() and in_place and (not given or share_bytes <= budget):
        return rows("host_in_place", True, source=source)
    if single and not on_cpu() and 2 * (stop - start) * dim * dtype.itemsize <= budget:
        dev = jax.device_put(np.asarray(x[start:stop], dtype=dtype))
        return rows("device", True, device_x=dev)
    return rows("host_streamed", False, source=source)


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
        hint = reader.chunk_rows_hint
    y = check_labels(y, stop - start, num_classes)
    stored = np.dtype(info.feature_dtype)
    dtype = device_dtype(stored)
    layout = Layout.plan(
        stop - start,
        row_bytes=info.dim * stored.itemsize,
        num_classes=num_classes,
        performance=performance,
        resident=False,
        hint=hint,
        dim=info.dim,
    )
    cache = on_cpu() and (stop - start) * info.dim * stored.itemsize <= layout.budget
    source = StoreSource(path, split, start, stop, stored, info.dim, cache=cache)
    return Rows(
        labels=y,
        dim=info.dim,
        dtype=dtype,
        num_classes=num_classes,
        performance=performance,
        layout=layout,
        kind="store_streamed",
        offset=start,
        source=source,
        mesh=mesh(),
    )
