"""One writer per store: the writer lock (two real processes) and the per-split writer token.

- A second extraction on a store that another run is writing (``--overwrite``, another dtype) fails
  at once with one line naming the first run's pid; the first run then completes, and the store
  holds only its rows under its identity.
- A writer killed with SIGKILL leaves a stale lock file that blocks nobody.
- A split writer whose split was replaced or taken over under it writes nothing.
- An assembled (virtual) store refuses a shard rewritten after the assembly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from feature_extract import datasets, lockfile, multihost, store
from feature_extract.__main__ import main
from feature_extract.store import SplitWriter, StoreError, StoreLockedError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}

# Runs the feature_extract CLI, and after its first append prints "appended" and waits for a line
# on stdin: a writer caught in the middle of a split, for as long as the test needs.
PAUSED = """
import sys
from feature_extract import store
append, calls = store.SplitWriter.append, [0]
def append_then_wait(self, *args):
    append(self, *args)
    calls[0] += 1
    if calls[0] == 1:
        print("appended", flush=True)
        sys.stdin.readline()
store.SplitWriter.append = append_then_wait
from feature_extract.__main__ import main
sys.exit(main(sys.argv[1:]))
"""
# Takes a store's writer lock, says so, and holds it until stdin closes.
HOLD = """
import sys
from feature_extract import store
with store.lock_store(sys.argv[1], command="the test's lock holder"):
    print("locked", flush=True)
    sys.stdin.read()
"""
WRITE = """
import sys
import numpy as np
from feature_extract import store
store.write_split(sys.argv[1], "train", np.ones((3, 2)), np.array([0, 1, 0]), num_classes=2)
"""


def _args(out: str) -> list[str]:
    return [
        "--data",
        "digits",
        "--model",
        "pixels",
        "--out",
        out,
        "--splits",
        "train=train[:400]",
        "--batch-size",
        "32",
        "--no-progress",
    ]


def _start_paused(out: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED, *_args(out)],
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if line != "appended\n":
        proc.kill()
        raise AssertionError(f"the paused writer did not start: {line!r} {proc.stderr.read()}")
    return proc


def _digits_pixels(rows: int) -> np.ndarray:
    source = datasets.open_source("digits", "train")
    images, _, _ = source.get(range(rows))
    return np.stack(images).reshape(rows, -1) / np.float32(255)


def test_second_writer_is_refused_naming_the_first_which_then_completes(tmp_path):
    out = str(tmp_path / "s.h5")
    first = _start_paused(out)
    try:
        assert store.lock_holder(out)["pid"] == first.pid
        second = subprocess.run(
            [sys.executable, "-m", "feature_extract", *_args(out), "--overwrite"]
            + ["--output-dtype", "float16"],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 2, second.stderr
        line = second.stderr.splitlines()[0]
        assert len(second.stderr.splitlines()) == 1
        assert line.startswith(f"error: {out} is being written by another process: pid ")
        assert f"pid {first.pid} on host " in line and "--data digits" in line
        stdout, stderr = first.communicate("\n", timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    assert "400 rows x 192 (float32)" in stdout
    x, _, info = store.read_split(out, "train")
    assert info.feature_dtype == "float32" and info.attrs["compute_dtype"] == "bfloat16"
    np.testing.assert_allclose(x, _digits_pixels(400), rtol=1e-6)  # every row from the first run
    assert not os.path.exists(lockfile.lock_path(out)) and store.lock_holder(out) is None


def test_a_killed_writer_leaves_a_stale_lock_that_blocks_nobody(tmp_path, capsys):
    out = str(tmp_path / "s.h5")
    killed = _start_paused(out)
    killed.kill()
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert os.path.exists(lockfile.lock_path(out))  # the file stays, the kernel dropped the lock
    assert store.lock_holder(out) is None  # its recorded pid is dead
    assert main(_args(out)) == 0  # resumes the split
    assert "400 rows x 192" in capsys.readouterr().out
    x, _, _ = store.read_split(out, "train")
    np.testing.assert_allclose(x, _digits_pixels(400), rtol=1e-6)


def test_write_split_is_refused_while_another_process_holds_the_lock(tmp_path):
    path = str(tmp_path / "f.h5")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, path],
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(StoreLockedError, match=rf"pid {holder.pid} .*the test's lock holder"):
            store.write_split(path, "train", np.ones((3, 2)), np.array([0, 1, 0]), num_classes=2)
        with pytest.raises(StoreLockedError):
            SplitWriter(path, "train", dim=2, total_rows=3, num_classes=2)
        assert not os.path.exists(path)  # nothing written
    finally:
        holder.communicate("", timeout=60)
    store.write_split(path, "train", np.ones((3, 2)), np.array([0, 1, 0]), num_classes=2)


def test_reading_a_split_another_process_is_writing_names_it_and_says_to_wait(tmp_path):
    path = str(tmp_path / "f.h5")
    with SplitWriter(path, "train", dim=3, total_rows=10, num_classes=2) as writer:
        writer.append(*_rows(0, 4))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, path],
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        for read in (store.split_info, store.SplitReader, store.read_split):
            with pytest.raises(store.IncompleteSplitError) as info:
                read(path, "train")
            message = str(info.value)
            assert f"is being written right now by pid {holder.pid} on host " in message
            assert "(the test's lock holder): 4 of 10 rows so far. Wait for that run" in message
            assert "stopped" not in message and "again to resume" not in message
    finally:
        holder.communicate("", timeout=60)
    with pytest.raises(store.IncompleteSplitError, match="extraction stopped. Run the same"):
        store.split_info(path, "train")  # no live writer: rerun to resume


def test_the_lock_is_reentrant_here_and_exclusive_across_processes(tmp_path):
    path = str(tmp_path / "f.h5")
    with store.lock_store(path, command="outer"):
        with store.lock_store(path):  # nested holders in one process share the lock
            holder = store.lock_holder(path)
            assert holder["pid"] == os.getpid() and holder["command"] == "outer"
        other = subprocess.run(
            [sys.executable, "-c", WRITE, path], cwd=ROOT, env=ENV, capture_output=True, text=True
        )
        assert other.returncode != 0 and "StoreLockedError" in other.stderr
        assert f"pid {os.getpid()} on host" in other.stderr
        store.write_split(path, "train", np.ones((3, 2)), np.array([0, 1, 0]), num_classes=2)
    assert not os.path.exists(lockfile.lock_path(path))
    done = subprocess.run(
        [sys.executable, "-c", WRITE, path], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert "already complete" in done.stderr  # it got the lock, and met the complete split


def test_a_garbage_lock_file_does_not_block(tmp_path):
    path = str(tmp_path / "f.h5")
    with open(lockfile.lock_path(path), "w") as f:
        f.write("not json")
    assert store.lock_holder(path) == {}
    store.write_split(path, "train", np.ones((3, 2)), np.array([0, 1, 0]), num_classes=2)


def _rows(start, stop, dim=3, scale=1.0):
    x = scale * np.arange(start * dim, stop * dim, dtype=np.float32).reshape(-1, dim)
    return x, (np.arange(start, stop) % 2).astype(np.int32), np.arange(start, stop)


def _writer(path, split="train", **kw):
    return SplitWriter(path, split, dim=3, total_rows=10, num_classes=2, **kw)


def test_a_writer_whose_split_was_replaced_writes_nothing(tmp_path):
    path = tmp_path / "f.h5"
    old = _writer(path, attrs={"backbone": "a"})
    old.append(*_rows(0, 4))
    new = _writer(path, attrs={"backbone": "b"}, overwrite=True)  # replaces the split
    new.append(*_rows(0, 10, scale=2.0))
    new.finish()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="replaced or taken over by another writer.*nothing"):
        old.append(*_rows(4, 10))
    old.close()
    assert path.read_bytes() == before
    x, _, info = store.read_split(path, "train")
    assert info.attrs["backbone"] == "b"
    np.testing.assert_array_equal(x, _rows(0, 10, scale=2.0)[0])
    # A writer with all its rows, replaced before it marks the split complete, cannot finish.
    done = _writer(path, split="test")
    done.append(*_rows(0, 10))
    store.write_split(
        path, "test", np.ones((4, 3)), np.arange(4) % 2, num_classes=2, overwrite=True
    )
    with pytest.raises(StoreError, match="replaced or taken over"):
        done.finish()
    assert store.split_info(path, "test").num_rows == 4


def test_a_resumed_writer_fences_off_the_one_it_took_over_from(tmp_path):
    path = tmp_path / "f.h5"
    old = _writer(path)
    old.append(*_rows(0, 4))
    resumed = _writer(path)
    assert resumed.rows_written == 4
    with pytest.raises(StoreError, match="taken over"):
        old.append(*_rows(4, 6))
    resumed.append(*_rows(4, 10))
    resumed.finish()
    x, _, _ = store.read_split(path, "train")
    np.testing.assert_array_equal(x, _rows(0, 10)[0])


def test_a_writer_whose_file_was_replaced_writes_nothing(tmp_path):
    path = tmp_path / "f.h5"
    old = _writer(path)
    old.append(*_rows(0, 4))
    os.remove(path)
    store.write_split(path, "train", np.ones((10, 3)), np.arange(10) % 2, num_classes=2)
    with pytest.raises(StoreError, match="replaced"):
        old.append(*_rows(4, 10))
    np.testing.assert_array_equal(store.read_split(path, "train")[0], np.ones((10, 3)))


def test_an_assembled_store_refuses_a_shard_rewritten_after_assembly(tmp_path):
    shards = [str(tmp_path / f"s{i}.h5") for i in range(2)]
    for i, shard in enumerate(shards):
        store.write_split(
            shard,
            "train",
            np.full((5, 2), float(i)),
            np.arange(5) % 2,
            num_classes=2,
            ids=np.arange(5 * i, 5 * i + 5),
            attrs={"row_start": 5 * i, "row_stop": 5 * i + 5},
        )
    multihost.assemble(tmp_path / "all.h5", shards)
    assert store.read_split(tmp_path / "all.h5", "train")[0].shape == (10, 2)
    store.write_split(  # same shape and identity, other rows
        shards[1],
        "train",
        np.full((5, 2), 7.0),
        np.arange(5) % 2,
        num_classes=2,
        ids=np.arange(5, 10),
        attrs={"row_start": 5, "row_stop": 10},
        overwrite=True,
    )
    with pytest.raises(StoreError, match="rewritten after the store was assembled"):
        store.read_split(tmp_path / "all.h5", "train")
