"""The host kernels (``_host_kernel``, ``_host_pass``): the zero-init class sums and the clipped
gradient sums equal a float64 reference and the compiled (XLA) pass, every contribution is within
the clip norm, 16-bit rows are decoded exactly, non-finite rows are counted and never added."""

from __future__ import annotations

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from private_head import _host_kernel
from private_head._device_pass import chunk_pass
from private_head._host_pass import ClassSums, GradientSumsAcc, nonfinite
from private_head._kernel import clip_slack, initial_probabilities
from private_head._preprocessing import IDENTITY, Preprocessing
from private_head._statistics import GradientSums, ZeroInitSums


def host_sums(x, y, stat, clip, pre, weights=None):
    acc = ClassSums(stat, clip, pre, x.shape[1])
    acc.add(x, y, weights)
    return acc


def reference(x, y, stat, clip, pre, weights=None):
    """The zero-init class sums in float64 (``_host_kernel`` docstring)."""
    x = np.asarray(x, np.float64)
    K = stat.num_classes
    p0 = np.asarray(initial_probabilities(K, stat.loss, stat.bias0), np.float64)
    sq_e = np.sum(p0 * p0) - 2 * p0 + 1
    norm = np.linalg.norm(x, axis=1)
    a = np.ones_like(norm)
    if pre.kind != "identity":
        a = np.where(norm > 0, pre.feature_norm / np.where(norm > 0, norm, 1), 0.0)
        if pre.kind == "shrink":
            a = np.minimum(1.0, a)
    C = clip * clip_slack(np.float32, x.shape[1], K)
    sq_g = ((a * norm) ** 2 + float(stat.train_bias)) * sq_e[y]
    c = np.minimum(1.0, C / np.sqrt(np.maximum(sq_g, 1e-30)))
    if weights is not None:
        c = c * weights
    S = np.zeros((K, x.shape[1]))
    np.add.at(S, y, (a * c)[:, None] * x)
    counts = np.zeros(K)
    np.add.at(counts, y, c)
    return S, counts, c.sum()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["normalize", "shrink", "identity"])
@pytest.mark.parametrize("train_bias", [False, True])
def test_equals_a_float64_reference(dtype, kind, train_bias):
    rng = np.random.default_rng(0)
    K, n, d = 7, 503, 24
    x = (rng.normal(size=(n, d)) * rng.uniform(0.1, 3, size=(n, 1))).astype(dtype)
    x[5] = 0
    y = rng.integers(0, K, n).astype(np.int32)
    w = rng.uniform(0, 1, n).astype(np.float32)
    stat = ZeroInitSums(K, "softmax", train_bias, 0.0)
    pre = IDENTITY if kind == "identity" else Preprocessing(kind, 2.0)
    acc = host_sums(x, y, stat, 0.7, pre, w)
    S, counts, total = reference(x, y, stat, 0.7, pre, w)
    np.testing.assert_allclose(acc.S.sum(0), S, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acc.counts.sum(0), counts, rtol=1e-6)
    np.testing.assert_allclose(acc.totals.sum(), total, rtol=1e-6)
    assert acc.bad.sum() == 0


@pytest.mark.parametrize("kind", ["normalize", "shrink"])
def test_equals_the_compiled_pass(kind):
    rng = np.random.default_rng(1)
    K, n, d = 130, 256, 16
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[3] *= 1e30
    x[4] *= 1e-30
    y = rng.integers(0, K, n).astype(np.int32)
    stat = ZeroInitSums(K, "softmax", True, 0.0)
    pre = Preprocessing(kind, 2.0)
    host, bad = host_sums(x, y, stat, 0.7, pre).result()
    ones = jnp.ones(n, jnp.float32)
    xla, xla_bad = chunk_pass(
        jnp.asarray(x),
        jnp.asarray(y),
        ones,
        None,
        None,
        None,
        0.7,
        stat=stat,
        static=pre.static,
        part=None,
    )
    assert bad == int(xla_bad) == 0
    for name in ("W", "b"):
        np.testing.assert_allclose(host[name], xla[name], rtol=1e-5, atol=1e-6)


def test_blocks_and_chunks_add_up_to_the_same_sums():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1001, 8)).astype(np.float32)
    y = rng.integers(0, 5, 1001).astype(np.int32)
    stat, pre = ZeroInitSums(5, "sigmoid", False, -1.0), Preprocessing("normalize", 1.0)
    whole = host_sums(x, y, stat, 1.0, pre)
    chunked = ClassSums(stat, 1.0, pre, 8)
    for start in range(0, 1001, 300):
        chunked.add(x[start : start + 300], y[start : start + 300])
    np.testing.assert_allclose(chunked.S.sum(0), whole.S.sum(0), rtol=1e-5, atol=1e-6)


def test_any_c_contiguous_array_is_read_in_place_whatever_its_alignment():
    rng = np.random.default_rng(3)
    raw = np.empty(17 * 9 * 4 + 4, np.uint8)
    x = raw[4:].view(np.float32).reshape(17, 9)  # 4-byte aligned at best
    x[:] = rng.normal(size=(17, 9))
    y = rng.integers(0, 3, 17).astype(np.int32)
    stat, pre = ZeroInitSums(3, "softmax", False, 0.0), Preprocessing("normalize", 1.0)
    np.testing.assert_allclose(
        host_sums(x, y, stat, 1.0, pre).S.sum(0), reference(x, y, stat, 1.0, pre)[0], atol=1e-6
    )


def test_float16_and_bfloat16_rows_are_decoded_exactly():
    for dtype, bits in ((np.float16, np.arange(1 << 16, dtype=np.uint16)), (None, None)):
        if dtype is None:  # bfloat16: every exponent and sign, a spread of mantissas
            dtype = ml_dtypes.bfloat16
            bits = np.arange(0, 1 << 16, 7, dtype=np.uint16)
        values = bits.view(dtype)
        finite = values[np.isfinite(values.astype(np.float32))]
        finite = finite[: finite.size // 32 * 32].reshape(-1, 32)
        K = finite.shape[0]
        stat = ZeroInitSums(K, "softmax", False, 0.0)
        y = np.arange(K, dtype=np.int32)
        acc = host_sums(finite, y, stat, 1e30, IDENTITY)
        got, want = acc.S.sum(0), finite.astype(np.float32)
        unclipped = acc.counts.sum(0) == 1.0  # w = 1: the decoded row itself, exactly
        assert unclipped.mean() > 0.8
        np.testing.assert_array_equal(got[unclipped], want[unclipped])
        np.testing.assert_allclose(
            got, reference(finite, y, stat, 1e30, IDENTITY)[0], rtol=1e-6, atol=1e-44
        )
        values = values[: values.size // 8 * 8].reshape(-1, 8)
        flags = nonfinite(values)
        want = ~np.isfinite(values.astype(np.float32)).all(axis=1)
        np.testing.assert_array_equal(flags, want)


def test_nonfinite_rows_are_counted_and_add_nothing():
    x = np.ones((6, 4), np.float32)
    x[1, 2], x[4, 0] = np.nan, np.inf
    y = np.zeros(6, np.int32)
    acc = host_sums(x, y, ZeroInitSums(2, "softmax", True, 0.0), 1.0, Preprocessing())
    assert acc.bad.sum() == 2 and np.isfinite(acc.S).all()
    np.testing.assert_array_equal(np.flatnonzero(nonfinite(x)), [1, 4])


ROWS = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 6), st.integers(1, 40)),
    elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=60, deadline=None)
@given(
    x=ROWS,
    kind=st.sampled_from(["normalize", "shrink", "identity"]),
    radius=st.floats(1e-3, 1e3),
    clip=st.floats(1e-3, 1e3),
    train_bias=st.booleans(),
    half=st.booleans(),
)
def test_every_contribution_is_within_the_clip_norm(x, kind, radius, clip, train_bias, half):
    """One row per class: each class sum is one row's contribution, ``a c x`` (with its bias
    part ``c e``), and its gradient norm never exceeds C, for any finite float32 row."""
    if half:
        with np.errstate(over="ignore"):
            x = x.astype(np.float16)
        x = np.where(np.isfinite(x), x, np.float16(65504))
    K = x.shape[0] + 1
    y = np.arange(x.shape[0], dtype=np.int32)
    stat = ZeroInitSums(K, "softmax", train_bias, 0.0)
    pre = IDENTITY if kind == "identity" else Preprocessing(kind, radius)
    acc = host_sums(x, y, stat, clip, pre)
    assert acc.bad.sum() == 0
    p0 = np.asarray(initial_probabilities(K, "softmax", 0.0), np.float64)
    sq_e = np.sum(p0 * p0) - 2 * p0 + 1
    S = acc.S.sum(0).astype(np.float64)[: x.shape[0]]
    c = acc.counts.sum(0)[: x.shape[0]]
    sq_g = (np.sum(S * S, axis=1) + train_bias * c * c) * sq_e[y]
    assert np.all(np.sqrt(sq_g) <= clip), (np.sqrt(sq_g).max(), clip)
    assert np.all(c <= 1.0)


def test_the_kernel_splits_rows_into_one_block_per_thread():
    assert _host_kernel.threads() >= 1


# ----------------------------------------------------------------- the general clipped gradient


def gradient_reference(x, y, W, b, clip, pre, loss, train_bias, weights=None):
    """``_kernel.clipped_gradient_sum`` of the preprocessed rows, in float64."""
    x = np.asarray(x, np.float64)
    norm = np.linalg.norm(x, axis=1)
    a = np.ones_like(norm)
    if pre.kind != "identity":
        a = np.where(norm > 0, pre.feature_norm / np.where(norm > 0, norm, 1), 0.0)
        if pre.kind == "shrink":
            a = np.minimum(1.0, a)
    z = a[:, None] * (x @ np.asarray(W, np.float64)) + b
    if loss == "softmax":
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
    else:
        p = 1 / (1 + np.exp(-z))
    E = p - np.eye(W.shape[1])[y]
    C = clip * clip_slack(np.float32, x.shape[1], W.shape[1])
    sq_g = ((a * norm) ** 2 + float(train_bias)) * np.sum(E * E, axis=1)
    c = np.minimum(1.0, C / np.sqrt(np.maximum(sq_g, 1e-30)))
    if weights is not None:
        c = c * weights
    return x.T @ ((a * c)[:, None] * E), (c[:, None] * E).sum(0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
@pytest.mark.parametrize("kind", ["normalize", "shrink"])
def test_gradient_sums_equal_a_float64_reference_and_the_compiled_pass(dtype, loss, kind):
    rng = np.random.default_rng(5)
    K, n, d = 6, 301, 20
    x = (rng.normal(size=(n, d)) * rng.uniform(0.1, 3, size=(n, 1))).astype(dtype)
    y = rng.integers(0, K, n).astype(np.int32)
    W = (rng.normal(size=(d, K)) * 0.5).astype(np.float32)
    b = rng.normal(size=K).astype(np.float32)
    w = rng.uniform(0, 1, n).astype(np.float32)
    stat = GradientSums(loss, True)
    pre = Preprocessing(kind, 1.5)
    args = ({"W": W}, b, 0.3)
    acc = GradientSumsAcc(stat, args, pre, d, None)
    acc.add(x, y, w)
    host, bad = acc.result()
    gW, gb = gradient_reference(x, y, W, b, 0.3, pre, loss, True, w)
    assert bad == 0
    np.testing.assert_allclose(host["W"], gW, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host["b"], gb, rtol=1e-5, atol=1e-6)
    x32 = jnp.asarray(x.astype(np.float32))
    xla, _ = chunk_pass(
        x32,
        jnp.asarray(y),
        jnp.ones(n),
        jnp.asarray(w),
        None,
        None,
        args,
        stat=stat,
        static=pre.static,
        part=None,
    )
    np.testing.assert_allclose(host["W"], xla["W"], rtol=1e-4, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    x=ROWS,
    kind=st.sampled_from(["normalize", "shrink", "identity"]),
    clip=st.floats(1e-3, 1e3),
    scale=st.floats(1e-3, 1e3),
    loss=st.sampled_from(["softmax", "sigmoid"]),
    train_bias=st.booleans(),
)
def test_every_gradient_is_within_the_clip_norm(x, kind, clip, scale, loss, train_bias):
    """One row at a time: its clipped gradient ``[a c e x^T, c e]`` has norm at most C."""
    K = 3
    W = np.linspace(-scale, scale, x.shape[1] * K, dtype=np.float32).reshape(-1, K)
    pre = IDENTITY if kind == "identity" else Preprocessing(kind, 2.0)
    for i in range(x.shape[0]):
        acc = GradientSumsAcc(
            GradientSums(loss, train_bias), ({"W": W}, np.zeros(K), clip), pre, x.shape[1], 1
        )
        acc.add(x[i : i + 1], np.array([i % K], np.int32))
        g = acc.G.sum(0).astype(np.float64)
        total = np.sum(g * g) + train_bias * np.sum(acc.gb.sum(0) ** 2)
        assert np.sqrt(total) <= clip, (np.sqrt(total), clip)
