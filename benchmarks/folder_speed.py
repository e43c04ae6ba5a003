"""Throughput of the image-folder reader: ``python -m benchmarks.folder_speed``.

Writes a folder of ``--images`` JPEGs (``--size`` px, ``--classes`` class folders; smooth random
colour fields with noise, quality 90) and measures, in one process:

- ``listing``: ``open_source("folder:DIR", "all")``: one ``os.scandir`` per folder, the hash
  order; files/s;
- ``check``: the ``--skip-unreadable`` pass (``decoding.check_image``: JPEGs at 1/8 scale) on the
  worker threads; images/s;
- ``read + decode``: the extraction pipeline's batches (``pipeline.batches``: read, Pillow decode,
  ``resize(28)``) on the worker threads, no model; images/s;
- ``end to end``: ``extract(folder, "scatnet")`` into a store, compilation included; images/s.

Each figure is the best of ``--repeats`` runs (the page cache is warm after the first). Bad
input is one line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

from benchmarks.cli import Parser, fail, guard, positive_int


def write_folder(root: str, images: int, size: int, classes: int, seed: int = 0) -> None:
    """``images`` JPEGs spread over ``classes`` class folders of ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = max(2, size // 16)
    for i in range(images):
        folder = os.path.join(root, f"class{i % classes:03d}")
        os.makedirs(folder, exist_ok=True)
        field = rng.uniform(0, 255, (coarse, coarse, 3)).astype(np.uint8)
        image = Image.fromarray(field).resize((size, size), Image.BILINEAR)
        noisy = np.asarray(image, np.int16) + rng.integers(-8, 9, (size, size, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"{i:07d}.jpg"), quality=90
        )


def best_rate(count: int, run, repeats: int) -> float:
    """``count`` divided by the fastest of ``repeats`` calls of ``run()``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return count / min(times)


def measure(root: str, workers: int | None, repeats: int) -> dict[str, float]:
    """The four rates of the module docstring, on the folder ``root``."""
    from feature_extract import extract, pipeline, preprocess
    from feature_extract.datasets import open_source
    from feature_extract.image_sources import find_unreadable

    spec = f"folder:{root}"
    source = open_source(spec, "all")
    n = len(source)
    paths = [os.path.join(root, key) for key in source.keys]
    host = preprocess.build("decode|resize(28)")

    def read() -> None:
        for _ in pipeline.batches(source, host, 256, workers=workers):
            pass

    def end_to_end() -> None:
        with tempfile.TemporaryDirectory() as out:
            extract(
                spec, "scatnet", os.path.join(out, "s.h5"), splits="all", progress=False,
                workers=workers,
            )  # fmt: skip

    return {
        "listing (files/s)": best_rate(n, lambda: open_source(spec, "all"), repeats),
        "check, --skip-unreadable (images/s)": best_rate(
            n, lambda: find_unreadable(paths, workers=workers), repeats
        ),
        "read + decode + resize(28) (images/s)": best_rate(n, read, repeats),
        "end to end, extract(scatnet) (images/s)": best_rate(n, end_to_end, repeats),
    }


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m benchmarks.folder_speed", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=positive_int, default=4000, help="JPEGs to write")
    p.add_argument("--size", type=positive_int, default=128, help="their side, px")
    p.add_argument("--classes", type=positive_int, default=10, help="class folders")
    p.add_argument("--workers", type=positive_int, help="decoding threads (default: all CPUs)")
    p.add_argument("--repeats", type=positive_int, default=2, help="runs per figure (best)")
    p.add_argument("--dir", help="folder to write the images in (default: a temporary one)")
    args = p.parse_args(argv)
    from feature_extract.pipeline import default_workers

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or os.path.join(tmp, "images")
        if os.path.exists(root) and os.listdir(root):
            fail(f"{root} is not empty; give an empty or new folder")
        start = time.perf_counter()
        write_folder(root, args.images, args.size, args.classes)
        print(
            f"wrote {args.images} JPEGs of {args.size}x{args.size} px in {args.classes} class "
            f"folders ({time.perf_counter() - start:.1f} s); {args.workers or default_workers()} "
            f"worker threads, {os.cpu_count()} CPUs"
        )
        for name, rate in measure(root, args.workers, args.repeats).items():
            print(f"{name:42s} {rate:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(guard(main))
