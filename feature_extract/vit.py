"""Vision Transformer (Flax linen) whose parameter tree uses big_vision's names.

Tree: ``embedding/{kernel,bias}``, ``pos_embedding`` [1, h*w, D] (learned posemb only), ``cls``
(``pool_type`` ``tok`` or ``tok_gap``), ``Transformer/encoderblock_{i}/{LayerNorm_0,
MultiHeadDotProductAttention_0/{query,key,value,out}, LayerNorm_1, MlpBlock_0/Dense_{0,1}}``,
``Transformer/encoder_norm``,
``MAPHead_0/{probe, MultiHeadDotProductAttention_0, LayerNorm_0, MlpBlock_0}`` (``pool_type="map"``)
and ``pre_logits`` (when ``pre_logits`` is set). There is no classification ``head``: the model
returns the feature, i.e. big_vision's ``pre_logits`` output.

Block (pre-norm): ``x += MHSA(LN(x)); x += MLP(LN(x))`` with ``MLP = Dense . gelu_tanh . Dense``,
LayerNorm epsilon 1e-6. Inputs are images in [-1, 1] (with ``input_mean``, in [0, 1]).

Options for other ViT families (timm's DINOv2, CLIP, SigLIP; docs/architecture.md, "Backbones"),
each off by default so the big_vision tree and numbers are unchanged:

- ``input_mean`` / ``input_std``: the model first computes ``(x - mean) / std`` per channel;
- ``embedding_bias=False``: no ``embedding/bias``;
- ``num_registers=R``: ``reg`` ``[1, R, D]`` tokens after ``cls``, before the patches (no
  position embedding on either); tokens are ``[cls?, reg_1..reg_R, patch_1..patch_N]``;
- ``pre_norm``: ``Transformer/encoder_prenorm`` (a LayerNorm) on all tokens before the blocks;
- ``layer_scale``: ``x += s1 * MHSA(LN(x)); x += s2 * MLP(LN(x))`` with per-channel
  ``encoderblock_{i}/LayerScale_{0,1}/scale``;
- ``act``: the MLP's activation, ``gelu_tanh`` (big_vision), ``gelu`` (exact, erf),
  ``quick_gelu`` (``x sigmoid(1.702 x)``) or ``swiglu`` (``Dense_0``'s output split in halves
  ``a, b``: ``silu(a) * b``, so ``Dense_1`` reads ``mlp_dim / 2`` inputs);
- ``ln_eps``: every LayerNorm's epsilon;
- ``pool_type="tok_gap"``: ``[cls, mean of the patch tokens]``, ``2 D`` features.

``gap`` and ``map`` pool the patch tokens only (register tokens are left out).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# variant -> (width, depth, mlp_dim, num_heads), as big_vision's decode_variant defines them.
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "mu": (32, 1, 128, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
}
POOL_TYPES = ("tok", "gap", "map", "tok_gap")
ACTIVATIONS = ("gelu_tanh", "gelu", "quick_gelu", "swiglu")
POSEMB_TYPES = ("learn", "sincos2d")


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding ``[1, h*w, width]``.

    With ``omega_k = temperature^(-k / (width/4 - 1))``, ``k < width/4``, the row for grid cell
    ``(y, x)`` is ``[sin(x omega), cos(x omega), sin(y omega), cos(y omega)]``.
    """
    if width % 4:
        raise ValueError(f"sincos2d position embedding needs width % 4 == 0, got {width}")
    y, x = np.mgrid[:h, :w]
    omega = 1.0 / temperature ** (np.arange(width // 4) / (width // 4 - 1))
    xo = np.outer(x.ravel(), omega)
    yo = np.outer(y.ravel(), omega)
    pe = np.concatenate([np.sin(xo), np.cos(xo), np.sin(yo), np.cos(yo)], axis=1)
    return pe[None].astype(np.float32)


def activation(name: str, h: jax.Array) -> jax.Array:
    """The MLP's activation ``name`` (one of ``ACTIVATIONS``, module docstring) applied to ``h``."""
    if name == "gelu_tanh":
        return nn.gelu(h, approximate=True)
    if name == "gelu":
        return nn.gelu(h, approximate=False)
    if name == "quick_gelu":
        return h * nn.sigmoid(1.702 * h)
    if name == "swiglu":
        a, b = jnp.split(h, 2, axis=-1)
        return nn.silu(a) * b
    raise ValueError(f"activation {name!r} not in {ACTIVATIONS}")


class MlpBlock(nn.Module):
    """``Dense(mlp_dim) -> act -> Dense(D)`` (``act`` by default gelu, tanh approximation)."""

    mlp_dim: int
    dtype: Any = jnp.float32
    act: str = "gelu_tanh"

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        x = nn.Dense(self.mlp_dim, dtype=self.dtype, name="Dense_0")(x)
        x = activation(self.act, x)
        return nn.Dense(d, dtype=self.dtype, name="Dense_1")(x)


def _attention(num_heads: int, dtype, name: str) -> nn.MultiHeadDotProductAttention:
    return nn.MultiHeadDotProductAttention(num_heads=num_heads, dtype=dtype, name=name)


def _layer_norm(dtype, name: str, eps: float = 1e-6) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name)


class LayerScale(nn.Module):
    """``x * scale`` with a learned per-channel ``scale`` ``[D]``."""

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        return x * scale.astype(x.dtype)


class Encoder1DBlock(nn.Module):
    """Pre-norm transformer block: ``x + MHSA(LN(x))`` then ``x + MLP(LN(x))`` (each branch
    times its ``LayerScale`` when ``layer_scale``)."""

    mlp_dim: int
    num_heads: int
    dtype: Any = jnp.float32
    act: str = "gelu_tanh"
    ln_eps: float = 1e-6
    layer_scale: bool = False

    @nn.compact
    def __call__(self, x):
        y = _layer_norm(self.dtype, "LayerNorm_0", self.ln_eps)(x)
        y = _attention(self.num_heads, self.dtype, "MultiHeadDotProductAttention_0")(y, y)
        x = x + (LayerScale(name="LayerScale_0")(y) if self.layer_scale else y)
        y = _layer_norm(self.dtype, "LayerNorm_1", self.ln_eps)(x)
        y = MlpBlock(self.mlp_dim, self.dtype, self.act, name="MlpBlock_0")(y)
        return x + (LayerScale(name="LayerScale_1")(y) if self.layer_scale else y)


class Encoder(nn.Module):
    """Optional ``encoder_prenorm``, ``depth`` blocks ``encoderblock_{i}``, ``encoder_norm``."""

    depth: int
    mlp_dim: int
    num_heads: int
    dtype: Any = jnp.float32
    act: str = "gelu_tanh"
    ln_eps: float = 1e-6
    layer_scale: bool = False
    pre_norm: bool = False

    @nn.compact
    def __call__(self, x):
        if self.pre_norm:
            x = _layer_norm(self.dtype, "encoder_prenorm", self.ln_eps)(x)
        for i in range(self.depth):
            x = Encoder1DBlock(
                self.mlp_dim,
                self.num_heads,
                self.dtype,
                self.act,
                self.ln_eps,
                self.layer_scale,
                name=f"encoderblock_{i}",
            )(x)
        return _layer_norm(self.dtype, "encoder_norm", self.ln_eps)(x)


class MAPHead(nn.Module):
    """Multi-head attention pooling: a learned ``probe`` attends over the tokens, then
    ``z + MLP(LN(z))``; returns ``[B, D]``."""

    mlp_dim: int
    num_heads: int
    dtype: Any = jnp.float32
    act: str = "gelu_tanh"
    ln_eps: float = 1e-6

    @nn.compact
    def __call__(self, x):
        n, _, d = x.shape
        probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, d), jnp.float32)
        probe = jnp.tile(probe.astype(x.dtype), (n, 1, 1))
        z = _attention(self.num_heads, self.dtype, "MultiHeadDotProductAttention_0")(probe, x)
        y = _layer_norm(self.dtype, "LayerNorm_0", self.ln_eps)(z)
        z = z + MlpBlock(self.mlp_dim, self.dtype, self.act, name="MlpBlock_0")(y)
        return z[:, 0]


class ViT(nn.Module):
    """ViT feature extractor: images ``[B, H, W, 3]`` in [-1, 1] (or, with ``input_mean`` and
    ``input_std``, in [0, 1]) -> features ``[B, D']``.

    ``D' = pre_logits`` when set (``tanh(Dense(pooled))``), else the width (twice the width for
    ``pool_type="tok_gap"``). The other options are in the module docstring.
    """

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch: int = 16
    pool_type: str = "tok"
    posemb: str = "learn"
    pre_logits: int | None = None
    dtype: Any = jnp.float32
    act: str = "gelu_tanh"
    ln_eps: float = 1e-6
    layer_scale: bool = False
    num_registers: int = 0
    pre_norm: bool = False
    embedding_bias: bool = True
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None

    @nn.compact
    def __call__(self, images):
        if self.pool_type not in POOL_TYPES:
            raise ValueError(f"pool_type {self.pool_type!r} not in {POOL_TYPES}")
        if self.posemb not in POSEMB_TYPES:
            raise ValueError(f"posemb {self.posemb!r} not in {POSEMB_TYPES}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act {self.act!r} not in {ACTIVATIONS}")
        if (self.input_mean is None) != (self.input_std is None):
            raise ValueError("input_mean and input_std are set together")
        if self.input_mean is not None:
            mean = np.asarray(self.input_mean, np.float32)
            std = np.asarray(self.input_std, np.float32)
            images = (jnp.asarray(images, jnp.float32) - mean) / std
        x = jnp.asarray(images, self.dtype)
        x = nn.Conv(
            self.width,
            (self.patch, self.patch),
            strides=(self.patch, self.patch),
            padding="VALID",
            use_bias=self.embedding_bias,
            dtype=self.dtype,
            name="embedding",
        )(x)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        if self.posemb == "learn":
            pe = self.param(
                "pos_embedding",
                nn.initializers.normal(stddev=1 / np.sqrt(c)),
                (1, h * w, c),
                jnp.float32,
            )
        else:
            pe = posemb_sincos_2d(h, w, c)
        x = x + jnp.asarray(pe, x.dtype)
        prefix = []
        if self.pool_type in ("tok", "tok_gap"):
            prefix.append(self.param("cls", nn.initializers.zeros, (1, 1, c), jnp.float32))
        if self.num_registers:
            init = nn.initializers.normal(stddev=1e-6)
            prefix.append(self.param("reg", init, (1, self.num_registers, c), jnp.float32))
        if prefix:
            tokens = [jnp.tile(p.astype(x.dtype), (n, 1, 1)) for p in prefix]
            x = jnp.concatenate([*tokens, x], axis=1)
        num_prefix = sum(p.shape[1] for p in prefix)
        x = Encoder(
            self.depth,
            self.mlp_dim,
            self.num_heads,
            self.dtype,
            self.act,
            self.ln_eps,
            self.layer_scale,
            self.pre_norm,
            name="Transformer",
        )(x)
        patches = x[:, num_prefix:]
        if self.pool_type == "map":
            x = MAPHead(
                self.mlp_dim, self.num_heads, self.dtype, self.act, self.ln_eps, name="MAPHead_0"
            )(patches)
        elif self.pool_type == "gap":
            x = jnp.mean(patches, axis=1)
        elif self.pool_type == "tok_gap":
            x = jnp.concatenate([x[:, 0], jnp.mean(patches, axis=1)], axis=-1)
        else:
            x = x[:, 0]
        if self.pre_logits:
            x = jnp.tanh(nn.Dense(self.pre_logits, dtype=self.dtype, name="pre_logits")(x))
        return x


def decode_variant(variant: str) -> dict[str, int]:
    """``"B"`` or ``"B/16"`` -> ``{width, depth, mlp_dim, num_heads[, patch]}``."""
    name, _, patch = variant.partition("/")
    if name not in VARIANTS:
        raise ValueError(f"unknown ViT variant {name!r}; known: {', '.join(VARIANTS)}")
    width, depth, mlp_dim, num_heads = VARIANTS[name]
    out = {"width": width, "depth": depth, "mlp_dim": mlp_dim, "num_heads": num_heads}
    if patch:
        out["patch"] = int(patch)
    return out


def from_config(config: dict, dtype=jnp.float32) -> ViT:
    """Build a :class:`ViT` from a registry config: ``variant`` plus any field overrides.

    ``pre_logits=True`` means a representation layer of the model's width.
    """
    config = dict(config)
    kwargs = decode_variant(config.pop("variant")) if "variant" in config else {}
    kwargs.update(config)
    if kwargs.get("pre_logits") is True:
        kwargs["pre_logits"] = kwargs["width"]
    return ViT(dtype=dtype, **kwargs)
