"""BiT ResNet v2 (pre-activation, GroupNorm, weight-standardised convolutions) from ``.npz``.

The model is ``feature_extract.bit.ResNetV2`` with BiT's TF names under ``resnet/``; the cached
feature is the global average pool after the final GroupNorm + ReLU, ``D = 2048 * width``.
Conversion of a checkpoint (``checkpoint.read_npz`` first): numbered ``standardized_conv2d_N``
variants are renamed and the classifier ``resnet/head`` is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from feature_extract import bit, checkpoint, registry

BIT = "https://storage.googleapis.com/bit_models/"
PREPROCESSING = "resize({r})|value_range(-1,1)"


def feature_dim(config: Mapping[str, Any], resolution: int | None) -> int:
    """The last stage's output width, ``2048 * width``."""
    del resolution
    config = dict(config)
    kwargs = bit.decode_variant(config.pop("variant")) if "variant" in config else {}
    kwargs.update(config)
    return int(2048 * kwargs["width"])


def build(config: Mapping[str, Any], dtype: Any = jnp.float32) -> bit.ResNetV2:
    return bit.from_config(dict(config), dtype=dtype)


def convert(path: str, template: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A BiT ``.npz`` (module docstring) named like the model."""
    del template
    flat = checkpoint.read_npz(path)
    flat = {
        re.sub(r"/standardized_conv2d_\d+/", "/standardized_conv2d/", k): v for k, v in flat.items()
    }
    return {k: v for k, v in flat.items() if not k.startswith("resnet/head/")}


FAMILY = registry.register_family(
    registry.Family("bit", build, feature_dim, convert, "BiT .npz", __name__)
)


def _bit(name, variant, url=None, res=224, desc="", **config) -> None:
    registry.register(
        registry.BackboneSpec(
            name,
            FAMILY.name,
            {"variant": variant, **config},
            res,
            PREPROCESSING.format(r=res),
            url,
            description=f"{desc}; feature: global average pool after the final GroupNorm + ReLU",
        )
    )


_bit("bit-m-r50x1", "R50x1", BIT + "BiT-M-R50x1.npz", desc="BiT-M ResNet-50x1, ImageNet-21k")
_bit("bit-m-r101x3", "R101x3", BIT + "BiT-M-R101x3.npz", desc="BiT-M ResNet-101x3, ImageNet-21k")
_bit("bit-m-r152x4", "R152x4", BIT + "BiT-M-R152x4.npz", desc="BiT-M ResNet-152x4, ImageNet-21k")
_bit(
    "bit-tiny-test",
    "R26x1",
    res=32,
    blocks=(1, 1, 1, 1),
    width=0.5,
    desc="one unit per stage, half width, for tests (random init)",
)
