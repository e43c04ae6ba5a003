"""``python -m private_head``: train a head on a train split, evaluate it on the test split; and
``python -m private_head predict``: use a saved head.

    python -m private_head --features features/digits-pixels.h5 --epsilon 4
    python -m private_head --features feats.npz --num-classes 10 --epsilon 4 --method auto
    python -m private_head --features X.npy --labels y.npy --num-classes 10 --epsilon 2
    python -m private_head --features F --epsilon 2 --method dp_sgd --batch-size 256 --steps 50
    python -m private_head --method dp_gd --help        # the options of one method
    python -m private_head predict --head H.npz --features F.h5:test

A run prints the accuracy and the privacy report and writes the head (``.npz``), its privacy
statement (``.privacy.md``) and a JSON result next to the features (or in ``--out-dir``):
``<features name>.<method>.eps<epsilon>.*``; a rerun with the same choices replaces them, one
with other choices is refused before a row is read (``--overwrite``; ``_run``). These files and
everything printed on stdout are the same for neighbouring datasets unless charged; how the rows
were read and the wall time depend on the private data and go to ``<stem>.operator.json``
(``"publish": false``) and one ``operator`` line on stderr, with the progress bar (off with
``--quiet``). ``--epsilon inf`` trains the ``nonprivate`` ceiling. Without ``--delta``:
``min(1e-5, 1/(2n))`` for a public ``--dataset-size`` n, else 1e-5. What each run spends is
kept in the dataset's budget file (``<features>.budget.json``); ``--total-epsilon X`` caps the
total. The option flags are generated from the option types (their defaults are in ``--help``);
``--option KEY=VALUE`` passes any option too.

Bad input ends with one line ``error: ...`` and exit status 2; the arguments and the data they
name are checked before JAX is imported (``_arguments``), a method's own flags after. Ctrl-C
ends a run with one line and exit status 130: every file is written whole or not at all, and a
fit that had started stays charged in the budget file.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from feature_extract.interrupts import interrupt_once
from private_head._arguments import (
    PROG,
    Parser,
    add_train_arguments,
    builtin_methods,
    method_options,
    train_data,
)

INTERRUPTED = 130  # the exit status of a run stopped by Ctrl-C (128 + SIGINT)
INTERRUPTED_LINE = (
    "interrupted; no file is half-written, and a fit that had started stays charged in the "
    "dataset's budget file"
)
METHOD_HELP = "one of {} (default: auto; nonprivate when epsilon is inf)"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_options(group: argparse._ArgumentGroup, kind: Any, taken: set[str]) -> None:
    """One flag per field of the option type ``kind`` (default SUPPRESS: only given flags reach
    ``fit``)."""
    for spec in kind.describe():
        name = spec["name"]
        if name in taken:
            continue
        taken.add(name)
        text = f"{spec['help']} (default: {spec['shown']})"
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": text}
        if spec["type"] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = {int: int, float: float, str: str}[spec["type"]]
            if spec["choices"]:
                kwargs["choices"] = spec["choices"]
            kwargs["metavar"] = spec["name"].upper() if not spec["choices"] else None
        group.add_argument(_flag(name), **kwargs)


def parser(method: str | None = None) -> Parser:
    """The whole training parser: the fixed arguments and the flags of ``method``'s options and
    of the shared ones (imports the methods, so JAX)."""
    from private_head._options import SHARED
    from private_head._registry import get_method

    p = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(p, METHOD_HELP.format(", ".join(builtin_methods())))
    taken: set[str] = set()
    shown = method or "auto"
    _add_options(
        p.add_argument_group(f"options of method {shown!r} (see --method NAME --help)"),
        get_method(shown).options,
        taken,
    )
    for kind in SHARED:
        _add_options(p.add_argument_group(f"{kind.__name__} options (every method)"), kind, taken)
    return p


def _fixed() -> set[str]:
    """The names of the fixed arguments (what is not a method's option)."""
    p = Parser(add_help=False)
    add_train_arguments(p, "")
    return {action.dest for action in p._actions}


def _error(err: BaseException) -> int:
    """Print ``err`` as one line, ``error: ...``, on stderr; the exit status of bad input."""
    print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
    return 2


def _chosen_method(argv: Sequence[str]) -> str | None:
    """The ``--method`` of ``argv`` (``nonprivate`` for ``--epsilon inf``), for ``--help``."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--method")
    early.add_argument("--epsilon")
    known, _ = early.parse_known_args(argv)
    if known.method is None and str(known.epsilon).strip().lower() in ("inf", "infinity"):
        return "nonprivate"  # its flags, not the single step's
    return known.method


def _check_method(method: str, epsilon: float) -> None:
    if method not in builtin_methods():
        raise ValueError(f"unknown method {method!r}; available: {', '.join(builtin_methods())}")
    if math.isinf(epsilon) and method != "nonprivate":
        raise ValueError(
            f"--epsilon inf (make probe EPS=inf) trains the nonprivate ceiling; "
            f"method {method!r} needs a finite epsilon"
        )


def train(argv: Sequence[str]) -> int:
    """Check the arguments (before JAX), then train, evaluate and write (``_run``)."""
    if "-h" in argv or "--help" in argv:
        method = _chosen_method(argv)
        if method is not None and method not in builtin_methods():
            return _error(ValueError(f"unknown method {method!r}"))
        parser(method).parse_args(argv)  # prints the help and exits
    early = Parser(prog=PROG, add_help=False)
    add_train_arguments(early, "")
    args, _ = early.parse_known_args(argv)
    method = args.method or ("nonprivate" if math.isinf(args.epsilon) else "auto")
    try:
        _check_method(method, args.epsilon)
        given = method_options(args.option)
        data = train_data(args)
    except ValueError as err:
        return _error(err)
    full = parser(method).parse_args(argv)  # the method's own flags (JAX is imported)
    fixed = _fixed()
    options = {k: v for k, v in vars(full).items() if k not in fixed} | given
    from feature_extract import multihost
    from private_head._run import run
    from private_head._summary import operator_line, summary

    try:
        multihost.initialize_from_args(full)
        result = run(full, data, method, options)
    except (ValueError, OSError) as err:
        return _error(err)
    if "head_file" in result:
        print(summary(result))
        print(operator_line(result["operator"]), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m private_head [predict] ...`` (module docstring); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["predict"]:
            from private_head._predict_command import predict

            return predict(argv[1:])
        return train(argv)
    except KeyboardInterrupt:
        print(INTERRUPTED_LINE, file=sys.stderr)
        return INTERRUPTED


def command_line() -> NoReturn:
    """``python -m private_head``: ``main`` in a process that ends with it; after Ctrl-C it
    exits at once (``os._exit``) rather than wait for device work still running: every file is
    closed by then."""
    signal.signal(signal.SIGINT, interrupt_once)
    status = main()
    if status == INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def options_markdown() -> str:
    """The README's table of every method's options and the shared ones, with their defaults
    (generated from the option types; a test keeps the README equal to it)."""
    from private_head._options import SHARED
    from private_head._registry import available_methods, get_method

    lines = ["| method | option | default | meaning |", "|---|---|---|---|"]
    rows = [
        (f"`{name}`", spec)
        for name in available_methods()
        for spec in get_method(name).options.describe()
    ]
    rows += [("every method", spec) for kind in SHARED for spec in kind.describe()]
    for who, spec in rows:
        lines.append(f"| {who} | `{spec['name']}` | {spec['shown']} | {spec['help']} |")
    return "\n".join(lines)


__all__ = ["command_line", "main", "options_markdown"]
