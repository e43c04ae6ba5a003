"""``auto``'s rule: the released feature spread (its sensitivity, its value on known spectra, its
charge) and the head it picks from it."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import private_head
from accounting.gdp import mu_from_epsilon
from private_head._budget import Allowance
from private_head._method import PublicInfo
from private_head._methods import auto, dp_feature_covariance
from private_head._rows import Rows
from private_head._statistics import Gram
from private_head._train import SPREAD
from tests.helpers import blobs

K, EPS, DELTA = 3, 4.0, 1e-5


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, (7, 5), elements=st.floats(-1, 1)),
    arrays(np.float64, (5,), elements=st.floats(-1, 1)),
)
def test_one_row_moves_the_gram_frobenius_norm_by_at_most_its_square_norm(rows, row):
    """The spread's sensitivity: | ||G + b b^T||_F - ||G||_F | <= ||b||^2 = ||b b^T||_F."""
    gram = rows.T @ rows
    moved = np.linalg.norm(gram + np.outer(row, row)) - np.linalg.norm(gram)
    assert abs(moved) <= row @ row * (1 + 1e-12) + 1e-12


def _isotropic(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, K, n).astype(np.int32)


def _fit(x, y, **options):
    return private_head.fit(
        x, y, num_classes=K, epsilon=EPS, delta=DELTA, seed=3, progress=False, **options
    )


def test_isotropic_rows_have_spread_near_one_and_get_dp_gd():
    x, y = _isotropic(4000, 16)
    head = _fit(x, y)
    spread = head.privacy["feature_spread"]["value"]
    # Exactly sqrt(D ||G||_F^2) / tr(G) = sqrt(1 + D / n) for Gaussian rows, up to the noise.
    assert abs(spread - math.sqrt(1 + 16 / 4000)) < 0.05
    assert head.privacy["auto"]["chosen"]["method"] == "dp_gd"
    assert "below 2.5" in head.privacy["auto"]["reason"]


def test_rows_along_few_directions_have_a_large_spread_and_get_whitened():
    x, y = _isotropic(4000, 16)
    x = x + 3.0  # a common direction (1, ..., 1) holds most of the second moment
    head = _fit(x.astype(np.float32), y)
    spread = head.privacy["feature_spread"]["value"]
    b = x / np.linalg.norm(x, axis=1, keepdims=True)  # the default preprocessing: ||b_i|| = 1
    exact = math.sqrt(16 * np.sum((b.T @ b) ** 2)) / np.trace(b.T @ b)
    assert spread > 2.5 and abs(spread - exact) < 0.05
    assert head.privacy["auto"]["chosen"]["method"] == "dp_feature_covariance"


def test_the_spread_is_charged_its_share_and_replaces_no_other_release():
    x, y = blobs(600, 8, K, seed=2)
    head = _fit(x, y)
    releases = {r["name"]: r for r in head.privacy["releases"]}
    spread = releases[SPREAD]
    mu = mu_from_epsilon(EPS, DELTA)
    multiplier = spread["noise_std"] / spread["sensitivity"]
    assert spread["sensitivity"] == pytest.approx(1.0)  # r^2 with the default r = 1
    assert 1 / multiplier == pytest.approx(math.sqrt(auto.SPREAD_FRACTION) * mu, rel=1e-3)
    assert head.privacy["feature_spread"]["budget_fraction"] == auto.SPREAD_FRACTION
    assert head.privacy["epsilon_spent"] <= EPS
    assert "dataset_size/noisy_count" in releases


def test_no_spread_is_released_for_other_methods_or_the_private_selection():
    x, y = blobs(600, 8, K, seed=2)
    for options in ({"method": "dp_gd", "steps": 2}, {"method": "auto", "select": "private"}):
        head = _fit(x, y, **options)
        assert SPREAD not in [r["name"] for r in head.privacy["releases"]]
        assert "feature_spread" not in head.privacy


def test_a_gram_over_the_memory_budget_releases_nothing_and_runs_dp_gd():
    x, y = _isotropic(300, 64)
    head = _fit(x, y, max_device_bytes=64 * 64 * 4 * 5)  # under the Gram's 6 copies
    assert SPREAD not in [r["name"] for r in head.privacy["releases"]]
    assert head.privacy["auto"]["chosen"]["method"] == "dp_gd"
    assert "no feature spread was released" in head.privacy["auto"]["reason"]


@pytest.mark.parametrize(
    ("spread", "method"),
    [
        (None, "dp_gd"),
        (1.0, "dp_gd"),
        (2.49, "dp_gd"),
        (2.5, "dp_feature_covariance"),
        (40.0, "dp_feature_covariance"),
    ],
)
def test_the_rule_reads_only_the_released_spread(spread, method):
    public = PublicInfo(64, 10, 5000.0, 1.0, spread)
    assert auto.choose(public, Allowance(1.0, EPS, DELTA))[0] == {"method": method}


@pytest.mark.parametrize(("mu", "method"), [(0.25, "dp_gd"), (0.7, "dp_feature_covariance")])
def test_no_covariance_release_where_dp_fc_could_not_whiten(mu, method):
    """ScatterNet's shape (D = 3,969, n = 4,000, spread 29): ||X^T X / n||_F = 29 / 63 = 0.46 is
    under DP-FC's whitening line at mu = 0.25 and above it at mu = 0.7."""
    public = PublicInfo(3969, 10, 4000.0, 1.0, 29.0)
    allowance = Allowance(mu, EPS, DELTA)
    covariance = dp_feature_covariance.METHOD
    line = covariance.plan(covariance.options(), public, allowance).settings.whitening_line
    assert (29.0 / math.sqrt(3969) < line) == (method == "dp_gd")
    chosen, reason = auto.choose(public, allowance)
    assert chosen == {"method": method}
    assert ("with less budget" in reason) == (method == "dp_gd")


@pytest.mark.parametrize("options", [{"spread_budget_fraction": 0.0}, {"spread_threshold": -1.0}])
def test_bad_rule_options_are_refused(options):
    x, y = blobs(100, 8, K)
    with pytest.raises(ValueError, match="spread_"):
        _fit(x, y, **options)


@pytest.mark.parametrize(("factor", "whitens"), [(0.85, False), (1.1, True)])
def test_the_whitening_line_is_where_dp_fc_starts_to_whiten(factor, whitens):
    """A Gram with one top eigenvalue ``factor x whitening_line`` (in units of X^T X / n) plus
    DP-FC's symmetric noise: its structure test passes above the line and fails below it (the
    BBP shift lambda + e^2 / (4 lambda), not the bare lambda, meets threshold x e)."""
    from private_head._linalg import whitening
    from private_head._release import symmetric_noise

    dim, n, std, threshold = 400, 1000.0, 2.0, 1.5
    edge = math.sqrt(2 * dim) * std / n
    settings = dp_feature_covariance.CovarianceSettings(0.1, 0.0, edge, 0.35, threshold, None)
    top = factor * settings.whitening_line
    assert top / edge < threshold  # below the test's own line: only the shift can pass it
    v = np.random.default_rng(0).normal(size=dim)
    gram = n * top * np.outer(v, v) / (v @ v)
    noisy = gram + np.asarray(symmetric_noise(jax.random.key(1), dim, std), np.float64)
    transform = whitening(jnp.asarray(noisy, jnp.float32), n, 0.01 * edge, edge, 0.35, threshold)
    assert (not np.allclose(transform, np.eye(dim))) == whitens


def _gram_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter of the passes over the rows that sum a Gram (compiled pass or host kernel)."""
    count = [0]
    for name in ("_device_sum", "_host_sum"):
        original = getattr(Rows, name)

        def counted(self, stat, *rest, _original=original):
            count[0] += isinstance(stat, Gram)
            return _original(self, stat, *rest)

        monkeypatch.setattr(Rows, name, counted)
    return count


@pytest.mark.parametrize("options", [{}, {"groups": 4}], ids=["scaled", "standardized"])
def test_auto_reads_the_rows_for_the_gram_once_and_releases_what_two_passes_would(
    options, monkeypatch
):
    """auto -> DP-FC: the feature spread's pass keeps its exact Gram and DP-FC's Gram release
    takes it, so the rows are read for the Gram once; the head and the report are bitwise those
    of the same seeded fit with nothing kept (the Gram summed twice). ``groups``: the private
    standardisation, whose rows the pass materialises."""
    x, y = _isotropic(1000, 16)
    x = (x + 3.0).astype(np.float32)
    passes = _gram_passes(monkeypatch)
    once = _fit(x, y, spread_threshold=0.0, **options)
    assert once.privacy["auto"]["chosen"]["method"] == "dp_feature_covariance"
    assert passes[0] == 1

    original = Rows.sum
    monkeypatch.setattr(Rows, "sum", lambda self, *a, keep=False, **k: original(self, *a, **k))
    twice = _fit(x, y, spread_threshold=0.0, **options)
    assert passes[0] == 1 + 2
    assert once.weights.tobytes() == twice.weights.tobytes()
    assert once.bias.tobytes() == twice.bias.tobytes()
    assert once.privacy == twice.privacy
    assert once.operator_log["passes"] == twice.operator_log["passes"] - 1


def test_the_operator_log_counts_dp_fc_descent_over_its_whitened_rows():
    """DP-FC's whitened rows are a new, materialised Rows; their passes still count in the fit's
    operator log (it said 1 pass for a 110-step DP-FC fit)."""
    x, y = _isotropic(500, 8)
    short, long = (_fit(x, y, method="dp_feature_covariance", steps=steps) for steps in (3, 7))
    assert long.operator_log["passes"] - short.operator_log["passes"] == 4
    assert short.operator_log["passes"] >= 3 + 1  # the descent and the Gram at least
