"""python -m private_head end to end on a tiny store written in tmp_path."""

import json
import math
import os
import runpy
import sys

import numpy as np
import pytest

import private_head
from feature_extract import store
from private_head.cli import default_delta, main, method_options, output_stem

K, D = 3, 5


def _store(tmp_path, n_train=90, n_test=30, test=True):
    path = str(tmp_path / "feats" / "toy-pixels.h5")
    os.makedirs(os.path.dirname(path))
    rng = np.random.default_rng(0)
    splits = [("train", n_train)] + ([("test", n_test)] if test else [])
    for split, n in splits:
        y = rng.integers(0, K, n)
        store.write_split(
            path, split, rng.normal(size=(n, D)) + 4 * np.eye(K, D)[y], y, num_classes=K
        )
    return path


def _json(path):
    with open(path) as f:
        return json.load(f)


def test_train_evaluate_and_write(tmp_path, capsys):
    path = _store(tmp_path)
    assert main(["--features", path, "--epsilon", "4", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    stem = os.path.join(os.path.dirname(path), "toy-pixels.single_step.eps4")
    result = _json(stem + ".json")
    head = private_head.load(stem + ".npz")
    x, y, _ = store.read_split(path, "test")
    assert result["test"]["top1"] == head.accuracy(x, y)["top1"] > 0.8
    assert result["test"]["num_rows"] == 30 and result["num_train"] == 90
    assert result["privacy"]["delta"] == default_delta(90) == 1e-5
    assert default_delta(10**6) == 5e-7  # min(1e-5, 1/(2N))
    assert result["privacy"]["seeded"] is True and result["config"]["seed"] == 3
    assert result["privacy"]["epsilon_spent"] <= 4.0 * (1 + 1e-9)
    assert "default min(1e-5, 1/(2N))" in out and "top-1" in out and stem + ".npz" in out


def test_options_out_dir_and_given_delta(tmp_path, capsys):
    path = _store(tmp_path, n_test=0, test=False)
    out_dir = str(tmp_path / "out")
    argv = [
        "--features",
        path,
        "--epsilon",
        "2",
        "--delta",
        "1e-6",
        "--out-dir",
        out_dir,
        "--center",
        "private",
        "--feature-norm",
        "2",
        "--clip-norm",
        "0.5",
    ]
    assert main(argv) == 0
    result = _json(os.path.join(out_dir, "toy-pixels.single_step.eps2.json"))
    assert result["delta_rule"] == "given" and result["privacy"]["delta"] == 1e-6
    assert result["test"]["top1"] is None  # the store has no test split
    assert [r["name"] for r in result["privacy"]["releases"]][0] == "center_mean"
    assert result["config"]["clip_norm"] == 0.5 and result["config"]["feature_norm"] == 2.0
    assert "not evaluated" in capsys.readouterr().out


def test_epsilon_inf_trains_the_nonprivate_ceiling(tmp_path):
    path = _store(tmp_path)
    out_dir = str(tmp_path / "out")
    assert (
        main(
            [
                "--features",
                path,
                "--epsilon",
                "inf",
                "--out-dir",
                out_dir,
                "--steps",
                "5",
                "--optimizer",
                "adam",
                "--learning-rate",
                "0.1",
            ]
        )
        == 0
    )
    result = _json(output_stem(path, "nonprivate", math.inf, out_dir) + ".json")
    assert result["privacy"]["private"] is False and result["privacy"]["releases"] == []
    assert result["config"]["steps"] == 5 and result["config"]["optimizer"] == "adam"


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--epsilon", "inf", "--method", "single_step"], "needs a finite epsilon"),
        (["--epsilon", "4", "--method", "nope"], "unknown method 'nope'"),
        (["--epsilon", "1e-300", "--delta", "1e-300"], "cannot be met"),
        (["--epsilon", "4", "--train-split", "validation"], "no split 'validation'"),
    ],
)
def test_errors_exit_2_with_one_line(tmp_path, capsys, argv, match):
    path = _store(tmp_path)
    assert main(["--features", path, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and "Traceback" not in err


def test_missing_and_incomplete_stores(tmp_path, capsys):
    assert main(["--features", str(tmp_path / "none.h5"), "--epsilon", "4"]) == 2
    assert "make features" in capsys.readouterr().err
    partial = str(tmp_path / "partial.h5")
    store.SplitWriter(partial, "train", dim=D, total_rows=10, num_classes=K).append(
        np.ones((4, D)), np.zeros(4, int), np.arange(4)
    )
    assert main(["--features", partial, "--epsilon", "4"]) == 2
    assert "incomplete: 4 of 10 rows" in capsys.readouterr().err


def test_method_options_are_parsed_as_json_or_strings(tmp_path, capsys):
    assert method_options(["batch_size=256", "metric=cosine", "ridge=0.5", "x=[1, 2]"]) == {
        "batch_size": 256,
        "metric": "cosine",
        "ridge": 0.5,
        "x": [1, 2],
    }
    path = _store(tmp_path)
    assert main(["--features", path, "--epsilon", "4", "--option", "batch_size"]) == 2
    assert "--option needs KEY=VALUE" in capsys.readouterr().err


def test_argument_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--features", "x.h5", "--epsilon", "0"])
    assert stop.value.code == 2 and "epsilon must be > 0" in capsys.readouterr().err


def test_python_dash_m(tmp_path, monkeypatch, capsys):
    path = _store(tmp_path)
    monkeypatch.setattr(sys, "argv", ["private_head", "--features", path, "--epsilon", "8"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("private_head", run_name="__main__")
    assert stop.value.code == 0
    assert "seeded False" in capsys.readouterr().out
    assert os.path.exists(os.path.join(os.path.dirname(path), "toy-pixels.single_step.eps8.npz"))
