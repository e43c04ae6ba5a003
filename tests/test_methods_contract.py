"""The contract every registered method keeps, and ``select`` and the private mean with them.

Record and replay (the style of recent DP library audits): a method runs on a dataset D with a
fixed key while an observer records every statistic before its noise and the value released;
then it runs on a neighbour D' (one row added, or removed) with the same key while the observer
hands back D's released values. With the releases fixed, the two runs must be identical in all
else, and each statistic may move by at most its declared sensitivity. A method registered later
gets the whole contract: the cases below cover ``available_methods()``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import private_head
from accounting import PrivacyLedger
from private_head._api import train
from private_head._keys import noise_key
from private_head._methods import available_methods, get_method
from private_head._options import route
from private_head._plan import DOMINATING_GDP
from private_head._rows import open_rows
from private_head._selection import Candidate, Selection, _NoOptions
from tests.helpers import blobs, numbers_in, write_store

K, D = 3, 8
EPS, DELTA = 2.0, 1e-5
# Small settings so that the suite runs in seconds; every other method runs with its defaults.
FAST = {
    "dp_gd": {"steps": 3},
    "dp_sgd": {"batch_size": 40, "steps": 3},
    "dp_feature_covariance": {"steps": 3},
    "nonprivate": {"weight_decay": 1e-2},
}
PRIVATE = [m for m in available_methods() if get_method(m).private]
# Cases beyond the registered methods: the private mean, auto's private selection, select().
CASES = [(m, FAST.get(m, {})) for m in PRIVATE] + [
    ("single_step", {"center": "private"}),
    ("auto", {"select": "private"}),
    ("select", {}),
]
IDS = [f"{m}{'-' + '-'.join(f'{k}={v}' for k, v in o.items()) if o else ''}" for m, o in CASES]


def _selection():
    specs = ({"method": "dp_gd", "steps": 2}, {"method": "dp_prototypes"})
    return Selection(tuple(Candidate.parse(c) for c in specs), validation_fraction=0.3)


def _method(name: str, options: dict):
    if name == "select":
        method = _selection().as_method()
        _, pre, size, perf = route("select", _NoOptions, options)
        return method, _NoOptions(), pre, size, perf
    method = get_method(name)
    return (method, *route(name, method.options, options))


class Recorder:
    """The observer: records (statistic, released) per (release, draw); replays when given."""

    def __init__(self, replay: dict | None = None):
        self.log: dict = {}
        self.replay = replay

    def __call__(self, name, draw, values):
        stat = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), values["statistic"])
        released = values["released"] if self.replay is None else self.replay[(name, draw)][1]
        self.log[(name, draw)] = (stat, released)
        return released


def run(name, options, x, y, *, seed=7, observer=None, features=None, **perf):
    method, opts, pre, size, performance = _method(name, {**options, **perf})
    rows = open_rows(
        x if features is None else features,
        y,
        num_classes=K,
        feature_norm=pre.feature_norm,
        performance=performance,
    )
    epsilon = EPS if method.private else math.inf
    ledger = PrivacyLedger(epsilon, DELTA)
    key, _ = noise_key(seed)
    return train(rows, method, opts, pre, size, ledger, key, observer=observer), ledger


def flat(tree) -> np.ndarray:
    leaves = jax.tree_util.tree_leaves(tree)
    return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in leaves])


def neighbours(kind: str):
    x, y = blobs(120, D, K, seed=3)
    if kind == "add":  # a far-out row, of the first class
        row = (np.linspace(-5, 7, D) * 3).astype(np.float32)
        return (x, y), (np.vstack([x, row]), np.append(y, 0).astype(np.int32))
    return (x, y), (x[:-1], y[:-1])


@pytest.mark.parametrize("kind", ["add", "remove"])
@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_each_release_moves_by_at_most_its_sensitivity_and_nothing_else_moves(name, options, kind):
    (x, y), (x2, y2) = neighbours(kind)
    first = Recorder()
    trained, ledger = run(name, options, x, y, observer=first)
    second = Recorder(replay=first.log)
    trained2, ledger2 = run(name, options, x2, y2, observer=second)
    # the same releases, drawn as often as the ledger says
    assert first.log.keys() == second.log.keys()
    releases = {r.name: r for r in ledger.releases}
    for r in ledger.releases:
        draws = [k for k in first.log if k[0] == r.name]
        expected = r.count if r.kind != "gdp" else 1
        assert len(draws) == expected, (r.name, draws)
    assert sum(r.count if r.kind != "gdp" else 1 for r in ledger.releases) == len(first.log)
    # each statistic moves by at most its sensitivity
    for (release, draw), (stat, _) in first.log.items():
        moved = flat(second.log[(release, draw)][0]) - flat(stat)
        r = releases[release]
        if r.kind == "gdp":  # the selection: monotone scores of sensitivity 1
            assert np.max(np.abs(moved)) <= 1 + 1e-6, release
            continue
        bound = r.sensitivity * (1 + 1e-5) + 1e-5 * np.linalg.norm(flat(stat))
        assert np.linalg.norm(moved) <= bound, (release, draw, np.linalg.norm(moved), r.sensitivity)
    # with the releases fixed, everything else is identical
    np.testing.assert_allclose(trained2.weights, trained.weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trained2.bias, trained.bias, rtol=1e-5, atol=1e-6)
    assert trained2.settings == trained.settings
    assert trained2.dataset_size == trained.dataset_size
    assert ledger2.report() == ledger.report()


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_the_ledger_holds_the_plan_and_every_draw_has_the_planned_std(name, options):
    x, y = blobs(150, D, K, seed=4)
    recorder = Recorder()
    trained, ledger = run(name, options, x, y, observer=recorder)
    planned = [(p.name, p.sensitivity, p.noise_std, p.count) for p in trained.plan.releases]
    recorded = [(r.name, r.sensitivity, r.noise_std, r.count) for r in ledger.releases]
    assert recorded[-len(planned) :] == planned
    assert ledger.epsilon_spent <= EPS * (1 + 1e-9)
    symmetric = {p.name for p in trained.plan.releases if p.symmetric}
    for r in ledger.releases:
        if r.kind == "gdp" or r.noise_std in (None, 0):
            continue
        z = []
        for (release, _), (stat, released) in recorder.log.items():
            if release != r.name:
                continue
            noise = flat(released) - flat(stat)
            if release in symmetric:  # diagonal s, off-diagonal s / sqrt(2)
                m = noise.reshape(np.shape(stat))
                off = ~np.eye(m.shape[0], dtype=bool)
                noise = np.concatenate([np.diag(m), m[off] * math.sqrt(2)])
            z.append(np.ravel(noise) / r.noise_std)
        z = np.concatenate(z)
        if z.size >= 50:
            assert abs(np.mean(z**2) - 1) < 6 * math.sqrt(2 / z.size), (r.name, np.mean(z**2))


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_no_output_contains_the_true_row_count(name, options, tmp_path):
    n = 337
    x, y = blobs(n, D, K, seed=5)
    if name == "select":
        head = private_head.select(
            x,
            y,
            num_classes=K,
            epsilon=EPS,
            delta=DELTA,
            seed=11,
            candidates=[{"method": "dp_gd", "steps": 2}, {"method": "dp_prototypes"}],
        )
    else:
        head = private_head.fit(
            x, y, num_classes=K, epsilon=EPS, delta=DELTA, method=name, seed=11, **options
        )
    assert head.privacy["dataset_size"]["source"] == "noisy_count"
    assert head.privacy["dataset_size"]["value"] not in (n - 1, n, n + 1)  # this seed's draw
    head.save(tmp_path / "head.npz")
    report = private_head.load(tmp_path / "head.npz").report()
    found = numbers_in(report)
    assert n not in found and n + 1 not in found
    assert not any(isinstance(v, float) and v in (n, n + 1) for v in found)


ALL = [(m, FAST.get(m, {})) for m in available_methods()]


@pytest.mark.parametrize(("name", "options"), ALL, ids=[m for m, _ in ALL])
def test_shapes_dtypes_finite_and_seeded_runs_reproduce(name, options):
    x, y = blobs(160, D, K, seed=6)
    eps = EPS if get_method(name).private else math.inf
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
    eps = EPS if get_method(name).private else math.inf
    with pytest.raises(ValueError, match="does not take option") as err:
        private_head.fit(
            x, y, num_classes=K, epsilon=eps, delta=DELTA, method=name, lerning_rate=0.1, **options
        )
    for accepted in get_method(name).options.names():
        assert accepted in str(err.value)


@pytest.mark.parametrize(("name", "options"), ALL, ids=[m for m, _ in ALL])
def test_streamed_rows_give_the_in_memory_head(name, options, tmp_path):
    x, y = blobs(250, D, K, seed=8)
    path = write_store(tmp_path / "s.h5", {"train": (x, y)}, K)
    eps = EPS if get_method(name).private else math.inf
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
    assert {m for m, _ in CASES} >= set(PRIVATE)
    assert {m for m, _ in ALL} == set(available_methods())


def test_a_selection_release_is_a_dominating_gdp_entry_without_a_noise_std():
    x, y = blobs(150, D, K, seed=9)
    trained, ledger = run("select", {}, x, y)
    entry = [r for r in ledger.releases if r.kind == "gdp"]
    assert len(entry) == 1 and entry[0].noise_std is None and "dominates" in entry[0].description
    assert [p.kind for p in trained.plan.releases][-1] == DOMINATING_GDP
