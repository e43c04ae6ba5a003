"""Several JAX processes: shard extraction + virtual-dataset store, and fit over process shares.

Two local processes on CPU (gloo collectives, coordinator on 127.0.0.1) extract digits + pixels
into shards, assemble the store, and fit every method (and a private mean, and streamed rows)
with a seed; the store content and the heads must equal a one-process run in this test process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feature_extract import multihost, store
from feature_extract.extraction import extract

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = "train=train[:240],test=test[:61]"
FITS = (
    ("single_step", {}),
    ("dp_gd", {"steps": 3, "learning_rate": 0.5}),
    ("dp_sgd", {"batch_size": 60, "steps": 2}),
    ("dp_least_squares", {}),
    ("dp_feature_covariance", {"steps": 2}),
    ("dp_prototypes", {"metric": "euclidean"}),
    ("auto", {}),
    ("private_mean", {"center": "private"}),
    ("streamed", {"steps": 3, "learning_rate": 0.5, "chunk_rows": 32}),
)
METHOD = {"private_mean": "single_step", "streamed": "dp_gd"}

# One process of the two: process 0 gets its place from arguments, process 1 from the
# environment variables a launcher sets.
WORKER = """
import json, sys
from feature_extract import multihost
out, index, port = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if index == 0:
    assert multihost.initialize(f"127.0.0.1:{port}", 2, 0)
else:
    assert multihost.initialize()
import jax
import private_head
assert jax.process_count() == 2
multihost.extract_sharded("digits", "pixels", out, SPLITS, batch_size=64, progress=False)
heads = {}
for name, options in FITS:
    head = private_head.fit(out + ":train", num_classes=10, epsilon=2.0, delta=1e-5,
                            method=METHOD.get(name, name), seed=11, **options)
    heads[name] = [head.weights.tolist(), head.bias.tolist(), head.privacy["dataset_size"],
                   head.operator_log["processes"]]
head = private_head.fit(out + ":train", num_classes=10, epsilon=2.0, delta=1e-5)
heads["unseeded"] = [head.weights.tolist(), head.privacy["seeded"]]
with open(f"{out}.heads-{index}.json", "w") as f:
    json.dump(heads, f)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_two_processes(out: str) -> list[subprocess.Popen]:
    port = _free_port()
    code = f"SPLITS = {SPLITS!r}\nFITS = {FITS!r}\nMETHOD = {METHOD!r}\n" + WORKER
    procs = []
    for index in range(2):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
        env.pop("XLA_FLAGS", None)
        if index == 1:
            env.update(
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID="1",
            )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code, out, str(index), str(port)],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


@pytest.mark.slow  # two processes, every method: the heaviest test (~1.5 min on 2 cores)
def test_two_processes_equal_one(tmp_path):
    import private_head

    out = str(tmp_path / "multi" / "digits.h5")
    os.makedirs(os.path.dirname(out))
    procs = _start_two_processes(out)
    try:  # the one-process reference runs here meanwhile
        single = str(tmp_path / "single.h5")
        extract("digits", "pixels", single, SPLITS, batch_size=64, progress=False)
        refs = {
            name: private_head.fit(
                single + ":train",
                num_classes=10,
                epsilon=2.0,
                delta=1e-5,
                method=METHOD.get(name, name),
                seed=11,
                **options,
            )
            for name, options in FITS
        }
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]

    # The assembled file is virtual over two shard files, and reads like the one-process store.
    shards = [multihost.shard_path(out, i, 2) for i in range(2)]
    with h5py.File(out, "r") as f:
        assert f["train/features"].is_virtual
        assert {s.file_name for s in f["train/features"].virtual_sources()} == {
            os.path.basename(s) for s in shards
        }
    assert [store.split_info(s, "train").num_rows for s in shards] == [120, 120]
    for split in ("train", "test"):
        with store.SplitReader(out, split) as multi, store.SplitReader(single, split) as one:
            assert multi.info.attrs == one.info.attrs
            np.testing.assert_array_equal(multi.read()[0], one.read()[0])
            np.testing.assert_array_equal(multi.read()[1], one.read()[1])
            np.testing.assert_array_equal(multi.ids(), one.ids())
            # a chunk read across the shard boundary
            np.testing.assert_array_equal(multi.read(100, 140)[0], one.read(100, 140)[0])

    heads = [json.loads(Path(f"{out}.heads-{i}.json").read_text()) for i in range(2)]
    for name, ref in refs.items():
        assert np.abs(ref.weights).max() > 1e-4  # a non-trivial head
        scale = np.abs(ref.weights).max()
        for got in heads:  # both processes hold the same head, equal to one process's
            np.testing.assert_allclose(
                np.array(got[name][0]), ref.weights, rtol=1e-4, atol=1e-5 * scale, err_msg=name
            )
            np.testing.assert_allclose(
                np.array(got[name][1]),
                ref.bias,
                rtol=1e-4,
                atol=1e-5 * max(1.0, scale),
                err_msg=name,
            )
            assert got[name][2] == ref.privacy["dataset_size"] and got[name][3] == 2
    # Without a seed, process 0's OS draw is broadcast: both processes add the same noise.
    assert heads[0]["unseeded"] == heads[1]["unseeded"] and heads[0]["unseeded"][1] is False
    assert not np.allclose(heads[0]["unseeded"][0], heads[0]["single_step"][0], atol=1e-6)


@given(st.integers(0, 10_000), st.integers(1, 64))
def test_process_rows_tile_the_split(num_rows, count):
    ranges = [multihost.process_rows(num_rows, i, count) for i in range(count)]
    assert ranges[0][0] == 0 and ranges[-1][1] == num_rows
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_initialize_needs_a_complete_set(monkeypatch):
    for name in (multihost.ENV_COORDINATOR, multihost.ENV_NUM_PROCESSES, multihost.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    assert multihost.initialize() is False  # nothing given: one process
    assert multihost.initialize(num_processes=1, process_id=0, coordinator="h:1") is False
    with pytest.raises(ValueError, match="--coordinator"):
        multihost.initialize(num_processes=2, process_id=0)
    monkeypatch.setenv(multihost.ENV_NUM_PROCESSES, "2")
    monkeypatch.setenv(multihost.ENV_COORDINATOR, "127.0.0.1:1")
    with pytest.raises(ValueError, match="--process-id"):
        multihost.initialize(process_id=2)
    monkeypatch.setenv(multihost.ENV_PROCESS_ID, "one")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
        multihost.initialize()


def _shard(path, start, rows, seed, **attrs):
    rng = np.random.default_rng(seed)
    store.write_split(
        path,
        "train",
        rng.normal(size=(rows, 3)),
        rng.integers(0, 2, rows),
        num_classes=2,
        ids=np.arange(start, start + rows),
        attrs={"backbone": "b", "row_start": start, "row_stop": start + rows, **attrs},
    )


def test_assemble_checks_the_shards_tile_and_agree(tmp_path):
    a, b, c = (str(tmp_path / f"{n}.h5") for n in "abc")
    _shard(a, 0, 5, 0)
    _shard(b, 5, 4, 1)
    _shard(c, 6, 4, 2)
    infos = multihost.assemble(tmp_path / "ab.h5", [a, b])
    assert infos["train"].num_rows == 9
    x, y, _ = store.read_split(tmp_path / "ab.h5", "train")
    np.testing.assert_array_equal(
        x, np.concatenate([store.read_split(p, "train")[0] for p in (a, b)])
    )
    os.rename(b, b + ".moved")  # a missing or short shard would read as zeros: refused
    with pytest.raises(store.StoreError, match="assembled from shard files.*cannot be read"):
        store.read_split(tmp_path / "ab.h5", "train")
    _shard(b, 5, 3, 1)
    with pytest.raises(store.StoreError, match="has 3 rows.*maps 4"):
        store.read_split(tmp_path / "ab.h5", "train")
    with pytest.raises(store.StoreError, match="do not tile"):
        multihost.assemble(tmp_path / "ac.h5", [a, c])
    assert not os.path.exists(tmp_path / "ac.h5")  # nothing half-written
    d = str(tmp_path / "d.h5")
    _shard(d, 5, 4, 3, backbone="other")
    with pytest.raises(store.StoreError, match="backbone"):
        multihost.assemble(tmp_path / "ad.h5", [a, d])
