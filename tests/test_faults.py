"""Fault injection: each fault gives a clear error or a clean resume, never a silently wrong result.

- SIGKILL during an out-of-core training run (mid-stream, and while the head file is saved): no
  half-written head exists, and the same command run again gives the uninterrupted run's head.
- Disk full during extraction (a file-size limit, RLIMIT_FSIZE, in the extraction subprocess): a
  clear error before anything is written, and the same command without the limit resumes to the
  store an uninterrupted run writes.
- Flipped bytes in a store's features: the fletcher32 checksum turns into a StoreError wherever the
  rows are read (fit in memory, streamed fit, the CLI, an assembled multi-host store). The reader
  itself is covered by tests/test_fe_store.py.

SIGKILL during extraction is covered by tests/test_fe_resume.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

import private_head
from feature_extract import multihost, store
from feature_extract.__main__ import main as extract_main
from private_head.cli import main as head_main
from tests.helpers import store_contents

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}

# Runs the private_head CLI and SIGKILLs itself at a chosen point: the N-th read of training rows
# from the store ("read N"), or after the head's temporary file is written, before its rename
# ("save 0").
KILLER = """
import os, signal, sys
where, count = sys.argv[1], int(sys.argv[2])
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if where == "read":
    from feature_extract import store
    read, calls = store.SplitReader.read_into, [0]
    def read_then_die(self, *args):
        calls[0] += 1
        if calls[0] == count:
            die()
        return read(self, *args)
    store.SplitReader.read_into = read_then_die
else:  # killed as the head file is renamed into place (the budget file's renames go on)
    replace = os.replace
    os.replace = lambda src, dst: die() if str(dst).endswith(".npz") else replace(src, dst)
from private_head.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _store(path, rows=300, dim=24, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    features = rng.normal(size=(rows, dim)) + 3 * np.eye(classes, dim)[labels]
    for split in ("train", "test"):
        store.write_split(path, split, features.astype(np.float32), labels, num_classes=classes)
    return path


def _head_args(path, out_dir):
    # 300 rows streamed from the store in chunks of 20: 15 reads per step, so read 25 is in the
    # second of the three steps.
    return [
        "--features",
        str(path),
        "--epsilon",
        "2",
        "--method",
        "dp_gd",
        "--steps",
        "3",
        "--seed",
        "5",
        "--chunk-rows",
        "20",
        "--max-device-bytes",
        "20000",  # below the split's 28.8 kB: it streams on every pass, never kept in memory
        "--out-dir",
        str(out_dir),
    ]


def _heads(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".npz") and not n.startswith("."))


@pytest.mark.slow  # two training processes
def test_sigkill_during_streamed_training_leaves_no_head_and_reruns_identically(tmp_path):
    path = _store(tmp_path / "f.h5")
    kills = {"read": 25, "save": 0}  # both killed runs go on while the reference trains here
    procs = {
        where: subprocess.Popen(
            [sys.executable, "-c", KILLER, where, str(count), *_head_args(path, tmp_path / where)],
            cwd=ROOT,
            env=ENV,
            stderr=subprocess.PIPE,
            text=True,
        )
        for where, count in kills.items()
    }
    try:
        reference = tmp_path / "reference"
        assert head_main(_head_args(path, reference)) == 0  # uninterrupted
        errors = {where: proc.communicate(timeout=300)[1] for where, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    (name,) = _heads(reference)
    want = private_head.load(reference / name)
    assert want.privacy["seeded"] and np.abs(want.weights).max() > 0
    for where, proc in procs.items():
        assert proc.returncode == -signal.SIGKILL, errors[where][-2000:]
        killed = tmp_path / where
        assert not os.path.isdir(killed) or _heads(killed) == []  # nothing that looks like a head
        if where == "save":  # only the hidden temporary file was written, never the head's name
            assert [n for n in os.listdir(killed) if n.startswith(".")] != []
        assert head_main(_head_args(path, killed)) == 0  # the same command again
        assert _heads(killed) == [name]
        got = private_head.load(killed / name)
        np.testing.assert_array_equal(got.weights, want.weights)
        np.testing.assert_array_equal(got.bias, want.bias)
        assert got.privacy == want.privacy


LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from feature_extract.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def _extract_args(out):
    return [
        "--data",
        "digits",
        "--model",
        "pixels",
        "--out",
        str(out),
        "--splits",
        "train,test=test[:50]",
        "--batch-size",
        "100",
        "--no-progress",
    ]


def test_disk_full_during_extraction_is_a_clear_error_then_resumes(tmp_path):
    # digits train: 1438 rows x 192 float32 in chunks of 1365 rows (1.05 MB each). A 1.5 MB limit
    # holds the first chunk; the batch that needs the second one is refused before any write.
    out, reference = tmp_path / "full.h5", tmp_path / "reference.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", LIMITED, "1500000", *_extract_args(out)],
        cwd=ROOT,
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert extract_main(_extract_args(reference)) == 0  # meanwhile, uninterrupted
        stderr = proc.communicate(timeout=300)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, stderr[-2000:]
    assert "no room to append rows 1300:1400" in stderr
    assert "file-size limit" in stderr and "run the same command again" in stderr
    with pytest.raises(store.IncompleteSplitError):
        store.split_info(out, "train")
    assert extract_main(_extract_args(out)) == 0  # no limit: resumes at row 1300
    assert store_contents(out) == store_contents(reference)


def _flip_feature_byte(path, split="train"):
    with h5py.File(path, "r") as f:
        chunk = f[f"{split}/features"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(chunk.byte_offset + chunk.size // 3)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x10]))


def test_flipped_bytes_stop_training_with_a_store_error(tmp_path, capsys):
    path = _store(tmp_path / "f.h5")
    _flip_feature_byte(path)
    options = {"num_classes": 4, "epsilon": 2.0, "delta": 1e-5, "seed": 1}
    for chunk in (None, 20):  # one chunk, and many (read on a thread)
        with pytest.raises(store.StoreError, match="checksum.*corrupt"):
            private_head.fit(f"{path}:train", chunk_rows=chunk, **options)
    assert head_main(_head_args(path, tmp_path / "out")) == 2
    assert "checksum" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out") or _heads(tmp_path / "out") == []


def test_flipped_bytes_in_a_shard_are_caught_through_the_assembled_store(tmp_path):
    shards = [str(tmp_path / f"s{i}.h5") for i in range(2)]
    for i, shard in enumerate(shards):
        rng = np.random.default_rng(i)
        store.write_split(
            shard,
            "train",
            rng.normal(size=(50, 8)),
            rng.integers(0, 3, 50),
            num_classes=3,
            ids=np.arange(50 * i, 50 * i + 50),
            attrs={"row_start": 50 * i, "row_stop": 50 * i + 50},
        )
    multihost.assemble(tmp_path / "all.h5", shards)
    _flip_feature_byte(shards[1])
    with store.SplitReader(tmp_path / "all.h5", "train") as reader:
        reader.read(0, 50)  # the intact shard still reads
        with pytest.raises(store.StoreError, match="checksum"):
            reader.read(0, 100)
