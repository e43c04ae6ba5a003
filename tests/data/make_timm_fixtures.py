"""Make the timm parity fixtures in ``tests/data/timm/`` (``tests/test_fe_timm.py`` reads them).

timm and torch are not dependencies of the project; the fixtures were made in a separate
virtual environment, outside the repository::

    python3 -m venv /work/tools/timm-venv
    /work/tools/timm-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm safetensors numpy
    /work/tools/timm-venv/bin/python tests/data/make_timm_fixtures.py

(timm 1.0.31, torch 2.14.1, CPU, float32). For each family the script builds timm's own model
definition at tiny width and depth (width 16, 2 heads, 2 blocks) but with the family's structure:
patch 14, layer scale and register tokens for DINOv2 (SwiGLU for ViT-g), pre-norm, no patch bias,
LayerNorm epsilon 1e-5 and quick GELU (OpenAI) for CLIP, a MAP head for SigLIP. Every parameter is
redrawn so that none is trivial (layer-scale gammas around 1, not timm's 1e-5; norms not 1 and 0),
and the tokens entering the first LayerNorm (patch embedding, positions, cls and register tokens)
are scaled to about ``3 sqrt(eps)``, so that a wrong LayerNorm epsilon changes the features. It
writes

- ``<fixture>.safetensors``: the model's ``state_dict()``, as timm's hub files hold it (CLIP's
  ``head`` included);
- ``<fixture>.npz``: ``name`` (the registry entry whose structure it has), ``config`` (JSON:
  the tiny sizes to override), ``sizes`` and, per size ``S``, ``features_S``: timm's features of
  ``images.npz``'s images cropped to ``S x S``, normalised with the entry's mean and std. DINOv2:
  ``[cls, mean patch token]`` of ``forward_features``; CLIP, SigLIP: ``forward_head(...,
  pre_logits=True)``. The DINOv2 fixtures are made at 56 px and also run at 42 and 70 px with
  ``dynamic_img_size=True`` (timm resamples the position grid at run time);
- ``images.npz``: three fixed 70 x 70 uint8 RGB images (smooth patterns plus noise).
"""

from __future__ import annotations

import json
import os

import numpy as np
import timm
import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "timm")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
TINY = {"embed_dim": 16, "depth": 2, "num_heads": 2}
# fixture -> (timm model, extra timm kwargs, registry entry, mean/std, sizes (first: native))
FIXTURES = {
    "dinov2": (
        "vit_small_patch14_dinov2",
        {},
        "timm:vit_small_patch14_dinov2.lvd142m",
        IMAGENET,
        (56, 42, 70),
    ),
    "dinov2_reg4": (
        "vit_small_patch14_reg4_dinov2",
        {},
        "timm:vit_small_patch14_reg4_dinov2.lvd142m",
        IMAGENET,
        (56, 42, 70),
    ),
    "dinov2_giant_reg4": (
        "vit_giant_patch14_reg4_dinov2",
        {"mlp_ratio": 8.0},  # fc1 128 = 2 x 64 (the real 5.33 gives an odd size at width 16)
        "timm:vit_giant_patch14_reg4_dinov2.lvd142m",
        IMAGENET,
        (56,),
    ),
    "clip_openai": (
        "vit_base_patch16_clip_quickgelu_224",
        {"num_classes": 12},
        "timm:vit_base_patch16_clip_224.openai",
        OPENAI_CLIP,
        (48,),
    ),
    "clip_laion": (
        "vit_base_patch16_clip_224",
        {"num_classes": 12},
        "timm:vit_base_patch16_clip_224.laion2b",
        OPENAI_CLIP,
        (48,),
    ),
    "siglip": (
        "vit_base_patch16_siglip_224",
        {},
        "timm:vit_base_patch16_siglip_224.webli",
        INCEPTION,
        (48,),
    ),
}


def images(rng: np.random.Generator, n: int = 3, size: int = 70) -> np.ndarray:
    """``n`` uint8 ``[size, size, 3]`` images: a random low-frequency pattern plus noise."""
    y, x = np.mgrid[:size, :size] / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        f = rng.uniform(1, 4, (3, 2))
        phase = rng.uniform(0, 2 * np.pi, 3)
        pattern = np.stack(
            [np.sin(2 * np.pi * (f[c, 0] * x + f[c, 1] * y) + phase[c]) for c in range(3)], -1
        )
        pixels = 127.5 + 90 * pattern + rng.normal(0, 20, pattern.shape)
        out[i] = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
    return out


def redraw(model: torch.nn.Module, rng: np.random.Generator) -> None:
    """Replace every parameter with a non-trivial random value (module docstring)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = rng.standard_normal(tuple(p.shape))
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "gamma":  # layer scale
                value = rng.uniform(0.3, 1.5, p.shape)
            elif "norm" in name:
                value = 1 + 0.2 * z if leaf == "weight" else 0.2 * z
            elif leaf == "bias":
                value = 0.1 * z
            elif p.ndim >= 2 and leaf == "weight":
                value = z / np.sqrt(np.prod(p.shape[1:]))
            else:  # cls_token, reg_token, pos_embed, attn_pool.latent
                value = z
            p.copy_(torch.from_numpy(value.astype(np.float32)))


def shrink_tokens(model: torch.nn.Module) -> None:
    """Scale what makes the first LayerNorm's input to ``3 sqrt(eps)`` of its drawn size."""
    scale = 3 * np.sqrt(model.blocks[0].norm1.eps)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("patch_embed.", "pos_embed", "cls_token", "reg_token")):
                p.mul_(scale)


def features(model: torch.nn.Module, x: torch.Tensor, dinov2: bool) -> np.ndarray:
    with torch.no_grad():
        if dinov2:
            tokens = model.forward_features(x)
            patches = tokens[:, model.num_prefix_tokens :].mean(1)
            out = torch.cat([tokens[:, 0], patches], dim=-1)
        else:
            out = model.forward_head(model.forward_features(x), pre_logits=True)
    return out.numpy().astype(np.float32)


def main() -> None:
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    pictures = images(np.random.default_rng(0))
    np.savez(os.path.join(OUT, "images.npz"), images=pictures)
    for i, (fixture, (arch, extra, name, (mean, std), sizes)) in enumerate(FIXTURES.items()):
        dinov2 = "dinov2" in arch
        kwargs = {**TINY, **extra, "img_size": sizes[0]}
        if dinov2:
            kwargs["dynamic_img_size"] = True
        model = timm.create_model(arch, pretrained=False, **kwargs).eval()
        redraw(model, np.random.default_rng(100 + i))
        shrink_tokens(model)
        save_file(model.state_dict(), os.path.join(OUT, f"{fixture}.safetensors"))
        mlp_dim = model.blocks[0].mlp.fc1.out_features
        config = {"width": TINY["embed_dim"], "depth": TINY["depth"], "num_heads": 2}
        config["mlp_dim"] = mlp_dim
        result = {"name": name, "config": json.dumps(config), "sizes": np.asarray(sizes)}
        result["made_with"] = f"timm {timm.__version__}, torch {torch.__version__}"
        for size in sizes:
            x = torch.from_numpy(pictures[:, :size, :size].astype(np.float32) / 255)
            x = (x - torch.tensor(mean)) / torch.tensor(std)
            result[f"features_{size}"] = features(model, x.permute(0, 3, 1, 2), dinov2)
        np.savez(os.path.join(OUT, f"{fixture}.npz"), **result)
        print(fixture, arch, {k: v.shape for k, v in result.items() if k.startswith("features")})


if __name__ == "__main__":
    main()
