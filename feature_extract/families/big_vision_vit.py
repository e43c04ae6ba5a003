"""big_vision ViT: AugReg ViT, SigLIP image towers and test-size models, from ``.npz`` files.

The model is ``feature_extract.vit.ViT`` (big_vision's parameter names); the cached feature is
its ``pre_logits`` output (docs/architecture.md, "Backbones"). Conversion of a checkpoint
(``checkpoint.read_npz`` first): the classifier ``head`` is dropped; old AugReg names
(``Transformer/posembed_input/pos_embedding``, pre-Linen numbering) and scan-stacked blocks are
renamed; an old position embedding whose first entry is the cls token's has that entry folded
into ``cls``; a position grid of another size is resampled bilinearly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from feature_extract import checkpoint, registry, vit

AUGREG = "https://storage.googleapis.com/vit_models/augreg/"
SIGLIP = "https://storage.googleapis.com/big_vision/siglip/"
PREPROCESSING = "resize({r})|value_range(-1,1)"


def _kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    config = dict(config)
    kwargs = vit.decode_variant(config.pop("variant")) if "variant" in config else {}
    kwargs.update(config)
    return kwargs


def feature_dim(config: Mapping[str, Any], resolution: int | None) -> int:
    """``pre_logits`` when set to a size, else the width."""
    del resolution
    kwargs = _kwargs(config)
    pre = kwargs.get("pre_logits")
    return int(kwargs["width"] if pre in (None, False, True) else pre)


def build(config: Mapping[str, Any], dtype: Any = jnp.float32) -> vit.ViT:
    return vit.from_config(dict(config), dtype=dtype)


def convert(path: str, template: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A big_vision ViT ``.npz`` (module docstring) named like the flat ``template``."""
    flat = checkpoint.read_npz(path)
    flat = {k: v for k, v in flat.items() if not k.startswith("head/")}
    for old in ("Transformer/posembed_input/pos_embedding", "Transformer/pos_embedding"):
        if old in flat:
            flat["pos_embedding"] = flat.pop(old)
    # Pre-Linen numbering (MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3) -> per type.
    flat = flatten_dict(checkpoint.renumber_pre_linen(unflatten_dict(flat, sep="/")), sep="/")
    flat = checkpoint.unstack_scan(flat)
    pe = flat.get("pos_embedding")
    if pe is not None:
        side = int(np.sqrt(pe.shape[1] - 1))
        if side * side + 1 == pe.shape[1]:  # old layout: the cls token's position comes first
            if "cls" in flat:
                flat["cls"] = flat["cls"].astype(np.float32) + pe[:, :1].astype(np.float32)
            flat["pos_embedding"] = pe = pe[:, 1:]
        want = template.get("pos_embedding")
        if (
            want is not None
            and tuple(pe.shape) != tuple(want.shape)
            and pe.shape[2] == want.shape[2]
        ):
            g = int(round(np.sqrt(want.shape[1])))
            flat["pos_embedding"] = checkpoint.resample_posemb(pe, (g, want.shape[1] // g))
    return flat


FAMILY = registry.register_family(
    registry.Family("big_vision_vit", build, feature_dim, convert, "big_vision .npz", __name__)
)


FEATURES = {"tok": "cls token after encoder_norm", "map": "MAP-pooled (MAPHead_0)"}


def _vit(name, variant, patch, url=None, key=None, res=224, desc="", **config) -> None:
    cfg = {"variant": variant, "patch": patch, "pool_type": "tok", "posemb": "learn", **config}
    desc = f"{desc}; feature: {FEATURES[cfg['pool_type']]}"
    registry.register(
        registry.BackboneSpec(
            name,
            FAMILY.name,
            cfg,
            res,
            PREPROCESSING.format(r=res),
            url,
            key,
            description=desc,
        )
    )


_vit(
    "vit-ti16-i21k",
    "Ti",
    16,
    AUGREG + "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0.npz",
    desc="AugReg ViT-Ti/16, ImageNet-21k",
)
_vit(
    "vit-s16-i21k",
    "S",
    16,
    AUGREG + "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz",
    desc="AugReg ViT-S/16, ImageNet-21k",
)
_vit(
    "vit-b16-i21k",
    "B",
    16,
    AUGREG + "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz",
    desc="AugReg ViT-B/16, ImageNet-21k",
)
_vit(
    "vit-l16-i21k",
    "L",
    16,
    AUGREG + "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0.npz",
    desc="AugReg ViT-L/16, ImageNet-21k",
)
_vit(
    "siglip-b16-224",
    "B",
    16,
    SIGLIP + "webli_en_b16_224_63724782.npz",
    "img",
    pool_type="map",
    desc="SigLIP B/16 image tower (WebLI), MAP head",
)
_vit(
    "siglip-so400m-224",
    "So400m",
    14,
    SIGLIP + "webli_en_so400m_224_57633886.npz",
    "img",
    pool_type="map",
    desc="SigLIP So400m/14 image tower (WebLI), MAP head",
)
# Test-size models: random initialisation only (no checkpoint published).
_vit("vit-mu16", "mu", 16, res=32, desc="tiny ViT for tests (random init)")
_vit("vit-mu16-map", "mu", 16, res=32, pool_type="map", desc="tiny MAP-head ViT for tests")
