"""Named backbones: architecture, checkpoint URL, input resolution and preprocessing.

``load_backbone(name)`` builds the Flax model, fetches its checkpoint (cache, download, or a local
``checkpoint=`` file), loads it with big_vision names and returns a :class:`Backbone` whose
``apply(params, images)`` maps preprocessed images ``[B, H, W, 3]`` to features ``[B, D]``.

The preprocessing string excludes ``decode`` (the pipeline decodes first). ``pixels`` has
``resolution=None``: images keep the dataset's own size and the feature is the flattened image
scaled to [0, 1], ``D = H * W * 3``; its ``feature_dim`` is therefore ``None`` unless a
``resolution`` is passed (which prepends ``resize(resolution)`` to the preprocessing).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_AUGREG = "https://storage.googleapis.com/vit_models/augreg/"
_SIGLIP = "https://storage.googleapis.com/big_vision/siglip/"
_BIT = "https://storage.googleapis.com/bit_models/"
_VIT_PREPROC = "resize({r})|value_range(-1,1)"


@dataclass(frozen=True)
class BackboneSpec:
    """A static registry entry. ``config`` holds the architecture options (see vit.py, bit.py)."""

    name: str
    arch: str  # "vit" | "bit" | "pixels"
    config: dict = field(default_factory=dict)
    resolution: int | None = None
    preprocessing: str = ""
    url: str | None = None
    checkpoint_key: str | None = None  # sub-tree selector, e.g. "img" for a SigLIP image tower
    sha256: str | None = None
    size: int | None = None
    description: str = ""


@dataclass
class Backbone:
    """A ready-to-run backbone: ``apply(params, images) -> features [B, feature_dim]``."""

    name: str
    resolution: int | None
    preprocessing: str
    checkpoint: str | None
    checkpoint_sha256: str | None
    params: Any
    apply: Callable[[Any, jax.Array], jax.Array]
    feature_dim: int | None
    spec: BackboneSpec | None = None


_REGISTRY: dict[str, BackboneSpec] = {}


def _register(spec: BackboneSpec) -> None:
    _REGISTRY[spec.name] = spec


def _vit(name, variant, patch, url=None, key=None, res=224, desc="", **config):
    cfg = {"variant": variant, "patch": patch, "pool_type": "tok", "posemb": "learn", **config}
    _register(
        BackboneSpec(name, "vit", cfg, res, _VIT_PREPROC.format(r=res), url, key, description=desc)
    )


def _bit(name, variant, url=None, res=224, desc="", **config):
    _register(
        BackboneSpec(
            name,
            "bit",
            {"variant": variant, **config},
            res,
            _VIT_PREPROC.format(r=res),
            url,
            description=desc,
        )
    )


_vit(
    "vit-ti16-i21k",
    "Ti",
    16,
    _AUGREG + "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0.npz",
    desc="AugReg ViT-Ti/16, ImageNet-21k",
)
_vit(
    "vit-s16-i21k",
    "S",
    16,
    _AUGREG + "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz",
    desc="AugReg ViT-S/16, ImageNet-21k",
)
_vit(
    "vit-b16-i21k",
    "B",
    16,
    _AUGREG + "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz",
    desc="AugReg ViT-B/16, ImageNet-21k",
)
_vit(
    "vit-l16-i21k",
    "L",
    16,
    _AUGREG + "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0.npz",
    desc="AugReg ViT-L/16, ImageNet-21k",
)
_vit(
    "siglip-b16-224",
    "B",
    16,
    _SIGLIP + "webli_en_b16_224_63724782.npz",
    "img",
    pool_type="map",
    desc="SigLIP B/16 image tower (WebLI), MAP head",
)
_vit(
    "siglip-so400m-224",
    "So400m",
    14,
    _SIGLIP + "webli_en_so400m_224_57633886.npz",
    "img",
    pool_type="map",
    desc="SigLIP So400m/14 image tower (WebLI), MAP head",
)
_bit("bit-m-r50x1", "R50x1", _BIT + "BiT-M-R50x1.npz", desc="BiT-M ResNet-50x1, ImageNet-21k")
_bit("bit-m-r101x3", "R101x3", _BIT + "BiT-M-R101x3.npz", desc="BiT-M ResNet-101x3, ImageNet-21k")
_bit("bit-m-r152x4", "R152x4", _BIT + "BiT-M-R152x4.npz", desc="BiT-M ResNet-152x4, ImageNet-21k")
# Test-size models: random initialisation only (no checkpoint published).
_vit("vit-mu16", "mu", 16, res=32, desc="tiny ViT for tests (random init)")
_vit("vit-mu16-map", "mu", 16, res=32, pool_type="map", desc="tiny MAP-head ViT for tests")
_bit(
    "bit-tiny-test",
    "R26x1",
    res=32,
    blocks=(1, 1, 1, 1),
    width=0.5,
    desc="one unit per stage, half width, for tests (random init)",
)
_register(
    BackboneSpec(
        "pixels",
        "pixels",
        {},
        None,
        "value_range(0,1)",
        description="the flattened image scaled to [0,1]; no network",
    )
)


def list_backbones() -> list[str]:
    """Names of all registered backbones."""
    return sorted(_REGISTRY)


def spec_feature_dim(spec: BackboneSpec) -> int | None:
    """The feature size D of a registry entry, from its config alone (no model is built).

    ViT: ``pre_logits`` when set (``True`` means the width), else the width. BiT: the last
    stage's output, ``2048 * width``. ``pixels``: None (``H * W * 3`` of the images, or
    ``3 r^2`` with a resolution ``r``).
    """
    if spec.arch == "vit":
        from feature_extract import vit

        config = dict(spec.config)
        kwargs = vit.decode_variant(config.pop("variant")) if "variant" in spec.config else {}
        kwargs.update(config)
        pre = kwargs.get("pre_logits")
        return int(kwargs["width"] if pre in (None, False, True) else pre)
    if spec.arch == "bit":
        from feature_extract import bit

        config = dict(spec.config)
        kwargs = bit.decode_variant(config.pop("variant")) if "variant" in spec.config else {}
        kwargs.update(config)
        return int(2048 * kwargs["width"])
    return None


def describe_backbones() -> list[dict[str, Any]]:
    """One row per registered backbone: name, feature dim, input size, checkpoint, description."""
    return [
        {
            "name": spec.name,
            "dim": spec_feature_dim(spec),
            "resolution": spec.resolution,
            "checkpoint": spec.url,
            "description": spec.description,
        }
        for spec in (_REGISTRY[n] for n in list_backbones())
    ]


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name`` (ValueError listing the known names otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r}; known: {', '.join(list_backbones())}"
        ) from None


def _with_resolution(preprocessing: str, old: int | None, new: int) -> str:
    """The preprocessing string for input size ``new`` instead of ``old``."""
    if old is None:
        return f"resize({new})|{preprocessing}" if preprocessing else f"resize({new})"
    return re.sub(rf"\b(resize|central_crop)\({old}\)", rf"\g<1>({new})", preprocessing)


def _build_model(spec: BackboneSpec, dtype):
    if spec.arch == "vit":
        from feature_extract import vit

        return vit.from_config(spec.config, dtype=dtype)
    if spec.arch == "bit":
        from feature_extract import bit

        return bit.from_config(spec.config, dtype=dtype)
    raise ValueError(f"backbone {spec.name!r}: unknown arch {spec.arch!r}")


def _pixels_apply(params: Any, images: jax.Array) -> jax.Array:
    """Feature = the image flattened, ``[B, H*W*C]``."""
    del params
    return images.reshape(images.shape[0], -1)


def random_params(template: Any, seed: int = 0) -> Any:
    """Random float32 parameters shaped like ``template`` (numpy, no compilation).

    Normalisation scales (``scale``, ``gamma``) are ``1 + 0.1 z``, offsets (``bias``, ``beta``)
    ``0.1 z``, all other arrays ``z / sqrt(prod(shape[:-1]))``, with ``z ~ N(0, 1)``.
    """
    rng = np.random.default_rng(seed)

    def init(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        z = rng.standard_normal(leaf.shape, dtype=np.float32)
        if name in ("scale", "gamma"):
            return 1 + 0.1 * z
        if name in ("bias", "beta"):
            return 0.1 * z
        return z / np.sqrt(max(1, int(np.prod(leaf.shape[:-1]))))

    return jax.tree_util.tree_map_with_path(init, template)


def _resolve_checkpoint(spec: BackboneSpec, checkpoint, cache_dir, download) -> tuple[str, str]:
    """(path with optional ``:key`` selector, sha256 of the file)."""
    from feature_extract import checkpoint as ckpt
    from feature_extract import download as dl

    if checkpoint is not None:
        path, key = ckpt.split_selector(str(checkpoint))
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
        key = key or spec.checkpoint_key
        return (f"{path}:{key}" if key else path), dl.sha256_file(path)
    if spec.url is None:
        raise ValueError(
            f"backbone {spec.name!r} has no published checkpoint: pass "
            "checkpoint=PATH or init_random=True"
        )
    path, digest = dl.fetch(
        spec.url, cache_dir=cache_dir, sha256=spec.sha256, size=spec.size, download=download
    )
    return (f"{path}:{spec.checkpoint_key}" if spec.checkpoint_key else path), digest


def load_backbone(
    name: str,
    checkpoint: str | None = None,
    *,
    cache_dir: str | None = None,
    download: bool = True,
    dtype=jnp.bfloat16,
    init_random: bool = False,
    rng_seed: int = 0,
    resolution: int | None = None,
    spec_overrides: dict | None = None,
) -> Backbone:
    """Build backbone ``name`` with its weights.

    Weights come from ``checkpoint`` (a local ``.npz``, optionally ``file.npz:key``), else from the
    registry URL through the download cache, else (``init_random=True``) from a random
    initialisation (:func:`random_params`) with seed ``rng_seed``. ``resolution`` overrides the
    input size (a ViT's position embedding is resampled). ``spec_overrides`` replaces spec fields;
    its ``config`` entry is merged into the architecture config. Parameters stay float32; compute
    runs in ``dtype``.
    """
    spec = get_spec(name)
    if spec_overrides:
        overrides = dict(spec_overrides)
        config = {**spec.config, **overrides.pop("config", {})}
        spec = dataclasses.replace(spec, config=config, **overrides)
    res = spec.resolution if resolution is None else resolution
    preprocessing = spec.preprocessing
    if res != spec.resolution:
        preprocessing = _with_resolution(preprocessing, spec.resolution, res)

    if spec.arch == "pixels":
        dim = None if res is None else res * res * 3
        return Backbone(name, res, preprocessing, None, None, {}, _pixels_apply, dim, spec)

    model = _build_model(spec, dtype)
    images = jax.ShapeDtypeStruct((1, res, res, 3), dtype)
    template = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), images)["params"]
    if init_random and checkpoint is None:
        params, path, digest = random_params(template, rng_seed), None, None
    else:
        from feature_extract import checkpoint as ckpt

        path, digest = _resolve_checkpoint(spec, checkpoint, cache_dir, download)
        params = ckpt.load_params(path, template, arch=spec.arch)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)

    def apply(params: Any, images: jax.Array) -> jax.Array:
        return model.apply({"params": params}, images)

    out = jax.eval_shape(apply, params, images)
    return Backbone(name, res, preprocessing, path, digest, params, apply, int(out.shape[-1]), spec)
