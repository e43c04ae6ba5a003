"""``benchmarks.diffprivlib_compare`` end to end, with a stand-in for diffprivlib (which does not
import beside this project's scikit-learn): the worker runs in another interpreter, sees unit
rows with ``data_norm=1``, and the table has both libraries."""

from __future__ import annotations

import json
import os
import sys

import pytest

from benchmarks.diffprivlib_compare import main
from tests.helpers import blobs, write_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAND_IN = """
import numpy as np
from sklearn.linear_model import LogisticRegression as _LR

class LogisticRegression(_LR):
    def __init__(self, *, epsilon=1.0, data_norm=None, random_state=None):
        super().__init__(random_state=random_state)
        self.epsilon, self.data_norm = epsilon, data_norm

    def fit(self, x, y):
        assert self.data_norm == 1.0 and np.linalg.norm(x, axis=1).max() <= 1 + 1e-9
        return super().fit(x, y)
"""


@pytest.mark.slow  # a second interpreter with scikit-learn, and auto
def test_both_libraries_on_the_same_unit_rows(tmp_path, monkeypatch, capsys):
    package = tmp_path / "stand_in" / "diffprivlib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(STAND_IN)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "stand_in"), ROOT]))
    x, y = blobs(160, 6, 3, seed=2)
    path = write_store(
        tmp_path / "f.h5", {"train": (x[:120], y[:120]), "test": (x[120:], y[120:])}, 3
    )
    argv = ["--python", sys.executable, "--data", path, "--epsilons", "2", "--seeds", "1"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    table = capsys.readouterr().out
    assert "| f (D=6) | diffprivlib `LogisticRegression`" in table
    assert "| f (D=6) | this toolkit, `auto`" in table
    with open(tmp_path / "out" / "diffprivlib" / "results.json") as f:
        (result,) = json.load(f)
    assert result["diffprivlib"]["2"][0] > 0.8 and result["auto"]["2"][0] > 0.8
