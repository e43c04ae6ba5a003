"""Exact GDP accounting: 50-digit reference, dp-accounting PLD grid, round trips, monotonicity."""

import math

import dp_accounting
import mpmath
import pytest
from dp_accounting import NeighboringRelation
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import brentq

from accounting import (
    delta_from_mu,
    epsilon_from_mu,
    epsilon_full_batch,
    mu_from_epsilon,
    noise_multiplier_full_batch,
)
from accounting.gdp import log_delta_from_mu

ADD_REMOVE = NeighboringRelation.ADD_OR_REMOVE_ONE


def reference_log_delta(mu: float, eps: float) -> float:
    """log of Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) in 50-digit arithmetic."""
    with mpmath.workdps(50):
        m, e = mpmath.mpf(mu), mpmath.mpf(eps)
        d = mpmath.ncdf(-e / m + m / 2) - mpmath.exp(e) * mpmath.ncdf(-e / m - m / 2)
        return float(mpmath.log(d))


@pytest.mark.parametrize(
    ("mu", "eps"),
    [
        (1.0, 1.0),
        (0.5, 4.0),
        (3.0, 0.01),
        (50.0, 100.0),
        (20.0, 300.0),
        (0.05, 1.0),
        (1e-3, 1e-2),
        (1e-5, 1e-6),
        (1e-6, 1e-9),
        (8.0, 1e-6),
        (0.2, 7.0),
        (2.0, 30.0),
    ],
)
def test_delta_matches_50_digit_arithmetic(mu, eps):
    expected = reference_log_delta(mu, eps)
    assert expected > math.log(1e-300)
    assert log_delta_from_mu(mu, eps) == pytest.approx(expected, abs=1e-8)
    assert delta_from_mu(mu, eps) == pytest.approx(math.exp(expected), rel=1e-8)


@given(st.floats(-6, math.log10(50)), st.floats(-6, math.log10(300)))
def test_delta_is_accurate_or_conservative_everywhere(log_mu, log_eps):
    mu, eps = 10.0**log_mu, 10.0**log_eps
    expected = reference_log_delta(mu, eps)
    got = log_delta_from_mu(mu, eps)
    if expected < -700:  # delta below the float range: only a tiny value is required
        assert got < -650
    else:
        assert got == pytest.approx(expected, abs=1e-8)


# (epsilon, delta, steps) spanning the grid: eps 0.1..16, delta 1e-8..1e-3, steps 1..1000
GRID = [
    (0.1, 1e-8, 1),
    (0.1, 1e-3, 1000),
    (1.0, 1e-5, 10),
    (4.0, 1e-6, 1),
    (4.0, 1e-8, 100),
    (16.0, 1e-3, 1000),
    (16.0, 1e-8, 1),
    (0.5, 1e-4, 300),
]


@pytest.mark.parametrize(("eps", "delta", "steps"), GRID)
def test_full_batch_agrees_with_dp_accounting_pld(eps, delta, steps):
    sigma = noise_multiplier_full_batch(eps, delta, steps)
    pld = PLDAccountant(ADD_REMOVE, value_discretization_interval=1e-3)
    pld.compose(dp_accounting.GaussianDpEvent(sigma), steps)
    assert pld.get_epsilon(delta) == pytest.approx(eps, rel=1e-3)
    assert epsilon_full_batch(sigma, steps, delta) == pytest.approx(eps, rel=1e-9)
    # and the other direction: a noise multiplier that is not the calibrated one
    other = 1.3 * sigma
    pld = PLDAccountant(ADD_REMOVE, value_discretization_interval=1e-3)
    pld.compose(dp_accounting.GaussianDpEvent(other), steps)
    exact = epsilon_full_batch(other, steps, delta)
    assert exact < eps
    assert pld.get_epsilon(delta) == pytest.approx(exact, rel=1e-3)
    assert pld.get_delta(exact) == pytest.approx(delta, rel=1e-2)


def test_known_value_one_step_eps4_delta1e6():
    sigma = noise_multiplier_full_batch(4.0, 1e-6, 1)
    assert sigma == pytest.approx(1.1935, abs=5e-4)

    def rdp_gap(s: float) -> float:
        accountant = RdpAccountant(neighboring_relation=ADD_REMOVE)
        return accountant.compose(dp_accounting.GaussianDpEvent(s)).get_epsilon(1e-6) - 4.0

    sigma_rdp = brentq(rdp_gap, 0.5, 5.0, xtol=1e-7)
    assert sigma_rdp == pytest.approx(1.268, abs=1e-3)
    assert sigma < sigma_rdp * 0.95  # GDP needs at least 5% less noise than RDP here


def test_gdp_primitives_relations():
    mu = mu_from_epsilon(4.0, 1e-6)
    assert mu == pytest.approx(1 / 1.1935185871579863, rel=1e-12)
    assert delta_from_mu(mu, 4.0) <= 1e-6
    assert delta_from_mu(mu * (1 + 1e-9), 4.0) > 1e-6  # the largest such mu
    assert epsilon_from_mu(mu, 1e-6) == pytest.approx(4.0, rel=1e-12)
    assert delta_from_mu(1.0, 0.0) == pytest.approx(2 * 0.6914624612740131 - 1, rel=1e-12)


def test_limits():
    assert noise_multiplier_full_batch(math.inf, 1e-5, 10) == 0.0
    assert epsilon_full_batch(0.0, 10, 1e-5) == math.inf
    assert mu_from_epsilon(math.inf, 1e-5) == math.inf
    assert epsilon_from_mu(0.0, 1e-5) == 0.0 and epsilon_from_mu(math.inf, 1e-5) == math.inf
    assert delta_from_mu(0.0, 1.0) == 0.0 and delta_from_mu(math.inf, 1.0) == 1.0
    assert epsilon_from_mu(1e-7, 1e-5) == 0.0  # delta(0; mu) ~ 0.4 mu is already below delta


eps_st = st.floats(0.1, 16.0)
delta_st = st.floats(-8, -3).map(lambda e: 10.0**e)
steps_st = st.integers(1, 1000)


@given(eps_st, delta_st, steps_st)
def test_round_trip_and_smallest_sigma(eps, delta, steps):
    sigma = noise_multiplier_full_batch(eps, delta, steps)
    got = epsilon_full_batch(sigma, steps, delta)
    assert got <= eps
    assert got == pytest.approx(eps, rel=1e-9)
    assert epsilon_full_batch(sigma * (1 - 1e-7), steps, delta) > eps
    mu = mu_from_epsilon(eps, delta)
    assert sigma == pytest.approx(math.sqrt(steps) / mu, rel=1e-12)
    assert epsilon_from_mu(mu, delta) == pytest.approx(eps, rel=1e-9)
    assert log_delta_from_mu(mu, eps) <= math.log(delta)
    assert delta_from_mu(mu, eps) <= delta * (1 + 1e-12)  # exp() may round up by an ulp


@given(eps_st, eps_st, delta_st, delta_st, steps_st, steps_st)
def test_noise_multiplier_monotone_in_every_argument(e1, e2, d1, d2, t1, t2):
    e1, e2 = sorted((e1, e2))
    d1, d2 = sorted((d1, d2))
    t1, t2 = sorted((t1, t2))
    s = noise_multiplier_full_batch
    assert s(e1, d1, t1) >= s(e2, d1, t1)  # more epsilon, less noise
    assert s(e1, d1, t1) >= s(e1, d2, t1)  # more delta, less noise
    assert s(e1, d1, t1) <= s(e1, d1, t2)  # more steps, more noise


@given(st.floats(0.05, 100.0), st.floats(0.05, 100.0), delta_st, delta_st, steps_st, steps_st)
def test_epsilon_monotone_in_every_argument(s1, s2, d1, d2, t1, t2):
    s1, s2 = sorted((s1, s2))
    d1, d2 = sorted((d1, d2))
    t1, t2 = sorted((t1, t2))
    e = epsilon_full_batch
    assert e(s1, t1, d1) >= e(s2, t1, d1)  # more noise, less epsilon
    assert e(s1, t1, d1) >= e(s1, t1, d2)  # more delta, less epsilon
    assert e(s1, t1, d1) <= e(s1, t2, d1)  # more steps, more epsilon


@given(st.floats(0.01, 20.0), st.floats(0.01, 20.0), st.floats(0.0, 50.0), st.floats(0.0, 50.0))
def test_delta_monotone(m1, m2, e1, e2):
    m1, m2 = sorted((m1, m2))
    e1, e2 = sorted((e1, e2))
    assert delta_from_mu(m1, e1) <= delta_from_mu(m2, e1)
    assert delta_from_mu(m1, e1) >= delta_from_mu(m1, e2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: noise_multiplier_full_batch(0.0, 1e-5, 1), "epsilon must be > 0"),
        (lambda: noise_multiplier_full_batch(-1.0, 1e-5, 1), "epsilon must be > 0"),
        (lambda: noise_multiplier_full_batch(math.nan, 1e-5, 1), "epsilon must be > 0"),
        (lambda: noise_multiplier_full_batch(1.0, 0.0, 1), "delta must be in"),
        (lambda: noise_multiplier_full_batch(1.0, 1.0, 1), "delta must be in"),
        (lambda: noise_multiplier_full_batch(1.0, math.nan, 1), "delta must be in"),
        (lambda: noise_multiplier_full_batch(1.0, 1e-5, 0), "steps must be >= 1"),
        (lambda: noise_multiplier_full_batch(1.0, 1e-5, 2.0), "steps must be an integer"),
        (lambda: noise_multiplier_full_batch(1.0, 1e-5, True), "steps must be an integer"),
        (lambda: noise_multiplier_full_batch("1", 1e-5, 1), "epsilon must be a real number"),
        (lambda: epsilon_full_batch(-1.0, 1, 1e-5), "noise_multiplier must be >= 0"),
        (lambda: epsilon_full_batch(math.nan, 1, 1e-5), "noise_multiplier must be >= 0"),
        (lambda: delta_from_mu(-1.0, 1.0), "mu must be >= 0"),
        (lambda: mu_from_epsilon(1e-300, 1e-300), "no finite noise"),
    ],
)
def test_bad_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
