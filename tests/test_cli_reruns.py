"""A rerun of ``make probe``: the same choices replace the files whatever the noise derived (a
learning rate from the noisy count), other choices are refused before a row is read and before
any budget is reserved, ``--overwrite`` (``make probe OVERWRITE=1``) replaces them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

import private_head._api
from accounting.budget_file import BudgetFile
from private_head.cli import main
from tests.helpers import blobs, write_store

K, D = 3, 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def path(tmp_path):
    return write_store(
        tmp_path / "toy.h5", {"train": blobs(90, D, K, seed=1), "test": blobs(30, D, K, seed=2)}, K
    )


@pytest.mark.parametrize("method", ["auto", "dp_gd"])
def test_the_same_choices_run_again_whatever_the_noisy_count_derived(path, method, capsys):
    argv = ["--features", path, "--epsilon", "4", "--method", method, "--quiet"]
    assert main(argv) == 0
    stem = os.path.splitext(path)[0] + f".{method}.eps4"
    with open(stem + ".json") as f:
        first = json.load(f)
    assert main(argv) == 0, capsys.readouterr().err  # a new noise draw: a new learning rate
    with open(stem + ".json") as f:
        second = json.load(f)
    assert first["choice"] == second["choice"]
    assert first["privacy"]["dataset_size"]["value"] != second["privacy"]["dataset_size"]["value"]


def test_other_choices_are_refused_before_a_row_is_read_or_budget_reserved(
    path, monkeypatch, capsys
):
    assert main(["--features", path, "--epsilon", "4", "--seed", "1"]) == 0
    before = BudgetFile(path).read()
    opened = []
    monkeypatch.setattr(private_head._api, "open_rows", lambda *a, **k: opened.append(a))
    for other in (["--seed", "2"], ["--delta", "1e-6"], ["--feature-norm", "2"]):
        capsys.readouterr()
        assert main(["--features", path, "--epsilon", "4", *other]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "other choices" in err and "--overwrite" in err
        assert err.count("\n") == 1
    assert opened == [] and BudgetFile(path).read() == before


def test_a_file_without_a_recorded_choice_is_not_replaced(path, capsys):
    stem = os.path.splitext(path)[0] + ".auto.eps4"
    with open(stem + ".json", "w") as f:
        json.dump({"settings": {}}, f)
    assert main(["--features", path, "--epsilon", "4"]) == 2
    assert "(it records no choice)" in capsys.readouterr().err
    assert main(["--features", path, "--epsilon", "4", "--overwrite", "--quiet"]) == 0


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_probe_passes_overwrite():
    def probe(*extra):
        return subprocess.run(
            ["make", "-n", "probe", "FEATURES=f.h5", *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    assert "--overwrite" in probe("OVERWRITE=1") and "--overwrite" not in probe()
