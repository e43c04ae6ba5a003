"""Command line: noise multiplier for a target epsilon, or epsilon for a noise multiplier.

python -m accounting --epsilon 4 --delta 1e-6 --steps 1            # prints sigma (GDP)
python -m accounting --noise-multiplier 1.2 --delta 1e-6 --steps 1 # prints epsilon (GDP)
add --sampling-rate q for Poisson-subsampled steps (PLD), --json for a JSON object.
python -m accounting history features/x.h5         # the store's budget: each run and the total

Bad input of any kind (a missing or malformed argument, a value out of range, a PLD grid too large
for memory) prints one line, ``error: ...``, on stderr and exits with status 2. The arguments are
checked before dp-accounting and SciPy are imported, so a usage error returns at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import NoReturn

from accounting._checks import (
    DEFAULT_DISCRETIZATION,
    check_delta,
    check_epsilon,
    check_nonnegative,
    check_sampling_rate,
    check_steps,
)


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line, ``error: ...``, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {' '.join(message.split())} (see {self.prog} --help)\n")


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default (``off`` for a flag) or says it is required."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or "required" in text or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0:
            return f"{text} (default: off)"
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m accounting`."""
    parser = OneLineParser(
        prog="python -m accounting",
        description=(
            "Privacy accounting for Gaussian steps under add-or-remove-one adjacency. Full batch "
            "(default) is exact GDP, mu = sqrt(steps)/sigma; --sampling-rate uses PLD."
        ),
        formatter_class=DefaultsFormatter,
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--epsilon",
        type=float,
        help="target epsilon: print the noise multiplier (this or --noise-multiplier required)",
    )
    target.add_argument(
        "--noise-multiplier",
        type=float,
        help="noise std / sensitivity: print epsilon (this or --epsilon required)",
    )
    parser.add_argument(
        "--delta", type=float, required=True, help="target delta in (0, 1) (required)"
    )
    parser.add_argument("--steps", type=int, default=1, help="number of steps")
    parser.add_argument(
        "--sampling-rate",
        type=float,
        help="Poisson sampling rate q in (0, 1]: account with dp-accounting's PLD "
        "(default: none, full batch, exact GDP)",
    )
    parser.add_argument(
        "--discretization",
        type=float,
        default=DEFAULT_DISCRETIZATION,
        help="PLD value discretisation interval (used with --sampling-rate)",
    )
    parser.add_argument(
        "--cross-check-rdp",
        action="store_true",
        help="with --sampling-rate: also report the RDP epsilon (a looser upper bound)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """Every check of ``compute``'s arguments, made before the accountants are imported; raises
    ValueError on bad input."""
    if args.epsilon is not None:
        check_epsilon(args.epsilon)
    else:
        check_nonnegative("noise_multiplier", args.noise_multiplier)
    check_delta(args.delta)
    check_steps(args.steps)
    if args.sampling_rate is not None:
        check_sampling_rate(args.sampling_rate)
    if not (math.isfinite(args.discretization) and args.discretization > 0):
        raise ValueError(f"--discretization must be finite and > 0, got {args.discretization}")
    if args.cross_check_rdp and args.sampling_rate is None:
        raise ValueError("--cross-check-rdp needs --sampling-rate (full batch is exact GDP)")


def compute(args: argparse.Namespace) -> dict:
    """Run the requested calibration; raises ValueError on bad input."""
    check_arguments(args)
    from accounting.gdp import epsilon_full_batch, noise_multiplier_full_batch
    from accounting.poisson import (
        epsilon_poisson,
        noise_multiplier_poisson,
        poisson_event,
        rdp_epsilon,
    )

    poisson = args.sampling_rate is not None
    result: dict = {
        "accountant": "pld" if poisson else "gdp",
        "adjacency": "add_or_remove_one",
        "delta": args.delta,
        "steps": args.steps,
        "sampling_rate": args.sampling_rate if poisson else 1.0,
    }
    if args.epsilon is not None:
        if poisson:
            sigma = noise_multiplier_poisson(
                args.epsilon,
                args.delta,
                args.sampling_rate,
                args.steps,
                value_discretization_interval=args.discretization,
            )
        else:
            sigma = noise_multiplier_full_batch(args.epsilon, args.delta, args.steps)
        result.update(epsilon=args.epsilon, noise_multiplier=sigma, output="noise_multiplier")
    else:
        sigma = args.noise_multiplier
        if poisson:
            eps = epsilon_poisson(
                sigma,
                args.sampling_rate,
                args.steps,
                args.delta,
                value_discretization_interval=args.discretization,
            )
        else:
            eps = epsilon_full_batch(sigma, args.steps, args.delta)
        result.update(epsilon=eps, noise_multiplier=sigma, output="epsilon")
    if args.cross_check_rdp:
        event = poisson_event(result["noise_multiplier"], args.sampling_rate, args.steps)
        result["epsilon_rdp"] = rdp_epsilon(event, args.delta)
    if not poisson:
        sigma = result["noise_multiplier"]
        result["mu"] = math.sqrt(args.steps) / sigma if sigma > 0 else math.inf
    return result


def history_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m accounting history`."""
    parser = OneLineParser(
        prog="python -m accounting history",
        description="A dataset's budget across runs: every run recorded in its budget file "
        "(<store>.budget.json) and their total.",
        formatter_class=DefaultsFormatter,
    )
    parser.add_argument("store", help="the feature store (or its .budget.json file) (required)")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    return parser


def history(argv: list[str]) -> int:
    """``python -m accounting history STORE``: each run, the cap and the total."""
    parser = history_parser()
    args = parser.parse_args(argv)
    from accounting.budget_file import BudgetFile

    budget = BudgetFile(args.store)
    try:
        if not os.path.exists(budget.path):
            raise ValueError(f"no budget file {budget.path}: no fit on this store recorded one")
        document = budget.read()
        text = budget.history()
    except ValueError as err:
        parser.error(str(err))
    if args.json:
        total = budget.total(document)
        print(json.dumps({**document, "total": total.to_dict(), "spent_so_far": total.describe()}))
    else:
        print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input exits with status 2 and a message on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["history"]:
        return history(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = compute(args)
    except (ValueError, OverflowError) as err:
        parser.error(str(err))
    except MemoryError:
        parser.error(
            f"the PLD accountant needs more memory than is available for --steps {args.steps} "
            f"at --discretization {args.discretization:g}; use fewer steps or a coarser "
            "--discretization (e.g. 1e-3)"
        )
    if args.json:
        print(json.dumps({k: _json_value(v) for k, v in result.items()}))
    else:
        print(repr(float(result[result["output"]])))
    return 0


def _json_value(v):
    return "inf" if isinstance(v, float) and math.isinf(v) else v


if __name__ == "__main__":
    sys.exit(main())
