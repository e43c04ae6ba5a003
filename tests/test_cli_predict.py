"""``python -m private_head predict``: a saved head's accuracy on labelled rows (a store split,
an ``.npz``, a ``.npy`` with ``--labels``), its predicted classes written for rows without
labels, refusals as one line; and ``make predict``."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

import private_head
from private_head.cli import main
from tests.helpers import blobs, write_store

K, D = 3, 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A store, the same test rows as .npz and .npy, and a head trained on the store."""
    folder = tmp_path_factory.mktemp("predict")
    x, y = blobs(120, D, K, seed=3)
    path = write_store(folder / "s.h5", {"train": (x[:90], y[:90]), "test": (x[90:], y[90:])}, K)
    np.savez(folder / "t.npz", features=x[90:], labels=y[90:])
    np.save(folder / "tX.npy", x[90:])
    np.save(folder / "ty.npy", y[90:])
    head = private_head.fit(
        f"{path}:train", method="single_step", num_classes=K, epsilon=8.0, delta=1e-5, seed=1
    )
    head.save(folder / "h.npz")
    return folder


@pytest.mark.parametrize(
    "rows",
    [["s.h5"], ["s.h5:test"], ["t.npz"], ["tX.npy", "--labels", "ty.npy"]],
    ids=["store-default-test", "store-split", "npz", "npy-labels"],
)
def test_labelled_rows_print_the_accuracy(folder, monkeypatch, capsys, rows):
    monkeypatch.chdir(folder)
    before = sorted(os.listdir(folder))
    assert main(["predict", "--head", "h.npz", "--features", rows[0], *rows[1:]]) == 0
    out = capsys.readouterr().out
    top1 = private_head.load("h.npz").accuracy(np.load("tX.npy"), np.load("ty.npy"))["top1"]
    assert out.startswith(f"accuracy  top-1 {top1:.4f}") and "head h.npz" in out
    assert sorted(os.listdir(folder)) == before  # nothing written


def test_rows_without_labels_get_their_predicted_classes_in_a_file(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    assert main(["predict", "--head", "h.npz", "--features", "tX.npy"]) == 0
    assert "wrote     tX.predictions.npy (30 predicted classes)" in capsys.readouterr().out
    predicted = np.load("tX.predictions.npy")
    head = private_head.load("h.npz")
    np.testing.assert_array_equal(predicted, head.predict(np.load("tX.npy")))
    assert predicted.dtype == np.int64
    assert main(["predict", "--head", "h.npz", "--features", "tX.npy"]) == 2  # kept
    assert "tX.predictions.npy exists; pass --overwrite" in capsys.readouterr().err
    assert main(["predict", "--head", "h.npz", "--features", "tX.npy", "--overwrite"]) == 0
    os.remove("tX.predictions.npy")


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--head", "none.npz", "--features", "s.h5"], "no head file at none.npz"),
        (["--head", "h.npz", "--features", "s.h5:val"], "has no split 'val'"),
        (["--head", "h.npz", "--features", "tX.npy", "--out", "p.txt"], "--out must be a .npy"),
        (["--head", "h.npz"], "the following arguments are required: --features"),
        (["--head", "s.h5", "--features", "s.h5"], "is a feature store"),
    ],
)
def test_bad_input_is_one_line(folder, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(folder)
    try:
        code = main(["predict", *argv])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and match in err and err.count("\n") == 1


def test_rows_of_another_dimension_are_refused(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    np.save("wide.npy", np.ones((4, D + 1), np.float32))
    assert main(["predict", "--head", "h.npz", "--features", "wide.npy"]) == 2
    assert "wide.npy has 6 features, the head h.npz expects 5" in capsys.readouterr().err
    assert not os.path.exists("wide.predictions.npy")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_predict():
    out = subprocess.run(
        ["make", "-n", "predict", "HEAD=h.npz", "FEATURES=f.h5:test", "LABELS=y.npy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-m private_head predict --head h.npz --features f.h5:test" in out
    assert "--labels y.npy" in out
