"""Test-wide settings and shared fixtures: CPU only, deterministic hypothesis runs without
deadlines (JIT compiles), small data and stores."""

import os
import signal
import threading

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from tests.helpers import blobs, write_store  # noqa: E402

settings.register_profile("ci", deadline=None, derandomize=True, max_examples=40)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Every test starts with Python's own SIGINT handler and leaves the one it found. Two
    things changed it for later tests on the same worker: a test that runs ``python -m
    private_head`` in-process installs the command line's handler (``interrupt_once``, which
    ignores SIGINT once it has fired), and a shell that starts the suite as a background job
    hands it SIGINT ignored; an ignored SIGINT is inherited by the subprocesses the interrupt
    tests send it to, and they then never stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def toy():
    """A small 3-class problem ``(x [240, 8] float32, y [240])``."""
    return blobs()


@pytest.fixture
def toy_store(tmp_path):
    """A store with train (240 rows) and test (90 rows) splits of the toy problem; its path."""
    x, y = blobs(330, seed=1)
    return write_store(
        tmp_path / "toy.h5", {"train": (x[:240], y[:240]), "test": (x[240:], y[240:])}, 3
    )
