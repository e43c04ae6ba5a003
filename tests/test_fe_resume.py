"""A run SIGKILLed mid-split resumes with the same command and gives the bytes of an uninterrupted
run: no gap, no duplicate, the same attributes."""

import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from feature_extract import store
from feature_extract.__main__ import main
from tests.helpers import store_contents

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The killed process SIGKILLs itself right after the N-th flush of an append: the rows of that
# batch are in the file but their row count is not committed, the worst moment to die.
KILLER = """
import os, signal, sys
import h5py
flushes = [0]
flush = h5py.File.flush
def flush_then_die(self):
    flush(self)
    flushes[0] += 1
    if flushes[0] == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
h5py.File.flush = flush_then_die
from feature_extract.__main__ import main
sys.exit(main(sys.argv[2:]))
"""
BATCH = 100  # digits: train 1438 rows = 15 appends, test 359 rows = 4 appends


def _args(out):
    return [
        "--data",
        "digits",
        "--model",
        "pixels",
        "--out",
        str(out),
        "--batch-size",
        str(BATCH),
        "--no-progress",
    ]


@pytest.mark.parametrize(
    "die_at_flush, broken", [pytest.param(6, "train", marks=pytest.mark.slow), (17, "test")]
)
def test_sigkill_then_same_command_gives_identical_store(tmp_path, die_at_flush, broken):
    killed = tmp_path / "killed.h5"
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(die_at_flush), *_args(killed)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    committed = (die_at_flush - 1 - (15 if broken == "test" else 0)) * BATCH
    with h5py.File(killed, "r") as f:  # the dying batch reached the file but was not committed
        assert f[broken].attrs["rows_written"] == committed
        assert f[broken]["features"].shape[0] == committed + BATCH
        assert not f[broken].attrs["complete"]
    with pytest.raises(store.IncompleteSplitError, match="Run the same extraction command"):
        store.split_info(killed, broken)

    assert main(_args(killed)) == 0  # resume
    clean = tmp_path / "clean.h5"
    assert main(_args(clean)) == 0
    resumed, reference = store_contents(killed), store_contents(clean)
    assert resumed.keys() == reference.keys() == {"train", "test"}
    assert resumed == reference
    ids = np.frombuffer(resumed[broken][0]["ids"], np.int64)
    assert len(set(ids.tolist())) == ids.size  # no duplicate rows
