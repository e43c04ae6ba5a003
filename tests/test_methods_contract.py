"""The contract every registered method keeps, and ``select`` and the private mean with them,
through ``private_head.testing.check_method`` (record and replay on a dataset and its neighbours:
every planned draw made, the ledger holding the plan, the planned noise, each statistic within
its sensitivity, every byte of the artefact equal). A method registered later gets the same checks:
the cases below cover ``available_methods()``.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np
import pytest

import private_head
from private_head.testing import check_fit, check_method
from tests.helpers import blobs, numbers_in, write_store

K, D = 3, 8
EPS, DELTA = 2.0, 1e-5
# Small settings so that the suite runs in seconds (dp_sgd: a high rate and a low epsilon keep
# its PLD calibration cheap); every other method runs with its defaults.
FAST = {
    "dp_gd": {"steps": 2},
    "dp_sgd": {"batch_size": 150, "steps": 2},
    "dp_feature_covariance": {"steps": 2},
    "nonprivate": {"steps": 2},
}
METHODS = private_head.available_methods()
# Cases beyond the registered methods' defaults: the private mean, the private standardisation
# (its two releases: per-group sums and sums of squares) and group normalisation (free),
# auto's private selection, and auto's rule forced to each of its heads.
CASES = [(m, FAST.get(m, {})) for m in METHODS] + [
    ("single_step", {"center": "private"}),
    ("single_step", {"standardize": "private", "groups": 3}),
    ("dp_gd", {"standardize": "private", "steps": 2}),
    ("dp_gd", {"standardize": "group", "groups": 2, "steps": 2}),
    ("auto", {"select": "private"}),
    ("auto", {"spread_threshold": 0.0}),  # the rule's two heads, whatever the blobs' spread
    ("auto", {"spread_threshold": 1e9}),
]
SHOWN = ("center", "select", "standardize", "spread_threshold")
IDS = [m + "".join(f"-{k}={v}" for k, v in o.items() if k in SHOWN) for m, o in CASES]
CANDIDATES = [{"method": "dp_gd", "steps": 2}, {"method": "dp_prototypes"}]


def _slow_for_dp_sgd(cases: list) -> list:
    """``cases`` with dp_sgd's marked slow (its PLD calibration: check_method covers it)."""
    return [pytest.param(*c, marks=pytest.mark.slow) if c[0] == "dp_sgd" else c for c in cases]


def _private(name: str) -> bool:
    return name not in ("nonprivate",)


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_every_method_keeps_the_contract(name, options):
    check_method(name, options, chunk_rows=64)  # one compiled pass for every N


def test_select_keeps_the_contract():
    check_fit(functools.partial(private_head.select, candidates=CANDIDATES, chunk_rows=64))


PRIVATE = [(i, c) for i, c in zip(IDS, CASES, strict=True) if _private(c[0])]
PRIVATE.append(("select", ("select", {})))


@pytest.mark.parametrize(
    ("name", "options"), _slow_for_dp_sgd([c for _, c in PRIVATE]), ids=[i for i, _ in PRIVATE]
)
def test_no_output_contains_the_true_row_count(name, options, tmp_path):
    n = 337
    x, y = blobs(n, D, K, seed=5)
    common = dict(num_classes=K, epsilon=EPS, delta=DELTA, seed=11)
    if name == "select":
        head = private_head.select(x, y, candidates=CANDIDATES, **common)
    else:
        head = private_head.fit(x, y, method=name, **options, **common)
    assert head.privacy["dataset_size"]["source"] == "noisy_count"
    assert head.privacy["dataset_size"]["value"] not in (n - 1, n, n + 1)  # this seed's draw
    head.save(tmp_path / "head.npz")
    report = private_head.load(tmp_path / "head.npz").report()
    found = numbers_in(report)
    assert n not in found and n + 1 not in found
    assert not any(isinstance(v, float) and v in (n, n + 1) for v in found)


ALL = [(m, FAST.get(m, {})) for m in METHODS]


@pytest.mark.parametrize(("name", "options"), ALL, ids=[m for m, _ in ALL])
def test_shapes_dtypes_finite_and_seeded_runs_reproduce(name, options):
    x, y = blobs(160, D, K, seed=6)
    eps = EPS if _private(name) else math.inf
    heads = [
        private_head.fit(
            x, y, num_classes=K, epsilon=eps, delta=DELTA, method=name, seed=3, **options
        )
        for _ in range(2)
    ]
    for head in heads:
        assert head.weights.shape == (D, K) and head.bias.shape == (K,)
        assert head.weights.dtype == np.float32 and head.bias.dtype == np.float32
        assert np.isfinite(head.weights).all() and np.isfinite(head.bias).all()
        assert head.privacy["seeded"] is True
    np.testing.assert_array_equal(heads[0].weights, heads[1].weights)
    np.testing.assert_array_equal(heads[0].bias, heads[1].bias)
    assert heads[0].privacy == heads[1].privacy


@pytest.mark.parametrize(("name", "options"), ALL, ids=[m for m, _ in ALL])
def test_undeclared_options_are_refused_with_what_is_accepted(name, options):
    x, y = blobs(60, D, K, seed=6)
    eps = EPS if _private(name) else math.inf
    with pytest.raises(ValueError, match="does not take option") as err:
        private_head.fit(
            x, y, num_classes=K, epsilon=eps, delta=DELTA, method=name, lerning_rate=0.1, **options
        )
    accepted = [spec["name"] for spec in private_head.describe_options(name)]
    for option in accepted:
        assert option in str(err.value)


@pytest.mark.parametrize(("name", "options"), _slow_for_dp_sgd(ALL), ids=[m for m, _ in ALL])
def test_streamed_rows_give_the_in_memory_head(name, options, tmp_path):
    x, y = blobs(250, D, K, seed=8)
    path = write_store(tmp_path / "s.h5", {"train": (x, y)}, K)
    eps = EPS if _private(name) else math.inf
    common = dict(num_classes=K, epsilon=eps, delta=DELTA, method=name, seed=5, **options)
    device = private_head.fit(jnp.asarray(x), y, **common)
    # float64 is never used in place (an aligned float32 array would be), so this one streams
    host = private_head.fit(x.astype(np.float64), y, chunk_rows=64, **common)
    stored = private_head.fit(f"{path}:train", chunk_rows=96, **common)
    assert device.operator_log["rows"] == "device"
    assert host.operator_log["rows"] == "host_streamed" and host.operator_log["chunk_rows"] == 64
    assert stored.operator_log["rows"] == "store_streamed"
    scale = max(1e-6, float(np.abs(device.weights).max()))
    for other in (host, stored):
        np.testing.assert_allclose(other.weights, device.weights, atol=2e-4 * scale, rtol=1e-3)
        np.testing.assert_allclose(other.bias, device.bias, atol=2e-4 * max(1, scale), rtol=1e-3)


def test_every_registered_method_is_in_the_contract():
    assert {m for m, _ in CASES} == set(private_head.available_methods())
    assert [m for m in METHODS if not _private(m)] == ["nonprivate"]


def test_a_selection_is_charged_as_the_gdp_event_that_dominates_it():
    x, y = blobs(150, D, K, seed=9)
    head = private_head.select(
        x, y, num_classes=K, epsilon=EPS, delta=DELTA, seed=1, candidates=CANDIDATES
    )
    selection = head.privacy["releases"][-1]
    mu = selection["mu"]
    assert selection["name"] == "selection" and selection["noise_std"] is None
    assert selection["event"]["type"] == "gaussian" and set(selection["event"]) == {
        "type",
        "noise_multiplier",
    }
    assert selection["event"]["noise_multiplier"] == pytest.approx(1.0 / mu, rel=1e-14)
    assert "dominates" in selection["description"]
