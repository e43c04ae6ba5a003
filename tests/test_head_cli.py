"""python -m private_head end to end on a tiny store written in tmp_path."""

import json
import math
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest

import private_head
from feature_extract import store
from private_head._arguments import method_options
from private_head._run import default_delta, output_stem
from private_head.cli import main
from tests.helpers import numbers_in

K, D = 3, 5


def _store(tmp_path, n_train=90, n_test=30, test=True, test_dim=D):
    path = str(tmp_path / "feats" / "toy-pixels.h5")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(0)
    splits = [("train", n_train, D)] + ([("test", n_test, test_dim)] if test else [])
    for split, n, d in splits:
        y = rng.integers(0, K, n)
        store.write_split(
            path, split, rng.normal(size=(n, d)) + 4 * np.eye(K, d)[y], y, num_classes=K
        )
    return path


def _json(path):
    with open(path) as f:
        return json.load(f)


def test_train_evaluate_and_write(tmp_path, capsys):
    path = _store(tmp_path)
    assert main(["--features", path, "--epsilon", "4", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    stem = os.path.join(os.path.dirname(path), "toy-pixels.auto.eps4")
    result = _json(stem + ".json")
    head = private_head.load(stem + ".npz")
    x, y, _ = store.read_split(path, "test")
    assert result["test"]["top1"] == head.accuracy(x, y)["top1"] > 0.8
    assert result["test"]["num_rows"] == 30  # the test split is public
    assert result["privacy"]["delta"] == 1e-5 and result["delta_rule"].startswith("default 1e-5")
    assert result["privacy"]["seeded"] is True and result["seed"] == 3
    assert result["privacy"]["epsilon_spent"] <= 4.0 * (1 + 1e-9)
    assert 90 not in numbers_in({k: v for k, v in result.items() if k != "test"})
    assert "noisy count" in out and "top-1" in out and stem + ".npz" in out
    assert "mu None" not in out and "DpEvent(" not in out


def test_the_data_path_and_the_time_go_to_an_operator_log_marked_not_to_publish(tmp_path, capsys):
    path = _store(tmp_path)
    assert main(["--features", path, "--epsilon", "4", "--quiet"]) == 0
    captured = capsys.readouterr()
    stem = output_stem(path, "auto", 4, None)
    result, log = _json(stem + ".json"), _json(stem + ".operator.json")
    assert log["publish"] is False and "must not be published" in log["note"]
    assert {"rows", "chunk_rows", "passes", "seconds", "command_seconds"} <= log.keys()
    assert log["rows"] == "store_streamed" and log["chunk_rows"] >= 90  # one chunk holds the split
    assert "seconds" not in result and "operator" not in result
    assert result["performance"] == {"max_device_bytes": None, "chunk_rows": None}
    assert "store_streamed" not in captured.out and " s\n" not in captured.out
    assert captured.err.startswith("operator  (do not publish") and "store_streamed" in captured.err


def test_options_out_dir_and_given_delta(tmp_path, capsys):
    path = _store(tmp_path, test=False)
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
        "--method",
        "single_step",
    ]
    assert main(argv) == 0
    result = _json(os.path.join(out_dir, "toy-pixels.single_step.eps2.json"))
    assert result["delta_rule"] == "given" and result["privacy"]["delta"] == 1e-6
    assert result["test"]["top1"] is None  # the store has no test split
    names = [r["name"] for r in result["privacy"]["releases"]]
    assert names == [
        "dataset_size/noisy_count",
        "center/row_sum",
        "single_step/clipped_gradient_sum",
    ]
    assert result["settings"]["options"]["clip_norm"] == 0.5
    assert result["settings"]["preprocess"]["feature_norm"] == 2.0
    assert "not evaluated" in capsys.readouterr().out


def test_a_public_dataset_size_sets_the_divisor_and_the_default_delta(tmp_path):
    path = _store(tmp_path)
    assert main(["--features", path, "--epsilon", "4", "--dataset-size", "100000"]) == 0
    result = _json(output_stem(path, "auto", 4, None) + ".json")
    assert result["privacy"]["delta"] == default_delta(100000)[0] == 5e-6
    assert result["privacy"]["dataset_size"] == {"source": "public", "value": 100000}


def test_epsilon_inf_trains_the_nonprivate_ceiling(tmp_path):
    path = _store(tmp_path)
    out_dir = str(tmp_path / "out")
    argv = [
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
    assert main(argv) == 0
    result = _json(output_stem(path, "nonprivate", math.inf, out_dir) + ".json")
    assert result["privacy"]["private"] is False and result["privacy"]["releases"] == []
    options = result["settings"]["options"]
    assert options["steps"] == 5 and options["optimizer"] == "adam"


def test_every_option_of_every_method_reaches_it(tmp_path):
    path = _store(tmp_path)
    argv = [
        "--features",
        path,
        "--epsilon",
        "4",
        "--method",
        "dp_sgd",
        "--batch-size",
        "30",
        "--steps",
        "3",
        "--option",
        "momentum=0.5",
        "--out-dir",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 0
    result = _json(output_stem(path, "dp_sgd", 4, str(tmp_path / "o")) + ".json")
    options = result["settings"]["options"]
    assert options["batch_size"] == 30 and options["steps"] == 3 and options["momentum"] == 0.5


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--epsilon", "inf", "--method", "single_step"], "EPS=inf"),
        (["--epsilon", "1e-300", "--delta", "1e-300"], "cannot be met"),
        (["--epsilon", "4", "--train-split", "validation"], "no split 'validation'"),
        (["--epsilon", "4", "--test-split", "tset"], "no split 'tset' to evaluate"),
        (
            ["--epsilon", "4", "--option", "batch_size=abc", "--method", "dp_sgd"],
            "option batch_size must be an integer",
        ),
        (["--epsilon", "4", "--option", "steps=5"], "does not take option(s) ['steps']"),
        (["--epsilon", "4", "--option", "batch_size"], "--option needs KEY=VALUE"),
    ],
)
def test_errors_exit_2_with_one_line_before_any_training(tmp_path, capsys, argv, match):
    path = _store(tmp_path)
    assert main(["--features", path, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and err.count("\n") == 1
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".npz")]


def test_a_test_split_of_another_dimension_is_refused_before_training(tmp_path, capsys):
    path = _store(tmp_path, test_dim=D + 1)
    assert main(["--features", path, "--epsilon", "4"]) == 2
    err = capsys.readouterr().err
    assert "the test rows toy-pixels.h5:test have dim 6" in err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--features", "x.h5", "--epsilon", "0"], "epsilon must be > 0"),
        (["--features", "x.h5", "--epsilon", "4", "--method", "nope"], "unknown method 'nope'"),
        (["--features", "{store}", "--epsilon", "4", "--steps", "2"], "unrecognized arguments"),
        (["--epsilon", "4"], "required: --features"),
    ],
)
def test_usage_errors_are_one_line_with_exit_status_2(tmp_path, capsys, argv, match):
    path = _store(tmp_path)
    argv = [a.replace("{store}", path) for a in argv]
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and match in err and err.count("\n") == 1 and "Traceback" not in err


def test_help_shows_the_chosen_methods_options_with_their_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--method", "dp_gd", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--steps",
        "--optimizer",
        "--learning-rate",
        "--clip-norm",
        "--dataset-size",
        "--max-device-bytes",
        "--feature-norm",
    ):
        assert flag in text
    assert "(default: the rule)" in text and "(default: 1.0)" in text
    with pytest.raises(SystemExit):
        main(["--method", "dp_sgd", "--help"])
    assert "--batch-size" in capsys.readouterr().out


def test_a_head_with_other_settings_is_not_overwritten(tmp_path, capsys):
    path = _store(tmp_path)
    base = ["--features", path, "--method", "single_step", "--epsilon", "4"]
    assert main(base) == 0
    assert main(base) == 0  # the same settings: a new draw
    assert main([*base, "--clip-norm", "0.2"]) == 2
    assert "other choices (options.method.clip_norm: None -> 0.2)" in capsys.readouterr().err
    assert main([*base, "--clip-norm", "0.2", "--overwrite"]) == 0


def test_missing_and_incomplete_stores(tmp_path, capsys):
    assert main(["--features", str(tmp_path / "none.h5"), "--epsilon", "4"]) == 2
    assert "make features" in capsys.readouterr().err
    partial = str(tmp_path / "partial.h5")
    writer = store.SplitWriter(partial, "train", dim=D, total_rows=10, num_classes=K)
    writer.append(np.ones((4, D)), np.zeros(4, int), np.arange(4))
    writer.close()
    assert main(["--features", partial, "--epsilon", "4"]) == 2
    assert "incomplete: 4 of 10 rows" in capsys.readouterr().err


def test_method_options_are_parsed_as_json_or_strings():
    assert method_options(["batch_size=256", "metric=cosine", "ridge=0.5", "x=[1, 2]"]) == {
        "batch_size": 256,
        "metric": "cosine",
        "ridge": 0.5,
        "x": [1, 2],
    }


def test_python_dash_m(tmp_path, monkeypatch, capsys):
    path = _store(tmp_path)
    monkeypatch.setattr(sys, "argv", ["private_head", "--features", path, "--epsilon", "8"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("private_head", run_name="__main__")
    assert stop.value.code == 0
    assert "seeded False" in capsys.readouterr().out
    assert os.path.exists(os.path.join(os.path.dirname(path), "toy-pixels.auto.eps8.npz"))


def test_bad_input_in_a_subprocess_is_one_line_and_exit_2(tmp_path):
    path = _store(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "private_head",
            "--features",
            path,
            "--epsilon",
            "4",
            "--option",
            "batch_size=abc",
            "--method",
            "dp_sgd",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: option batch_size must be an integer")
