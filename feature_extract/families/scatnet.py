"""``scatnet``: a 2-D Morlet wavelet scattering network, weight-free (Tramer & Boneh 2021).

Tramer & Boneh ("Differentially Private Learning Needs Better Features") train private linear
heads on the scattering transform of Oyallon & Mallat: ``J = 2`` scales, ``L = 8`` angles, order 2,
as kymatio computes it. Of an image ``x`` (here the grayscale image, below) with ``phi`` a Gaussian
low-pass filter at scale ``2^J`` and ``psi_{j,t}`` Morlet wavelets at scale ``2^j`` and angle
``t pi / L``, the channels are (docs/architecture.md, "Backbones")

    S0 x          = x * phi                                     1 channel
    S1 x[j1, t1]  = |x * psi_{j1,t1}| * phi                     J L channels
    S2 x[n1, n2]  = ||x * psi_{j1,t1}| * psi_{j2,t2}| * phi     j2 > j1: L^2 J (J - 1) / 2 channels

each subsampled by ``2^J``: ``C = 1 + J L + L^2 J (J - 1) / 2`` channels (81 for J = 2, L = 8) of
``floor(H / 2^J) x floor(W / 2^J)``, flattened channel-major: 28x28 MNIST gives 81 x 7 x 7 = 3969
features. Its channels are declared as the feature groups (``feature_groups``: C contiguous
groups of ``h w`` features), which the store records and ``private_head``'s
``standardize="auto"`` reads. The transform follows kymatio 0.3
(``Scattering2D(J, (H, W), L)``), whose numbers it reproduces (tests/test_scatnet.py):

- the image is reflect-padded to ``P = (floor((H + 2^J) / 2^J) + 1) 2^J`` (same for W), convolved
  in the Fourier domain, and the border cropped (one coefficient each side after subsampling);
- filters are built in numpy, in space on the padded grid and periodised over 5 x 5 tiles, then
  taken to Fourier (their real part):
  ``gabor(u) = exp(-u^T R D R^T u / (2 sigma^2) + i xi (u_0 cos theta + u_1 sin theta)) /
  (2 * 3.1415 * sigma^2 / s)`` with ``R`` the rotation by ``theta`` and ``D = diag(1, s^2)``
  (3.1415 is kymatio's constant); the wavelet ``psi_{j,t}`` is ``gabor - K gabor|_{xi=0}`` with
  ``K`` making its mean zero, ``sigma = 0.8 2^j``, ``theta = (L/2 - 1 - t) pi / L``,
  ``xi = 3 pi / 4 / 2^j``, ``s = 4 / L``; ``phi`` is ``gabor`` with ``sigma = 0.8 2^(J-1)``,
  ``xi = 0``, ``s = 1``;
- subsampling by ``k`` in Fourier is the mean of the ``k x k`` aliased copies of the spectrum,
  and a filter applied at resolution ``2^-r`` is its spectrum with frequencies above that band
  zeroed and folded the same way (summed).

Input: ``value_range(0,1)`` images (Tramer & Boneh's MNIST input, ``ToTensor``), converted to
grayscale on the device with the ITU-R 601-2 luma weights ``0.299 R + 0.587 G + 0.114 B``
(Pillow's ``convert("L")`` without its rounding to integers; a gray image stays itself). The
registered input size is 28 (``resize(28)`` first: MNIST passes unchanged, other sizes are
resized, squashing the aspect ratio); ``--resolution R`` scatters ``R x R`` images instead
(``D = 81 floor(R / 4)^2``; ``R >= 4``). Computed in float32 whatever the compute dtype (XLA
has no bfloat16 FFT).

``scatnet-gn`` adds Tramer & Boneh's per-example normalisation: group normalisation of the
scattering channels without affine parameters, as ``torch.nn.GroupNorm(G, C, affine=False)``:
channels split into ``G`` contiguous groups, each group of each example (its channels x the
spatial grid) mapped to ``(v - mean) / sqrt(var + 1e-5)`` (biased variance). ``G = 27`` (three
channels a group), the group count of their published GroupNorm recipe. It is a function of the
example alone, so free under the privacy conventions.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from feature_extract import registry

LUMA = (0.299, 0.587, 0.114)
GROUP_NORM_EPS = 1e-5
KYMATIO_PI = 3.1415  # kymatio's normalisation constant of the Gabor filter, kept for parity


def num_channels(J: int, L: int) -> int:
    """``1 + J L + L^2 J (J - 1) / 2``: the scattering channels of order <= 2."""
    return 1 + J * L + L * L * J * (J - 1) // 2


def padded_size(n: int, J: int) -> int:
    """``(floor((n + 2^J) / 2^J) + 1) 2^J``: the reflect-padded side for an input side ``n``."""
    return ((n + 2**J) // 2**J + 1) * 2**J


def gabor(M: int, N: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """The Gabor filter of the module docstring on an ``M x N`` grid, periodised over 5 x 5 tiles
    (complex128, in space)."""
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    curv = rot @ np.diag([1.0, slant * slant]) @ rot.T / (2 * sigma * sigma)
    tiles = np.arange(-2, 3)
    u0 = (np.arange(M)[None, :] + M * tiles[:, None]).reshape(-1)[:, None]  # every tile's rows
    u1 = (np.arange(N)[None, :] + N * tiles[:, None]).reshape(-1)[None, :]
    quad = curv[0, 0] * u0 * u0 + (curv[0, 1] + curv[1, 0]) * u0 * u1 + curv[1, 1] * u1 * u1
    wave = np.exp(-quad + 1j * xi * (u0 * c + u1 * s))
    out = wave.reshape(5, M, 5, N).sum(axis=(0, 2))
    return out / (2 * KYMATIO_PI * sigma * sigma / slant)


def morlet(M: int, N: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """``gabor - K gabor|_{xi=0}`` with ``K`` chosen so that the sum over the grid is zero."""
    wave = gabor(M, N, sigma, theta, xi, slant)
    envelope = gabor(M, N, sigma, theta, 0.0, slant)
    return wave - wave.sum() / envelope.sum() * envelope


def at_resolution(spectrum: np.ndarray, r: int) -> np.ndarray:
    """A spectrum for signals subsampled by ``2^r``: frequencies outside the band zeroed, then the
    ``2^r x 2^r`` blocks of size ``(M / 2^r, N / 2^r)`` summed."""
    M, N = spectrum.shape
    k = 2**r
    kept = spectrum.copy()
    for axis, n in ((0, M), (1, N)):
        start, length = int(n * 2.0 ** (-r - 1)), int(n * (1 - 2.0**-r))
        index = [slice(None), slice(None)]
        index[axis] = slice(start, start + length)
        kept[tuple(index)] = 0
    return kept.reshape(k, M // k, k, N // k).sum(axis=(0, 2))


@cache
def filter_bank(M: int, N: int, J: int, L: int) -> tuple[tuple[np.ndarray, ...], tuple]:
    """``(phi, psi)`` in Fourier (float32) for an ``M x N`` padded grid.

    ``phi[r]`` is the low-pass filter at resolution ``2^-r`` (``r < J``); ``psi[j][r]`` stacks
    the ``L`` wavelets of scale ``j`` at resolution ``2^-r`` (``r <= j``, ``r < max(J - 1, 1)``),
    shape ``[L, M / 2^r, N / 2^r]``.
    """
    psi = []
    for j in range(J):
        spectra = [
            np.real(
                np.fft.fft2(
                    morlet(
                        M,
                        N,
                        0.8 * 2**j,
                        (int(L - L / 2 - 1) - t) * np.pi / L,
                        3.0 / 4.0 * np.pi / 2**j,
                        4.0 / L,
                    )
                )
            )
            for t in range(L)
        ]
        levels = range(min(j + 1, max(J - 1, 1)))
        psi.append(
            tuple(
                np.stack([at_resolution(s, r) for s in spectra]).astype(np.float32) for r in levels
            )
        )
    phi_spectrum = np.real(np.fft.fft2(gabor(M, N, 0.8 * 2 ** (J - 1), 0.0, 0.0, 1.0)))
    phi = tuple(at_resolution(phi_spectrum, r).astype(np.float32) for r in range(J))
    return phi, tuple(psi)


def subsample(spectrum: jax.Array, k: int) -> jax.Array:
    """The spectrum of the signal subsampled by ``k`` on both axes: the mean of its aliases."""
    if k == 1:
        return spectrum
    *lead, M, N = spectrum.shape
    return spectrum.reshape(*lead, k, M // k, k, N // k).mean(axis=(-4, -2))


def scattering(x: jax.Array, J: int, L: int) -> jax.Array:
    """The order-2 scattering ``[B, C, floor(H / 2^J), floor(W / 2^J)]`` of ``x [B, H, W]``."""
    B, H, W = x.shape
    if min(H, W) < 2**J:
        raise ValueError(f"scattering with J={J} needs images of at least {2**J} pixels a side")
    M, N = padded_size(H, J), padded_size(W, J)
    top, left = (M - H) // 2, (N - W) // 2
    x = jnp.pad(x, ((0, 0), (top, M - H - top), (left, N - W - left)), mode="reflect")
    phi, psi = filter_bank(M, N, J, L)

    def low_pass(spectrum: jax.Array, r: int) -> jax.Array:
        out = jnp.fft.ifft2(subsample(spectrum * phi[r], 2 ** (J - r))).real
        return out[..., 1:-1, 1:-1]

    u0 = jnp.fft.fft2(x)
    first, second = [low_pass(u0, 0)[:, None]], []
    for j1 in range(J):
        u1 = jnp.fft.fft2(jnp.abs(jnp.fft.ifft2(subsample(u0[:, None] * psi[j1][0], 2**j1))))
        first.append(low_pass(u1, j1))
        blocks = []
        for j2 in range(j1 + 1, J):
            u2 = subsample(u1[:, :, None] * psi[j2][j1], 2 ** (j2 - j1))
            blocks.append(low_pass(jnp.fft.fft2(jnp.abs(jnp.fft.ifft2(u2))), j2))
        if blocks:
            block = jnp.concatenate(blocks, axis=2)  # [B, L (t1), (j2, t2), h, w]
            second.append(block.reshape(B, -1, *block.shape[-2:]))
    return jnp.concatenate(first + second, axis=1)


def group_norm(s: jax.Array, groups: int, eps: float = GROUP_NORM_EPS) -> jax.Array:
    """``(v - mean) / sqrt(var + eps)`` over each of ``groups`` contiguous channel groups of each
    example (``s [B, C, h, w]``, biased variance)."""
    B, C = s.shape[:2]
    if C % groups:
        raise ValueError(f"{C} scattering channels do not split into {groups} groups")
    g = s.reshape(B, groups, -1)
    mean = g.mean(axis=-1, keepdims=True)
    var = ((g - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((g - mean) / jnp.sqrt(var + eps)).reshape(s.shape)


class ScatterNet(nn.Module):
    """Images ``[B, H, W, 3]`` in [0, 1] -> scattering features ``[B, C h w]`` (float32)."""

    J: int = 2
    L: int = 8
    groups: int | None = None

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        gray = jnp.asarray(images, jnp.float32) @ jnp.asarray(LUMA, jnp.float32)
        s = scattering(gray, self.J, self.L)
        if self.groups:
            s = group_norm(s, self.groups)
        return s.reshape(s.shape[0], -1)


def feature_dim(config: Mapping[str, Any], resolution: int | None) -> int | None:
    """``C floor(R / 2^J)^2`` for square ``R x R`` inputs."""
    if resolution is None:
        return None
    J, L = int(config.get("J", 2)), int(config.get("L", 8))
    return num_channels(J, L) * (resolution // 2**J) ** 2


def feature_groups(config: Mapping[str, Any]) -> int:
    """The scattering channels ``C`` (81 for J = 2, L = 8): the output is flattened channel-major,
    so each channel's ``h w`` features are one contiguous group (``Family.feature_groups``)."""
    return num_channels(int(config.get("J", 2)), int(config.get("L", 8)))


def build(config: Mapping[str, Any], dtype: Any = jnp.float32) -> ScatterNet:
    del dtype  # always float32: XLA has no bfloat16 FFT
    return ScatterNet(**dict(config))


FAMILY = registry.register_family(
    registry.Family(
        "scatnet", build, feature_dim, None, "none", __name__, feature_groups=feature_groups
    )
)
PREPROCESSING = "resize(28)|value_range(0,1)"
registry.register(
    registry.BackboneSpec(
        "scatnet",
        FAMILY.name,
        {"J": 2, "L": 8},
        28,
        PREPROCESSING,
        description="Morlet scattering of the gray image, J=2, L=8 (Tramer & Boneh 2021)",
    )
)
registry.register(
    registry.BackboneSpec(
        "scatnet-gn",
        FAMILY.name,
        {"J": 2, "L": 8, "groups": 27},
        28,
        PREPROCESSING,
        description="scatnet with per-example group normalisation, 27 groups (Tramer & Boneh)",
    )
)
