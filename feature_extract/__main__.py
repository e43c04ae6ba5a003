"""Command line: ``python -m feature_extract --data digits --model pixels --out features/x.h5``.

Errors (bad arguments, missing data or weights, a store written by another run) print one line and
exit with status 2; an interrupted run exits 130 and resumes when the same command is run again.
"""

from __future__ import annotations

import argparse
import sys

from feature_extract import multihost
from feature_extract.extraction import COMPUTE_DTYPES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m feature_extract",
        description="Cache the embeddings of a frozen backbone on a dataset in an HDF5 store. "
        "Run the same command again to resume a killed run.",
    )
    p.add_argument("--data", required=True, help="'digits' (bundled, offline) or a TFDS name")
    p.add_argument("--model", required=True, help="registered backbone (--list-models)")
    p.add_argument("--out", help="store path (default: features/DATA-MODEL.h5)")
    p.add_argument(
        "--splits",
        default="train,test",
        help="comma list of splits; name=spec for slices, e.g. "
        "train=train[:90%%],val=train[90%%:] (default: train,test)",
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--dtype",
        default="bfloat16",
        choices=sorted(COMPUTE_DTYPES),
        help="compute dtype (default bfloat16)",
    )
    p.add_argument(
        "--output-dtype",
        default="float32",
        choices=("float32", "float16"),
        help="stored feature dtype (default float32)",
    )
    p.add_argument("--checkpoint", help="local .npz (optionally FILE.npz:key) for the model")
    p.add_argument(
        "--init-random",
        action="store_true",
        help="random weights (seed --seed) instead of a checkpoint: for testing",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --init-random")
    p.add_argument("--resolution", type=int, help="input size instead of the model's default")
    p.add_argument("--preprocessing", help="override the model's preprocessing string")
    p.add_argument("--overwrite", action="store_true", help="replace complete splits")
    p.add_argument(
        "--skip-complete",
        action="store_true",
        help="exit 0 without work when every split is already complete "
        "(same backbone, data and preprocessing); for make",
    )
    p.add_argument("--data-dir", help="TFDS data directory")
    p.add_argument("--cache-dir", help="checkpoint download cache (default $DPLP_CACHE)")
    p.add_argument("--no-download", action="store_true", help="never download datasets or weights")
    p.add_argument("--workers", type=int, help="decoding threads (default: usable CPUs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    multihost.add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from feature_extract.extraction import extract

    out = args.out or f"features/{args.data}-{args.model}.h5"
    try:
        # Several processes: each extracts its share into a shard, process 0 assembles OUT.
        run = multihost.extract_sharded if multihost.initialize_from_args(args) else extract
        infos = run(
            args.data,
            args.model,
            out,
            splits=args.splits,
            batch_size=args.batch_size,
            dtype=args.dtype,
            output_dtype=args.output_dtype,
            checkpoint=args.checkpoint,
            overwrite=args.overwrite,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            download=not args.no_download,
            init_random=args.init_random,
            seed=args.seed,
            resolution=args.resolution,
            preprocessing=args.preprocessing,
            workers=args.workers,
            progress=not args.no_progress,
            skip_complete=args.skip_complete,
        )
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:  # Store/Dataset/PreprocessError are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, info in infos.items():
        print(
            f"{info.path}:{name}  {info.num_rows} rows x {info.dim} ({info.feature_dtype}), "
            f"{info.num_classes} classes, backbone {info.attrs.get('backbone')}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
