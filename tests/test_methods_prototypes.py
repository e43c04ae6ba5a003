"""dp_prototypes: exact class means without noise, accounting, robustness to class imbalance."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import private_head
from accounting.gdp import epsilon_from_mu, mu_from_epsilon
from accounting.ledger import PrivacyLedger
from private_head.config import FitConfig
from private_head.data import ChunkSource, Preprocessing, TrainData
from private_head.prototypes import prototype_head
from private_head.prototypes import train as proto_train


def _rows(rng, n, d, k, r=1.0):
    x = rng.standard_normal((n, d)).astype(np.float32)
    x *= r / np.linalg.norm(x, axis=1, keepdims=True)
    return x, (np.arange(n) % k).astype(np.int32)


def _numpy_means(x, y, k):
    return np.stack([x[y == c].astype(np.float64).mean(axis=0) for c in range(k)])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_noise_free_head_is_the_numpy_nearest_prototype(metric):
    rng = np.random.default_rng(0)
    x, y = _rows(rng, 120, 7, 4, r=3.0)
    data = TrainData(jnp.asarray(x), jnp.asarray(y), 4, 3.0)
    w, b = prototype_head(
        data, jax.random.key(0), metric=metric, sums_noise_std=0.0, counts_noise_std=0.0
    )
    means = _numpy_means(x, y, 4)
    if metric == "euclidean":
        np.testing.assert_allclose(np.asarray(w), 2 * means.T, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(b), -(means**2).sum(axis=1), rtol=1e-5)
        # the head's argmax is the nearest mean
        dist = ((x[:, None, :] - means[None]) ** 2).sum(axis=2)
        np.testing.assert_array_equal(
            np.argmax(x @ np.asarray(w) + np.asarray(b), 1), np.argmin(dist, 1)
        )
    else:
        unit = means / np.linalg.norm(means, axis=1, keepdims=True)
        np.testing.assert_allclose(np.asarray(w), unit.T, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(b), np.zeros(4))


def test_streamed_rows_give_the_in_memory_head():
    rng = np.random.default_rng(1)
    x, y = _rows(rng, 130, 5, 3)
    pre = Preprocessing(normalize=True, feature_norm=1.0)
    streamed = TrainData(
        None, jnp.asarray(y), 3, 1.0, source=ChunkSource(array=x, labels=y, preprocessing=pre)
    )
    memory = TrainData(jnp.asarray(x), jnp.asarray(y), 3, 1.0)
    kwargs = dict(metric="euclidean", sums_noise_std=0.5, counts_noise_std=2.0)
    w1, b1 = prototype_head(memory, jax.random.key(2), **kwargs)
    w2, b2 = prototype_head(streamed, jax.random.key(2), chunk_rows=32, **kwargs)
    np.testing.assert_allclose(np.asarray(w1), np.asarray(w2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(b1), np.asarray(b2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_ledger_charges_sums_and_counts_with_the_composed_epsilon(metric):
    rng = np.random.default_rng(3)
    r, eps, delta = 2.0, 0.8, 1e-6
    x, y = _rows(rng, 60, 4, 3, r=r)
    config = FitConfig(
        epsilon=eps,
        delta=delta,
        method="dp_prototypes",
        feature_norm=r,
        method_options={"metric": metric, "count_fraction": 0.2},
    )
    ledger = PrivacyLedger(eps, delta)
    proto_train(TrainData(jnp.asarray(x), jnp.asarray(y), 3, r), config, ledger, jax.random.key(0))
    mu = mu_from_epsilon(eps, delta)
    releases = ledger.releases
    assert releases[0].sensitivity == r
    if metric == "euclidean":
        assert [rel.sensitivity for rel in releases] == [r, 1.0]
        assert releases[0].mu == pytest.approx(math.sqrt(0.8) * mu, rel=1e-9)
        assert releases[1].mu == pytest.approx(math.sqrt(0.2) * mu, rel=1e-9)
    else:  # the scale of each prototype is irrelevant: no counts released
        assert len(releases) == 1 and releases[0].mu == pytest.approx(mu, rel=1e-9)
    assert ledger.epsilon_spent == pytest.approx(epsilon_from_mu(ledger.mu, delta), rel=1e-12)
    assert ledger.epsilon_spent == pytest.approx(eps, rel=1e-6)


def _balanced_accuracy(head, x, y, k):
    pred = head.predict(x)
    return float(np.mean([np.mean(pred[y == c] == c) for c in range(k)]))


def test_prototypes_are_robust_to_class_imbalance_where_the_single_step_is_not():
    # 5 classes, class 0 has 20x the examples of each other class; nearby class means.
    rng = np.random.default_rng(7)
    k, d = 5, 16
    means = rng.standard_normal((k, d))
    means = 2.0 * means / np.linalg.norm(means, axis=1, keepdims=True)
    means += 1.5 * rng.standard_normal(d)  # a shared offset: every class has x . m_0 > 0

    def draw(counts):
        y = np.repeat(np.arange(k), counts).astype(np.int32)
        return (means[y] + rng.standard_normal((y.size, d))).astype(np.float32), y

    x, y = draw([2000, 100, 100, 100, 100])
    xt, yt = draw([200] * k)
    kwargs = dict(num_classes=k, epsilon=4.0, delta=1e-5, seed=0)
    single = private_head.fit(x, y, method="single_step", **kwargs)
    accs = {"single_step": _balanced_accuracy(single, xt, yt, k)}
    for metric in ("cosine", "euclidean"):
        head = private_head.fit(x, y, method="dp_prototypes", metric=metric, **kwargs)
        accs[metric] = _balanced_accuracy(head, xt, yt, k)
    assert accs["cosine"] > accs["single_step"] + 0.3, accs
    assert accs["euclidean"] > accs["single_step"] + 0.3, accs


def test_bad_options_are_clear_errors():
    data = TrainData(jnp.ones((4, 2)), jnp.arange(4) % 2, 2, 1.0)
    for options, match in [
        ({"metric": "manhattan"}, "metric"),
        ({"count_fraction": 0.0}, "count_fraction"),
        ({"count_floor": 0.0}, "count_floor"),
    ]:
        config = FitConfig(epsilon=1.0, delta=1e-5, method="dp_prototypes", method_options=options)
        ledger = PrivacyLedger(1.0, 1e-5)
        with pytest.raises(ValueError, match=match):
            proto_train(data, config, ledger, jax.random.key(0))
        assert ledger.releases == ()
