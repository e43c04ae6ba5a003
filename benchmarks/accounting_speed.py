"""Time to calibrate the noise: full-batch (exact GDP) and Poisson-subsampled (dp-accounting PLD).

- full batch: ``accounting.noise_multiplier_full_batch(epsilon, delta, steps)`` for each epsilon
  of the grid (a closed-form mu, one root find for the analytic Gaussian curve);
- Poisson: ``accounting.noise_multiplier_poisson(epsilon, delta, q, steps)`` (a search over sigma,
  each candidate composing T subsampled Gaussian steps in a PLD accountant).

Every call is timed once, cold: that is what a user's ``fit`` pays.
"""

from __future__ import annotations

import time
from typing import Any


def _timed(fn: Any, *args: Any) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def measure(
    epsilons: list[float],
    delta: float,
    full_batch_steps: int,
    sampling_rate: float,
    poisson_steps: int,
) -> list[dict[str, Any]]:
    """One row per (kind, epsilon): the calibrated sigma and the seconds it took."""
    from accounting import noise_multiplier_full_batch, noise_multiplier_poisson

    rows = []
    for eps in epsilons:
        sigma, seconds = _timed(noise_multiplier_full_batch, eps, delta, full_batch_steps)
        rows.append(
            {
                "kind": "full batch (GDP)",
                "epsilon": eps,
                "delta": delta,
                "steps": full_batch_steps,
                "sampling_rate": 1.0,
                "sigma": sigma,
                "seconds": seconds,
            }
        )
    for eps in epsilons:
        sigma, seconds = _timed(noise_multiplier_poisson, eps, delta, sampling_rate, poisson_steps)
        rows.append(
            {
                "kind": "Poisson (PLD)",
                "epsilon": eps,
                "delta": delta,
                "steps": poisson_steps,
                "sampling_rate": sampling_rate,
                "sigma": sigma,
                "seconds": seconds,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from benchmarks.cli import Parser, open_unit_float, positive_floats, positive_int

    p = Parser(prog="python -m benchmarks.accounting_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--epsilons", type=positive_floats, default="1,8", help="comma list")
    p.add_argument("--delta", type=open_unit_float, default=1e-5, help="delta of every row")
    p.add_argument("--full-batch-steps", type=positive_int, default=10, help="T, full batch")
    p.add_argument("--sampling-rate", type=open_unit_float, default=0.01, help="Poisson q")
    p.add_argument("--poisson-steps", type=positive_int, default=100, help="T, Poisson")
    args = p.parse_args(argv)
    rows = measure(
        args.epsilons,
        args.delta,
        args.full_batch_steps,
        args.sampling_rate,
        args.poisson_steps,
    )
    for r in rows:
        print(
            f"calibration {r['kind']}: eps={r['epsilon']:g} delta={r['delta']:g} "
            f"T={r['steps']} q={r['sampling_rate']:g} -> sigma={r['sigma']:.4f} in "
            f"{r['seconds']:.4f}s"
        )
    return rows


if __name__ == "__main__":
    from benchmarks.cli import guard

    raise SystemExit(guard(main))
