"""Poisson-subsampled Gaussian steps: dp-accounting PLD directly, RDP cross-check, calibration."""

import math
import warnings

import dp_accounting
import pytest
from dp_accounting import NeighboringRelation
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from hypothesis import given, settings
from hypothesis import strategies as st

from accounting import (
    epsilon_full_batch,
    epsilon_poisson,
    noise_multiplier_full_batch,
    noise_multiplier_poisson,
)

FAST = 1e-3  # PLD value discretisation for tests (the library default is 1e-4)


def direct_pld_epsilon(sigma, q, steps, delta, interval=FAST):
    accountant = PLDAccountant(
        NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=interval
    )
    step = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    accountant.compose(step, steps)
    return accountant.get_epsilon(delta)


def direct_rdp_epsilon(sigma, q, steps, delta):
    accountant = RdpAccountant(neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE)
    step = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    return accountant.compose(step, steps).get_epsilon(delta)


@pytest.mark.parametrize(
    ("sigma", "q", "steps", "delta"),
    [(1.0, 0.01, 1000, 1e-6), (0.8, 0.1, 10, 1e-5), (4.0, 0.5, 3, 1e-8), (1.5, 0.02, 200, 1e-3)],
)
def test_epsilon_poisson_is_dp_accounting_pld_and_below_rdp(sigma, q, steps, delta):
    eps = epsilon_poisson(sigma, q, steps, delta, value_discretization_interval=FAST)
    assert eps == pytest.approx(direct_pld_epsilon(sigma, q, steps, delta), rel=1e-12)
    rdp = direct_rdp_epsilon(sigma, q, steps, delta)
    assert eps <= rdp  # both are upper bounds; PLD is the tighter one
    assert eps >= 0.5 * rdp  # ... but not implausibly far below the RDP bound


@pytest.mark.parametrize(("sigma", "steps", "delta"), [(1.2, 1, 1e-6), (8.0, 50, 1e-5)])
def test_sampling_rate_one_is_exact_full_batch(sigma, steps, delta):
    eps = epsilon_poisson(sigma, 1.0, steps, delta, value_discretization_interval=FAST)
    assert eps == pytest.approx(epsilon_full_batch(sigma, steps, delta), rel=1e-3)


def test_calibration_round_trip_and_less_noise_than_full_batch():
    eps, delta, q, steps = 2.0, 1e-5, 0.02, 100
    sigma = noise_multiplier_poisson(eps, delta, q, steps, value_discretization_interval=FAST)
    got = epsilon_poisson(sigma, q, steps, delta, value_discretization_interval=FAST)
    assert got <= eps and got == pytest.approx(eps, rel=1e-4)
    below = epsilon_poisson(sigma * 0.999, q, steps, delta, value_discretization_interval=FAST)
    assert below > eps  # the smallest such sigma
    assert sigma < noise_multiplier_full_batch(eps, delta, steps) / 5


def test_calibration_with_tiny_epsilon_skips_the_coarse_pass():
    sigma = noise_multiplier_poisson(0.05, 1e-5, 0.5, 1, value_discretization_interval=FAST)
    got = epsilon_poisson(sigma, 0.5, 1, 1e-5, value_discretization_interval=FAST)
    assert got <= 0.05 and got == pytest.approx(0.05, rel=1e-3)


def test_limits():
    assert epsilon_poisson(0.0, 0.1, 10, 1e-5) == math.inf
    assert noise_multiplier_poisson(math.inf, 1e-5, 0.1, 10) == 0.0


def test_rdp_cross_check_warns_only_when_pld_is_looser():
    args = (1.0, 0.01, 100, 1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        epsilon_poisson(*args, cross_check_rdp=True, value_discretization_interval=FAST)
    with pytest.warns(RuntimeWarning, match="exceeds the RDP upper bound"):
        epsilon_poisson(*args, cross_check_rdp=True, value_discretization_interval=0.5)


@settings(max_examples=5)
@given(
    st.floats(0.7, 3.0),
    st.floats(0.005, 0.2),
    st.integers(1, 30),
    st.floats(-8, -3).map(lambda e: 10.0**e),
)
def test_epsilon_poisson_monotone_in_every_argument(sigma, q, steps, delta):
    def e(s=sigma, r=q, t=steps, d=delta):
        return epsilon_poisson(s, r, t, d, value_discretization_interval=FAST)

    base = e()
    assert e(s=sigma * 1.1) < base  # more noise
    assert e(r=min(1.0, q * 1.5)) > base  # more sampling
    assert e(t=steps + 10) > base  # more steps
    assert e(d=delta * 10) < base  # more delta


@settings(max_examples=3)
@given(st.floats(0.5, 4.0), st.floats(0.01, 0.5), st.integers(1, 20))
def test_noise_multiplier_poisson_monotone_in_every_argument(eps, q, steps):
    def s(target=eps, r=q, t=steps):  # a coarse grid keeps this cheap; monotone at any grid
        return noise_multiplier_poisson(target, 1e-5, r, t, value_discretization_interval=1e-2)

    base = s()
    assert s(target=eps * 1.5) < base
    assert s(r=min(1.0, q * 1.5)) > base
    assert s(t=steps + 5) > base


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: epsilon_poisson(1.0, 0.0, 1, 1e-5), "sampling_rate must be in"),
        (lambda: epsilon_poisson(1.0, 1.5, 1, 1e-5), "sampling_rate must be in"),
        (lambda: epsilon_poisson(1.0, math.nan, 1, 1e-5), "sampling_rate must be in"),
        (lambda: epsilon_poisson(1.0, 0.1, 0, 1e-5), "steps must be >= 1"),
        (lambda: epsilon_poisson(-1.0, 0.1, 1, 1e-5), "noise_multiplier must be >= 0"),
        (lambda: epsilon_poisson(1.0, 0.1, 1, 1.0), "delta must be in"),
        (lambda: noise_multiplier_poisson(0.0, 1e-5, 0.1, 1), "epsilon must be > 0"),
        (
            lambda: noise_multiplier_poisson(1e-3, 1e-5, 1.0, 1, value_discretization_interval=0.1),
            "no finite noise multiplier",
        ),
    ],
)
def test_bad_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_noise_below_the_pld_floor_is_refused_and_calibration_stops_at_the_floor():
    from accounting.poisson import MIN_NOISE_MULTIPLIER

    with pytest.raises(ValueError, match="below 0.2"):
        epsilon_poisson(1e-3, 0.5, 10, 1e-5)
    # epsilon 1000 would allow less noise than the floor: the floor is returned, and it fits
    sigma = noise_multiplier_poisson(1000.0, 1e-5, 1e-3, 1, value_discretization_interval=1e-2)
    assert sigma == MIN_NOISE_MULTIPLIER
    assert epsilon_poisson(sigma, 1e-3, 1, 1e-5, value_discretization_interval=1e-2) <= 1000.0
