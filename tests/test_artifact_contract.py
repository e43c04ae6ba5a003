"""The whole artefact: between a dataset and each neighbour (a row added, a row removed), with the
same seed and the releases replayed, every byte a fit writes or returns is equal
(``private_head.testing``; docs/architecture.md, "The whole artefact").

Every registered method, ``auto`` with the private selection, ``select`` and the private mean are
covered by ``check_method`` (tests/test_methods_contract.py). Here: the edges that once decided a
published value (a tiny N, N at a chunk boundary, N x D x itemsize at the memory budget, a store
split whose HDF5 chunk was N rows), store-backed rows, the command line and two processes.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import private_head
from private_head import PlannedRelease, cli
from private_head._rows import aligned_empty
from private_head.testing import (
    Recorder,
    artifact_differences,
    check_neighbours,
    cli_artifacts,
    fit_artifacts,
    folder_artifacts,
    head_artifacts,
    neighbours,
)
from tests.helpers import blobs, write_store

K, D = 3, 8
EPS, DELTA, SEED = 1.0, 1e-5, 7


def fitter(tmp_path, name: str, options: dict, **common):
    """``run(dataset, recorder)`` fitting ``name`` on arrays, each run in its own folder."""
    count = itertools.count()
    common = dict(num_classes=K, epsilon=EPS, delta=DELTA, **common)

    def run(data, recorder):
        folder = tmp_path / f"run{next(count)}"
        return fit_artifacts(
            private_head.fit, recorder, folder, *data, method=name, **options, **common
        )

    return run


def test_a_tiny_dataset(tmp_path):
    x, y = blobs(2, D, K, seed=4)
    check_neighbours(fitter(tmp_path, "single_step", {}, seed=SEED), (x, y), neighbours(x, y))


def test_n_at_a_chunk_boundary_of_the_passes(tmp_path):
    x, y = blobs(128, D, K, seed=5)  # 2 chunks of 64; the neighbours have 2 and 3
    run = fitter(tmp_path, "dp_gd", {"steps": 2}, seed=SEED, chunk_rows=64)
    check_neighbours(run, (x.astype(np.float64), y), neighbours(x.astype(np.float64), y))


def test_n_rows_at_the_memory_budget(tmp_path):
    """N rows fill ``max_device_bytes`` exactly: used in place; N + 1 rows stream."""
    x, y = blobs(300, D, K, seed=6)

    def aligned(data):
        out = aligned_empty(data[0].shape, np.float32)
        out[:] = data[0]
        return out, data[1]

    run = fitter(tmp_path, "single_step", {}, seed=SEED, max_device_bytes=300 * D * 4)
    check_neighbours(run, aligned((x, y)), [aligned(n) for n in neighbours(x, y)])


def store_fitter(tmp_path, name: str, options: dict, dim: int, attrs=None):
    """``run(dataset, recorder)``: write the dataset as the store ``data.h5`` (its splits with
    ``attrs``) in a new folder and fit on the store; a test split (public, the same for every
    run) beside it."""
    count = itertools.count()
    test = blobs(40, dim, K, seed=99)

    def run(data, recorder):
        folder = tmp_path / f"run{next(count)}"
        os.makedirs(folder)
        path = write_store(folder / "data.h5", {"train": data, "test": test}, K, attrs=attrs)
        return fit_artifacts(
            private_head.fit,
            recorder,
            folder,
            f"{path}:train",
            num_classes=K,
            epsilon=EPS,
            delta=DELTA,
            seed=SEED,
            method=name,
            **options,
        )

    return run


def test_a_store_split_at_its_hdf5_chunk_boundary(tmp_path):
    dim = 1024  # float32 rows of 4 KiB: the store's 1 MiB chunk holds 256 of them
    x, y = blobs(256, dim, K, seed=7)
    run = store_fitter(tmp_path, "single_step", {}, dim)
    check_neighbours(run, (x, y), neighbours(x, y))


def test_a_store_declaring_feature_groups_is_standardised_privately(tmp_path):
    """``standardize="auto"`` (the default) on a store whose split declares ``feature_groups``:
    the private standardisation over those groups, whose releases the replay covers, and
    nothing else moves (the head file holds its m and s)."""
    x, y = blobs(200, 12, K, seed=11)
    fit_on_store = store_fitter(tmp_path, "dp_gd", {"steps": 2}, 12, attrs={"feature_groups": 4})
    seen = []

    def run(data, recorder):
        seen.append(fit_on_store(data, recorder))
        return seen[-1]

    check_neighbours(run, (x, y), neighbours(x, y))
    privacy = json.loads(seen[0]["privacy"])
    assert privacy["standardize"]["kind"] == "private" and privacy["standardize"]["groups"] == 4
    assert [r["name"] for r in privacy["releases"]][1:3] == [
        "standardize/group_sum",
        "standardize/group_square_sum",
    ]


def cli_runner(tmp_path, argv: list[str]):
    """``run(dataset, recorder)``: the command line on a store written in a new folder."""
    count = itertools.count()
    test = blobs(40, 5, K, seed=98)

    def run(data, recorder):
        folder = tmp_path / f"run{next(count)}"
        os.makedirs(folder)
        write_store(folder / "data.h5", {"train": data, "test": test}, K)
        args = ["--features", "data.h5", "--epsilon", str(EPS), "--seed", str(SEED), *argv]
        return cli_artifacts(cli.main, args, recorder, folder, inputs=["data.h5"])

    return run


@pytest.mark.parametrize(
    "argv",
    [[], ["--method", "auto", "--max-device-bytes", str(1 << 26)]],
    ids=["single_step-defaults", "auto-budget-given"],
)
def test_the_command_line_on_a_small_store(argv, tmp_path):
    """300 rows of D = 5 float32: a store whose HDF5 chunk used to be the whole split."""
    x, y = blobs(300, 5, K, seed=8)
    check_neighbours(cli_runner(tmp_path, argv), (x, y), neighbours(x, y))


def test_a_difference_anywhere_is_reported_with_its_field():
    a = {"result.json": json.dumps({"performance": {"chunk_rows_max": 65400}, "x": 1}), "s": "a"}
    b = {"result.json": json.dumps({"performance": {"chunk_rows_max": 65317}, "x": 1}), "t": "b"}
    found = artifact_differences(a, b)
    assert "result.json: performance.chunk_rows_max: 65400 != 65317" in found
    assert "s: written by the first run only" in found
    assert "t: written by the second run only" in found
    assert artifact_differences(a, dict(a)) == []


def test_a_replay_refuses_a_release_the_first_run_did_not_make():
    recorder = Recorder(replay={})
    count = PlannedRelease.gaussian("count", 1.0, 10.0)
    with pytest.raises(AssertionError, match="not made in the first run"):
        recorder(count, 0, np.float64(1.0), np.float64(1.0))


# Two processes: the command line under jax.distributed (gloo), each run in its own folder.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = """
import sys
import time
from feature_extract import multihost
folder, index, port, replay, log = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
assert multihost.initialize(f"127.0.0.1:{port}", 2, index)
import os
from private_head import cli
from private_head.testing import Recorder, observing
recorder = Recorder(replay=Recorder.load(replay) if replay != "-" else None)
os.chdir(folder)
with observing(recorder):
    status = cli.main(["--features", "data.h5", "--epsilon", "2", "--seed", "7"])
recorder.save(f"{log}-{index}")
sys.exit(status)
"""


def _two_processes(folder, replay: str, log: str) -> str:
    """Process 0's stdout of the command line run by two processes in ``folder``."""
    from tests.test_multihost import _free_port

    port = str(_free_port())
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(folder), str(i), port, replay, log],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return outs[0][0]


@pytest.mark.slow
def test_two_processes(tmp_path):
    x, y = blobs(300, 5, K, seed=9)
    test = blobs(40, 5, K, seed=97)
    count = itertools.count()
    first_log = str(tmp_path / "first.log")

    def run(data, recorder):
        i = next(count)
        folder, log = tmp_path / f"run{i}", str(tmp_path / f"run{i}.log")
        os.makedirs(folder)
        write_store(folder / "data.h5", {"train": data, "test": test}, K)
        stdout = _two_processes(folder, "-" if recorder.replay is None else first_log, log)
        recorder.log = Recorder.load(f"{log}-0")
        assert Recorder.load(f"{log}-1").keys() == recorder.log.keys()
        if recorder.replay is None:
            os.replace(f"{log}-0", first_log)
        return {"stdout": stdout, **folder_artifacts(folder, inputs=["data.h5"])}

    check_neighbours(run, (x, y), neighbours(x, y))


def test_a_head_file_has_the_same_bytes_whenever_it_is_written(tmp_path):
    x, y = blobs(50, D, K, seed=10)
    head = private_head.fit(
        x, y, method="single_step", num_classes=K, epsilon=EPS, delta=DELTA, seed=SEED
    )
    first = head_artifacts(head, tmp_path)
    time.sleep(2.1)  # zip entry times have a resolution of 2 s, HDF5 object times of 1 s
    assert artifact_differences(first, head_artifacts(head, tmp_path)) == []
