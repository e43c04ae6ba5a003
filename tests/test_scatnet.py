"""The ScatterNet backbone against kymatio's numpy scattering, its normalisation against the
group-norm formula, and its registry entries."""

import jax
import numpy as np
import pytest

from feature_extract import registry
from feature_extract.families import scatnet
from tests.kymatio_shim import scattering2d_class

RNG = np.random.default_rng(0)
# parity: the largest |ours - kymatio| over the largest |kymatio| (float32 against float64)
TOLERANCE = 2e-6


def _relative_error(ours, reference) -> float:
    return float(np.abs(np.asarray(ours, np.float64) - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize(
    "shape, J, L",
    [((28, 28), 2, 8), ((32, 20), 2, 8), ((17, 33), 2, 8), ((32, 32), 3, 6), ((16, 16), 1, 4)],
)
def test_scattering_matches_kymatio(shape, J, L):
    x = RNG.uniform(0, 1, (3, *shape))
    reference = scattering2d_class()(J=J, shape=shape, L=L)(x)
    ours = jax.jit(lambda g: scatnet.scattering(g, J, L))(x.astype(np.float32))
    assert (
        ours.shape
        == reference.shape
        == (3, scatnet.num_channels(J, L), *(s // 2**J for s in shape))
    )
    assert _relative_error(ours, reference) < TOLERANCE


def test_backbone_is_tramer_boneh_on_mnist():
    """The registered backbone: gray 28x28 in [0, 1] -> 81 x 7 x 7 = 3969 features, channel-major,
    equal to kymatio's coefficients of the gray image; RGB goes through the luma weights."""
    bb = registry.load_backbone("scatnet")
    assert (bb.feature_dim, bb.resolution, bb.params) == (3969, 28, {})
    assert bb.preprocessing == "resize(28)|value_range(0,1)"
    gray = RNG.uniform(0, 1, (2, 28, 28))
    reference = scattering2d_class()(J=2, shape=(28, 28), L=8)(gray).reshape(2, -1)
    ours = jax.jit(bb.apply)(bb.params, np.repeat(gray[..., None], 3, -1).astype(np.float32))
    assert ours.dtype == np.float32 and _relative_error(ours, reference) < TOLERANCE
    rgb = RNG.uniform(0, 1, (2, 28, 28, 3)).astype(np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(
        bb.apply(bb.params, rgb), bb.apply(bb.params, np.repeat(luma[..., None], 3, -1)), atol=1e-5
    )


def test_group_normalised_entry():
    """scatnet-gn: each example's 27 groups of 3 channels x 7 x 7 have mean 0 and variance
    var / (var + 1e-5), from the formula on the plain features."""
    plain, gn = registry.load_backbone("scatnet"), registry.load_backbone("scatnet-gn")
    images = RNG.uniform(0, 1, (2, 28, 28, 3)).astype(np.float32)
    s = np.asarray(plain.apply(plain.params, images), np.float64).reshape(2, 27, 3 * 49)
    mean, var = s.mean(-1, keepdims=True), s.var(-1, keepdims=True)
    expected = ((s - mean) / np.sqrt(var + 1e-5)).reshape(2, -1)
    np.testing.assert_allclose(gn.apply(gn.params, images), expected, rtol=1e-4, atol=1e-4)


def test_other_sizes_and_errors():
    bb = registry.load_backbone("scatnet", resolution=32)
    assert (bb.feature_dim, bb.preprocessing) == (81 * 8 * 8, "resize(32)|value_range(0,1)")
    with pytest.raises(ValueError, match="at least 4 pixels"):
        registry.load_backbone("scatnet", resolution=3)
    with pytest.raises(ValueError, match="has no weights"):
        registry.load_backbone("scatnet", "some.npz")


def test_channels_are_the_declared_feature_groups(tmp_path):
    """scatnet declares its channels as contiguous feature groups (from the config: 81 for J=2,
    L=8; other J, L give theirs); an extracted store records them as the split attribute
    ``feature_groups``, which SplitInfo exposes; a backbone that declares none records none."""
    from feature_extract import store
    from feature_extract.extraction import extract

    for name in ("scatnet", "scatnet-gn"):
        bb = registry.load_backbone(name)
        assert bb.feature_groups == scatnet.num_channels(2, 8) == 81
        assert bb.feature_dim % bb.feature_groups == 0
    assert registry.spec_feature_groups(registry.get_spec("scatnet")) == 81
    other = registry.load_backbone("scatnet", spec_overrides={"config": {"J": 3, "L": 6}})
    assert other.feature_groups == scatnet.num_channels(3, 6) == 1 + 18 + 36 * 3
    # channel-major: channel c of example i is features [c h w, (c + 1) h w)
    images = RNG.uniform(0, 1, (1, 28, 28, 3)).astype(np.float32)
    gray = images @ np.array(scatnet.LUMA, np.float32)
    channels = np.asarray(scatnet.scattering(gray, 2, 8))[0]
    plain = registry.load_backbone("scatnet")
    flat = np.asarray(plain.apply(plain.params, images))[0]
    np.testing.assert_allclose(flat.reshape(81, -1)[5], channels[5].ravel(), rtol=1e-5, atol=1e-6)
    assert registry.load_backbone("pixels").feature_groups is None

    out = str(tmp_path / "s.h5")
    extract("digits", "scatnet", out, splits=["test"], row_range=(0, 6), progress=False)
    info = store.split_info(out, "test")
    assert info.attrs["feature_groups"] == 81 and info.feature_groups == 81
    pixels = str(tmp_path / "p.h5")
    extract("digits", "pixels", pixels, splits=["test"], row_range=(0, 6), progress=False)
    assert "feature_groups" not in store.split_info(pixels, "test").attrs
    assert store.split_info(pixels, "test").feature_groups is None
