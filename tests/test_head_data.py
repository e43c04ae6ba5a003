"""private_head.data: preprocessing (norms, centring, the charged private mean), validation,
streaming."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from accounting import BudgetExceededError, PrivacyLedger, epsilon_from_mu, mu_from_epsilon
from feature_extract import store
from private_head.config import FitConfig
from private_head.data import load_train_data, preprocess

CFG = FitConfig(epsilon=2.0, delta=1e-5)


def _rows(seed, n=40, d=6, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * scale).astype(np.float32), rng.integers(0, 4, n)


def _reference_bound(x, r, normalize):
    """Independent per-row loop: scale to r (or clip to r); zero rows stay zero."""
    out = np.zeros_like(x, dtype=np.float64)
    for i, row in enumerate(np.asarray(x, np.float64)):
        norm = math.sqrt(float(row @ row))
        if norm > 0:
            out[i] = row * ((r if normalize else min(norm, r)) / norm)
    return out


@given(
    seed=st.integers(0, 10_000),
    log_scale=st.floats(-6, 6),
    r=st.floats(0.1, 10.0),
    normalize=st.booleans(),
)
def test_rows_are_normalised_or_clipped(seed, log_scale, r, normalize):
    x, y = _rows(seed, scale=10.0**log_scale)
    x[3] = 0.0
    x[5] = 1e30 if seed % 2 else 1e-30  # norms whose squares overflow / underflow float32
    config = FitConfig(epsilon=2.0, delta=1e-5, feature_norm=r, normalize=normalize)
    data = preprocess(x, y, config, num_classes=4)
    got = np.asarray(data.features)
    np.testing.assert_allclose(got, _reference_bound(x, r, normalize), rtol=2e-5, atol=1e-30)
    assert (np.linalg.norm(got, axis=1) <= r * (1 + 1e-5)).all()
    assert data.feature_norm == r and data.num_rows == 40 and data.dim == 6


def test_public_mean_is_subtracted_then_rows_normalised():
    x, y = _rows(1)
    mean = np.linspace(-1, 1, 6).astype(np.float32)
    config = FitConfig(epsilon=2.0, delta=1e-5, center="public", feature_norm=2.0)
    data = preprocess(x, y, config, num_classes=4, public_mean=mean)
    np.testing.assert_allclose(
        np.asarray(data.features), _reference_bound(x - mean, 2.0, True), rtol=2e-5
    )
    assert data.preprocessing.center == "public"


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_private_mean_is_charged_before_release_with_the_right_sigma(fraction):
    x, y = _rows(2)
    r, eps, delta = 1.5, 3.0, 1e-6
    config = FitConfig(
        epsilon=eps, delta=delta, center="private", feature_norm=r, center_budget_fraction=fraction
    )
    ledger, key = PrivacyLedger(eps, delta), jax.random.key(7)
    data = preprocess(x, y, config, num_classes=4, ledger=ledger, key=key)
    mu = mu_from_epsilon(eps, delta)
    (release,) = ledger.releases
    assert release.sensitivity == r
    assert release.noise_std == pytest.approx(r / (math.sqrt(fraction) * mu), rel=1e-12)
    assert ledger.remaining_mu == pytest.approx(math.sqrt(1 - fraction) * mu, rel=1e-9)
    assert ledger.epsilon_spent == pytest.approx(epsilon_from_mu(math.sqrt(fraction) * mu, delta))
    noise = np.asarray(jax.random.normal(key, (6,))) * release.noise_std
    mean = (_reference_bound(x, r, True).sum(0) + noise) / len(x)
    np.testing.assert_allclose(data.preprocessing.mean, mean, rtol=1e-5, atol=1e-6)
    expected = _reference_bound(_reference_bound(x, r, True) - mean, r, True)
    np.testing.assert_allclose(np.asarray(data.features), expected, rtol=1e-4, atol=1e-6)


def test_private_mean_refuses_when_the_budget_is_already_spent():
    x, y = _rows(3)
    config = FitConfig(epsilon=1.0, delta=1e-5, center="private")
    ledger = PrivacyLedger(1.0, 1e-5)
    ledger.record_gaussian("all", sensitivity=1.0, noise_std=1.0 / mu_from_epsilon(1.0, 1e-5))
    with pytest.raises(BudgetExceededError, match="remaining mu"):
        preprocess(x, y, config, num_classes=4, ledger=ledger, key=jax.random.key(0))
    assert len(ledger.releases) == 1


def test_private_mean_without_privacy_is_exact_and_free():
    x, y = _rows(4)
    config = FitConfig(epsilon=math.inf, delta=1e-5, method="nonprivate", center="private")
    ledger = PrivacyLedger(math.inf, 1e-5)
    data = preprocess(x, y, config, num_classes=4, ledger=ledger, key=jax.random.key(0))
    np.testing.assert_allclose(
        data.preprocessing.mean, _reference_bound(x, 1.0, True).mean(0), rtol=1e-5, atol=1e-7
    )
    assert ledger.releases == ()


@pytest.mark.parametrize(
    "features, labels, num_classes, match",
    [
        (np.ones((4, 3)), np.array([0, 1, 2, 0]), None, "num_classes is required"),
        (np.ones((4, 3)), np.array([0, 1, 2, 0]), 1, "num_classes must be an integer >= 2"),
        (np.ones((4, 3)), np.array([0, 1, 5, -1]), 3, r"outside the label space \[0, 3\)"),
        (np.ones((4, 3)), np.array([0, 1, 2]), 3, "shape mismatch"),
        (np.ones((4, 3)), None, 3, "labels are required"),
        (np.ones((4,)), np.array([0, 1, 2, 0]), 3, "2-D"),
        (np.ones((0, 3)), np.array([], int), 3, "empty"),
        (np.ones((4, 3)), np.array([0.5, 1, 2, 0]), 3, "integers"),
        (np.ones((4, 3), np.int32), np.array([0, 1, 2, 0]), 3, "floating point"),
        (np.array([[1e300, 0.0], [1.0, 1.0]]), np.array([0, 1]), 3, r"float32 cast.*: 0\b"),
    ],
)
def test_bad_inputs_give_clear_errors(features, labels, num_classes, match):
    with pytest.raises(ValueError, match=match):
        preprocess(features, labels, CFG, num_classes=num_classes)


def test_nan_and_inf_rows_are_named():
    x, y = _rows(5)
    x[7, 2], x[31, 0] = np.nan, -np.inf
    with pytest.raises(ValueError, match=r"2 row\(s\): 7, 31"):
        preprocess(x, y, CFG, num_classes=4)


def test_float16_overflow_and_public_mean_errors():
    x, y = _rows(6)
    big = FitConfig(epsilon=2.0, delta=1e-5, feature_norm=1e5)
    with pytest.raises(ValueError, match="overflows float16"):
        preprocess(x.astype(np.float16), y, big, num_classes=4)
    public = FitConfig(epsilon=2.0, delta=1e-5, center="public")
    with pytest.raises(ValueError, match=r"public_mean must have shape \(6,\)"):
        preprocess(x, y, public, num_classes=4, public_mean=np.zeros(5))
    with pytest.raises(ValueError, match="needs public_mean"):
        preprocess(x, y, public, num_classes=4)
    with pytest.raises(ValueError, match="center='public' to use it"):
        preprocess(x, y, CFG, num_classes=4, public_mean=np.zeros(6))


def test_float16_rows_stay_float16_and_norms_do_not_overflow():
    x = np.full((3, 4), 60000.0, np.float16)  # ||x||^2 overflows float16, not float32
    data = preprocess(x, np.array([0, 1, 0]), CFG, num_classes=2)
    assert data.features.dtype == np.float16
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(data.features, np.float32), axis=1), 1.0, rtol=2e-3
    )


def _store(tmp_path, x, y, name="f.h5"):
    path = str(tmp_path / name)
    store.write_split(path, "train", x, y, num_classes=4)
    return path


@pytest.mark.parametrize("center", ["none", "private"])
def test_streamed_load_equals_in_memory_load(tmp_path, center):
    x, y = _rows(8, n=53)
    path = _store(tmp_path, x, y)
    kwargs = dict(epsilon=2.0, delta=1e-5, center=center)
    ledgers = [PrivacyLedger(2.0, 1e-5) for _ in range(3)]
    key = jax.random.key(3)
    memory = load_train_data(
        f"{path}:train", config=FitConfig(**kwargs), num_classes=4, ledger=ledgers[0], key=key
    )
    streamed = load_train_data(
        path,
        config=FitConfig(max_device_bytes=100, **kwargs),
        num_classes=4,
        ledger=ledgers[1],
        key=key,
    )
    from_array = load_train_data(
        x,
        y,
        config=FitConfig(max_device_bytes=100, **kwargs),
        num_classes=4,
        ledger=ledgers[2],
        key=key,
    )
    assert memory.features is not None and memory.source is None
    assert streamed.features is None and streamed.source is not None
    assert from_array.features is None
    for data in (memory, streamed, from_array):
        chunks = list(data.iter_chunks(10))
        assert [c[0].shape[0] for c in chunks] == [10, 10, 10, 10, 10, 3]
        np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), y)
        np.testing.assert_allclose(
            np.concatenate([c[0] for c in chunks]),
            np.asarray(memory.features),
            rtol=1e-6,
            atol=1e-7,
        )
        assert data.num_rows == 53 and data.dim == 6
    assert [r.noise_std for r in ledgers[0].releases] == [r.noise_std for r in ledgers[1].releases]


def test_store_errors(tmp_path):
    x, y = _rows(9)
    partial = str(tmp_path / "partial.h5")  # an interrupted extraction: 20 of 40 rows
    store.SplitWriter(partial, "train", dim=6, total_rows=40, num_classes=4).append(
        x[:20], y[:20], np.arange(20)
    )
    with pytest.raises(store.IncompleteSplitError, match="20 of 40 rows"):
        load_train_data(partial, config=CFG, num_classes=4)
    path = _store(tmp_path, *_rows(10))
    with pytest.raises(ValueError, match="declares 4 classes"):
        load_train_data(path, config=CFG, num_classes=5)
    with pytest.raises(ValueError, match="labels come from the store"):
        load_train_data(path, y, config=CFG, num_classes=4)
    with pytest.raises(store.StoreError, match="no split 'test'"):
        load_train_data(f"{path}:test", config=CFG, num_classes=4)


def test_streamed_nan_rows_are_named_by_their_row_in_the_split():
    x, y = _rows(11, n=200)
    x[[70, 150]] = np.inf
    config = FitConfig(epsilon=2.0, delta=1e-5, max_device_bytes=64)
    with pytest.raises(ValueError, match=r"2 row\(s\): 70, 150"):
        load_train_data(x, y, config=config, num_classes=4)


def test_bfloat16_rows_stay_bfloat16_in_memory_and_streamed():
    x, y = _rows(12)
    x = jnp.asarray(x, jnp.bfloat16)
    memory = load_train_data(x, y, config=CFG, num_classes=4)
    streamed = load_train_data(
        x, y, config=FitConfig(epsilon=2.0, delta=1e-5, max_device_bytes=64), num_classes=4
    )
    chunk, _ = next(streamed.iter_chunks(40))
    assert memory.features.dtype == chunk.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(chunk, np.float32), np.asarray(memory.features, np.float32)
    )
