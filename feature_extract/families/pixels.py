"""``pixels``: the flattened image scaled to [0, 1]; no network, no weights.

The feature of an ``[H, W, C]`` image is its pixels in row-major order, ``D = H * W * C``. The
entry keeps the dataset's own image size (``resolution=None``) unless one is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax

from feature_extract import registry


class Flatten(nn.Module):
    """``[B, H, W, C] -> [B, H * W * C]``."""

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        return images.reshape(images.shape[0], -1)


def _dim(config: Mapping[str, Any], resolution: int | None) -> int | None:
    del config
    return None if resolution is None else 3 * resolution * resolution


registry.register_family(
    registry.Family("pixels", lambda config, dtype: Flatten(), _dim, None, "none", __name__)
)
registry.register(
    registry.BackboneSpec(
        "pixels",
        "pixels",
        {},
        None,
        "value_range(0,1)",
        description="the flattened image scaled to [0,1]; no network",
    )
)
