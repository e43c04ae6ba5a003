"""The per-row map on the device against its formula in float64 (preprocessing module)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from private_head._preprocessing import (
    IDENTITY,
    Preprocessing,
    fold_factors,
    needs_rescale,
    rescaled,
    row_exponents,
    rows32,
    slack,
)


def reference(x: np.ndarray, kind: str, r: float, center: str, mean=None) -> np.ndarray:
    """The module docstring's rule in float64."""
    x = np.asarray(x, np.float64)

    def bound(v):
        n = np.linalg.norm(v, axis=1, keepdims=True)
        safe = np.where(n > 0, n, 1.0)
        s = r / safe if kind == "normalize" else np.minimum(1.0, r / safe)
        return np.where(n > 0, s * v, 0.0)

    if center == "none":
        return bound(x)
    if center == "public":
        return bound(x - mean)
    return bound(bound(x) - mean)


def fold(x, static):
    """What a pass does without centring: rescale extreme chunks, then fold the scale."""
    x = jnp.asarray(x)
    e = row_exponents(x)
    if bool(needs_rescale(e)):
        x = rescaled(x, e)
        return (x, *fold_factors(x, static, e))
    return (x, *fold_factors(x, static))


def device(x, pre: Preprocessing) -> np.ndarray:
    return np.asarray(rows32(jnp.asarray(x), pre.device_params(), pre.static)[0], np.float64)


@pytest.mark.parametrize("kind", ["normalize", "shrink"])
@pytest.mark.parametrize("center", ["none", "public", "private"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, jnp.bfloat16])
def test_device_map_is_the_formula(kind, center, dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)) * rng.choice([0.01, 1.0, 30.0], size=(40, 1))
    x[3] = 0.0
    x = np.asarray(jnp.asarray(x, dtype).astype(jnp.float32))  # the values as stored
    mean = None if center == "none" else rng.normal(size=6).astype(np.float32) * 0.3
    r = 2.0
    pre = Preprocessing(kind, r, center, mean)
    got = device(jnp.asarray(x, dtype), pre)
    want = reference(x, kind, r, center, mean)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)  # slack(6) ~ 1e-6
    assert np.all(np.linalg.norm(got, axis=1) <= r)
    assert np.all(got[3] == 0) or center != "none"


@pytest.mark.parametrize("scale", [1e-30, 1e-18, 1e18, 1e30])
def test_huge_and_tiny_norms_are_normalised_not_zeroed(scale):
    x = np.array([[3.0, -4.0, 0.0], [1.0, 1.0, 1.0]], np.float32) * np.float32(scale)
    got = device(x, Preprocessing("normalize", 1.0))
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1 - slack(3), rtol=1e-6)
    np.testing.assert_allclose(got[0], [0.6, -0.8, 0.0], rtol=1e-5, atol=1e-7)


def test_zero_rows_stay_zero_and_nonfinite_rows_are_flagged():
    x = np.array([[0.0, 0.0], [np.nan, 1.0], [np.inf, 0.0], [1.0, 2.0]], np.float32)
    _, _, norms = fold(x, ("normalize", 1.0, "none"))
    norms = np.asarray(norms)
    assert norms[0] == 0 and not np.isfinite(norms[1]) and not np.isfinite(norms[2])
    assert np.isfinite(norms[3])
    assert np.all(device(x[[0]], Preprocessing()) == 0)


@settings(max_examples=30)
@given(
    rows=st.lists(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=5, max_size=5),
        min_size=1,
        max_size=8,
    ),
    r=st.floats(1e-3, 1e3),
    kind=st.sampled_from(["normalize", "shrink"]),
    center=st.sampled_from(["none", "public", "private"]),
    dtype=st.sampled_from([np.float32, np.float16, jnp.bfloat16]),
)
def test_every_materialised_row_is_within_the_radius(rows, r, kind, center, dtype):
    x = np.asarray(rows, np.float32)
    if dtype is np.float16:
        x = np.clip(x, -6e4, 6e4)
    mean = None if center == "none" else np.full(5, 0.25, np.float32) * r
    got = device(jnp.asarray(x).astype(dtype), Preprocessing(kind, r, center, mean))
    assert np.all(np.linalg.norm(got, axis=1) <= r)  # float64 norms of the float32 values


@pytest.mark.parametrize("kind", ["normalize", "shrink"])
@pytest.mark.parametrize("scale", [1.0, 1e-25, 1e25])
def test_the_folded_scale_is_the_map_and_prediction_applies_the_same_map(kind, scale):
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(10, 4)) * scale).astype(np.float32)
    x[0] *= 1e-3
    pre = Preprocessing(kind, 1.5)
    x_used, a, norms = (np.asarray(v, np.float64) for v in fold(x, pre.static))
    folded = a[:, None] * x_used
    np.testing.assert_allclose(np.linalg.norm(folded, axis=1), norms, rtol=1e-5)
    np.testing.assert_allclose(folded, reference(x, kind, 1.5, "none"), rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(pre.apply(x), device(x, pre), rtol=1e-6)
    np.testing.assert_array_equal(device(x, IDENTITY), x)


def test_a_mean_is_needed_exactly_when_centring():
    with pytest.raises(ValueError, match="mean"):
        Preprocessing("normalize", 1.0, "public")
    with pytest.raises(ValueError, match="mean"):
        Preprocessing("normalize", 1.0, "none", np.zeros(3))
