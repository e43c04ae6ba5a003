"""Paths wherever rows are taken: ``fit`` on a ``.npy``/``.npz`` (the budget beside it), a
head's ``predict``/``accuracy``/``logits`` on ``"file.h5:test"`` and array files, and
``head.save`` into a folder that does not exist yet."""

from __future__ import annotations

import os

import numpy as np
import pytest

import private_head
from accounting.budget_file import BudgetFile
from tests.helpers import blobs, write_store

K, D = 3, 6
FIT = dict(num_classes=K, epsilon=4.0, delta=1e-5, seed=5, method="dp_gd", steps=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paths")
    x, y = blobs(150, D, K, seed=4)
    train, test = (x[:100], y[:100]), (x[100:], y[100:])
    write_store(folder / "s.h5", {"train": train, "test": test}, K)
    np.savez(folder / "d.npz", x_train=train[0], y_train=train[1], x_test=test[0], y_test=test[1])
    np.savez(folder / "plain.npz", features=test[0], labels=test[1])
    np.save(folder / "X.npy", train[0])
    np.save(folder / "y.npy", train[1])
    np.save(folder / "tX.npy", test[0])
    np.save(folder / "ty.npy", test[1])
    return folder, train, test


def test_fit_on_array_files_is_fit_on_their_arrays(data):
    folder, (x, y), _ = data
    expected = private_head.fit(x, y, progress=False, **FIT)
    for args in ((folder / "d.npz",), (str(folder / "X.npy"), str(folder / "y.npy"))):
        head = private_head.fit(*args, progress=False, **FIT)
        np.testing.assert_array_equal(head.weights, expected.weights)
        path = os.fspath(args[0]) + ".budget.json"
        assert BudgetFile(path).read()["runs"][-1]["status"] == "done"
    assert head.settings["data"] == {"kind": "array_file", "name": "X.npy"}
    assert expected.settings["data"] == {"kind": "arrays", "name": None}


def test_fit_on_an_npy_needs_its_labels(data):
    with pytest.raises(ValueError, match="holds features only"):
        private_head.fit(data[0] / "X.npy", **FIT)


def test_predict_and_accuracy_take_store_splits_and_array_files(data):
    folder, (x, y), (tx, ty) = data
    head = private_head.fit(x, y, progress=False, **FIT)
    expected = head.accuracy(tx, ty)
    for spec, labels in (
        (f"{folder}/s.h5:test", None),
        (f"{folder}/s.h5", None),  # a store's test split unless one is named
        (folder / "d.npz", None),  # no plain arrays: its test arrays
        (f"{folder}/d.npz:test", None),
        (folder / "plain.npz", None),
        (folder / "tX.npy", folder / "ty.npy"),
        (folder / "tX.npy", ty),
    ):
        assert head.accuracy(spec, labels) == expected, spec
    np.testing.assert_array_equal(head.predict(f"{folder}/s.h5:test"), head.predict(tx))
    np.testing.assert_array_equal(head.logits(folder / "tX.npy"), head.logits(tx))
    with pytest.raises(ValueError, match="give no labels with a store path"):
        head.accuracy(f"{folder}/s.h5:test", ty)


def test_save_creates_the_folder_and_names_it_when_it_cannot(tmp_path):
    head = private_head.fit(*blobs(30, D, K), progress=False, **FIT)
    path = head.save(tmp_path / "new" / "deeper" / "head.npz")
    assert private_head.load(path).privacy == head.privacy
    assert sorted(os.listdir(tmp_path / "new" / "deeper")) == ["head.npz", "head.privacy.md"]
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match=f"cannot create the folder {tmp_path / 'file' / 'x'}"):
        head.save(tmp_path / "file" / "x" / "head.npz")
