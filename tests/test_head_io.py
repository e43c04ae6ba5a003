"""PrivateHead.save / private_head.load: round trips and refusal of files that disagree."""

import json

import h5py
import numpy as np
import pytest

import private_head
from private_head.config import FitConfig
from private_head.data import Preprocessing
from private_head.head import PrivateHead, arrays_sha256

D, K = 5, 3


def _head(center="private"):
    rng = np.random.default_rng(0)
    mean = rng.normal(size=D).astype(np.float32) if center != "none" else None
    config = FitConfig(
        epsilon=2.0,
        delta=1e-6,
        center=center,
        seed=4,
        feature_norm=2.0,
        method_options={"note": "kept"},
    )
    privacy = {"epsilon_spent": 1.99, "seeded": True, "releases": [{"name": "step", "mu": 0.7}]}
    return PrivateHead(
        rng.normal(size=(D, K)),
        rng.normal(size=K),
        config,
        privacy,
        Preprocessing(True, 2.0, center, mean),
    )


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
@pytest.mark.parametrize("center", ["none", "private"])
def test_round_trip(tmp_path, suffix, center):
    head = _head(center)
    loaded = private_head.load(head.save(tmp_path / f"head{suffix}"))
    np.testing.assert_array_equal(loaded.weights, head.weights)
    np.testing.assert_array_equal(loaded.bias, head.bias)
    assert loaded.config == head.config and loaded.privacy == head.privacy
    assert loaded.preprocessing.to_dict() == head.preprocessing.to_dict()
    x = np.random.default_rng(1).normal(size=(9, D))
    np.testing.assert_array_equal(loaded.logits(x), head.logits(x))


def _rewrite_npz(path, **changes):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def test_tampered_npz_is_refused(tmp_path):
    path = _head().save(tmp_path / "head.npz")
    with np.load(path) as f:
        weights = f["weights"].copy()
    weights[2, 1] += 1e-3
    _rewrite_npz(path, weights=weights)
    with pytest.raises(ValueError, match="was modified"):
        private_head.load(path)


def test_tampered_h5_is_refused(tmp_path):
    path = _head().save(tmp_path / "head.h5")
    with h5py.File(path, "a") as f:
        f["mean"][0] = 0.0
    with pytest.raises(ValueError, match="was modified"):
        private_head.load(path)


def test_report_that_disagrees_with_shapes_is_refused(tmp_path):
    head = _head()
    path = head.save(tmp_path / "head.npz")
    report = head.report()
    report["num_classes"] = K + 1
    _rewrite_npz(path, report=np.array(json.dumps(report)))
    with pytest.raises(ValueError, match=r"disagree with the report \(dim=5, K=4\)"):
        private_head.load(path)
    report = head.report()
    report["preprocessing"]["center"] = "none"  # the stored mean would be ignored
    _rewrite_npz(path, report=np.array(json.dumps(report)))
    with pytest.raises(ValueError, match="disagrees with the stored mean"):
        private_head.load(path)
    del report["preprocessing"]
    _rewrite_npz(path, report=np.array(json.dumps(report)))
    with pytest.raises(ValueError, match="lacks or mangles the field 'preprocessing'"):
        private_head.load(path)


def test_files_that_are_not_heads(tmp_path):
    with pytest.raises(ValueError, match="no head file"):
        private_head.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    np.savez(junk, weights=np.zeros((D, K)))
    with pytest.raises(ValueError, match="not a readable head file"):
        private_head.load(junk)
    with pytest.raises(ValueError, match=".npz or .h5"):
        _head().save(tmp_path / "head.pkl")


def test_checksum_covers_names_dtypes_and_shapes():
    a = np.arange(6, dtype=np.float32)
    base = arrays_sha256({"w": a})
    assert base == arrays_sha256({"w": a.astype(">f4")})  # byte order does not matter
    assert base != arrays_sha256({"v": a})
    assert base != arrays_sha256({"w": a.reshape(2, 3)})
    assert base != arrays_sha256({"w": a.astype(np.float64)})


def test_head_refuses_inconsistent_arrays():
    with pytest.raises(ValueError, match=r"weights \[D, K\] and bias \[K\]"):
        PrivateHead(
            np.zeros((D, K)),
            np.zeros(K + 1),
            FitConfig(epsilon=1.0, delta=1e-5),
            {},
            Preprocessing(True, 1.0),
        )
