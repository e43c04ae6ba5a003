"""accounting.budget_file: a dataset's budget across runs (composition, cap, concurrency, CLI)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from accounting import BudgetExceededError, epsilon_from_mu
from accounting.__main__ import main
from accounting.budget_file import BudgetFile, compose, run_entry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gdp_run(mu: float, delta: float = 1e-5, **kw) -> dict:
    return run_entry(
        method=kw.pop("method", "dp_gd"),
        split="train",
        private=kw.pop("private", True),
        seeded=kw.pop("seeded", False),
        accountant="gdp",
        epsilon=epsilon_from_mu(mu, delta),
        delta=delta,
        mu=mu,
    )


def pld_run(epsilon: float, delta: float = 1e-6) -> dict:
    entry = run_entry(
        method="dp_sgd",
        split="train",
        private=True,
        seeded=False,
        accountant="pld",
        epsilon=epsilon,
        delta=delta,
        mu=None,
    )
    return {**entry, "status": "done"}


def test_gdp_runs_compose_exactly_in_mu_at_the_delta_asked():
    runs = [{**gdp_run(0.3), "status": "done"}, {**gdp_run(0.4, 1e-6), "status": "done"}]
    total = compose(runs, 1e-7)
    assert total.composition == "gdp" and total.mu == pytest.approx(0.5, rel=1e-15)
    assert total.epsilon == epsilon_from_mu(total.mu, 1e-7) and total.delta == 1e-7
    assert compose(runs).delta == 1e-6  # without a cap: the smallest delta of the runs
    assert "GDP composition of 2 private runs, exact" in total.describe()


def test_a_run_without_a_mu_falls_back_to_basic_composition_and_says_so():
    runs = [{**gdp_run(0.5), "status": "done"}, pld_run(1.25)]
    total = compose(runs, 1e-5)
    assert total.composition == "basic" and total.mu is None
    assert total.epsilon == pytest.approx(epsilon_from_mu(0.5, 1e-5) + 1.25)
    assert total.delta == pytest.approx(1e-5 + 1e-6)
    assert "basic composition" in total.describe() and "without a GDP mu" in total.describe()


def test_non_private_runs_are_listed_not_counted_and_seeded_runs_are_marked(tmp_path):
    budget = BudgetFile(tmp_path / "s.h5")
    assert budget.path == str(tmp_path / "s.h5.budget.json")
    nonprivate = {**gdp_run(0.5), "private": False, "mu": "inf", "epsilon": "inf"}
    for run in (gdp_run(0.5, seeded=True), nonprivate):
        budget.settle(budget.reserve(run), "done")
    total = budget.total()
    assert total.private_runs == 1 and total.nonprivate_runs == 1 and total.mu == 0.5
    text = budget.history()
    assert "SEEDED" in text and "NON-PRIVATE" in text and "must never be published" in text
    assert text.splitlines()[-1].startswith("spent so far on this dataset: epsilon")


def test_a_run_over_the_cap_is_refused_and_nothing_is_recorded(tmp_path):
    budget = BudgetFile(tmp_path / "s.h5")
    budget.settle(budget.reserve(gdp_run(0.6), total_epsilon=3.0), "done")
    before = Path(budget.path).read_text()
    mu_left = math.sqrt(0.9**2 - 0.6**2)  # mu 0.9 is about epsilon 3.9 at 1e-5
    with pytest.raises(BudgetExceededError, match="over its cap of epsilon 3 at delta 1e-05"):
        budget.reserve(gdp_run(mu_left))
    assert Path(budget.path).read_text() == before
    with pytest.raises(ValueError, match="caps this dataset at epsilon 3"):
        budget.reserve(gdp_run(0.1), total_epsilon=5.0)  # a cap is not changed by a fit
    with pytest.raises(BudgetExceededError, match="non-private"):
        budget.reserve({**gdp_run(0.1), "private": False})
    assert Path(budget.path).read_text() == before
    budget.reserve(gdp_run(0.3))  # within the cap: recorded, running, counted
    total = budget.total()
    assert total.unsettled_runs == 1 and total.mu == pytest.approx(math.hypot(0.6, 0.3))


def test_a_failed_or_interrupted_run_stays_charged(tmp_path):
    budget = BudgetFile(tmp_path / "s.h5")
    budget.settle(budget.reserve(gdp_run(0.5)), "failed")
    budget.reserve(gdp_run(0.5))  # never settled: an interrupted fit
    total = budget.total()
    assert total.mu == pytest.approx(math.sqrt(0.5)) and total.unsettled_runs == 2
    assert [r["status"] for r in budget.read()["runs"]] == ["failed", "running"]


def test_a_damaged_budget_file_is_an_error_not_a_fresh_start(tmp_path):
    budget = BudgetFile(tmp_path / "s.h5")
    with open(budget.path, "w") as f:
        f.write('{"runs": [')
    with pytest.raises(ValueError, match="cannot be read.*history of privacy spending"):
        budget.reserve(gdp_run(0.5))


WRITER = """
import os, sys, time
from accounting.budget_file import BudgetFile, run_entry
path, go, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
budget = BudgetFile(path)
while not os.path.exists(go):
    time.sleep(0.001)
for i in range(count):
    entry = run_entry(method=f"p{os.getpid()}-{i}", split="train", private=True, seeded=False,
                      accountant="gdp", epsilon=0.01, delta=1e-5, mu=0.001)
    budget.settle(budget.reserve(entry), "done")
"""


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    path, go, count = str(tmp_path / "s.h5"), str(tmp_path / "go"), 40
    env = {**os.environ, "PYTHONPATH": ROOT}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, path, go, str(count)], env=env)
        for _ in range(2)
    ]
    open(go, "w").close()
    for p in procs:
        assert p.wait(timeout=120) == 0
    runs = BudgetFile(path).read()["runs"]
    assert len(runs) == 2 * count and len({r["id"] for r in runs}) == 2 * count
    assert all(r["status"] == "done" for r in runs)
    assert sorted(os.listdir(tmp_path)) == ["go", "s.h5.budget.json", "s.h5.budget.json.lock"]


def test_the_history_command(tmp_path, capsys):
    budget = BudgetFile(tmp_path / "s.h5")
    budget.settle(budget.reserve(gdp_run(0.3), total_epsilon=4.0), "done")
    budget.settle(budget.reserve(gdp_run(0.4, seeded=True)), "done")
    assert main(["history", str(tmp_path / "s.h5")]) == 0
    out = capsys.readouterr().out
    assert out.count("\nrun ") == 2 and "cap       epsilon 4 at delta 1e-05" in out
    assert f"epsilon {epsilon_from_mu(0.5, 1e-5):.6g} at delta 1e-05 (mu 0.5" in out
    assert main(["history", budget.path, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert len(document["runs"]) == 2 and document["total"]["mu"] == pytest.approx(0.5)
    with pytest.raises(SystemExit) as exit_:
        main(["history", str(tmp_path / "none.h5")])
    assert exit_.value.code == 2 and "no budget file" in capsys.readouterr().err
    assert main(["--epsilon", "4", "--delta", "1e-6"]) == 0  # the calibration is unchanged
    assert capsys.readouterr().out.strip() == "1.1935185871579863"
