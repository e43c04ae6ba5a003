"""BiT ResNet v2 (pre-activation, GroupNorm, weight-standardised convolutions) in Flax linen.

The parameter tree uses the names of the published BiT ``.npz`` files (TF names) unchanged:
``resnet/root_block/standardized_conv2d/kernel``,
``resnet/block{b}/unit{uu:02d}/{a,b,c}/{standardized_conv2d/kernel, group_norm/{gamma,beta}}``,
``resnet/block{b}/unit01/a/proj/standardized_conv2d/kernel`` and the final
``resnet/group_norm/{gamma,beta}``. The classifier ``resnet/head/conv2d`` is not part of the model:
the feature is the global average pool after the final GroupNorm + ReLU.

Unit (bottleneck, pre-activation): ``h = relu(GN_a(x))``, ``r = proj(h)`` (first unit of a stage)
or ``x``, then ``y = conv_a 1x1 (h)``, ``y = conv_b 3x3/stride (relu(GN_b(y)))``,
``y = conv_c 1x1 (relu(GN_c(y)))``, output ``y + r``. Inputs are images in [-1, 1].
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

BLOCKS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
VARIANTS = ("R50x1", "R101x1", "R50x3", "R101x3", "R152x2", "R152x4")


class StdConv(nn.Module):
    """Convolution with a weight-standardised kernel, no bias.

    ``w_hat = (w - mean(w)) / sqrt(var(w) + 1e-10)``, moments over the (kh, kw, c_in) axes of
    each output channel; computed in float32, then cast to the compute dtype.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        w = self.param(
            "kernel", nn.initializers.he_normal(), (k, k, x.shape[-1], self.features), jnp.float32
        )
        w = w - jnp.mean(w, axis=(0, 1, 2), keepdims=True)
        w = w * jax.lax.rsqrt(jnp.mean(jnp.square(w), axis=(0, 1, 2), keepdims=True) + 1e-10)
        pad = ((self.padding, self.padding), (self.padding, self.padding))
        return jax.lax.conv_general_dilated(
            x,
            w.astype(self.dtype),
            (self.stride, self.stride),
            pad,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )


class GroupNorm(nn.Module):
    """GroupNorm with 32 groups: standardise over (H, W, channels of the group), eps 1e-5,
    then ``gamma * x + beta`` per channel. Statistics in float32."""

    groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        gamma = self.param("gamma", nn.initializers.ones, (c,), jnp.float32)
        beta = self.param("beta", nn.initializers.zeros, (c,), jnp.float32)
        g = x.astype(jnp.float32).reshape(*x.shape[:-1], self.groups, c // self.groups)
        mean = jnp.mean(g, axis=(1, 2, 4), keepdims=True)
        var = jnp.mean(jnp.square(g - mean), axis=(1, 2, 4), keepdims=True)
        g = (g - mean) * jax.lax.rsqrt(var + 1e-5)
        return (g.reshape(x.shape) * gamma + beta).astype(self.dtype)


class _Proj(nn.Module):
    features: int
    stride: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        return StdConv(self.features, 1, self.stride, dtype=self.dtype, name="standardized_conv2d")(
            x
        )


class _NormActConv(nn.Module):
    """``conv(relu(GN(x)))``; with ``proj_features`` also returns ``proj(relu(GN(x)))``."""

    features: int
    kernel_size: int
    stride: int = 1
    proj_features: int | None = None
    proj_stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.relu(GroupNorm(dtype=self.dtype, name="group_norm")(x))
        y = StdConv(
            self.features,
            self.kernel_size,
            self.stride,
            self.kernel_size // 2,
            self.dtype,
            name="standardized_conv2d",
        )(h)
        if self.proj_features is None:
            return y, None
        return y, _Proj(self.proj_features, self.proj_stride, self.dtype, name="proj")(h)


class _Unit(nn.Module):
    mid: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        out = 4 * self.mid
        needs_proj = x.shape[-1] != out or self.stride != 1
        y, r = _NormActConv(
            self.mid,
            1,
            proj_features=out if needs_proj else None,
            proj_stride=self.stride,
            dtype=self.dtype,
            name="a",
        )(x)
        y, _ = _NormActConv(self.mid, 3, self.stride, dtype=self.dtype, name="b")(y)
        y, _ = _NormActConv(out, 1, dtype=self.dtype, name="c")(y)
        return y + (x if r is None else r)


class _Root(nn.Module):
    """7x7/2 conv (padding 3), zero padding 1, 3x3/2 max pool (as the original BiT code)."""

    width: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        x = StdConv(self.width, 7, 2, 3, self.dtype, name="standardized_conv2d")(x)
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class _Stage(nn.Module):
    units: int
    mid: int
    stride: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        for u in range(self.units):
            x = _Unit(self.mid, self.stride if u == 0 else 1, self.dtype, name=f"unit{u + 1:02d}")(
                x
            )
        return x


class _Body(nn.Module):
    blocks: tuple[int, ...]
    width: float
    dtype: Any

    @nn.compact
    def __call__(self, x):
        w = int(64 * self.width)
        if w % 32:
            raise ValueError(f"BiT width factor {self.width}: 64 * width must be a multiple of 32")
        x = _Root(w, self.dtype, name="root_block")(x)
        for b, units in enumerate(self.blocks):
            x = _Stage(units, w * 2**b, 1 if b == 0 else 2, self.dtype, name=f"block{b + 1}")(x)
        x = nn.relu(GroupNorm(dtype=self.dtype, name="group_norm")(x))
        return jnp.mean(x, axis=(1, 2))


class ResNetV2(nn.Module):
    """BiT feature extractor: images ``[B, H, W, 3]`` in [-1, 1] -> features ``[B, 2048 * width]``.

    ``blocks`` are the unit counts of the four stages; stage ``b`` has bottleneck width
    ``64 * width * 2^b`` and output width four times that (``width=0.5`` is allowed for tests).
    """

    blocks: tuple[int, ...] = BLOCKS[50]
    width: float = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images):
        x = jnp.asarray(images, self.dtype)
        return _Body(tuple(self.blocks), self.width, self.dtype, name="resnet")(x)


def decode_variant(variant: str) -> dict[str, Any]:
    """``"R50x1"`` -> ``{"blocks": (3, 4, 6, 3), "width": 1}`` (depth 26, 50, 101 or 152)."""
    m = re.fullmatch(r"R(\d+)x(\d+)", variant)
    if not m or int(m.group(1)) not in BLOCKS:
        raise ValueError(
            f"unknown BiT variant {variant!r}: expected R<depth>x<width> with depth "
            f"in {sorted(BLOCKS)} (published: {', '.join(VARIANTS)})"
        )
    return {"blocks": BLOCKS[int(m.group(1))], "width": int(m.group(2))}


def from_config(config: dict, dtype=jnp.float32) -> ResNetV2:
    """Build a :class:`ResNetV2` from a registry config: ``variant``, ``blocks``, ``width``."""
    config = dict(config)
    kwargs = decode_variant(config.pop("variant")) if "variant" in config else {}
    kwargs.update(config)
    kwargs["blocks"] = tuple(kwargs["blocks"])
    return ResNetV2(dtype=dtype, **kwargs)
