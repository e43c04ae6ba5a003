"""Streaming full-batch throughput from an HDF5 feature store vs the raw read of the same file.

Writes a synthetic store of ``N x D`` float32 rows (``K`` classes), then times, each after a
warm-up pass that also fills the OS page cache, every read ``rows`` rows at a time (``--chunk-rows``
rounded down to a multiple of the store's HDF5 chunk rows, ``SplitReader.chunk_rows_hint``):

- ``raw read``: ``h5py`` reading ``features`` and ``labels`` chunk by chunk (fletcher32 checks
  included) into new arrays, nothing else: the reference for any streamed pass;
- ``SplitReader.read``: the store's reader, new arrays per chunk (``read``/``iter_chunks``);
- ``SplitReader.read_into``: the store's reader into two reused caller buffers (no allocation);
- ``streamed chunks``: iterating the streamed ``TrainData``'s preprocessed chunks, no kernel
  (where the time goes when the gradient pass is slower than the raw read);
- ``streamed clipped gradient``: one full-batch clipped-gradient sum as ``dp_gd`` computes it for
  data larger than the device (``private_head.data.load_train_data`` with ``max_device_bytes`` below
  the data size, then ``private_head.streaming.streamed_sum`` of ``clipped_gradient_sum``): reads
  each chunk on a background thread, normalises it, and runs the jitted kernel.

Throughput is feature bytes over seconds (GB/s, 1e9 bytes); each figure is the best of three
passes, the three readers' passes interleaved. ``X / raw`` near 1 means the pass is bound by
reading the file. ``--store-only`` skips the two ``private_head`` passes.
"""

from __future__ import annotations

import argparse
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


def streamed_data(path: str, num_classes: int) -> Any:
    """``TrainData`` that streams the store's train split (device budget: half the data)."""
    from feature_extract.store import split_info
    from private_head.config import FitConfig
    from private_head.data import load_train_data

    info = split_info(path, "train")
    config = FitConfig(
        epsilon=1.0, delta=1e-5, method="dp_gd", max_device_bytes=info.num_rows * info.dim * 2
    )
    data = load_train_data(f"{path}:train", config=config, num_classes=num_classes)
    if data.source is None:
        raise RuntimeError("the store was loaded into memory; it should have been streamed")
    return data


def streamed_read_seconds(data: Any, rows: int) -> float:
    """Seconds to iterate the preprocessed chunks (read + normalise + device copy), no kernel."""
    import jax

    start = time.perf_counter()
    for X, _ in data.iter_chunks(rows):
        last = X
    jax.block_until_ready(last)
    return time.perf_counter() - start


def streamed_gradient_seconds(data: Any, rows: int) -> float:
    """Seconds of one streamed full-batch clipped-gradient sum (what one ``dp_gd`` step sums)."""
    import jax
    import jax.numpy as jnp

    from private_head.kernel import clipped_gradient_sum
    from private_head.streaming import streamed_sum

    W = jnp.full((data.dim, data.num_classes), 0.01, jnp.float32)
    b = jnp.zeros(data.num_classes, jnp.float32)

    def chunk_sum(X, y, mask):
        return clipped_gradient_sum(W, b, X, y, 1.0, mask=mask)

    start = time.perf_counter()
    jax.block_until_ready(streamed_sum(data, chunk_sum, rows))
    return time.perf_counter() - start


def measure(
    num_rows: int,
    dim: int,
    num_classes: int,
    rows: int,
    directory: str | None = None,
    store_only: bool = False,
) -> dict[str, Any]:
    """Write the store, warm up, and time the passes (best of three, or of two for the
    private_head passes)."""
    gigabytes = num_rows * dim * 4 / 1e9
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = os.path.join(tmp, "speed.h5")
        write_random_store(path, num_rows, dim, num_classes)
        rows = aligned_rows(path, rows)
        raw_read_seconds(path, rows)  # warms the page cache
        best = best_interleaved(
            {
                "raw_read": lambda: raw_read_seconds(path, rows),
                "reader_read": lambda: reader_read_seconds(path, rows),
                "read_into": lambda: read_into_seconds(path, rows),
            }
        )
        result: dict[str, Any] = {
            "shape": f"{num_rows} x {dim} float32, {num_classes} classes",
            "file_bytes": os.path.getsize(path),
            "chunk_rows": rows,
        }
        for name, seconds in best.items():
            result[f"{name}_s"], result[f"{name}_gb_s"] = seconds, gigabytes / seconds
        result["reader_read_over_raw"] = best["raw_read"] / best["reader_read"]
        result["read_into_over_raw"] = best["raw_read"] / best["read_into"]
        if not store_only:
            data = streamed_data(path, num_classes)
            read = min(streamed_read_seconds(data, rows) for _ in range(2))
            streamed_gradient_seconds(data, rows)  # compiles
            streamed = min(streamed_gradient_seconds(data, rows) for _ in range(2))
            result.update(
                streamed_read_s=read,
                streamed_read_gb_s=gigabytes / read,
                streamed_gradient_s=streamed,
                streamed_gradient_gb_s=gigabytes / streamed,
                streamed_over_raw=best["raw_read"] / streamed,
            )
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.store_speed",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--rows", type=int, default=100_000, help="N")
    p.add_argument("--dim", type=int, default=256, help="D")
    p.add_argument("--classes", type=int, default=100, help="K")
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=16384,
        help="rows per read, rounded down to a multiple of the store's chunk rows",
    )
    p.add_argument("--dir", help="where to write the temporary store (default: system temp)")
    p.add_argument("--store-only", action="store_true", help="skip the two private_head passes")
    args = p.parse_args(argv)
    r = measure(args.rows, args.dim, args.classes, args.chunk_rows, args.dir, args.store_only)
    line = (
        f"store streaming: {r['shape']}, {r['chunk_rows']} rows per read: raw h5py read "
        f"{r['raw_read_gb_s']:.3f} GB/s, SplitReader.read {r['reader_read_gb_s']:.3f} GB/s "
        f"({r['reader_read_over_raw']:.2f} of raw), SplitReader.read_into "
        f"{r['read_into_gb_s']:.3f} GB/s ({r['read_into_over_raw']:.2f} of raw)"
    )
    if not args.store_only:
        line += (
            f", streamed chunks only {r['streamed_read_gb_s']:.3f} GB/s,"
            f" streamed clipped gradient {r['streamed_gradient_gb_s']:.3f} GB/s "
            f"(ratio {r['streamed_over_raw']:.2f})"
        )
    print(line)
    return r


if __name__ == "__main__":
    main()
