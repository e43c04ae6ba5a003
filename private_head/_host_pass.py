"""The zero-init class sums on the host: ``ZeroInitSums`` without a compiled pass, on CPU.

On one CPU device and one process, the single step (and step 0 of every descent) is the fused
host kernel ``_host_kernel.class_sums``: the rows are read once, in place (an array of any
alignment, a cached store split) or from the store's buffers, with the preprocessing's scale and
the clip folded in, and the totals go through the statistic's ``stage2`` (``_kernel``'s
``from_class_sums``) on the device. Elsewhere (an accelerator, several devices or processes,
centring or standardisation, mapped rows, a hash split) ``Rows`` runs the compiled pass
(``_device_pass``), where the one-hot matmul or the scatter is what the hardware wants
(docs/architecture.md, "Rows").
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from private_head import _host_kernel
from private_head._device_pass import stage2
from private_head._kernel import clip_slack
from private_head._preprocessing import Preprocessing, folds
from private_head._statistics import GradientSums, Statistic, ZeroInitSums

# Up to this many classes the general clipped gradient sums run on the host too (each row costs
# 2K passes over it in cache); above, XLA's matmuls are faster.
GRADIENT_MAX_CLASSES = 32


def serves(stat: Statistic, args: Any, preprocessing: Preprocessing, *, plain: bool) -> bool:
    """A host kernel computes ``stat`` here: the zero-init sums, or the clipped gradient sums
    at up to ``GRADIENT_MAX_CLASSES`` classes, of rows scaled but neither centred nor standardised
    (``folds``: those fall back to the compiled pass, which materialises them), on ``plain`` rows
    (one CPU device, one process, no transform, no hash split), with concrete arguments (not
    under a JAX transformation, as the audit runs a fit)."""
    if not plain or not folds(preprocessing.static) or traced(args):
        return False
    if isinstance(stat, GradientSums):
        return np.shape(args[0]["W"])[1] <= GRADIENT_MAX_CLASSES
    return isinstance(stat, ZeroInitSums)


def traced(tree: Any) -> bool:
    """Some leaf of ``tree`` is a tracer (a JAX transformation is running)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def accumulator(stat: Statistic, args: Any, pre: Preprocessing, dim: int, blocks: int | None):
    """The accumulators of ``stat``'s host kernel."""
    if isinstance(stat, GradientSums):
        return GradientSumsAcc(stat, args, pre, dim, blocks)
    return ClassSums(stat, args, pre, dim, blocks)


def threads() -> int:
    return _host_kernel.threads()


def kernel_dtype(stored: np.dtype) -> np.dtype:
    """The dtype the kernel reads: 16-bit and float32 rows as stored, anything else as float32."""
    return stored if stored.name in _host_kernel.HALF_CODES else np.dtype(np.float32)


def initial_probabilities_host(num_classes: int, loss: str, bias0: float) -> np.ndarray:
    """``_kernel.initial_probabilities`` in float64 on the host (no compilation): every
    example's prediction at W = 0, ``softmax(b0 1)`` (uniform) or ``sigmoid(b0)``."""
    if loss == "softmax":
        return np.full(num_classes, 1.0 / num_classes)
    return np.full(num_classes, 1.0 / (1.0 + np.exp(-float(bias0))))


def kernel_rows(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
    """``(x32, x16, code, y, mask)`` as the host kernels take a chunk: the rows as float32
    (``code`` 0) or as the bits of float16/bfloat16 (``code`` 1/2; the other array has no rows),
    int32 labels and the float32 row weights (empty: all 1)."""
    code = _host_kernel.HALF_CODES[x.dtype.name]
    dim = x.shape[1]
    x32 = x if code == 0 else np.empty((0, dim), np.float32)
    x16 = x.view(np.uint16) if code else np.empty((0, dim), np.uint16)
    mask = np.empty(0, np.float32) if weights is None else np.ascontiguousarray(weights, np.float32)
    return x32, x16, code, np.ascontiguousarray(y, np.int32), mask


class ClassSums:
    """The accumulators of one pass (``_host_kernel`` docstring); ``add`` each chunk, then
    ``result``. ``blocks``: P, by default one per thread; a pass whose chunks are read by a
    background thread leaves it a core (P one less)."""

    def __init__(
        self,
        stat: ZeroInitSums,
        clip_norm: Any,
        pre: Preprocessing,
        dim: int,
        blocks: int | None = None,
    ):
        K = stat.num_classes
        P = blocks or _host_kernel.threads()
        self.stat = stat
        self.S = np.zeros((P, K, dim), np.float32)
        self.counts = np.zeros((P, K), np.float64)
        self.totals = np.zeros(P, np.float64)
        self.bad = np.zeros(P, np.int64)
        p0 = initial_probabilities_host(K, stat.loss, stat.bias0)
        self.sq_e = np.sum(p0 * p0) - 2.0 * p0 + 1.0
        self.clip = float(np.asarray(clip_norm)) * clip_slack(np.float32, dim, K)
        self.kind = _host_kernel.KINDS[pre.kind]
        self.radius = float(pre.feature_norm)
        self.bias_term = 1.0 if stat.train_bias else 0.0

    def add(self, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Rows ``x`` [n, D] (float32, float16 or bfloat16, C-contiguous) with labels ``y``."""
        kernel = _host_kernel.class_sums if len(self.S) > 1 else _host_kernel.class_sums_serial
        kernel(
            *kernel_rows(x, y, weights),
            self.kind,
            self.radius,
            self.clip,
            self.bias_term,
            self.sq_e,
            self.S,
            self.counts,
            self.totals,
            self.bad,
        )

    def result(self) -> tuple[Any, int]:
        """``(the statistic's sums, number of non-finite rows)``; the blocks added in order."""
        rest = {
            "counts": np.sum(self.counts, axis=0).astype(np.float32),
            "total": np.float32(np.sum(self.totals)),
        }
        S = jax.device_put(np.sum(self.S, axis=0))
        return stage2(S, rest, stat=self.stat), int(np.sum(self.bad))


class GradientSumsAcc:
    """The accumulators of one pass of ``_host_kernel.gradient_sums``; args ``(params, bias,
    C)`` as ``GradientSums`` takes them."""

    def __init__(
        self, stat: GradientSums, args: Any, pre: Preprocessing, dim: int, blocks: int | None
    ):
        params, bias, clip_norm = args
        W = np.asarray(params["W"], np.float32)
        K = W.shape[1]
        P = blocks or _host_kernel.threads()
        self.stat = stat
        self.WT = np.ascontiguousarray(W.T)
        self.b = np.asarray(bias, np.float64)
        self.G = np.zeros((P, K, dim), np.float32)
        self.gb = np.zeros((P, K), np.float64)
        self.bad = np.zeros(P, np.int64)
        self.clip = float(np.asarray(clip_norm)) * clip_slack(np.float32, dim, K)
        self.kind = _host_kernel.KINDS[pre.kind]
        self.radius = float(pre.feature_norm)
        self.softmax = stat.loss == "softmax"
        self.bias_term = 1.0 if stat.train_bias else 0.0

    def add(self, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> None:
        """As ``ClassSums.add``."""
        kernel = _host_kernel.gradient_sums
        if len(self.G) == 1:
            kernel = _host_kernel.gradient_sums_serial
        kernel(
            *kernel_rows(x, y, weights),
            self.kind,
            self.radius,
            self.clip,
            self.softmax,
            self.bias_term,
            self.WT,
            self.b,
            self.G,
            self.gb,
            self.bad,
        )

    def result(self) -> tuple[Any, int]:
        gW = jax.device_put(np.ascontiguousarray(np.sum(self.G, axis=0).T))
        sums = {"W": gW}
        if self.stat.train_bias:
            sums["b"] = jax.device_put(np.sum(self.gb, axis=0).astype(np.float32))
        return sums, int(np.sum(self.bad))


def nonfinite(x: np.ndarray) -> np.ndarray:
    """Bool [n]: rows of ``x`` (float32, float16 or bfloat16) holding NaN/inf."""
    code = _host_kernel.HALF_CODES[x.dtype.name]
    dim = x.shape[1]
    out = np.empty(x.shape[0], np.bool_)
    x32 = x if code == 0 else np.empty((0, dim), np.float32)
    x16 = x.view(np.uint16) if code else np.empty((0, dim), np.uint16)
    _host_kernel.nonfinite_rows(x32, x16, code, out)
    return out
