"""PrivateHead.save / private_head.load: round trips, and refusal of files that were changed,
cut short or are something else."""

import json

import h5py
import numpy as np
import pytest

import private_head
from feature_extract import store
from private_head import PrivateHead
from private_head._head import checksum  # the file format, tested on purpose
from private_head._preprocessing import Preprocessing

D, K = 5, 3


def _head(center="private"):
    rng = np.random.default_rng(0)
    mean = rng.normal(size=D).astype(np.float32) if center != "none" else None
    privacy = {
        "epsilon_spent": 1.99,
        "seeded": True,
        "private": True,
        "method": "single_step",
        "delta": 1e-6,
        "releases": [{"name": "step", "mu": 0.7}],
    }
    settings = {"method": "single_step", "options": {"clip_norm": 1.0}}
    return PrivateHead(
        rng.normal(size=(D, K)),
        rng.normal(size=K),
        Preprocessing("normalize", 2.0, center, mean),
        privacy,
        settings,
        {"rows": "device"},
    )


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
@pytest.mark.parametrize("center", ["none", "private"])
def test_round_trip(tmp_path, suffix, center):
    head = _head(center)
    loaded = private_head.load(head.save(tmp_path / f"head{suffix}"))
    np.testing.assert_array_equal(loaded.weights, head.weights)
    np.testing.assert_array_equal(loaded.bias, head.bias)
    assert loaded.privacy == head.privacy and loaded.settings == head.settings
    assert loaded.performance == head.performance
    assert loaded.preprocessing.to_dict() == head.preprocessing.to_dict()
    x = np.random.default_rng(1).normal(size=(9, D))
    np.testing.assert_array_equal(loaded.logits(x), head.logits(x))


def _arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _rewrite_npz(path, **changes):
    arrays = _arrays(path)
    arrays.update(changes)
    np.savez(path, **arrays)


def test_changed_arrays_are_refused(tmp_path):
    path = _head().save(tmp_path / "head.npz")
    weights = _arrays(path)["weights"].copy()
    weights[2, 1] += 1e-3
    _rewrite_npz(path, weights=weights)
    with pytest.raises(ValueError, match="was modified"):
        private_head.load(path)
    path = _head().save(tmp_path / "head.h5")
    with h5py.File(path, "a") as f:
        f["mean"][0] = 0.0
    with pytest.raises(ValueError, match="was modified"):
        private_head.load(path)


@pytest.mark.parametrize(
    "edit",
    [
        lambda r: r["privacy"].update(epsilon_spent=0.1),
        lambda r: r["privacy"].update(seeded=False),
        lambda r: r["privacy"].update(private=False),
        lambda r: r["preprocessing"].update(feature_norm=1.0),
        lambda r: r["settings"]["options"].update(clip_norm=0.5),
    ],
    ids=["epsilon_spent", "seeded", "private", "feature_norm", "options"],
)
def test_an_edited_report_is_refused(tmp_path, edit):
    path = _head().save(tmp_path / "head.npz")
    report = json.loads(str(_arrays(path)["report"]))
    edit(report)
    _rewrite_npz(path, report=np.array(json.dumps(report)))
    with pytest.raises(ValueError, match="was modified"):
        private_head.load(path)


def _forge(path, report):
    """A report changed and its checksum recomputed (the checksum is integrity, not a signature:
    the shape checks still hold)."""
    arrays = _arrays(path)
    arrays.pop("report")
    report["sha256"] = checksum(arrays, report)
    _rewrite_npz(path, report=np.array(json.dumps(report)))


def test_a_consistent_report_that_disagrees_with_the_arrays_is_refused(tmp_path):
    head = _head()
    path = head.save(tmp_path / "head.npz")
    report = json.loads(str(_arrays(path)["report"]))
    _forge(path, {**report, "num_classes": K + 1})
    with pytest.raises(ValueError, match=r"disagree with the report \(dim=5, K=4\)"):
        private_head.load(path)
    _forge(path, {**report, "preprocessing": {**report["preprocessing"], "center": "none"}})
    with pytest.raises(ValueError, match="disagrees with the stored mean"):
        private_head.load(path)


def test_files_that_are_not_heads_say_what_they_are(tmp_path):
    with pytest.raises(ValueError, match="no head file"):
        private_head.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    np.savez(junk, weights=np.zeros((D, K)))
    with pytest.raises(ValueError, match="without a head report"):
        private_head.load(junk)
    good = _head().save(tmp_path / "cut.npz")
    with open(good, "rb") as f:
        data = f.read()
    with open(good, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or damaged"):
        private_head.load(good)
    features = tmp_path / "features.h5"
    store.write_split(features, "train", np.ones((4, D)), np.array([0, 1, 0, 1]), num_classes=2)
    with pytest.raises(ValueError, match="is a feature store"):
        private_head.load(features)
    old = _head().save(tmp_path / "old.npz")
    report = json.loads(str(_arrays(old)["report"]))
    _forge(old, {**report, "format": "private_head/1"})
    with pytest.raises(ValueError, match="format 'private_head/1', not 'private_head/2'"):
        private_head.load(old)
    with pytest.raises(ValueError, match=".npz or .h5"):
        _head().save(tmp_path / "head.pkl")


def test_checksum_covers_names_dtypes_shapes_and_the_report():
    a = np.arange(6, dtype=np.float32)
    base = checksum({"w": a}, {"x": 1})
    assert base == checksum({"w": a.astype(">f4")}, {"x": 1})  # byte order does not matter
    assert base == checksum({"w": a}, {"x": 1, "sha256": "ignored"})
    assert base != checksum({"v": a}, {"x": 1})
    assert base != checksum({"w": a.reshape(2, 3)}, {"x": 1})
    assert base != checksum({"w": a.astype(np.float64)}, {"x": 1})
    assert base != checksum({"w": a}, {"x": 2})


def test_head_refuses_inconsistent_arrays():
    with pytest.raises(ValueError, match=r"weights \[D, K\] and bias \[K\]"):
        PrivateHead(np.zeros((D, K)), np.zeros(K + 1), Preprocessing(), {})
