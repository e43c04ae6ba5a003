"""``python -m private_head predict``: a saved head on new rows (docs/architecture.md, "The
command line").

    python -m private_head predict --head H.npz --features F.h5:test
    python -m private_head predict --head H.npz --features new.npy --out new.predictions.npy

Rows with labels (a store split, its ``test`` split unless one is named; a ``.npz`` with
labels; a ``.npy`` with ``--labels``) print the head's top-1/top-5 accuracy; rows without
labels write the predicted classes (int64 [N], ``.npy``) to ``--out``, by default
``<features stem>.predictions.npy`` beside the features, and ``--out`` with labels writes them
too. An existing output file is kept unless ``--overwrite``; the file is written whole or not
at all. Nothing here trains or reads private rows: the rows are the user's, the head is
already published. Bad input is one line ``error: ...`` and exit status 2, checked before JAX
is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from private_head._arguments import PROG, Parser, Split, read_split
from private_head._atomic import write_array_atomically
from private_head._data_files import split_spec


def predict_parser() -> Parser:
    p = Parser(
        prog=f"{PROG} predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--head", required=True, help="a head file (.npz or .h5) written by a run")
    p.add_argument(
        "--features",
        required=True,
        help="the rows: FILE.h5[:split] (default split: test), X.npy (with --labels for the "
        "accuracy) or F.npz[:split]",
    )
    p.add_argument("--labels", help="the labels (.npy) of a --features X.npy")
    p.add_argument(
        "--out",
        help="where the predicted classes go (.npy) (default, for rows without labels: "
        "<features stem>.predictions.npy)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p


def default_out(features: str) -> str:
    """``new.npy`` -> ``new.predictions.npy``; ``F.npz:val`` -> ``F.val.predictions.npy``."""
    path, split = split_spec(features)
    stem = os.path.splitext(path)[0]
    return f"{stem}.{split}.predictions.npy" if split else f"{stem}.predictions.npy"


def _checked(args: argparse.Namespace) -> tuple[Split, bool, str | None]:
    """The rows, whether they have labels, and the output file; a ValueError otherwise."""
    if not os.path.isfile(args.head):
        raise ValueError(f"no head file at {args.head}")
    split, _ = read_split(args.features, args.labels, "test", need_labels=False)
    labelled = split.has_labels
    out = args.out if args.out is not None or labelled else default_out(args.features)
    if out is not None and not out.endswith(".npy"):
        raise ValueError(f"--out must be a .npy file, got {out}")
    if out is not None and os.path.exists(out) and not args.overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it, or another --out")
    return split, labelled, out


def predict(argv: Sequence[str]) -> int:
    """Run the command of the module docstring; returns the exit status."""
    args = predict_parser().parse_args(argv)
    try:
        split, labelled, out = _checked(args)
        from private_head._head import load

        head = load(args.head)
        if split.dim != head.dim:
            raise ValueError(
                f"{split.name} has {split.dim} features, the head {args.head} expects {head.dim}"
            )
        if labelled:
            acc = head.accuracy(split.spec, split.labels)
            print(
                f"accuracy  top-1 {acc['top1']:.4f}  top-5 {acc['top5']:.4f} "
                f"({split.name}, head {args.head})"
            )
        if out is not None:
            classes = head.predict(split.spec)
            write_array_atomically(out, classes.astype(np.int64))
            print(f"wrote     {out} ({len(classes)} predicted classes)")
    except (ValueError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


__all__ = ["default_out", "predict", "predict_parser"]
