"""The extraction loop: dataset split -> compiled data-parallel backbone -> resumable store.

``extract(dataset, model, out)`` runs every requested split. Underneath, ``plan_split`` describes
one split, or only its rows ``[start, stop)`` (``row_range``), and ``run_split`` extracts it into
a given file with an :class:`Extractor` (what a multi-host run gives each process).

Rows are written in source order, one batch per ``SplitWriter.append`` (which
commits the row count only after the rows are flushed), so a killed run resumes at
``writer.rows_written`` with no gap and no duplicate, and batch boundaries fall on the same rows as
in an uninterrupted run: the resumed file holds the same bytes.

Resume rules. A split that is partly written resumes when its identity matches (backbone,
checkpoint sha256, dataset and version, preprocessing, feature dtype, number of classes, plus
``compute_dtype``, ``source_split``, ``row_start``, ``row_stop``); anything else is refused. A
complete split with the same identity is skipped while other requested splits still need work;
when every requested split is complete, ``overwrite=True`` is needed to write them again.

Ctrl-C. Every wait of the loop (a decoded batch, a device batch, the compilation) is one that
Ctrl-C interrupts, and a store write is never cut short (``interrupts``): an interrupted run stops
at once, keeps every batch already committed and drops the ones in flight; the
KeyboardInterrupt propagates once the writer lock is released.

One writer. ``extract`` holds the store's writer lock (``store.lock_store``) from the moment it
reads what the store holds until the last split is written and read back, so a second run on the
same store (``--overwrite`` or not) fails at once with ``StoreLockedError`` naming the first;
``run_split`` holds it for its split.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import h5py
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from feature_extract import interrupts, pipeline, preprocess, store
from feature_extract.arguments import COMPUTE_DTYPE_NAMES, parse_splits
from feature_extract.arrays import ArrayDataset
from feature_extract.datasets import open_source
from feature_extract.registry import Backbone, load_backbone
from feature_extract.sources import DatasetError, Source

COMPUTE_DTYPES = {name: getattr(jnp, name) for name in COMPUTE_DTYPE_NAMES}
# Identity beyond store.IDENTITY_ATTRS: a resumed split must agree on these too.
RUN_ATTRS = ("compute_dtype", "source_split", "row_start", "row_stop")


def params_sha256(params: Any) -> str:
    """sha256 over the parameter leaves (path, dtype, shape, bytes): the identity of random init."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        leaf = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape}".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


class Extractor:
    """Preprocessing plus ``backbone.apply``, compiled once, data-parallel over ``devices``.

    ``preprocessing`` (default: the backbone's, always starting with ``decode``) is split by
    ``preprocess.split_for_device``: ``host_preprocess`` runs in the pipeline's threads and a
    trailing ``value_range`` runs on the accelerator. Images are sharded along the batch on a 1-D
    mesh axis ``"data"`` over ``devices`` (default: all local ones), parameters replicated; the
    batch size must be a multiple of the device count (``round_batch_size``). ``compile`` builds
    the program for one batch shape ahead of the first batch, in a wait that Ctrl-C interrupts.
    """

    def __init__(
        self,
        backbone: Backbone,
        preprocessing: str | None = None,
        *,
        output_dtype: str = "float32",
        devices: Sequence[jax.Device] | None = None,
    ):
        if output_dtype not in store.FEATURE_DTYPES:
            raise ValueError(
                f"output dtype must be one of {store.FEATURE_DTYPES}, got {output_dtype!r}"
            )
        self.backbone = backbone
        self.preprocessing = preprocess.with_decode(
            backbone.preprocessing if preprocessing is None else preprocessing
        )
        host_spec, device_op = preprocess.split_for_device(self.preprocessing)
        self.host_preprocess = preprocess.build(host_spec)
        self.mesh = Mesh(np.asarray(list(devices or jax.local_devices())), ("data",))
        self.num_devices = self.mesh.devices.size
        self._images = NamedSharding(self.mesh, PartitionSpec("data"))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self.params = jax.device_put(backbone.params, replicated)
        out = jnp.dtype(output_dtype)

        def features(params: Any, images: jax.Array) -> jax.Array:
            return backbone.apply(params, images if device_op is None else device_op(images))

        self._features = features
        self._forward = jax.jit(
            lambda p, x: features(p, x).astype(out),
            in_shardings=(replicated, self._images),
            out_shardings=self._images,
        )
        self._compiled: dict[tuple[tuple[int, ...], np.dtype], Any] = {}

    def round_batch_size(self, batch_size: int) -> int:
        """The smallest multiple of the device count that is >= ``batch_size``."""
        pipeline.check_batch_size(batch_size)
        return math.ceil(batch_size / self.num_devices) * self.num_devices

    def put(self, images: np.ndarray) -> jax.Array:
        """Host images ``[B, ...]`` (after ``host_preprocess``) -> device, sharded on the batch."""
        return jax.device_put(images, self._images)

    def compile(self, batch_shape: tuple[int, ...], dtype: Any) -> None:
        """Compile the program for host batches ``batch_shape`` of ``dtype`` (after
        ``host_preprocess``) on a background thread, waiting in a way Ctrl-C interrupts (an XLA
        compilation blocks in C++, seconds for a big backbone; docs/architecture.md, "The
        feature store")."""
        key = (tuple(batch_shape), np.dtype(dtype))
        if key not in self._compiled:
            images = jax.ShapeDtypeStruct(key[0], key[1], sharding=self._images)
            self._compiled[key] = interrupts.run_in_background(
                lambda: self._forward.lower(self.params, images).compile()
            )

    def apply(self, images: jax.Array) -> jax.Array:
        """Features ``[B, D]`` of device images (dispatched asynchronously)."""
        forward = self._compiled.get((tuple(images.shape), np.dtype(images.dtype)), self._forward)
        return forward(self.params, images)

    def __call__(self, images: np.ndarray) -> jax.Array:
        """Features ``[B, D]`` of a host batch (dispatched asynchronously)."""
        return self.apply(self.put(images))

    def feature_dim(self, image_shape: tuple[int, ...], dtype: Any) -> int:
        """The feature size for host images of ``image_shape`` (no compilation)."""
        images = jax.ShapeDtypeStruct((self.num_devices, *image_shape), dtype)
        return int(jax.eval_shape(self._features, self.backbone.params, images).shape[-1])


def identity_attrs(
    source: Source,
    backbone: Backbone,
    preprocessing: str,
    *,
    output_dtype: str,
    compute_dtype: str,
    row_start: int,
    row_stop: int,
) -> dict[str, Any]:
    """The store attributes of a split extracted from ``source`` with ``backbone``."""
    sha = backbone.checkpoint_sha256 or ""
    checkpoint = backbone.checkpoint or ""
    if not sha and jax.tree_util.tree_leaves(backbone.params):
        sha, checkpoint = params_sha256(backbone.params), "random-init"
    extra = {  # lists of names (skipped files) as HDF5 string arrays
        k: np.array(v, dtype=h5py.string_dtype()) if isinstance(v, list) else v
        for k, v in source.attrs().items()
    }
    if backbone.feature_groups is not None:  # public: the layout of the backbone's output
        extra["feature_groups"] = int(backbone.feature_groups)
    return {
        **extra,
        "backbone": backbone.name,
        "checkpoint": checkpoint,
        "checkpoint_sha256": sha,
        "dataset": source.name,
        "dataset_version": source.version,
        "preprocessing": preprocessing,
        "feature_dtype": output_dtype,
        "num_classes": int(source.num_classes),
        "compute_dtype": compute_dtype,
        "source_split": source.split,
        "row_start": int(row_start),
        "row_stop": int(row_stop),
    }


def _stored_state(path: str, name: str) -> tuple[str, dict[str, Any]] | None:
    """``("complete" | "partial", attrs)`` of group ``name`` in ``path``, or None if absent.

    A file that is not a readable store raises ``CorruptStoreError`` (``--overwrite`` replaces it).
    """
    attrs = store.stored_attrs(path, name)
    if attrs is None:
        return None
    return ("complete" if attrs.get("complete") else "partial"), attrs


def _check_identity(
    path: str, name: str, stored: Mapping[str, Any], wanted: Mapping[str, Any]
) -> None:
    keys = (*store.IDENTITY_ATTRS, *RUN_ATTRS, "total_rows")
    diffs = [
        f"{k}: store has {stored.get(k)!r}, this run has {wanted[k]!r}"
        for k in keys
        if k in wanted and stored.get(k) != wanted[k]
    ]
    if diffs:
        raise store.StoreError(
            f"split {name!r} of {path} was written by a different run ("
            + "; ".join(diffs)
            + "). Use another output path, or "
            "overwrite=True (--overwrite) to replace it."
        )


@dataclass
class SplitJob:
    """One split to extract: its source, row range, store group and attributes."""

    source: Source
    name: str
    start: int
    stop: int
    attrs: dict[str, Any]


def plan_split(
    source: Source,
    name: str,
    backbone: Backbone,
    preprocessing: str,
    *,
    output_dtype: str,
    compute_dtype: str,
    row_range: tuple[int, int] | None = None,
) -> SplitJob:
    """The rows ``row_range`` (default: all) of ``source`` to store as group ``name``."""
    start, stop = (0, len(source)) if row_range is None else map(int, row_range)
    if not 0 <= start <= stop <= len(source):
        raise ValueError(
            f"row range [{start}, {stop}) is not inside the {len(source)} rows of "
            f"{source.name}:{source.split}"
        )
    if start == stop:
        raise ValueError(
            f"split {name!r} ({source.name}:{source.split}, rows [{start}, {stop})) has no rows; "
            "a stored split needs at least one"
        )
    attrs = identity_attrs(
        source,
        backbone,
        preprocessing,
        output_dtype=output_dtype,
        compute_dtype=compute_dtype,
        row_start=start,
        row_stop=stop,
    )
    return SplitJob(source, name, start, stop, {**attrs, "total_rows": stop - start})


def run_split(
    job: SplitJob,
    extractor: Extractor,
    out: str,
    *,
    batch_size: int,
    overwrite: bool = False,
    workers: int | None = None,
    prefetch: int | None = None,
    progress: bool = True,
) -> store.SplitInfo:
    """Extract ``job`` into group ``job.name`` of ``out``, resuming a partial split; holds the
    store's writer lock throughout."""
    with store.lock_store(out):
        return _run_split(
            job,
            extractor,
            out,
            batch_size=batch_size,
            overwrite=overwrite,
            workers=workers,
            prefetch=prefetch,
            progress=progress,
        )


def _run_split(
    job: SplitJob,
    extractor: Extractor,
    out: str,
    *,
    batch_size: int,
    overwrite: bool,
    workers: int | None,
    prefetch: int | None,
    progress: bool,
) -> store.SplitInfo:
    state = None if overwrite else _stored_state(out, job.name)
    if state is not None:
        _check_identity(out, job.name, state[1], job.attrs)
    if job.attrs["preprocessing"] != extractor.preprocessing:
        raise ValueError(
            f"split planned with preprocessing {job.attrs['preprocessing']!r} but "
            f"the extractor runs {extractor.preprocessing!r}"
        )
    preprocess_fn = extractor.host_preprocess
    batch_size = extractor.round_batch_size(batch_size)
    dim, image_shape, image_dtype = _probe(job, extractor, preprocess_fn)
    attrs = {k: v for k, v in job.attrs.items() if k != "total_rows"}
    writer = store.SplitWriter(
        out,
        job.name,
        dim=dim,
        total_rows=job.stop - job.start,
        num_classes=job.source.num_classes,
        class_names=job.source.class_names,
        feature_dtype=job.attrs["feature_dtype"],
        attrs=attrs,
        overwrite=overwrite,
    )
    with writer:
        first = job.start + writer.rows_written
        bar = tqdm(
            total=job.stop - job.start,
            initial=writer.rows_written,
            unit="img",
            unit_scale=True,
            desc=f"{job.source.name}:{job.name}",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        loader = pipeline.batches(
            job.source,
            preprocess_fn,
            batch_size,
            first,
            job.stop,
            workers=workers,
            prefetch=prefetch,
        )
        with bar, closing(loader):  # stopped early (Ctrl-C): the loader drops its queued work now
            if first < job.stop:
                extractor.compile((batch_size, *image_shape), image_dtype)
            pending = None  # a batch dispatched to the device, written once the next is dispatched
            for batch in loader:
                if batch.images.shape[1:] != image_shape:
                    raise ValueError(
                        f"rows from {batch.start} of {job.source.name}:{job.name} have "
                        f"shape {batch.images.shape[1:]} after preprocessing, earlier "
                        f"rows {image_shape}; add resize(...) to the preprocessing"
                    )
                features = extractor(batch.images)  # dispatched; written after the next one
                if pending is not None:
                    _write(writer, *pending, bar)
                pending = (batch, features)
            if pending is not None:
                _write(writer, *pending, bar)
        writer.finish()
    return store.split_info(out, job.name)


def _probe(
    job: SplitJob, extractor: Extractor, preprocess_fn
) -> tuple[int, tuple[int, ...], np.dtype]:
    """(feature dim, preprocessed image shape and dtype), from one preprocessed example."""
    if len(job.source) == 0:
        raise DatasetError(f"split {job.source.split!r} of {job.source.name} has no examples")
    row = job.start if job.start < len(job.source) else 0
    images, _, _ = job.source.get([row])
    image = np.asarray(preprocess_fn(images[0]))
    return extractor.feature_dim(image.shape, image.dtype), image.shape, image.dtype


def _write(writer: store.SplitWriter, batch: pipeline.Batch, features: jax.Array, bar) -> None:
    """Wait for the batch's features (Ctrl-C drops it: ``interrupts.wait_ready``), append them."""
    interrupts.wait_ready(features)
    mask = batch.mask
    writer.append(np.asarray(features)[mask], batch.labels[mask], batch.ids[mask])
    bar.update(int(mask.sum()))


def extract(
    dataset: str | ArrayDataset,
    model: str | Backbone,
    out: str | os.PathLike,
    splits: str | Sequence[str] | Mapping[str, str] = ("train", "test"),
    batch_size: int = 256,
    dtype: str = "bfloat16",
    output_dtype: str = "float32",
    checkpoint: str | None = None,
    overwrite: bool = False,
    data_dir: str | None = None,
    row_range: tuple[int, int] | Mapping[str, tuple[int, int]] | None = None,
    *,
    cache_dir: str | None = None,
    download: bool = True,
    init_random: bool = False,
    seed: int = 0,
    resolution: int | None = None,
    preprocessing: str | None = None,
    workers: int | None = None,
    prefetch: int | None = None,
    progress: bool = True,
    skip_complete: bool = False,
    classes: str | None = None,
    skip_unreadable: bool = False,
) -> dict[str, store.SplitInfo]:
    """Cache the features of ``model`` on ``dataset`` in the store ``out``; returns split infos.

    ``dataset`` is a bundled name (``mnist5k``, ``digits``), ``folder:DIR``, ``list:FILE.csv``
    (``classes``: a class file, required for a list; ``skip_unreadable``: skip and list the
    files that do not decode, see ``image_sources``), a TFDS name, or images in memory
    (``arrays.image_arrays``).

    ``model`` is a registered backbone name (weights from ``checkpoint``, the download cache, or a
    random initialisation with ``init_random``) or a ready :class:`Backbone`. ``dtype`` is the
    compute dtype, ``output_dtype`` the stored one (float32 or float16). ``preprocessing``
    overrides the backbone's default (``decode`` is always run first). ``row_range=(start,
    stop)`` extracts only those rows of each split (a mapping gives them per split name). See
    the module docstring for resume rules; ``skip_complete=True`` returns quietly when every
    split is already complete (same identity).
    """
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(COMPUTE_DTYPES)}, got {dtype!r}")
    pipeline.check_batch_size(batch_size)  # before any store is read: name a bad argument first
    out = os.fspath(out)
    requests = parse_splits(splits)
    backbone = (
        model
        if isinstance(model, Backbone)
        else load_backbone(
            model,
            checkpoint,
            cache_dir=cache_dir,
            download=download,
            dtype=COMPUTE_DTYPES[dtype],
            init_random=init_random,
            rng_seed=seed,
            resolution=resolution,
        )
    )
    spec = preprocess.with_decode(
        backbone.preprocessing if preprocessing is None else preprocessing
    )  # raises on a bad spec before any data
    jobs = [
        plan_split(
            open_source(
                dataset,
                r.spec,
                data_dir=data_dir,
                download=download,
                classes=classes,
                skip_unreadable=skip_unreadable,
                workers=workers,
                progress=progress,
            ),
            r.name,
            backbone,
            spec,
            output_dtype=output_dtype,
            compute_dtype=dtype,
            row_range=row_range.get(r.name) if isinstance(row_range, Mapping) else row_range,
        )
        for r in requests
    ]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with store.lock_store(out):
        return _extract_jobs(
            jobs,
            backbone,
            spec,
            out,
            batch_size=batch_size,
            output_dtype=output_dtype,
            overwrite=overwrite,
            workers=workers,
            prefetch=prefetch,
            progress=progress,
            skip_complete=skip_complete,
        )


def _extract_jobs(
    jobs: Sequence[SplitJob],
    backbone: Backbone,
    spec: str,
    out: str,
    *,
    batch_size: int,
    output_dtype: str,
    overwrite: bool,
    workers: int | None,
    prefetch: int | None,
    progress: bool,
    skip_complete: bool,
) -> dict[str, store.SplitInfo]:
    """``extract``'s work once the store's writer lock is held."""
    states = {} if overwrite else {j.name: _stored_state(out, j.name) for j in jobs}
    for job in jobs:
        if states.get(job.name) is not None:
            _check_identity(out, job.name, states[job.name][1], job.attrs)
    todo = [j for j in jobs if states.get(j.name) is None or states[j.name][0] != "complete"]
    if not todo and not skip_complete:
        raise store.StoreError(
            f"every requested split ({', '.join(j.name for j in jobs)}) of "
            f"{out} is already complete; pass overwrite=True (--overwrite) "
            "to extract again."
        )
    extractor = Extractor(backbone, spec, output_dtype=output_dtype)
    todo_names, infos = {j.name for j in todo}, {}
    for job in jobs:
        if job.name in todo_names:
            infos[job.name] = run_split(
                job,
                extractor,
                out,
                batch_size=batch_size,
                overwrite=overwrite,
                workers=workers,
                prefetch=prefetch,
                progress=progress,
            )
        else:
            infos[job.name] = store.split_info(out, job.name)
    return infos
