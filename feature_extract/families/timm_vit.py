"""timm ViT checkpoints: DINOv2 (with and without registers), OpenAI and LAION CLIP, SigLIP 1/2.

A backbone is named as timm names it, ``timm:<model>.<tag>``
(``timm:vit_small_patch14_dinov2.lvd142m``); its weights are timm's ``model.safetensors`` on the
Hugging Face hub, cached as ``<model>.<tag>.safetensors`` (or ``--checkpoint FILE.safetensors``).
The model is ``feature_extract.vit.ViT`` with big_vision's parameter names and the options these
families need; ``feature_extract.timm_convert`` maps timm's names onto it (docs/architecture.md,
"Backbones").

Architecture per family (timm's model definitions; LayerNorm epsilon 1e-6 unless said):

- DINOv2: patch 14, layer scale, exact (erf) GELU; ViT-g: SwiGLU MLP (``fc1`` 8192 = 2 x 4096);
  ``reg4``: 4 register tokens. Feature: ``[cls token, mean of the patch tokens]`` after the
  final norm (the DINOv2 linear probe's), ``2 x width``.
- CLIP: ``norm_pre`` on the tokens before the blocks, no patch-embedding bias, LayerNorm
  epsilon 1e-5; OpenAI weights use quick GELU (``x sigmoid(1.702 x)``, as trained: timm's
  ``vit_*_clip_224`` builds exact GELU for them and notes it), LAION weights exact GELU. Feature:
  the cls token after the final norm, **before** the projection to the joint image-text space
  (``head.*``, dropped), as the CLIP paper's linear probes use it; ``width``.
- SigLIP, SigLIP 2: no cls token, exact GELU, a MAP head (``attn_pool``). Feature: the MAP
  output, the pooled image embedding (timm's files hold no projection after it); ``width``.

Preprocessing (timm's pretrained configs): ``resize_small(floor(R / crop_pct))|central_crop(R)|
value_range(0,1)``, then ``(x - mean) / std`` inside the model with the config's mean and std.
DINOv2 runs at 224 px (its linear-probe protocol: resize 256, crop 224) with its 518 px (37 x 37)
position grid resampled as timm does; ``--resolution`` changes it. Resizing is PIL bilinear, not
timm's bicubic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from feature_extract import checkpoint, registry, timm_convert, vit

HUB = "https://huggingface.co/timm/{name}/resolve/main/model.safetensors"
PREFIX = "timm:"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
# timm size -> (width, depth, mlp_dim, num_heads)
SIZES: dict[str, tuple[int, int, int, int]] = {
    "small": (384, 12, 1536, 6),
    "base": (768, 12, 3072, 12),
    "large": (1024, 24, 4096, 16),
    "so400m": (1152, 27, 4304, 16),
    "giant": (1536, 40, 8192, 24),  # DINOv2 ViT-g: SwiGLU, fc1 = 2 x 4096
}
FEATURES = {
    "tok_gap": "[cls token, mean patch token] after the final norm",
    "tok": "cls token after the final norm, before the projection (head.*, dropped)",
    "map": "MAP-pooled image embedding (attn_pool; no projection in the file)",
}


def feature_dim(config: Mapping[str, Any], resolution: int | None) -> int:
    """The width, twice it for ``pool_type="tok_gap"`` (DINOv2's cls and mean patch token)."""
    del resolution
    return int(config["width"]) * (2 if config["pool_type"] == "tok_gap" else 1)


def build(config: Mapping[str, Any], dtype: Any = jnp.float32) -> vit.ViT:
    return vit.from_config(dict(config), dtype=dtype)


def convert(path: str, template: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """timm's ``.safetensors`` state dict named like the flat ``template``."""
    return timm_convert.to_vit(checkpoint.read_safetensors(path), template)


FAMILY = registry.register_family(
    registry.Family("timm_vit", build, feature_dim, convert, "timm .safetensors", __name__)
)


def _timm(
    name: str, size: str, title: str, norm: tuple, crop_pct: float, res: int = 224, **config
) -> None:
    width, depth, mlp_dim, heads = SIZES[size]
    mean, std = norm
    config = {
        "width": width,
        "depth": depth,
        "mlp_dim": mlp_dim,
        "num_heads": heads,
        "input_mean": mean,
        "input_std": std,
        **config,
    }
    registry.register(
        registry.BackboneSpec(
            PREFIX + name,
            FAMILY.name,
            config,
            res,
            f"resize_small({math.floor(res / crop_pct)})|central_crop({res})|value_range(0,1)",
            HUB.format(name=name),
            description=f"{title}; feature: {FEATURES[config['pool_type']]}; in the model: "
            f"(x - mean) / std, mean {mean}, std {std}",
            filename=f"{name}.safetensors",
        )
    )


DINOV2 = {"patch": 14, "pool_type": "tok_gap", "act": "gelu", "layer_scale": True}
for _size, _letter in (("small", "S"), ("base", "B"), ("large", "L"), ("giant", "g")):
    _act = "swiglu" if _size == "giant" else "gelu"
    for _reg in (0, 4):
        _timm(
            f"vit_{_size}_patch14{'_reg4' if _reg else ''}_dinov2.lvd142m",
            _size,
            f"DINOv2 ViT-{_letter}/14{' with 4 registers' if _reg else ''} (LVD-142M)",
            IMAGENET,
            224 / 256,
            **{**DINOV2, "act": _act, "num_registers": _reg},
        )

CLIP = {"pool_type": "tok", "pre_norm": True, "embedding_bias": False, "ln_eps": 1e-5}
_timm(
    "vit_base_patch16_clip_224.openai",
    "base",
    "OpenAI CLIP ViT-B/16 image tower",
    OPENAI_CLIP,
    0.9,
    patch=16,
    act="quick_gelu",
    **CLIP,
)
_timm(
    "vit_large_patch14_clip_224.openai",
    "large",
    "OpenAI CLIP ViT-L/14 image tower",
    OPENAI_CLIP,
    1.0,
    patch=14,
    act="quick_gelu",
    **CLIP,
)
_timm(
    "vit_base_patch16_clip_224.laion2b",
    "base",
    "LAION-2B CLIP ViT-B/16 image tower (OpenCLIP)",
    OPENAI_CLIP,
    1.0,
    patch=16,
    act="gelu",
    **CLIP,
)
_timm(
    "vit_large_patch14_clip_224.laion2b",
    "large",
    "LAION-2B CLIP ViT-L/14 image tower (OpenCLIP)",
    INCEPTION,
    1.0,
    patch=14,
    act="gelu",
    **CLIP,
)

SIGLIP = {"pool_type": "map", "act": "gelu"}
for _tag, _title in (("webli", "SigLIP"), ("v2_webli", "SigLIP 2")):
    _timm(
        f"vit_base_patch16_siglip_224.{_tag}",
        "base",
        f"{_title} B/16 image tower (WebLI)",
        INCEPTION,
        0.9,
        patch=16,
        **SIGLIP,
    )
    _timm(
        f"vit_so400m_patch14_siglip_224.{_tag}",
        "so400m",
        f"{_title} So400m/14 image tower (WebLI)",
        INCEPTION,
        0.9,
        patch=14,
        **SIGLIP,
    )
