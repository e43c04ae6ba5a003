"""The command line's arguments, checked before JAX is imported (docs/architecture.md, "The
command line").

``python -m private_head`` parses its fixed arguments here (the data, the budget, the method's
name, ``--option`` pairs), checks them and the data they name (a store split's metadata, an
array file's headers: no row is read), so that a usage error is one line at once. A method's own
flags (``--steps``) are generated from its option types, which need JAX: ``cli`` parses them
after. Only argparse, numpy and the store's reader (numpy, h5py) are imported here.
"""

from __future__ import annotations

import argparse
import json
import os
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from feature_extract import multihost, store
from private_head import _methods
from private_head._data_files import array_split, has_split, is_array_file, split_spec

PROG = "python -m private_head"


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, ``error: ...``, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {' '.join(message.split())} (see {self.prog} --help)\n")


def builtin_methods() -> list[str]:
    """The built-in methods' names, without importing them: each module of
    ``private_head._methods`` registers the method of its name (a test checks it)."""
    return sorted(m.name for m in pkgutil.iter_modules(_methods.__path__) if m.name[0] != "_")


def _number(text: str, what: str, ok: Callable[[float], bool], requirement: str) -> float:
    """``float(text)`` when ``ok`` holds for it, else the one-line error ``what requirement``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{what} must be {requirement}, got {text}")
    return value


def epsilon_value(text: str) -> float:
    """``--epsilon``: a number > 0, or ``inf``."""
    return _number(text, "epsilon", lambda v: v > 0, "> 0 or inf")


def delta_value(text: str) -> float:
    """``--delta``: a number in (0, 1)."""
    return _number(text, "delta", lambda v: 0 < v < 1, "in (0, 1)")


def positive_value(text: str) -> float:
    """``--total-epsilon``: a number > 0."""
    return _number(text, "the total epsilon", lambda v: v > 0, "> 0")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """``--features``, ``--labels``, ``--num-classes``: the rows, as in ``fit``."""
    p.add_argument(
        "--features",
        required=True,
        help="a feature store, FILE.h5[:split], or your arrays: X.npy (with --labels) or "
        "F.npz[:split] (arrays features/labels, or x/y; split S: S_features/S_labels, or "
        "x_S/y_S)",
    )
    p.add_argument("--labels", help="the labels (.npy, [N] integers) of a --features X.npy")
    p.add_argument(
        "--num-classes",
        type=int,
        help="the public label space K (required with a .npy/.npz; a store declares its own)",
    )


def add_train_arguments(p: argparse.ArgumentParser, method_help: str) -> None:
    """Every fixed argument of a training run (the method's own flags come from its options)."""
    add_data_arguments(p)
    p.add_argument(
        "--epsilon", type=epsilon_value, required=True, help="privacy budget; inf: nonprivate"
    )
    p.add_argument(
        "--delta",
        type=delta_value,
        help="default: min(1e-5, 1/(2n)) with a public --dataset-size n, else 1e-5",
    )
    p.add_argument("--method", help=method_help)
    p.add_argument(
        "--seed",
        type=int,
        help="noise seed: the noise is then reproducible, and the guarantee holds only while the "
        "seed stays secret (default: 64 OS-random bits; the report says seeded: false)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any option, e.g. --option batch_size=256 (VALUE is read as JSON when it "
        "parses, else as a string); repeatable",
    )
    p.add_argument(
        "--total-epsilon",
        type=positive_value,
        help="cap the dataset's total epsilon across runs (kept in <features>.budget.json); a "
        "fit that would pass it is refused before it reads a row",
    )
    p.add_argument(
        "--budget-file", help="the dataset's budget file (default: <features>.budget.json)"
    )
    p.add_argument("--train-split", help="(default: train, or the split --features names)")
    p.add_argument("--test-split", help="(default: test, when the data has it)")
    p.add_argument(
        "--test-features",
        help="the test rows, when not a split of --features: FILE.h5[:split], X.npy (with "
        "--test-labels) or F.npz[:split]",
    )
    p.add_argument("--test-labels", help="the labels (.npy) of a --test-features X.npy")
    p.add_argument("--out-dir", help="where the head and JSON go (default: next to the features)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier head of this method and epsilon trained with other choices",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    multihost.add_arguments(p)


def method_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["batch_size=256", "metric=cosine"]`` -> ``{"batch_size": 256, "metric": "cosine"}``."""
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option needs KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


@dataclass(frozen=True)
class Split:
    """Rows a run reads: ``spec`` (and ``labels``) as ``fit`` and a head take them, the name
    printed (the file and split), the feature dimension, and the classes a store declares."""

    spec: str
    labels: str | None
    name: str
    dim: int
    num_classes: int | None
    has_labels: bool = True


@dataclass(frozen=True)
class TrainData:
    """The rows of a training run: the features file (the outputs' stem, the default budget
    file), the train split, the test split (None: not evaluated) and its public row count, and
    the public label space."""

    file: str
    train: Split
    test: Split | None
    test_rows: int
    num_classes: int


def _store_split(path: str, split: str) -> tuple[Split, int]:
    info = store.split_info(path, split)
    name = f"{os.path.basename(path)}:{split}"
    return Split(f"{path}:{split}", None, name, info.dim, info.num_classes), info.num_rows


def _array_split(
    spec: str, labels: str | None, default: str, need_labels: bool
) -> tuple[Split, int]:
    arrays = array_split(spec, labels, default, need_labels=need_labels)
    rows, dim = arrays.shape()
    return Split(spec, labels, arrays.name, dim, None, arrays.labels is not None), rows


def read_split(
    spec: str, labels: str | None, default: str, *, need_labels: bool = True
) -> tuple[Split, int]:
    """The split ``spec`` names (a store's ``default`` split unless it names one), checked, and
    its row count (public only for a test split). Without ``need_labels`` an array file may
    hold no labels."""
    if is_array_file(spec):
        return _array_split(spec, labels, default, need_labels)
    if labels is not None:
        raise ValueError(f"labels come from the store {spec}; give no labels file with it")
    path, split = store.parse_store_path(spec, default)
    return _store_split(path, split)


def _named(spec: str, split: str | None) -> str:
    """``spec`` with ``:split`` when the flag names one that ``spec`` does not."""
    path, named = split_spec(spec)
    if split is not None and named is not None and split != named:
        raise ValueError(f"--features {spec} names split {named!r}, --train-split {split!r}")
    return spec if split is None or named is not None else f"{path}:{split}"


def train_data(args: argparse.Namespace) -> TrainData:
    """The data of a training run, checked without reading a row (a ValueError otherwise)."""
    file = split_spec(args.features)[0]
    if not is_array_file(file):
        file = store.parse_store_path(args.features)[0]
    train, _ = read_split(_named(args.features, args.train_split), args.labels, "train")
    test, test_rows = _test_split(args, file, train)
    num_classes = train.num_classes if args.num_classes is None else args.num_classes
    if num_classes is None:
        raise ValueError(
            f"--num-classes K is required with {args.features}: the label space is public, "
            "never read from the labels"
        )
    if num_classes < 2:
        raise ValueError(f"--num-classes must be at least 2, got {num_classes}")
    for split in (train, test):
        if split is not None and split.num_classes not in (None, num_classes):
            raise ValueError(
                f"{split.name} declares {split.num_classes} classes, --num-classes {num_classes}"
            )
    if test is not None and test.dim != train.dim:
        raise ValueError(
            f"the test rows {test.name} have dim {test.dim}, the train rows {train.name} "
            f"{train.dim}"
        )
    return TrainData(file, train, test, test_rows, num_classes)


def _test_split(args: argparse.Namespace, file: str, train: Split) -> tuple[Split | None, int]:
    """The test split: ``--test-features``, else ``--test-split`` of the features file, else
    its ``test`` split when it has one."""
    if args.test_features is not None:
        if args.test_split is not None:
            raise ValueError("give --test-features or --test-split, not both")
        return read_split(args.test_features, args.test_labels, "test")
    if args.test_labels is not None:
        raise ValueError("--test-labels goes with --test-features X.npy")
    if file.lower().endswith(".npy"):
        if args.test_split is not None:
            raise ValueError(f"{file} holds one array: it has no split {args.test_split!r}")
        return None, 0
    if file.lower().endswith(".npz"):
        split = args.test_split or ("test" if has_split(file, "test") else None)
        if split is None or f"{file}:{split}" == train.spec:
            return None, 0
        return read_split(f"{file}:{split}", None, "test")
    names = store.split_names(file)
    if args.test_split is not None and args.test_split not in names:
        raise ValueError(f"{file} has no split {args.test_split!r} to evaluate; it has {names}")
    split = args.test_split or ("test" if "test" in names else None)
    return (None, 0) if split is None else _store_split(file, split)


__all__ = [
    "PROG",
    "Parser",
    "Split",
    "TrainData",
    "add_data_arguments",
    "add_train_arguments",
    "builtin_methods",
    "method_options",
    "read_split",
    "train_data",
]
