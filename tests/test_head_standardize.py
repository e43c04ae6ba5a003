"""Standardisation as preprocessing (``standardize``): group normalisation (free), the private
per-group standardisation (charged) and the public one; the fused map against a numpy reference,
the release's sensitivities and noise, ``auto``'s resolution from the store's declared feature
groups, prediction, the head file, and the errors."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import private_head
from private_head._options import Preprocess
from private_head._preprocessing import (
    Preprocessing,
    group_ids,
    group_means,
    group_sizes,
    rows32,
    within_radius,
)
from private_head._statistics import Chunk, GroupMoments
from private_head._train import STANDARDIZE_SQUARES, STANDARDIZE_SUM, resolve_standardization
from private_head.testing import Recorder, observing
from tests.helpers import blobs, write_store

K = 3
EPS, DELTA = 2.0, 1e-5


def bound_np(x: np.ndarray, r: float, kind: str = "normalize") -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    scale = r / np.where(norms > 0, norms, 1.0)
    if kind == "shrink":
        scale = np.minimum(1.0, scale)
    return np.where(norms > 0, x * scale, 0.0)


def group_norm_np(x: np.ndarray, groups: int) -> np.ndarray:
    gid = group_ids(x.shape[1], groups)
    out = np.zeros_like(x)
    ms = np.mean(x * x, axis=1)
    for g in range(groups):
        cols = gid == g
        part = x[:, cols]
        mu = part.mean(1, keepdims=True)
        var = part.var(1, keepdims=True)
        with np.errstate(invalid="ignore"):  # the zero row: 0 / 0, set to 0 below
            out[:, cols] = (part - mu) / np.sqrt(var + 1e-5 * ms[:, None])
    return np.where(ms[:, None] > 0, out, 0.0)


def reference(x: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """The map of ``_preprocessing``'s docstring, straightforwardly, in float64."""
    x = np.asarray(x, np.float64)
    r, kind = pre.feature_norm, pre.kind
    if pre.standardize == "group":
        return bound_np(group_norm_np(x, pre.groups), r, kind)
    if pre.standardize == "private":
        return bound_np((bound_np(x, r, kind) - pre.mean) / pre.scale, r, kind)
    if pre.standardize == "public":
        return bound_np((x - pre.mean) / pre.scale, r, kind)
    raise AssertionError(pre.standardize)


def device(x: np.ndarray, pre: Preprocessing) -> np.ndarray:
    out = rows32(jnp.asarray(x, jnp.float32), pre.device_params(), pre.static)[0]
    return np.asarray(out, np.float64)


def anisotropic(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = blobs(n, dim, K, seed=seed)
    return (x * np.geomspace(0.01, 100.0, dim)).astype(np.float32), y


# ------------------------------------------------------------------------------ the fused map
@pytest.mark.parametrize("dim, groups", [(12, 3), (13, 4), (10, 5)])
@pytest.mark.parametrize("kind", ["normalize", "shrink"])
def test_the_fused_maps_equal_a_numpy_reference(dim, groups, kind):
    rng = np.random.default_rng(dim + groups)
    x = (rng.normal(size=(40, dim)) * rng.uniform(0.01, 10, dim) + 0.5).astype(np.float32)
    x[3] = 0.0  # a zero row stays zero
    x[4] *= 1e30  # group normalisation is scale-free; the bound sees every magnitude
    r = 1.7 if kind == "normalize" else 1e3
    m = rng.normal(size=dim).astype(np.float32) * 0.1
    s = rng.uniform(0.05, 2.0, dim).astype(np.float32)
    maps = [
        Preprocessing(kind, r, standardize="group", groups=groups),
        Preprocessing(kind, r, "none", m, "private", groups, s),
        Preprocessing(kind, r, "none", m * 10, "public", 0, s * 10),
    ]
    for pre in maps:
        got, want = device(x, pre), reference(x, pre)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * r)
        assert np.all(np.linalg.norm(got, axis=1) <= r)
        assert np.all(got[3] == 0) or pre.standardize != "group"
        # prediction applies the identical map
        np.testing.assert_allclose(
            pre.apply(x), got, rtol=1e-6, atol=1e-6 * r
        )  # XLA may fuse apart


def test_group_normalisation_is_scale_free_and_centres_each_group():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 12)).astype(np.float32)
    pre = Preprocessing("normalize", 1.0, standardize="group", groups=3)
    np.testing.assert_allclose(device(x * 1e-20, pre), device(x, pre), rtol=1e-5, atol=1e-6)
    got = device(x, pre).reshape(5, 3, 4)
    np.testing.assert_allclose(got.mean(axis=2), 0.0, atol=1e-6)


# ------------------------------------------------------------------------------ the release
@settings(max_examples=20, deadline=None)
@given(
    dim=st.integers(1, 40),
    data=st.data(),
    radius=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31),
)
def test_each_rows_statistics_lie_within_the_declared_sensitivities(dim, data, radius, seed):
    """For rows with ||b|| <= r: ||u_i|| <= r / sqrt(m_min) and ||v_i||_2 <= r^2 / m_min, in
    exact arithmetic and as the statistic computes them (float32, each row clipped)."""
    groups = data.draw(st.integers(1, dim))
    rng = np.random.default_rng(seed)
    b = rng.normal(size=(8, dim)) * rng.uniform(0, 5, dim) ** rng.integers(1, 4)
    if rng.random() < 0.3:  # all of a row's mass in one smallest group: the worst case
        b[0] = 0.0
        b[0, np.flatnonzero(group_ids(dim, groups) == np.argmin(group_sizes(dim, groups)))] = 1.0
    b = bound_np(b, radius) * rng.uniform(0, 1, (8, 1))  # norms at most r
    stat = GroupMoments(groups, radius, int(group_sizes(dim, groups).min()))
    delta_u, delta_v = stat.sensitivities()
    gid = group_ids(dim, groups)
    u = np.stack([b[:, gid == g].mean(1) for g in range(groups)], 1)
    v = np.stack([(b[:, gid == g] ** 2).mean(1) for g in range(groups)], 1)
    assert np.all(np.linalg.norm(u, axis=1) <= delta_u * (1 + 1e-12))
    assert np.all(np.linalg.norm(v, axis=1) <= delta_v * (1 + 1e-12))
    # as computed: each row's u_i and v_i in float32, clipped as the statistic clips them, and
    # the statistic's sums are their sums
    b32 = jnp.asarray(b, jnp.float32)
    u32 = within_radius(group_means(b32, groups), delta_u)[0]
    v32 = within_radius(group_means(b32 * b32, groups), delta_v)[0]
    assert np.all(np.linalg.norm(np.asarray(u32, np.float64), axis=1) <= delta_u)
    assert np.all(np.linalg.norm(np.asarray(v32, np.float64), axis=1) <= delta_v)
    ones = jnp.ones(len(b), jnp.float32)
    flag = ("identity", radius, "none", "none", 0)
    su, sv = stat(Chunk(b32, jnp.zeros(len(b), jnp.int32), ones, ones, None, None, flag), None)
    np.testing.assert_allclose(su, u32.sum(0), rtol=1e-5, atol=1e-6 * delta_u)
    np.testing.assert_allclose(sv, v32.sum(0), rtol=1e-5, atol=1e-6 * delta_v)


def test_the_release_is_planned_charged_and_calibrated():
    """Two Gaussian releases of sensitivities r / sqrt(m_min) and r^2 / m_min, each with half of
    f mu^2 (equal noise multipliers), charged before the method; over many seeds the noise added
    to the statistics has the planned std (chi-square)."""
    x, y = anisotropic(120, 10, seed=2)
    r, groups, f = 2.0, 4, 0.05  # groups of 2 or 3 features: m_min = 2
    values = []
    for seed in range(12):
        recorder = Recorder()
        with observing(recorder):
            head = private_head.fit(
                x,
                y,
                num_classes=K,
                epsilon=EPS,
                delta=DELTA,
                seed=seed,
                feature_norm=r,
                standardize="private",
                groups=groups,
                progress=False,
            )
        for (name, _), (statistic, released) in recorder.log.items():
            if name in (STANDARDIZE_SUM, STANDARDIZE_SQUARES):
                std = recorder.planned[name].noise_std
                noise = np.asarray(released, np.float64) - np.asarray(statistic, np.float64)
                values.append(noise / std)
    releases = {r_["name"]: r_ for r_ in head.privacy["releases"]}
    names = [r_["name"] for r_ in head.privacy["releases"]]
    assert names[:3] == ["dataset_size/noisy_count", STANDARDIZE_SUM, STANDARDIZE_SQUARES]
    su, sv = releases[STANDARDIZE_SUM], releases[STANDARDIZE_SQUARES]
    assert su["sensitivity"] == pytest.approx(r / math.sqrt(2))
    assert sv["sensitivity"] == pytest.approx(r * r / 2)
    assert su["noise_std"] / su["sensitivity"] == pytest.approx(sv["noise_std"] / sv["sensitivity"])
    # mu_u^2 + mu_v^2 = f mu^2 where mu^2 is what the count left: f / (1 - 0.01) of the rest
    mu_u, mu_v = 1 / su["event"]["noise_multiplier"], 1 / sv["event"]["noise_multiplier"]
    count_mu = 1 / releases["dataset_size/noisy_count"]["event"]["noise_multiplier"]
    assert (mu_u**2 + mu_v**2) / count_mu**2 == pytest.approx(f / 0.01, rel=1e-6)
    z = np.concatenate(values)
    assert z.size == 12 * 2 * groups
    square = float(np.sum(z * z))
    assert 1e-6 < scipy.stats.chi2.cdf(square, z.size) < 1 - 1e-6
    entry = head.privacy["standardize"]
    assert entry["kind"] == "private" and entry["groups"] == groups
    assert entry["budget_fraction"] == f
    assert entry["noise_std"]["group_sum"] == su["noise_std"]


def test_the_nonprivate_statistics_are_exact_and_prediction_applies_the_map(tmp_path):
    """epsilon = inf: m and s are the exact per-group moments of bound(x) (the true count as
    divisor, e_v = 0); the head predicts with x -> bound((bound(x) - m) / s), and the saved
    head (npz and h5) holds the same m and s and predicts the same."""
    x, y = anisotropic(90, 10, seed=3)
    head = private_head.fit(
        x,
        y,
        num_classes=K,
        epsilon=math.inf,
        delta=DELTA,
        method="nonprivate",
        steps=3,
        standardize="private",
        groups=5,
        feature_norm=1.5,
    )
    pre = head.preprocessing
    b = bound_np(x.astype(np.float64), 1.5)
    gid = group_ids(10, 5)
    m = np.array([b[:, gid == g].mean() for g in range(5)])
    var = np.array([(b[:, gid == g] ** 2).mean() for g in range(5)]) - m**2
    s = np.sqrt(var + 1e-6 * var.mean() + 1e-12 * 1.5**2 / 10)
    np.testing.assert_allclose(pre.mean, m[gid], rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(pre.scale, s[gid], rtol=2e-5)
    want = reference(x, pre) @ head.weights + head.bias
    np.testing.assert_allclose(head.logits(x), want, rtol=1e-4, atol=1e-4)
    for name in ("head.npz", "head.h5"):
        loaded = private_head.load(head.save(tmp_path / name))
        assert loaded.preprocessing.standardize == "private" and loaded.preprocessing.groups == 5
        np.testing.assert_array_equal(loaded.preprocessing.mean, pre.mean)
        np.testing.assert_array_equal(loaded.preprocessing.scale, pre.scale)
        np.testing.assert_array_equal(loaded.logits(x), head.logits(x))
        assert loaded.report() == head.report()


def test_a_head_file_with_a_mean_but_no_scale_is_refused(tmp_path):
    x, y = anisotropic(60, 6, seed=4)
    head = private_head.fit(
        x, y, num_classes=K, epsilon=EPS, delta=DELTA, standardize="private", seed=1
    )
    path = head.save(tmp_path / "h.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "scale"}
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="modified|disagree"):
        private_head.load(path)


def test_group_normalisation_is_free_and_the_host_kernel_declines_it():
    x, y = anisotropic(150, 8, seed=5)
    common = dict(
        num_classes=K, epsilon=EPS, delta=DELTA, seed=2, progress=False, method="single_step"
    )
    plain = private_head.fit(x, y, **common)
    grouped = private_head.fit(x, y, standardize="group", groups=2, **common)
    assert [r["name"] for r in grouped.privacy["releases"]] == [
        r["name"] for r in plain.privacy["releases"]
    ]
    assert grouped.privacy["epsilon_spent"] == plain.privacy["epsilon_spent"]
    assert plain.operator_log["host_kernel_passes"] >= 1
    assert grouped.operator_log["host_kernel_passes"] == 0  # the compiled pass materialises
    assert grouped.settings["standardize"] == {"kind": "group", "groups": 2, "reason": "asked for"}


def test_public_standardisation_uses_the_callers_mean_and_scale():
    x, y = anisotropic(100, 6, seed=6)
    m, s = x.mean(0), x.std(0)
    head = private_head.fit(
        x, y, num_classes=K, epsilon=EPS, delta=DELTA, seed=3, public_mean=m, public_scale=s
    )
    assert head.preprocessing.standardize == "public"  # auto: public_scale was given
    np.testing.assert_array_equal(head.preprocessing.mean, m)
    np.testing.assert_array_equal(head.preprocessing.scale, s)
    assert [r["name"] for r in head.privacy["releases"]][1:2] != [STANDARDIZE_SUM]
    want = reference(x, head.preprocessing) @ head.weights + head.bias
    np.testing.assert_allclose(head.logits(x), want, rtol=1e-4, atol=1e-4)


def test_streamed_store_rows_give_the_in_memory_standardised_head(tmp_path):
    x, y = anisotropic(250, 8, seed=7)
    path = write_store(tmp_path / "s.h5", {"train": (x, y)}, K)
    common = dict(num_classes=K, epsilon=EPS, delta=DELTA, seed=5, standardize="private", groups=4)
    memory = private_head.fit(x, y, method="dp_gd", steps=2, **common)
    stored = private_head.fit(f"{path}:train", method="dp_gd", steps=2, chunk_rows=96, **common)
    np.testing.assert_allclose(stored.preprocessing.mean, memory.preprocessing.mean, atol=1e-6)
    np.testing.assert_allclose(stored.preprocessing.scale, memory.preprocessing.scale, rtol=1e-5)
    np.testing.assert_allclose(stored.weights, memory.weights, atol=1e-5, rtol=1e-3)


# ------------------------------------------------------------------------------ auto
def test_auto_resolves_from_the_stores_declared_groups(tmp_path):
    x, y = anisotropic(120, 12, seed=8)
    declared = write_store(tmp_path / "g.h5", {"train": (x, y)}, K, attrs={"feature_groups": 3})
    plain = write_store(tmp_path / "p.h5", {"train": (x, y)}, K)
    common = dict(num_classes=K, epsilon=EPS, delta=DELTA, seed=1, progress=False)

    head = private_head.fit(f"{declared}:train", **common)
    assert head.settings["data"]["feature_groups"] == 3
    assert head.settings["standardize"]["kind"] == "private"
    assert head.settings["standardize"]["groups"] == 3
    assert head.preprocessing.standardize == "private" and head.preprocessing.groups == 3
    assert head.privacy["standardize"]["kind"] == "private"

    for features, extra in [
        (f"{plain}:train", {}),  # a store that declares nothing
        (x, {}),  # arrays in memory
        (f"{declared}:train", {"center": "private"}),  # centring asked for
    ]:
        labels = None if isinstance(features, str) else y
        head = private_head.fit(features, labels, **common, **extra)
        assert head.settings["standardize"]["kind"] == "none"
        assert head.preprocessing.standardize == "none"
        assert "standardize" not in head.privacy
        assert "standardize" not in head.preprocessing.to_dict()
    # explicit groups override the declared ones
    head = private_head.fit(f"{declared}:train", standardize="private", groups=6, **common)
    assert head.preprocessing.groups == 6


def test_resolution_defaults_groups_to_the_declared_ones_else_one_per_feature():
    opts = Preprocess(standardize="private")
    assert resolve_standardization(opts, 12, 4).groups == 4
    assert resolve_standardization(opts, 12, None).groups == 12
    assert resolve_standardization(Preprocess(), 12, None).kind == "none"
    assert resolve_standardization(Preprocess(), 12, 4).kind == "private"
    declared = resolve_standardization(Preprocess(groups=3), 12, None)  # arrays declare theirs
    assert (declared.kind, declared.groups) == ("private", 3)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "options, message",
    [
        ({"standardize": "private", "groups": 0}, "groups must be at least 1"),
        ({"standardize": "private", "groups": 9}, r"groups must lie in \[1, D\] = \[1, 8\]"),
        ({"standardize": "group", "groups": 5}, "a group of one feature"),
        ({"standardize": "group"}, "a group of one feature"),  # G = D by default
        ({"standardize": "private", "center": "private"}, "centres the features itself"),
        ({"standardize": "group", "center": "public"}, "centres the features itself"),
        ({"standardize": "public"}, "needs public_scale"),
        ({"standardize": "none", "public_scale": np.ones(8)}, "public_scale was given"),
        ({"public_scale": np.ones(7)}, r"public_scale must have shape \(8,\)"),
        ({"public_scale": -np.ones(8)}, "positive finite"),
        ({"standardize": "private", "public_mean": np.zeros(8)}, "choose one"),
        ({"standardize": "sometimes"}, "must be one of"),
        ({"standardize_budget_fraction": 1.0}, r"must lie in \(0, 1\)"),
    ],
)
def test_bad_standardisation_options_are_refused(options, message):
    x, y = anisotropic(40, 8, seed=9)
    with pytest.raises(ValueError, match=message):
        private_head.fit(x, y, num_classes=K, epsilon=EPS, delta=DELTA, **options)
