"""The non-private ceiling: converged, its weight decay cross-validated, at or above scikit-learn's
logistic regression on the same preprocessed rows."""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np
import pytest

import private_head
from private_head._methods import nonprivate
from private_head._options import Performance
from private_head._preprocessing import Preprocessing
from private_head._rows import open_rows
from tests.helpers import blobs, write_store


def _fit(x, y, k, **options):
    return private_head.fit(
        x, y, num_classes=k, epsilon=math.inf, delta=1e-5, method="nonprivate", **options
    )


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's bundled digits (1,797 rows, 64 pixels), a fixed 1,300 / 497 split."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order].astype(np.int32)
    return x[:1300], y[:1300], x[1300:], y[1300:]


def test_the_ceiling_is_at_or_above_sklearn_on_the_same_rows(digits):
    from sklearn.linear_model import LogisticRegression

    x, y, xt, yt = digits
    head = _fit(x, y, 10)
    ref = LogisticRegression(max_iter=10_000).fit(_unit(x), y)  # default C = 1, lbfgs
    ours, theirs = head.accuracy(xt, yt)["top1"], ref.score(_unit(xt), yt)
    assert ours >= theirs - 0.002, (ours, theirs)
    report = head.privacy["nonprivate"]
    assert report["selection"].startswith("10-fold cross-validation")
    assert report["weight_decay"] in report["grid"]
    assert len(report["cv_accuracy"]) == len(report["grid"]) >= 3
    _check_the_grid_walk(report)
    assert report["converged"] and report["gradient_max"] <= 1e-6
    assert head.privacy["private"] is False and head.privacy["releases"] == []
    assert head.settings["options"]["weight_decay"] is None  # the options as given


def _check_the_grid_walk(report):
    """The report's grid is ``DECAY_GRID`` from the strongest decay down, stopped at the first
    decay ``PATIENCE`` decades below the best so far (or at the grid's end); the chosen decay has
    the highest mean held-out accuracy, and the lowest log-loss among those that tie with it."""
    grid, accuracy, log_loss = report["grid"], report["cv_accuracy"], report["cv_log_loss"]
    assert grid == list(nonprivate.DECAY_GRID[: len(grid)])
    best = grid.index(report["weight_decay"])
    assert accuracy[best] == max(accuracy)
    assert log_loss[best] == min(
        v for a, v in zip(accuracy, log_loss, strict=True) if a == accuracy[best]
    )
    if len(grid) < len(nonprivate.DECAY_GRID):
        assert math.log10(grid[best] / grid[-1]) >= nonprivate.PATIENCE - 1e-9
        assert math.log10(grid[best] / grid[-2]) < nonprivate.PATIENCE - 1e-9


def _objective(W, b, x, y, decay):
    z = x.astype(np.float64) @ W.astype(np.float64) + b
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -np.mean(logp[np.arange(len(y)), y]) + 0.5 * decay * np.sum(W.astype(np.float64) ** 2)


@pytest.mark.parametrize("train_bias", [True, False])
def test_the_optimiser_reaches_sklearns_optimum_at_the_same_decay(digits, train_bias):
    """At a fixed decay, L-BFGS stops at a small gradient and the objective equals scikit-learn's
    optimum (C = 1 / (decay N)) to 1e-5 relative."""
    from sklearn.linear_model import LogisticRegression

    x, y, _, _ = digits
    decay = 1e-3
    head = _fit(x, y, 10, weight_decay=decay, train_bias=train_bias)
    report = head.privacy["nonprivate"]
    assert report["selection"] == "given" and "grid" not in report
    assert report["gradient_max"] <= 1e-5
    rows = _unit(x)
    ref = LogisticRegression(
        C=1 / (decay * len(y)), fit_intercept=train_bias, tol=1e-12, max_iter=100_000
    ).fit(rows, y)
    ref_b = ref.intercept_ if train_bias else np.zeros(10)
    theirs = _objective(ref.coef_.T, ref_b, rows, y, decay)
    ours = _objective(head.weights, head.bias, rows, y, decay)
    assert ours == pytest.approx(theirs, rel=1e-5)


@pytest.mark.parametrize(
    "pre",
    [
        {},
        {"normalize": False, "feature_norm": 5.0},
        {"public_mean": np.full(8, 0.3, np.float32), "feature_norm": 2.0},
    ],
)
def test_the_ceiling_sees_the_rows_as_prediction_preprocesses_them(pre):
    """The materialised rows are the statistics' rows: a head fitted on them predicts (through
    ``preprocessing.apply``) what the optimum on ``apply(x)`` predicts."""
    x, y = blobs(200, 8, 3, seed=3)
    x[:5] *= 40.0  # rows beyond the radius: shrunk or scaled
    head = _fit(x, y, 3, weight_decay=1e-3, **pre)
    rows = head.preprocessing.apply(x)
    W, b = head.weights, head.bias
    grad_W = rows.T @ (_softmax(rows @ W + b) - np.eye(3)[y]) / len(y) + 1e-3 * W
    assert np.abs(grad_W).max() < 1e-5


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    "pre",
    [
        Preprocessing("normalize", 1.0),
        Preprocessing("shrink", 3.0),
        Preprocessing("normalize", 2.0, "public", np.full(8, 0.5)),
    ],
)
def test_preprocessed_rows_equal_the_prediction_map(tmp_path, pre):
    x, y = blobs(300, 8, 3, seed=5)
    x[7] *= 1e30  # an extreme row: rescaled by powers of two in the pass
    path = write_store(tmp_path / "s.h5", {"train": (x, y)}, 3)
    want = pre.apply(x)
    for rows in (
        open_rows(x, y, num_classes=3),
        open_rows(jnp.asarray(x), y, num_classes=3),
        open_rows(x, y, num_classes=3, performance=Performance(chunk_rows=37)),
        open_rows(path, num_classes=3, performance=Performance(chunk_rows=64)),
    ):
        got = rows.preprocessed(pre)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7)


def test_rows_beyond_the_memory_budget_stream_at_a_fixed_decay_and_say_so():
    x, y = blobs(4000, 64, 3, seed=6)
    budget = Performance(max_device_bytes=1 << 20, chunk_rows=500)
    assert open_rows(x, y, num_classes=3, performance=budget).preprocessed() is None
    head = _fit(x, y, 3, max_device_bytes=1 << 20, chunk_rows=500)
    report = head.privacy["nonprivate"]
    assert "do not fit the memory budget" in report["selection"]
    assert report["weight_decay"] == pytest.approx(1 / 4000)
    assert report["gradient_max"] <= 1e-5
    resident = _fit(x, y, 3, weight_decay=1 / 4000)
    np.testing.assert_allclose(head.weights, resident.weights, atol=2e-3)


def test_cross_validation_follows_the_grid_and_the_folds_are_stratified():
    y = np.repeat(np.arange(3), [50, 30, 7])
    folds = nonprivate.stratified_folds(y, 5)
    for c in range(3):
        counts = np.bincount(folds[y == c], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_the_grid_is_half_decades():
    grid = nonprivate.DECAY_GRID
    assert len(grid) == 17 and grid[0] == pytest.approx(1e-1) and grid[-1] == pytest.approx(1e-9)
    np.testing.assert_allclose(np.log10(grid), -np.arange(2, 19) / 2, rtol=0, atol=1e-12)


def test_the_choice_breaks_ties_as_documented():
    """The highest mean held-out accuracy; ties: the lower log-loss, then the larger decay. The
    accuracies are exact fractions: equal means from different fold counts tie."""
    from fractions import Fraction

    def mean(counts, rows=800):
        return sum(Fraction(c, rows) for c in counts) / len(counts)

    def float32_mean(counts, rows=800):  # summed in order, in float32
        return functools.reduce(np.add, np.float32(counts) / np.float32(rows)) / np.float32(5)

    # the same 3,938 of 4,000 held-out rows right, spread differently over the folds: a float32
    # mean of the fold accuracies tells them apart
    first, second = [790, 785, 788, 789, 786], [790, 789, 786, 788, 785]
    a, b = mean(first), mean(second)
    assert a == b == Fraction(3938, 4000)
    assert float32_mean(first) != float32_mean(second)
    assert nonprivate.choose([(a, 0.061, 1e-7), (b, 0.058, 1e-6)]) == 1
    assert nonprivate.choose([(a, 0.058, 1e-6), (b, 0.061, 1e-7)]) == 0
    assert nonprivate.choose([(a, 0.058, 1e-7), (b, 0.058, 1e-6)]) == 1  # full tie: larger decay
    assert nonprivate.choose([(a, 0.5, 1e-3), (a + Fraction(1, 4000), 0.9, 1e-4)]) == 1


@pytest.mark.parametrize(
    "options, match",
    [
        ({"folds": 1}, "folds must be an integer >= 2"),
        ({"tolerance": 0.0}, "tolerance must be a positive"),
        ({"weight_decay": -1.0}, "weight_decay must be a finite number >= 0"),
        ({"max_iterations": 0}, "max_iterations must be a positive integer"),
    ],
)
def test_bad_options_are_clear_errors(options, match):
    x, y = blobs(30, 8, 3)
    with pytest.raises(ValueError, match=match):
        _fit(x, y, 3, **options)
