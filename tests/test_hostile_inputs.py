"""Hostile inputs on the public API: each gives its documented error, or finite valid output.

Store (feature_extract.store): ValueError for bad arrays/labels, StoreError for bad files.
Training data (private_head._rows / private_head.fit): ValueError naming what is wrong.
Accounting: ValueError for impossible or non-finite budgets.
"""

from __future__ import annotations

import math
import os

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import private_head
from feature_extract import store
from private_head._preprocessing import Preprocessing
from private_head._rows import open_rows

N, D, K = 8, 4, 3  # one shape everywhere: few JIT compilations


def preprocess(x, y, num_classes=K, feature_norm=1.0):
    """Open the rows and run the validating pass; returns the preprocessed rows (float64)."""
    rows = open_rows(x, y, num_classes=num_classes, feature_norm=feature_norm)
    rows.validate(Preprocessing("normalize", feature_norm))
    return np.asarray(Preprocessing("normalize", feature_norm).apply(x), np.float64)


fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def _rows(seed: int = 0, n: int = N, d: int = D) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, K, size=n)


bad_values = st.sampled_from([np.nan, np.inf, -np.inf])
cells = st.tuples(st.integers(0, N - 1), st.integers(0, D - 1))


# --- feature store ---------------------------------------------------------------------------


@fixture_ok
@given(cells=st.lists(cells, min_size=1, max_size=5), value=bad_values)
def test_store_refuses_nonfinite_rows_and_names_them(tmp_path_factory, cells, value):
    x, y = _rows()
    for i, j in cells:
        x[i, j] = value
    path = tmp_path_factory.mktemp("s") / "f.h5"
    with pytest.raises(ValueError, match="NaN or infinite") as err:
        store.write_split(path, "train", x, y, num_classes=K)
    first = min(i for i, _ in cells)
    assert f": {first}" in str(err.value)


@fixture_ok
@given(exponent=st.integers(5, 37))
def test_store_keeps_large_float32_values_and_refuses_float16_overflow(tmp_path_factory, exponent):
    """float32 input is stored as float32 (no silent float16 cast); a user's own float16 cast of
    values above 65504 makes inf, which is refused with the row named."""
    x, y = _rows()
    x[2, 1] = 10.0**exponent
    path = tmp_path_factory.mktemp("s") / "f.h5"
    store.write_split(path, "train", x, y, num_classes=K)
    back, _, info = store.read_split(path, "train")
    assert info.feature_dtype == "float32" and np.array_equal(back, x)
    with np.errstate(over="ignore"):
        half = x.astype(np.float16)
    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 row\(s\): 2"):
        store.write_split(path, "half", half, y, num_classes=K)


@fixture_ok
@given(label=st.one_of(st.integers(K, 2**31 - 1), st.integers(-(2**31), -1)))
def test_store_refuses_labels_outside_the_label_space(tmp_path_factory, label):
    x, y = _rows()
    y[5] = label
    path = tmp_path_factory.mktemp("s") / "f.h5"
    with pytest.raises(ValueError, match=r"outside the label space \[0, 3\).*row 5"):
        store.write_split(path, "train", x, y, num_classes=K)


@pytest.mark.parametrize(
    "labels", [np.linspace(0.0, 1.9, N), np.array([0, 1, 2, 2**32 + 1, 0, 1, 2, 0], np.int64)]
)
def test_store_refuses_fractional_and_wrapping_labels(tmp_path, labels):
    x, _ = _rows()
    with pytest.raises(ValueError, match="integer|label space"):
        store.write_split(tmp_path / "f.h5", "train", x, labels, num_classes=K)


def test_store_refuses_files_that_are_not_stores(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(store.StoreError, match="truncated or not HDF5"):
        store.read_split(junk, "train")
    with pytest.raises(store.StoreError, match="no feature store"):
        store.read_split(tmp_path / "missing.h5", "train")
    x, y = _rows()
    store.write_split(tmp_path / "ok.h5", "train", x, y, num_classes=K)
    with pytest.raises(store.StoreError, match="no split 'test'"):
        store.read_split(tmp_path / "ok.h5", "test")


def test_store_refuses_misshaped_arrays(tmp_path):
    x, y = _rows()
    for features, labels in ((x[0], y[:1]), (x, y[:-1]), (x[None], y)):
        with pytest.raises(ValueError, match=r"features must be \[N, D\]"):
            store.write_split(tmp_path / "f.h5", "train", features, labels, num_classes=K)


def test_empty_split_is_refused_when_written_and_for_training(tmp_path):
    path = tmp_path / "f.h5"
    with pytest.raises(ValueError, match="at least one row"):
        store.write_split(
            path, "train", np.zeros((0, D), np.float32), np.zeros(0, np.int32), num_classes=K
        )
    assert not os.path.exists(path)
    # A store from an older writer may hold an empty split: it reads, and training refuses it.
    store.write_split(path, "train", np.zeros((1, D), np.float32), np.zeros(1, int), num_classes=K)
    with h5py.File(path, "a") as f:
        for name in ("features", "labels", "ids"):
            f["train"][name].resize(0, axis=0)
        f["train"].attrs["rows_written"] = f["train"].attrs["total_rows"] = 0
    features, labels, info = store.read_split(path, "train")
    assert features.shape == (0, D) and labels.shape == (0,) and info.num_rows == 0
    with pytest.raises(ValueError, match="empty"):
        open_rows(f"{path}:train", num_classes=K)
    with pytest.raises(ValueError, match="empty"):
        preprocess(features, labels)


# --- training data preprocessing -------------------------------------------------------------


@given(
    cells=st.lists(cells, min_size=1, max_size=5),
    value=bad_values,
    dtype=st.sampled_from([np.float16, np.float32, np.float64]),
)
def test_preprocess_refuses_nonfinite_rows_and_names_them(cells, value, dtype):
    x, y = _rows()
    x = x.astype(dtype)
    for i, j in cells:
        x[i, j] = value
    rows = sorted({i for i, _ in cells})
    with pytest.raises(ValueError, match="never silently zeroed") as err:
        preprocess(x, y)
    assert f"{len(rows)} row(s): " + ", ".join(map(str, rows)) in str(err.value)
    assert "it is private itself: do not publish it" in str(err.value)


@given(row=st.integers(0, N - 1), scale=st.floats(1e39, 1e300))
def test_preprocess_refuses_float64_rows_that_overflow_float32(row, scale):
    x, y = _rows()
    x = x.astype(np.float64)
    x[row] *= scale
    with pytest.raises(ValueError, match=rf"float32 cast.*row\(s\):? {row}\b"):
        preprocess(x, y)


@given(
    log_norm=st.floats(-15, 15),
    row=st.integers(0, N - 1),
    feature_norm=st.sampled_from([0.5, 1.0, 3.0]),
)
def test_preprocess_normalises_any_moderate_norm(log_norm, row, feature_norm):
    x, y = _rows()
    x[row] *= np.float32(10.0**log_norm) / np.linalg.norm(x[row])
    norms = np.linalg.norm(preprocess(x, y, feature_norm=feature_norm), axis=1)
    np.testing.assert_allclose(norms, feature_norm, rtol=1e-5)
    assert np.all(norms <= feature_norm)


@given(log_norm=st.sampled_from([-37.0, -30.0, -25.0, 20.0, 30.0, 38.0]))
def test_preprocess_normalises_huge_and_tiny_norms(log_norm):
    """Squares of such entries overflow or underflow float32: the norm must be computed safely."""
    x, y = _rows()
    x[3] = np.float32(10.0**log_norm)
    norms = np.linalg.norm(preprocess(x, y), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


@given(label=st.one_of(st.integers(K, 10**6), st.integers(-(10**6), -1)))
def test_preprocess_refuses_labels_outside_the_label_space(label):
    x, y = _rows()
    y[4] = label
    with pytest.raises(ValueError, match=rf"outside the label space \[0, {K}\).*row 4: {label}"):
        preprocess(x, y)


@given(labels=st.lists(st.floats(0, K - 1, allow_nan=False), min_size=N, max_size=N))
def test_preprocess_refuses_float_labels(labels):
    x, _ = _rows()
    with pytest.raises(ValueError, match="must be integers"):
        preprocess(x, np.array(labels, dtype=np.float64))


@given(num_classes=st.sampled_from([None, 0, 1, -3, 2.5, True]))
def test_preprocess_needs_a_public_label_space_of_two_or_more(num_classes):
    x, y = _rows()
    with pytest.raises(ValueError, match="num_classes"):
        preprocess(x, np.zeros_like(y), num_classes=num_classes)


@given(n_labels=st.sampled_from([0, 1, N - 1, N + 1]))
def test_preprocess_refuses_label_count_mismatch(n_labels):
    x, y = _rows(n=max(N, n_labels))
    with pytest.raises(ValueError, match="shape mismatch"):
        preprocess(x[:N], y[:n_labels])


def test_preprocess_refuses_non_float_and_wrong_rank_features():
    x, y = _rows()
    with pytest.raises(ValueError, match="floating point"):
        preprocess(x.astype(np.int64), y)
    with pytest.raises(ValueError, match="2-D"):
        preprocess(x.ravel(), y)


# --- options -------------------------------------------------------------------------------


@given(epsilon=st.sampled_from([math.nan, -math.inf, -1.0, 0.0, -0.0, math.inf]))
def test_fit_refuses_epsilon_no_private_mechanism_meets(epsilon):
    x, y = _rows()
    with pytest.raises(ValueError, match="epsilon"):
        private_head.fit(x, y, method="single_step", num_classes=K, epsilon=epsilon, delta=1e-5)


@given(delta=st.sampled_from([math.nan, 0.0, 1.0, -1e-9, 1.5, math.inf]))
def test_fit_refuses_delta_outside_the_open_unit_interval(delta):
    x, y = _rows()
    with pytest.raises(ValueError, match="delta"):
        private_head.fit(x, y, method="single_step", num_classes=K, epsilon=1.0, delta=delta)


@given(
    name=st.sampled_from(["clip_norm", "learning_rate", "feature_norm"]),
    value=st.sampled_from([math.nan, math.inf, 0.0, -1.0, "1", None]),
)
def test_options_refuse_nonpositive_nonfinite_or_mistyped_scales(name, value):
    x, y = _rows()
    if value is None:
        value = "none"  # None means "the rule" for dp_gd's clip_norm and learning_rate
    with pytest.raises(ValueError, match=name):
        private_head.fit(
            x, y, num_classes=K, epsilon=1.0, delta=1e-5, method="dp_gd", **{name: value}
        )


# --- accounting ------------------------------------------------------------------------------


@given(
    epsilon=st.floats(1e-4, 300), log10_delta=st.floats(-300, -0.05), steps=st.integers(1, 10**6)
)
def test_full_batch_calibration_is_finite_and_meets_any_valid_budget(epsilon, log10_delta, steps):
    from accounting import epsilon_full_batch, noise_multiplier_full_batch

    delta = 10.0**log10_delta
    sigma = noise_multiplier_full_batch(epsilon, delta, steps)
    assert 0 < sigma < math.inf
    assert epsilon_full_batch(sigma, steps, delta) <= epsilon * (1 + 1e-9)


@given(
    epsilon=st.sampled_from([math.nan, -1.0, 0.0, -math.inf]),
    delta=st.sampled_from([1e-5, math.nan, 0.0, 1.0, 2.0]),
    steps=st.sampled_from([1, 0, -2, 2.5, True]),
)
def test_accounting_refuses_invalid_budgets(epsilon, delta, steps):
    from accounting import noise_multiplier_full_batch, noise_multiplier_poisson

    with pytest.raises(ValueError, match="epsilon|delta|steps"):
        noise_multiplier_full_batch(epsilon, delta, steps)
    with pytest.raises(ValueError, match="epsilon|delta|steps"):
        noise_multiplier_poisson(epsilon, delta, 0.01, steps)


@given(
    sensitivity=st.sampled_from([math.nan, math.inf, 0.0, -1.0]),
    noise_std=st.sampled_from([math.nan, -1.0, math.inf]),
)
def test_a_release_of_an_invalid_sensitivity_or_noise_is_refused(sensitivity, noise_std):
    from private_head import PlannedRelease

    for args in ((sensitivity, 1.0), (1.0, noise_std)):
        with pytest.raises(ValueError, match="sensitivity|noise_std"):
            PlannedRelease.gaussian("step", *args)


@given(sigma=st.sampled_from([math.nan, -1.0, -math.inf]))
def test_ledger_refuses_invalid_events_and_records_nothing(sigma):
    import dp_accounting

    from accounting import PrivacyLedger

    ledger = PrivacyLedger(1.0, 1e-5)
    with pytest.raises(ValueError, match="noise_multiplier"):
        ledger.compose("step", dp_accounting.GaussianDpEvent(sigma))
    assert ledger.releases == ()


@given(epsilon=st.floats(0.1, 10), overspend=st.floats(1.001, 100))
def test_ledger_refuses_overspending_before_recording(epsilon, overspend):
    from accounting import BudgetExceededError, PrivacyLedger, gaussian_event, mu_from_epsilon

    ledger = PrivacyLedger(epsilon, 1e-5)
    sigma = 1.0 / (mu_from_epsilon(epsilon, 1e-5) * overspend)
    with pytest.raises(BudgetExceededError, match="over the budget"):
        ledger.compose("step", gaussian_event(sigma))
    with pytest.raises(BudgetExceededError):
        ledger.compose("exact", gaussian_event(0.0))
    assert ledger.releases == () and ledger.epsilon_spent == 0.0


# --- private_head.fit and the head -----------------------------------------------------------


def _fit(x, y, **kwargs):
    import private_head

    kwargs = {
        "num_classes": K,
        "epsilon": 2.0,
        "delta": 1e-5,
        "seed": 0,
        "method": "single_step",
        **kwargs,
    }
    return private_head.fit(x, y, **kwargs)


@given(cells=st.lists(cells, min_size=1, max_size=4), value=bad_values)
def test_fit_refuses_nonfinite_rows_and_names_them(cells, value):
    x, y = _rows()
    for i, j in cells:
        x[i, j] = value
    rows = sorted({i for i, _ in cells})
    with pytest.raises(ValueError, match=", ".join(map(str, rows)) + r"\. Fix or drop"):
        _fit(x, y)


@settings(max_examples=15)
@given(log_scales=st.lists(st.floats(-30, 30), min_size=N, max_size=N))
def test_fit_is_invariant_to_the_norm_of_each_row(log_scales):
    """Rows are normalised per example: any positive rescaling gives the same head (same seed)."""
    x, y = _rows()
    scaled = x * (10.0 ** np.array(log_scales, np.float32))[:, None]
    head, reference = _fit(scaled, y), _fit(x, y)
    assert np.all(np.isfinite(head.weights))
    np.testing.assert_allclose(head.weights, reference.weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(head.predict(scaled), reference.predict(x))


@given(label=st.integers(0, K - 1))
def test_fit_with_a_single_class_present_gives_a_finite_head(label):
    x, _ = _rows()
    head = _fit(x, np.full(N, label))
    assert head.weights.shape == (D, K) and np.all(np.isfinite(head.weights))
    assert head.privacy["epsilon_spent"] <= 2.0 and head.privacy["seeded"] is True


def test_fit_on_float16_features_and_refuses_float16_overflow():
    x, y = _rows()
    x[0, 0] = 60000.0  # representable in float16
    head = _fit(x.astype(np.float16), y)
    assert np.all(np.isfinite(head.weights))
    x[0, 0] = 70000.0  # beyond float16's 65504: the user's cast makes inf
    with np.errstate(over="ignore"):
        half = x.astype(np.float16)
    with pytest.raises(ValueError, match=r"row\(s\): 0\b"):
        _fit(half, y)


@given(
    labels=st.sampled_from([[0, 1, 2, 3], [-1, 0, 1, 2], [0.0, 1.0, 2.0, 1.5], [0, 1, 2, 2**40]])
)
def test_fit_refuses_labels_outside_the_integer_label_space(labels):
    x, _ = _rows(n=4)
    with pytest.raises(ValueError, match="label space|integers"):
        _fit(x, np.array(labels))


@given(
    epsilon=st.sampled_from([math.nan, math.inf, -math.inf, -2.0, 0.0]),
    delta=st.sampled_from([1e-5, 0.0, 1.0, math.nan]),
)
def test_fit_refuses_budgets_no_private_mechanism_meets(epsilon, delta):
    x, y = _rows()
    with pytest.raises(ValueError, match="epsilon|delta"):
        _fit(x, y, epsilon=epsilon, delta=delta)


def test_fit_refuses_budgets_beyond_floating_point():
    x, y = _rows()
    with pytest.raises(ValueError, match="cannot be met"):
        _fit(x, y, epsilon=1e-300, delta=1e-300)


@given(method=st.sampled_from(["single_step", "dp_gd"]), seed=st.sampled_from([1.5, True, "7"]))
def test_fit_refuses_non_integer_seeds(method, seed):
    x, y = _rows()
    with pytest.raises(ValueError, match="seed"):
        _fit(x, y, method=method, seed=seed)


def test_fit_refuses_empty_features_and_a_missing_label_space():
    import private_head

    x, y = _rows()
    with pytest.raises(ValueError, match="empty"):
        _fit(x[:0], y[:0])
    with pytest.raises(ValueError, match="empty"):
        _fit(x[:, :0], y)
    with pytest.raises(TypeError):
        private_head.fit(
            x, y, method="single_step", epsilon=1.0, delta=1e-5
        )  # num_classes is keyword-required
    with pytest.raises(ValueError, match="num_classes is required"):
        _fit(x, y, num_classes=None)


@given(extra=st.sampled_from([-3, -1, 1, 5]))
def test_head_refuses_rows_of_another_dimension(tmp_path_factory, extra):
    """A test split written with another backbone (other D) cannot be scored by the head."""
    x, y = _rows()
    head = _fit(x, y)
    path = tmp_path_factory.mktemp("s") / "f.h5"
    test_x, test_y = _rows(seed=1, d=D + extra)
    store.write_split(path, "test", test_x, test_y, num_classes=K)
    features, labels, _ = store.read_split(path, "test")
    for call in (
        lambda: head.accuracy(features, labels),
        lambda: head.predict(features),
        lambda: head.logits(features),
    ):
        with pytest.raises(ValueError, match=rf"must be \[N, {D}\].*\(8, {D + extra}\)"):
            call()


def test_head_accuracy_refuses_bad_test_labels_and_rows():
    x, y = _rows()
    head = _fit(x, y)
    with pytest.raises(ValueError, match="label space"):
        head.accuracy(x, np.where(np.arange(N) == 2, K, y))
    with pytest.raises(ValueError, match="shape mismatch"):
        head.accuracy(x, y[:-1])
    bad = x.copy()
    bad[6, 1] = np.nan
    with pytest.raises(ValueError, match=r"row\(s\): 6\b"):
        head.accuracy(bad, y)


def test_fit_from_store_refuses_wrong_label_space_and_incomplete_splits(tmp_path):
    import private_head

    x, y = _rows()
    path = tmp_path / "f.h5"
    store.write_split(path, "train", x, y, num_classes=K)
    with pytest.raises(ValueError, match="declares 3 classes"):
        _fit(f"{path}:train", None, num_classes=K + 1)
    writer = store.SplitWriter(path, "partial", dim=D, total_rows=N, num_classes=K)
    writer.append(x[:3], y[:3], np.arange(3))
    writer.close()
    with pytest.raises(store.IncompleteSplitError, match="3 of 8 rows"):
        private_head.fit(
            f"{path}:partial", method="single_step", num_classes=K, epsilon=1.0, delta=1e-5
        )
    assert np.all(np.isfinite(_fit(f"{path}:train", None).weights))


@pytest.mark.parametrize("method", ["single_step", "dp_gd", "dp_least_squares", "dp_prototypes"])
def test_fit_refuses_options_the_method_does_not_know(method):
    x, y = _rows()
    with pytest.raises(ValueError, match="lerning_rate"):
        _fit(x, y, method=method, lerning_rate=0.1)
