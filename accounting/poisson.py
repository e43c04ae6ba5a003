"""Poisson-subsampled Gaussian steps (DP-SGD) through dp-accounting's PLD accountant.

Each step includes every example independently with probability q and adds N(0, (sigma*C)^2)
noise to the sum of clipped contributions (sensitivity C). The PLD accountant composes the
privacy loss distribution of PoissonSampled(q, Gaussian(sigma)) over `steps` steps under
add-or-remove-one adjacency, with pessimistic discretisation (an upper bound on epsilon whose
slack is about `value_discretization_interval` per composition level). RDP is available only
as a cross-check, never as the accountant, and never with replace-one adjacency.
"""

from __future__ import annotations

import math
import warnings

import dp_accounting
from dp_accounting import NeighboringRelation
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from accounting._checks import (
    check_delta,
    check_epsilon,
    check_nonnegative,
    check_sampling_rate,
    check_steps,
)
from accounting._solve import conservative_root
from accounting.gdp import noise_multiplier_full_batch

ADJACENCY = NeighboringRelation.ADD_OR_REMOVE_ONE
DEFAULT_DISCRETIZATION = 1e-4


def poisson_event(
    noise_multiplier: float, sampling_rate: float, steps: int
) -> dp_accounting.DpEvent:
    """SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps)."""
    step = dp_accounting.PoissonSampledDpEvent(
        sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    return dp_accounting.SelfComposedDpEvent(step, steps)


def pld_accountant(value_discretization_interval: float = DEFAULT_DISCRETIZATION) -> PLDAccountant:
    """A fresh PLD accountant with add-or-remove-one adjacency."""
    return PLDAccountant(ADJACENCY, value_discretization_interval=value_discretization_interval)


def rdp_epsilon(event: dp_accounting.DpEvent, delta: float) -> float:
    """Epsilon of `event` from dp-accounting's RDP accountant (add-or-remove-one)."""
    return float(RdpAccountant(neighboring_relation=ADJACENCY).compose(event).get_epsilon(delta))


def epsilon_poisson(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    *,
    cross_check_rdp: bool = False,
    value_discretization_interval: float = DEFAULT_DISCRETIZATION,
) -> float:
    """PLD epsilon of `steps` Poisson-sampled Gaussian steps (rate q, noise multiplier sigma).

    sigma = 0 gives inf. With cross_check_rdp, the RDP epsilon (an upper bound as well) is also
    computed and a RuntimeWarning is issued if the PLD value exceeds it.
    """
    sigma = check_nonnegative("noise_multiplier", noise_multiplier)
    q = check_sampling_rate(sampling_rate)
    steps = check_steps(steps)
    delta = check_delta(delta)
    if sigma == 0:
        return math.inf
    event = poisson_event(sigma, q, steps)
    eps = float(pld_accountant(value_discretization_interval).compose(event).get_epsilon(delta))
    if cross_check_rdp:
        eps_rdp = rdp_epsilon(event, delta)
        if eps > eps_rdp * (1 + 1e-9):
            warnings.warn(
                f"PLD epsilon {eps:.6g} exceeds the RDP upper bound {eps_rdp:.6g} "
                f"(sigma={sigma}, q={q}, steps={steps}, delta={delta}); "
                "reduce value_discretization_interval",
                RuntimeWarning,
                stacklevel=2,
            )
    return eps


def noise_multiplier_poisson(
    epsilon: float,
    delta: float,
    sampling_rate: float,
    steps: int,
    *,
    value_discretization_interval: float = DEFAULT_DISCRETIZATION,
) -> float:
    """Smallest sigma (to 1e-6 relative) with epsilon_poisson(sigma, q, steps, delta) <= epsilon.

    Brent's method on the PLD epsilon, in two passes: a coarse one (discretisation up to 10x
    coarser, cheap) starting at the full-batch sigma (subsampling only helps), then one at the
    requested discretisation bracketed within a few percent of the coarse answer. epsilon = inf
    gives 0.
    """
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    q = check_sampling_rate(sampling_rate)
    steps = check_steps(steps)
    if math.isinf(epsilon):
        return 0.0

    def solve(interval: float, start: float, factor: float, rtol: float) -> float:
        def gap(sigma: float) -> float:
            return (
                epsilon_poisson(sigma, q, steps, delta, value_discretization_interval=interval)
                - epsilon
            )

        return conservative_root(
            gap,
            start,
            decreasing=True,
            x_min=1e-6,
            x_max=max(1e4, 16 * start),
            rtol=rtol,
            factor=factor,
            impossible=(
                f"no finite noise multiplier reaches epsilon={epsilon} (delta={delta}, "
                f"sampling_rate={q}, steps={steps}) under PLD with value_discretization_interval="
                f"{interval}: the discretisation slack alone exceeds the target, or sigma would "
                "be below 1e-6; use a smaller interval or a larger epsilon"
            ),
        )

    start = noise_multiplier_full_batch(epsilon, delta, steps)
    coarse_interval = max(
        value_discretization_interval, min(10 * value_discretization_interval, epsilon / 20)
    )
    try:
        start, factor = solve(coarse_interval, start, 2.0, 1e-3), 1.02
    except ValueError:  # the coarse grid's slack alone exceeds the target: search at full grid
        factor = 2.0
    return solve(value_discretization_interval, start, factor, 1e-6)
