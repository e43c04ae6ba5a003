"""Named backbones and the model families that build them.

A **family** (``Family``) owns everything architecture-specific: its config, its Flax model, the
feature size, and the conversion of its published checkpoint format into the model's parameter
names. Each family lives in one module of ``feature_extract/families/``, which registers the
family and its named backbones (``register_family``, ``register``) when imported; every module of
that package is imported on first use, so a new family is one new module
(docs/architecture.md, "Backbones").

A **backbone** (``BackboneSpec``) is a named entry: family, config, input resolution,
preprocessing (after ``decode``), checkpoint URL and sub-tree selector. ``load_backbone(name)``
builds the family's model, fetches the checkpoint (``checkpoint=`` file, download cache, or
``init_random``), converts it and returns a ``Backbone`` whose ``apply(params, images)`` maps
preprocessed images ``[B, H, W, 3]`` to features ``[B, D]``.

A family without weights (``weights="none"``: ``pixels``, ``scatnet``) needs no checkpoint and
refuses one. ``pixels`` has ``resolution=None``: images keep the dataset's own size and
``feature_dim`` is None unless a ``resolution`` is passed (which prepends ``resize(resolution)``
to the preprocessing).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class Family:
    """A model family (module docstring).

    ``build(config, dtype)``: the Flax module. ``feature_dim(config, resolution)``: D from the
    config alone (None when it depends on the image size). ``convert(path, template)``: the
    checkpoint file at ``path`` as a flat ``{"a/b/c": array}`` dict named and shaped like the
    flat ``template`` (raise ``checkpoint.CheckpointMismatchError`` when it cannot be).
    ``weights``: the checkpoint format, for ``--list-models`` and the README ("none": weight-free).
    ``feature_groups(config)``: the number G of contiguous, equal feature groups of the output
    (e.g. a ScatterNet's channels, flattened channel-major), from the config alone; None (the
    default) when the family declares no groups. A public fact of the architecture: the store
    records it (split attribute ``feature_groups``) and ``private_head``'s ``standardize="auto"``
    reads it.
    """

    name: str
    build: Callable[[Mapping[str, Any], Any], Any]
    feature_dim: Callable[[Mapping[str, Any], int | None], int | None]
    convert: Callable[[str, Mapping[str, Any]], dict[str, np.ndarray]] | None
    weights: str
    module: str = ""
    feature_groups: Callable[[Mapping[str, Any]], int | None] | None = None


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry. ``config`` holds the family's architecture options."""

    name: str
    family: str
    config: dict = field(default_factory=dict)
    resolution: int | None = None
    preprocessing: str = ""
    url: str | None = None
    checkpoint_key: str | None = None  # sub-tree selector, e.g. "img" for a SigLIP image tower
    sha256: str | None = None
    size: int | None = None
    description: str = ""
    filename: str | None = None  # name in the download cache (default: the URL's basename)


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
    feature_groups: int | None = None  # Family.feature_groups of the spec's config


_FAMILIES: dict[str, Family] = {}
_SPECS: dict[str, BackboneSpec] = {}
_LOADED = False


def register_family(family: Family) -> Family:
    """Add a model family (a name can be taken once)."""
    if family.name in _FAMILIES and _FAMILIES[family.name] != family:
        raise ValueError(f"model family {family.name!r} is registered twice")
    _FAMILIES[family.name] = family
    return family


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add a named backbone of a registered family (a name can be taken once)."""
    if spec.family not in _FAMILIES:
        raise ValueError(f"backbone {spec.name!r}: unknown model family {spec.family!r}")
    if spec.name in _SPECS and _SPECS[spec.name] != spec:
        raise ValueError(f"backbone {spec.name!r} is registered twice")
    _SPECS[spec.name] = spec
    return spec


def _load_families() -> None:
    """Import every module of ``feature_extract.families`` (each registers itself)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from feature_extract import families

    for info in pkgutil.iter_modules(families.__path__):
        importlib.import_module(f"{families.__name__}.{info.name}")


def families() -> dict[str, Family]:
    """Every registered family, by name."""
    _load_families()
    return dict(_FAMILIES)


def family_of(spec: BackboneSpec) -> Family:
    _load_families()
    return _FAMILIES[spec.family]


def list_backbones() -> list[str]:
    """Names of all registered backbones."""
    _load_families()
    return sorted(_SPECS)


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name`` (a ValueError naming the closest known names otherwise, or
    when none is close all of them, those of its ``namespace:`` if it has a known one)."""
    _load_families()
    if name in _SPECS:
        return _SPECS[name]
    known = list_backbones()
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    if close:
        raise ValueError(
            f"unknown backbone {name!r}; did you mean {', '.join(close)}? "
            "(--list-models lists every backbone)"
        )
    namespace, colon, _ = name.partition(":")
    known = [k for k in known if colon and k.startswith(namespace + colon)] or known
    raise ValueError(f"unknown backbone {name!r}; known: {', '.join(known)}")


def spec_feature_dim(spec: BackboneSpec, resolution: int | None = None) -> int | None:
    """The feature size D of a registry entry from its config alone (no model is built)."""
    res = spec.resolution if resolution is None else resolution
    return family_of(spec).feature_dim(spec.config, res)


def spec_feature_groups(spec: BackboneSpec) -> int | None:
    """The declared feature groups G of a registry entry (``Family.feature_groups``), or None."""
    family = family_of(spec)
    if family.feature_groups is None:
        return None
    groups = family.feature_groups(spec.config)
    return None if groups is None else int(groups)


def describe_backbones() -> list[dict[str, Any]]:
    """One row per registered backbone: name, family, feature dim, input size, preprocessing,
    checkpoint format and URL, description."""
    rows = []
    for spec in (get_spec(n) for n in list_backbones()):
        family = family_of(spec)
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "dim": spec_feature_dim(spec),
                "resolution": spec.resolution,
                "preprocessing": spec.preprocessing,
                "weights": family.weights,
                "checkpoint": spec.url,
                "description": spec.description,
            }
        )
    return rows


def with_resolution(preprocessing: str, old: int | None, new: int) -> str:
    """The preprocessing string for input size ``new`` instead of ``old``: ``resize(old)`` and
    ``central_crop(old)`` become ``(new)``; ``resize_small(s)`` becomes ``round(s * new / old)``
    (the crop keeps its share of the resized image)."""
    if old is None:
        return f"resize({new})|{preprocessing}" if preprocessing else f"resize({new})"
    out = re.sub(rf"\b(resize|central_crop)\({old}\)", rf"\g<1>({new})", preprocessing)
    return re.sub(
        r"\bresize_small\((\d+)\)",
        lambda m: f"resize_small({round(int(m.group(1)) * new / old)})",
        out,
    )


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
        spec.url,
        cache_dir=cache_dir,
        sha256=spec.sha256,
        size=spec.size,
        download=download,
        filename=spec.filename,
    )
    return (f"{path}:{spec.checkpoint_key}" if spec.checkpoint_key else path), digest


def load_params(family: Family, path: str, template: Any) -> Any:
    """The family's conversion of checkpoint ``path``, checked against ``template`` (any missing,
    unexpected or mis-shaped parameter is a ``CheckpointMismatchError`` listing them all)."""
    from flax.traverse_util import flatten_dict, unflatten_dict

    from feature_extract import checkpoint as ckpt

    flat_template = flatten_dict(dict(template), sep="/")
    flat = family.convert(path, flat_template)
    report = ckpt.mismatch_report(path, flat, flat_template, family.name)
    if report:
        raise ckpt.CheckpointMismatchError(report)
    return unflatten_dict({k: np.asarray(v, np.float32) for k, v in flat.items()}, sep="/")


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

    Weights come from ``checkpoint`` (a local file of the family's format, for ``.npz``
    optionally ``file.npz:key``), else from the registry URL through the download cache, else
    (``init_random=True``) from a random initialisation (:func:`random_params`) with seed
    ``rng_seed``. A weight-free family needs none of these and refuses a checkpoint.
    ``resolution`` overrides the input size (a ViT's position embedding is resampled).
    ``spec_overrides`` replaces spec fields; its ``config`` entry is merged into the architecture
    config. Parameters stay float32; compute runs in ``dtype``.
    """
    spec = get_spec(name)
    if spec_overrides:
        overrides = dict(spec_overrides)
        config = {**spec.config, **overrides.pop("config", {})}
        spec = dataclasses.replace(spec, config=config, **overrides)
    family = family_of(spec)
    if checkpoint is not None and family.weights == "none":
        raise ValueError(
            f"backbone {name!r} has no weights (family {family.name!r} is weight-free), so it "
            "takes no checkpoint: drop --checkpoint (checkpoint=)"
        )
    res = spec.resolution if resolution is None else resolution
    preprocessing = spec.preprocessing
    if res != spec.resolution:
        preprocessing = with_resolution(preprocessing, spec.resolution, res)

    model = family.build(spec.config, dtype)

    def apply(params: Any, images: jax.Array) -> jax.Array:
        return model.apply({"params": params}, images)

    groups = spec_feature_groups(spec)
    if res is None:  # the features' size follows the images' (weight-free families only)
        return Backbone(name, None, preprocessing, None, None, {}, apply, None, spec, groups)
    images = jax.ShapeDtypeStruct((1, res, res, 3), dtype)
    template = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), images)
    template = template.get("params", {})
    path = digest = None
    if not jax.tree_util.tree_leaves(template):
        if checkpoint is not None:
            raise ValueError(f"backbone {name!r} has no weights; do not pass a checkpoint")
        params = {}
    elif init_random and checkpoint is None:
        params = random_params(template, rng_seed)
    else:
        path, digest = _resolve_checkpoint(spec, checkpoint, cache_dir, download)
        params = load_params(family, path, template)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    out = jax.eval_shape(apply, params, images)
    dim = int(out.shape[-1])
    if groups is not None and (groups < 1 or dim % groups):
        raise ValueError(f"backbone {name!r} declares {groups} groups of its {dim} features")
    return Backbone(name, res, preprocessing, path, digest, params, apply, dim, spec, groups)
