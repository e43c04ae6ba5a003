"""Streaming full-batch throughput from an HDF5 feature store vs the raw read of the same file.

Writes a synthetic store of ``N x D`` float32 rows (``K`` classes), then times, each after a
warm-up pass that also fills the OS page cache, every read ``rows`` rows at a time (``--chunk-rows``
rounded down to a multiple of the store's HDF5 chunk rows, ``SplitReader.chunk_rows_hint``):

- ``raw read``: ``h5py`` reading ``features`` and ``labels`` chunk by chunk (fletcher32 checks
  included) into new arrays, nothing else: the reference for any streamed pass;
- ``SplitReader.read``: the store's reader, new arrays per chunk (``read``/``iter_chunks``);
- ``SplitReader.read_into``: the store's reader into two reused caller buffers (no allocation);
- the three streamed passes of ``private_head`` over the store (``open_rows("file.h5:train",
  performance=Performance(chunk_rows=rows))``, the path every ``fit`` on a store takes: each chunk
  is read on a background thread into a reused staging buffer while the device works on the
  previous one; ``Rows.sum`` with ``Preprocessing("normalize", 1.0)``, fit's default):

  - ``streamed pass without a statistic`` (``_statistics.Nothing``): read, copy to the device and
    the row norms only (where the time goes when a gradient pass is slower than the raw read);
  - ``streamed single-step pass`` (``_statistics.ZeroInitSums``): the clipped gradient sums at
    W = 0, what ``single_step`` (and step 0 of ``dp_gd``) computes: no forward matmul;
  - ``streamed general gradient pass`` (``_statistics.GradientSums`` at a nonzero W): one
    full-batch clipped-gradient sum, what every later ``dp_gd`` step computes.

Throughput is feature bytes over seconds (GB/s, 1e9 bytes); each figure is the best of three
passes, every pass interleaved with the others (so a slow spell of a shared machine does not
fall on one of them only), each private_head pass compiled first. ``X / raw`` near 1 means the
pass is bound by reading the file. ``--store-only`` skips the ``private_head`` passes.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np


def write_random_store(path: str, num_rows: int, dim: int, num_classes: int, seed: int = 0) -> None:
    """A complete train split of Gaussian rows, written in 64k-row appends."""
    from feature_extract.store import SplitWriter

    rng = np.random.default_rng(seed)
    writer = SplitWriter(
        path,
        "train",
        dim=dim,
        total_rows=num_rows,
        num_classes=num_classes,
        attrs={"dataset": "speed", "backbone": "random"},
        overwrite=True,
    )
    for start in range(0, num_rows, 65536):
        n = min(65536, num_rows - start)
        writer.append(
            rng.standard_normal((n, dim), dtype=np.float32),
            rng.integers(0, num_classes, n, dtype=np.int32),
            np.arange(start, start + n, dtype=np.int64),
        )
    writer.finish()


def raw_read_seconds(path: str, rows: int) -> float:
    """Seconds to read every feature and label chunk of ``path``'s train split with h5py."""
    import h5py

    start = time.perf_counter()
    with h5py.File(path, "r") as f:
        features, labels = f["train"]["features"], f["train"]["labels"]
        for lo in range(0, features.shape[0], rows):
            features[lo : lo + rows]
            labels[lo : lo + rows]
    return time.perf_counter() - start


def aligned_rows(path: str, rows: int) -> int:
    """``rows`` rounded down to a multiple of the store's HDF5 chunk rows (at least one chunk)."""
    from feature_extract.store import SplitReader

    with SplitReader(path, "train") as reader:
        hint = reader.chunk_rows_hint
    return max(hint, rows // hint * hint)


def reader_read_seconds(path: str, rows: int) -> float:
    """Seconds to read every chunk with ``SplitReader.read`` (new arrays per chunk)."""
    from feature_extract.store import SplitReader

    start = time.perf_counter()
    with SplitReader(path, "train") as reader:
        for lo in range(0, reader.info.num_rows, rows):
            reader.read(lo, lo + rows)
    return time.perf_counter() - start


def read_into_seconds(path: str, rows: int) -> float:
    """Seconds to read every chunk with ``SplitReader.read_into`` into two reused buffers."""
    from feature_extract.store import SplitReader

    start = time.perf_counter()
    with SplitReader(path, "train") as reader:
        features = np.empty((rows, reader.info.dim), reader.info.feature_dtype)
        labels = np.empty(rows, np.int32)
        for lo in range(0, reader.info.num_rows, rows):
            reader.read_into(lo, lo + rows, features, labels)
    return time.perf_counter() - start


def best_interleaved(passes: dict[str, Any], repeats: int = 3) -> dict[str, float]:
    """Best seconds of each ``name -> fn()`` over ``repeats`` rounds, one call of each per round
    (so a slow spell of a shared machine does not fall on one reader only)."""
    best = {name: float("inf") for name in passes}
    for _ in range(repeats):
        for name, fn in passes.items():
            best[name] = min(best[name], fn())
    return best


def streamed_rows(path: str, num_classes: int, rows: int) -> Any:
    """The store's train split as ``private_head._rows.Rows``, streamed from disk in ``rows``-row
    chunks (``Performance(chunk_rows=rows)``): the path every ``fit`` on a store larger than its
    memory budget takes (a budget of one byte: the split is never kept in memory)."""
    from private_head import Performance
    from private_head._rows import open_rows

    data = open_rows(
        f"{path}:train",
        num_classes=num_classes,
        feature_norm=1.0,
        performance=Performance(chunk_rows=rows, max_device_bytes=1),
    )
    if data.kind != "store_streamed" or data.describe()["store_kept_in_memory"]:
        raise RuntimeError(f"the store should have been streamed, got rows of kind {data.kind}")
    return data


NORMALIZE = ("normalize", 1.0)  # fit's default preprocessing: every row scaled to norm 1


def streamed_passes(data: Any, num_classes: int, dim: int) -> dict[str, Any]:
    """``name -> fn()`` timing one streamed ``Rows.sum`` pass each (module docstring)."""
    import jax
    import jax.numpy as jnp

    from private_head._preprocessing import Preprocessing
    from private_head._statistics import GradientSums, Nothing, ZeroInitSums

    pre = Preprocessing(*NORMALIZE)
    W = jnp.full((dim, num_classes), 0.01, jnp.float32)  # away from zero: a general step
    b = jnp.zeros(num_classes, jnp.float32)
    general = (GradientSums("softmax", False), ({"W": W}, b, 1.0))
    zero_init = (ZeroInitSums(num_classes, "softmax", False, 0.0), 1.0)

    def seconds(stat: Any, args: Any) -> float:
        start = time.perf_counter()
        jax.block_until_ready(data.sum(stat, args, pre))
        return time.perf_counter() - start

    passes = {
        "streamed_read": lambda: seconds(Nothing(), None),
        "streamed_single_step": lambda: seconds(*zero_init),
        "streamed_gradient": lambda: seconds(*general),
    }
    for fn in passes.values():  # compile each pass (and validate the rows) once
        fn()
    return passes


def measure(
    num_rows: int,
    dim: int,
    num_classes: int,
    rows: int,
    directory: str | None = None,
    store_only: bool = False,
) -> dict[str, Any]:
    """Write the store, warm up, and time every pass (best of three, interleaved)."""
    gigabytes = num_rows * dim * 4 / 1e9
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = os.path.join(tmp, "speed.h5")
        write_random_store(path, num_rows, dim, num_classes)
        rows = aligned_rows(path, rows)
        raw_read_seconds(path, rows)  # warms the page cache
        passes = {
            "raw_read": lambda: raw_read_seconds(path, rows),
            "reader_read": lambda: reader_read_seconds(path, rows),
            "read_into": lambda: read_into_seconds(path, rows),
        }
        if not store_only:
            passes |= streamed_passes(streamed_rows(path, num_classes, rows), num_classes, dim)
        best = best_interleaved(passes)
        result: dict[str, Any] = {
            "shape": f"{num_rows} x {dim} float32, {num_classes} classes",
            "file_bytes": os.path.getsize(path),
            "chunk_rows": rows,
        }
        for name, seconds in best.items():
            result[f"{name}_s"], result[f"{name}_gb_s"] = seconds, gigabytes / seconds
        for name in best:
            if name != "raw_read":
                result[f"{name}_over_raw"] = best["raw_read"] / best[name]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from benchmarks.cli import Parser, positive_int

    p = Parser(prog="python -m benchmarks.store_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=positive_int, default=100_000, help="N")
    p.add_argument("--dim", type=positive_int, default=256, help="D")
    p.add_argument("--classes", type=int, default=100, help="K (at least 2)")
    p.add_argument(
        "--chunk-rows",
        type=positive_int,
        default=16384,
        help="rows per read, rounded down to a multiple of the store's chunk rows",
    )
    p.add_argument("--dir", help="where to write the temporary store (unset: the system's temp)")
    p.add_argument("--store-only", action="store_true", help="skip the private_head passes")
    args = p.parse_args(argv)
    if args.classes < 2:
        p.error(f"argument --classes: need at least 2 classes, got {args.classes}")
    r = measure(args.rows, args.dim, args.classes, args.chunk_rows, args.dir, args.store_only)
    line = (
        f"store streaming: {r['shape']}, {r['chunk_rows']} rows per read: raw h5py read "
        f"{r['raw_read_gb_s']:.3f} GB/s, SplitReader.read {r['reader_read_gb_s']:.3f} GB/s "
        f"({r['reader_read_over_raw']:.2f} of raw), SplitReader.read_into "
        f"{r['read_into_gb_s']:.3f} GB/s ({r['read_into_over_raw']:.2f} of raw)"
    )
    if not args.store_only:
        line += "".join(
            f", {text} {r[f'{name}_gb_s']:.3f} GB/s ({r[f'{name}_over_raw']:.2f} of raw)"
            for name, text in (
                ("streamed_read", "streamed pass without a statistic"),
                ("streamed_single_step", "streamed single-step pass (ZeroInitSums)"),
                ("streamed_gradient", "streamed general gradient pass (GradientSums)"),
            )
        )
    print(line)
    return r


if __name__ == "__main__":
    from benchmarks.cli import guard

    raise SystemExit(guard(main))
