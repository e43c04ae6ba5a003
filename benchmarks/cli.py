"""What every ``benchmarks`` command line shares: one-line errors, defaults in ``--help``.

``Parser`` is an ``argparse.ArgumentParser`` whose ``--help`` shows every default
(``ArgumentDefaultsHelpFormatter``) and whose errors are one line ``error: ...`` on stderr with
exit status 2 (no usage block, no traceback). The ``*_type`` helpers validate values at parse time
so that bad input never reaches a measurement; ``guard`` turns the errors a command raises on bad
input it could only detect later (a missing file, an invalid combination) into the same one line.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` with defaults in ``--help`` and one-line errors (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(message: str) -> NoReturn:
    """Print ``error: message`` (one line) to stderr and exit with status 2."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)


def one_line(message: Any) -> str:
    return " ".join(str(message).split())


def guard(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> int:
    """Run ``main(argv)`` as a program: bad input (ValueError, OSError, KeyError) is one line
    ``error: ...`` and status 2; an int result is the exit status, anything else means 0."""
    try:
        result = main(argv)
    except SystemExit as err:
        return err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def open_unit_float(text: str) -> float:
    """A number in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def scale_float(text: str) -> float:
    """A number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def epsilons(text: str) -> list[float]:
    """A comma list of positive numbers or ``inf`` (no duplicates)."""
    values = []
    for item in (v.strip() for v in text.split(",")):
        if not item:
            continue
        try:
            value = math.inf if item.lower() in ("inf", "infinity") else float(item)
        except ValueError:
            value = math.nan
        if not value > 0:
            where = f" in {text!r}" if item != text.strip() else ""
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive numbers or inf, got {item!r}{where}"
            )
        values.append(value)
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one epsilon, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"an epsilon is repeated in {text!r}")
    return values


def positive_floats(text: str) -> list[float]:
    """A comma list of positive finite numbers."""
    try:
        return [positive_float(v.strip()) for v in text.split(",") if v.strip()] or _empty(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{err} (in {text!r})") from None


def choices_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """A type: a comma list, each item one of ``choices``."""

    def parse(text: str) -> list[str]:
        items = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in items if v not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(map(repr, unknown)) or 'empty list'}; choose from "
                f"{', '.join(choices)}"
            )
        return items

    return parse


def _empty(text: str) -> NoReturn:
    raise argparse.ArgumentTypeError(f"expected at least one value, got {text!r}")
