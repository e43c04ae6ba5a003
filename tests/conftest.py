"""Test-wide settings: CPU only, deterministic hypothesis runs without deadlines (JIT compiles)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", deadline=None, derandomize=True, max_examples=40)
settings.load_profile("ci")
