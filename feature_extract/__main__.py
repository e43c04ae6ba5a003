"""Command line: ``python -m feature_extract --data mnist5k --model scatnet --out features/x.h5``.

``--data`` is a bundled dataset (``mnist5k``, ``digits``), ``folder:DIR``, ``list:FILE.csv`` or a
TFDS name; the default store is ``features/NAME-MODEL.h5`` with NAME the dataset name, a folder's
name or a list's file name without its extension. Warnings (skipped files, empty class folders)
print one line each, ``warning: ...``, on stderr.

Errors (bad arguments, missing data or weights, an unreachable download server, a store written
by another run or being written right now, a damaged store) print one line, ``error: ...``, on
stderr and exit with status 2. The arguments are checked before JAX is imported, so a usage
error returns at once. ``--list-models`` prints the registered backbones.

Ctrl-C stops the run within a moment (``feature_extract.interrupts``): the batches already
written stay committed, the batches in flight are dropped, the writer lock is released, one line
says so, and the process exits with status 130 without waiting for the device batch still
running; a second Ctrl-C changes nothing. The same command resumes the run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from typing import NoReturn

from PIL import Image

from feature_extract import multihost, pipeline, preprocess
from feature_extract.arguments import COMPUTE_DTYPE_NAMES, parse_splits
from feature_extract.interrupts import interrupt_once

INTERRUPTED = 130  # the exit status of a run stopped by Ctrl-C (128 + SIGINT)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, ``error: ...``, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {' '.join(message.split())} (see {self.prog} --help)\n")


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default: ``(default: X)``, ``(default: off)`` for a flag,
    or the help's own ``(default: ...)`` text where the value is computed at run time."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or "required" in text or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0:  # a flag
            return f"{text} (default: off)"
        if action.default is None:
            return f"{text} (default: none)"
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m feature_extract",
        description="Cache the embeddings of a frozen backbone on a dataset in an HDF5 store. "
        "Run the same command again to resume a killed run.",
        formatter_class=DefaultsFormatter,
    )
    p.add_argument(
        "--data",
        help="'mnist5k' or 'digits' (bundled, offline), 'folder:DIR' (DIR/<class>/<image>, or "
        "DIR/<split>/<class>/<image>), 'list:FILE.csv' (path,label[,split] rows; needs "
        "--classes), or a TFDS name (required unless --list-models)",
    )
    p.add_argument(
        "--classes",
        help="class file, one name per line in index order: the public label space of a "
        "folder: or list: dataset (default for a folder: its sorted class folder names)",
    )
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="folder:/list: data: check every file first, skip those that do not decode and "
        "list them in the store's skipped_files attribute (without it: an error naming the "
        "first one)",
    )
    p.add_argument(
        "--model", help="registered backbone, see --list-models (required unless --list-models)"
    )
    p.add_argument(
        "--list-models",
        action="store_true",
        help="print the registered backbones (feature dim, input size, preprocessing, weights, "
        "which feature) and exit",
    )
    p.add_argument("--out", help="store path (default: features/DATA-MODEL.h5)")
    p.add_argument(
        "--splits",
        default="train,test",
        help="comma list of splits; name=spec for slices, e.g. "
        "train=train[:90%%],val=train[90%%:]; a folder or list without split sub-folders "
        "(column) has one split, 'all', in a fixed hashed order: e.g. "
        "train=all[:90%%],test=all[90%%:]",
    )
    p.add_argument("--batch-size", type=int, default=256, help="images per device batch")
    p.add_argument("--dtype", default="bfloat16", choices=COMPUTE_DTYPE_NAMES, help="compute dtype")
    p.add_argument(
        "--output-dtype",
        default="float32",
        choices=("float32", "float16"),
        help="stored feature dtype",
    )
    p.add_argument(
        "--checkpoint",
        help="local .npz (optionally FILE.npz:key) for the model (default: the registered "
        "checkpoint, from the download cache)",
    )
    p.add_argument(
        "--init-random",
        action="store_true",
        help="random weights (seed --seed) instead of a checkpoint: for testing",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --init-random")
    p.add_argument(
        "--resolution", type=int, help="input size (default: the model's, see --list-models)"
    )
    p.add_argument(
        "--preprocessing", help="preprocessing string (default: the model's, after decode)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace complete splits")
    p.add_argument(
        "--skip-complete",
        action="store_true",
        help="exit 0 without work when every split is already complete "
        "(same backbone, data and preprocessing); for make",
    )
    p.add_argument(
        "--data-dir", help="TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)"
    )
    p.add_argument(
        "--cache-dir",
        help="checkpoint download cache (default: $DPLP_CACHE or ~/.cache/dp_linear_probe)",
    )
    p.add_argument("--no-download", action="store_true", help="never download datasets or weights")
    p.add_argument("--workers", type=int, help="decoding threads (default: usable CPUs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    multihost.add_arguments(p)
    return p


def list_models() -> str:
    """The table printed by ``--list-models``: name, family, feature dim, input size,
    preprocessing (after decode) and where the weights come from; under each row, indented, the
    backbone's description (which feature it caches, any normalisation inside the model)."""
    from feature_extract.registry import describe_backbones

    rows = [("name", "family", "dim", "input", "preprocessing", "weights")]
    notes = [""]
    for b in describe_backbones():
        dim = "H*W*3" if b["dim"] is None else str(b["dim"])
        size = "image" if b["resolution"] is None else f"{b['resolution']}px"
        if b["weights"] == "none":
            where = "none (no weights)"
        elif b["checkpoint"]:
            where = b["checkpoint"]
        else:
            where = f"none published: --init-random or --checkpoint FILE ({b['weights']})"
        rows.append((b["name"], b["family"], dim, size, b["preprocessing"], where))
        notes.append(b["description"])
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for row, note in zip(rows, notes, strict=True):
        cells = "  ".join(f"{cell:<{w}}" for cell, w in zip(row[:5], widths, strict=True))
        lines.append(f"{cells}  {row[5]}")
        if note:
            lines.append(f"    {note}")
    return "\n".join(lines)


def default_name(data: str) -> str:
    """The store name of ``--data``: a folder's name, a list's file name without extension, or
    the dataset name itself."""
    kind, sep, path = data.partition(":")
    if sep and kind in ("folder", "list"):
        base = os.path.basename(os.path.normpath(os.path.expanduser(path)))
        return os.path.splitext(base)[0] if kind == "list" else base
    return data


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_models:
        print(list_models())
        return 0
    missing = [f"--{k}" for k in ("data", "model") if not getattr(args, k)]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    try:
        check_arguments(args)
    except ValueError as err:
        return _error(err)
    out = args.out or f"features/{default_name(args.data)}-{args.model}.h5"
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line
        # decoding refuses an image over Pillow's limit itself; Pillow's warning would repeat it
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _run(args, out)


def check_arguments(args: argparse.Namespace) -> None:
    """The checks of ``extract``'s arguments that need no JAX (the splits, the batch size, the
    preprocessing string): a ValueError before anything heavy is imported."""
    parse_splits(args.splits)
    pipeline.check_batch_size(args.batch_size)
    if args.preprocessing is not None:
        preprocess.with_decode(args.preprocessing)


def _error(err: Exception) -> int:
    """Print ``err`` as one line, ``error: ...``, on stderr; the exit status of bad input."""
    print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
    return 2


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


def _run(args: argparse.Namespace, out: str) -> int:
    """Extract as ``args`` say; errors as one line (module docstring)."""
    try:
        from feature_extract.extraction import extract  # JAX: seconds; Ctrl-C stops it too

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
            classes=args.classes,
            skip_unreadable=args.skip_unreadable,
        )
    except KeyboardInterrupt:
        print(
            "interrupted; the batches written so far are kept: run the same command again to "
            "resume",
            file=sys.stderr,
        )
        return INTERRUPTED
    except (ValueError, OSError) as err:  # Store/Dataset/PreprocessError are ValueErrors
        return _error(err)
    except MemoryError as err:
        print(
            f"error: out of memory ({' '.join(str(err).split())}); use a smaller --batch-size "
            "(or --resolution); rows already written are kept, rerun to resume",
            file=sys.stderr,
        )
        return 2
    for name, info in infos.items():
        print(
            f"{info.path}:{name}  {info.num_rows} rows x {info.dim} ({info.feature_dtype}), "
            f"{info.num_classes} classes, backbone {info.attrs.get('backbone')}"
        )
    return 0


def command_line(argv: list[str] | None = None) -> NoReturn:
    """``python -m feature_extract``: ``main`` in a process that ends with it. After Ctrl-C the
    process exits at once (``os._exit``) instead of waiting, as the interpreter's exit would, for
    the device batch and the decoding still running: what they would give is dropped anyway,
    every store file is closed and the lock released by then."""
    signal.signal(signal.SIGINT, interrupt_once)
    status = main(argv)
    if status == INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    command_line()
