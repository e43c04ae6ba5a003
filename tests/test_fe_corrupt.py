"""Files that cannot be opened as a store: a clear CorruptStoreError everywhere, and --overwrite
replaces them.

Damage: a file cut at 4 KB (what a run under ``ulimit -f 4`` used to leave), zeroed metadata
(bytes 2000-6000 of a valid store), a file that is not HDF5, an empty file. A run under a 4 KB
file-size limit now fails before it creates anything.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from feature_extract import store
from feature_extract.__main__ import main
from feature_extract.store import CorruptStoreError, SplitReader, SplitWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from feature_extract.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def _truncate(path):
    with open(path, "r+b") as fh:
        fh.truncate(4096)


def _zero_metadata(path):
    with open(path, "r+b") as fh:
        fh.seek(2000)
        fh.write(b"\0" * 4000)


def _not_hdf5(path):
    with open(path, "w") as fh:
        fh.write("these are not the features you are looking for\n" * 200)


def _empty(path):
    open(path, "w").close()


DAMAGE = {"truncated": _truncate, "zeroed": _zero_metadata, "not_hdf5": _not_hdf5, "empty": _empty}


def _valid(path):
    rng = np.random.default_rng(0)
    store.write_split(
        path, "train", rng.normal(size=(500, 32)), rng.integers(0, 3, 500), num_classes=3
    )


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_every_reader_says_the_file_is_corrupt_and_what_to_do(tmp_path, damage):
    path = tmp_path / "f.h5"
    _valid(path)
    DAMAGE[damage](path)
    readers = {
        "split_info": lambda: store.split_info(path, "train"),
        "read_split": lambda: store.read_split(path, "train"),
        "SplitReader": lambda: SplitReader(path, "train"),
        "split_names": lambda: store.split_names(path),
        "SplitWriter": lambda: SplitWriter(path, "train", dim=32, total_rows=5, num_classes=3),
    }
    for name, read in readers.items():
        with pytest.raises(CorruptStoreError) as err:
            read()
        message = str(err.value)
        assert f"{path} is corrupt" in message, name
        assert "--overwrite" in message and "delete it" in message and "\n" not in message


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_overwrite_replaces_a_file_that_cannot_be_opened(tmp_path, damage):
    path = tmp_path / "f.h5"
    _valid(path)
    store.write_split(path, "test", np.ones((4, 2)), np.arange(4) % 2, num_classes=2)
    DAMAGE[damage](path)
    with pytest.raises(CorruptStoreError):
        store.write_split(path, "train", np.ones((4, 2)), np.arange(4) % 2, num_classes=2)
    store.write_split(
        path, "train", np.full((4, 2), 3.0), np.arange(4) % 2, num_classes=2, overwrite=True
    )
    assert store.split_names(path) == ["train"]  # the damaged file was replaced whole
    np.testing.assert_array_equal(store.read_split(path, "train")[0], np.full((4, 2), 3.0))


def _cli(out, *extra):
    return [
        "--data",
        "digits",
        "--model",
        "pixels",
        "--out",
        str(out),
        "--splits",
        "test",
        "--no-progress",
        *extra,
    ]


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_extraction_on_a_damaged_store_explains_and_overwrite_recovers(tmp_path, capsys, damage):
    out = tmp_path / "digits.h5"
    assert main(_cli(out)) == 0
    DAMAGE[damage](out)
    capsys.readouterr()
    assert main(_cli(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out} is corrupt") and err.count("\n") == 1
    assert "--overwrite" in err
    assert main(_cli(out, "--overwrite")) == 0
    assert store.split_info(out, "test").num_rows == 359


def test_a_run_under_a_4k_file_size_limit_creates_nothing_then_a_rerun_works(tmp_path):
    out = tmp_path / "digits.h5"
    proc = subprocess.run(
        [sys.executable, "-c", LIMITED, "4096", *_cli(out)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: no room to create the store {out}")
    assert "file-size limit (ulimit -f) is 4096 bytes" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == []  # no half-made file, no temporary, no lock
    assert main(_cli(out)) == 0
    assert store.split_info(out, "test").num_rows == 359


def test_private_head_cli_on_a_damaged_store_is_one_clear_line(tmp_path, capsys):
    from private_head.cli import main as head_main

    path = tmp_path / "f.h5"
    _valid(path)
    _truncate(path)
    assert head_main(["--features", str(path), "--epsilon", "1", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is corrupt" in err and "Traceback" not in err and err.count("\n") == 1
