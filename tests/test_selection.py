"""select(): add/remove-stable split, GDP domination of the pure-DP selection, whole-cost ledger,
and the best candidate chosen when the budget is generous."""

import math

import jax
import numpy as np
import pytest
from dp_accounting.pld import common, privacy_loss_distribution
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from accounting.gdp import epsilon_from_mu, mu_from_epsilon
from private_head import select
from private_head._rows import validation_mask
from private_head._selection import epsilon_dominated_by, mu_dominating, noisy_choice


@settings(max_examples=30)
@given(st.integers(1, 60), st.integers(1, 9), st.integers(0, 2**31 - 1), st.integers(0, 60))
def test_split_of_a_row_depends_only_on_that_row(n, d, seed, where):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, 3, n)
    mask = validation_mask(x, y, 0.3, salt=5)
    where = min(where, n)  # add one example anywhere: every other row keeps its part
    x2 = np.insert(x, where, rng.standard_normal(d).astype(np.float32), axis=0)
    y2 = np.insert(y, where, 1)
    mask2 = validation_mask(x2, y2, 0.3, salt=5)
    np.testing.assert_array_equal(np.delete(mask2, where), mask)
    np.testing.assert_array_equal(validation_mask(x[::-1], y[::-1], 0.3, salt=5), mask[::-1])


def test_split_fraction_and_dependence_on_label_and_salt():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 3)).astype(np.float16)
    y = np.zeros(20000, np.int64)
    mask = validation_mask(x, y, 0.1)
    assert abs(mask.mean() - 0.1) < 4 * math.sqrt(0.09 / 20000)
    other_label = validation_mask(x, y + 1, 0.1)
    other_salt = validation_mask(x, y, 0.1, salt=1)
    for other in (other_label, other_salt):  # an independent-looking split
        assert abs((mask & other).mean() - 0.01) < 4 * math.sqrt(0.0099 / 20000)


def _tradeoff_gdp(alpha, mu):
    return norm.cdf(norm.ppf(1 - alpha) - mu)


@settings(max_examples=40)
@given(st.floats(0.01, 8.0))
def test_pure_dp_tradeoff_curve_lies_above_the_dominating_gaussian(eps):
    mu = mu_dominating(eps)
    assert epsilon_dominated_by(mu) == pytest.approx(eps, rel=1e-9)
    alpha = np.linspace(0, 1, 2001)
    pure = np.maximum.reduce(
        [np.zeros_like(alpha), 1 - math.exp(eps) * alpha, math.exp(-eps) * (1 - alpha)]
    )
    assert np.all(pure >= _tradeoff_gdp(alpha, mu) - 1e-12)
    knee = 1 / (1 + math.exp(eps))  # the curves touch at the symmetric point
    assert _tradeoff_gdp(knee, mu) == pytest.approx(knee, rel=1e-7)


@pytest.mark.parametrize("mu_train,mu_sel", [(0.5, 0.2), (1.5, 0.5), (3.0, 1.0)])
def test_gdp_charge_upper_bounds_the_exact_pld_composition(mu_train, mu_sel):
    """Ledger-style GDP epsilon of (Gaussian training, eps_sel-DP selection) >= the exact PLD of
    the Gaussian composed with the worst eps_sel-DP pair, and not far above it."""
    delta = 1e-5
    eps_sel = epsilon_dominated_by(mu_sel)
    charged = epsilon_from_mu(math.hypot(mu_train, mu_sel), delta)
    gauss = privacy_loss_distribution.from_gaussian_mechanism(
        1 / mu_train, value_discretization_interval=1e-4
    )
    pure = privacy_loss_distribution.from_privacy_parameters(
        common.DifferentialPrivacyParameters(eps_sel, 0.0), value_discretization_interval=1e-4
    )
    exact = gauss.compose(pure).get_epsilon_for_delta(delta)
    assert exact <= charged * (1 + 1e-3)
    assert charged < 1.35 * exact


def test_exponential_mechanism_samples_the_softmax_of_eps_times_counts():
    correct, eps = np.array([3.0, 2.0, 0.0]), 0.7
    draws = 1200
    picks = (
        np.bincount(
            [
                int(
                    noisy_choice(
                        jax.random.fold_in(jax.random.key(0), i), correct, eps, "exponential"
                    )
                )
                for i in range(draws)
            ],
            minlength=3,
        )
        / draws
    )
    expected = np.exp(eps * correct) / np.exp(eps * correct).sum()
    np.testing.assert_allclose(picks, expected, atol=4 * math.sqrt(0.25 / draws))
    laplace = [int(noisy_choice(jax.random.key(i), correct, 100.0, "noisy_max")) for i in range(20)]
    assert laplace == [0] * 20  # generous budget: the best score wins


def _anisotropic(n, d=16, k=4, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((k, d))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    spectrum = np.arange(1, d + 1) ** -2.0
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    factor = np.sqrt(spectrum * d / spectrum.sum())[:, None] * basis.T
    y = (np.arange(n) % k).astype(np.int32)
    return (means[y] + rng.standard_normal((n, d)) @ factor).astype(np.float32), y


CANDIDATES = [
    {"method": "single_step"},
    {"method": "dp_least_squares"},
    {"method": "dp_prototypes", "metric": "euclidean"},
]


@pytest.mark.parametrize("mechanism", ["noisy_max", "exponential"])
def test_select_charges_every_candidate_and_the_selection_and_picks_the_best(mechanism):
    x, y = _anisotropic(3000)
    eps, delta = 40.0, 1e-5
    head = select(
        x,
        y,
        num_classes=4,
        epsilon=eps,
        delta=delta,
        candidates=CANDIDATES,
        mechanism=mechanism,
        seed=0,
    )
    report = head.privacy
    sel = report["selection"]
    assert sel["chosen"] == 1 and head.settings["method"] == "dp_least_squares"
    assert sel["hyperparameters"] == "selected privately" and sel["mechanism"] == mechanism
    names = [r["name"] for r in report["releases"]]
    for j, c in enumerate(CANDIDATES):
        assert any(name.startswith(f"candidate {j} ({c['method']})") for name in names)
    assert names[0] == "dataset_size/noisy_count" and names[-1] == "selection"
    assert report["releases"][-1]["description"].startswith(mechanism)
    assert report["releases"][-1]["event"]["type"] == "gaussian"
    assert report["releases"][-1]["noise_std"] is None
    mu = math.sqrt(0.99) * mu_from_epsilon(eps, delta)  # what the noisy count leaves
    mus = [r["mu"] for r in report["releases"]]
    per_candidate = {
        j: math.sqrt(
            sum(m * m for n, m in zip(names, mus, strict=True) if n.startswith(f"candidate {j} "))
        )
        for j in range(3)
    }
    for j in range(3):  # each candidate spent its share, no more
        assert per_candidate[j] == pytest.approx(math.sqrt(0.9 / 3) * mu, rel=1e-6)
    assert mus[-1] == pytest.approx(math.sqrt(0.1) * mu, rel=1e-9)
    assert sel["epsilon_selection"] == pytest.approx(epsilon_dominated_by(mus[-1]), rel=1e-12)
    assert report["mu"] == pytest.approx(mu_from_epsilon(eps, delta), rel=1e-6)
    assert report["epsilon_spent"] == pytest.approx(eps, rel=1e-5)
    assert report["epsilon_spent"] <= eps * (1 + 1e-9)
    assert report["seeded"] is True


def test_public_validation_spends_nothing_on_selection():
    x, y = _anisotropic(2000)
    xp, yp = _anisotropic(600, seed=0)  # same distribution (same seed => same means), public
    head = select(
        x,
        y,
        num_classes=4,
        epsilon=8.0,
        delta=1e-5,
        candidates=CANDIDATES,
        public_validation=(xp[-300:], yp[-300:]),
        seed=1,
    )
    sel = head.privacy["selection"]
    assert sel["hyperparameters"] == "selected on public data" and sel["chosen"] == 1
    assert not any(r["name"].startswith("selection") for r in head.privacy["releases"])
    assert head.privacy["mu"] == pytest.approx(mu_from_epsilon(8.0, 1e-5), rel=1e-6)


@pytest.mark.parametrize(
    "candidates,kwargs,match",
    [
        ([{"method": "dp_sgd"}], {}, "non-Gaussian"),
        ([{"method": "nonprivate"}], {}, "nonprivate"),
        ([], {}, "non-empty"),
        ([{"method": "single_step", "epsilon": 3}], {}, r"does not take option\(s\) \['epsilon'\]"),
        ([{"method": "single_step", "feature_norm": 3}], {}, "arguments of select itself"),
        ([{"method": "single_step"}], {"mechanism": "argmax"}, "mechanism"),
        ([{"method": "single_step"}], {"validation_fraction": 1.0}, "validation_fraction"),
    ],
)
def test_bad_arguments_are_clear_errors(candidates, kwargs, match):
    x, y = _anisotropic(200)
    with pytest.raises(ValueError, match=match):
        select(
            x, y, num_classes=4, epsilon=1.0, delta=1e-5, candidates=candidates, seed=0, **kwargs
        )
