"""Noise keys: 64 bits from the operating system's secure random source, or a caller's seed.

JAX's default PRNG (threefry2x32) has a 64-bit key: two uint32 words. ``jax.random.key(s)`` keeps
only the low 32 bits of ``s`` under JAX's defaults (x64 off), so an unseeded key built that way
would be one of 2^32 noise streams, which a search over seeds can test against a published head.
Here the two key words come straight from ``secrets.token_bytes(8)`` (``jax.random.wrap_key_data``);
a caller's integer seed, of any size, is hashed with SHA-256 to the two words, so seeds that differ
only above bit 32 give different noise. With several JAX processes, process 0's words are
broadcast so that every process adds the same noise (the noise enters once).
"""

from __future__ import annotations

import hashlib
import secrets

import jax
import numpy as np

IMPL = "threefry2x32"  # explicit, whatever the default PRNG implementation is set to
KEY_WORDS = 2  # its key: 64 bits


def seed_words(seed: int) -> np.ndarray:
    """The two uint32 key words of an integer seed: the first 8 bytes of SHA-256 of its text."""
    digest = hashlib.sha256(f"dp-linear-probe seed {int(seed)}".encode()).digest()
    return np.frombuffer(digest[: 4 * KEY_WORDS], dtype="<u4").astype(np.uint32)


def secure_words() -> np.ndarray:
    """Two uint32 words from the OS secure random source (64 bits), the same on every process."""
    words = np.frombuffer(secrets.token_bytes(4 * KEY_WORDS), dtype="<u4").astype(np.uint32)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        words = np.asarray(multihost_utils.broadcast_one_to_all(words), dtype=np.uint32)
    return words


def noise_key(seed: int | None) -> tuple[jax.Array, bool]:
    """``(key, seeded)``: a typed JAX key from ``seed``, or from 64 OS-random bits when None.

    A seeded key reproduces its noise (anyone who knows the seed can subtract it), so the report
    says ``seeded: true``; never publish a seeded head as private.
    """
    if seed is None:
        return jax.random.wrap_key_data(secure_words(), impl=IMPL), False
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    return jax.random.wrap_key_data(seed_words(int(seed)), impl=IMPL), True
