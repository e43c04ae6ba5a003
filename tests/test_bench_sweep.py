"""The accuracy sweep end to end on the tiny synthetic preset, and its bookkeeping."""

import csv
import json
import math

import numpy as np
import pytest

from benchmarks import report, sweep
from benchmarks.__main__ import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = main(
        [
            "sweep",
            "--synthetic",
            "tiny",
            "--epsilons",
            "1,inf",
            "--seeds",
            "1",
            "--methods",
            "single_step,nonprivate",
            "--name",
            "smoke",
            "--out-dir",
            str(out),
            "--jax-cache",
            "none",  # leave JAX's global cache setting alone in this test process
        ]
    )
    return code, out / "smoke"


def test_smoke_sweep_writes_files_with_columns(smoke):
    code, run = smoke
    assert code == 0
    with open(run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == sweep.COLUMNS
    assert {(r["method"], r["epsilon"]) for r in rows} == {
        ("single_step", "1.0"),
        ("nonprivate", "inf"),
    }
    private = next(r for r in rows if r["method"] == "single_step")
    assert 0 < float(private["epsilon_spent"]) <= 1.0 + 1e-9
    assert float(private["delta"]) == 1e-5  # min(1e-5, 1/(2 * 400))
    assert float(private["sigma"]) > 0 and private["steps"] == "1"
    assert private["hyperparameter_selection"] == "fixed" and private["error"] == ""
    assert 0 <= float(private["top1"]) <= float(private["top5"]) <= 1
    doc = json.loads((run / "results.json").read_text())
    assert len(doc["rows"]) == 2 and doc["datasets"]["tiny"]["delta_rule"] == "min(1e-5, 1/(2N))"
    assert doc["ceilings"]["tiny"]["top1"] > 0.5  # separation 3: far above chance (1/3)
    assert (run / "accuracy_vs_epsilon.png").read_bytes()[:8] == PNG_MAGIC


def test_smoke_table_rows_and_header(smoke):
    _, run = smoke
    table = (run / "table.md").read_text()
    assert "not tuned on the test split" in table
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| method | hyperparameters | ε=1 | ε=∞ |")
    names = [line.split("|")[1].strip() for line in lines[1:]]
    assert names == ["single_step", "nonprivate", report.CEILING_ROW]
    cells = [[c.strip() for c in line.split("|")[3:5]] for line in lines[1:]]
    assert cells[0][0].startswith("**") and cells[0][1] == "—"  # the only entry at epsilon 1
    best_inf = max(float(c[1].strip("*").split()[0]) for c in cells[1:])
    assert all(
        c[1].startswith("**") == (float(c[1].strip("*").split()[0]) == best_inf) for c in cells[1:]
    )


def test_default_delta_rule():
    assert sweep.default_delta(1000) == 1e-5
    assert sweep.default_delta(10**6) == 5e-7


def test_plan_runs_nonprivate_only_at_infinity():
    runs = sweep.plan(["single_step", "nonprivate"], [0.5, math.inf], seeds=3)
    assert runs == [
        ("single_step", 0.5, 0),
        ("single_step", 0.5, 1),
        ("single_step", 0.5, 2),
        ("nonprivate", math.inf, 0),
    ]


def test_settings_resolve_batch_fraction():
    assert sweep.settings_for("dp_sgd", 1000)["batch_size"] == 100
    assert "batch_fraction" not in sweep.settings_for("dp_sgd", 1000)
    assert sweep.settings_for("some_future_method", 10) == {}


def test_summary_mean_and_sample_std():
    rows = [
        {"dataset": "d", "method": "m", "epsilon": 1.0, "top1": v, "error": ""}
        for v in (0.5, 0.7, 0.9)
    ] + [{"dataset": "d", "method": "m", "epsilon": 1.0, "top1": None, "error": "boom"}]
    mean, std, n = report.summarise(rows)[("d", "m", 1.0)]
    assert (n, mean) == (3, pytest.approx(0.7))
    assert std == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))


def test_topk_accuracy_against_direct_count():
    scores = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    acc = sweep.topk_accuracy(scores, np.array([1, 2, 0]))
    assert acc == {"top1": pytest.approx(1 / 3), "top5": 1.0}


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    missing = str(tmp_path / "missing.h5")
    assert main(["sweep", "--features", missing, "--jax-cache", "none"]) == 2
    assert "no feature store" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown method"):
        sweep.run_sweep([], methods=["no_such_method"])
    assert main(["nothing"]) == 2


def test_speed_report_collects_ratios_and_tables():
    from benchmarks import speed

    sections = {
        "store": {
            "status": "ok",
            "seconds": 1.0,
            "result": {"raw_read_gb_s": 2.0, "streamed_over_raw": 0.5},
        },
        "head": {
            "status": "ok",
            "seconds": 2.0,
            "result": [
                {"what": "bf16", "private_over_nonprivate": 1.02, "ms": 3.0},
                {"what": "vmap", "ratio_vs_vmap": 300, "flag": True},
            ],
        },
        "opacus": {"status": "failed", "seconds": 0.1, "result": "Traceback ... opacus_over_ours"},
        "extract": {"status": "absent", "seconds": 0.0, "result": None},
    }
    assert speed.ratios(sections) == [
        ("store: streamed_over_raw", 0.5),
        ("head: [bf16].private_over_nonprivate", 1.02),
        ("head: [vmap].ratio_vs_vmap", 300.0),
    ]
    text = speed.markdown(
        {
            "environment": {"device": "cpu x1", "host": "h", "time": "t", "versions": {"jax": "0"}},
            "sections": sections,
            "ratios": speed.ratios(sections),
        }
    )
    assert "| store: streamed_over_raw | 0.5 |" in text
    assert "| what | private_over_nonprivate | ms | ratio_vs_vmap | flag |" in text
    assert "## opacus (failed, 0.1s)" in text and "## extract (absent, 0.0s)" in text


def test_speed_section_absent_and_failing():
    from benchmarks import opacus_speed, speed

    assert speed.run_section("benchmarks.no_such_module")["status"] == "absent"
    if not opacus_speed.available():
        assert speed.run_section("benchmarks.opacus_speed")["status"] == "skipped"
    failed = speed.run_section("benchmarks.synthetic")  # has no main(): fails, does not raise
    assert failed["status"] == "failed" and "main" in failed["result"]


def test_selection_pseudo_methods_are_accepted_and_marked_private():
    empty = sweep.run_sweep([], methods=list(sweep.SELECTIONS), log=lambda _: None)
    assert empty.meta["method_settings"]["dp_gd+select_lr"]["mechanism"] == "noisy_max"
    assert empty.rows == []


def test_report_command_rebuilds_files_from_json(smoke, tmp_path):
    import shutil

    _, run = smoke
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "table.md").unlink()
    (copy / "accuracy_vs_epsilon.png").unlink()
    assert main(["report", str(copy)]) == 0
    assert (copy / "table.md").read_text() == (run / "table.md").read_text()
    assert (copy / "results.csv").read_text() == (run / "results.csv").read_text()
    assert (copy / "accuracy_vs_epsilon.png").read_bytes()[:8] == PNG_MAGIC
