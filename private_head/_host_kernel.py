"""Host kernels (CPU): the zero-init class sums in one fused pass over the rows, in place.

On CPU the single step is bound by reading X once, and XLA's version of it writes a scaled
float32 copy of every chunk before a scatter (docs/architecture.md, "Rows"). This kernel reads
each row once, from the caller's array or the store's buffer (any C-contiguous layout, any
alignment; float16 and bfloat16 decoded in the pass), and for a row x_i with mask m_i computes

    s_i = ||x_i||^2        (float32 sum; float64 when float32 overflows or underflows)
    a_i = r / ||x_i||      (normalize), min(1, r / ||x_i||) (shrink), 1 (identity); 0 if x_i = 0
    c_i = m_i min(1, C / sqrt(max((a_i^2 s_i + [train_bias]) q_{y_i}, 1e-30)))
    S[y_i] += (a_i c_i) x_i,     n[y_i] += c_i,     t += c_i

with ``q_k = ||p0 - onehot(k)||^2`` and C already shrunk by ``_kernel.clip_slack``, the terms of
``_kernel.zero_init_class_sums``. The rows are cut into P contiguous blocks, one per thread, each
adding into its own accumulators ``S[p], n[p], t[p]``; the caller adds the P blocks in order, so
a result depends on the rows and P only. A row whose norm is not finite (NaN/inf) adds nothing
and is counted in ``bad[p]``. Each contribution has norm at most ``(1 + 2^-24)^2 C``: the scale
``a c`` and each product are rounded once, and C's slack covers the float32 sum of squares.
"""

from __future__ import annotations

import types
from typing import Any

import numba
import numpy as np

KINDS = {"identity": 0, "normalize": 1, "shrink": 2}
HALF_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}
_F16_TO_F32 = np.float32(2.0**112)  # float16 exponent bias 15 -> float32 bias 127
_SMALL, _LARGE = 2.0**-100, 2.0**100  # float32 sums of squares and scales trusted inside these
_FAST = {"reassoc", "contract"}  # vectorised sums and fused multiply-adds; NaN and inf kept


def threads() -> int:
    """P, the number of blocks (numba's thread count)."""
    return int(numba.get_num_threads())


@numba.njit(inline="always")
def _decode(h: np.ndarray, code: int, bits: np.ndarray, out: np.ndarray) -> None:
    """16-bit rows ``h`` (uint16 words) as float32 into ``out`` (a float32 view of ``bits``):
    bfloat16 is the top half of a float32; float16 moves its exponent by 112 (subnormals, inf
    and NaN included, exactly)."""
    if code == 2:
        for j in range(h.shape[0]):
            bits[j] = np.uint32(h[j]) << 16
        return
    for j in range(h.shape[0]):
        v = np.uint32(h[j])
        word = ((v & 0x7FFF) << 13) | ((v & 0x8000) << 16)
        if (v & 0x7C00) == 0x7C00:
            word |= 0x7F800000
        bits[j] = word
    for j in range(out.shape[0]):
        out[j] *= _F16_TO_F32


@numba.njit(inline="always")
def _square_norm(row: np.ndarray) -> float:
    """``||row||^2`` in float64: the float32 sum where it lies within ``(2^-100, 2^100)``, else
    (overflow, underflow, zero or non-finite) exactly, in float64."""
    D = row.shape[0]
    ss32 = np.float32(0.0)
    for j in range(D):
        ss32 += row[j] * row[j]
    ss = np.float64(ss32)
    if not _SMALL < ss < _LARGE:
        ss = 0.0
        for j in range(D):
            ss += np.float64(row[j]) * np.float64(row[j])
    return ss


@numba.njit(inline="always")
def _bound_scale(norm: float, kind: int, radius: float) -> float:
    """The preprocessing's scale ``a`` of a row of norm ``norm`` (``KINDS``; a zero row: 0)."""
    if kind == 0:
        return 1.0
    a = radius / norm if norm > 0.0 else 0.0
    return min(1.0, a) if kind == 2 else a


@numba.njit(inline="always")
def _add_scaled(out: np.ndarray, w: float, row: np.ndarray) -> None:
    """``out += w row`` in float32; a scale outside float32's comfortable range multiplies each
    entry in float64 first."""
    D = row.shape[0]
    if _SMALL < abs(w) < _LARGE:
        w32 = np.float32(w)
        for j in range(D):
            out[j] += w32 * row[j]
    else:
        for j in range(D):
            out[j] += np.float32(w * np.float64(row[j]))


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=_FAST)
def class_sums(
    x32, x16, code, y, mask, kind, radius, clip, bias_term, sq_e, S, counts, totals, bad
):
    """Add the rows of one chunk into the accumulators (module docstring).

    ``x32`` float32 [n, D] (``code`` 0) or ``x16`` uint16 [n, D] (``code`` 1 float16, 2
    bfloat16; the other has no rows); ``y`` int32 [n]; ``mask`` float32 [n] or empty (all 1);
    ``sq_e`` float64 [K]; accumulators ``S`` float32 [P, K, D], ``counts`` float64 [P, K],
    ``totals`` float64 [P], ``bad`` int64 [P].
    """
    n = y.shape[0]
    P, _, D = S.shape
    for p in numba.prange(P):
        bits = np.empty(D, np.uint32)
        buf = bits.view(np.float32)
        Sp = S[p]
        total, nbad = 0.0, 0
        for i in range(p * n // P, (p + 1) * n // P):
            if code == 0:
                row = x32[i]
            else:
                _decode(x16[i], code, bits, buf)
                row = buf
            ss = _square_norm(row)
            if not np.isfinite(ss):
                nbad += 1
                continue
            m = 1.0 if mask.shape[0] == 0 else np.float64(mask[i])
            if m == 0.0:
                continue
            a = _bound_scale(np.sqrt(ss), kind, radius)
            k = y[i]
            sq_g = (a * a * ss + bias_term) * sq_e[k]
            c = m * min(1.0, clip / np.sqrt(max(sq_g, 1e-30)))
            counts[p, k] += c
            total += c
            w = a * c
            if w == 0.0:
                continue
            _add_scaled(Sp[k], w, row)
        totals[p] += total
        bad[p] += nbad


def _serial(kernel: Any) -> Any:
    """``kernel`` on the calling thread alone (P = 1), for a pass whose chunks come from a reader
    thread, where waking numba's threads for every chunk costs more than it gains on a busy host.
    A copy of the function under its own name: numba keys its on-disk cache by the function's
    name, and two kernels of one name would load each other's code."""
    f = kernel.py_func
    name = f.__name__ + "_serial"
    copy = types.FunctionType(f.__code__, f.__globals__, name, f.__defaults__, f.__closure__)
    copy.__qualname__ = name
    return numba.njit(nogil=True, cache=True, fastmath=_FAST)(copy)


class_sums_serial = _serial(class_sums)


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=_FAST)
def gradient_sums(
    x32, x16, code, y, mask, kind, radius, clip, softmax, bias_term, WT, b, G, gb, bad
):
    """The clipped gradient sums at a head ``(W, b)`` for few classes (``_kernel``'s
    ``clipped_gradient_sum``, fused; ``WT = W^T`` float32 [K, D], ``b`` float64 [K]). Per row,
    with ``s_i, a_i`` as above:

        z = a_i (W^T x_i) + b,   e = softmax(z) - onehot(y_i)   (sigmoid(z) for ``softmax`` 0)
        c_i = m_i min(1, C / sqrt(max((a_i^2 s_i + [train_bias]) ||e||^2, 1e-30)))
        G[p] += (a_i c_i e) x_i^T   (float32 [K, D]),   gb[p] += c_i e   (float64 [K])

    Each row costs 2K passes over it in cache (the dots, then the rank-one update), so this is
    for small K only (``_host_pass.GRADIENT_MAX_CLASSES``)."""
    n = y.shape[0]
    P, K, D = G.shape
    for p in numba.prange(P):
        bits = np.empty(D, np.uint32)
        buf = bits.view(np.float32)
        z = np.empty(K, np.float64)
        Gp = G[p]
        nbad = 0
        for i in range(p * n // P, (p + 1) * n // P):
            if code == 0:
                row = x32[i]
            else:
                _decode(x16[i], code, bits, buf)
                row = buf
            ss = _square_norm(row)
            if not np.isfinite(ss):
                nbad += 1
                continue
            m = 1.0 if mask.shape[0] == 0 else np.float64(mask[i])
            if m == 0.0:
                continue
            norm = np.sqrt(ss)
            a = _bound_scale(norm, kind, radius)
            moderate = _SMALL < norm < _LARGE
            for k in range(K):
                wk = WT[k]
                acc = np.float32(0.0)
                for j in range(D):
                    acc += row[j] * wk[j]
                dot = np.float64(acc)
                if not (moderate and np.isfinite(dot)):  # an extreme row: the dot in float64
                    dot = 0.0
                    for j in range(D):
                        dot += np.float64(row[j]) * np.float64(wk[j])
                z[k] = a * dot + b[k]
            if softmax:
                top = z.max()
                total = 0.0
                for k in range(K):
                    z[k] = np.exp(z[k] - top)
                    total += z[k]
                for k in range(K):
                    z[k] /= total
            else:
                for k in range(K):
                    z[k] = 1.0 / (1.0 + np.exp(-z[k]))
            z[y[i]] -= 1.0
            sq_e = 0.0
            for k in range(K):
                sq_e += z[k] * z[k]
            sq_g = (a * a * ss + bias_term) * sq_e
            c = m * min(1.0, clip / np.sqrt(max(sq_g, 1e-30)))
            for k in range(K):
                gb[p, k] += c * z[k]
                r = a * c * z[k]
                if r == 0.0:
                    continue
                _add_scaled(Gp[k], r, row)
        bad[p] += nbad


gradient_sums_serial = _serial(gradient_sums)


@numba.njit(parallel=True, nogil=True, cache=True)
def nonfinite_rows(x32, x16, code, out):
    """``out[i] = True`` where row i holds NaN/inf (16-bit rows: an all-ones exponent)."""
    n = out.shape[0]
    for i in numba.prange(n):
        flag = False
        if code == 0:
            for j in range(x32.shape[1]):
                flag |= not np.isfinite(x32[i, j])
        elif code == 1:
            for j in range(x16.shape[1]):
                flag |= (x16[i, j] & 0x7C00) == 0x7C00
        else:
            for j in range(x16.shape[1]):
                flag |= (x16[i, j] & 0x7F80) == 0x7F80
        out[i] = flag
