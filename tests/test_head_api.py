"""private_head.fit and PrivateHead: budgets, seeds, preprocessing at prediction, accuracy,
errors."""

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import private_head
from accounting import epsilon_from_mu, mu_from_epsilon
from feature_extract import store
from private_head._preprocessing import Preprocessing

K, D = 4, 6


def _blobs(seed=0, n=120, k=K, d=D):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return (rng.normal(size=(n, d)) + 3 * np.eye(k, d)[y]).astype(np.float32), y


def _fit(x, y, **kw):
    kw = {"num_classes": K, "epsilon": 4.0, "delta": 1e-5, "method": "single_step", **kw}
    return private_head.fit(x, y, **kw)


def test_exports():
    for name in ("fit", "select", "load", "PrivateHead", "available_methods", "register_method"):
        assert name in private_head.__all__
    assert all(hasattr(private_head, name) for name in private_head.__all__)
    assert {"nonprivate", "single_step"} <= set(private_head.available_methods())


def test_seed_reproduces_and_os_randomness_differs():
    x, y = _blobs()
    a, b = _fit(x, y, seed=11), _fit(x, y, seed=11)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.privacy["seeded"] is True
    c, d = _fit(x, y), _fit(x, y)
    assert c.privacy["seeded"] is False
    assert not np.allclose(c.weights, d.weights)


def test_privacy_report_spends_the_budget_on_recorded_releases():
    x, y = _blobs()
    head = _fit(x, y, epsilon=2.0, delta=1e-6, center="private", seed=0)
    p = head.privacy
    names = [r["name"] for r in p["releases"]]
    assert names == [
        "dataset_size/noisy_count",
        "center/row_sum",
        "single_step/clipped_gradient_sum",
    ]
    mu = math.sqrt(sum(r["mu"] ** 2 for r in p["releases"]))
    assert mu <= mu_from_epsilon(2.0, 1e-6) * (1 + 1e-9)
    assert p["epsilon_spent"] == pytest.approx(epsilon_from_mu(mu, 1e-6))
    assert p["epsilon_spent"] <= 2.0 * (1 + 1e-9) and p["epsilon_spent"] > 1.99
    assert p["dataset_size"]["source"] == "noisy_count" and p["private"] is True
    assert p["adjacency"] == "add_or_remove_one" and p["method"] == "single_step"
    # the budget shares: 1% of mu^2 to the count, 10% to the mean, the rest to the method
    mus = [r["mu"] for r in p["releases"]]
    total = mu_from_epsilon(2.0, 1e-6)
    assert mus == pytest.approx(
        [0.1 * total, math.sqrt(0.1) * total, math.sqrt(0.89) * total], rel=1e-9
    )


def test_nonprivate_ceiling_is_regularised_logistic_regression_and_charges_nothing():
    x, y = _blobs()
    wd = 1e-2
    head = _fit(
        x,
        y,
        epsilon=math.inf,
        method="nonprivate",
        weight_decay=wd,
        train_bias=False,
        tolerance=1e-7,
        max_iterations=5000,
    )
    assert head.privacy["releases"] == [] and head.privacy["private"] is False
    assert head.privacy["epsilon_spent"] == "inf" and head.privacy["mu"] == "inf"
    rows = x / np.linalg.norm(x, axis=1, keepdims=True)
    # sklearn minimises C * sum_i CE_i + ||W||^2 / 2, i.e. mean CE + wd/2 ||W||^2 for C = 1/(wd N)
    ref = LogisticRegression(
        C=1 / (wd * len(x)), fit_intercept=False, tol=1e-10, max_iter=10_000
    ).fit(rows, y)
    centred = head.weights - head.weights.mean(axis=1, keepdims=True)  # softmax shift
    np.testing.assert_allclose(
        centred, ref.coef_.T - ref.coef_.T.mean(axis=1, keepdims=True), atol=1e-3
    )


def test_logits_apply_the_training_preprocessing():
    x, y = _blobs()
    mean = np.full(D, 0.5, np.float32)
    head = _fit(x, y, public_mean=mean, feature_norm=2.0, seed=1)
    assert head.preprocessing.center == "public" and head.preprocessing.mean is not None
    rows = x - mean
    rows = 2.0 * rows / np.linalg.norm(rows, axis=1, keepdims=True)
    assert not any(r["name"].startswith("center") for r in head.privacy["releases"])
    np.testing.assert_allclose(
        head.logits(x), rows @ head.weights + head.bias, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(head.predict(x), np.argmax(head.logits(x), axis=1))


def test_accuracy_top1_and_top_min5_k():
    rng = np.random.default_rng(3)
    k = 7
    head = private_head.PrivateHead(
        rng.normal(size=(D, k)), rng.normal(size=k), Preprocessing("normalize", 1.0), {}
    )
    x, y = rng.normal(size=(50, D)), rng.integers(0, k, 50)
    z = head.logits(x)
    rank = (z > z[np.arange(50), y][:, None]).sum(axis=1)  # classes strictly better than y
    assert head.accuracy(x, y) == {"top1": np.mean(rank == 0), "top5": np.mean(rank < 5)}
    three = private_head.PrivateHead(head.weights[:, :3], head.bias[:3], head.preprocessing, {})
    assert three.accuracy(x, y % 3)["top5"] == 1.0  # top-min(5, K): every label is in the top 3


def test_store_path_equals_arrays(tmp_path):
    x, y = _blobs()
    path = str(tmp_path / "f.h5")
    store.write_split(path, "train", x, y, num_classes=K)
    a = _fit(x, y, seed=5)
    b = private_head.fit(
        f"{path}:train", method="single_step", num_classes=K, epsilon=4.0, delta=1e-5, seed=5
    )
    c = private_head.fit(
        path,
        method="single_step",
        num_classes=K,
        epsilon=4.0,
        delta=1e-5,
        seed=5,
        max_device_bytes=512,
    )
    assert b.operator_log["rows"] == c.operator_log["rows"] == "store_streamed"
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-5, atol=1e-7)  # summation order
    np.testing.assert_allclose(a.weights, c.weights, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epsilon": math.inf}, ValueError, "only with method='nonprivate'"),
        ({"method": "nonprivate"}, ValueError, "needs epsilon=math.inf"),
        ({"epsilon": 1e-300, "delta": 1e-300}, ValueError, "cannot be met"),
        ({"epsilon": math.nan}, ValueError, "epsilon must be > 0"),
        ({"epsilon": -1.0}, ValueError, "epsilon must be > 0"),
        ({"delta": 1.0}, ValueError, r"delta must lie in \(0, 1\)"),
        ({"num_classes": None}, ValueError, "num_classes is required"),
        ({"method": "no_such_method"}, ValueError, "unknown method 'no_such_method'"),
        ({"seed": 1.5}, ValueError, "seed must be an integer"),
        (
            {"center": "private", "center_budget_fraction": 1.5},
            ValueError,
            "center_budget_fraction",
        ),
        ({"epsilon": math.inf, "method": "nonprivate", "bogus": 1}, ValueError, r"\['bogus'\]"),
        (
            {"method": "dp_prototypes", "clip_norm": 0.1, "steps": 100},
            ValueError,
            r"does not take option\(s\) \['clip_norm', 'steps'\]",
        ),
        ({"method": "dp_gd", "steps": "abc"}, ValueError, "option steps must be an integer"),
        ({"dataset_size": 0}, ValueError, "dataset_size must be a positive integer"),
        (
            {"method": "dp_feature_covariance", "noise_floor": -1.0},
            ValueError,
            "noise_floor must be a finite number >= 0",
        ),
        (
            {"method": "dp_feature_covariance", "structure_threshold": math.inf},
            ValueError,
            "structure_threshold must be a finite number >= 0",
        ),
        ({"center": "public"}, ValueError, "needs public_mean"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, error, match):
    x, y = _blobs(n=20)
    with pytest.raises(error, match=match):
        _fit(x, y, **kwargs)


def test_bad_data_errors_come_through_fit():
    x, y = _blobs(n=20)
    x[[2, 9]] = np.nan
    with pytest.raises(ValueError, match=r"2 row\(s\): 2, 9"):
        _fit(x, y)
    with pytest.raises(ValueError, match="outside the label space"):
        _fit(_blobs(n=20)[0], np.full(20, K))
    with pytest.raises(ValueError, match="shape mismatch"):
        _fit(_blobs(n=20)[0], y[:5])
    head = _fit(*_blobs(n=20), seed=0)
    with pytest.raises(ValueError, match=rf"\[N, {D}\]"):
        head.logits(np.ones((3, D + 1)))
    with pytest.raises(ValueError, match="never silently zeroed"):
        head.predict(np.full((2, D), np.inf))


def test_private_mean_is_released_once_and_the_head_applies_it():
    x, y = _blobs()
    x = x + 5.0  # far from the origin: centring matters
    head = _fit(x, y, center="private", center_budget_fraction=0.2, seed=3, epsilon=8.0)
    mean = head.preprocessing.mean
    rows = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(mean, rows.mean(axis=0), atol=0.1)  # the noisy mean, n noisy
    centred = rows - mean
    want = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    np.testing.assert_allclose(
        head.logits(x), want @ head.weights + head.bias, rtol=1e-4, atol=1e-5
    )


def test_the_nonprivate_ceiling_centres_with_the_exact_mean_and_charges_nothing():
    x, y = _blobs()
    head = _fit(x, y, epsilon=math.inf, method="nonprivate", center="private")
    rows = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(head.preprocessing.mean, rows.mean(axis=0), rtol=1e-4, atol=1e-5)
    assert head.privacy["releases"] == []


def test_print_of_a_head_is_one_line():
    head = _fit(*_blobs(n=30), seed=0)
    text = repr(head)
    assert "\n" not in text and len(text) < 200 and "single_step" in text and "seeded=True" in text
