"""Out-of-core training from a feature store equals in-memory training (same key)."""

import jax
import numpy as np
import pytest

from accounting import PrivacyLedger
from feature_extract.store import write_split
from private_head.config import FitConfig
from private_head.data import load_train_data
from private_head.kernel import clipped_gradient_sum
from private_head.methods import get_method
from private_head.streaming import chunk_rows, streamed_sum

K, D, N = 3, 6, 203  # 203 rows: the last chunk is partial and gets padded


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, N).astype(np.int32)
    X = (rng.normal(size=(N, D)) + 2.0 * np.eye(K, D)[y]).astype(np.float32)
    path = tmp_path_factory.mktemp("store") / "features.h5"
    write_split(path, "train", X, y, num_classes=K)
    return f"{path}:train"


def both(store_path, **kw):
    """(in-memory, streamed) TrainData and their config; streamed chunks hold 16 rows."""
    limit = 16 * 4 * D * 4  # chunk_rows -> 16
    cfg_mem = FitConfig(epsilon=4.0, delta=1e-5, **kw)
    cfg_out = FitConfig(epsilon=4.0, delta=1e-5, max_device_bytes=limit, **kw)
    mem = load_train_data(store_path, config=cfg_mem, num_classes=K)
    out = load_train_data(store_path, config=cfg_out, num_classes=K)
    assert mem.features is not None and out.features is None
    assert chunk_rows(out, cfg_out.max_device_bytes) == 16
    return (mem, cfg_mem), (out, cfg_out)


def test_streamed_sum_equals_in_memory_kernel(store_path):
    (mem, _), (out, _) = both(store_path)
    rng = np.random.default_rng(1)
    W = rng.normal(size=(D, K)).astype(np.float32)
    b = rng.normal(size=K).astype(np.float32)
    weights = (rng.random(N) < 0.5).astype(np.float32)

    def fn(X, y, m):
        return clipped_gradient_sum(W, b, X, y, 0.3, mask=m)

    for rw in (None, weights):
        got = streamed_sum(out, fn, 16, row_weights=None if rw is None else jax.numpy.asarray(rw))
        want = clipped_gradient_sum(W, b, mem.features, mem.labels, 0.3, mask=rw)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "method,kw",
    [
        ("single_step", {"train_bias": True}),
        ("dp_gd", {"steps": 3, "optimizer": "adam", "learning_rate": 0.1, "train_bias": True}),
        ("dp_sgd", {"steps": 2, "method_options": {"batch_size": 60}}),
    ],
)
def test_streamed_training_equals_in_memory(store_path, method, kw):
    heads = []
    for data, cfg in both(store_path, method=method, **kw):
        ledger = PrivacyLedger(4.0, 1e-5, value_discretization_interval=1e-2)
        W, b = get_method(method)(data, cfg, ledger, jax.random.key(3))
        heads.append((np.asarray(W), np.asarray(b), ledger.report()["releases"]))
    (W1, b1, r1), (W2, b2, r2) = heads
    assert r1 == r2  # the same releases were charged
    assert np.abs(W1).max() > 0
    np.testing.assert_allclose(W2, W1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b2, b1, rtol=1e-4, atol=1e-6)
