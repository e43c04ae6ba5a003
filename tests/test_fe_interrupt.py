"""Ctrl-C during an extraction stops it at once and keeps what was committed (issue 24, item 5).

Each interrupted run is checked the same way: exit status 130 within a generous bound, one line
saying how to resume, the rows committed before the signal kept, the writer lock released, and
the same command then completes a store equal to an uninterrupted run's (no gap, no duplicate).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from feature_extract import extract, lockfile, pipeline, store
from feature_extract.__main__ import main
from tests.helpers import store_contents

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
STOP_WITHIN_S = 10.0  # the issue asks for about a second; generous for a loaded 2-core machine
BATCH = 100

# The command line, with every device batch after the first running for minutes: its features go
# through a device loop of matrix products, dispatched asynchronously like a big batch of a real
# backbone, which the main thread can only wait for. Prints "committed" after each append.
SLOW_DEVICE = """
import sys
import jax, jax.numpy as jnp
from feature_extract import extraction, store
@jax.jit
def busy(x, n):
    start = jnp.full((2000, 2000), 0.01, x.dtype)
    acc = jax.lax.fori_loop(0, n, lambda i, a: jnp.tanh(a @ a), start)
    return x + jnp.where(n < 0, acc.sum(), 0).astype(x.dtype)
apply, batches = extraction.Extractor.apply, [0]
def slow_apply(self, images):
    batches[0] += 1
    return busy(apply(self, images), 0 if batches[0] == 1 else 10**6)
extraction.Extractor.apply = slow_apply
append = store.SplitWriter.append
def append_and_say(self, *args):
    append(self, *args)
    print("committed", flush=True)
store.SplitWriter.append = append_and_say
from feature_extract.__main__ import command_line
command_line(sys.argv[1:])
"""
# The command line, whose second flush (inside the second append) prints "flushing" and takes
# three seconds: a Ctrl-C then arrives in the middle of a store write.
SLOW_WRITE = """
import sys, time
import h5py
flushes = [0]
flush = h5py.File.flush
def slow_flush(self):
    flush(self)
    flushes[0] += 1
    if flushes[0] == 2:
        print("flushing", flush=True)
        time.sleep(3)
h5py.File.flush = slow_flush
from feature_extract.__main__ import command_line
command_line(sys.argv[1:])
"""


def _args(out) -> list[str]:
    return [
        "--data",
        "digits",
        "--model",
        "pixels",
        "--out",
        str(out),
        "--splits",
        "train=train[:500]",
        "--batch-size",
        str(BATCH),
        "--no-progress",
    ]


def _interrupt(script: str, out, wait_for: str, signals: int = 1) -> tuple[float, str]:
    """Run ``script`` on ``_args(out)``, send ``signals`` SIGINTs once it prints ``wait_for``;
    returns (seconds from the first signal to the exit, stderr) after checking the exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *_args(out)],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line == f"{wait_for}\n", (line, proc.stderr.read() if proc.poll() else "")
        start = time.monotonic()
        for _ in range(signals):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.2)
        _, err = proc.communicate(timeout=150)
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "interrupted; the batches written so far are kept: run the same command again to resume"
    ]
    return elapsed, err


def _assert_kept_released_and_resumable(out, rows: int, tmp_path) -> None:
    """``rows`` committed and resumable, the lock free; the rerun equals an uninterrupted run."""
    assert store.stored_attrs(out, "train")["rows_written"] == rows
    with pytest.raises(store.IncompleteSplitError, match="extraction stopped"):
        store.split_info(out, "train")
    assert store.lock_holder(out) is None and not os.path.exists(lockfile.lock_path(out))
    with store.lock_store(out):  # nobody holds it
        pass
    assert main(_args(out)) == 0  # the same command resumes
    reference = tmp_path / "reference.h5"
    assert main(_args(reference)) == 0
    assert store_contents(out) == store_contents(reference)
    ids = np.frombuffer(store_contents(out)["train"][0]["ids"], np.int64)
    assert ids.size == 500 == np.unique(ids).size


def test_ctrl_c_drops_a_running_device_batch_and_exits_at_once(tmp_path):
    out = tmp_path / "out.h5"
    elapsed, _ = _interrupt(SLOW_DEVICE, out, "committed")
    assert elapsed < STOP_WITHIN_S  # not the two minutes the device batch still needs
    _assert_kept_released_and_resumable(out, BATCH, tmp_path)


def test_ctrl_c_during_a_store_write_lets_it_commit_and_a_second_one_changes_nothing(tmp_path):
    out = tmp_path / "out.h5"
    elapsed, _ = _interrupt(SLOW_WRITE, out, "flushing", signals=2)
    assert elapsed < STOP_WITHIN_S
    _assert_kept_released_and_resumable(out, 2 * BATCH, tmp_path)  # the batch being written too


def test_keyboard_interrupt_in_the_python_api_leaves_the_store_consistent(tmp_path, monkeypatch):
    """A KeyboardInterrupt raised while batches are decoded, and a SIGINT that arrives inside a
    store write, both propagate out of ``extract`` with the committed rows kept and the lock
    released; the same call then completes the store."""
    out, reference = tmp_path / "out.h5", tmp_path / "reference.h5"
    kwargs = {"splits": "train=train[:500]", "batch_size": BATCH, "progress": False}
    load, calls = pipeline.load_batch, [0]

    def load_then_interrupt(*args):
        calls[0] += 1
        if calls[0] == 4:
            raise KeyboardInterrupt
        return load(*args)

    monkeypatch.setattr(pipeline, "load_batch", load_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        extract("digits", "pixels", out, workers=1, prefetch=1, **kwargs)
    monkeypatch.undo()
    assert store.stored_attrs(out, "train")["rows_written"] == 2 * BATCH  # the third in flight
    assert store.lock_holder(out) is None

    check_space, checks = store._check_space, [0]

    def check_space_with_signal(*args):  # runs inside an append, after the file is opened
        checks[0] += 1
        if checks[0] == 1:
            signal.raise_signal(signal.SIGINT)  # delivered once the append has committed
        return check_space(*args)

    monkeypatch.setattr(store, "_check_space", check_space_with_signal)
    with pytest.raises(KeyboardInterrupt):
        extract("digits", "pixels", out, **kwargs)
    monkeypatch.undo()
    assert store.stored_attrs(out, "train")["rows_written"] == 3 * BATCH  # that batch committed
    assert store.lock_holder(out) is None

    extract("digits", "pixels", out, **kwargs)
    extract("digits", "pixels", reference, **kwargs)
    assert store_contents(out) == store_contents(reference)


def _committed_rows(path) -> int:
    """The committed row count of ``train``, read without HDF5's file lock (so that the writer's
    next append is never refused); 0 while the file is absent or caught mid-write."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(f["train"].attrs["rows_written"])
    except (OSError, KeyError):
        return 0


@pytest.mark.slow
def test_python_m_feature_extract_on_a_vit_stops_at_once_on_ctrl_c(tmp_path):
    """The real command on a random-initialised ViT (seconds a batch on a CPU): SIGINT once the
    first batch is committed, while the next ones compute."""
    out = tmp_path / "vit.h5"
    args = [
        "--data",
        "digits",
        "--model",
        "vit-ti16-i21k",
        "--init-random",
        "--dtype",
        "float32",
        "--splits",
        "train=train[:96]",
        "--batch-size",
        "32",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "feature_extract", "--out", str(out), *args],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while proc.poll() is None and _committed_rows(out) == 0:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=150)
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and elapsed < STOP_WITHIN_S, (elapsed, err)
    assert "run the same command again to resume" in err.splitlines()[-1]
    rows = store.stored_attrs(out, "train")["rows_written"]
    assert rows in (32, 64)
    assert store.lock_holder(out) is None
    assert main(["--out", str(out), *args]) == 0
    assert main(["--out", str(tmp_path / "reference.h5"), *args]) == 0
    assert store_contents(out) == store_contents(tmp_path / "reference.h5")
