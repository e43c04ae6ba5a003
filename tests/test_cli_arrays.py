"""Your own embeddings on the command line: ``--features F.npz`` (its test arrays evaluated),
``--features X.npy --labels y.npy``, ``--test-features``; ``--features F.h5:train``; the budget
file beside an array file; and a NumPy file is never called a corrupt store."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from accounting.budget_file import BudgetFile
from feature_extract import store
from private_head.cli import main
from tests.helpers import blobs, write_store

K, D = 3, 5


def _split(data):
    """90 train rows and 30 test rows of one distribution."""
    x, y = data
    return (x[:90], y[:90]), (x[90:], y[90:])


def _result(stem):
    with open(stem + ".json") as f:
        return json.load(f)


@pytest.fixture
def arrays(tmp_path):
    (x, y), (tx, ty) = _split(blobs(120, D, K, seed=1))
    np.savez(tmp_path / "keras.npz", x_train=x, y_train=y, x_test=tx, y_test=ty)
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "tX.npy", tx)
    np.save(tmp_path / "ty.npy", ty)
    return tmp_path


def test_an_npz_trains_on_its_train_arrays_and_evaluates_on_its_test_arrays(arrays, capsys):
    path = str(arrays / "keras.npz")
    assert main(["--features", path, "--num-classes", "3", "--epsilon", "4", "--quiet"]) == 0
    result = _result(str(arrays / "keras.auto.eps4"))
    assert result["train"] == "keras.npz:train" and result["test"]["split"] == "keras.npz:test"
    assert result["test"]["num_rows"] == 30 and result["test"]["top1"] > 0.8
    assert result["settings"]["data"] == {"kind": "array_file", "name": "keras.npz:train"}
    budget = BudgetFile(path).read()  # beside the array file
    assert os.path.exists(path + ".budget.json") and budget["runs"][0]["split"] == "train"
    assert "(30 rows of 'keras.npz:test')" in capsys.readouterr().out


def test_an_npy_pair_with_a_test_pair(arrays):
    argv = ["--features", str(arrays / "X.npy"), "--labels", str(arrays / "y.npy")]
    argv += ["--test-features", str(arrays / "tX.npy"), "--test-labels", str(arrays / "ty.npy")]
    assert main([*argv, "--num-classes", "3", "--epsilon", "4", "--quiet"]) == 0
    result = _result(str(arrays / "X.auto.eps4"))
    assert result["test"]["split"] == "tX.npy" and result["test"]["top1"] > 0.8
    assert os.path.exists(str(arrays / "X.npy.budget.json"))


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--features", "keras.npz"], "--num-classes K is required with keras.npz"),
        (["--features", "X.npy", "--num-classes", "3"], "X.npy holds features only"),
        (["--features", "keras.npz:val", "--num-classes", "3"], "no features array for split"),
        (
            ["--features", "X.npy", "--labels", "ty.npy", "--num-classes", "3"],
            "has 90 rows of features but labels of shape (30,)",
        ),
        (
            ["--features", "keras.npz", "--num-classes", "3", "--test-labels", "ty.npy"],
            "--test-labels goes with --test-features",
        ),
        (["--features", "keras.npz", "--num-classes", "1"], "at least 2"),
    ],
)
def test_bad_array_input_is_one_line_before_jax(arrays, capsys, monkeypatch, argv, match):
    monkeypatch.chdir(arrays)
    assert main([*argv, "--epsilon", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and err.count("\n") == 1
    assert sorted(os.listdir(arrays)) == ["X.npy", "keras.npz", "tX.npy", "ty.npy", "y.npy"]


def test_a_store_path_may_name_its_split(tmp_path, capsys):
    fit, test = _split(blobs(120, D, K, seed=1))
    path = write_store(tmp_path / "s.h5", {"fit": fit, "test": test}, K)
    assert main(["--features", f"{path}:fit", "--epsilon", "4", "--quiet"]) == 0
    result = _result(str(tmp_path / "s.auto.eps4"))
    assert result["train"] == "s.h5:fit" and result["test"]["split"] == "s.h5:test"
    assert main(["--features", f"{path}:fit", "--train-split", "test", "--epsilon", "4"]) == 2
    assert "names split 'fit', --train-split 'test'" in capsys.readouterr().err


def test_a_numpy_file_given_as_a_store_is_named_and_never_to_be_deleted(arrays):
    for name in ("X.npy", "keras.npz"):
        with pytest.raises(store.StoreError) as err:
            store.split_info(arrays / name, "train")
        message = str(err.value)
        assert f"is a NumPy .{name.split('.')[1]} file, not a feature store" in message
        assert "delete" not in message and "--overwrite" not in message
        assert not isinstance(err.value, store.CorruptStoreError)  # overwrite=True keeps it
        with pytest.raises(store.StoreError):
            store.write_split(
                arrays / name, "train", *blobs(4, D, K), num_classes=K, overwrite=True
            )
    assert np.load(arrays / "X.npy").shape == (90, D)
