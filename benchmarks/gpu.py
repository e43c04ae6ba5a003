"""GPU figures: every speed claim of the project measured in one short run on one device.

    python -m benchmarks.gpu [--out-dir DIR] [--deadline-s 420] [--sections head,fit,...]
    python -m benchmarks.gpu --tiny      # the same code on small shapes (CPU, seconds)

Sections run in this order, each independent: a failing unit records its error and the run goes
on, and a unit that would end past ``--deadline-s`` (by the plan's rough estimate of it) is not
started and recorded as skipped. The head, fit and store targets come first, so that one run of
about 8 minutes (``--sections targets``) measures them and a second (``--sections extraction``)
the backbones:

    matmul        float32 and bfloat16 matmul rates (one large jnp.dot each) and the device copy
                  bandwidth: the ceilings
    head          one full-batch step of the linear head at the CIFAR (50,000 x 768, K = 10) and
                  ImageNet-1k (1,281,167 x 1280, K = 1000) shapes, float32 and bfloat16: the
                  non-private step by autodiff and written by hand (the fair reference), the
                  private fused clipped-sum step, and the zero-init single step (segment_sum,
                  and a one-hot matmul in the rows' dtype); the roofline of a general step is
                  the larger of its two GEMMs (4NDK flops at the measured rate of the dtype)
                  and reading X twice at the measured bandwidth, the floor of the zero-init
                  step reading X once
    fit           private_head.fit(method="single_step") end to end at the ImageNet shape from a
                  host float16 array and from a float16 store, against the kernel time plus the
                  host-to-device copy of X (array) or plus a raw h5py read of the file (store)
    fit_dp_gd     fit(method="dp_gd", steps=10, optimizer="sgd", learning_rate=1.0), same data,
                  store and references as ``fit``
    opacus        one Opacus full-batch DP step of the same linear head (hooks, in chunks whose
                  per-example gradients take about 2.6 GB; ghost clipping) and torch's
                  non-private step
    extract       ViT-B/16 at 224 px, bfloat16, model only at batch 256, images/s
    timm          timm's ViT-B/16, eager and torch.compile, bf16 autocast, channels-last
    extract_more  ViT-B/16 model only at batch 512, and end to end from synthetic uint8 images
                  (threaded host resize, transfer, forward, store writes)
    extract_timm  the timm families (DINOv2 B/14, CLIP B/16, SigLIP B/16, random weights) in
                  our Flax ViT beside timm's own model of the same architecture on the same
                  device and batch, model only, bf16 (timm: eager, bf16 autocast); the timm rows
                  are skipped when torch or timm is not installed

Device times are medians of a few repeats after a warm-up call (compilation excluded), each call
ended by ``block_until_ready`` (``torch.cuda.synchronize`` for torch); data is generated on the
device, so no host transfer is timed unless the row says so. ``results.json`` and ``table.md``
(device, versions, shapes, targets with pass/fail) are written into ``--out-dir`` after every
section, so a run stopped from outside keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SECTIONS = (
    "matmul",
    "head",
    "fit",
    "fit_dp_gd",
    "opacus",
    "extract",
    "timm",
    "extract_more",
    "extract_timm",
)
GROUPS = {  # one run of about 8 minutes each
    "targets": ("matmul", "head", "fit", "fit_dp_gd", "opacus"),
    "extraction": ("extract", "timm", "extract_more", "extract_timm"),
}
CLIP, SIGMA = 1.0, 1.0  # as benchmarks.head_speed's step functions
VERSION_PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "numpy",
    "scipy",
    "h5py",
    "dp-accounting",
    "torch",
    "timm",
    "opacus",
)


@dataclass(frozen=True)
class Plan:
    """The shapes and repeat counts of one run (``FULL`` on an accelerator, ``TINY`` for tests)."""

    name: str
    matmul_n: int
    copy_bytes: int
    head_shapes: dict[str, tuple[int, int, int]]
    dtypes: tuple[str, ...]
    repeats: int
    fit_shape: tuple[int, int, int]
    fit_runs: dict[str, dict[str, int]]  # method -> source -> calls (the first one compiles)
    dp_gd_steps: int
    store_chunk_rows: int
    vit_model: str
    vit_batches: tuple[int, ...]
    vit_steps: int
    e2e_rows: int
    e2e_image_size: int
    timm_model: str
    timm_kwargs: dict[str, Any]
    timm_batch: int
    # extract_timm: (registry name, timm model, input size); timm_sizes shrinks both models
    timm_families: tuple[tuple[str, str, int], ...]
    timm_sizes: dict[str, int]
    opacus_shape: tuple[int, int, int]
    opacus_hooks_chunk: int
    opacus_hooks_rows: int
    opacus_ghost_chunk: int
    # rough seconds of the heavy units on an H200, for the deadline guard
    estimates: dict[str, float] = field(default_factory=dict)


IMAGENET = (1_281_167, 1280, 1000)
FULL = Plan(
    name="full",
    matmul_n=8192,
    copy_bytes=4 << 30,
    head_shapes={"cifar": (50_000, 768, 10), "imagenet": IMAGENET},
    dtypes=("float32", "bfloat16"),
    repeats=10,
    fit_shape=IMAGENET,
    fit_runs={"single_step": {"array": 2, "store": 1}, "dp_gd": {"array": 1, "store": 1}},
    dp_gd_steps=10,
    store_chunk_rows=65536,
    vit_model="vit-b16-i21k",
    vit_batches=(256, 512),
    vit_steps=10,
    e2e_rows=16384,
    e2e_image_size=256,
    timm_model="vit_base_patch16_224",
    timm_kwargs={},
    timm_batch=256,
    timm_families=(
        ("timm:vit_base_patch14_dinov2.lvd142m", "vit_base_patch14_dinov2", 224),
        ("timm:vit_base_patch16_clip_224.openai", "vit_base_patch16_clip_quickgelu_224", 224),
        ("timm:vit_base_patch16_siglip_224.webli", "vit_base_patch16_siglip_224", 224),
    ),
    timm_sizes={},
    opacus_shape=IMAGENET,
    opacus_hooks_chunk=512,  # 512 x 1280 x 1000 float32 per-example gradients: 2.6 GB
    opacus_hooks_rows=16 * 512,
    opacus_ghost_chunk=131072,
    estimates={
        "head": 30.0,
        "fit": 45.0,
        "store": 30.0,
        "read": 10.0,
        "vit": 40.0,
        "e2e": 40.0,
        "compile": 120.0,
    },
)
TINY = Plan(
    name="tiny",
    matmul_n=256,
    copy_bytes=1 << 22,
    head_shapes={"cifar": (1024, 32, 10), "imagenet": (2048, 64, 200)},
    dtypes=("float32", "bfloat16"),
    repeats=2,
    fit_shape=(2048, 64, 200),
    fit_runs={"single_step": {"array": 2, "store": 1}, "dp_gd": {"array": 1, "store": 1}},
    dp_gd_steps=10,
    store_chunk_rows=512,
    vit_model="vit-mu16",
    vit_batches=(4, 8),
    vit_steps=2,
    e2e_rows=16,
    e2e_image_size=40,
    timm_model="vit_tiny_patch16_224",
    timm_kwargs={"img_size": 32},
    timm_batch=4,
    timm_families=(
        ("timm:vit_base_patch14_dinov2.lvd142m", "vit_base_patch14_dinov2", 28),
        ("timm:vit_base_patch16_clip_224.openai", "vit_base_patch16_clip_quickgelu_224", 32),
        ("timm:vit_base_patch16_siglip_224.webli", "vit_base_patch16_siglip_224", 32),
    ),
    timm_sizes={"width": 16, "depth": 1, "num_heads": 2, "mlp_dim": 64},
    opacus_shape=(2048, 64, 200),
    opacus_hooks_chunk=256,
    opacus_hooks_rows=512,
    opacus_ghost_chunk=1024,
)


class Runner:
    """Wall clock, progress log and deadline guard of one run."""

    def __init__(self, deadline_s: float, plan: Plan, tmp_dir: str | None = None):
        self.start = time.perf_counter()
        self.deadline_s = deadline_s
        self.plan = plan
        self.tmp_dir = tmp_dir
        self.state: dict[str, Any] = {}  # what later sections reuse (host data, store, model)
        self._scratch: str | None = None

    def scratch(self) -> str:
        """A temporary folder for this run (``close`` removes it)."""
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="bench-gpu-", dir=self.tmp_dir)
        return self._scratch

    def close(self) -> None:
        """Drop the shared state and remove the temporary folder."""
        self.state.clear()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def log(self, message: str) -> None:
        print(f"[{self.elapsed():7.1f}s] {message}", flush=True)

    def unit(
        self, what: str, fn: Callable[[], dict[str, Any]], estimate: str = "", table: str = ""
    ) -> dict[str, Any]:
        """``{"what", "table", "status", "seconds", **fn()}``; never raises.

        Skipped (not started) when the elapsed time plus the plan's estimate for ``estimate``
        would pass the deadline; an exception is recorded as ``failed`` with its message.
        ``table`` names the Markdown table the row goes to within its section.
        """
        head = {"what": what, "table": table}
        guess = self.plan.estimates.get(estimate, 0.0)
        if self.elapsed() + guess > self.deadline_s:
            reason = (
                f"skipped: deadline ({self.elapsed():.0f} s elapsed + ~{guess:.0f} s estimated > "
                f"--deadline-s {self.deadline_s:.0f})"
            )
            self.log(f"{what}: {reason}")
            return {**head, "status": "skipped", "reason": reason}
        self.log(f"{what} ...")
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 - one failing unit must not stop the run
            self.log(f"{what}: FAILED {type(err).__name__}: {err}")
            return {
                **head,
                "status": "failed",
                "seconds": time.perf_counter() - start,
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(limit=6),
            }
        row = {**head, "status": "ok", "seconds": time.perf_counter() - start, **result}
        self.log(f"{what}: {_summary(row)}")
        return row


def _summary(row: dict[str, Any]) -> str:
    """The row's numbers in one short line, for the progress log."""
    skip = {"seconds", "status", "what", "min_s", "max_s"}
    parts = [
        f"{k}={_fmt(v)}"
        for k, v in row.items()
        if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    return ", ".join(parts[:8]) + f" ({row['seconds']:.1f} s)"


def median_seconds(fn: Callable[[], Any], repeats: int, sync: Callable[[Any], Any]) -> dict:
    """Median, min and max seconds of ``fn()`` over ``repeats`` calls after one warm-up call.

    ``sync`` waits for the call's result (``jax.block_until_ready``); it is inside the timing.
    """
    sync(fn())  # compile, allocate, warm up
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def installed(*modules: str) -> list[str]:
    """The names in ``modules`` that cannot be imported."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


# ---------------------------------------------------------------------------------------- matmul


@jax.jit
def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.dot(a, b, preferred_element_type=jnp.float32)


@jax.jit
def _scale_copy(x: jax.Array) -> jax.Array:
    return x * 2


def matmul_rate(n: int, repeats: int, dtype: str) -> dict[str, Any]:
    """Timed: one ``jnp.dot`` of two random ``n x n`` matrices of ``dtype`` (float32
    accumulation, JAX's default precision). FLOP/s = 2 n^3 / t."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), dtype)
    b = jax.random.normal(kb, (n, n), dtype)
    t = median_seconds(lambda: _dot(a, b), repeats, jax.block_until_ready)
    return {"n": n, "dtype": dtype, **t, "tflops": 2 * n**3 / t["median_s"] / 1e12}


def copy_bandwidth(nbytes: int, repeats: int) -> dict[str, Any]:
    """Timed: ``y = 2 x`` over a random bfloat16 array of ``nbytes``; GB/s counts read + write."""
    x = jax.random.normal(jax.random.key(1), (nbytes // 2,), jnp.bfloat16)
    t = median_seconds(lambda: _scale_copy(x), repeats, jax.block_until_ready)
    return {"bytes": nbytes, **t, "gb_s": 2 * nbytes / t["median_s"] / 1e9}


def section_matmul(run: Runner) -> dict[str, Any]:
    """The two ceilings every other figure is compared with."""
    plan = run.plan
    rows = [
        run.unit(f"{dtype} matmul", lambda d=dtype: matmul_rate(plan.matmul_n, 2 * plan.repeats, d))
        for dtype in ("bfloat16", "float32")
    ]
    rows.append(run.unit("device copy", lambda: copy_bandwidth(plan.copy_bytes, 2 * plan.repeats)))
    return {"rows": rows}


def _ceiling(results: dict[str, Any], what: str, key: str) -> float | None:
    for row in results.get("matmul", {}).get("rows", []):
        if row["what"] == what and row["status"] == "ok":
            return row[key]
    return None


# ------------------------------------------------------------------------------------------ head


def head_row(
    shape: str, n: int, d: int, k: int, dtype: str, repeats: int, ceilings: dict[str, Any]
) -> dict[str, Any]:
    """Timed, each on device-resident data made by ``head_speed._data`` (rows of norm 1):

    nonprivate         autodiff gradient of the mean cross-entropy + SGD update
    nonprivate_manual  the same step written by hand (two GEMMs): the fair reference
    private            kernel.clipped_gradient_sum (row norms precomputed, as dp_gd's loop) +
                       noise + update
    zero_init          kernel.zero_init_class_sums + noise (the single_step method's kernel:
                       a one-hot matmul up to 128 classes, segment_sum above)
    zero_init_onehot   the same with a one-hot matmul in the rows' dtype at any K

    Ceilings (``section_matmul``): a general step does two GEMMs of 2NDK flops and reads X twice,
    so its roofline is ``max(4NDK / rate(dtype), 2 N D itemsize / bandwidth)``; the zero-init
    step reads X once, its floor ``N D itemsize / bandwidth``.
    """
    from benchmarks.head_speed import (
        _data,
        nonprivate_manual_step,
        nonprivate_step,
        private_step,
        zero_init_onehot_step,
        zero_init_step,
    )
    from private_head._kernel import row_sq_norms

    X, y = _data(n, d, k, dtype)
    key = jax.random.key(1)
    W = 0.01 * jax.random.normal(key, (d, k), jnp.float32)
    b = jnp.zeros(k, jnp.float32)
    sync = jax.block_until_ready
    sq = sync(row_sq_norms(X))
    timed = {
        "nonprivate_s": lambda: nonprivate_step(W, b, X, y),
        "nonprivate_manual_s": lambda: nonprivate_manual_step(W, b, X, y),
        "private_s": lambda: private_step(W, b, X, y, sq, key),
        "zero_init_s": lambda: zero_init_step(X, y, key, k),
        "zero_init_onehot_s": lambda: zero_init_onehot_step(X, y, key, k),
    }
    row: dict[str, Any] = {"shape": shape, "dtype": dtype, "N": n, "D": d, "K": k}
    for name, fn in timed.items():
        row[name] = median_seconds(fn, repeats, sync)["median_s"]
    row["private_over_nonprivate"] = row["private_s"] / row["nonprivate_manual_s"]
    row["private_over_autodiff"] = row["private_s"] / row["nonprivate_s"]
    row["zero_init_over_nonprivate"] = row["zero_init_s"] / row["nonprivate_manual_s"]
    itemsize = jnp.dtype(dtype).itemsize
    rate, bandwidth = ceilings.get(dtype), ceilings.get("gb_s")
    if rate and bandwidth:
        compute = 4.0 * n * d * k / (rate * 1e12)
        memory = 2.0 * n * d * itemsize / (bandwidth * 1e9)
        row |= {"roofline_compute_s": compute, "roofline_memory_s": memory}
        row["roofline_s"] = max(compute, memory)
        row["private_over_roofline"] = row["private_s"] / row["roofline_s"]
        row["nonprivate_over_roofline"] = row["nonprivate_manual_s"] / row["roofline_s"]
    if bandwidth:  # zero-init reads X once: its floor is that read
        row["read_x_floor_s"] = n * d * itemsize / (bandwidth * 1e9)
        best = min(row["zero_init_s"], row["zero_init_onehot_s"])
        row["zero_init_over_read_floor"] = best / row["read_x_floor_s"]
    return row


def section_head(run: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Every (shape, dtype) of the plan, ImageNet first."""
    plan = run.plan
    ceilings = {
        dtype: _ceiling(results, f"{dtype} matmul", "tflops") for dtype in ("bfloat16", "float32")
    }
    ceilings["gb_s"] = _ceiling(results, "device copy", "gb_s")
    rows = []
    for shape in sorted(plan.head_shapes, key=lambda s: s != "imagenet"):
        n, d, k = plan.head_shapes[shape]
        for dtype in plan.dtypes:
            rows.append(
                run.unit(
                    f"head {shape} {dtype}",
                    lambda n=n, d=d, k=k, s=shape, t=dtype: head_row(
                        s, n, d, k, t, plan.repeats, ceilings
                    ),
                    estimate="head",
                )
            )
    roofline = "max(4NDK flops at the dtype's matmul rate, reading X twice at the copy bandwidth)"
    return {"rows": rows, "roofline": roofline}


# ------------------------------------------------------------------------------------------- fit


def host_features(n: int, d: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Random float16 features [N, D] and int32 labels on the host (made on the device, copied)."""
    kx, ky = jax.random.split(jax.random.key(2))
    x = np.asarray(jax.random.normal(kx, (n, d), jnp.float16))
    y = np.asarray(jax.random.randint(ky, (n,), 0, k, jnp.int32))
    return x, y


def h2d_seconds(x: np.ndarray, repeats: int) -> dict[str, Any]:
    """Timed: ``jax.device_put`` of the host array until ready (one host-to-device copy of X)."""
    t = median_seconds(lambda: jax.device_put(x), repeats, jax.block_until_ready)
    return {"bytes": x.nbytes, **t, "gb_s": x.nbytes / t["median_s"] / 1e9}


def fit_kernels(x: np.ndarray, y: np.ndarray, k: int, steps: int, repeats: int) -> dict[str, Any]:
    """Timed on the device copy of X (float16, as fit keeps half-precision rows): the zero-init
    step (single_step's kernel), ``row_sq_norms`` and one private clipped-sum step (dp_gd's)."""
    from benchmarks.head_speed import private_step, zero_init_step
    from private_head._kernel import row_sq_norms

    X, labels = jax.device_put(x), jax.device_put(y)
    X = X / jnp.linalg.norm(X.astype(jnp.float32), axis=1, keepdims=True).astype(X.dtype)
    key, sync = jax.random.key(3), jax.block_until_ready
    W = 0.01 * jax.random.normal(key, (x.shape[1], k), jnp.float32)
    b = jnp.zeros(k, jnp.float32)
    zero = median_seconds(lambda: zero_init_step(X, labels, key, k), repeats, sync)["median_s"]
    norms = median_seconds(lambda: row_sq_norms(X), repeats, sync)["median_s"]
    sq = sync(row_sq_norms(X))
    step = median_seconds(lambda: private_step(W, b, X, labels, sq, key), repeats, sync)
    return {
        "dtype": str(X.dtype),
        "zero_init_s": zero,
        "row_sq_norms_s": norms,
        "private_step_s": step["median_s"],
        "single_step_kernel_s": zero,
        "dp_gd_kernel_s": norms + steps * step["median_s"],
    }


def write_store(path: str, x: np.ndarray, y: np.ndarray, k: int, chunk: int) -> dict[str, Any]:
    """Timed: a float16 train split written with ``store.SplitWriter`` in ``chunk``-row appends."""
    from feature_extract.store import SplitWriter

    start = time.perf_counter()
    writer = SplitWriter(
        path,
        "train",
        dim=x.shape[1],
        total_rows=x.shape[0],
        num_classes=k,
        feature_dtype="float16",
        attrs={"dataset": "synthetic", "backbone": "random"},
        overwrite=True,
    )
    for lo in range(0, x.shape[0], chunk):
        ids = np.arange(lo, min(lo + chunk, x.shape[0]), dtype=np.int64)
        writer.append(x[lo : lo + chunk], y[lo : lo + chunk], ids)
    writer.finish()
    seconds = time.perf_counter() - start
    size = os.path.getsize(path)
    return {"file_bytes": size, "write_s": seconds, "write_gb_s": size / seconds / 1e9}


def fit_wall(features: Any, labels: Any, k: int, method: str, steps: int) -> dict[str, Any]:
    """Timed: one ``private_head.fit`` call (a black box) until the head is returned."""
    import private_head

    start = time.perf_counter()
    head = private_head.fit(
        features,
        labels,
        num_classes=k,
        epsilon=4.0,
        delta=1e-6,
        method=method,
        seed=0,
        **fit_options(method, steps),
    )
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "weights_finite": bool(np.isfinite(np.asarray(head.weights)).all()),
        "rows": head.operator_log.get("rows"),  # how fit held the rows (device, streamed, ...)
        "passes": head.operator_log.get("passes"),
    }


def fit_options(method: str, steps: int) -> dict[str, Any]:
    """The method options of the timed fit calls: single_step has none; dp_gd takes ``steps``
    plain SGD steps at learning rate 1, the update ``fit_kernels``' reference step makes."""
    if method == "single_step":
        return {}
    return {"steps": steps, "optimizer": "sgd", "learning_rate": 1.0}


def _fit_runs(
    run: Runner, method: str, source: str, features: Any, labels: Any, ref: dict[str, Any]
) -> list[dict[str, Any]]:
    """The plan's calls of ``method`` from one source; adds ``wall_over_reference``: the kernel
    plus the host-to-device copy of X, plus for the store the raw h5py read of the file."""
    plan, rows = run.plan, []
    k = plan.fit_shape[2]
    for i in range(plan.fit_runs[method][source]):
        row = run.unit(
            f"fit {source} {method} run {i + 1}",
            lambda: fit_wall(features, labels, k, method, plan.dp_gd_steps),
            estimate="fit",
            table="fit calls (run 1 includes compilation)",
        )
        row |= {"source": source, "method": method, "run": i + 1}
        kernel, h2d = ref.get(f"{method}_kernel_s"), ref.get("h2d_s")
        read = ref.get("read_s") if source == "store" else 0.0
        if row["status"] == "ok" and None not in (kernel, h2d, read):
            reference = kernel + h2d + read
            row |= {"kernel_s": kernel, "h2d_s": h2d, "read_s": read, "reference_s": reference}
            row["wall_over_reference"] = row["wall_s"] / reference
        rows.append(row)
    return rows


def fit_inputs(run: Runner) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[dict]]:
    """``(x, y, references, new rows)``: the host data and the two references of every fit
    figure, made once per run (the first fit section measures them, later ones reuse them)."""
    if "fit" in run.state:
        x, y, ref = run.state["fit"]
        return x, y, ref, []
    plan = run.plan
    n, d, k = plan.fit_shape
    x, y = host_features(n, d, k)
    refs = "references"
    rows = [run.unit("H2D copy of X", lambda: h2d_seconds(x, plan.repeats), table=refs)]
    kernels = lambda: fit_kernels(x, y, k, plan.dp_gd_steps, plan.repeats)
    rows.append(run.unit("fit kernels", kernels, table=refs))
    ref = {}
    if rows[0]["status"] == "ok":
        ref["h2d_s"] = rows[0]["median_s"]
    if rows[1]["status"] == "ok":
        ref |= {key: rows[1][key] for key in ("single_step_kernel_s", "dp_gd_kernel_s")}
    run.state["fit"] = x, y, ref
    return x, y, ref, rows


def fit_store(run: Runner, x: np.ndarray, y: np.ndarray) -> tuple[str | None, list[dict]]:
    """``("file.h5:train" or None, new rows)``: the float16 store, written once per run."""
    if "store" in run.state:
        return run.state["store"], []
    path = os.path.join(run.scratch(), "features.h5")
    written = run.unit(
        "write float16 store",
        lambda: write_store(path, x, y, run.plan.fit_shape[2], run.plan.store_chunk_rows),
        estimate="store",
        table="store",
    )
    run.state["store"] = f"{path}:train" if written["status"] == "ok" else None
    rows = [written]
    if run.state["store"] is not None:
        read = run.unit("raw h5py read of the store", lambda: raw_read(path), "read", "store")
        rows.append(read)
        if read["status"] == "ok":
            run.state["fit"][2]["read_s"] = read["read_s"]
    return run.state["store"], rows


def raw_read(path: str) -> dict[str, Any]:
    """Timed: the best of two whole reads of the store's features with h5py ``read_direct``
    (``benchmarks.scale.raw_read_seconds``), the file in the page cache after the write."""
    from benchmarks.scale import raw_read_seconds

    seconds = min(raw_read_seconds(path) for _ in range(2))
    size = os.path.getsize(path)
    return {"file_bytes": size, "read_s": seconds, "read_gb_s": size / seconds / 1e9}


def _fit_section(run: Runner, method: str) -> dict[str, Any]:
    """``method``'s fit calls from the host array, then from the store."""
    plan = run.plan
    x, y, ref, rows = fit_inputs(run)
    rows += _fit_runs(run, method, "array", x, y, ref)
    store, written = fit_store(run, x, y)
    rows += written
    if store is not None:
        rows += _fit_runs(run, method, "store", store, None, ref)
    n, d, k = plan.fit_shape
    options = "".join(f", {k}={v!r}" for k, v in fit_options(method, plan.dp_gd_steps).items())
    return {
        "shape": {"N": n, "D": d, "K": k, "dtype": "float16"},
        "fit_call": "private_head.fit(x, y, num_classes=K, epsilon=4.0, delta=1e-6, "
        f"method={method!r}, seed=0{options})",
        "rows": rows,
    }


def section_fit(run: Runner) -> dict[str, Any]:
    """fit single_step end to end from a host array and from a store, with its references."""
    return _fit_section(run, "single_step")


def section_fit_dp_gd(run: Runner) -> dict[str, Any]:
    """fit dp_gd (``plan.dp_gd_steps`` steps) end to end, same data, store and references."""
    return _fit_section(run, "dp_gd")


# --------------------------------------------------------------------------------------- extract


def synthetic_source(num_rows: int, size: int, num_classes: int = 1000) -> Any:
    """A ``sources.Source`` of random uint8 ``size x size`` RGB images (a pool of 32, cycled)."""
    from feature_extract.sources import Source

    pool = np.random.default_rng(0).integers(0, 256, (32, size, size, 3), dtype=np.uint8)

    class SyntheticImages(Source):
        name, version, split = "synthetic", "1", "train"
        class_names: tuple[str, ...] = ()

        def __init__(self) -> None:
            self.num_classes = num_classes

        def __len__(self) -> int:
            return num_rows

        def get(self, indices: Sequence[int]) -> tuple[list, np.ndarray, np.ndarray]:
            idx = np.asarray(indices, dtype=np.int64)
            return list(pool[idx % len(pool)]), (idx % num_classes).astype(np.int32), idx

    return SyntheticImages()


def vit_model_only(extractor: Any, batch: int, steps: int, repeats: int) -> dict[str, Any]:
    """Timed: ``steps`` forward passes of one device-resident uint8 batch (value_range on device
    included), dispatched back to back, until the last is ready. images/s = batch * steps / t."""
    res = extractor.backbone.resolution
    images = np.random.default_rng(1).integers(0, 256, (batch, res, res, 3), dtype=np.uint8)
    images = jax.block_until_ready(extractor.put(images))

    def forward() -> jax.Array:
        for _ in range(steps):
            out = extractor.apply(images)
        return out

    t = median_seconds(forward, repeats, jax.block_until_ready)
    return {"batch": batch, "steps": steps, **t, "images_per_s": batch * steps / t["median_s"]}


def vit_end_to_end(extractor: Any, rows: int, size: int, batch: int) -> dict[str, Any]:
    """Timed: ``run_split`` over ``rows`` synthetic images (threaded host resize, transfer,
    forward, float32 store writes) after a warm-up run of one batch. images/s = rows / t."""
    from feature_extract.extraction import plan_split, run_split

    source = synthetic_source(rows, size)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-extract-") as tmp:

        def extract(name: str, stop: int) -> float:
            job = plan_split(
                source,
                name,
                extractor.backbone,
                extractor.preprocessing,
                output_dtype="float32",
                compute_dtype="bfloat16",
                row_range=(0, stop),
            )
            start = time.perf_counter()
            out = os.path.join(tmp, f"{name}.h5")
            run_split(job, extractor, out, batch_size=batch, progress=False)
            return time.perf_counter() - start

        extract("warmup", min(rows, batch))
        seconds = extract("timed", rows)
    return {
        "batch": batch,
        "rows": rows,
        "images": f"synthetic uint8 {size}x{size}",
        "preprocessing": extractor.preprocessing,
        "wall_s": seconds,
        "images_per_s": rows / seconds,
    }


def vit_extractor(run: Runner) -> Any:
    """The plan's ViT (random weights: speed does not depend on them), bfloat16, made once."""
    from feature_extract.extraction import Extractor
    from feature_extract.registry import load_backbone

    if "extractor" not in run.state:
        backbone = load_backbone(run.plan.vit_model, init_random=True, dtype=jnp.bfloat16)
        run.state["extractor"] = Extractor(backbone)
    return run.state["extractor"]


def _model_only_unit(run: Runner, extractor: Any, batch: int) -> dict[str, Any]:
    repeats = max(2, run.plan.repeats // 2)
    return run.unit(
        f"vit model only batch {batch}",
        lambda: vit_model_only(extractor, batch, run.plan.vit_steps, repeats),
        estimate="vit",
        table="model only: device-resident uint8 batch",
    )


def _extract_info(run: Runner, extractor: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    res = extractor.backbone.resolution
    return {
        "model": run.plan.vit_model,
        "resolution": res,
        "compute_dtype": "bfloat16",
        "rows": rows,
    }


def section_extract(run: Runner) -> dict[str, Any]:
    """Model-only images/s at the plan's first batch size (the one timm is compared at)."""
    extractor = vit_extractor(run)
    return _extract_info(
        run, extractor, [_model_only_unit(run, extractor, run.plan.vit_batches[0])]
    )


def section_extract_more(run: Runner) -> dict[str, Any]:
    """Model-only images/s at the other batch sizes, then end to end from synthetic images."""
    plan = run.plan
    extractor = vit_extractor(run)
    rows = [_model_only_unit(run, extractor, batch) for batch in plan.vit_batches[1:]]
    rows.append(
        run.unit(
            "vit end to end",
            lambda: vit_end_to_end(
                extractor, plan.e2e_rows, plan.e2e_image_size, plan.vit_batches[0]
            ),
            estimate="e2e",
            table="end to end: synthetic images -> store",
        )
    )
    return _extract_info(run, extractor, rows)


# ------------------------------------------------------------------------------------------ timm


def _torch_device(run: Runner) -> tuple[str | None, str]:
    """``(device, why_not)``: cuda when torch sees one; cpu only in --tiny mode on a CPU run."""
    import torch

    if torch.cuda.is_available():
        return "cuda", ""
    if run.plan.name == "tiny" and jax.default_backend() == "cpu":
        return "cpu", ""
    return None, "skipped: torch sees no CUDA device (JAX runs on an accelerator)"


def _torch_sync(device: str) -> Callable[[Any], Any]:
    import torch

    def sync(_: Any) -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    return sync


def timm_images_per_s(
    model: Any, device: str, batch: int, res: int, steps: int, repeats: int
) -> dict[str, Any]:
    """Timed: ``steps`` forward passes of a random channels-last batch under bf16 autocast and
    inference mode, then a device synchronize. The first call (compilation) is timed apart."""
    import torch

    x = torch.randn(batch, 3, res, res, device=device).to(memory_format=torch.channels_last)

    def forward() -> Any:
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
            for _ in range(steps):
                out = model(x)
        return out

    sync = _torch_sync(device)
    start = time.perf_counter()
    sync(forward())
    first = time.perf_counter() - start
    t = median_seconds(forward, repeats, sync)
    return {
        "batch": batch,
        "steps": steps,
        "first_call_s": first,
        **t,
        "images_per_s": batch * steps / t["median_s"],
    }


def section_timm(run: Runner) -> dict[str, Any]:
    """timm's ViT-B/16 (random weights), eager and torch.compile, same batch as ours."""
    missing = installed("torch", "timm")
    if missing:
        return {"status": "skipped", "reason": f"skipped: not installed ({', '.join(missing)})"}
    device, why = _torch_device(run)
    if device is None:
        return {"status": "skipped", "reason": why}
    import timm
    import torch

    plan = run.plan
    model = timm.create_model(plan.timm_model, pretrained=False, num_classes=0, **plan.timm_kwargs)
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    res = plan.timm_kwargs.get("img_size", 224)
    args = (device, plan.timm_batch, res, plan.vit_steps, plan.repeats)
    rows = [run.unit("timm eager", lambda: timm_images_per_s(model, *args))]
    if device == "cuda":
        compiled = torch.compile(model)
        rows.append(
            run.unit(
                "timm torch.compile",
                lambda: timm_images_per_s(compiled, *args),
                estimate="compile",
            )
        )
    else:
        reason = "skipped: torch.compile is timed on CUDA only (CPU --tiny run)"
        rows.append({"what": "timm torch.compile", "status": "skipped", "reason": reason})
    model = compiled = None  # free the device memory before emptying torch's cache
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"model": plan.timm_model, "resolution": res, "device": device, "rows": rows}


def timm_family_model(arch: str, res: int, sizes: dict[str, int], device: str) -> Any:
    """timm's ``arch`` (random weights, no classifier) at ``res`` px, shrunk to ``sizes``."""
    import timm
    import torch

    kwargs: dict[str, Any] = {"img_size": res}
    if sizes:
        kwargs.update(embed_dim=sizes["width"], depth=sizes["depth"], num_heads=sizes["num_heads"])
        kwargs["mlp_ratio"] = sizes["mlp_dim"] / sizes["width"]
    model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    return model.to(device).eval().to(memory_format=torch.channels_last)


def section_extract_timm(run: Runner) -> dict[str, Any]:
    """Each timm family in our Flax ViT, then timm's model of the same architecture, on the same
    device at the same batch (model only; timm's DINOv2 pools its cls token only: same cost)."""
    from feature_extract.extraction import Extractor
    from feature_extract.registry import load_backbone

    plan = run.plan
    batch, repeats = plan.timm_batch, max(2, plan.repeats // 2)
    missing = installed("torch", "timm")
    why = f"skipped: not installed ({', '.join(missing)})"
    device, why = (None, why) if missing else _torch_device(run)
    overrides = {"config": plan.timm_sizes} if plan.timm_sizes else None
    rows = []
    for name, arch, res in plan.timm_families:
        table = f"{name} ({arch}), {res} px"
        backbone = load_backbone(
            name, init_random=True, dtype=jnp.bfloat16, resolution=res, spec_overrides=overrides
        )
        extractor = Extractor(backbone)
        flax_rate = functools.partial(vit_model_only, extractor, batch, plan.vit_steps, repeats)
        rows.append(run.unit(f"flax {name}", flax_rate, estimate="vit", table=table))
        if device is None:
            rows.append(
                {"what": f"timm {arch}", "table": table, "status": "skipped", "reason": why}
            )
            continue
        model = timm_family_model(arch, res, plan.timm_sizes, device)
        timm_rate = functools.partial(
            timm_images_per_s, model, device, batch, res, plan.vit_steps, repeats
        )
        rows.append(run.unit(f"timm {arch} eager", timm_rate, estimate="vit", table=table))
    return {"batch": batch, "compute_dtype": "bfloat16", "torch_device": device, "rows": rows}


# ---------------------------------------------------------------------------------------- opacus


def opacus_step(
    mode: str, x: Any, y: Any, num_classes: int, rows: int, chunk: int, repeats: int
) -> dict[str, Any]:
    """Timed: one DP-SGD step of ``torch.nn.Linear(D, K)`` made private by Opacus
    (``grad_sample_mode=mode``, clip 1, noise multiplier 1, plain SGD) over the first ``rows``
    rows in ``chunk``-row micro-batches: every micro-batch but the last skips the optimizer step
    (Opacus' virtual steps: clipped gradients are accumulated), the last adds noise and updates.
    Seconds for all N rows = measured * N / rows (chunks are identical work)."""
    import torch
    from opacus import PrivacyEngine

    n, d = x.shape
    model = torch.nn.Linear(d, num_classes).to(x.device)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=n)
    with warnings.catch_warnings():  # the secure-RNG and full-backward-hook notices
        warnings.simplefilter("ignore", UserWarning)
        private = PrivacyEngine().make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
            criterion=torch.nn.CrossEntropyLoss(),
            data_loader=loader,
            noise_multiplier=SIGMA,
            max_grad_norm=CLIP,
            poisson_sampling=False,
            grad_sample_mode=mode,
        )
        module, optimizer = private[0], private[1]
        criterion = private[2] if mode == "ghost" else torch.nn.CrossEntropyLoss()
        starts = range(0, rows, chunk)

        def step() -> None:
            for i, lo in enumerate(starts):
                optimizer.signal_skip_step(do_skip=i < len(starts) - 1)
                optimizer.zero_grad()
                criterion(module(x[lo : lo + chunk]), y[lo : lo + chunk]).backward()
                optimizer.step()

        t = median_seconds(step, repeats, _torch_sync(str(x.device.type)))
    return {
        "mode": mode,
        "chunk_rows": chunk,
        "rows_timed": rows,
        **t,
        "full_batch_s": t["median_s"] * n / rows,
        "extrapolated": rows < n,
    }


def torch_nonprivate_step(x: Any, y: Any, num_classes: int, repeats: int) -> dict[str, Any]:
    """Timed: torch's non-private full-batch step of the same head (forward, backward, SGD)."""
    import torch

    model = torch.nn.Linear(x.shape[1], num_classes).to(x.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    t = median_seconds(step, repeats, _torch_sync(str(x.device.type)))
    return {"mode": "torch nonprivate", **t, "full_batch_s": t["median_s"]}


def section_opacus(run: Runner) -> dict[str, Any]:
    """Opacus on the ImageNet-shape float32 head, hooks and ghost clipping."""
    missing = installed("torch", "opacus")
    if missing:
        return {"status": "skipped", "reason": f"skipped: not installed ({', '.join(missing)})"}
    device, why = _torch_device(run)
    if device is None:
        return {"status": "skipped", "reason": why}
    import torch

    plan = run.plan
    n, d, k = plan.opacus_shape
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, d, device=device, generator=gen)
    x = x / x.norm(dim=1, keepdim=True)
    y = torch.randint(0, k, (n,), device=device, generator=gen)
    reps = max(1, plan.repeats // 4)
    rows = [run.unit("torch nonprivate", lambda: torch_nonprivate_step(x, y, k, plan.repeats))]
    hooks = (plan.opacus_hooks_rows, plan.opacus_hooks_chunk)
    rows.append(run.unit("opacus hooks", lambda: opacus_step("hooks", x, y, k, *hooks, reps)))
    ghost = (n, plan.opacus_ghost_chunk)
    rows.append(run.unit("opacus ghost", lambda: opacus_step("ghost", x, y, k, *ghost, reps)))
    x = y = None  # free the device memory before emptying torch's cache
    if device == "cuda":
        torch.cuda.empty_cache()
    return {
        "shape": {"N": n, "D": d, "K": k, "dtype": "float32"},
        "device": device,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "rows": rows,
    }


# --------------------------------------------------------------------------------------- targets


def _row(results: dict[str, Any], section: str, what: str) -> dict[str, Any] | None:
    for row in results.get(section, {}).get("rows", []):
        if row.get("what") == what and row.get("status") == "ok":
            return row
    return None


def _best_fit(results: dict[str, Any], source: str, method: str) -> dict[str, Any] | None:
    section = "fit" if method == "single_step" else f"fit_{method}"
    rows = [
        r
        for r in results.get(section, {}).get("rows", [])
        if r.get("status") == "ok" and r.get("source") == source and r.get("method") == method
    ]
    rows = [r for r in rows if "wall_over_reference" in r]
    return min(rows, key=lambda r: r["wall_s"]) if rows else None


def _target(claim: str, target: str, measured: float | None, ok: Callable[[float], bool]) -> dict:
    return {
        "claim": claim,
        "target": target,
        "measured": measured,
        "pass": None if measured is None else bool(ok(measured)),
    }


def _get(row: dict[str, Any] | None, key: str, scale: float = 1.0) -> float | None:
    return None if row is None or key not in row else row[key] * scale


def targets(results: dict[str, Any], plan: Plan) -> list[dict[str, Any]]:
    """The issue's targets against this run's numbers (``measured`` None: not measured)."""
    out = []
    rows = results.get("head", {}).get("rows", [])
    head = {(r["shape"], r["dtype"]): r for r in rows if r.get("status") == "ok"}
    for shape in sorted(plan.head_shapes, key=lambda s: s != "imagenet"):
        for dtype in plan.dtypes:
            out.append(
                _target(
                    f"private / non-private step, {shape} {dtype}",
                    "<= 1.05",
                    _get(head.get((shape, dtype)), "private_over_nonprivate"),
                    lambda v: v <= 1.05,
                )
            )
    imagenet_bf16 = head.get(("imagenet", "bfloat16"))
    out.append(
        _target(
            "private step, imagenet bfloat16 (ms)",
            "<= 10",
            _get(imagenet_bf16, "private_s", 1e3),
            lambda v: v <= 10,
        )
    )
    for dtype in ("bfloat16", "float32"):
        out.append(
            _target(
                f"private step / roofline (two GEMMs, X read twice), imagenet {dtype}",
                "<= 1.5",
                _get(head.get(("imagenet", dtype)), "private_over_roofline"),
                lambda v: v <= 1.5,
            )
        )
        out.append(  # reading 6.56 GB at 3.35 TB/s takes 2 ms: judged against the read itself
            _target(
                f"zero-init single step / read floor of X, imagenet {dtype}",
                "<= 1.5",
                _get(head.get(("imagenet", dtype)), "zero_init_over_read_floor"),
                lambda v: v <= 1.5,
            )
        )
    references = {"array": "kernel + H2D copy of X", "store": "kernel + H2D + raw h5py read"}
    for method, source in (("single_step", "array"), ("single_step", "store"), ("dp_gd", "store")):
        out.append(
            _target(
                f"fit {method} from {source} / ({references[source]})",
                "<= 1.5",
                _get(_best_fit(results, source, method), "wall_over_reference"),
                lambda v: v <= 1.5,
            )
        )
    ours = _row(results, "extract", f"vit model only batch {_first_batch(results)}")
    theirs = _row(results, "timm", "timm torch.compile")
    ratio = None
    if ours and theirs:
        ratio = ours["images_per_s"] / theirs["images_per_s"]
    out.append(
        _target("ViT-B/16 images/s, ours / timm compiled (same batch)", ">= 1.2", ratio, _ge(1.2))
    )
    ours_step = _get(head.get(("imagenet", "float32")), "private_s")
    for mode in ("hooks", "ghost"):
        theirs = _get(_row(results, "opacus", f"opacus {mode}"), "full_batch_s")
        ratio = theirs / ours_step if theirs is not None and ours_step else None
        out.append(
            _target(
                f"Opacus {mode} step / our private step (imagenet float32)",
                ">= 1000",
                ratio,
                _ge(1000),
            )
        )
    return out


def _ge(bound: float) -> Callable[[float], bool]:
    return lambda v: v >= bound


def _first_batch(results: dict[str, Any]) -> int | None:
    rows = results.get("extract", {}).get("rows", [])
    return rows[0].get("batch") if rows else None


# -------------------------------------------------------------------------------------- metadata


def versions() -> dict[str, str]:
    """Installed versions of the packages the figures depend on (absent ones left out)."""
    out = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def nvidia_smi() -> str | None:
    """One line of ``nvidia-smi`` queries (name, driver, memory, clocks), or None."""
    query = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return out.stdout.strip() or None
    return None


MEM_FRACTION_VARS = ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION")


def limit_jax_memory(fraction: float) -> None:
    """Have JAX preallocate ``fraction`` of the accelerator's memory, unless the caller chose.

    Read when JAX creates its GPU client. Newer jaxlibs read ``XLA_CLIENT_MEM_FRACTION`` (and
    refuse it together with the deprecated ``XLA_PYTHON_CLIENT_MEM_FRACTION``), older ones only
    the latter: set the one this jaxlib's option code names.
    """
    if any(os.environ.get(v) for v in MEM_FRACTION_VARS):
        return
    name = MEM_FRACTION_VARS[1]
    with contextlib.suppress(Exception):
        import inspect

        from jaxlib import xla_client

        if repr(MEM_FRACTION_VARS[0]) in inspect.getsource(
            xla_client.generate_pjrt_gpu_plugin_options
        ):
            name = MEM_FRACTION_VARS[0]
    os.environ[name] = str(fraction)


def device_memory_limit() -> int | None:
    """Bytes JAX's allocator may use on the first device (None on CPU)."""
    with contextlib.suppress(Exception):
        return jax.devices()[0].memory_stats()["bytes_limit"]
    return None


def environment(plan: Plan, argv: list[str], deadline_s: float) -> dict[str, Any]:
    """Device, host, versions, settings and the plan's shapes."""
    devices = jax.devices()
    return {
        "device": f"{devices[0].device_kind} x{len(devices)} ({devices[0].platform})",
        "nvidia_smi": nvidia_smi(),
        "host": f"{platform.machine()}, {os.cpu_count()} cpu(s)",
        "versions": versions(),
        "env": {
            k: os.environ[k]
            for k in (*MEM_FRACTION_VARS, "XLA_FLAGS", "JAX_PLATFORMS")
            if k in os.environ
        },
        "jax_memory_limit_bytes": device_memory_limit(),
        "jax_default_matmul_precision": str(
            getattr(jax.config, "jax_default_matmul_precision", "?")
        ),
        "command": " ".join(["python -m benchmarks.gpu", *argv]),
        "plan": dataclasses.asdict(plan),
        "deadline_s": deadline_s,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# -------------------------------------------------------------------------------------- markdown


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: ""}[value]
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value).replace("|", "/").replace("\n", " ")


# Kept in results.json, left out of table.md.
HIDDEN = ("table", "status", "reason", "error", "traceback", "min_s", "max_s")
HIDDEN += ("source", "method", "run")


def md_table(rows: list[dict[str, Any]]) -> list[str]:
    """Rows as a Markdown table: ``what``, the other columns in first-seen order, then ``status``
    (with the skip reason or the error)."""
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in HIDDEN]
    lines = ["| " + " | ".join([*keys, "status"]) + " |", "|" + "---|" * (len(keys) + 1)]
    for r in rows:
        status = r["status"] if r["status"] == "ok" else r.get("reason") or r.get("error", "")
        lines.append("| " + " | ".join([*(_fmt(r.get(k)) for k in keys), _fmt(status)]) + " |")
    return lines


def section_lines(section: dict[str, Any]) -> list[str]:
    """A section's scalars on one line, then one table per ``table`` name of its rows."""
    if section["status"] != "ok":
        return [section.get("reason") or section.get("error", "")]
    scalars = {k: v for k, v in section.items() if k not in ("rows", "status", "seconds")}
    lines = [", ".join(f"{k}: {_fmt(v)}" for k, v in scalars.items()), ""] if scalars else []
    rows = section.get("rows", [])
    for table in dict.fromkeys(r.get("table", "") for r in rows):
        lines += [f"{table}:", ""] if table else []
        lines += [*md_table([r for r in rows if r.get("table", "") == table]), ""]
    return lines[:-1] if lines and lines[-1] == "" else lines


def _target_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| claim | target | measured | result |", "|---|---|---|---|"]
    for t in rows:
        verdict = {True: "PASS", False: "FAIL", None: "not measured"}[t["pass"]]
        lines.append(f"| {t['claim']} | {t['target']} | {_fmt(t['measured'])} | {verdict} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """Header (device, versions, command), the targets table, then one table per section."""
    env = report["environment"]
    lines = [
        "# GPU figures (`python -m benchmarks.gpu`)",
        "",
        f"Device: {env['device']}"
        + (f" ({env['nvidia_smi']})" if env["nvidia_smi"] else "")
        + f"; host: {env['host']}; {env['started']}; plan `{env['plan']['name']}`; total "
        f"{report['total_s']:.1f} s (deadline {env['deadline_s']:.0f} s).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".",
        f"Command: `{env['command']}`.",
        "",
    ]
    if env["plan"]["name"] == "tiny":
        lines += ["**Tiny plan: small shapes, the pass/fail column means nothing here.**", ""]
    lines += ["## Targets", "", *_target_lines(report["targets"])]
    for name, section in report["sections"].items():
        lines += ["", f"## {name} ({section['status']}, {section.get('seconds', 0.0):.1f} s)", ""]
        lines += section_lines(section)
    return "\n".join(lines).rstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------- run


def run_section(name: str, fn: Callable[[], dict[str, Any]], run: Runner) -> dict[str, Any]:
    """``{"status", "seconds", ...}`` of one section; never raises."""
    print(f"== {name}", flush=True)
    if run.elapsed() > run.deadline_s:  # not even the section's data is made
        reason = f"skipped: deadline ({run.elapsed():.0f} s > --deadline-s {run.deadline_s:.0f})"
        run.log(f"section {name}: {reason}")
        return {"status": "skipped", "reason": reason, "seconds": 0.0}
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as err:  # noqa: BLE001 - one failing section must not hide the others
        run.log(f"section {name} FAILED: {type(err).__name__}: {err}")
        result = {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=6),
        }
    result.setdefault("status", "ok")
    rows = result.get("rows", [])
    if result["status"] == "ok" and rows and all(r["status"] == "skipped" for r in rows):
        result |= {"status": "skipped", "reason": rows[0]["reason"]}
    result["seconds"] = time.perf_counter() - start
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    from benchmarks.cli import Parser, choices_list, positive_float

    p = Parser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out-dir", help="where the report goes (unset: benchmarks/results/gpu-<UTC time>/)"
    )
    p.add_argument("--tiny", action="store_true", help="small shapes (CPU, seconds)")
    p.add_argument(
        "--deadline-s",
        type=positive_float,
        default=420.0,
        help="start no unit expected to end past this many seconds from the start",
    )
    p.add_argument(
        "--sections",
        type=choices_list([*SECTIONS, *GROUPS]),
        default=",".join(SECTIONS),
        help="comma list of sections, or a group: targets (head, fit, store: one run of about 8 "
        "minutes) or extraction (the backbones: a second one)",
    )
    p.add_argument(
        "--tmp-dir", help="where the temporary feature store is written (unset: system temp)"
    )
    args = p.parse_args(argv)
    chosen = {n for name in args.sections for n in GROUPS.get(name, (name,))}
    args.sections = [s for s in SECTIONS if s in chosen]  # always in the order above
    return args


def write_report(report: dict[str, Any], out_dir: str) -> tuple[str, str]:
    """``results.json`` and ``table.md`` in ``out_dir`` (the JSON first); returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = os.path.join(out_dir, "results.json"), os.path.join(out_dir, "table.md")
    with open(paths[0], "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(paths[1], "w") as f:
        f.write(markdown(report))
    return paths


def build_report(
    env: dict[str, Any], results: dict[str, Any], plan: Plan, run: Runner, complete: bool
) -> dict[str, Any]:
    """Environment, sections so far, targets, total seconds; ``complete`` False while partial."""
    report = {
        "environment": env,
        "complete": complete,
        "sections": results,
        "targets": [],
        "total_s": run.elapsed(),
    }
    try:
        report["targets"] = targets(results, plan)
    except Exception as err:  # noqa: BLE001 - the measurements must be written whatever happens
        report["targets_error"] = f"{type(err).__name__}: {err}"
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections in order, write the report; 1 if a section or unit failed."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    limit_jax_memory(0.5)  # before JAX creates its GPU client: leave half to torch
    plan = TINY if args.tiny else FULL
    run = Runner(args.deadline_s, plan, args.tmp_dir)
    env = environment(plan, argv, args.deadline_s)
    run.log(f"device {env['device']}; plan {plan.name}; sections {','.join(args.sections)}")
    results: dict[str, Any] = {}
    bodies = {
        "matmul": lambda: section_matmul(run),
        "head": lambda: section_head(run, results),
        "fit": lambda: section_fit(run),
        "extract": lambda: section_extract(run),
        "timm": lambda: section_timm(run),
        "opacus": lambda: section_opacus(run),
        "fit_dp_gd": lambda: section_fit_dp_gd(run),
        "extract_more": lambda: section_extract_more(run),
        "extract_timm": lambda: section_extract_timm(run),
    }
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_dir = args.out_dir or os.path.join("benchmarks", "results", f"gpu-{stamp}")
    try:
        for i, name in enumerate(args.sections):
            results[name] = run_section(name, bodies[name], run)
            # after every section, so that a run killed later still leaves what it measured
            report = build_report(env, results, plan, run, complete=i + 1 == len(args.sections))
            paths = write_report(report, out_dir)
    finally:
        run.close()
    print(markdown(report), flush=True)
    print("\n".join(["## Targets (again)", "", *_target_lines(report["targets"])]), flush=True)
    print(f"wrote {paths[0]} and {paths[1]} ({run.elapsed():.1f} s)", flush=True)
    failed = [
        n
        for n, s in results.items()
        if s["status"] == "failed" or any(r["status"] == "failed" for r in s.get("rows", []))
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    from benchmarks.cli import guard

    raise SystemExit(guard(main))
