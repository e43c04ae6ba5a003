"""PrivacyLedger: one entry point (``compose``), exact GDP composition, PLD for mixed releases,
refusal before overspending, and a report that lists each release's event as data."""

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
    event_from_dict,
    event_to_dict,
    gaussian_event,
    mu_from_epsilon,
    poisson_event,
)

FAST = 1e-3  # PLD value discretisation used by the mixed-release tests


def test_full_batch_steps_compose_like_epsilon_full_batch():
    ledger = PrivacyLedger(8.0, 1e-6)
    ledger.compose("steps", gaussian_event(2.0 * 1.7 / 2.0, 4))
    assert ledger.accountant == "gdp"
    assert ledger.mu == pytest.approx(2 / 1.7, rel=1e-12)
    assert ledger.epsilon_spent == pytest.approx(epsilon_full_batch(1.7, 4, 1e-6), rel=1e-12)


def test_heterogeneous_gaussians_compose_as_root_sum_of_squares():
    ledger = PrivacyLedger(math.inf, 1e-5)
    ledger.compose("mean", gaussian_event(4.0))
    ledger.compose("cov", gaussian_event(5.0 / 3.0, 3))
    ledger.compose("gauss event", dp_accounting.GaussianDpEvent(2.0))
    mu = math.sqrt(0.25**2 + 3 * 0.6**2 + 0.5**2)
    assert ledger.accountant == "gdp"
    assert ledger.mu == pytest.approx(mu, rel=1e-12)
    assert ledger.epsilon_spent == pytest.approx(epsilon_from_mu(mu, 1e-5), rel=1e-12)


def test_gaussian_plus_poisson_matches_direct_pld():
    ledger = PrivacyLedger(10.0, 1e-6, value_discretization_interval=FAST)
    ledger.compose("mean", gaussian_event(6.0 / 2.0, 4))
    ledger.compose("sgd", poisson_event(1.1, 0.02, 50))
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
    ledger.compose("first", gaussian_event(3.0))
    spent = ledger.epsilon_spent
    with pytest.raises(BudgetExceededError, match="over the budget"):
        ledger.compose("too much", gaussian_event(1.0, 4))
    assert [r.name for r in ledger.releases] == ["first"]
    assert ledger.epsilon_spent == spent
    # the remaining mu is exactly spendable, and then nothing more is
    extra = ledger.remaining_mu
    assert math.hypot(ledger.mu, extra) == pytest.approx(mu_from_epsilon(2.0, 1e-6), rel=1e-12)
    ledger.compose("rest", gaussian_event(1.0 / extra))
    assert ledger.epsilon_spent == pytest.approx(2.0, rel=1e-9)
    assert ledger.remaining_mu == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(BudgetExceededError):
        ledger.compose("more", gaussian_event(100.0))
    assert len(ledger.releases) == 2


def test_refuses_overspend_under_pld():
    ledger = PrivacyLedger(1.0, 1e-6, value_discretization_interval=FAST)
    ledger.compose("sgd", poisson_event(1.0, 0.01, 20))
    spent = ledger.epsilon_spent
    assert 0 < spent < 1.0
    with pytest.raises(BudgetExceededError):
        ledger.compose("big", gaussian_event(1.0))
    assert len(ledger.releases) == 1 and ledger.epsilon_spent == spent
    assert ledger.remaining_epsilon == pytest.approx(1.0 - spent)


def test_zero_noise_refused_on_finite_budget_allowed_without_limit():
    with pytest.raises(BudgetExceededError):
        PrivacyLedger(100.0, 1e-6).compose("raw", gaussian_event(0.0))
    unlimited = PrivacyLedger(math.inf, 1e-6)
    assert unlimited.remaining_mu == math.inf
    unlimited.compose("raw", gaussian_event(0.0))
    assert unlimited.epsilon_spent == math.inf and unlimited.mu == math.inf
    report = json.loads(json.dumps(unlimited.report(), allow_nan=False))
    assert report["epsilon_spent"] == "inf" and report["epsilon_budget"] == "inf"
    assert report["releases"][0]["mu"] == "inf"


def test_report_round_trips_through_json_and_lists_each_event_as_data():
    ledger = PrivacyLedger(4.0, 1e-6, value_discretization_interval=FAST)
    ledger.compose("steps", gaussian_event(5.0, 9), sensitivity=1.0, noise_std=5.0)
    ledger.compose("sgd", poisson_event(2.0, 0.05, 10), description="10 Poisson steps")
    report = ledger.report()
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["accountant"] == "pld" and report["adjacency"] == "add_or_remove_one"
    assert "dataset_size" not in report and report["delta"] == 1e-6  # fit states the size source
    assert report["epsilon_budget"] == 4.0 and report["mu"] is None
    assert report["epsilon_spent"] == ledger.epsilon_spent
    steps, sgd = report["releases"]
    assert steps == {
        "name": "steps",
        "event": {
            "type": "self_composed",
            "count": 9,
            "event": {"type": "gaussian", "noise_multiplier": 5.0},
        },
        "mu": pytest.approx(0.6),
        "sensitivity": 1.0,
        "noise_std": 5.0,
    }
    assert sgd == {
        "name": "sgd",
        "event": {
            "type": "self_composed",
            "count": 10,
            "event": {
                "type": "poisson_sampled",
                "sampling_probability": 0.05,
                "event": {"type": "gaussian", "noise_multiplier": 2.0},
            },
        },
        "mu": None,
        "description": "10 Poisson steps",
    }


def test_a_report_re_accounts_to_exactly_its_epsilon():
    ledger = PrivacyLedger(6.0, 1e-6, value_discretization_interval=FAST)
    ledger.compose("mean", gaussian_event(3.0 / 0.7))
    ledger.compose("sgd", poisson_event(1.3, 0.03, 20))
    ledger.compose("selection", gaussian_event(1 / 0.3))
    again = PrivacyLedger(6.0, 1e-6, value_discretization_interval=FAST)
    for r in json.loads(json.dumps(ledger.report()))["releases"]:
        again.compose(r["name"], event_from_dict(r["event"]))
    assert again.epsilon_spent == ledger.epsilon_spent
    assert [r.event for r in again.releases] == [r.event for r in ledger.releases]


@pytest.mark.parametrize(
    "event",
    [
        dp_accounting.GaussianDpEvent(0.7),
        dp_accounting.ComposedDpEvent([gaussian_event(2.0, 3), dp_accounting.NoOpDpEvent()]),
        poisson_event(1.1, 1e-7 / 3, 1000),
        dp_accounting.LaplaceDpEvent(0.5),
    ],
    ids=["gaussian", "composed", "poisson", "laplace"],
)
def test_events_are_written_as_data_and_read_back_exactly(event):
    data = json.loads(json.dumps(event_to_dict(event), allow_nan=False))
    assert event_from_dict(data) == event
    with pytest.raises(ValueError, match="unknown event type"):
        event_from_dict({**data, "type": "gausian"})


def test_a_gdp_mechanism_is_composed_as_the_gaussian_event_that_dominates_it():
    ledger = PrivacyLedger(4.0, 1e-6)
    ledger.compose("steps", gaussian_event(2.0))
    text = "0.1-DP, dominated by 0.3-GDP"
    release = ledger.compose("selection", gaussian_event(1 / 0.3), description=text)
    assert release.mu == pytest.approx(0.3) and release.description == {"description": text}
    assert ledger.accountant == "gdp" and ledger.mu == pytest.approx(math.hypot(0.5, 0.3))
    assert ledger.report()["releases"][1]["description"] == text


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (dp_accounting.GaussianDpEvent(math.nan), "noise_multiplier"),
        (dp_accounting.GaussianDpEvent(-1.0), "noise_multiplier"),
        (dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.0), 0), "count"),
        (dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.0), 2.0), "count"),
        (poisson_event(1.0, 1.5, 2), "sampling_probability"),
        (poisson_event(1.0, math.nan, 2), "sampling_probability"),
    ],
)
def test_a_malformed_event_is_a_clear_error_and_records_nothing(event, message):
    ledger = PrivacyLedger(1.0, 1e-6)
    with pytest.raises(ValueError, match=message) as info:
        ledger.compose("x", event)
    assert not isinstance(info.value, BudgetExceededError)
    assert ledger.releases == ()


@pytest.mark.parametrize(
    ("args", "message"),
    [((-1.0,), "noise_multiplier"), ((math.nan,), "noise_multiplier"), ((1.0, 0), "count")],
)
def test_a_bad_gaussian_event_is_a_clear_error(args, message):
    with pytest.raises(ValueError, match=message):
        gaussian_event(*args)


def test_a_description_is_json_scalars():
    ledger = PrivacyLedger(1.0, 1e-6)
    for bad in ({"sensitivity": [1.0]}, {"mu": 1.0}, {"noise_std": np.ones(2)}):
        with pytest.raises(ValueError, match="description"):
            ledger.compose("x", gaussian_event(10.0), **bad)
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
        ledger.compose("x", "gaussian")
    with pytest.raises(ValueError, match="cannot account"):
        ledger.compose("x", dp_accounting.UnsupportedDpEvent())
    with pytest.raises(ValueError, match="name"):
        ledger.compose("", gaussian_event(1.0))
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
            ledger.compose(f"r{i}", gaussian_event(std / c, count))
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
    ledger.compose("np", gaussian_event(np.float64(4.0), np.int64(9)))
    assert ledger.mu == pytest.approx(0.75, rel=1e-12)
    with pytest.raises(ValueError, match="real number"):
        ledger.compose("arr", gaussian_event(np.ones(2)))


def test_repeated_single_steps_equal_one_self_composed_event():
    step = dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(1.3))
    one_by_one = PrivacyLedger(math.inf, 1e-5, value_discretization_interval=FAST)
    for i in range(4):
        one_by_one.compose(f"step {i}", step)
    together = PrivacyLedger(math.inf, 1e-5, value_discretization_interval=FAST)
    together.compose("steps", poisson_event(1.3, 0.05, 2))
    together.compose("more steps", dp_accounting.SelfComposedDpEvent(step, 2))
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
    ledger.compose("mean", gaussian_event(4.0))
    event = poisson_event(1.0, 0.02, 40)
    preview = ledger.epsilon_after_event(event)
    assert ledger.releases[-1].name == "mean" and ledger.accountant == "gdp"
    ledger.compose("sgd", event)
    assert ledger.epsilon_spent == preview
    assert ledger.epsilon_after_event(dp_accounting.NoOpDpEvent()) == pytest.approx(preview)
