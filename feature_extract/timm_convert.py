"""timm ViT state dicts -> ``feature_extract.vit.ViT`` parameters (big_vision names).

The name map (docs/architecture.md, "Backbones"); ``W`` is a torch ``Linear`` weight
``[out, in]``, ``D`` the width, ``H`` the heads of the model's attention, ``d = D / H``::

    patch_embed.proj.weight [D, 3, p, p]   embedding/kernel = W.transpose(2, 3, 1, 0) [p, p, 3, D]
    patch_embed.proj.bias                  embedding/bias
    cls_token [1, 1, D], reg_token         cls, reg (plus their positions, below)
    pos_embed                              pos_embedding (below)
    norm_pre                               Transformer/encoder_prenorm
    blocks.{i}.norm1, .norm2               Transformer/encoderblock_{i}/LayerNorm_0, LayerNorm_1
    blocks.{i}.attn.qkv [3D, D]            .../MultiHeadDotProductAttention_0/{query,key,value}:
                                           rows [0, D), [D, 2D), [2D, 3D); kernel = W_s.T as
                                           [D, H, d], bias as [H, d]
    blocks.{i}.attn.proj                   .../MultiHeadDotProductAttention_0/out: kernel = W.T
                                           as [H, d, D]
    blocks.{i}.ls1.gamma, .ls2.gamma       .../LayerScale_0/scale, LayerScale_1/scale
    blocks.{i}.mlp.fc1, .fc2               .../MlpBlock_0/Dense_0, Dense_1: kernel = W.T
    norm                                   Transformer/encoder_norm
    attn_pool.latent                       MAPHead_0/probe
    attn_pool.q, .kv [2D, D], .proj        MAPHead_0/MultiHeadDotProductAttention_0/query,
                                           {key,value}, out (as in the blocks)
    attn_pool.norm, .mlp.fc1, .mlp.fc2     MAPHead_0/LayerNorm_0, MlpBlock_0/Dense_0, Dense_1
    (any LayerNorm) weight, bias           scale, bias
    head.*, mask_token                     dropped: a classifier, or CLIP's projection (the
                                           feature is taken before it); DINOv2's mask token

A name the map does not know is kept as it is, so the mismatch report lists it as unexpected.

Position embedding. timm's ``pos_embed`` is ``[1, P + h * w, D]``: ``P = 0`` (``no_embed_class``:
DINOv2 with registers, SigLIP) or the number of prefix tokens (cls, then registers: DINOv2,
CLIP). The prefix positions are added to ``cls`` and ``reg`` (timm adds them to those tokens,
which it never resamples). The ``h x w`` grid is resampled to the model's grid as timm does:
bicubic (Keys, ``a = -0.5``) with antialiasing and half-pixel centres, which is what
``jax.image.resize(..., "cubic", antialias=True)`` computes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from feature_extract.checkpoint import CheckpointMismatchError

_BLOCK = r"blocks\.(\d+)\."
_TO = r"Transformer/encoderblock_\1/"
_ATTN = "MultiHeadDotProductAttention_0"
# (timm module regex, ViT scope, kind), tried in order; the first full match wins.
MODULES: tuple[tuple[str, str, str], ...] = (
    (r"patch_embed\.proj", "embedding", "conv"),
    (r"norm_pre", "Transformer/encoder_prenorm", "norm"),
    (r"norm", "Transformer/encoder_norm", "norm"),
    (_BLOCK + r"norm1", _TO + "LayerNorm_0", "norm"),
    (_BLOCK + r"norm2", _TO + "LayerNorm_1", "norm"),
    (_BLOCK + r"attn\.qkv", _TO + _ATTN, "qkv"),
    (_BLOCK + r"attn\.proj", _TO + _ATTN + "/out", "out"),
    (_BLOCK + r"ls1", _TO + "LayerScale_0", "scale"),
    (_BLOCK + r"ls2", _TO + "LayerScale_1", "scale"),
    (_BLOCK + r"mlp\.fc1", _TO + "MlpBlock_0/Dense_0", "dense"),
    (_BLOCK + r"mlp\.fc2", _TO + "MlpBlock_0/Dense_1", "dense"),
    (r"attn_pool\.q", "MAPHead_0/" + _ATTN + "/query", "query"),
    (r"attn_pool\.kv", "MAPHead_0/" + _ATTN, "kv"),
    (r"attn_pool\.proj", "MAPHead_0/" + _ATTN + "/out", "out"),
    (r"attn_pool\.norm", "MAPHead_0/LayerNorm_0", "norm"),
    (r"attn_pool\.mlp\.fc1", "MAPHead_0/MlpBlock_0/Dense_0", "dense"),
    (r"attn_pool\.mlp\.fc2", "MAPHead_0/MlpBlock_0/Dense_1", "dense"),
)
RULES = tuple((re.compile(module), scope, kind) for module, scope, kind in MODULES)
DROPPED = re.compile(r"head\..*|mask_token")


def _is_square(n: int) -> bool:
    return n > 0 and int(round(np.sqrt(n))) ** 2 == n


def _heads(template: Mapping[str, Any], attention: str) -> int:
    """The model's head count at ``attention`` (1 when the model has no such attention)."""
    kernel = template.get(f"{attention}/query/kernel")
    return int(kernel.shape[1]) if kernel is not None and len(kernel.shape) == 3 else 1


def _split_heads(a: np.ndarray, heads: int) -> np.ndarray:
    """``[..., D]`` -> ``[..., H, D / H]`` (unchanged when ``H`` does not divide ``D``)."""
    d = a.shape[-1]
    return a.reshape(*a.shape[:-1], heads, d // heads) if d % heads == 0 else a


def _projections(
    scope: str, names: tuple[str, ...], param: str, a: np.ndarray, heads: int
) -> dict[str, np.ndarray]:
    """A fused ``[len(names) * D, ...]`` projection split into ``names`` along its rows."""
    if a.shape[0] % len(names):
        return {f"{scope}/{'_'.join(names)}/{param}": a}
    out = {}
    for name, part in zip(names, np.split(a, len(names)), strict=True):
        part = part.T if param == "weight" else part
        out[f"{scope}/{name}/{'kernel' if param == 'weight' else 'bias'}"] = _split_heads(
            part, heads
        )
    return out


def _convert(
    kind: str, scope: str, param: str, a: np.ndarray, template: Mapping[str, Any]
) -> dict[str, np.ndarray] | None:
    """``{ViT name: array}`` for parameter ``param`` of a timm module of ``kind`` (None: the
    kind has no such parameter)."""
    linear = {"weight": "kernel", "bias": "bias"}
    if kind == "conv" and param in linear:
        return {f"{scope}/{linear[param]}": a.transpose(2, 3, 1, 0) if a.ndim == 4 else a}
    if kind == "norm" and param in ("weight", "bias"):
        return {f"{scope}/{'scale' if param == 'weight' else 'bias'}": a}
    if kind == "scale" and param == "gamma":
        return {f"{scope}/scale": a}
    if kind == "dense" and param in linear:
        return {f"{scope}/{linear[param]}": a.T}
    if param not in linear:
        return None
    if kind == "query":
        heads = _heads(template, scope.rsplit("/", 1)[0])
        return {f"{scope}/{linear[param]}": _split_heads(a.T, heads)}
    if kind in ("qkv", "kv"):
        names = ("query", "key", "value") if kind == "qkv" else ("key", "value")
        return _projections(scope, names, param, a, _heads(template, scope))
    if kind == "out":
        if param == "bias":
            return {f"{scope}/bias": a}
        heads = _heads(template, scope.rsplit("/", 1)[0])
        kernel = a.T
        if kernel.shape[0] % heads == 0:
            kernel = kernel.reshape(heads, kernel.shape[0] // heads, kernel.shape[1])
        return {f"{scope}/kernel": kernel}
    return None


def resample_grid(posemb: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A square ``[1, h * h, D]`` position grid resized to ``grid`` as timm resizes it."""
    n, d = posemb.shape[1], posemb.shape[2]
    side = int(round(np.sqrt(n)))
    if side * side != n:
        raise CheckpointMismatchError(f"pos_embed with {n} positions is not a square grid")
    old = jnp.asarray(posemb, jnp.float32).reshape(1, side, side, d)
    new = jax.image.resize(old, (1, *grid, d), method="cubic", antialias=True)
    return np.asarray(new, np.float32).reshape(1, grid[0] * grid[1], d)


def _positions(state: dict[str, np.ndarray], template: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``cls``, ``reg`` and ``pos_embedding`` from timm's tokens and position embedding."""
    out = {}
    if "cls_token" in state:
        out["cls"] = np.asarray(state.pop("cls_token"), np.float32)
    if "reg_token" in state:
        out["reg"] = np.asarray(state.pop("reg_token"), np.float32)
    if "pos_embed" not in state:
        return out
    pe = np.asarray(state.pop("pos_embed"), np.float32)
    prefix = sum(out[k].shape[1] for k in ("cls", "reg") if k in out)
    if prefix and not _is_square(pe.shape[1]):
        if not _is_square(pe.shape[1] - prefix):
            raise CheckpointMismatchError(
                f"pos_embed has {pe.shape[1]} positions: neither a square grid nor {prefix} "
                "prefix token(s) and a square grid"
            )
        first = 0
        for k in ("cls", "reg"):
            if k in out:
                size = out[k].shape[1]
                out[k] = out[k] + pe[:, first : first + size]
                first += size
        pe = pe[:, prefix:]
    want = template.get("pos_embedding")
    if want is not None and pe.shape[1] != want.shape[1] and pe.shape[2] == want.shape[2]:
        side = int(round(np.sqrt(want.shape[1])))
        pe = resample_grid(pe, (side, want.shape[1] // side))
    out["pos_embedding"] = pe
    return out


def to_vit(state: Mapping[str, np.ndarray], template: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A timm ViT state dict named and laid out like the flat ``template`` (module docstring)."""
    state = {k: v for k, v in state.items() if not DROPPED.fullmatch(k)}
    out = _positions(state, template)
    if "attn_pool.latent" in state:
        out["MAPHead_0/probe"] = state.pop("attn_pool.latent")
    for name, a in state.items():
        module, _, param = name.rpartition(".")
        converted = None
        for pattern, scope, kind in RULES:
            match = pattern.fullmatch(module)
            if match:
                converted = _convert(kind, match.expand(scope), param, np.asarray(a), template)
                break
        out.update(converted if converted is not None else {name: a})
    return out
