"""``python -m private_head`` as a process: Ctrl-C is one line and status 130 with nothing
half-written and the run charged; usage errors come before JAX is imported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from accounting.budget_file import BudgetFile
from private_head.cli import INTERRUPTED_LINE
from tests.helpers import blobs, write_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}


def _runs(path) -> list[dict]:
    return BudgetFile(path).read().get("runs", []) if os.path.exists(path + ".budget.json") else []


def test_ctrl_c_during_a_fit_is_one_line_status_130_and_the_run_stays_charged(tmp_path):
    path = write_store(tmp_path / "s.h5", {"train": blobs(60, 4, 3), "test": blobs(9, 4, 3)}, 3)
    argv = ["--features", path, "--epsilon", "4", "--method", "dp_gd", "--steps", "100000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "private_head", *argv, "--quiet"],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not _runs(path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the budget is reserved just before the first row is read
    time.sleep(1.0)  # well inside the 100,000 steps
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert time.monotonic() - sent < 30  # a step at a time: a generous bound
    assert proc.returncode == 130 and err == INTERRUPTED_LINE + "\n" and out == ""
    assert [r["status"] for r in _runs(path)] == ["failed"]  # charged, and said so
    assert sorted(os.listdir(tmp_path)) == ["s.h5", "s.h5.budget.json", "s.h5.budget.json.lock"]


USAGE = """
import json, sys
from private_head.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    try:
        codes.append(main(argv))
    except SystemExit as stop:
        codes.append(stop.code)
print(json.dumps({"codes": codes, "jax": "jax" in sys.modules}))
"""


def test_usage_and_data_errors_come_before_jax_is_imported(tmp_path):
    np.save(tmp_path / "X.npy", np.ones((4, 2), np.float32))
    cases = [
        ["--features", "x.h5", "--epsilon", "0"],
        ["--features", "x.h5", "--epsilon", "4", "--method", "nope"],
        ["--epsilon", "4"],
        ["--features", "x.h5", "--epsilon", "4", "--delta", "2"],
        ["--features", "missing.h5", "--epsilon", "4"],
        ["--features", "X.npy", "--epsilon", "4"],
        ["--features", "X.npy", "--num-classes", "2", "--epsilon", "4", "--option", "x"],
        ["--features", "x.h5", "--epsilon", "inf", "--method", "dp_gd"],
        ["predict", "--head", "h.npz"],
        ["predict", "--head", "h.npz", "--features", "X.npy"],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", USAGE, json.dumps(cases)],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(proc.stdout)
    lines = proc.stderr.splitlines()
    assert result == {"codes": [2] * len(cases), "jax": False}, proc.stderr
    assert len(lines) == len(cases) and all(line.startswith("error: ") for line in lines)


def test_an_interrupt_inside_a_finaliser_is_delivered_again_outside_it():
    """Python drops an exception raised in a __del__ or a gc callback (JAX registers one): the
    handler must not raise there, or the run would go on as if nothing had been pressed."""
    import gc

    from feature_extract.interrupts import in_finaliser

    seen = {}

    class Finalised:
        def __del__(self):
            seen["del"] = in_finaliser(sys._getframe())

    def callback(phase, info):
        seen.setdefault("gc", in_finaliser(sys._getframe()))

    Finalised()
    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    assert seen == {"del": True, "gc": True}
    assert not in_finaliser(sys._getframe())
