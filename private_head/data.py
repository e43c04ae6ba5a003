"""Training data for the head: validation, per-example preprocessing, in-memory or streamed rows.

Preprocessing rule (radius r = ``config.feature_norm``; ``bound`` scales every row to norm r when
``config.normalize`` is true, else shrinks rows longer than r to norm r; a zero row stays zero):

    center="none"     x -> bound(x)
    center="public"   x -> bound(x - m)          m: the caller's public mean, in raw feature units
    center="private"  x -> bound(bound(x) - m)   m = (sum_i bound(x_i) + N(0, (s r)^2 I)) / N

so every preprocessed row has ``||x_i|| <= r`` whatever the centring. Per-example operations are
free (DESIGN.md 4). The private mean releases a sum of sensitivity r (add/remove one row moves it
by at most r) with Gaussian noise of std ``s * r``, where ``s = 1 / mu_c`` and
``mu_c = sqrt(config.center_budget_fraction) * ledger.remaining_mu``: the mean takes that fraction
of the mu^2 budget, the training method gets ``sqrt(1 - fraction)`` of mu. The ledger records the
release before the noise is drawn; the divisor N is public. With ``epsilon = inf`` (the
``nonprivate`` method) the mean is exact and nothing is charged.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from accounting import BudgetExceededError
from feature_extract import store
from private_head.config import FitConfig

_HALF_DTYPES = ("float16", "bfloat16")
DEFAULT_CHUNK_ROWS = 65536


@dataclass(frozen=True)
class Preprocessing:
    """The per-example map applied to training rows and, identically, at prediction time."""

    normalize: bool
    feature_norm: float
    center: str = "none"
    mean: np.ndarray | None = None  # [D] float32; None unless center is "public" or "private"

    def bound(self, x: np.ndarray) -> np.ndarray:
        """Rows scaled to norm r (normalize) or shrunk to at most r (clip); zero rows stay zero.

        Overflow-safe: with ``m = max_j |x_j|`` and ``s = ||x / m||`` (in [1, sqrt(D)]), the row
        is ``(x / m) * (target / s)`` where ``target = r`` or ``min(m s, r)``.
        """
        m = np.max(np.abs(x), axis=1, keepdims=True)
        safe_m = np.where(m > 0, m, 1.0)
        unit = x / safe_m
        s = np.where(m > 0, np.linalg.norm(unit, axis=1, keepdims=True), 1.0)
        with np.errstate(over="ignore"):
            target = self.feature_norm if self.normalize else np.minimum(m * s, self.feature_norm)
        return (unit * (target / s)).astype(np.float32)

    def apply(self, x: Any) -> np.ndarray:
        """The preprocessed rows, float32 [N, D] (see the module docstring for the rule)."""
        x = np.asarray(x, dtype=np.float32)
        if self.center == "public":
            return self.bound(x - self.mean)
        if self.center == "private":
            return self.bound(self.bound(x) - self.mean)
        return self.bound(x)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (the mean itself is stored as an array next to it)."""
        return {
            "normalize": self.normalize,
            "feature_norm": self.feature_norm,
            "center": self.center,
        }


class ChunkSource:
    """Rows kept off the device: a store split or a host array, read in chunks and preprocessed.

    ``iter_raw`` / ``iter_chunks`` read chunk i+1 on a background thread while the caller works on
    chunk i; ``chunk_rows`` is the default chunk length (sized to the device budget).
    ``preprocessing`` is None until ``load_train_data`` has fixed it (``with_``). ``rows=(start,
    stop)`` keeps only those rows of a store split (a process's share, ``distributed``).
    """

    def __init__(
        self,
        *,
        array: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        path: str | None = None,
        split: str | None = None,
        preprocessing: Preprocessing | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        rows: tuple[int, int] | None = None,
    ):
        if (array is None) == (path is None):
            raise ValueError("ChunkSource needs exactly one of array= (with labels=) or path=")
        self.array, self.labels, self.path, self.split = array, labels, path, split
        self.preprocessing, self.chunk_rows, self.rows = preprocessing, chunk_rows, rows
        if array is not None:
            self.num_rows, self.dim = array.shape
            self.dtype = np.dtype(array.dtype)
        else:
            info = store.split_info(path, split)
            self.num_rows, self.dim = info.num_rows, info.dim
            self.dtype = np.dtype(info.feature_dtype)
            if rows is not None:
                self.num_rows = rows[1] - rows[0]

    def with_(self, preprocessing: Preprocessing) -> ChunkSource:
        """The same rows under ``preprocessing``."""
        return ChunkSource(
            array=self.array,
            labels=self.labels,
            path=self.path,
            split=self.split,
            preprocessing=preprocessing,
            chunk_rows=self.chunk_rows,
            rows=self.rows,
        )

    @contextmanager
    def _reader(self) -> Iterator[Callable[[int, int], tuple[np.ndarray, np.ndarray]]]:
        if self.array is not None:
            yield lambda start, stop: (self.array[start:stop], self.labels[start:stop])
            return
        offset, end = self.rows if self.rows is not None else (0, self.num_rows)
        with store.SplitReader(self.path, self.split) as reader:
            yield lambda start, stop: reader.read(offset + start, min(offset + stop, end))

    def iter_raw(self, rows: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(start, raw rows, labels)`` in row order; the next chunk is read on a thread."""
        if rows < 1:
            raise ValueError(f"rows per chunk must be >= 1, got {rows}")
        starts = range(0, self.num_rows, rows)
        with self._reader() as read, concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(read, 0, rows) if starts else None
            for i, start in enumerate(starts):
                x, y = pending.result()
                if i + 1 < len(starts):
                    pending = pool.submit(read, starts[i + 1], starts[i + 1] + rows)
                yield start, x, y

    def iter_chunks(self, rows: int) -> Iterator[np.ndarray]:
        """Preprocessed float32 chunks in row order."""
        if self.preprocessing is None:
            raise ValueError("this ChunkSource has no preprocessing yet; use load_train_data")
        for _, x, _ in self.iter_raw(rows):
            yield self.preprocessing.apply(x)


@dataclass(frozen=True)
class TrainData:
    """Preprocessed training rows (``||x_i|| <= feature_norm``) for a training method.

    ``features`` is a device array [N, D] (float32, or float16/bfloat16 when the input was), or None
    when the rows are streamed from ``source``; ``labels`` int32 [N] are always in memory.
    ``preprocessing`` is the per-example map that produced the rows (the head applies it again).
    """

    features: jax.Array | None
    labels: jax.Array
    num_classes: int
    feature_norm: float
    source: ChunkSource | None = None
    preprocessing: Preprocessing | None = None
    total_rows: int | None = None  # global N when the rows are this process's share (distributed)

    @property
    def num_rows(self) -> int:
        """N, the public row count (over all processes when each holds a share)."""
        return int(self.labels.shape[0]) if self.total_rows is None else self.total_rows

    @property
    def dim(self) -> int:
        return int(self.features.shape[1] if self.features is not None else self.source.dim)

    @property
    def dtype(self) -> np.dtype:
        """The dtype chunks and features come in."""
        return np.dtype(
            self.features.dtype if self.features is not None else _device_dtype(self.source.dtype)
        )

    def iter_chunks(self, rows: int | None = None) -> Iterator[tuple[jax.Array, jax.Array]]:
        """``(X_chunk, y_chunk)`` device arrays in row order, from memory or from the source.

        ``rows`` defaults to the source's ``chunk_rows`` (or DEFAULT_CHUNK_ROWS in memory).
        """
        if rows is None:
            rows = self.source.chunk_rows if self.source is not None else DEFAULT_CHUNK_ROWS
        if rows < 1:
            raise ValueError(f"rows per chunk must be >= 1, got {rows}")
        if self.features is not None:
            for start in range(0, int(self.labels.shape[0]), rows):
                yield self.features[start : start + rows], self.labels[start : start + rows]
            return
        start = 0
        for chunk in self.source.iter_chunks(rows):
            stop = start + chunk.shape[0]
            yield jnp.asarray(chunk, dtype=self.dtype), self.labels[start:stop]
            start = stop


def _device_dtype(dtype: np.dtype) -> np.dtype:
    """Half-precision inputs stay half precision on the device; anything else becomes float32."""
    return np.dtype(dtype) if np.dtype(dtype).name in _HALF_DTYPES else np.dtype(np.float32)


def check_num_classes(num_classes: Any) -> int:
    """``num_classes`` must be given (the label space is public) and be an integer >= 2."""
    if num_classes is None:
        raise ValueError(
            "num_classes is required: the label space is public and must come from "
            "the dataset's metadata or the caller, never from the private labels."
        )
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return int(num_classes)


def _check_feature_dtype(dtype: np.dtype, feature_norm: float) -> None:
    if dtype.kind != "f" and dtype.name != "bfloat16":
        raise ValueError(f"features must be floating point, got dtype {dtype}")
    if dtype.name in _HALF_DTYPES and feature_norm >= float(jnp.finfo(dtype).max):
        raise ValueError(
            f"feature_norm={feature_norm} overflows {dtype.name} (max "
            f"{float(jnp.finfo(dtype).max)}); use a smaller feature_norm or float32."
        )


def _nonfinite_rows(chunk: np.ndarray) -> np.ndarray:
    """Indices of rows holding NaN/inf, also after the float32 cast (float64 beyond 3.4e38)."""
    with np.errstate(over="ignore"):
        cast = np.asarray(chunk, dtype=np.float32)
    return np.flatnonzero(~np.isfinite(cast).all(axis=1))


def _check_finite(bad: np.ndarray) -> None:
    """Raise a ValueError naming the rows (indices in the whole split) that are not finite."""
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ValueError(
            f"features hold NaN or infinite values (or overflow in the float32 cast)"
            f" in {bad.size} row(s): {shown}. Fix or drop these rows; they are never "
            "silently zeroed."
        )


def _private_sum_noise(
    config: FitConfig, ledger: Any, key: jax.Array | None, dim: int
) -> np.ndarray:
    """Record the private-mean release in the ledger, then draw its noise N(0, (s r)^2 I_D)."""
    if math.isinf(config.epsilon):
        return np.zeros(dim, np.float32)
    if ledger is None or key is None:
        raise ValueError("center='private' needs a ledger and a key to charge and draw the noise")
    remaining = ledger.remaining_mu
    if remaining is None or remaining <= 0:
        raise BudgetExceededError(
            "center='private' needs a Gaussian (GDP) budget left in the "
            f"ledger; remaining mu is {remaining}. Charge it first."
        )
    mu_center = math.sqrt(config.center_budget_fraction) * remaining
    noise_std = config.feature_norm / mu_center
    ledger.record_gaussian("center_mean", sensitivity=config.feature_norm, noise_std=noise_std)
    return np.asarray(jax.random.normal(key, (dim,), jnp.float32)) * np.float32(noise_std)


def _preprocessing(config: FitConfig, dim: int, public_mean: Any) -> Preprocessing:
    """The preprocessing before any private statistic: the public mean checked and attached."""
    if config.center == "public":
        if public_mean is None:
            raise ValueError("center='public' needs public_mean (a [D] vector from public data)")
        mean = np.asarray(public_mean, dtype=np.float32)
        if mean.shape != (dim,):
            raise ValueError(
                f"public_mean must have shape ({dim},) to match the features, got {mean.shape}"
            )
        store.check_finite(mean[None], what="public_mean")
        return Preprocessing(config.normalize, config.feature_norm, "public", mean)
    if public_mean is not None:
        raise ValueError(
            f"public_mean was given but center={config.center!r}; pass center='public' to use it"
        )
    return Preprocessing(config.normalize, config.feature_norm)


def _with_private_mean(
    pre: Preprocessing,
    config: FitConfig,
    row_sum: np.ndarray,
    num_rows: int,
    ledger: Any,
    key: jax.Array | None,
) -> Preprocessing:
    noisy = row_sum + _private_sum_noise(config, ledger, key, row_sum.shape[0])
    return Preprocessing(
        pre.normalize, pre.feature_norm, "private", (noisy / num_rows).astype(np.float32)
    )


def _check_labels(labels: Any, num_rows: int, num_classes: int) -> np.ndarray:
    if labels is None:
        raise ValueError("labels are required with array features (a store path brings its own)")
    labels = np.asarray(labels)
    if labels.shape != (num_rows,):
        raise ValueError(
            f"shape mismatch: {num_rows} feature rows but labels of shape "
            f"{labels.shape}; need one label per row"
        )
    store.check_labels(labels, num_classes)
    return labels.astype(np.int32)


def preprocess(
    features: Any,
    labels: Any,
    config: FitConfig,
    *,
    num_classes: int,
    public_mean: Any = None,
    ledger: Any = None,
    key: jax.Array | None = None,
) -> TrainData:
    """Validate in-memory rows, apply the preprocessing (module docstring) and put them on device.

    Errors (ValueError): non-2-D or empty features, NaN/inf rows (named), labels not [N] or outside
    ``[0, num_classes)``, half-precision overflow, a missing or mis-shaped public mean.
    """
    num_classes = check_num_classes(num_classes)
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array [N, D], got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"features are empty (shape {x.shape}); need at least one row and column")
    _check_feature_dtype(x.dtype, config.feature_norm)
    y = _check_labels(labels, x.shape[0], num_classes)
    _check_finite(_nonfinite_rows(x))
    pre = _preprocessing(config, x.shape[1], public_mean)
    if config.center == "private":
        row_sum = pre.bound(np.asarray(x, np.float32)).sum(axis=0, dtype=np.float64)
        pre = _with_private_mean(pre, config, row_sum, x.shape[0], ledger, key)
    rows = pre.apply(x).astype(_device_dtype(x.dtype))
    return TrainData(
        jnp.asarray(rows), jnp.asarray(y), num_classes, config.feature_norm, preprocessing=pre
    )


def _stream(
    source: ChunkSource,
    config: FitConfig,
    num_classes: int,
    public_mean: Any,
    ledger: Any,
    key: jax.Array | None,
) -> TrainData:
    """Validate a source chunk by chunk (and sum its bounded rows for a private mean)."""
    _check_feature_dtype(source.dtype, config.feature_norm)
    pre = _preprocessing(config, source.dim, public_mean)
    row_sum = np.zeros(source.dim, np.float64)
    labels, bad = [], []
    for start, x, y in source.iter_raw(source.chunk_rows):
        bad.append(_nonfinite_rows(x) + start)
        labels.append(y)
        if config.center == "private":
            row_sum += pre.bound(np.asarray(x, np.float32)).sum(axis=0, dtype=np.float64)
    _check_finite(np.concatenate(bad))
    y = _check_labels(np.concatenate(labels), source.num_rows, num_classes)
    if config.center == "private":
        pre = _with_private_mean(pre, config, row_sum, source.num_rows, ledger, key)
    return TrainData(
        None,
        jnp.asarray(y),
        num_classes,
        config.feature_norm,
        source=source.with_(pre),
        preprocessing=pre,
    )


def _chunk_rows(limit: int, dim: int) -> int:
    """Rows per streamed chunk: two float32 chunks (current + prefetched) within the budget."""
    return max(1, min(DEFAULT_CHUNK_ROWS, limit // (2 * 4 * dim)))


def open_store_split(
    spec: Any, labels: Any, num_classes: int, split: str
) -> tuple[str, str, store.SplitInfo]:
    """``(path, split, info)`` of a store spec ``"file.h5[:split]"``, checked against the public
    label space; a store brings its own labels, so passing ``labels`` too is an error."""
    if labels is not None:
        raise ValueError("labels come from the store; do not pass labels with a store path")
    path, split = store.parse_store_path(str(spec), split)
    info = store.split_info(path, split)
    if info.num_classes != num_classes:
        raise ValueError(
            f"num_classes={num_classes} but the store {path}:{split} declares "
            f"{info.num_classes} classes"
        )
    return path, split, info


def load_train_data(
    features: Any,
    labels: Any = None,
    *,
    config: FitConfig,
    num_classes: int,
    public_mean: Any = None,
    ledger: Any = None,
    key: jax.Array | None = None,
    split: str = "train",
) -> TrainData:
    """TrainData from arrays or a store spec ``"file.h5:train"`` (``split`` when none is named).

    The rows stay off the device (``features=None``, ``source`` set, read in chunks with prefetch)
    when ``N * D * itemsize > config.max_device_bytes``; otherwise they are loaded and preprocessed
    at once. A store's labels are its own; passing ``labels`` with a store path is an error.
    """
    num_classes = check_num_classes(num_classes)
    if jax.process_count() > 1:  # several processes: each loads only its share of the rows
        from private_head.distributed import load_process_rows

        return load_process_rows(
            features,
            labels,
            config=config,
            num_classes=num_classes,
            public_mean=public_mean,
            split=split,
        )
    limit = config.max_device_bytes
    if isinstance(features, (str, bytes)) or hasattr(features, "__fspath__"):
        path, split, info = open_store_split(features, labels, num_classes, split)
        if info.num_rows == 0:
            raise ValueError(f"split {split!r} of {path} is empty; need at least one row")
        itemsize = np.dtype(info.feature_dtype).itemsize
        if limit is not None and info.num_rows * info.dim * itemsize > limit:
            source = ChunkSource(path=path, split=split, chunk_rows=_chunk_rows(limit, info.dim))
            return _stream(source, config, num_classes, public_mean, ledger, key)
        features, labels, _ = store.read_split(path, split)
    x = np.asarray(features)
    if limit is not None and x.ndim == 2 and x.size and x.nbytes > limit:
        y = _check_labels(labels, x.shape[0], num_classes)
        source = ChunkSource(array=x, labels=y, chunk_rows=_chunk_rows(limit, x.shape[1]))
        return _stream(source, config, num_classes, public_mean, ledger, key)
    return preprocess(
        x, labels, config, num_classes=num_classes, public_mean=public_mean, ledger=ledger, key=key
    )
