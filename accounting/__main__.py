"""Command line: noise multiplier for a target epsilon, or epsilon for a noise multiplier.

python -m accounting --epsilon 4 --delta 1e-6 --steps 1            # prints sigma (GDP)
python -m accounting --noise-multiplier 1.2 --delta 1e-6 --steps 1 # prints epsilon (GDP)
add --sampling-rate q for Poisson-subsampled steps (PLD), --json for a JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from accounting.gdp import epsilon_full_batch, noise_multiplier_full_batch
from accounting.poisson import (
    DEFAULT_DISCRETIZATION,
    epsilon_poisson,
    noise_multiplier_poisson,
    poisson_event,
    rdp_epsilon,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m accounting`."""
    parser = argparse.ArgumentParser(
        prog="python -m accounting",
        description=(
            "Privacy accounting for Gaussian steps under add-or-remove-one adjacency. Full batch "
            "(default) is exact GDP, mu = sqrt(steps)/sigma; --sampling-rate uses PLD."
        ),
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--epsilon", type=float, help="target epsilon: print the noise multiplier")
    target.add_argument(
        "--noise-multiplier", type=float, help="noise std / sensitivity: print epsilon"
    )
    parser.add_argument("--delta", type=float, required=True, help="target delta in (0, 1)")
    parser.add_argument("--steps", type=int, default=1, help="number of steps (default 1)")
    parser.add_argument(
        "--sampling-rate",
        type=float,
        help="Poisson sampling rate q in (0, 1]: account with dp-accounting's PLD",
    )
    parser.add_argument(
        "--discretization",
        type=float,
        default=DEFAULT_DISCRETIZATION,
        help=f"PLD value discretisation interval (default {DEFAULT_DISCRETIZATION})",
    )
    parser.add_argument(
        "--cross-check-rdp",
        action="store_true",
        help="with --sampling-rate: also report the RDP epsilon (a looser upper bound)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    return parser


def compute(args: argparse.Namespace) -> dict:
    """Run the requested calibration; raises ValueError on bad input."""
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
        if not poisson:
            raise ValueError("--cross-check-rdp needs --sampling-rate (full batch is exact GDP)")
        event = poisson_event(result["noise_multiplier"], args.sampling_rate, args.steps)
        result["epsilon_rdp"] = rdp_epsilon(event, args.delta)
    if not poisson:
        sigma = result["noise_multiplier"]
        result["mu"] = math.sqrt(args.steps) / sigma if sigma > 0 else math.inf
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input exits with status 2 and a message on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = compute(args)
    except ValueError as err:
        parser.error(str(err))
    if args.json:
        print(json.dumps({k: _json_value(v) for k, v in result.items()}))
    else:
        print(repr(float(result[result["output"]])))
    return 0


def _json_value(v):
    return "inf" if isinstance(v, float) and math.isinf(v) else v


if __name__ == "__main__":
    sys.exit(main())
