"""ViT and BiT models against independent numpy forward passes, big_vision names and sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from feature_extract import bit, registry, vit

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)


def _flat(params):
    return {k: np.asarray(v, np.float64) for k, v in flatten_dict(params, sep="/").items()}


def _template(model, res):
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, res, res, 3)))
    return {k: tuple(v.shape) for k, v in flatten_dict(shapes["params"], sep="/").items()}


# ----------------------------------------------------------------------------- numpy references
def _ln(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _mha(q_in, kv_in, p):
    q = np.einsum("bld,dhk->blhk", q_in, p["query"]["kernel"]) + p["query"]["bias"]
    k = np.einsum("bld,dhk->blhk", kv_in, p["key"]["kernel"]) + p["key"]["bias"]
    v = np.einsum("bld,dhk->blhk", kv_in, p["value"]["kernel"]) + p["value"]["bias"]
    logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
    att = np.exp(logits - logits.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    o = np.einsum("bhqs,bshk->bqhk", att, v)
    return np.einsum("bqhk,hkd->bqd", o, p["out"]["kernel"]) + p["out"]["bias"]


def _mlp(x, p):
    h = _gelu_tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def _sincos_loop(h, w, d):
    """sin-cos posemb written cell by cell from the formula."""
    pe = np.zeros((h * w, d))
    q = d // 4
    for y in range(h):
        for x in range(w):
            for k in range(q):
                om = 10_000.0 ** (-k / (q - 1))
                pe[y * w + x, [k, q + k, 2 * q + k, 3 * q + k]] = [
                    np.sin(x * om),
                    np.cos(x * om),
                    np.sin(y * om),
                    np.cos(y * om),
                ]
    return pe[None]


def ref_vit(p, x, patch, pool, posemb):
    b, h, w, _ = x.shape
    g, gw = h // patch, w // patch
    tiles = x.reshape(b, g, patch, gw, patch, 3).transpose(0, 1, 3, 2, 4, 5)
    kernel = p["embedding"]["kernel"]  # [patch, patch, 3, D]: rows, columns, channels
    t = tiles.reshape(b, g * gw, -1) @ kernel.reshape(-1, kernel.shape[-1]) + p["embedding"]["bias"]
    t = t + (p["pos_embedding"] if posemb == "learn" else _sincos_loop(g, gw, t.shape[-1]))
    if pool == "tok":
        t = np.concatenate([np.repeat(p["cls"], b, 0), t], axis=1)
    enc = p["Transformer"]
    i = 0
    while f"encoderblock_{i}" in enc:
        blk = enc[f"encoderblock_{i}"]
        y = _ln(t, blk["LayerNorm_0"])
        t = t + _mha(y, y, blk["MultiHeadDotProductAttention_0"])
        t = t + _mlp(_ln(t, blk["LayerNorm_1"]), blk["MlpBlock_0"])
        i += 1
    t = _ln(t, enc["encoder_norm"])
    if pool == "tok":
        out = t[:, 0]
    elif pool == "gap":
        out = t.mean(1)
    else:
        mp = p["MAPHead_0"]
        z = _mha(np.repeat(mp["probe"], b, 0), t, mp["MultiHeadDotProductAttention_0"])
        out = (z + _mlp(_ln(z, mp["LayerNorm_0"]), mp["MlpBlock_0"]))[:, 0]
    if "pre_logits" in p:
        out = np.tanh(out @ p["pre_logits"]["kernel"] + p["pre_logits"]["bias"])
    return out


def _conv(x, w, stride=1, pad=0):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = w.shape[:2]
    oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            win = x[
                :, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride
            ]
            out += np.einsum("bhwc,cd->bhwd", win, w[i, j])
    return out


def _ws(w):
    w = w - w.mean((0, 1, 2))
    return w / np.sqrt((w**2).mean((0, 1, 2)) + 1e-10)


def _gn(x, p, groups=32):
    b, h, w, c = x.shape
    y = x.reshape(b, h, w, groups, c // groups)
    y = (y - y.mean((1, 2, 4), keepdims=True)) / np.sqrt(y.var((1, 2, 4), keepdims=True) + 1e-5)
    return y.reshape(x.shape) * p["gamma"] + p["beta"]


def ref_bit(p, x):
    r = p["resnet"]
    x = _conv(x, _ws(r["root_block"]["standardized_conv2d"]["kernel"]), 2, 3)
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    o = (x.shape[1] - 3) // 2 + 1
    x = np.max(
        [x[:, i : i + 2 * o - 1 : 2, j : j + 2 * o - 1 : 2] for i in range(3) for j in range(3)], 0
    )
    for b in range(1, 5):
        u = 1
        while f"unit{u:02d}" in r[f"block{b}"]:
            unit = r[f"block{b}"][f"unit{u:02d}"]
            stride = 2 if b > 1 and u == 1 else 1
            h = np.maximum(_gn(x, unit["a"]["group_norm"]), 0)
            res = (
                _conv(h, _ws(unit["a"]["proj"]["standardized_conv2d"]["kernel"]), stride)
                if "proj" in unit["a"]
                else x
            )
            y = _conv(h, _ws(unit["a"]["standardized_conv2d"]["kernel"]))
            y = np.maximum(_gn(y, unit["b"]["group_norm"]), 0)
            y = _conv(y, _ws(unit["b"]["standardized_conv2d"]["kernel"]), stride, 1)
            y = np.maximum(_gn(y, unit["c"]["group_norm"]), 0)
            x = _conv(y, _ws(unit["c"]["standardized_conv2d"]["kernel"])) + res
            u += 1
    return np.maximum(_gn(x, r["group_norm"]), 0).mean((1, 2))


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize(
    "name, overrides",
    [
        ("vit-mu16", {"pre_logits": 24}),
        ("vit-mu16-map", {}),
        ("vit-mu16", {"pool_type": "gap", "posemb": "sincos2d"}),
    ],
)
def test_vit_matches_numpy_reference(name, overrides):
    b = registry.load_backbone(
        name, init_random=True, rng_seed=3, dtype=jnp.float32, spec_overrides={"config": overrides}
    )
    cfg = b.spec.config
    got = np.asarray(jax.jit(b.apply)(b.params, IMAGES))
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), b.params)
    want = ref_vit(p, IMAGES.astype(np.float64), 16, cfg["pool_type"], cfg["posemb"])
    assert got.shape == (2, b.feature_dim)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    if name == "vit-mu16-map":  # bf16 compute stays close to the f32 reference
        b16 = registry.load_backbone(name, init_random=True, rng_seed=3)
        got16 = np.asarray(jax.jit(b16.apply)(b16.params, IMAGES), np.float32)
        assert np.linalg.norm(got16 - want) < 0.05 * np.linalg.norm(want)


def test_bit_matches_numpy_reference():
    b = registry.load_backbone("bit-tiny-test", init_random=True, dtype=jnp.float32)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), b.params)
    got = np.asarray(jax.jit(b.apply)(b.params, IMAGES))
    assert got.shape == (2, 1024) == (2, b.feature_dim)
    np.testing.assert_allclose(got, ref_bit(p, IMAGES.astype(np.float64)), rtol=1e-3, atol=1e-4)


def test_sincos_posemb_formula():
    np.testing.assert_allclose(vit.posemb_sincos_2d(3, 5, 16), _sincos_loop(3, 5, 16), atol=1e-6)


# Canonical big_vision names and shapes of one ViT-B encoder block (from big_vision/models/vit.py:
# Encoder1DBlock = LayerNorm, MultiHeadDotProductAttention, LayerNorm, MlpBlock(Dense, Dense)).
B_BLOCK = {
    "LayerNorm_0/scale": (768,),
    "LayerNorm_0/bias": (768,),
    "MultiHeadDotProductAttention_0/query/kernel": (768, 12, 64),
    "MultiHeadDotProductAttention_0/query/bias": (12, 64),
    "MultiHeadDotProductAttention_0/key/kernel": (768, 12, 64),
    "MultiHeadDotProductAttention_0/key/bias": (12, 64),
    "MultiHeadDotProductAttention_0/value/kernel": (768, 12, 64),
    "MultiHeadDotProductAttention_0/value/bias": (12, 64),
    "MultiHeadDotProductAttention_0/out/kernel": (12, 64, 768),
    "MultiHeadDotProductAttention_0/out/bias": (768,),
    "LayerNorm_1/scale": (768,),
    "LayerNorm_1/bias": (768,),
    "MlpBlock_0/Dense_0/kernel": (768, 3072),
    "MlpBlock_0/Dense_0/bias": (3072,),
    "MlpBlock_0/Dense_1/kernel": (3072, 768),
    "MlpBlock_0/Dense_1/bias": (768,),
}
B_TOP = {
    "embedding/kernel": (16, 16, 3, 768),
    "embedding/bias": (768,),
    "pos_embedding": (1, 196, 768),
    "cls": (1, 1, 768),
    "Transformer/encoder_norm/scale": (768,),
    "Transformer/encoder_norm/bias": (768,),
}


def test_vit_b16_parameter_names_are_big_vision():
    shapes = _template(vit.from_config({"variant": "B", "patch": 16}), 224)
    want = dict(B_TOP)
    for i in range(12):
        want.update({f"Transformer/encoderblock_{i}/{k}": s for k, s in B_BLOCK.items()})
    assert shapes == want
    # ViT-B/16 has 86,567,656 parameters with a 1000-way head (768 * 1000 + 1000 of them) and a
    # separate position for the cls token (768), which big_vision folds into ``cls``.
    assert sum(int(np.prod(s)) for s in shapes.values()) == 86_567_656 - 769_000 - 768


def test_vit_variant_table():
    assert vit.decode_variant("So400m/14") == {
        "width": 1152,
        "depth": 27,
        "mlp_dim": 4304,
        "num_heads": 16,
        "patch": 14,
    }
    assert vit.decode_variant("mu") == {"width": 32, "depth": 1, "mlp_dim": 128, "num_heads": 2}
    with pytest.raises(ValueError, match="unknown ViT variant"):
        vit.decode_variant("XL")


def test_bit_r50x1_names_and_shapes():
    shapes = _template(bit.from_config({"variant": "R50x1"}), 64)
    units = {}
    for k in shapes:
        parts = k.split("/")
        if parts[1].startswith("block"):
            units.setdefault(parts[1], set()).add(parts[2])
    assert {b: len(u) for b, u in units.items()} == {
        "block1": 3,
        "block2": 4,
        "block3": 6,
        "block4": 3,
    }
    assert shapes["resnet/root_block/standardized_conv2d/kernel"] == (7, 7, 3, 64)
    assert shapes["resnet/block1/unit01/a/proj/standardized_conv2d/kernel"] == (1, 1, 64, 256)
    assert shapes["resnet/block4/unit01/b/standardized_conv2d/kernel"] == (3, 3, 512, 512)
    assert shapes["resnet/block4/unit03/c/standardized_conv2d/kernel"] == (1, 1, 512, 2048)
    assert shapes["resnet/group_norm/gamma"] == (2048,)
    assert sorted(k for k in shapes if "/proj/" in k) == [
        f"resnet/block{b}/unit01/a/proj/standardized_conv2d/kernel" for b in range(1, 5)
    ]
    # BiT-M-R50x1 without its head: about 23.5M parameters.
    assert abs(sum(int(np.prod(s)) for s in shapes.values()) / 23.5e6 - 1) < 0.01


def test_bit_variants():
    assert bit.decode_variant("R152x4") == {"blocks": (3, 8, 36, 3), "width": 4}
    with pytest.raises(ValueError, match="unknown BiT variant"):
        bit.decode_variant("R34x1")


def test_registry_entries():
    names = registry.list_backbones()
    for n in [
        "vit-ti16-i21k",
        "vit-s16-i21k",
        "vit-b16-i21k",
        "vit-l16-i21k",
        "siglip-b16-224",
        "siglip-so400m-224",
        "bit-m-r50x1",
        "bit-m-r101x3",
        "bit-m-r152x4",
        "pixels",
    ]:
        assert n in names
        spec = registry.get_spec(n)
        assert n == "pixels" or spec.url.startswith("https://storage.googleapis.com/")
    assert registry.get_spec("siglip-b16-224").checkpoint_key == "img"
    assert registry.get_spec("siglip-so400m-224").config["pool_type"] == "map"
    with pytest.raises(ValueError, match="unknown backbone"):
        registry.get_spec("vit-xxl")
    with pytest.raises(ValueError, match="no published checkpoint"):
        registry.load_backbone("vit-mu16")


def test_pixels_backbone():
    b = registry.load_backbone("pixels")
    assert b.resolution is None and b.feature_dim is None and b.preprocessing == "value_range(0,1)"
    x = RNG.uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
    out = np.asarray(b.apply(b.params, x))
    np.testing.assert_array_equal(out, x.reshape(3, 192))
    np.testing.assert_array_equal(out[1, 3 * 8 * 3 + 2 * 3 : 3 * 8 * 3 + 2 * 3 + 3], x[1, 3, 2])
    b8 = registry.load_backbone("pixels", resolution=8)
    assert b8.feature_dim == 192 and b8.preprocessing == "resize(8)|value_range(0,1)"


def test_resolution_override_changes_preprocessing_and_grid():
    b = registry.load_backbone("vit-mu16", init_random=True, resolution=64)
    assert b.preprocessing == "resize(64)|value_range(-1,1)"
    assert b.params["pos_embedding"].shape == (1, 16, 32)


def test_every_family_module_registers_itself_and_owns_its_backbones():
    import pathlib
    import pkgutil

    from feature_extract import families

    modules = {f"{families.__name__}.{m.name}" for m in pkgutil.iter_modules(families.__path__)}
    registered = registry.families()
    assert {f.module for f in registered.values()} == modules
    for name in registry.list_backbones():
        assert registry.get_spec(name).family in registered
    source = pathlib.Path(registry.__file__).read_text()
    for family in registered:  # no architecture branch in the generic registry
        assert f'"{family}"' not in source


def test_a_new_family_is_one_registration(monkeypatch):
    import flax.linen as nn

    registry.list_backbones()  # the real families are loaded; the test's entries are undone after
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(registry, "_SPECS", dict(registry._SPECS))

    class Mean(nn.Module):
        @nn.compact
        def __call__(self, images):
            return images.mean(axis=(1, 2)) * self.param("scale", nn.initializers.ones, (3,))

    family = registry.Family(
        "test_mean", lambda config, dtype: Mean(), lambda c, r: 3, None, "none", __name__
    )
    registry.register_family(family)
    registry.register(registry.BackboneSpec("test-mean", "test_mean", {}, 8, "value_range(0,1)"))
    b = registry.load_backbone("test-mean", init_random=True, dtype=jnp.float32)
    assert b.feature_dim == 3 and b.params["scale"].shape == (3,)
    with pytest.raises(ValueError, match="unknown model family"):
        registry.register(registry.BackboneSpec("x", "no_such_family"))
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(registry.BackboneSpec("test-mean", "test_mean", {}, 16))
