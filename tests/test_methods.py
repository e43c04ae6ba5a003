"""Each method's own mathematics: with the noise off (an unlimited allowance) the head is the numpy
formula; with noise, the budget split and the head's behaviour (the contract suite checks the
privacy of every method)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import private_head
from accounting import PrivacyLedger, epsilon_from_mu, mu_from_epsilon
from private_head._budget import Allowance, remaining_allowance
from private_head._linalg import psd_project, whitening
from private_head._method import Context, PublicInfo
from private_head._options import route
from private_head._preprocessing import Preprocessing
from private_head._registry import get_method
from private_head._release import PlanReleaser, symmetric_noise
from private_head._rows import open_rows
from tests.helpers import blobs

K, D = 3, 6
NOISE_FREE = Allowance(math.inf, math.inf, 1e-5)


def noise_free(name, x, y, *, n=None, feature_norm=1.0, **options):
    """The method's head with zero noise (plan against an unlimited allowance)."""
    method = get_method(name)
    opts, *_ = route(name, method.options, options)
    n = float(x.shape[0] if n is None else n)
    public = PublicInfo(x.shape[1], K, n, feature_norm)
    plan = method.plan(opts, public, NOISE_FREE)
    rows = open_rows(jnp.asarray(x), y, num_classes=K, feature_norm=feature_norm)
    pre = Preprocessing("normalize", feature_norm)
    head = method.run(plan, rows, PlanReleaser(plan, jax.random.key(0)), Context(public, pre))
    return np.asarray(head.weights, np.float64), np.asarray(head.bias, np.float64), plan


def unit(x):
    return x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)


def anisotropic(n, d, k, seed=0, separation=1.0):
    """Unit-normalised classes with a shared covariance of spectrum ~ (j + 1)^-2."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((k, d))
    means *= separation / np.linalg.norm(means, axis=1, keepdims=True)
    spectrum = np.arange(1, d + 1) ** -2.0
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    factor = np.sqrt(spectrum * d / spectrum.sum())[:, None] * basis.T
    y = (np.arange(n) % k).astype(np.int32)
    x = means[y] + rng.standard_normal((n, d)) @ factor
    return unit(x).astype(np.float32), y


def softmax_gd(x, y, steps, lr, clip, momentum=0.0):
    """Reference full-batch clipped GD (no noise) in float64; returns W."""
    onehot = np.eye(K)[y]
    w = np.zeros((x.shape[1], K))
    velocity = np.zeros_like(w)
    for _ in range(steps):
        z = x @ w
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        e = p - onehot
        c = np.minimum(
            1.0, clip / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(e, axis=1), 1e-30)
        )
        g = x.T @ (c[:, None] * e) / x.shape[0]
        velocity = momentum * velocity + g
        w -= lr * velocity
    return w


# --------------------------------------------------------------------- single step and dp_gd
def test_single_step_is_the_clipped_class_sums_over_n():
    x, y = blobs(90, D, K)
    W, b, _ = noise_free("single_step", x, y, n=45.0, clip_norm=0.3)
    np.testing.assert_allclose(W, softmax_gd(unit(x), y, 1, 2.0, 0.3), rtol=1e-4, atol=1e-7)
    assert np.all(b == 0)


@pytest.mark.parametrize("momentum", [None, 0.9])
def test_dp_gd_without_noise_is_clipped_gradient_descent(momentum):
    x, y = blobs(90, D, K)
    optimizer = "momentum" if momentum else "sgd"
    W, _, plan = noise_free(
        "dp_gd", x, y, steps=6, learning_rate=2.0, clip_norm=0.5, optimizer=optimizer
    )
    want = softmax_gd(unit(x), y, 6, 2.0, 0.5, momentum=momentum or 0.0)
    np.testing.assert_allclose(W, want, rtol=2e-4, atol=1e-6)
    assert plan.settings.steps == 6 and plan.releases[0].count == 6


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "lamb"])
def test_dp_gd_each_optimizer_learns(optimizer):
    x, y = blobs(400, 16, K, seed=1)
    lr = {"sgd": 4.0, "momentum": 1.0, "adam": 0.05, "lamb": 0.05}[optimizer]
    head = private_head.fit(
        x,
        y,
        num_classes=K,
        epsilon=8,
        delta=1e-5,
        method="dp_gd",
        seed=0,
        steps=10,
        optimizer=optimizer,
        learning_rate=lr,
    )
    assert head.accuracy(x, y)["top1"] > 0.9


def test_single_step_predictions_ignore_the_scale_and_the_sigmoid_loss_works():
    x, y = blobs(300, 16, K, seed=2)
    for loss in ("softmax", "sigmoid"):
        head = private_head.fit(
            x, y, method="single_step", num_classes=K, epsilon=8, delta=1e-5, seed=0, loss=loss
        )
        assert head.accuracy(x, y)["top1"] > 0.9
    sigmoid = private_head.fit(
        x, y, method="single_step", num_classes=K, epsilon=8, delta=1e-5, seed=0, loss="sigmoid"
    )
    np.testing.assert_allclose(sigmoid.bias, -math.log(K - 1))


def test_the_noise_of_dp_gd_is_sqrt_t_over_mu_times_c():
    x, y = blobs(100, D, K)
    head = private_head.fit(
        x,
        y,
        num_classes=K,
        epsilon=3,
        delta=1e-6,
        method="dp_gd",
        seed=0,
        steps=9,
        clip_norm=0.4,
        dataset_size=100,
    )
    (release,) = head.privacy["releases"]
    assert release["noise_std"] == pytest.approx(math.sqrt(9) * 0.4 / mu_from_epsilon(3, 1e-6))
    assert head.privacy["epsilon_spent"] == pytest.approx(3.0, rel=1e-6)


def test_repeated_fits_reuse_the_compiled_step():
    from private_head._optimizers import _apply_step as apply_step

    x, y = blobs(100, D, K)
    private_head.fit(x, y, num_classes=K, epsilon=1, delta=1e-5, method="dp_gd", steps=3, seed=0)
    before = apply_step._cache_size()
    for eps, seed in [(2, 1), (4, 2)]:
        private_head.fit(
            x, y, num_classes=K, epsilon=eps, delta=1e-5, method="dp_gd", steps=3, seed=seed
        )
    assert apply_step._cache_size() == before


# ------------------------------------------------------------------------------------ dp_sgd
def test_dp_sgd_records_one_pld_event_calibrated_to_the_budget_and_learns():
    x, y = blobs(600, 16, K, seed=3)
    head = private_head.fit(
        x,
        y,
        num_classes=K,
        epsilon=4,
        delta=1e-5,
        method="dp_sgd",
        seed=0,
        batch_size=100,
        steps=20,
        dataset_size=600,
    )
    release = head.privacy["releases"][-1]
    assert release["event"]["type"] == "self_composed" and release["event"]["count"] == 20
    assert release["event"]["event"]["type"] == "poisson_sampled"
    assert head.privacy["accountant"] == "pld" and head.privacy["mu"] is None
    assert 4 * 0.99 < head.privacy["epsilon_spent"] <= 4 * (1 + 1e-9)
    assert head.accuracy(x, y)["top1"] > 0.85


@pytest.mark.slow  # two PLD calibrations; dp_sgd records_one_pld_event covers the rate
def test_dp_sgd_samples_half_of_the_public_size_by_default():
    x, y = blobs(60, D, K)
    head = private_head.fit(
        x,
        y,
        num_classes=K,
        epsilon=4,
        delta=1e-5,
        method="dp_sgd",
        seed=0,
        steps=2,
        dataset_size=400,
    )
    assert head.privacy["releases"][-1]["event"]["event"]["sampling_probability"] == 0.5
    with pytest.raises(ValueError, match="batch_size"):
        private_head.fit(x, y, num_classes=K, epsilon=4, delta=1e-5, method="dp_sgd", batch_size=0)


@pytest.mark.slow  # several PLD calibrations
def test_dp_sgd_calibrates_against_what_is_already_spent():
    x, y = blobs(200, D, K)
    alone = private_head.fit(
        x,
        y,
        num_classes=K,
        epsilon=2,
        delta=1e-5,
        method="dp_sgd",
        seed=0,
        batch_size=50,
        steps=5,
        dataset_size=200,
    )
    centred = private_head.fit(
        x,
        y,
        num_classes=K,
        epsilon=2,
        delta=1e-5,
        method="dp_sgd",
        seed=0,
        batch_size=50,
        steps=5,
        center="private",
        center_budget_fraction=0.3,
        dataset_size=200,
    )
    sigma = [h.privacy["releases"][-1]["event"]["event"]["event"] for h in (alone, centred)]
    sigma = [event["noise_multiplier"] for event in sigma]
    assert sigma[1] > sigma[0]
    assert centred.privacy["epsilon_spent"] <= 2 * (1 + 1e-9)


# --------------------------------------------------------------------------- dp_least_squares
@pytest.mark.parametrize("train_bias", [False, True])
def test_least_squares_without_noise_is_numpy_ridge(train_bias):
    x, y = blobs(120, D, K)
    W, b, plan = noise_free("dp_least_squares", x, y, ridge=0.3, train_bias=train_bias)
    xt = unit(x)
    if train_bias:
        xt = np.hstack([xt, np.ones((xt.shape[0], 1))])
    sol = np.linalg.solve(xt.T @ xt + 0.3 * np.eye(xt.shape[1]), xt.T @ np.eye(K)[y])
    want_w, want_b = (sol[:-1], sol[-1]) if train_bias else (sol, np.zeros(K))
    np.testing.assert_allclose(W, want_w, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(b, want_b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("train_bias", [False, True])
def test_least_squares_splits_the_budget_between_its_two_releases(train_bias):
    x, y = blobs(120, D, K)
    head = private_head.fit(
        x,
        y,
        num_classes=K,
        epsilon=1,
        delta=1e-6,
        method="dp_least_squares",
        seed=0,
        gram_fraction=0.3,
        train_bias=train_bias,
        feature_norm=2.0,
        dataset_size=120,
    )
    gram, sums = head.privacy["releases"]
    mu = mu_from_epsilon(1, 1e-6)
    r2 = 4.0 + train_bias
    assert gram["sensitivity"] == r2 and sums["sensitivity"] == pytest.approx(math.sqrt(r2))
    assert gram["noise_std"] == pytest.approx(r2 / (math.sqrt(0.3) * mu), rel=1e-9)
    assert sums["noise_std"] == pytest.approx(math.sqrt(r2) / (math.sqrt(0.7) * mu), rel=1e-9)
    assert head.privacy["epsilon_spent"] == pytest.approx(1.0, rel=1e-6)


def test_the_gram_noise_has_diagonal_std_s_and_off_diagonal_std_s_over_sqrt2():
    s, dim, draws = 1.7, 6, 3000
    keys = jax.random.split(jax.random.key(0), draws)
    noise = np.asarray(jax.vmap(lambda k: symmetric_noise(k, dim, s))(keys), np.float64)
    np.testing.assert_array_equal(noise, np.swapaxes(noise, 1, 2))
    diag = noise[:, np.arange(dim), np.arange(dim)]
    rows, cols = np.triu_indices(dim, 1)
    upper = noise[:, rows, cols]
    tol = 5 * math.sqrt(2 / diag.size)
    assert abs(diag.std() / s - 1) < tol
    assert abs(upper.std() / (s / math.sqrt(2)) - 1) < 5 * math.sqrt(2 / upper.size)
    # entries are uncorrelated (the upper triangle and the diagonal are independent)
    corr = np.corrcoef(upper[:, 0], upper[:, 1])[0, 1]
    assert abs(corr) < 5 / math.sqrt(draws)


def test_the_default_ridge_follows_the_gram_noise():
    x, y = blobs(100, D, K)
    method = get_method("dp_least_squares")
    opts, *_ = route("dp_least_squares", method.options, {"ridge_scale": 0.8})
    public = PublicInfo(D, K, 100.0, 1.0)
    plan = method.plan(opts, public, remaining_allowance(PrivacyLedger(1.0, 1e-5)))
    s = plan.releases[0].noise_std
    assert plan.settings.ridge == pytest.approx(0.8 * math.sqrt(2 * D) * s)


def test_psd_projection_is_the_nearest_psd_matrix():
    rng = np.random.default_rng(4)
    m = rng.normal(size=(5, 5))
    m = m + m.T
    got = np.asarray(psd_project(jnp.asarray(m, jnp.float32)))
    evals, evecs = np.linalg.eigh(m)
    np.testing.assert_allclose(got, (evecs * np.maximum(evals, 0)) @ evecs.T, atol=1e-4)
    assert np.linalg.eigvalsh(got).min() > -1e-4


def test_least_squares_beats_the_single_step_on_anisotropic_features():
    x, y = anisotropic(8000, 16, 4, seed=1)
    x, y, xt, yt = x[:6000], y[:6000], x[6000:], y[6000:]
    kw = dict(num_classes=4, epsilon=1.0, delta=1e-6, seed=0)
    ls = private_head.fit(x, y, method="dp_least_squares", **kw).accuracy(xt, yt)["top1"]
    ss = private_head.fit(x, y, method="single_step", **kw).accuracy(xt, yt)["top1"]
    assert ls > ss + 0.2, (ls, ss)


# ---------------------------------------------------------------------- dp_feature_covariance
def test_feature_covariance_without_noise_is_preconditioned_gd():
    x, y = anisotropic(400, D, K)
    W, _, plan = noise_free(
        "dp_feature_covariance",
        x,
        y,
        steps=5,
        learning_rate=2.0,
        clip_norm=0.5,
        optimizer="sgd",
        ridge=1e-3,
        noise_floor=0.0,
        structure_threshold=0.0,
    )
    xt = x.astype(np.float64)
    gram = xt.T @ xt
    a = np.asarray(whitening(jnp.asarray(gram, jnp.float32), 400.0, 1e-3), np.float64)
    evals, evecs = np.linalg.eigh(gram / 400)
    evals = np.maximum(evals, 0)
    a_ref = (
        math.sqrt(evals.sum() / np.sum(evals / (evals + 1e-3)))
        * (evecs / np.sqrt(evals + 1e-3))
        @ evecs.T
    )
    np.testing.assert_allclose(a, a_ref, rtol=2e-3, atol=1e-3 * np.abs(a_ref).max())
    want = a @ softmax_gd(unit(x) @ a, y, 5, 2.0, 0.5)
    np.testing.assert_allclose(W, want, rtol=2e-3, atol=2e-4 * np.abs(want).max())
    assert [r.count for r in plan.releases] == [1, 5]


def _whitening_reference(gram, n, ridge, edge, floor):
    evals, evecs = np.linalg.eigh(gram / n)
    evals = np.maximum(evals, 0)
    inv = 1 / (np.maximum(evals, floor * edge) + ridge)
    return math.sqrt(evals.sum() / np.sum(evals * inv)) * (evecs * np.sqrt(inv)) @ evecs.T


def test_whitening_is_flat_below_the_noise_edge_and_the_identity_without_structure():
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.normal(size=(D, D)))[0]
    spectrum = np.array([4.0, 2.0] + [0.01] * (D - 2))
    gram = (basis * spectrum) @ basis.T * 100.0  # n = 100: M has eigenvalues 4, 2, 0.01, ...
    got = np.asarray(whitening(jnp.asarray(gram, jnp.float32), 100.0, 1e-3, 0.5, 1.0, 1.5))
    want = _whitening_reference(gram, 100.0, 1e-3, 0.5, 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    tail = basis[:, 2:]  # the eigenvalues below the edge: A is a multiple of I there
    block = tail.T @ got @ tail
    np.testing.assert_allclose(block, block[0, 0] * np.eye(D - 2), atol=1e-3 * block[0, 0])
    assert not np.allclose(got, got[0, 0] * np.eye(D), atol=1e-2)  # the top directions are not
    # no eigenvalue reaches threshold x edge: no structure above the noise, A = I exactly
    flat = np.asarray(whitening(jnp.asarray(gram, jnp.float32), 100.0, 1e-3, 3.0, 1.0, 1.5))
    np.testing.assert_array_equal(flat, np.eye(D, dtype=np.float32))


def test_feature_covariance_whitens_only_above_its_noise_edge(monkeypatch):
    # The fit hands whitening the public noise edge sqrt(2 D) s / n and the options; at a tiny
    # budget the Gram of these isotropic rows is noise-dominated and A is the identity.
    import private_head._methods.dp_feature_covariance as fc

    seen = []

    def spy(gram, n, ridge, edge, floor, threshold):
        seen.append((float(n), float(edge), float(floor), float(threshold)))
        seen.append(np.asarray(whitening(gram, n, ridge, edge, floor, threshold)))
        return seen[-1]

    monkeypatch.setattr(fc, "whitening", spy)
    x, y = blobs(300, D, K, seed=4)
    kw = dict(num_classes=K, delta=1e-5, seed=0, method="dp_feature_covariance", steps=2)
    head = private_head.fit(x, y, epsilon=0.05, dataset_size=300, **kw)
    (n, edge, floor, threshold), transform = seen
    std = [r for r in head.privacy["releases"] if r["name"].endswith("/gram")][0]["noise_std"]
    assert (n, floor, threshold) == (300.0, 0.35, 1.5)
    assert edge == pytest.approx(math.sqrt(2 * D) * std / 300, rel=1e-6)
    np.testing.assert_array_equal(transform, np.eye(D, dtype=np.float32))
    seen.clear()
    private_head.fit(x, y, epsilon=50.0, dataset_size=300, **kw)  # the signal now stands clear
    assert not np.allclose(seen[1], np.eye(D), atol=1e-3)


def test_feature_covariance_composes_its_two_releases_exactly():
    x, y = blobs(200, D, K)
    head = private_head.fit(
        x,
        y,
        num_classes=K,
        epsilon=2,
        delta=1e-5,
        seed=0,
        steps=4,
        method="dp_feature_covariance",
        covariance_fraction=0.4,
        clip_norm=1.0,
        dataset_size=200,
    )
    gram, steps = head.privacy["releases"]
    mu = mu_from_epsilon(2, 1e-5)
    assert gram["noise_std"] == pytest.approx(1 / (math.sqrt(0.4) * mu), rel=1e-9)
    assert steps["count"] == 4
    assert steps["noise_std"] == pytest.approx(2 * 1.0 / (math.sqrt(0.6) * mu), rel=1e-9)
    assert head.privacy["epsilon_spent"] == pytest.approx(epsilon_from_mu(mu, 1e-5), rel=1e-6)


def test_preconditioning_beats_plain_dp_gd_on_anisotropic_features():
    x, y = anisotropic(8000, 16, 4, seed=3)
    x, y, xt, yt = x[:6000], y[:6000], x[6000:], y[6000:]
    kw = dict(num_classes=4, epsilon=2.0, delta=1e-5, seed=0, steps=20, optimizer="sgd")
    fc = private_head.fit(x, y, method="dp_feature_covariance", **kw).accuracy(xt, yt)["top1"]
    gd = private_head.fit(x, y, method="dp_gd", **kw).accuracy(xt, yt)["top1"]
    assert fc > gd + 0.1, (fc, gd)


# ------------------------------------------------------------------------------ dp_prototypes
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_prototypes_without_noise_are_the_numpy_prototypes(metric):
    x, y = blobs(150, D, K)
    W, b, _ = noise_free("dp_prototypes", x, y, metric=metric)
    xt = unit(x)
    sums = np.stack([xt[y == k].sum(0) for k in range(K)])
    if metric == "cosine":
        np.testing.assert_allclose(
            W, (sums / np.linalg.norm(sums, axis=1, keepdims=True)).T, rtol=1e-4, atol=1e-6
        )
        assert np.all(b == 0)
    else:
        means = sums / np.bincount(y, minlength=K)[:, None]
        np.testing.assert_allclose(W, 2 * means.T, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b, -np.sum(means**2, axis=1), rtol=1e-4, atol=1e-6)


def test_prototypes_are_robust_to_class_imbalance_where_the_single_step_is_not():
    rng = np.random.default_rng(7)
    k, d = 5, 16
    means = rng.standard_normal((k, d))
    means = 2.0 * means / np.linalg.norm(means, axis=1, keepdims=True)
    means += 1.5 * rng.standard_normal(d)

    def draw(counts):
        y = np.repeat(np.arange(k), counts).astype(np.int32)
        return (means[y] + rng.standard_normal((y.size, d))).astype(np.float32), y

    x, y = draw([2000, 100, 100, 100, 100])
    xt, yt = draw([200] * k)

    def balanced(head):
        pred = head.predict(xt)
        return float(np.mean([np.mean(pred[yt == c] == c) for c in range(k)]))

    kw = dict(num_classes=k, epsilon=4.0, delta=1e-5, seed=0)
    single = balanced(private_head.fit(x, y, method="single_step", **kw))
    for metric in ("cosine", "euclidean"):
        proto = balanced(private_head.fit(x, y, method="dp_prototypes", metric=metric, **kw))
        assert proto > single + 0.3, (metric, proto, single)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"metric": "manhattan"}, "metric"),
        ({"count_fraction": 0.0}, "count_fraction"),
        ({"count_floor": 0.0}, "count_floor"),
        ({"gram_fraction": 1.0}, "unknown"),
    ],
)
def test_bad_prototype_options_are_clear_errors(options, match):
    x, y = blobs(30, D, K)
    with pytest.raises(ValueError, match=match if match != "unknown" else "does not take"):
        private_head.fit(
            x, y, num_classes=K, epsilon=1, delta=1e-5, method="dp_prototypes", **options
        )


# ---------------------------------------------------------------------------------- nonprivate
def test_nonprivate_is_regularised_logistic_regression_and_charges_nothing():
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(300, D, K, separation=1.5)
    head = private_head.fit(
        x,
        y,
        num_classes=K,
        epsilon=math.inf,
        delta=1e-5,
        method="nonprivate",
        weight_decay=0.01,
        train_bias=True,
    )
    ref = LogisticRegression(C=1 / (0.01 * 300), max_iter=2000).fit(unit(x), y)
    assert np.mean(head.predict(x) == ref.predict(unit(x))) > 0.98
    assert head.privacy["private"] is False and head.privacy["releases"] == []
    assert head.privacy["epsilon_spent"] == "inf"


@pytest.mark.parametrize("method", ["dp_least_squares", "dp_feature_covariance"])
def test_a_gram_too_large_for_the_memory_budget_is_a_clear_error(method):
    x, y = blobs(10, 2000, K)
    with pytest.raises(ValueError, match=r"2000 x 2000 Gram.*Reduce D"):
        private_head.fit(
            x, y, num_classes=K, epsilon=1, delta=1e-5, method=method, max_device_bytes=50 * 2**20
        )
