"""The synthetic generator's documented properties (benchmarks/synthetic.py)."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from benchmarks import synthetic
from benchmarks.synthetic import SyntheticSpec
from feature_extract.store import read_split


def test_shapes_dtypes_and_determinism():
    spec = synthetic.preset("tiny")
    data = synthetic.generate(spec)
    assert data.train_x.shape == (spec.num_train, spec.dim) and data.train_x.dtype == np.float32
    assert data.test_x.shape == (spec.num_test, spec.dim) and data.test_y.dtype == np.int32
    assert data.train_y.shape == (spec.num_train,) and data.num_classes == spec.num_classes
    again = synthetic.generate(spec)
    np.testing.assert_array_equal(data.train_x, again.train_x)
    other = synthetic.generate(dataclasses.replace(spec, seed=1))
    assert not np.array_equal(data.train_x, other.train_x)


@given(st.integers(1, 5000), st.integers(2, 40), st.floats(0, 3))
def test_class_counts_largest_remainder(num_rows, num_classes, imbalance):
    priors = synthetic.class_priors(num_classes, imbalance)
    counts = synthetic.class_counts(num_rows, priors)
    exact = num_rows * priors
    assert counts.sum() == num_rows
    # each count is the floor or the ceiling of its exact share ...
    assert np.all((counts == np.floor(exact)) | (counts == np.ceil(exact)))
    # ... and the rows handed out above the floor go to the largest remainders
    rem = exact - np.floor(exact)
    up = counts > np.floor(exact)
    if up.any() and (~up).any():
        assert rem[up].min() >= rem[~up].max() - 1e-12
    if imbalance == 0:
        assert counts.max() - counts.min() <= 1


def test_zipf_priors_ordering_and_formula():
    priors = synthetic.class_priors(5, 1.0)
    reference = np.array([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5]) / sum([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    np.testing.assert_allclose(priors, reference)
    spec = dataclasses.replace(synthetic.preset("tiny"), imbalance=1.5, num_train=3000)
    labels = synthetic.generate(spec).train_y
    counts = np.bincount(labels, minlength=spec.num_classes)
    assert np.all(np.diff(counts) < 0)  # class 0 the largest, strictly decreasing
    expected = synthetic.class_counts(3000, synthetic.class_priors(3, 1.5))
    np.testing.assert_array_equal(counts, expected)


@given(st.integers(1, 300), st.floats(0, 4))
def test_spectrum_mean_one_and_decreasing(dim, anisotropy):
    spectrum = synthetic.covariance_spectrum(dim, anisotropy)
    assert math.isclose(spectrum.mean(), 1.0, rel_tol=1e-9)
    assert np.all(np.diff(spectrum) <= 1e-12)
    np.testing.assert_allclose(spectrum[0] / spectrum[-1], dim**anisotropy, rtol=1e-9)


def test_within_class_covariance_matches_spectrum():
    # separation 0: every row is pure noise U diag(sqrt(lambda)) z, so the sample covariance's
    # eigenvalues estimate the spectrum.
    spec = SyntheticSpec(20_000, 10, 6, 2, separation=0.0, anisotropy=1.5, seed=3)
    x = synthetic.generate(spec).train_x.astype(np.float64)
    eig = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    np.testing.assert_allclose(eig, synthetic.covariance_spectrum(6, 1.5), rtol=0.08)


def test_class_means_at_separation():
    spec = SyntheticSpec(6000, 10, 16, 3, separation=4.0, anisotropy=1.0, seed=2)
    data = synthetic.generate(spec)
    means = np.stack([data.train_x[data.train_y == k].mean(0) for k in range(3)])
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 4.0, rtol=0.05)


def _logreg_accuracy(separation: float) -> float:
    spec = SyntheticSpec(600, 600, 8, 4, separation=separation, anisotropy=0.5, seed=5)
    d = synthetic.generate(spec)
    model = LogisticRegression(max_iter=300).fit(d.train_x, d.train_y)
    return model.score(d.test_x, d.test_y)


def test_more_separation_gives_higher_accuracy():
    accuracies = [_logreg_accuracy(s) for s in (0.5, 1.5, 4.0)]
    assert accuracies[0] < accuracies[1] < accuracies[2]
    assert accuracies[0] < 0.6 and accuracies[2] > 0.95


def test_presets_and_scale():
    cifar = synthetic.PRESETS["cifar10-like"]
    assert (cifar.num_train, cifar.dim, cifar.num_classes) == (50_000, 768, 10)
    assert synthetic.PRESETS["cifar100-like"].num_classes == 100
    assert synthetic.PRESETS["imagenet-like"].dim == 1280
    assert synthetic.PRESETS["imagenet-like"].num_train == 1_281_167
    small = synthetic.preset("cifar10-like", scale=0.01, seed=7)
    assert (small.num_train, small.num_test, small.seed) == (500, 100, 7)
    assert synthetic.preset("cifar100-like", scale=1e-4).num_train == 100  # at least K rows
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        synthetic.preset("mnist-like")
    with pytest.raises(ValueError, match="scale"):
        synthetic.preset("tiny", scale=2.0)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        SyntheticSpec(10, 10, 4, 1)


def test_write_store_round_trip(tmp_path):
    spec = synthetic.preset("tiny")
    path = synthetic.write_store(spec, tmp_path / "tiny.h5", name="tiny")
    data = synthetic.generate(spec)
    x, y, info = read_split(path, "train")
    np.testing.assert_array_equal(x, data.train_x)
    np.testing.assert_array_equal(y, data.train_y)
    assert info.num_classes == 3 and info.attrs["dataset"] == "tiny"
    xt, yt, _ = read_split(path, "test")
    np.testing.assert_array_equal(yt, data.test_y)
