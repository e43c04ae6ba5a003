"""Checkpoint round trips: big_vision names, old AugReg names, scan stacks, prefixes, sub-trees,
bf16-as-void, position-embedding resampling, BiT TF names and the mismatch report."""

import hashlib

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from hypothesis import given

from feature_extract import checkpoint, registry

IMAGES = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
F32 = jnp.float32


class _Model:
    """A random backbone, its flat big_vision-named params and its reference features."""

    def __init__(self, name, **kw):
        self.name, self.kw = name, kw
        self.backbone = registry.load_backbone(name, init_random=True, rng_seed=7, dtype=F32, **kw)
        self.flat = {
            k: np.asarray(v) for k, v in flatten_dict(self.backbone.params, sep="/").items()
        }
        self._apply = jax.jit(self.backbone.apply)
        self._features = None

    def features(self, params=None):
        if params is None:
            if self._features is None:
                self._features = np.asarray(self._apply(self.backbone.params, IMAGES))
            return self._features
        return np.asarray(self._apply(params, IMAGES))

    def load(self, path, **kw):
        return registry.load_backbone(self.name, str(path), dtype=F32, **{**self.kw, **kw})


@pytest.fixture(scope="module")
def mu():
    return _Model("vit-mu16")


def _save(flat, path):
    np.savez(path, **flat)
    return str(path)


def _assert_params_equal(params, flat, rtol=0.0):
    got = {k: np.asarray(v) for k, v in flatten_dict(params, sep="/").items()}
    assert sorted(got) == sorted(flat)
    for k in flat:
        np.testing.assert_allclose(got[k], flat[k], rtol=rtol, atol=rtol * 1e-2, err_msg=k)


@pytest.mark.parametrize(
    "name, kw", [("vit-mu16", {}), ("vit-ti16-i21k", {"resolution": 32}), ("bit-tiny-test", {})]
)
def test_roundtrip_gives_identical_features(tmp_path, name, kw):
    model = _Model(name, **kw)
    path = tmp_path / "model.npz"
    checkpoint.save_npz(model.backbone.params, str(path))
    loaded = model.load(path)
    _assert_params_equal(loaded.params, model.flat)
    np.testing.assert_array_equal(model.features(loaded.params), model.features())
    assert loaded.checkpoint == str(path)
    assert loaded.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.feature_dim == model.backbone.feature_dim


def _old_augreg(flat, rng):
    """Rewrite canonical names as the 2021 AugReg files have them (independent of the loader)."""
    old = {}
    pe_cls = rng.normal(size=flat["cls"].shape).astype(np.float32)
    for k, v in flat.items():
        if k == "pos_embedding":
            old["Transformer/posembed_input/pos_embedding"] = np.concatenate([pe_cls, v], axis=1)
        elif k == "cls":
            old["cls"] = v - pe_cls  # old layout: cls + its own position embedding
        else:
            old[
                k.replace("MultiHeadDotProductAttention_0", "MultiHeadDotProductAttention_1")
                .replace("LayerNorm_1", "LayerNorm_2")
                .replace("MlpBlock_0", "MlpBlock_3")
            ] = v
    old["head/kernel"] = rng.normal(size=(32, 10)).astype(np.float32)
    old["head/bias"] = np.zeros(10, np.float32)
    return old


def test_old_augreg_names(tmp_path, mu):
    old = _old_augreg(mu.flat, np.random.default_rng(0))
    assert "Transformer/encoderblock_0/MlpBlock_3/Dense_1/bias" in old
    loaded = mu.load(_save(old, tmp_path / "old.npz"))
    _assert_params_equal(loaded.params, mu.flat, rtol=1e-6)
    np.testing.assert_allclose(mu.features(loaded.params), mu.features(), rtol=1e-5, atol=1e-6)


def _stack_blocks(flat):
    """A scan checkpoint: every ``encoderblock_{i}/X`` stacked into ``encoderblock/X``."""
    out, stacks = {}, {}
    for k, v in flat.items():
        if k.startswith("Transformer/encoderblock_"):
            i, rest = k[len("Transformer/encoderblock_") :].split("/", 1)
            stacks.setdefault(rest, {})[int(i)] = v
        else:
            out[k] = v
    for rest, by_layer in stacks.items():
        out[f"Transformer/encoderblock/{rest}"] = np.stack([by_layer[i] for i in sorted(by_layer)])
    return out


def test_scan_stacked_ti(tmp_path):
    ti = _Model("vit-ti16-i21k", resolution=32)
    stacked = _stack_blocks(ti.flat)
    assert stacked["Transformer/encoderblock/LayerNorm_0/scale"].shape == (12, 192)
    loaded = ti.load(_save(stacked, tmp_path / "scan.npz"))
    _assert_params_equal(loaded.params, ti.flat)


@pytest.mark.parametrize("layout", ["params/", "opt/target/", "file:img", "spec:img"])
def test_prefixes_and_subtrees(tmp_path, mu, layout):
    if layout in ("params/", "opt/target/"):
        flat = {layout + k: v for k, v in mu.flat.items()}
        flat.update(
            {"opt/state/count": np.int32(3), "step": np.int64(10)}
            if layout[0] == "o"
            else {"extra/step": np.int64(1)}
        )
        path, kw = _save(flat, tmp_path / "ckpt.npz"), {}
    else:  # a two-tower file: params/img/... and params/txt/...
        flat = {f"params/img/{k}": v for k, v in mu.flat.items()}
        flat.update(
            {
                "params/txt/Encoder_0/kernel": np.ones((4, 4), np.float32),
                "params/t": np.float32(10.0),
            }
        )
        path = _save(flat, tmp_path / "siglip.npz")
        if layout == "file:img":
            path, kw = path + ":img", {}
        else:
            kw = {"spec_overrides": {"checkpoint_key": "img"}}
    loaded = mu.load(path, **kw)
    _assert_params_equal(loaded.params, mu.flat)


def test_missing_subtree_names_top_level(tmp_path, mu):
    path = _save({f"img/{k}": v for k, v in mu.flat.items()}, tmp_path / "two.npz")
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"no sub-tree 'txt'.*\['img'\]"):
        mu.load(path + ":txt")


def test_bfloat16_stored_as_void(tmp_path, mu):
    bf16 = {k: v.astype(jnp.bfloat16) for k, v in mu.flat.items()}
    path = _save(bf16, tmp_path / "bf16.npz")
    with np.load(path) as raw:
        assert raw["cls"].dtype.kind == "V" and raw["cls"].dtype.itemsize == 2
    loaded = mu.load(path)
    _assert_params_equal(loaded.params, {k: v.astype(np.float32) for k, v in bf16.items()})


def _bilinear_reference(grid, new):
    """Corner-aligned bilinear resize of ``[g, g, D]`` to ``[n, n, D]`` by separable np.interp."""
    g = grid.shape[0]
    src = np.arange(g)
    pos = np.arange(new) * (g - 1) / (new - 1)
    rows = np.stack(
        [[np.interp(pos, src, grid[:, j, d]) for d in range(grid.shape[2])] for j in range(g)]
    )  # [g(cols), D, new(rows)]
    return np.stack(
        [[np.interp(pos, src, rows[:, d, i]) for d in range(grid.shape[2])] for i in range(new)]
    ).transpose(0, 2, 1)  # [new, new, D]


@given(st.integers(2, 6), st.integers(2, 9), st.integers(1, 3))
def test_resample_posemb_is_bilinear(old, new, d):
    grid = np.random.default_rng(old * 100 + new).normal(size=(old, old, d))
    got = checkpoint.resample_posemb(grid.reshape(1, old * old, d), (new, new))
    want = _bilinear_reference(grid, new).reshape(1, new * new, d)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_resolution_change_resamples_old_posemb(tmp_path, mu):
    old = _old_augreg(mu.flat, np.random.default_rng(2))
    loaded = mu.load(_save(old, tmp_path / "old.npz"), resolution=48)
    assert loaded.resolution == 48 and loaded.preprocessing == "resize(48)|value_range(-1,1)"
    pe = np.asarray(loaded.params["pos_embedding"])
    want = _bilinear_reference(mu.flat["pos_embedding"].reshape(2, 2, 32), 3)
    np.testing.assert_allclose(pe, want.reshape(1, 9, 32), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(loaded.params["cls"]), mu.flat["cls"], rtol=1e-6)
    assert loaded.feature_dim == 32


def test_mismatch_lists_missing_unexpected_and_misshaped(tmp_path, mu):
    path = _save(mu.flat, tmp_path / "tok.npz")
    with pytest.raises(checkpoint.CheckpointMismatchError) as err:
        registry.load_backbone("vit-mu16-map", path)
    msg = str(err.value)
    assert "missing" in msg and "MAPHead_0/probe" in msg and "MAPHead_0/LayerNorm_0/scale" in msg
    assert "unexpected" in msg and "    cls" in msg and "wrong shape" not in msg

    bad = dict(mu.flat)
    name = "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"
    bad[name] = np.zeros((32, 64), np.float32)
    bad["pre_logits/kernel"] = np.zeros((32, 32), np.float32)
    with pytest.raises(checkpoint.CheckpointMismatchError) as err:
        mu.load(_save(bad, tmp_path / "bad.npz"))
    msg = str(err.value)
    assert f"{name}: file (32, 64) vs model (32, 128)" in msg and "pre_logits/kernel" in msg
    assert "missing (in the model" not in msg


def test_bit_tf_name_variants_and_head_dropped(tmp_path):
    model = _Model("bit-tiny-test")
    flat = dict(model.flat)
    k = "resnet/block2/unit01/b/standardized_conv2d/kernel"
    flat[k.replace("standardized_conv2d/", "standardized_conv2d_1/")] = flat.pop(k)
    flat["resnet/head/conv2d/kernel"] = np.zeros((1, 1, 1024, 21843), np.float16)
    flat["resnet/head/conv2d/bias"] = np.zeros(21843, np.float32)
    loaded = model.load(_save(flat, tmp_path / "BiT-M-test.npz"))
    _assert_params_equal(loaded.params, model.flat)
    with pytest.raises(checkpoint.CheckpointMismatchError, match="No top-level name is shared"):
        registry.load_backbone("vit-mu16", str(tmp_path / "BiT-M-test.npz"))


def test_renumber_pre_linen():
    tree = {
        "LayerNorm_0": 0,
        "MultiHeadDotProductAttention_1": 1,
        "LayerNorm_2": 2,
        "MlpBlock_3": {"Dense_0": 3, "Dense_1": 4},
        "encoderblock_10": 5,
        "encoderblock_2": 6,
    }
    assert checkpoint.renumber_pre_linen(tree) == {
        "LayerNorm_0": 0,
        "MultiHeadDotProductAttention_0": 1,
        "LayerNorm_1": 2,
        "MlpBlock_0": {"Dense_0": 3, "Dense_1": 4},
        "encoderblock_0": 6,
        "encoderblock_1": 5,
    }


def test_split_selector(tmp_path):
    assert checkpoint.split_selector("/a/b.npz:img") == ("/a/b.npz", "img")
    assert checkpoint.split_selector("/a/b.npz") == ("/a/b.npz", None)
    assert checkpoint.split_selector("/a:b/c.npz") == ("/a:b/c.npz", None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.read_npz(str(tmp_path / "none.npz"))
