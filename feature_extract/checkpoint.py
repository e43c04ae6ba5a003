"""Checkpoint files: big_vision / BiT ``.npz`` and ``.safetensors`` reading, and what every
family's conversion shares.

See docs/architecture.md, "Backbones". A big_vision checkpoint is an ``.npz`` of a flat dict whose
keys are ``/``-joined tree paths. ``read_npz``:

1. keys under ``opt/target/`` or ``params/`` (if any) are selected and the prefix stripped;
2. ``file.npz:img`` keeps only the sub-tree ``img/`` (e.g. a SigLIP image tower);
3. bfloat16 arrays, which numpy stores as 2-byte void (``|V2``), are reinterpreted as bfloat16.

``read_safetensors`` reads a ``.safetensors`` file (a PyTorch state dict such as timm's, with
``.``-joined names) with the ``safetensors`` package; bfloat16 tensors, which numpy lacks, come
through JAX.

Each family module (``feature_extract/families/``) then renames the result to its model's names;
``mismatch_report`` checks it against the model's parameter shapes (``registry.load_params``
raises :class:`CheckpointMismatchError` listing every missing, unexpected or mis-shaped name).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import scipy.ndimage
from flax.traverse_util import flatten_dict

_PREFIXES = ("opt/target/", "params/")
_BF16 = np.dtype(jnp.bfloat16)


class CheckpointMismatchError(ValueError):
    """The checkpoint's parameter names or shapes do not match the model."""


def split_selector(path: str) -> tuple[str, str | None]:
    """``"dir/f.npz:img"`` -> ``("dir/f.npz", "img")``; a path without a selector -> key None."""
    head, sep, key = str(path).rpartition(":")
    if sep and key and "/" not in key and "\\" not in key and not os.path.exists(path):
        return head, key
    return str(path), None


def _fix_dtype(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "V":
        if a.dtype.itemsize != 2:
            raise ValueError(f"unknown {a.dtype.itemsize}-byte void dtype in checkpoint")
        return a.view(_BF16)
    return a


def read_npz(path: str) -> dict[str, np.ndarray]:
    """The flat ``{name: array}`` of a checkpoint, prefix stripped, sub-tree selected."""
    file, key = split_selector(path)
    if not os.path.exists(file):
        raise FileNotFoundError(f"checkpoint file {file!r} does not exist")
    try:
        npz = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"checkpoint {file!r} is not a readable .npz archive ({' '.join(str(err).split())}); "
            "pass the published .npz file (fetch it again if it was cut short)"
        ) from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"checkpoint {file!r} holds a single array, not an .npz archive of names")
    try:
        with npz:
            flat = {name: _fix_dtype(npz[name]) for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"checkpoint {file!r} is damaged ({' '.join(str(err).split())}); fetch it again"
        ) from err
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in flat):
            flat = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
            break
    if key is not None:
        sub = {k[len(key) + 1 :]: v for k, v in flat.items() if k.startswith(key + "/")}
        if not sub:
            tops = sorted({k.split("/")[0] for k in flat})
            raise CheckpointMismatchError(
                f"checkpoint {file!r} has no sub-tree {key!r}; top-level names: {tops}. Select "
                "one with 'file.npz:NAME' (a file holding only this model: load_backbone(..., "
                "spec_overrides={'checkpoint_key': None}))"
            )
        flat = sub
    return flat


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """The ``{name: array}`` of a ``.safetensors`` file (a ``ValueError`` when it is not one)."""
    from safetensors import SafetensorError, safe_open

    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    try:
        with safe_open(path, framework="np") as f:
            names = list(f.keys())
            bf16 = {k for k in names if f.get_slice(k).get_dtype() == "BF16"}
            flat = {k: f.get_tensor(k) for k in names if k not in bf16}
        if bf16:
            with safe_open(path, framework="flax") as f:
                flat.update({k: np.asarray(f.get_tensor(k)) for k in bf16})
    except (SafetensorError, TypeError) as err:  # TypeError: a dtype numpy does not know
        raise ValueError(
            f"checkpoint {path!r} is not a readable .safetensors file "
            f"({' '.join(str(err).split())}); pass the model.safetensors file as published "
            "(fetch it again if it was cut short)"
        ) from err
    return flat


def save_npz(params: Mapping[str, Any], path: str, *, prefix: str = "") -> None:
    """Write a parameter tree as a flat ``.npz`` with ``/``-joined big_vision names."""
    flat = flatten_dict(dict(params), sep="/")
    np.savez(path, **{prefix + k: np.asarray(v) for k, v in flat.items()})


def resample_posemb(posemb: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a ``[1, h*w, D]`` position embedding (square ``h = w``) to ``grid``."""
    n, d = posemb.shape[1], posemb.shape[2]
    side = int(round(np.sqrt(n)))
    if side * side != n:
        raise CheckpointMismatchError(f"pos_embedding with {n} positions is not a square grid")
    old = np.asarray(posemb, np.float32).reshape(side, side, d)
    zoom = (grid[0] / side, grid[1] / side, 1)
    new = scipy.ndimage.zoom(old, zoom, order=1)  # corner-aligned bilinear
    if new.shape[:2] != tuple(grid):
        raise CheckpointMismatchError(
            f"resampling a {side}x{side} pos_embedding grid gave "
            f"{new.shape[:2]}, wanted {tuple(grid)}"
        )
    return new.reshape(1, grid[0] * grid[1], d)


def unstack_scan(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``Transformer/encoderblock/X`` stacked ``[depth, ...]`` -> ``encoderblock_{i}/X``."""
    stacked = "Transformer/encoderblock/"
    out = {}
    for k, v in flat.items():
        if k.startswith(stacked):
            for i in range(v.shape[0]):
                out[f"Transformer/encoderblock_{i}/{k[len(stacked) :]}"] = v[i]
        else:
            out[k] = v
    return out


def _natural_key(name: str) -> tuple[str, int]:
    m = re.fullmatch(r"(.+)_(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


def renumber_pre_linen(tree: Any) -> Any:
    """Pre-Linen names count submodules across types (``LayerNorm_0, MultiHeadDotProductAttention_1,
    LayerNorm_2, MlpBlock_3``); Linen counts per type (``LayerNorm_0, ..._0, LayerNorm_1,
    MlpBlock_0``). Renumber each level per type in index order (idempotent on Linen names)."""
    if not isinstance(tree, dict):
        return tree
    counts: dict[str, int] = {}
    out = {}
    for name in sorted(tree, key=_natural_key):
        base, num = _natural_key(name)
        new = name
        if num >= 0:
            new = f"{base}_{counts.get(base, 0)}"
            counts[base] = counts.get(base, 0) + 1
        out[new] = renumber_pre_linen(tree[name])
    return out


def _tops(flat: Mapping[str, Any]) -> set[str]:
    return {k.split("/")[0] for k in flat}


def mismatch_report(path, flat, template, family: str) -> str | None:
    """None when the flat ``flat`` has exactly the names and shapes of the flat ``template``,
    else the text of a ``CheckpointMismatchError`` listing every difference."""
    missing = sorted(set(template) - set(flat))
    unexpected = sorted(set(flat) - set(template))
    shapes = sorted(
        f"{k}: file {tuple(flat[k].shape)} vs model {tuple(template[k].shape)}"
        for k in set(flat) & set(template)
        if tuple(flat[k].shape) != tuple(template[k].shape)
    )
    if not (missing or unexpected or shapes):
        return None
    lines = [f"checkpoint {path!r} does not match the model:"]
    for title, items in (
        ("missing (in the model, not in the file)", missing),
        ("unexpected (in the file, not in the model)", unexpected),
        ("wrong shape", shapes),
    ):
        if items:
            lines.append(f"  {title} [{len(items)}]:")
            lines += [f"    {item}" for item in items[:40]]
            if len(items) > 40:
                lines.append(f"    ... and {len(items) - 40} more")
    file_tops, model_tops = _tops(flat), _tops(template)
    if not file_tops & model_tops:
        lines.append(
            f"No top-level name is shared: the file has {sorted(file_tops)[:8]}, the {family} "
            f"model {sorted(model_tops)[:8]}; is this a checkpoint of another model family?"
        )
    lines.append(
        "Check that the file is this backbone's checkpoint (--list-models), the backbone's "
        "config (variant or sizes, patch, pool_type, pre_logits: load_backbone's "
        "spec_overrides={'config': {...}}) or, for an .npz, the ':key' sub-tree selector."
    )
    return "\n".join(lines)
