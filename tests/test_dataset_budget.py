"""A dataset's budget across runs, from fit, select and the command line."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

import private_head
from accounting import BudgetExceededError, BudgetFile
from feature_extract import store
from private_head.cli import main
from tests.helpers import blobs, write_store

K, D = 3, 5


@pytest.fixture
def data(tmp_path):
    """A store with a train (90 rows) and a test split; its path."""
    x, y = blobs(120, D, K, seed=1)
    return write_store(tmp_path / "s.h5", {"train": (x[:90], y[:90]), "test": (x[90:], y[90:])}, K)


def _fit(features, **kw):
    kw = {"num_classes": K, "epsilon": 1.0, "delta": 1e-5, "method": "single_step", **kw}
    return private_head.fit(features, **kw)


def test_every_fit_on_a_store_records_what_it_spent(data):
    a = _fit(data, seed=1)
    b = _fit(f"{data}:train", method="dp_sgd", steps=2, batch_size=45)
    c = _fit(data, method="nonprivate", epsilon=math.inf, steps=2)
    runs = BudgetFile(data).read()["runs"]
    assert [r["method"] for r in runs] == ["single_step", "dp_sgd", "nonprivate"]
    assert [r["status"] for r in runs] == ["done"] * 3 and {r["split"] for r in runs} == {"train"}
    assert [r["seeded"] for r in runs] == [True, False, False]
    assert [r["private"] for r in runs] == [True, True, False]
    assert runs[0]["mu"] == a.privacy["mu"] and runs[0]["epsilon"] == a.privacy["epsilon_spent"]
    assert runs[1]["mu"] is None and runs[1]["accountant"] == "pld"
    assert runs[1]["epsilon"] == b.privacy["epsilon_spent"]
    assert runs[2]["epsilon"] == "inf" and c.privacy["private"] is False
    total = BudgetFile(data).total()
    assert total.composition == "basic" and total.nonprivate_runs == 1
    assert total.epsilon == pytest.approx(a.privacy["epsilon_spent"] + b.privacy["epsilon_spent"])


def test_a_fit_over_the_cap_is_refused_before_it_reads_a_row(data, monkeypatch):
    _fit(data, epsilon=2.0, total_epsilon=2.5)
    reads = []

    def no_read(*args, **kwargs):
        reads.append(args)
        raise AssertionError("a row was read")

    monkeypatch.setattr(store.SplitReader, "__init__", no_read)
    monkeypatch.setattr(store, "split_info", no_read)
    before = BudgetFile(data).read()
    with pytest.raises(BudgetExceededError, match="refused before it reads a row"):
        _fit(data, epsilon=2.0)  # the cap holds without total_epsilon
    with pytest.raises(BudgetExceededError, match="over its cap"):
        private_head.select(
            data,
            num_classes=K,
            epsilon=2.0,
            delta=1e-5,
            candidates=[{"method": "dp_prototypes"}],
        )
    assert reads == [] and BudgetFile(data).read() == before
    monkeypatch.undo()
    _fit(data, epsilon=0.5)  # what is left still admits a smaller fit
    assert len(BudgetFile(data).read()["runs"]) == 2


def test_a_failed_fit_is_recorded_as_failed_and_stays_charged(tmp_path):
    x, y = blobs(60, D, K)
    x[7, 2] = np.nan
    budget = str(tmp_path / "arrays")
    with pytest.raises(ValueError, match="row"):
        _fit(x, labels=y, budget_file=budget)
    (run,) = BudgetFile(budget).read()["runs"]
    assert run["status"] == "failed" and run["split"] is None
    assert BudgetFile(budget).total().unsettled_runs == 1


def test_arrays_keep_no_budget_unless_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = blobs(60, D, K)
    _fit(x, labels=y)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="budget_file="):
        _fit(x, labels=y, total_epsilon=4.0)
    _fit(x, labels=y, budget_file=tmp_path / "mine.json", total_epsilon=4.0)
    assert BudgetFile(tmp_path / "mine.json").read()["cap"]["epsilon"] == 4.0


def test_the_command_line_prints_what_was_spent_so_far_and_refuses_past_the_cap(data, capsys):
    base = ["--features", data, "--total-epsilon", "2.5"]
    assert main([*base, "--epsilon", "2"]) == 0
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if x.startswith("spent so far on this dataset: ")]
    assert line and "epsilon 2 at delta 1e-05" in line[0] and "1 private run," in line[0]
    with open(data.replace(".h5", ".auto.eps2.json")) as f:
        result = json.load(f)
    assert result["dataset_budget"]["cap"] == {"epsilon": 2.5, "delta": 1e-5}
    assert result["dataset_budget"]["total"]["private_runs"] == 1
    assert main([*base, "--epsilon", "2", "--method", "dp_gd"]) == 2
    assert "error: this fit (epsilon 2, delta 1e-05) would bring" in capsys.readouterr().err
    assert len(BudgetFile(data).read()["runs"]) == 1
