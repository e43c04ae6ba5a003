"""Synthetic embedding-like data: Gaussian classes with a shared, anisotropic covariance.

Model. With ``K`` classes in ``D`` dimensions, example ``i`` of class ``y_i`` is

    x_i = m_{y_i} + U diag(sqrt(lambda)) z_i,      z_i ~ N(0, I_D),

- class means ``m_k = separation * u_k`` with ``u_k`` independent uniform unit vectors, so two
  means are about ``separation * sqrt(2)`` apart;
- a within-class covariance ``Sigma = U diag(lambda) U^T`` shared by all classes, with ``U`` a
  random orthonormal basis and the eigen-spectrum ``lambda_j ∝ (j + 1)^(-anisotropy)`` normalised
  to mean 1 (``trace(Sigma) = D``). ``anisotropy = 0`` is isotropic noise of unit variance per
  dimension; larger values let a few directions dominate, as in real embeddings.

Along a random direction the noise variance is ``trace(Sigma) / D = 1`` whatever the anisotropy, so
a class-sum prototype classifier (the private single step) sees the same margin
``separation / sqrt(2)`` in noise units at every anisotropy, whereas a covariance-aware head
(least squares, logistic regression) sees the Mahalanobis margin, larger by about
``sqrt(mean(1 / lambda))``.
Anisotropic presets are therefore where the single step is weak and least squares strong.

Class priors follow a Zipf law ``p_k ∝ (k + 1)^(-imbalance)`` (0 = balanced, class 0 the largest).
The per-class counts are ``N p_k`` rounded by largest remainder (so they sum to ``N`` and, when
balanced, differ by at most one); the test split has the same priors (i.i.d. with train).

Generation is chunked: the only arrays of the output's size are the outputs themselves (float32),
so peak memory stays near the output size plus ``D^2`` floats and one chunk.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import numpy as np

_CHUNK_ROWS = 65536


@dataclass(frozen=True)
class SyntheticSpec:
    """The parameters of one synthetic dataset (see the module docstring for the model)."""

    num_train: int
    num_test: int
    dim: int
    num_classes: int
    separation: float = 3.0
    anisotropy: float = 0.0
    imbalance: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_train < 1 or self.num_test < 1 or self.dim < 1 or self.num_classes < 2:
            raise ValueError(f"need num_train, num_test, dim >= 1 and num_classes >= 2; got {self}")
        if self.separation < 0 or self.anisotropy < 0 or self.imbalance < 0:
            raise ValueError(f"separation, anisotropy and imbalance must be >= 0; got {self}")

    def scaled(self, scale: float) -> SyntheticSpec:
        """The same data model with ``num_train`` and ``num_test`` multiplied by ``scale``.

        Sizes are rounded and kept at least ``num_classes`` so every class can appear.
        """
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        rows = lambda n: max(self.num_classes, round(n * scale))
        return dataclasses.replace(
            self, num_train=rows(self.num_train), num_test=rows(self.num_test)
        )


# Presets: shapes of common embedding benchmarks (ViT-B/16 width 768 on CIFAR; 1280 on ImageNet-1k,
# e.g. EfficientNet/ViT-H pre-logits). Test sizes are the datasets' own: 10k for CIFAR, 50k for
# ImageNet. Separations are set so that non-private logistic regression on the L2-normalised rows
# lands near published linear-probe accuracies (about 0.96 on cifar10-like at scale 0.1).
# "anisotropic" follows docs/architecture.md, "Two measurements" (30k x 64, 20 classes, a steep
# spectrum: prototype heads fail, covariance-aware heads succeed). "tiny" is for tests.
PRESETS: dict[str, SyntheticSpec] = {
    "cifar10-like": SyntheticSpec(50_000, 10_000, 768, 10, separation=3.5, anisotropy=0.5),
    "cifar100-like": SyntheticSpec(50_000, 10_000, 768, 100, separation=4.5, anisotropy=0.5),
    "imagenet-like": SyntheticSpec(
        1_281_167, 50_000, 1280, 1000, separation=5.0, anisotropy=0.5, imbalance=0.1
    ),
    "anisotropic": SyntheticSpec(30_000, 10_000, 64, 20, separation=1.0, anisotropy=2.0),
    "tiny": SyntheticSpec(400, 200, 8, 3, separation=3.0, anisotropy=0.5),
}


@dataclass(frozen=True)
class SyntheticData:
    """Train and test splits: features float32 ``[N, D]``, labels int32 ``[N]``."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    spec: SyntheticSpec


def class_priors(num_classes: int, imbalance: float) -> np.ndarray:
    """Zipf class priors ``p_k = (k + 1)^(-imbalance) / sum_j (j + 1)^(-imbalance)``."""
    weights = np.arange(1, num_classes + 1, dtype=np.float64) ** -float(imbalance)
    return weights / weights.sum()


def class_counts(num_rows: int, priors: np.ndarray) -> np.ndarray:
    """``num_rows * priors`` rounded by largest remainder: integers summing to ``num_rows``."""
    exact = num_rows * np.asarray(priors, dtype=np.float64)
    counts = np.floor(exact).astype(np.int64)
    short = num_rows - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def covariance_spectrum(dim: int, anisotropy: float) -> np.ndarray:
    """Eigenvalues ``lambda_j ∝ (j + 1)^(-anisotropy)``, scaled to mean 1 (``trace = dim``)."""
    spectrum = np.arange(1, dim + 1, dtype=np.float64) ** -float(anisotropy)
    return spectrum * (dim / spectrum.sum())


def _labels(rng: np.random.Generator, num_rows: int, priors: np.ndarray) -> np.ndarray:
    labels = np.repeat(np.arange(priors.size, dtype=np.int32), class_counts(num_rows, priors))
    rng.shuffle(labels)
    return labels


def _fill(
    rng: np.random.Generator,
    out: np.ndarray,
    labels: np.ndarray,
    means: np.ndarray,
    factor: np.ndarray,
) -> None:
    """Write ``means[labels] + z @ factor`` into ``out`` chunk by chunk.

    ``factor = diag(sqrt(lambda)) U^T``, so each row's noise has covariance ``U diag(lambda) U^T``.
    """
    for start in range(0, labels.size, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, labels.size)
        z = rng.standard_normal((stop - start, out.shape[1]), dtype=np.float32)
        np.matmul(z, factor, out=out[start:stop])
        out[start:stop] += means[labels[start:stop]]


def generate(spec: SyntheticSpec) -> SyntheticData:
    """Draw the train and test splits of ``spec`` (deterministic given ``spec.seed``)."""
    rng = np.random.default_rng(spec.seed)
    directions = rng.standard_normal((spec.num_classes, spec.dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    means = (spec.separation * directions).astype(np.float32)
    basis, _ = np.linalg.qr(rng.standard_normal((spec.dim, spec.dim)))
    factor = (np.sqrt(covariance_spectrum(spec.dim, spec.anisotropy))[:, None] * basis.T).astype(
        np.float32
    )
    priors = class_priors(spec.num_classes, spec.imbalance)
    splits = []
    for rows in (spec.num_train, spec.num_test):
        labels = _labels(rng, rows, priors)
        features = np.empty((rows, spec.dim), dtype=np.float32)
        _fill(rng, features, labels, means, factor)
        splits += [features, labels]
    return SyntheticData(*splits, num_classes=spec.num_classes, spec=spec)


def preset(name: str, scale: float = 1.0, seed: int | None = None) -> SyntheticSpec:
    """The spec of a named preset, shrunk by ``scale`` and with ``seed`` if given."""
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic preset {name!r}; choose one of {sorted(PRESETS)}")
    spec = PRESETS[name]
    spec = spec if seed is None else dataclasses.replace(spec, seed=seed)
    return spec if scale == 1 else spec.scaled(scale)


def write_store(
    spec: SyntheticSpec,
    path: str | os.PathLike,
    *,
    name: str = "synthetic",
    overwrite: bool = False,
) -> str:
    """Write ``spec``'s train and test splits as a feature store (``feature_extract.store``)."""
    from feature_extract.store import write_split

    data = generate(spec)
    attrs = {
        "dataset": name,
        "backbone": "synthetic",
        "preprocessing": ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(spec).items()),
    }
    for split, x, y in (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y)):
        write_split(
            path, split, x, y, num_classes=spec.num_classes, attrs=attrs, overwrite=overwrite
        )
    return os.fspath(path)


def bayes_margin(spec: SyntheticSpec) -> tuple[float, float]:
    """Typical pairwise margins in noise units: ``(prototype, mahalanobis)``.

    ``separation / sqrt(2)`` for a class-sum prototype classifier, and that times
    ``sqrt(mean(1 / lambda))`` for the covariance-aware (LDA) classifier.
    """
    inverse = float(np.mean(1.0 / covariance_spectrum(spec.dim, spec.anisotropy)))
    return spec.separation / math.sqrt(2), spec.separation * math.sqrt(inverse / 2)
