"""Seconds per full-batch step of the linear head: non-private, private fused, zero-init, vmap.

For each shape (CIFAR-like 50k x 768, K = 10; ImageNet-like 1.28M x 1280, K = 1000) and dtype
(float32, bfloat16), one run times, after a warm-up compile, the median over ``--repeats`` of:

    nonprivate     autodiff gradient of the mean cross-entropy + an SGD update
    private        kernel.clipped_gradient_sum + N(0, (sigma C)^2) noise + the same update (row
                   norms ||x_i||^2 computed once per run, as dp_gd's loop does)
    zero_init      kernel.zero_init_class_sums + noise (the single_step path, no forward matmul)
    vmap_reference per-example gradients by vmap(grad), clipped and summed (in row blocks to bound
                   memory; timed on ``--ref-rows`` rows and scaled linearly to N when fewer)

and prints the ratios private/nonprivate, private/zero_init and vmap_reference/private, all
measured in the same run on the same device. ``--scale`` multiplies N; by default 1 on an
accelerator and, on CPU, each shape is cut to 4096 rows.

    python -m benchmarks.head_speed [--scale 0.1] [--dtypes float32,bfloat16] [--out]
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp

from private_head._kernel import (
    clipped_gradient_sum,
    from_class_sums,
    gaussian_noise_like,
    row_sq_norms,
    zero_init_class_sums,
    zero_init_row_weights,
)

SHAPES = {"cifar-like": (50_000, 768, 10), "imagenet-like": (1_281_167, 1280, 1000)}
CPU_ROWS = 4096
DEFAULT_OUT = os.path.join("benchmarks", "results", "head_speed.json")
CLIP, SIGMA, LR = 1.0, 1.0, 1.0


def _data(n: int, d: int, k: int, dtype: str) -> tuple[jax.Array, jax.Array]:
    kx, ky = jax.random.split(jax.random.key(0))
    X = jax.random.normal(kx, (n, d), jnp.float32)
    X = (X / jnp.linalg.norm(X, axis=1, keepdims=True)).astype(dtype)
    return X, jax.random.randint(ky, (n,), 0, k)


@jax.jit
def nonprivate_step(W, b, X, y):
    def loss(params):
        z = jnp.dot(X, params[0].astype(X.dtype), preferred_element_type=jnp.float32) + params[1]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1))

    gW, gb = jax.grad(loss)((W, b))
    return W - LR * gW, b - LR * gb


@jax.jit
def nonprivate_manual_step(W, b, X, y):
    """The non-private step written by hand, as the private kernel is: ``E = softmax(XW + b) -
    onehot(y)``, ``gW = X^T E / n``, ``gb = sum_i e_i / n`` (two GEMMs, no autodiff)."""
    z = jnp.dot(X, W.astype(X.dtype), preferred_element_type=jnp.float32) + b
    E = jax.nn.softmax(z) - jax.nn.one_hot(y, W.shape[1], dtype=jnp.float32)
    n = X.shape[0]
    gW = jnp.dot(X.T, E.astype(X.dtype), preferred_element_type=jnp.float32) / n
    return W - LR * gW, b - LR * jnp.sum(E, axis=0) / n


@functools.partial(jax.jit, static_argnames="num_classes")
def zero_init_onehot_step(X, y, key, num_classes):
    """``zero_init_step`` with the class sums as one one-hot matmul in the rows' dtype,
    ``S = (w * onehot(y))^T X``, at any K (the kernel uses it up to 128 classes)."""
    w, c, p0 = zero_init_row_weights(
        X,
        y,
        num_classes,
        CLIP,
        loss="softmax",
        train_bias=False,
        bias0=0.0,
        mask=None,
        sq_norms=None,
        row_scale=None,
    )
    M = (jax.nn.one_hot(y, num_classes, dtype=jnp.float32) * w[:, None]).astype(X.dtype)
    S = jnp.dot(M.T, X, preferred_element_type=jnp.float32)
    gW, _ = from_class_sums(S, c[:0], jnp.sum(c), p0, False)
    return -LR * (gW + gaussian_noise_like(key, gW, SIGMA * CLIP)) / X.shape[0]


@jax.jit
def private_step(W, b, X, y, sq_norms, key):
    sums = clipped_gradient_sum(W, b, X, y, CLIP, sq_norms=sq_norms)
    noise = gaussian_noise_like(key, sums, SIGMA * CLIP)
    n = X.shape[0]
    return W - LR * (sums[0] + noise[0]) / n, b - LR * (sums[1] + noise[1]) / n


@functools.partial(jax.jit, static_argnames="num_classes")
def zero_init_step(X, y, key, num_classes):
    gW, _ = zero_init_class_sums(X, y, num_classes, CLIP)
    return -LR * (gW + gaussian_noise_like(key, gW, SIGMA * CLIP)) / X.shape[0]


@functools.partial(jax.jit, static_argnames="block")
def vmap_reference_sum(W, b, X, y, block):
    """Per-example gradients (vmap of grad) clipped and summed, ``block`` rows at a time."""

    def example_loss(params, x, label):
        z = jnp.dot(x, params[0].astype(x.dtype), preferred_element_type=jnp.float32) + params[1]
        return -jax.nn.log_softmax(z)[label]

    def block_sum(args):
        xb, yb = args
        gW, gb = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))((W, b), xb, yb)
        norms = jnp.sqrt(jnp.sum(gW**2, axis=(1, 2)) + jnp.sum(gb**2, axis=1))
        c = jnp.minimum(1.0, CLIP / norms)
        return jnp.einsum("n,ndk->dk", c, gW), c @ gb

    n = X.shape[0] // block * block
    Xb = X[:n].reshape(-1, block, X.shape[1])
    gW, gb = jax.lax.map(block_sum, (Xb, y[:n].reshape(-1, block)))
    return gW.sum(0), gb.sum(0)


def _median_seconds(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    name: str, n: int, d: int, k: int, dtype: str, repeats: int, ref_rows: int
) -> dict[str, Any]:
    """One shape and dtype: seconds per step of every variant and their ratios."""
    X, y = _data(n, d, k, dtype)
    rng = jax.random.key(1)
    W = 0.01 * jax.random.normal(rng, (d, k), jnp.float32)  # away from zero: a general step
    b = jnp.zeros(k, jnp.float32)
    row = {
        "what": f"{name} {dtype}",
        "shape": name,
        "dtype": dtype,
        "rows": n,
        "dim": d,
        "classes": k,
    }
    row["nonprivate_s"] = _median_seconds(lambda: nonprivate_step(W, b, X, y), repeats)
    sq_norms = jax.block_until_ready(row_sq_norms(X))  # once per run, as in dp_gd's loop
    row["private_s"] = _median_seconds(lambda: private_step(W, b, X, y, sq_norms, rng), repeats)
    row["zero_init_s"] = _median_seconds(lambda: zero_init_step(X, y, rng, k), repeats)
    m = min(n, ref_rows)
    block = max(1, min(m, (256 << 20) // (4 * d * k)))  # ~256 MiB of per-example gradients
    m = m // block * block
    ref = _median_seconds(
        lambda: vmap_reference_sum(W, b, X[:m], y[:m], block), max(1, repeats // 2)
    )
    row["vmap_reference_rows_timed"] = m
    row["vmap_reference_s"] = ref * n / m
    row["private_over_nonprivate"] = row["private_s"] / row["nonprivate_s"]
    row["private_over_zero_init"] = row["private_s"] / row["zero_init_s"]
    row["vmap_reference_over_private"] = row["vmap_reference_s"] / row["private_s"]
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from benchmarks.cli import Parser, choices_list, positive_float, positive_int

    p = Parser(prog="python -m benchmarks.head_speed", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--shapes",
        type=choices_list(list(SHAPES)),
        default=",".join(SHAPES),
        help="comma list of " + ", ".join(SHAPES),
    )
    p.add_argument(
        "--dtypes",
        type=choices_list(["float32", "bfloat16", "float16"]),
        default="float32,bfloat16",
        help="comma list",
    )
    p.add_argument(
        "--scale",
        type=positive_float,
        default=None,
        help=f"multiply N (unset: 1 on an accelerator, {CPU_ROWS} rows on CPU)",
    )
    p.add_argument(
        "--repeats", type=positive_int, default=None, help="unset: 10 (accelerator), 3 (CPU)"
    )
    p.add_argument(
        "--ref-rows",
        type=positive_int,
        default=None,
        help="rows the vmap reference is timed on (unset: all; 512 on CPU)",
    )
    p.add_argument(
        "--out",
        nargs="?",
        const=DEFAULT_OUT,
        default=None,
        help=f"write the JSON result (to {DEFAULT_OUT} when given without a path)",
    )
    args = p.parse_args(argv)
    device = jax.devices()[0]
    on_cpu = device.platform == "cpu"
    repeats = args.repeats or (3 if on_cpu else 10)
    ref_rows = args.ref_rows or (512 if on_cpu else 1 << 62)
    rows = []
    for name in args.shapes:
        n, d, k = SHAPES[name]
        if args.scale is not None:
            n = max(1, int(n * args.scale))
        elif on_cpu:
            n = min(n, CPU_ROWS)
        for dtype in args.dtypes:
            row = measure(name, n, d, k, dtype, repeats, ref_rows)
            rows.append(row)
            print(
                f"{row['what']:>24} N={n} D={d} K={k}: nonprivate {row['nonprivate_s']:.4g}s"
                f"  private {row['private_s']:.4g}s  zero-init {row['zero_init_s']:.4g}s"
                f"  vmap-ref {row['vmap_reference_s']:.4g}s | private/nonprivate "
                f"{row['private_over_nonprivate']:.3f}  private/zero-init "
                f"{row['private_over_zero_init']:.2f}  vmap/private "
                f"{row['vmap_reference_over_private']:.1f}",
                flush=True,
            )
    result = {
        "device": f"{device.platform}: {device.device_kind}",
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "rows": rows,
    }
    print(f"device: {result['device']}")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    from benchmarks.cli import guard

    raise SystemExit(guard(main))
