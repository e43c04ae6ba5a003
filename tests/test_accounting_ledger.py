"""PrivacyLedger: exact GDP composition, PLD for mixed releases, refusal before overspending."""

import json
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import NeighboringRelation
from dp_accounting.pld import PLDAccountant
from hypothesis import given
from hypothesis import strategies as st

from accounting import (
    BudgetExceededError,
    PrivacyLedger,
    epsilon_from_mu,
    epsilon_full_batch,
    mu_from_epsilon,
    poisson_event,
)

FAST = 1e-3  # PLD value discretisation used by the mixed-release tests


def test_full_batch_steps_compose_like_epsilon_full_batch():
    ledger = PrivacyLedger(8.0, 1e-6)
    ledger.record_gaussian("steps", sensitivity=2.0, noise_std=2.0 * 1.7, count=4)
    assert ledger.accountant == "gdp"
    assert ledger.mu == pytest.approx(2 / 1.7, rel=1e-12)
    assert ledger.epsilon_spent == pytest.approx(epsilon_full_batch(1.7, 4, 1e-6), rel=1e-12)


def test_heterogeneous_gaussians_compose_as_root_sum_of_squares():
    ledger = PrivacyLedger(math.inf, 1e-5)
    ledger.record_gaussian("mean", sensitivity=1.0, noise_std=4.0)
    ledger.record_gaussian("cov", sensitivity=3.0, noise_std=5.0, count=3)
    ledger.record_event("gauss event", dp_accounting.GaussianDpEvent(2.0))
    mu = math.sqrt(0.25**2 + 3 * 0.6**2 + 0.5**2)
    assert ledger.accountant == "gdp"
    assert ledger.mu == pytest.approx(mu, rel=1e-12)
    assert ledger.epsilon_spent == pytest.approx(epsilon_from_mu(mu, 1e-5), rel=1e-12)


def test_gaussian_plus_poisson_matches_direct_pld():
    ledger = PrivacyLedger(10.0, 1e-6, value_discretization_interval=FAST)
    ledger.record_gaussian("mean", sensitivity=2.0, noise_std=6.0, count=4)
    ledger.record_event("sgd", poisson_event(1.1, 0.02, 50))
    reference = PLDAccountant(
        NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=FAST
    )
    reference.compose(dp_accounting.GaussianDpEvent(3.0), 4)
    reference.compose(poisson_event(1.1, 0.02, 50))
    expected = reference.get_epsilon(1e-6)
    assert ledger.accountant == "pld"
    assert ledger.mu is None and ledger.remaining_mu is None
    assert ledger.epsilon_spent == pytest.approx(expected, rel=2e-3)
    # and strictly more than either part alone
    assert ledger.epsilon_spent > epsilon_full_batch(3.0, 4, 1e-6) * 1.01


def test_refuses_before_recording_an_overspend():
    ledger = PrivacyLedger(2.0, 1e-6)
    ledger.record_gaussian("first", sensitivity=1.0, noise_std=3.0)
    spent = ledger.epsilon_spent
    with pytest.raises(BudgetExceededError, match="over the budget"):
        ledger.record_gaussian("too much", sensitivity=1.0, noise_std=1.0, count=4)
    assert [r.name for r in ledger.releases] == ["first"]
    assert ledger.epsilon_spent == spent
    # the remaining mu is exactly spendable, and then nothing more is
    extra = ledger.remaining_mu
    assert math.hypot(ledger.mu, extra) == pytest.approx(mu_from_epsilon(2.0, 1e-6), rel=1e-12)
    ledger.record_gaussian("rest", sensitivity=1.0, noise_std=1.0 / extra)
    assert ledger.epsilon_spent == pytest.approx(2.0, rel=1e-9)
    assert ledger.remaining_mu == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(BudgetExceededError):
        ledger.record_gaussian("more", sensitivity=1.0, noise_std=100.0)
    assert len(ledger.releases) == 2


def test_refuses_overspend_under_pld():
    ledger = PrivacyLedger(1.0, 1e-6, value_discretization_interval=FAST)
    ledger.record_event("sgd", poisson_event(1.0, 0.01, 20))
    spent = ledger.epsilon_spent
    assert 0 < spent < 1.0
    with pytest.raises(BudgetExceededError):
        ledger.record_gaussian("big", sensitivity=1.0, noise_std=1.0)
    assert len(ledger.releases) == 1 and ledger.epsilon_spent == spent
    assert ledger.remaining_epsilon == pytest.approx(1.0 - spent)


def test_zero_noise_refused_on_finite_budget_allowed_without_limit():
    with pytest.raises(BudgetExceededError):
        PrivacyLedger(100.0, 1e-6).record_gaussian("raw", sensitivity=1.0, noise_std=0.0)
    unlimited = PrivacyLedger(math.inf, 1e-6)
    assert unlimited.remaining_mu == math.inf
    unlimited.record_gaussian("raw", sensitivity=1.0, noise_std=0.0)
    assert unlimited.epsilon_spent == math.inf and unlimited.mu == math.inf
    report = json.loads(json.dumps(unlimited.report(), allow_nan=False))
    assert report["epsilon_spent"] == "inf" and report["epsilon_budget"] == "inf"
    assert report["releases"][0]["mu"] == "inf"


def test_report_round_trips_through_json():
    ledger = PrivacyLedger(4.0, 1e-6, value_discretization_interval=FAST)
    ledger.record_gaussian("steps", sensitivity=1.0, noise_std=5.0, count=9)
    ledger.record_event("sgd", poisson_event(2.0, 0.05, 10))
    report = ledger.report()
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["accountant"] == "pld" and report["adjacency"] == "add_or_remove_one"
    assert "dataset_size" not in report and report["delta"] == 1e-6  # fit states the size source
    assert report["epsilon_budget"] == 4.0 and report["mu"] is None
    assert report["epsilon_spent"] == pytest.approx(ledger.epsilon_spent)
    steps, sgd = report["releases"]
    assert steps == {
        "name": "steps",
        "kind": "gaussian",
        "sensitivity": 1.0,
        "noise_std": 5.0,
        "noise_multiplier": 5.0,
        "sampling_rate": None,
        "count": 9,
        "mu": pytest.approx(0.6),
        "event": None,
        "description": None,
    }
    assert sgd["kind"] == "event" and "PoissonSampledDpEvent" in sgd["event"]
    assert sgd["sampling_rate"] == 0.05 and sgd["noise_multiplier"] == 2.0  # the event's, exact


def test_record_gdp_composes_in_gdp_and_says_what_it_is():
    ledger = PrivacyLedger(4.0, 1e-6)
    ledger.record_gaussian("steps", sensitivity=1.0, noise_std=2.0)
    release = ledger.record_gdp("selection", 0.3, description="0.1-DP, dominated by 0.3-GDP")
    assert release.kind == "gdp" and release.noise_std is None
    assert ledger.accountant == "gdp" and ledger.mu == pytest.approx(math.hypot(0.5, 0.3))
    entry = ledger.report()["releases"][1]
    assert entry["description"] == "0.1-DP, dominated by 0.3-GDP" and entry["noise_std"] is None
    with pytest.raises(ValueError, match="description"):
        ledger.record_gdp("x", 0.1, description="")


def test_record_event_keeps_the_noise_it_describes():
    ledger = PrivacyLedger(4.0, 1e-6, value_discretization_interval=FAST)
    event = poisson_event(2.0, 0.05, 10)
    release = ledger.record_event(
        "sgd", event, description="10 Poisson steps", sensitivity=1.0, noise_std=2.0, count=10
    )
    assert release.noise_multiplier == 2.0 and release.count == 10
    assert ledger.report()["releases"][0]["description"] == "10 Poisson steps"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sensitivity": 0.0, "noise_std": 1.0}, "sensitivity"),
        ({"sensitivity": math.nan, "noise_std": 1.0}, "sensitivity"),
        ({"sensitivity": 1.0, "noise_std": -1.0}, "noise_std"),
        ({"sensitivity": 1.0, "noise_std": math.inf}, "noise_std"),
        ({"sensitivity": 1.0, "noise_std": 1.0, "count": 0}, "count"),
        ({"sensitivity": 1.0, "noise_std": 1.0, "count": 2.0}, "count"),
    ],
)
def test_bad_gaussian_release_is_a_clear_error(kwargs, message):
    ledger = PrivacyLedger(1.0, 1e-6)
    with pytest.raises(ValueError, match=message) as info:
        ledger.record_gaussian("x", **kwargs)
    assert not isinstance(info.value, BudgetExceededError)
    assert ledger.releases == ()


def test_bad_budget_and_events_are_clear_errors():
    for eps in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="epsilon"):
            PrivacyLedger(eps, 1e-6)
    for delta in (0.0, 1.0, -1e-3):
        with pytest.raises(ValueError, match="delta"):
            PrivacyLedger(1.0, delta)
    ledger = PrivacyLedger(1.0, 1e-6)
    with pytest.raises(ValueError, match="DpEvent"):
        ledger.record_event("x", "gaussian")
    with pytest.raises(ValueError, match="cannot account"):
        ledger.record_event("x", dp_accounting.UnsupportedDpEvent())
    with pytest.raises(ValueError, match="name"):
        ledger.record_gaussian("", sensitivity=1.0, noise_std=1.0)
    assert ledger.releases == ()


releases = st.lists(
    st.tuples(
        st.floats(0.1, 10.0),  # sensitivity
        st.floats(0.05, 50.0),  # noise std
        st.integers(1, 100),  # count
    ),
    min_size=1,
    max_size=8,
)


@given(releases, st.floats(0.1, 16.0), st.sampled_from([1e-8, 1e-6, 1e-3]))
def test_ledger_never_overspends_and_spending_only_grows(items, epsilon, delta):
    ledger = PrivacyLedger(epsilon, delta)
    accepted = []
    previous = 0.0
    for i, (c, std, count) in enumerate(items):
        mu_i = math.sqrt(count) * c / std
        try:
            ledger.record_gaussian(f"r{i}", sensitivity=c, noise_std=std, count=count)
        except BudgetExceededError:
            would = epsilon_from_mu(math.sqrt(sum(m * m for m in accepted) + mu_i**2), delta)
            assert would > epsilon
            continue
        accepted.append(mu_i)
        assert ledger.epsilon_spent >= previous
        previous = ledger.epsilon_spent
    assert ledger.epsilon_spent <= epsilon * (1 + 1e-9)
    assert len(ledger.releases) == len(accepted)
    assert (ledger.mu or 0.0) == pytest.approx(math.sqrt(sum(m * m for m in accepted)), rel=1e-12)


def test_numpy_scalars_are_accepted():
    ledger = PrivacyLedger(np.float64(4.0), np.float32(1e-6))
    ledger.record_gaussian(
        "np", sensitivity=np.float32(1.0), noise_std=np.float64(4.0), count=np.int64(9)
    )
    assert ledger.mu == pytest.approx(0.75, rel=1e-12)
    with pytest.raises(ValueError, match="real number"):
        ledger.record_gaussian("arr", sensitivity=np.ones(2), noise_std=1.0)


def test_repeated_single_steps_equal_one_self_composed_event():
    step = dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(1.3))
    one_by_one = PrivacyLedger(math.inf, 1e-5, value_discretization_interval=FAST)
    for i in range(4):
        one_by_one.record_event(f"step {i}", step)
    together = PrivacyLedger(math.inf, 1e-5, value_discretization_interval=FAST)
    together.record_event("steps", poisson_event(1.3, 0.05, 2))
    together.record_event("more steps", dp_accounting.SelfComposedDpEvent(step, 2))
    reference = PLDAccountant(
        NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=FAST
    )
    for _ in range(4):
        reference.compose(step)
    expected = reference.get_epsilon(1e-5)
    assert one_by_one.epsilon_spent == pytest.approx(together.epsilon_spent, rel=1e-9)
    assert one_by_one.epsilon_spent == pytest.approx(expected, rel=2e-3)


def test_epsilon_after_event_previews_without_recording():
    ledger = PrivacyLedger(3.0, 1e-6, value_discretization_interval=FAST)
    ledger.record_gaussian("mean", sensitivity=1.0, noise_std=4.0)
    event = poisson_event(1.0, 0.02, 40)
    preview = ledger.epsilon_after_event(event)
    assert ledger.releases[-1].name == "mean" and ledger.accountant == "gdp"
    ledger.record_event("sgd", event)
    assert ledger.epsilon_spent == preview
    assert ledger.epsilon_after_event(dp_accounting.NoOpDpEvent()) == pytest.approx(preview)
