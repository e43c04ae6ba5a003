"""Poisson-subsampled Gaussian steps (DP-SGD) through dp-accounting's PLD accountant.

Each step includes every example independently with probability q and adds N(0, (sigma*C)^2)
noise to the sum of clipped contributions (sensitivity C). The PLD accountant composes the
privacy loss distribution of PoissonSampled(q, Gaussian(sigma)) over `steps` steps under
add-or-remove-one adjacency, with pessimistic discretisation (an upper bound on epsilon whose
slack is about `value_discretization_interval` per composition level). RDP is available only
as a cross-check, never as the accountant, and never with replace-one adjacency.

Noise multipliers below ``MIN_NOISE_MULTIPLIER`` are outside what the PLD grid can hold (its size
grows like 1/sigma^2: sigma = 1e-3 asks for tens of GiB). Every such run is far beyond a meaningful
budget (one step at q = 1e-4 and sigma = 0.2 is already epsilon ~ 27 at delta 1e-5), so
``epsilon_poisson`` refuses them and ``noise_multiplier_poisson`` never returns less: when a larger
epsilon would allow less noise it returns the floor, which spends less than the budget.
"""

from __future__ import annotations

import functools
import math
import warnings

import dp_accounting
from dp_accounting import NeighboringRelation
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from accounting._checks import (
    DEFAULT_DISCRETIZATION,
    check_delta,
    check_epsilon,
    check_nonnegative,
    check_positive_finite,
    check_sampling_rate,
    check_steps,
)
from accounting._solve import conservative_root
from accounting.gdp import mu_from_epsilon, noise_multiplier_full_batch

ADJACENCY = NeighboringRelation.ADD_OR_REMOVE_ONE
MIN_NOISE_MULTIPLIER = 0.2


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
    prior_mu: float = 0.0,
) -> float:
    """PLD epsilon of `steps` Poisson-sampled Gaussian steps (rate q, noise multiplier sigma),
    after ``prior_mu``-GDP already spent (composed first as one GaussianDpEvent(1 / prior_mu), as
    ``PrivacyLedger`` does).

    sigma = 0 gives inf. With cross_check_rdp, the RDP epsilon (an upper bound as well) is also
    computed and a RuntimeWarning is issued if the PLD value exceeds it.
    """
    prior_mu = check_nonnegative("prior_mu", prior_mu)
    sigma = check_nonnegative("noise_multiplier", noise_multiplier)
    q = check_sampling_rate(sampling_rate)
    steps = check_steps(steps)
    delta = check_delta(delta)
    if sigma == 0:
        return math.inf
    if sigma < MIN_NOISE_MULTIPLIER:
        raise ValueError(
            f"noise_multiplier={sigma} is below {MIN_NOISE_MULTIPLIER}, where the PLD accountant "
            "would need an impractically large grid; such noise gives epsilon far above any "
            "meaningful budget. Use a noise multiplier >= "
            f"{MIN_NOISE_MULTIPLIER} (or a full-batch method, accounted exactly)"
        )
    event = poisson_event(sigma, q, steps)
    if prior_mu > 0:
        event = dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(1 / prior_mu), event])
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
    prior_mu: float = 0.0,
) -> float:
    """Smallest sigma (to 1e-6 relative) with epsilon_poisson(sigma, q, steps, delta) <= epsilon
    (with ``prior_mu``-GDP spent before: see ``epsilon_poisson``).

    Brent's method on the PLD epsilon, in two passes: a coarse one (discretisation up to 10x
    coarser, cheap) starting at the full-batch sigma (subsampling only helps), then one at the
    requested discretisation bracketed within a few percent of the coarse answer. epsilon = inf
    gives 0. Never below ``MIN_NOISE_MULTIPLIER``: when the floor already meets the target, the
    floor is returned (its epsilon is below the target).
    """
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    q = check_sampling_rate(sampling_rate)
    steps = check_steps(steps)
    if math.isinf(epsilon):
        return 0.0
    interval = check_positive_finite("value_discretization_interval", value_discretization_interval)
    return _calibrate(epsilon, delta, q, steps, interval, check_nonnegative("prior_mu", prior_mu))


@functools.lru_cache(maxsize=256)
def _calibrate(
    epsilon: float,
    delta: float,
    q: float,
    steps: int,
    value_discretization_interval: float,
    prior_mu: float = 0.0,
) -> float:
    """``noise_multiplier_poisson`` on checked arguments, memoised (a calibration costs seconds
    of PLD work and sweeps repeat the same one for every seed)."""

    def solve(interval: float, start: float, factor: float, rtol: float) -> float:
        def gap(sigma: float) -> float:
            return (
                epsilon_poisson(
                    sigma,
                    q,
                    steps,
                    delta,
                    value_discretization_interval=interval,
                    prior_mu=prior_mu,
                )
                - epsilon
            )

        return conservative_root(
            gap,
            start,
            decreasing=True,
            x_min=MIN_NOISE_MULTIPLIER,
            x_max=max(1e4, 16 * start),
            rtol=rtol,
            factor=factor,
            impossible=(
                f"no finite noise multiplier reaches epsilon={epsilon} (delta={delta}, "
                f"sampling_rate={q}, steps={steps}) under PLD with value_discretization_interval="
                f"{interval}: the discretisation slack alone exceeds the target; use a smaller "
                "interval or a larger epsilon"
            ),
        )

    start = max(noise_multiplier_full_batch(epsilon, delta, steps), MIN_NOISE_MULTIPLIER)
    if prior_mu > 0:  # a start below the answer: the full batch with what is left of mu
        left = mu_from_epsilon(epsilon, delta) ** 2 - prior_mu**2
        if left > 0:
            start = max(math.sqrt(steps / left), MIN_NOISE_MULTIPLIER)
    coarse_interval = max(
        value_discretization_interval, min(10 * value_discretization_interval, epsilon / 20)
    )
    try:
        start, factor = solve(coarse_interval, start, 2.0, 1e-3), 1.02
    except ValueError:  # the coarse grid's slack exceeds the target, or the floor is reached
        factor = 2.0
    try:
        return solve(value_discretization_interval, start, factor, 1e-6)
    except ValueError:
        at_floor = epsilon_poisson(
            MIN_NOISE_MULTIPLIER,
            q,
            steps,
            delta,
            value_discretization_interval=value_discretization_interval,
            prior_mu=prior_mu,
        )
        if at_floor <= epsilon:  # less noise would do, but the floor is the least we account
            return MIN_NOISE_MULTIPLIER
        raise


__all__ = [
    "ADJACENCY",
    "DEFAULT_DISCRETIZATION",
    "MIN_NOISE_MULTIPLIER",
    "epsilon_poisson",
    "noise_multiplier_poisson",
    "pld_accountant",
    "poisson_event",
    "rdp_epsilon",
]
