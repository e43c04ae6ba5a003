"""The empirical privacy audit: its statistics, and the audit of the real mechanisms.

The audit must (1) never contradict the claimed epsilon of the real single-step and dp_gd code,
and (2) be able to fail: the same audit flags a mechanism with half the noise or no clipping.
"""

from __future__ import annotations

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.stats import binom, norm

from private_head import _host_pass as host_pass
from private_head import _release as release
from private_head import _statistics as statistics
from private_head._kernel import clipped_gradient_sum
from private_head.audit import (
    AUDITABLE,
    audit_method,
    best_threshold,
    clopper_pearson,
    epsilon_lower_bound,
    gaussian_shift_epsilon_bound,
    orthogonal_canary,
)


def _gaussian_epsilon(mu: float, delta: float) -> float:
    """Reference: eps solving Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) = delta."""
    curve = lambda e: norm.cdf(-e / mu + mu / 2) - math.exp(e) * norm.cdf(-e / mu - mu / 2) - delta
    return brentq(curve, 0.0, 50.0, xtol=1e-12)


# --- Clopper-Pearson -------------------------------------------------------------------------


def test_clopper_pearson_known_values():
    # Published exact 95% interval for 5 successes in 10 trials: (0.1871, 0.8129).
    lo, hi = clopper_pearson(5, 10, 0.05)
    assert lo == pytest.approx(0.18709, abs=1e-4)
    assert hi == pytest.approx(0.81291, abs=1e-4)
    # Closed forms at the edges: k = 0: hi = 1 - (alpha/2)^(1/n); k = n: lo = (alpha/2)^(1/n).
    assert clopper_pearson(0, 20, 0.1) == (0.0, pytest.approx(1 - 0.05 ** (1 / 20)))
    assert clopper_pearson(20, 20, 0.1) == (pytest.approx(0.05 ** (1 / 20)), 1.0)


@given(n=st.integers(1, 500), frac=st.floats(0, 1), alpha=st.sampled_from([0.01, 0.05, 0.2]))
def test_clopper_pearson_inverts_the_binomial_tails(n, frac, alpha):
    """hi solves P(Bin(n, hi) <= k) = alpha/2 and lo solves P(Bin(n, lo) >= k) = alpha/2."""
    k = round(frac * n)
    lo, hi = clopper_pearson(k, n, alpha)
    assert 0 <= lo <= k / n <= hi <= 1
    if k < n:
        assert binom.cdf(k, n, hi) == pytest.approx(alpha / 2, rel=1e-6, abs=1e-12)
    if k > 0:
        assert binom.sf(k - 1, n, lo) == pytest.approx(alpha / 2, rel=1e-6, abs=1e-12)


def test_clopper_pearson_covers_at_the_nominal_rate():
    rng = np.random.default_rng(1)
    n, p, alpha = 60, 0.07, 0.1
    k = rng.binomial(n, p, size=4000)
    lo, hi = clopper_pearson(k, n, alpha)
    coverage = np.mean((lo <= p) & (p <= hi))
    assert coverage >= 1 - alpha - 0.015  # exact intervals are conservative


def test_clopper_pearson_rejects_bad_counts():
    for args in ((-1, 10), (11, 10), (2.5, 10), (1, 0)):
        with pytest.raises(ValueError, match="successes"):
            clopper_pearson(*args)


# --- epsilon lower bound ---------------------------------------------------------------------


def test_epsilon_lower_bound_matches_the_formula():
    n, delta, alpha = 1000, 1e-5, 0.05
    fp, fn = 3, 400
    fpr_hi = clopper_pearson(fp, n, alpha)[1]
    fnr_hi = clopper_pearson(fn, n, alpha)[1]
    expected = max(math.log((1 - delta - fnr_hi) / fpr_hi), math.log((1 - delta - fpr_hi) / fnr_hi))
    assert epsilon_lower_bound(fp, fn, n, delta, alpha) == pytest.approx(expected, rel=1e-12)
    assert epsilon_lower_bound(fn, fp, n, delta, alpha) == pytest.approx(expected, rel=1e-12)
    # A perfect test on n runs: FPR_hi = FNR_hi = 1 - (alpha/2)^(1/n).
    hi = 1 - (alpha / 2) ** (1 / n)
    assert epsilon_lower_bound(0, 0, n, 0.0, alpha) == pytest.approx(math.log((1 - hi) / hi))


@given(fp=st.integers(0, 300), fn=st.integers(0, 300))
def test_epsilon_lower_bound_is_monotone_and_nonnegative(fp, fn):
    n, delta = 300, 1e-6
    eps = epsilon_lower_bound(fp, fn, n, delta)
    assert eps >= 0
    if fp < n:  # more false positives can only weaken the evidence
        assert epsilon_lower_bound(fp + 1, fn, n, delta) <= eps + 1e-12
    if fp + fn >= n:  # no better than a coin
        assert eps == 0.0


def test_bound_on_an_ideal_gaussian_release_stays_below_its_epsilon():
    """On exact N(0,1) vs N(mu,1) samples the bound is below the true epsilon and not trivial."""
    delta = 1e-5
    for mu in (0.5, 1.0):
        bound = gaussian_shift_epsilon_bound(mu, 20_000, delta, seed=3)
        assert 0.3 * _gaussian_epsilon(mu, delta) < bound <= _gaussian_epsilon(mu, delta)


def test_threshold_is_chosen_in_the_gap():
    stat0 = np.linspace(-1, 0, 101)
    stat1 = np.linspace(1, 2, 101)
    threshold, bound = best_threshold(stat0, stat1, 1e-5)
    assert 0 <= threshold < 1 and bound == epsilon_lower_bound(0, 0, 101, 1e-5)


# --- audit of the real mechanisms --------------------------------------------------------------

EPSILON, DELTA, CLIP = 2.0, 1e-5, 0.1
RUNS = 100_000  # per world: 20% calibrate the test, 80% evaluate it


@pytest.fixture(scope="module")
def neighbours():
    """15 rows of dimension 4 spanning 3 dimensions, two classes, and an orthogonal canary."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(15, 4)).astype(np.float32)
    x[:, -1] = 0.0
    return orthogonal_canary(x, rng.integers(0, 2, size=15), 2, CLIP)


def _audit(method: str, runs: int = RUNS):
    """The user-facing audit of the registered method (its own plan, clipping, noise)."""
    options = {"steps": 3, "learning_rate": 0.5, "optimizer": "sgd"} if method == "dp_gd" else {}
    return audit_method(
        method,
        epsilon=EPSILON,
        delta=DELTA,
        runs=runs,
        seed=7,
        num_rows=15,
        dim=4,
        clip_norm=CLIP,
        **options,
    )


@pytest.fixture
def fresh_traces():
    """Compiled passes are cached by their statistic: a kernel patched in a test must be traced
    anew, and the honest one again afterwards."""
    jax.clear_caches()
    yield
    jax.clear_caches()


def test_canary_is_orthogonal_and_its_clipped_gradient_has_norm_c(neighbours):
    x, y = neighbours.without
    x1, y1 = neighbours.with_canary
    canary = x1[-1].astype(np.float64)
    assert np.array_equal(x1[:-1], x) and np.array_equal(y1[:-1], y) and y1[-1] == 0
    assert np.abs(x @ canary).max() < 1e-5 and np.linalg.norm(canary) == pytest.approx(1.0)
    # Reference: the canary's explicit gradient at W = 0 (uniform p0), clipped to C.
    grad = np.outer(canary, np.array([0.5, 0.5]) - np.eye(2)[0])
    clipped = grad * min(1.0, CLIP / np.linalg.norm(grad))
    u_w, u_b = neighbours.direction
    np.testing.assert_allclose(CLIP * u_w, clipped, atol=1e-6)
    assert np.linalg.norm(u_w) == pytest.approx(1.0, abs=1e-6) and not np.any(u_b)
    # The real kernel: the canary moves the clipped gradient sum by exactly C * direction.
    zeros_w, zeros_b = jnp.zeros((4, 2)), jnp.zeros(2)
    g0, _ = clipped_gradient_sum(
        zeros_w, zeros_b, jnp.asarray(x), jnp.asarray(y), CLIP, train_bias=False
    )
    g1, _ = clipped_gradient_sum(
        zeros_w, zeros_b, jnp.asarray(x1), jnp.asarray(y1), CLIP, train_bias=False
    )
    np.testing.assert_allclose(np.asarray(g1 - g0), CLIP * u_w, atol=1e-6)


def test_canary_must_be_orthogonal_and_worst_case():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="span all 4 dimensions"):
        orthogonal_canary(rng.normal(size=(10, 4)), np.zeros(10, int), 2, 0.1)
    with pytest.raises(ValueError, match="not worst-case"):
        orthogonal_canary(np.zeros((10, 4)), np.zeros(10, int), 2, clip_norm=1.0)


@pytest.mark.parametrize("method", ["single_step", "dp_gd"])
def test_audit_of_the_real_mechanism_stays_below_the_claimed_epsilon(method):
    result = _audit(method)
    assert result.consistent and result.epsilon_lower_bound <= EPSILON
    # Not a vacuous pass: the audit has power close to the ideal Gaussian release of the budget.
    assert result.epsilon_lower_bound > 0.5


@pytest.mark.parametrize("method", ["single_step", "dp_gd"])
def test_audit_flags_half_the_noise(method, monkeypatch, fresh_traces):
    """The ledger is charged honestly, but the noise drawn has half the std."""
    honest = release.gaussian_noise_like
    monkeypatch.setattr(
        release, "gaussian_noise_like", lambda key, tree, std: honest(key, tree, std / 2)
    )
    result = _audit(method)
    assert not result.consistent and result.epsilon_lower_bound > EPSILON


@pytest.mark.parametrize("method", ["single_step", "dp_gd"])
def test_audit_flags_skipped_clipping(method, monkeypatch, fresh_traces):
    """The noise is calibrated for C, but the canary's gradient (norm 0.71 = 7C) is not clipped."""
    for name, position in (("zero_init_class_sums", 3), ("clipped_gradient_sum", 4)):
        honest = getattr(statistics, name)

        def unclipped(*args, honest=honest, position=position, **kwargs):
            assert len(args) > position and "clip_norm" not in kwargs
            return honest(*args[:position], math.inf, *args[position + 1 :], **kwargs)

        monkeypatch.setattr(statistics, name, unclipped)
    for accumulator in (host_pass.ClassSums, host_pass.GradientSumsAcc):  # the CPU host kernels
        honest_init = accumulator.__init__

        def unclipped_init(self, *args, honest_init=honest_init, **kwargs):
            honest_init(self, *args, **kwargs)
            self.clip = math.inf

        monkeypatch.setattr(accumulator, "__init__", unclipped_init)
    result = _audit(method, runs=5_000)
    assert not result.consistent and result.epsilon_lower_bound > EPSILON


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(m, marks=pytest.mark.slow) if m in ("dp_sgd", "dp_feature_covariance") else m
        for m in AUDITABLE
        if m not in ("single_step", "dp_gd")
    ],
)
def test_audit_of_every_other_method_stays_below_the_claim(method):
    options = {"steps": 2} if method in ("dp_sgd", "dp_feature_covariance") else {}
    if method == "dp_sgd":
        options["batch_size"] = 5
    result = audit_method(method, epsilon=EPSILON, delta=DELTA, runs=20_000, seed=3, **options)
    assert result.consistent, (method, result.epsilon_lower_bound)


def test_the_audit_compares_true_neighbours():
    """D has N rows and D' = D + canary has N + 1: no row is zeroed out."""
    from private_head.audit import orthogonal_canary

    rng = np.random.default_rng(0)
    x = rng.normal(size=(15, 4)).astype(np.float32)
    x[:, -1] = 0.0
    pair = orthogonal_canary(x, rng.integers(0, 2, 15), 2, CLIP)
    assert len(pair.with_canary[0]) == len(pair.without[0]) + 1


def _audit_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "private_head.audit", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow  # 20,000 runs of dp_least_squares in a subprocess
def test_the_audit_cli_finishes_where_it_used_to_hang():
    proc = _audit_cli("--method", "dp_least_squares", "--epsilon", "8", "--runs", "20000")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[2].startswith("8 ") and lines[3] == ""  # the table, then the verdict in words
    bound = float(lines[2].split()[1])
    assert lines[4] == (
        f"epsilon 8: no violation detected: the 95%-confidence lower bound {bound:.2f} is below "
        "the claimed 8 (a lower bound only: passing is not a proof of privacy)"
    )


def test_the_verdict_says_whether_the_bound_contradicts_the_claim():
    from private_head.audit import AuditResult, verdict

    fields = {"delta": 1e-5, "fpr": 0.1, "fnr": 0.2, "threshold": 0.0, "orientation": 1}
    passed = AuditResult(0.69, 1.0, runs=1000, alpha=0.05, **fields)
    assert verdict(passed) == (
        "epsilon 1: no violation detected: the 95%-confidence lower bound 0.69 is below the "
        "claimed 1 (a lower bound only: passing is not a proof of privacy)"
    )
    failed = AuditResult(1.31, 1.0, runs=1000, alpha=0.01, **fields)
    assert verdict(failed) == (
        "epsilon 1: VIOLATION: the 99%-confidence lower bound 1.31 is above the claimed 1: the "
        "method leaks more than it claims"
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--method", "bogus"], "invalid choice: 'bogus'"),
        (["--method", "nonprivate"], "invalid choice: 'nonprivate'"),
        (["--epsilon", "0"], "expected a positive finite number"),
        (["--runs", "0"], "expected a positive finite number"),
        (["--method", "single_step", "--steps", "3"], "--steps applies to"),
    ],
)
def test_audit_cli_usage_errors_are_one_line(args, match):
    proc = _audit_cli(*args)
    assert proc.returncode == 2 and match in proc.stderr and proc.stderr.count("\n") == 1


def test_the_audit_cli_exits_1_on_a_violation(monkeypatch, capsys):
    """A contradicted claim must fail a script that runs the audit, not only print VIOLATION."""
    from private_head import audit

    def fake(method, *, epsilon, **_):
        bound = 2.0 * epsilon if epsilon > 1 else 0.5 * epsilon  # violates at the second epsilon
        fields = {"delta": 1e-5, "fpr": 0.1, "fnr": 0.2, "threshold": 0.0, "orientation": 1}
        return audit.AuditResult(bound, epsilon, runs=1000, alpha=0.05, **fields)

    monkeypatch.setattr(audit, "audit_method", fake)
    assert audit.main(["--epsilon", "1", "--runs", "1000"]) == 0
    assert audit.main(["--epsilon", "1", "2", "--runs", "1000"]) == 1
    assert "epsilon 2: VIOLATION" in capsys.readouterr().out
