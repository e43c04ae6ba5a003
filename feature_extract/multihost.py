"""Several JAX processes (hosts): start ``jax.distributed``, split rows, assemble shard stores.

Starting. ``initialize(coordinator, num_processes, process_id)`` takes each value from its argument,
else from the environment variables launchers set (``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``); ``auto=True`` leaves whatever is still unset to JAX's
cluster detection (SLURM, Open MPI, Kubernetes, Cloud TPU pod slices). With nothing given it
does nothing: one process. On CPU the cross-process collectives use gloo.

Rows. Process i of P owns the contiguous rows ``[floor(i N / P), floor((i+1) N / P))`` of a split
of N rows (``process_rows``): shares differ by at most one row and cover every row once.

Extraction. Each process extracts its share of every split into its own shard file
``OUT.shard-0000i-of-0000P.h5`` (an ordinary store, resumable like any other, with ``row_start``
and ``row_stop`` telling which rows it holds). After a barrier, process 0 writes ``OUT``: per
split, HDF5 virtual datasets (``h5py.VirtualLayout``) that concatenate the shards' ``features``,
``labels`` and ``ids`` in row order, with the attributes a one-process run writes, plus each
shard's ``writer_token`` (``source_files``, ``source_tokens``): the reader refuses a shard rewritten
since. Process 0 holds ``OUT``'s writer lock while it assembles. The normal reader
(``feature_extract.store``) reads it, checksums included (the filters apply in the shard files).
The shard files must stay next to ``OUT`` (the virtual sources are relative paths).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from feature_extract import store

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
_DATASETS = ("features", "labels", "ids")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--coordinator``, ``--num-processes``, ``--process-id``, ``--distributed`` (auto)."""
    group = parser.add_argument_group(
        "several processes (jax.distributed)",
        f"unset values come from ${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES}, ${ENV_PROCESS_ID}",
    )
    group.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help=f"address of process 0's coordinator service (default: ${ENV_COORDINATOR})",
    )
    group.add_argument(
        "--num-processes",
        type=int,
        help=f"number of processes (hosts) (default: ${ENV_NUM_PROCESSES}, else one process)",
    )
    group.add_argument(
        "--process-id", type=int, help=f"this process's index, 0..N-1 (default: ${ENV_PROCESS_ID})"
    )
    group.add_argument(
        "--distributed",
        action="store_true",
        help="start jax.distributed, detecting what is unset from the cluster "
        "(SLURM, Open MPI, Kubernetes, TPU pod slice) (default: off)",
    )


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text in (None, ""):
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {text!r}") from None


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> bool:
    """Start ``jax.distributed`` when asked (see the module docstring); True if started.

    Must run before any other JAX call. Raises ValueError for an incomplete or inconsistent set.
    """
    import jax

    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    given = (coordinator, num_processes, process_id)
    if not auto and all(v is None for v in given):
        return False
    if not auto and None in given:
        raise ValueError(
            "several processes need all of --coordinator HOST:PORT, "
            "--num-processes and --process-id (or $JAX_COORDINATOR_ADDRESS, "
            "$JAX_NUM_PROCESSES, $JAX_PROCESS_ID), or --distributed to detect them "
            "from the cluster"
        )
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num-processes must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id must lie in [0, {num_processes}), got {process_id}")
    if num_processes == 1 and not auto:
        return False
    if "cpu" in (os.environ.get("JAX_PLATFORMS") or "").split(","):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return True


def initialize_from_args(args: argparse.Namespace) -> bool:
    """``initialize`` with the values of ``add_arguments``'s flags."""
    return initialize(args.coordinator, args.num_processes, args.process_id, auto=args.distributed)


def process_rows(num_rows: int, process_index: int, process_count: int) -> tuple[int, int]:
    """``[floor(i N / P), floor((i + 1) N / P))``: process i's contiguous share of N rows."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process index {process_index} outside [0, {process_count})")
    return (
        num_rows * process_index // process_count,
        num_rows * (process_index + 1) // process_count,
    )


def shard_path(out: str | os.PathLike, index: int, count: int) -> str:
    """``OUT.shard-0000i-of-0000P.h5``: where process i of P writes its rows."""
    stem, ext = os.path.splitext(os.fspath(out))
    return f"{stem}.shard-{index:05d}-of-{count:05d}{ext or '.h5'}"


def assemble(
    out: str | os.PathLike, shards: Sequence[str | os.PathLike], splits: Sequence[str] | None = None
) -> dict[str, store.SplitInfo]:
    """Write ``out``: per split, virtual datasets concatenating the complete shards in order.

    Every shard must hold every split, complete, with the same identity attributes, and the
    shards' ``row_start``/``row_stop`` must tile ``[0, N)`` in order. The file is written to a
    temporary name and renamed, so ``out`` is either absent or whole; ``out``'s writer lock is
    held meanwhile (``StoreLockedError`` if another process writes it).
    """
    out = os.fspath(out)
    shards = [os.fspath(s) for s in shards]
    if not shards:
        raise ValueError("no shard files to assemble")
    with store.lock_store(out):
        names = list(splits) if splits is not None else store.split_names(shards[0])
        infos = {name: [store.split_info(s, name) for s in shards] for name in names}
        tmp = f"{out}.tmp-{os.getpid()}"
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs["format_version"] = store.FORMAT_VERSION
                for name, parts in infos.items():
                    _virtual_split(f, out, name, parts)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return {name: store.split_info(out, name) for name in names}


def _virtual_split(f: h5py.File, out: str, name: str, parts: Sequence[store.SplitInfo]) -> None:
    first = parts[0].attrs
    keys = (*store.IDENTITY_ATTRS, "compute_dtype", "source_split")
    expected = 0
    for part in parts:
        diffs = [k for k in keys if part.attrs.get(k) != first.get(k)]
        if diffs or part.dim != parts[0].dim:
            raise store.StoreError(
                f"shard {part.path} differs from {parts[0].path} in split "
                f"{name!r} ({', '.join(diffs) or 'dim'}); extract it again"
            )
        start = int(part.attrs.get("row_start", expected))
        if (
            start != expected
            or int(part.attrs.get("row_stop", start + part.num_rows)) != start + part.num_rows
        ):
            raise store.StoreError(
                f"shard {part.path} holds rows from {start} of split {name!r}"
                f", expected {expected}: the shards do not tile the split"
            )
        expected += part.num_rows
    group = f.create_group(name)
    folder = os.path.dirname(os.path.abspath(out))
    files = [os.path.relpath(os.path.abspath(part.path), folder) for part in parts]
    tokens = [
        str((store.stored_attrs(part.path, name) or {}).get("writer_token", "")) for part in parts
    ]
    for dataset in _DATASETS:
        with h5py.File(parts[0].path, "r") as src:
            dtype, tail = src[name][dataset].dtype, src[name][dataset].shape[1:]
        layout = h5py.VirtualLayout(shape=(expected, *tail), dtype=dtype)
        offset = 0
        for part, rel in zip(parts, files, strict=True):
            layout[offset : offset + part.num_rows] = h5py.VirtualSource(
                rel, f"{name}/{dataset}", shape=(part.num_rows, *tail)
            )
            offset += part.num_rows
        group.create_virtual_dataset(dataset, layout)
    attrs: dict[str, Any] = {k: v for k, v in first.items()}
    attrs.update(source_files=files, source_tokens=tokens)
    row_stop = int(parts[-1].attrs.get("row_stop", expected))
    attrs.update(
        row_start=int(first.get("row_start", 0)),
        row_stop=row_stop,
        total_rows=expected,
        rows_written=expected,
        complete=True,
    )
    _set_attrs(group, attrs)


def _set_attrs(group: h5py.Group, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        if key in ("class_names", "source_files", "source_tokens") or isinstance(value, list):
            group.attrs[key] = np.array([str(c) for c in value or ()], dtype=h5py.string_dtype())
        else:
            group.attrs[key] = value


def extract_sharded(
    dataset: str,
    model: Any,
    out: str | os.PathLike,
    splits: Any = ("train", "test"),
    *,
    data_dir: str | None = None,
    download: bool = True,
    **options: Any,
) -> dict[str, store.SplitInfo]:
    """``extraction.extract`` run by every process on its share; process 0 assembles ``out``.

    Process i of P extracts ``process_rows(N, i, P)`` of each split into ``shard_path(out, i,
    P)`` (resuming it like a one-process store); after a barrier over all processes, process 0
    writes ``out`` with ``assemble``, and a second barrier lets every process read it. Returns the
    infos of ``out``. ``options`` are ``extract``'s other keyword arguments.
    """
    import jax
    from jax.experimental import multihost_utils

    from feature_extract.arguments import parse_splits
    from feature_extract.datasets import open_source
    from feature_extract.extraction import extract

    index, count = jax.process_index(), jax.process_count()
    requests = parse_splits(splits)
    files = {k: options[k] for k in ("classes", "skip_unreadable", "workers") if k in options}
    ranges = {
        r.name: process_rows(
            len(open_source(dataset, r.spec, data_dir=data_dir, download=download, **files)),
            index,
            count,
        )
        for r in requests
    }
    for name, (start, stop) in ranges.items():
        if start == stop:
            raise ValueError(
                f"split {name!r} has fewer rows than the {count} processes, so process {index} "
                "would get none; run with fewer processes"
            )
    shard = shard_path(out, index, count)
    extract(
        dataset,
        model,
        shard,
        {r.name: r.spec for r in requests},
        data_dir=data_dir,
        download=download,
        row_range=ranges,
        **options,
    )
    multihost_utils.sync_global_devices(f"feature_extract shards of {os.fspath(out)}")
    if index == 0:
        assemble(out, [shard_path(out, i, count) for i in range(count)], [r.name for r in requests])
    multihost_utils.sync_global_devices(f"feature_extract assembled {os.fspath(out)}")
    return {r.name: store.split_info(out, r.name) for r in requests}
