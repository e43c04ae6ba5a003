"""Extraction speed: images/second of backbones, model only and end to end.

    python -m benchmarks.extract_speed                       # ViT-B/16 at 224 px (tiny on CPU)
    python -m benchmarks.extract_speed --model vit-ti16-i21k --batch-size 512 --steps 50
    python -m benchmarks.extract_speed --model vit-b16-i21k,timm:vit_base_patch16_clip_224.openai

``--model`` takes registry names (timm's as ``timm:<model>.<tag>``), comma-separated: each is
measured in turn, in one process. Two rows per model, both with random-initialised weights
(speed does not depend on their values) and one compiled function per row (compilation is
excluded by a warm-up):

- ``model only``: synthetic device-resident uint8 images ``[B, R, R, 3]``, ``steps`` forward
  passes (the trailing ``value_range`` of the preprocessing included, as it runs on device);
  images/s = ``B * steps / seconds`` after ``block_until_ready``.
- ``end to end``: rows of a dataset (default ``digits``, upscaled to the model's resolution by
  its preprocessing) through the threaded decode/preprocess pipeline, host->device transfer,
  the forward pass and the feature store writes, the way ``feature_extract.extract`` runs it.

Reference (issue 4): a compiled bf16 PyTorch ViT-B/16 runs at about 11,000 images/s on one H100.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import jax
import numpy as np

from feature_extract import datasets, load_backbone
from feature_extract.extraction import COMPUTE_DTYPES, Extractor, plan_split, run_split


def device_name() -> str:
    """The accelerator in words, e.g. ``1 x NVIDIA H100 80GB HBM3 (gpu)``."""
    devices = jax.local_devices()
    return f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})"


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def model_only(extractor: Extractor, resolution: int, batch_size: int, steps: int) -> float:
    """Images/second of the compiled forward pass on device-resident random images."""
    images = np.random.default_rng(0).integers(0, 256, (batch_size, resolution, resolution, 3))
    images = extractor.put(images.astype(np.uint8))
    extractor.apply(images).block_until_ready()  # compile
    start = time.perf_counter()
    for _ in range(steps):
        out = extractor.apply(images)
    out.block_until_ready()
    return batch_size * steps / (time.perf_counter() - start)


def end_to_end(
    extractor: Extractor, data: str, batch_size: int, steps: int, workers: int | None, dtype: str
) -> tuple[float, int]:
    """(images/second, rows) of the full extraction loop over ``batch_size * steps`` rows."""
    source = datasets.open_source(data, "train", download=False)
    rows = min(len(source), batch_size * steps)
    backbone = extractor.backbone
    spec = extractor.preprocessing
    with tempfile.TemporaryDirectory() as tmp:

        def run(name: str, stop: int) -> float:
            job = plan_split(
                source,
                name,
                backbone,
                spec,
                output_dtype="float32",
                compute_dtype=dtype,
                row_range=(0, stop),
            )
            start = time.perf_counter()
            run_split(
                job,
                extractor,
                os.path.join(tmp, f"{name}.h5"),
                batch_size=batch_size,
                workers=workers,
                progress=False,
            )
            return time.perf_counter() - start

        run("warmup", min(rows, batch_size))  # compiles the batch shape
        return rows / run("timed", rows), rows


def measure(model: str, args: Any) -> list[dict]:
    """The two rows (model only, end to end) of one backbone."""
    backbone = load_backbone(model, init_random=True, dtype=COMPUTE_DTYPES[args.dtype])
    extractor = Extractor(backbone)
    batch = extractor.round_batch_size(args.batch_size)
    resolution = backbone.resolution or 224
    family = backbone.spec.family if backbone.spec else ""
    common = {"model": model, "family": family, "dim": backbone.feature_dim, "batch": batch}
    only = model_only(extractor, resolution, batch, args.steps)
    rate, rows = end_to_end(extractor, args.data, batch, args.steps, args.workers, args.dtype)
    return [
        {
            "what": f"{model}: model only, synthetic {resolution}px",
            "kind": "model only",
            **common,
            "rows": batch * args.steps,
            "images_per_s": only,
        },
        {
            "what": f"{model}: end to end from {args.data} (decode, resize, store)",
            "kind": "end to end",
            **common,
            "rows": rows,
            "images_per_s": rate,
        },
    ]


def main(argv: list[str] | None = None) -> list[dict]:
    """Run both measurements for every ``--model``, print a table, and return its rows."""
    cpu = _on_cpu()
    from benchmarks.cli import Parser, positive_int

    p = Parser(prog="python -m benchmarks.extract_speed", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", default="vit-b16-i21k", help="backbones, comma-separated (random weights)"
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=4 if cpu else 256, help="images per batch"
    )
    p.add_argument(
        "--steps", type=positive_int, default=2 if cpu else 20, help="timed batches, model only"
    )
    p.add_argument(
        "--dtype",
        default="float32" if cpu else "bfloat16",
        choices=sorted(COMPUTE_DTYPES),
        help="compute dtype (CPUs emulate bfloat16)",
    )
    p.add_argument("--data", default="digits", help="dataset of the end-to-end row")
    p.add_argument("--workers", type=positive_int, help="decoding threads (unset: usable CPUs)")
    args = p.parse_args(argv)

    results = [row for model in args.model.split(",") for row in measure(model.strip(), args)]
    print(
        f"extraction speed: {args.dtype}, batch {results[0]['batch']}, on {device_name()}, "
        f"jax {jax.__version__}"
    )
    width = max(len(r["model"]) for r in results)
    print(f"{'model':<{width}} {'measurement':<11} {'dim':>5} {'images':>7} {'images/s':>9}")
    for r in results:
        print(
            f"{r['model']:<{width}} {r['kind']:<11} {r['dim']:>5} {r['rows']:>7d} "
            f"{r['images_per_s']:>9.2f}"
        )
    print(f"end to end: {args.data} through decode, resize, transfer, forward and store writes")
    return results


if __name__ == "__main__":
    from benchmarks.cli import guard

    raise SystemExit(guard(main))
