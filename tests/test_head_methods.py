"""The kernel engineer's methods: single_step, dp_gd, dp_sgd (ledger, invariances, accuracy)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from accounting import BudgetExceededError, PrivacyLedger, noise_multiplier_poisson
from private_head.config import FitConfig
from private_head.data import preprocess
from private_head.dp_sgd import (
    RELEASE,
    calibrate,
    max_batch_size,
    poisson_sample,
    sampled_gradient_sum,
)
from private_head.kernel import clipped_gradient_sum, zero_init_class_sums
from private_head.methods import get_method

K, D, N, DELTA = 4, 8, 600, 1e-5
PLD_INTERVAL = 1e-2  # coarse PLD discretisation keeps dp_sgd's calibration fast in tests


def blobs(seed=0, n=N, spread=3.0):
    """Isotropic classes around orthogonal centres of equal norm ``spread``."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(D, K)))[0].T * spread
    y = rng.integers(0, K, n).astype(np.int32)
    return (centres[y] + rng.normal(size=(n, D))).astype(np.float32), y


def fit(method, X, y, *, epsilon=8.0, ledger=None, seed=0, **kw):
    config = FitConfig(epsilon=epsilon, delta=DELTA, method=method, **kw)
    data = preprocess(X, y, config, num_classes=K)
    ledger = ledger or PrivacyLedger(epsilon, DELTA, value_discretization_interval=PLD_INTERVAL)
    W, b = get_method(method)(data, config, ledger, jax.random.key(seed))
    return np.asarray(W), np.asarray(b), ledger, np.asarray(data.features)


def accuracy(W, b, Xp, y):
    return float(np.mean(np.argmax(Xp @ W + b, axis=1) == y))


def mean_loss(W, b, Xp, y, loss="softmax"):
    z = Xp @ W + b
    if loss == "softmax":
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))
    t = np.eye(K)[y]
    return float(np.mean(np.sum(np.logaddexp(0, z) - t * z, axis=1)))


def test_single_step_ledger_and_noise_scale():
    X, y = blobs()
    ledger = PrivacyLedger(4.0, DELTA)
    ledger.record_gaussian("earlier release", sensitivity=1.0, noise_std=5.0)
    mu_left = ledger.remaining_mu
    W, b, ledger, _ = fit("single_step", X, y, epsilon=4.0, ledger=ledger, clip_norm=0.5)
    (first, release) = ledger.releases
    assert release.name == "single_step: clipped gradient sum" and release.count == 1
    assert release.sensitivity == 0.5
    assert math.isclose(release.noise_std, 0.5 / mu_left, rel_tol=1e-9)
    assert math.isclose(ledger.epsilon_spent, 4.0, rel_tol=1e-6)
    assert np.all(b == 0)  # bias untouched by default
    # spending nothing more is refused before any noise is drawn
    with pytest.raises(BudgetExceededError):
        fit("single_step", X, y, epsilon=4.0, ledger=ledger)
    assert len(ledger.releases) == 2


def test_single_step_predictions_do_not_depend_on_learning_rate(train_bias=True):
    X, y = blobs(1)
    W1, b1, _, Xp = fit("single_step", X, y, learning_rate=1.0, train_bias=train_bias)
    W2, b2, _, _ = fit("single_step", X, y, learning_rate=0.013, train_bias=train_bias)
    np.testing.assert_allclose(W2, 0.013 * W1, rtol=1e-5, atol=1e-9)
    assert np.array_equal(np.argmax(Xp @ W1 + b1, 1), np.argmax(Xp @ W2 + b2, 1))
    # and it is one plain SGD step of dp_gd with the same key
    Wg, bg, _, _ = fit("dp_gd", X, y, steps=1, optimizer="sgd", train_bias=train_bias)
    np.testing.assert_allclose(Wg, W1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bg, b1, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_single_step_near_nonprivate_accuracy_at_epsilon_8(loss):
    X, y = blobs(2, n=4000, spread=2.5)
    Xt, yt = blobs(2, n=6000, spread=2.5)  # same centres, fresh noise: a test set
    Xt, yt = Xt[4000:], yt[4000:]
    W, b, ledger, _ = fit("single_step", X, y, loss=loss)
    Xt_p = Xt / np.linalg.norm(Xt, axis=1, keepdims=True)
    X_p = X / np.linalg.norm(X, axis=1, keepdims=True)
    ceiling = LogisticRegression(C=100.0, max_iter=2000).fit(X_p, y).score(Xt_p, yt)
    assert ceiling > 0.8
    assert accuracy(W, b, Xt_p, yt) >= ceiling - 0.05
    assert ledger.epsilon_spent <= 8.0 * (1 + 1e-9)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "lamb"])
def test_dp_gd_each_optimizer_improves_over_zero(optimizer):
    X, y = blobs(3)
    lr = {"sgd": 2.0, "momentum": 1.0, "adam": 0.1, "lamb": 0.1}[optimizer]
    W, b, ledger, Xp = fit(
        "dp_gd",
        X,
        y,
        epsilon=20.0,
        steps=5,
        optimizer=optimizer,
        learning_rate=lr,
        weight_decay=1e-3,
        train_bias=True,
    )
    assert mean_loss(W, b, Xp, y) < math.log(K) - 0.2
    assert accuracy(W, b, Xp, y) > 0.7
    (release,) = ledger.releases
    assert release.name == "dp_gd: clipped gradient sums" and release.count == 5
    mu = PrivacyLedger(20.0, DELTA).remaining_mu
    assert math.isclose(release.noise_std, math.sqrt(5) / mu, rel_tol=1e-9)


def test_dp_gd_fits_with_other_seeds_and_epsilons_reuse_one_compiled_loop():
    from private_head import full_batch

    X, y = blobs(5)
    full_batch.run_in_memory.clear_cache()
    W0, b0, *_ = fit("dp_gd", X, y, epsilon=8.0, seed=0, steps=3, train_bias=True)
    W1, *_ = fit("dp_gd", X, y, epsilon=2.0, seed=1, steps=3, train_bias=True)
    assert full_batch.run_in_memory._cache_size() == 1  # noise std and key are traced
    assert not np.allclose(W0, W1)  # the second fit really drew other (larger) noise
    W2, b2, *_ = fit("dp_gd", X, y, epsilon=8.0, seed=0, steps=3, train_bias=True)
    np.testing.assert_array_equal(W2, W0)  # the reused loop gives the same head bit for bit
    np.testing.assert_array_equal(b2, b0)
    fit("dp_gd", X, y, epsilon=8.0, seed=0, steps=2, train_bias=True)
    assert full_batch.run_in_memory._cache_size() == 2  # other static settings: another loop


def test_dp_gd_sigmoid_loss_with_fixed_bias():
    X, y = blobs(4)
    W, b, _, Xp = fit("dp_gd", X, y, epsilon=20.0, steps=3, loss="sigmoid", learning_rate=3.0)
    np.testing.assert_allclose(b, -math.log(K - 1))
    assert mean_loss(W, b, Xp, y, "sigmoid") < mean_loss(0 * W, b, Xp, y, "sigmoid") - 0.1
    assert accuracy(W, b, Xp, y) > 0.8


def test_poisson_sampling_is_independent_with_rate_q():
    n, q, steps = 400, 0.1, 250
    draws = np.asarray(
        jax.vmap(lambda t: poisson_sample(jax.random.key(5), t, n, q))(jnp.arange(steps))
    )
    freq = draws.mean(axis=0)  # per example, over steps
    assert abs(draws.mean() - q) < 5 * math.sqrt(q * (1 - q) / draws.size)
    # per-example counts are Binomial(steps, q): their spread matches (no fixed batches)
    assert 0.7 < np.var(freq * steps) / (steps * q * (1 - q)) < 1.3
    # batch sizes vary like Binomial(n, q), not a fixed size
    assert 0.6 < np.var(draws.sum(axis=1)) / (n * q * (1 - q)) < 1.4


def test_max_batch_size_tail_and_no_row_dropped_on_overflow():
    assert max_batch_size(1_000_000, 0.01) == math.ceil(10_000 + 6 * math.sqrt(10_000 * 0.99))
    assert max_batch_size(10, 0.9) == 10
    rng = np.random.default_rng(6)
    X = rng.normal(size=(64, D)).astype(np.float32) * 3
    y = rng.integers(0, K, 64).astype(np.int32)
    W = rng.normal(size=(D, K)).astype(np.float32)
    b = rng.normal(size=K).astype(np.float32)
    include = rng.random(64) < 0.5  # about 32 rows, far above a chunk of 5
    got = jax.jit(sampled_gradient_sum, static_argnames=("chunk", "loss", "train_bias"))(
        W, b, X, y, include, 1.0, chunk=5, loss="softmax", train_bias=True
    )
    want = clipped_gradient_sum(W, b, X, y, 1.0, loss="softmax", train_bias=True, mask=include)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_dp_sgd_records_pld_event_and_learns():
    X, y = blobs(7)
    W, b, ledger, Xp = fit(
        "dp_sgd",
        X,
        y,
        epsilon=8.0,
        steps=3,
        optimizer="adam",
        learning_rate=0.2,
        method_options={"batch_size": 150, "max_batch_size": 40},
    )
    (release,) = ledger.releases
    event = release.event.event  # SelfComposed(PoissonSampled(q, Gaussian(sigma)), T)
    assert release.event.count == 3 and event.sampling_probability == 150 / N
    sigma = noise_multiplier_poisson(
        8.0, DELTA, 150 / N, 3, value_discretization_interval=PLD_INTERVAL
    )
    assert math.isclose(event.event.noise_multiplier, sigma, rel_tol=1e-12)
    assert ledger.epsilon_spent <= 8.0 * (1 + 1e-9)
    assert accuracy(W, b, Xp, y) > 0.7
    with pytest.raises(ValueError, match="batch_size"):
        fit("dp_sgd", X, y)
    with pytest.raises(ValueError, match="does not understand"):
        fit("dp_sgd", X, y, method_options={"batch_size": 10, "bacth": 3})


def test_dp_sgd_calibration_after_an_earlier_release():
    cfg = FitConfig(
        epsilon=4.0, delta=DELTA, method="dp_sgd", steps=2, method_options={"batch_size": 100}
    )
    alone = PrivacyLedger(4.0, DELTA, value_discretization_interval=PLD_INTERVAL)
    sigma_alone = calibrate(alone, cfg, 0.2)
    ledger = PrivacyLedger(4.0, DELTA, value_discretization_interval=PLD_INTERVAL)
    ledger.record_gaussian("center_mean", sensitivity=1.0, noise_std=2.0)
    sigma = calibrate(ledger, cfg, 0.2)
    assert sigma > sigma_alone
    assert 4.0 * 0.97 < ledger.epsilon_spent <= 4.0 * (1 + 1e-9)  # spends (almost) all, no more
    assert [r.name for r in ledger.releases] == ["center_mean", RELEASE]


def test_single_step_adds_noise_of_std_sigma_c_to_the_sum():
    rng = np.random.default_rng(11)
    k, d, n = 40, 100, 50
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, k, n).astype(np.int32)
    config = FitConfig(epsilon=2.0, delta=DELTA, clip_norm=0.7, learning_rate=0.5)
    data = preprocess(X, y, config, num_classes=k)
    ledger = PrivacyLedger(2.0, DELTA)
    sigma = 1.0 / ledger.remaining_mu
    W, _ = get_method("single_step")(data, config, ledger, jax.random.key(2))
    G, _ = zero_init_class_sums(data.features, data.labels, k, 0.7)
    noise = np.ravel(-n * np.asarray(W) / 0.5 - np.asarray(G)).astype(np.float64)
    assert abs(np.std(noise) / (sigma * 0.7) - 1) < 5 * math.sqrt(0.5 / noise.size)
    assert abs(np.mean(noise)) < 5 * sigma * 0.7 / math.sqrt(noise.size)


def test_full_batch_noise_on_an_unlimited_ledger_is_zero_and_a_spent_one_refuses():
    from private_head.noise import full_batch_noise_multiplier

    assert full_batch_noise_multiplier(PrivacyLedger(math.inf, 1e-5), 4) == 0.0
    spent = PrivacyLedger(1.0, 1e-5)
    spent.record_gaussian("all", sensitivity=1.0, noise_std=1.0 / spent.remaining_mu)
    with pytest.raises(BudgetExceededError, match="no privacy budget is left"):
        full_batch_noise_multiplier(spent, 1)
