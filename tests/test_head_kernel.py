"""The fused clipped sum against explicit per-example gradients (vmap of grad, float64)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from private_head._kernel import (
    ONE_HOT_MAX_CLASSES,
    clipped_gradient_sum,
    gaussian_noise_like,
    zero_init_class_sums,
)

N, D, K = 48, 6, 5


def per_example_reference(W, b, X, y, C, *, loss="softmax", train_bias=True, mask=None):
    """Explicit per-example gradients in float64, each clipped to norm C, summed."""
    with jax.enable_x64(True):
        W, b, X = (jnp.asarray(np.asarray(a, np.float64)) for a in (W, b, X))
        y = jnp.asarray(np.asarray(y))

        def example_loss(params, x, label):
            w, bias = params
            z = x @ w + bias
            if loss == "softmax":
                return -jax.nn.log_softmax(z)[label]
            target = jax.nn.one_hot(label, z.shape[0], dtype=z.dtype)
            return jnp.sum(jax.nn.softplus(z) - target * z)

        gW, gb = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))((W, b), X, y)
        if not train_bias:
            gb = jnp.zeros_like(gb)
        norms = jnp.sqrt(jnp.sum(gW**2, axis=(1, 2)) + jnp.sum(gb**2, axis=1))
        c = jnp.minimum(1.0, C / norms)
        if mask is not None:
            c = c * jnp.asarray(np.asarray(mask, np.float64))
        return (
            np.asarray(jnp.einsum("n,ndk->dk", c, gW)),
            np.asarray(jnp.einsum("n,nk->k", c, gb)),
        )


def rel_err(a, b):
    a = np.concatenate([np.ravel(x) for x in a])
    b = np.concatenate([np.ravel(x) for x in b])
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def problem(seed, *, scale=1.0, w_scale=1.0, n=N):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, D)) * scale).astype(np.float32)
    X[: n // 4] *= 1e-3  # rows far below the clip norm next to rows far above it
    W = (rng.normal(size=(D, K)) * w_scale).astype(np.float32)
    b = rng.normal(size=K).astype(np.float32)
    y = rng.integers(0, K, size=n).astype(np.int32)
    return W, b, X, y


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
@pytest.mark.parametrize("train_bias", [True, False])
def test_fused_equals_per_example_reference(loss, train_bias):
    rng = np.random.default_rng(1)
    mask = (rng.random(N) < 0.7).astype(np.float32)
    for seed, scale, C in [(0, 1.0, 1.0), (1, 30.0, 0.5), (2, 0.01, 10.0), (3, 5.0, 1e-3)]:
        W, b, X, y = problem(seed, scale=scale)
        for m in (None, mask):
            got = clipped_gradient_sum(W, b, X, y, C, loss=loss, train_bias=train_bias, mask=m)
            want = per_example_reference(W, b, X, y, C, loss=loss, train_bias=train_bias, mask=m)
            assert rel_err(got, want) < 1e-5, (seed, m is None)
            if not train_bias:
                assert np.all(np.asarray(got[1]) == 0)


def contributions(W, b, X, y, C, **kw):
    """Each row's contribution as computed by the fused kernel (mask = one-hot of the row).

    ``lax.map``, not ``vmap``: XLA:CPU has no batched bf16 x bf16 -> f32 dot.
    """
    masks = jnp.eye(X.shape[0], dtype=jnp.float32)
    return jax.lax.map(lambda m: clipped_gradient_sum(W, b, X, y, C, mask=m, **kw), masks)


@settings(max_examples=8)
@given(
    seed=st.integers(0, 2**31 - 1),
    log_scale=st.floats(-3, 3),
    log_c=st.floats(-3, 2),
    loss=st.sampled_from(["softmax", "sigmoid"]),
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16]),
)
def test_every_contribution_within_clip_norm(seed, log_scale, log_c, loss, dtype):
    W, b, X, y = problem(seed, scale=10.0**log_scale, w_scale=3.0, n=12)
    C = 10.0**log_c
    Xd = jnp.asarray(X).astype(dtype)
    gW, gb = contributions(W, b, Xd, y, C, loss=loss, train_bias=True)
    norms = np.sqrt(
        np.sum(np.square(gW, dtype=np.float64), axis=(1, 2))
        + np.sum(np.square(gb, dtype=np.float64), axis=1)
    )
    assert np.all(norms <= C * (1 + 1e-6))
    # the fused per-row contributions are the clipped per-example gradients
    want = per_example_reference(W, b, np.asarray(Xd.astype(jnp.float32)), y, C, loss=loss)
    sW, sb = clipped_gradient_sum(W, b, Xd, y, C, loss=loss, train_bias=True)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    assert rel_err((sW, sb), want) < tol
    assert np.sqrt(np.sum(np.square(sW)) + np.sum(np.square(sb))) <= X.shape[0] * C * (1 + 1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_inputs_close_to_float32(dtype):
    W, b, X, y = problem(5, scale=0.5, n=256)
    want = clipped_gradient_sum(W, b, X, y, 1.0, loss="softmax", train_bias=True)
    got = clipped_gradient_sum(
        W, b, jnp.asarray(X).astype(dtype), y, 1.0, loss="softmax", train_bias=True
    )
    assert got[0].dtype == jnp.float32 and got[1].dtype == jnp.float32
    assert rel_err(got, want) < 2e-2


@pytest.mark.parametrize(
    "loss,bias0", [("softmax", 0.0), ("sigmoid", -math.log(K - 1)), ("sigmoid", 0.7)]
)
@pytest.mark.parametrize("train_bias", [True, False])
def test_zero_init_path_equals_general_kernel_at_zero(loss, bias0, train_bias):
    W, b, X, y = problem(7, scale=3.0)
    mask = np.arange(N) % 3 != 0
    zeros = np.zeros((D, K), np.float32)
    b0 = np.full(K, bias0, np.float32)
    for m in (None, mask):
        want = clipped_gradient_sum(zeros, b0, X, y, 0.8, loss=loss, train_bias=train_bias, mask=m)
        got = zero_init_class_sums(
            X, y, K, 0.8, loss=loss, train_bias=train_bias, bias0=bias0, mask=m
        )
        assert rel_err(got, want) < 1e-5
        ref = per_example_reference(zeros, b0, X, y, 0.8, loss=loss, train_bias=train_bias, mask=m)
        assert rel_err(got, ref) < 1e-5


def test_zero_init_low_precision_contributions_within_clip_norm():
    W, b, X, y = problem(9, scale=4.0, n=16)
    Xb = jnp.asarray(X).astype(jnp.bfloat16)
    masks = jnp.eye(16, dtype=jnp.float32)
    gW, gb = jax.lax.map(
        lambda m: zero_init_class_sums(Xb, y, K, 0.7, train_bias=True, mask=m), masks
    )
    norms = np.sqrt(
        np.sum(np.square(gW, dtype=np.float64), axis=(1, 2))
        + np.sum(np.square(gb, dtype=np.float64), axis=1)
    )
    assert np.all(norms <= 0.7) and np.all(norms > 0.6)


def test_zero_init_scatter_path_for_many_classes():
    k = ONE_HOT_MAX_CLASSES + 2
    rng = np.random.default_rng(8)
    X = rng.normal(size=(40, 3)).astype(np.float32) * 2
    y = rng.integers(0, k, 40).astype(np.int32)
    want = per_example_reference(np.zeros((3, k)), np.zeros(k), X, y, 0.5, train_bias=True)
    got = zero_init_class_sums(X, y, k, 0.5, train_bias=True)
    assert rel_err(got, want) < 1e-5


def test_noise_std_is_sigma_times_clip_norm():
    sigma, C = 2.5, 0.3
    tree = {"W": jnp.zeros((300, 200)), "b": jnp.zeros(100)}
    noise = gaussian_noise_like(jax.random.key(123), tree, sigma * C)
    flat = np.concatenate([np.ravel(noise["W"]), np.ravel(noise["b"])]).astype(np.float64)
    m = flat.size
    # sum of squares / std^2 is chi-square with m degrees of freedom
    chi2 = np.sum(flat**2) / (sigma * C) ** 2
    p = stats.chi2.cdf(chi2, m)
    assert 1e-4 < p < 1 - 1e-4
    assert abs(np.std(flat) / (sigma * C) - 1) < 5 * math.sqrt(0.5 / m)
    assert abs(np.mean(flat)) < 5 * sigma * C / math.sqrt(m)
    assert stats.kstest(flat / (sigma * C), "norm").pvalue > 1e-4
    # independent leaves, deterministic in the key
    assert abs(np.corrcoef(np.ravel(noise["W"])[:100], np.ravel(noise["b"]))[0, 1]) < 0.4
    again = gaussian_noise_like(jax.random.key(123), tree, sigma * C)
    assert np.array_equal(again["W"], noise["W"])
