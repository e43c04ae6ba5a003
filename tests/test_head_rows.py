"""The rows abstraction: every place the rows can live gives the same sums and heads, validation
is the same everywhere, and the memory budget decides what streams."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import private_head
from private_head import GradientSums, GramAndSums, Performance, ZeroInitSums
from private_head._preprocessing import Preprocessing
from private_head._rows import aligned_empty, open_rows, validation_mask
from tests.helpers import blobs, write_store

K, D = 3, 8
PRE = Preprocessing("normalize", 1.0)
FAST = {
    "dp_gd": {"steps": 3},
    "dp_sgd": {"batch_size": 40, "steps": 3},
    "dp_feature_covariance": {"steps": 3},
    "nonprivate": {"weight_decay": 1e-2},
}


def sums_everywhere(x, y, path, stat, args):
    places = {
        "device": open_rows(jnp.asarray(x), y, num_classes=K),
        "host": open_rows(x, y, num_classes=K, performance=Performance(chunk_rows=37)),
        "store": open_rows(f"{path}:train", num_classes=K, performance=Performance(chunk_rows=50)),
    }
    return {k: rows.sum(stat, args, PRE) for k, rows in places.items()}


def test_every_place_gives_the_same_sums(tmp_path):
    x, y = blobs(300, D, K)
    path = write_store(tmp_path / "s.h5", {"train": (x, y)}, K)
    params = {"W": jnp.asarray(np.random.default_rng(0).normal(size=(D, K)), jnp.float32)}
    for stat, args in [
        (ZeroInitSums(K, "softmax", False, 0.0), 0.5),
        (GradientSums("softmax", False), (params, jnp.zeros(K), 0.5)),
        (GramAndSums(K, True), None),
    ]:
        got = sums_everywhere(x, y, path, stat, args)
        flat = {
            k: np.concatenate([np.ravel(a) for a in __import__("jax").tree_util.tree_leaves(v)])
            for k, v in got.items()
        }
        for k in ("host", "store"):
            np.testing.assert_allclose(flat[k], flat["device"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("where", ["device", "host", "store"])
def test_nonfinite_rows_are_named_from_every_place_with_the_same_message(tmp_path, where):
    x, y = blobs(120, D, K)
    x[[7, 93]] = np.nan
    if where == "store":  # the store refuses NaN when written: corrupt it after writing
        path = write_store(tmp_path / "s.h5", {"train": (np.nan_to_num(x), y)}, K)
        import h5py

        with h5py.File(path, "r+") as f:
            f["train/features"][7] = np.nan
            f["train/features"][93] = np.inf
        features = f"{path}:train"
        labels = None
    else:
        features = jnp.asarray(x) if where == "device" else x
        labels = y
    with pytest.raises(ValueError, match=r"in 2 row\(s\): 7, 93\. Fix or drop"):
        private_head.fit(
            features,
            labels,
            method="single_step",
            num_classes=K,
            epsilon=2,
            delta=1e-5,
            chunk_rows=32,
        )


def test_float64_rows_that_overflow_float32_are_refused():
    x, y = blobs(20, D, K)
    x = x.astype(np.float64)
    x[4, 1] = 1e300
    with pytest.raises(ValueError, match=r"row\(s\): 4\. "):
        private_head.fit(x, y, method="single_step", num_classes=K, epsilon=2, delta=1e-5)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.full(50, 3), "outside the label space"),
        (np.zeros(49), "shape mismatch"),
        (np.linspace(0, 1, 50), "must be integers"),
    ],
)
def test_label_errors_come_before_any_pass(labels, match):
    x, _ = blobs(50, D, K)
    with pytest.raises(ValueError, match=match):
        open_rows(x, labels, num_classes=K)


def test_the_budget_decides_between_in_place_and_streamed_and_the_head_is_the_same():
    x, y = blobs(400, D, K)
    aligned = aligned_empty(x.shape, np.float32)
    aligned[:] = x
    whole = private_head.fit(
        aligned, y, num_classes=K, epsilon=2, delta=1e-5, seed=1, method="dp_gd", steps=3
    )
    small = private_head.fit(
        aligned,
        y,
        num_classes=K,
        epsilon=2,
        delta=1e-5,
        seed=1,
        method="dp_gd",
        steps=3,
        max_device_bytes=4096,
    )
    assert whole.operator_log["rows"] == "host_in_place"  # CPU: the caller's array, no copy
    assert small.operator_log["rows"] == "host_streamed"
    assert small.operator_log["memory_budget_bytes"] == 4096
    np.testing.assert_allclose(small.weights, whole.weights, rtol=1e-4, atol=1e-6)


def test_the_published_performance_is_the_options_and_the_data_path_goes_to_the_operator_log(
    tmp_path,
):
    reports, paths = [], set()
    for n in (100, 101, 5000):
        x, y = blobs(n, D, K)
        for features in (jnp.asarray(x), x.astype(np.float64)):  # in place, and streamed
            head = private_head.fit(
                features,
                y,
                method="single_step",
                num_classes=K,
                epsilon=2,
                delta=1e-5,
                seed=0,
                max_device_bytes=10**6,
            )
            reports.append(head.performance)
            paths.add((head.operator_log["rows"], head.operator_log["chunk_rows"]))
            assert head.operator_log["publish"] is False and head.operator_log["seconds"] >= 0
            assert "operator_log" not in head.report() and "seconds" not in repr(head)
    assert reports == [{"max_device_bytes": 10**6, "chunk_rows": None}] * 6
    assert len(paths) > 2  # the operator log does depend on the row count
    head.save(tmp_path / "h.npz")
    assert private_head.load(tmp_path / "h.npz").operator_log == {}


def test_the_validation_split_of_a_row_depends_only_on_that_row():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 5)).astype(np.float32)
    y = rng.integers(0, 3, 500)
    mask = validation_mask(x, y, 0.3, salt=5)
    assert 0.22 < mask.mean() < 0.38
    x2, y2 = np.insert(x, 17, 9.0, axis=0), np.insert(y, 17, 1)
    np.testing.assert_array_equal(np.delete(validation_mask(x2, y2, 0.3, salt=5), 17), mask)
    np.testing.assert_array_equal(validation_mask(x[::-1], y[::-1], 0.3, salt=5), mask[::-1])
    assert not np.array_equal(validation_mask(x, y, 0.3, salt=6), mask)
    assert not np.array_equal(validation_mask(x, (y + 1) % 3, 0.3, salt=5), mask)


SHARDED = r"""
import json, sys, numpy as np, jax, jax.numpy as jnp
import private_head
from tests.helpers import blobs
assert len(jax.devices()) == 4
cases = json.loads(sys.argv[1])
x, y = blobs(250, 8, 3, seed=2)
out = {}
for name, options in cases:
    eps = 2.0 if name != "nonprivate" else float("inf")
    for where, feats in (("device", jnp.asarray(x)), ("host", x)):
        head = private_head.fit(feats, y, num_classes=3, epsilon=eps, delta=1e-5, method=name,
                                seed=4, chunk_rows=64, **options)
        assert head.operator_log["devices"] == 4
        out[f"{name}/{where}"] = np.concatenate([head.weights.ravel(), head.bias]).tolist()
print(json.dumps(out))
"""


@pytest.mark.slow  # the heaviest test (every method twice in a 4-device subprocess, ~50 s on
# 2 cores); test_multihost's two processes keep a sharded mesh in `make test`
def test_rows_sharded_over_four_devices_give_the_single_device_heads():
    cases = [(m, FAST.get(m, {})) for m in private_head.available_methods()]
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED, json.dumps(cases)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = json.loads(proc.stdout.strip().splitlines()[-1])
    x, y = blobs(250, 8, 3, seed=2)
    for name, options in cases:
        eps = 2.0 if name != "nonprivate" else math.inf
        head = private_head.fit(
            jnp.asarray(x),
            y,
            num_classes=3,
            epsilon=eps,
            delta=1e-5,
            method=name,
            seed=4,
            **options,
        )
        want = np.concatenate([head.weights.ravel(), head.bias])
        scale = max(1.0, np.abs(want).max())
        if name == "nonprivate":  # L-BFGS to a tolerance: summation order moves its stop
            scale *= 10
        for where in ("device", "host"):
            np.testing.assert_allclose(
                sharded[f"{name}/{where}"],
                want,
                rtol=1e-3,
                atol=1e-4 * scale,
                err_msg=f"{name}/{where}",
            )


@pytest.mark.parametrize("kind", ["normalize", "shrink"])
def test_the_staged_single_step_for_many_classes_equals_the_general_kernel(kind):
    """Above 128 classes the zero-init sums are a scatter (run as its own program on CPU), with
    extreme rows handled by powers of two: they equal the general kernel at W = 0."""
    k = 130
    x, _ = blobs(300, D, K, seed=4)
    x[3] *= 1e30
    x[4] *= 1e-30
    x[5] = 0.0
    y = np.random.default_rng(0).integers(0, k, 300).astype(np.int32)
    pre = Preprocessing(kind, 2.0)
    rows = open_rows(x, y, num_classes=k, feature_norm=2.0, performance=Performance(chunk_rows=64))
    staged = rows.sum(ZeroInitSums(k, "softmax", True, 0.0), 0.7, pre)
    params = {"W": jnp.zeros((D, k)), "b": jnp.zeros(k)}
    general = rows.sum(GradientSums("softmax", True), (params, jnp.zeros(k), 0.7), pre)
    for name in ("W", "b"):
        np.testing.assert_allclose(staged[name], general[name], rtol=1e-4, atol=1e-6)
    assert np.abs(staged["W"]).max() > 0.1


class _LateRead:
    """A pass output that reads its chunk only when waited for, as an asynchronous device
    computation reading a staging buffer in place would (zero copy on CPU)."""

    def __init__(self, x):
        self.x, self.seen = x, None

    def block_until_ready(self):
        if self.seen is None:
            self.seen = np.array(self.x, copy=True)
        return self


@pytest.mark.parametrize("source", ["array", "store"])
def test_a_staging_buffer_is_refilled_only_after_its_last_reader_even_across_passes(
    source, tmp_path
):
    x, y = blobs(250, D, K, seed=2)
    features = x.astype(np.float64)  # never used in place: it streams through the buffers
    if source == "store":
        features, y = f"{write_store(tmp_path / 's.h5', {'train': (x, y)}, K)}:train", None
    rows = open_rows(features, y, num_classes=K, performance=Performance(chunk_rows=64))
    assert rows.num_chunks == 4
    passes: list[list[_LateRead]] = []

    def late(start, chunk, *_):
        if start == 0 and passes:  # the previous pass's outstanding reads happen only now
            for output in passes[-1]:
                output.block_until_ready()
        return _LateRead(chunk)

    for _ in range(3):
        passes.append(rows._for_each_chunk(late))
    for output in passes[-1]:
        output.block_until_ready()
    want = np.zeros((256, D), np.float32)
    want[:250] = x
    for outputs in passes:  # every late read saw its own chunk, not a refilled buffer
        np.testing.assert_array_equal(np.concatenate([o.seen for o in outputs]), want)


@pytest.mark.parametrize("where", ["device", "host", "store"])
def test_a_kept_sum_serves_only_the_next_same_sum_with_the_same_preprocessing(where, tmp_path):
    """``sum(keep=True)``: the next sum of the same statistic with the same preprocessing object
    gets the very array, without a pass; an equal map built anew, a view or any other sum in
    between passes again, and the kept sum is used once."""
    from private_head._statistics import Gram, RowSum

    x, y = blobs(300, D, K, seed=4)
    features = {
        "device": jnp.asarray(x),
        "host": x,
        "store": f"{write_store(tmp_path / 's.h5', {'train': (x, y)}, K)}:train",
    }[where]
    labels = None if where == "store" else y
    rows = open_rows(features, labels, num_classes=K, performance=Performance(chunk_rows=64))
    passes = lambda: rows.shared.passes.total  # noqa: E731

    kept = rows.sum(Gram(), None, PRE, keep=True)
    assert rows.sum(Gram(), None, PRE) is kept and passes() == 1
    again = rows.sum(Gram(), None, PRE)  # used once: this is a pass
    assert passes() == 2 and np.asarray(again).tobytes() == np.asarray(kept).tobytes()

    rows.sum(Gram(), None, PRE, keep=True)
    rows.sum(Gram(), None, Preprocessing("normalize", 1.0))  # equal, not the same object
    assert passes() == 4
    rows.sum(Gram(), None, PRE, keep=True)
    rows.with_part(None).sum(Gram(), None, PRE)  # a view keeps nothing of its own
    assert passes() == 6
    rows.sum(RowSum(), None, PRE)  # another sum drops the kept Gram
    rows.sum(Gram(), None, PRE)
    assert passes() == 8
    rows.sum(Gram(), None, PRE, keep=True)
    rows.drop_kept()
    rows.sum(Gram(), None, PRE)
    assert passes() == 10
    with pytest.raises(ValueError, match="without args or weights"):
        rows.sum(RowSum(), None, PRE, weights=jnp.ones(300), keep=True)
