"""The accuracy sweep end to end on the tiny synthetic preset, and its bookkeeping."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import private_head
from benchmarks import report, sweep, synthetic
from benchmarks.__main__ import main
from tests.helpers import numbers_in

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]
SMOKE = [
    "sweep",
    "--synthetic",
    "tiny",
    "--epsilons",
    "1,inf",
    "--seeds",
    "2",
    "--methods",
    "single_step,nonprivate",
    "--name",
    "smoke",
    "--jax-cache",
    "none",  # leave JAX's global cache setting alone in this test process
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = main([*SMOKE, "--out-dir", str(out)])
    return code, out / "smoke"


def _run_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("[tiny]") and " seed=" in line]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_smoke_sweep_writes_files_with_columns(smoke):
    code, run = smoke
    assert code == 0
    with open(run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == sweep.COLUMNS
    assert [(r["method"], r["epsilon"], r["seed"]) for r in rows] == [
        ("single_step", "1.0", "0"),
        ("single_step", "1.0", "1"),
        ("nonprivate", "inf", "0"),
    ]
    private = rows[0]
    assert 0 < float(private["epsilon_spent"]) <= 1.0 + 1e-9
    assert float(private["delta"]) == sweep.DEFAULT_DELTA == 1e-5  # fixed, not from N
    assert float(private["sigma"]) > 0 and private["steps"] == "1" and private["passes"] == "1"
    assert private["dataset_size"] == "noisy_count" and private["accountant"] == "gdp"
    assert private["hyperparameter_selection"] == "fixed" and private["error"] == ""
    assert json.loads(private["options"]) == {"method": "single_step"}
    assert 0 <= float(private["top1"]) <= float(private["top5"]) <= 1
    assert (private["dim"], private["num_classes"]) == ("8", "3")
    doc = json.loads((run / "results.json").read_text())
    assert len(doc["rows"]) == 3 and doc["datasets"]["tiny"]["delta_rule"] == "fixed default"
    assert doc["ceilings"]["tiny"]["top1"] > 0.5  # separation 3: far above chance (1/3)
    assert doc["meta"]["interrupted"] is False
    assert (run / "accuracy_vs_epsilon.png").read_bytes()[:8] == PNG_MAGIC
    log = [json.loads(line) for line in (run / sweep.RESULTS_LOG).read_text().splitlines()]
    assert [r["record"] for r in log] == ["dataset", "ceiling", "run", "run", "run"]


def test_no_output_holds_the_training_row_count(smoke):
    _, run = smoke
    spec = synthetic.preset("tiny")
    for name in ("results.csv", "results.json", "table.md", sweep.RESULTS_LOG):
        text = (run / name).read_text()
        found = numbers_in(json.loads(text)) if name.endswith(".json") else numbers_in(text)
        assert spec.num_train not in found and spec.num_test not in found, name
        assert "num_train" not in text and "N=" not in text, name


def test_smoke_table_rows_and_header(smoke):
    _, run = smoke
    table = (run / "table.md").read_text()
    assert "not tuned on the test split" in table
    assert "δ = 1e-05 for every dataset (the fixed default, not derived" in table
    assert "noisy count" in table and "Mean ± std over 2 noise seeds" in table
    assert "D=8, K=3" in table
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


def test_rerun_resumes_and_recomputes_only_missing_rows(smoke, tmp_path, capsys):
    _, run = smoke
    copy = tmp_path / "smoke"
    shutil.copytree(run, copy)
    log = copy / sweep.RESULTS_LOG
    lines = log.read_text().splitlines()
    dropped = [line for line in lines if '"seed": 1' in line]
    assert len(dropped) == 1
    log.write_text("\n".join(line for line in lines if line not in dropped) + "\n")
    capsys.readouterr()
    assert main([*SMOKE, "--out-dir", str(tmp_path)]) == 0
    ran = _run_lines(capsys.readouterr().out)
    assert len(ran) == 1 and ran[0].startswith("[tiny] single_step eps=1 seed=1: top1=")
    with open(copy / "results.csv") as f:
        rows = list(csv.DictReader(f))
    with open(run / "results.csv") as f:
        before = list(csv.DictReader(f))
    key = ("method", "epsilon", "seed", "top1", "sigma")
    assert [[r[k] for k in key] for r in rows] == [[r[k] for k in key] for r in before]
    capsys.readouterr()
    assert main([*SMOKE, "--out-dir", str(tmp_path), "--fresh"]) == 0
    assert len(_run_lines(capsys.readouterr().out)) == 3  # --fresh: everything again


def test_interrupted_sweep_keeps_finished_rows_and_resumes(tmp_path):
    data = sweep.load_synthetic("tiny")
    path = str(tmp_path / sweep.RESULTS_LOG)
    seen: list[str] = []

    def stop_after_first_run(line: str) -> None:
        seen.append(line)
        if " seed=" in line:
            raise KeyboardInterrupt

    grid = dict(methods=["single_step"], epsilons=[1.0], seeds=3, ceiling=False)
    first = sweep.run_sweep([data], **grid, log=stop_after_first_run, results_log=path)
    assert first.interrupted and len(first.rows) == 1
    records = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert [r["record"] for r in records] == ["dataset", "run"]  # appended as it finished
    partial = report.read_run(str(tmp_path))  # no results.json yet: rebuilt from the log
    assert partial.interrupted and [r["seed"] for r in partial.rows] == [0]
    logged: list[str] = []
    second = sweep.run_sweep([data], **grid, log=logged.append, results_log=path)
    assert not second.interrupted and [r["seed"] for r in second.rows] == [0, 1, 2]
    assert second.rows[0] == first.rows[0]
    assert [line.split(":")[0] for line in _run_lines("\n".join(logged))] == [
        "[tiny] single_step eps=1 seed=1",
        "[tiny] single_step eps=1 seed=2",
    ]


def test_delta_is_fixed_whatever_the_dataset():
    assert not hasattr(sweep, "default_delta")
    small = sweep.Dataset(
        "a",
        np.zeros((10, 4), np.float32),
        np.zeros(10, np.int32),
        np.zeros((2, 4), np.float32),
        np.zeros(2, np.int32),
        2,
        "test",
    )
    big = sweep.Dataset(
        "b",
        np.zeros((10**4, 4), np.float32),
        np.zeros(10**4, np.int32),
        np.zeros((2, 4), np.float32),
        np.zeros(2, np.int32),
        2,
        "test",
    )
    assert sweep.dataset_info(small, sweep.DEFAULT_DELTA) == {
        **sweep.dataset_info(big, sweep.DEFAULT_DELTA),
        "dim": 4,
    }
    assert sweep.dataset_info(small, sweep.DEFAULT_DELTA)["delta"] == 1e-5
    assert sweep.dataset_info(small, 1e-7)["delta_rule"] == "given by --delta"


def test_default_grid_and_methods():
    assert list(sweep.DEFAULT_EPSILONS) == [0.5, 1.0, 2.0, 4.0, 8.0, math.inf]
    methods = sweep.default_methods()
    assert methods[0] == "auto" and methods[-1] == sweep.NONPRIVATE
    assert sweep.RECIPE in methods and not set(sweep.SELECTIONS) & set(methods)
    assert set(private_head.available_methods()) <= set(methods)
    assert "Panda et al. 2022" in sweep.label(sweep.RECIPE)


def test_plan_runs_nonprivate_only_at_infinity():
    runs = sweep.plan(["single_step", "nonprivate"], [0.5, math.inf], seeds=3)
    assert runs == [
        ("single_step", 0.5, 0),
        ("single_step", 0.5, 1),
        ("single_step", 0.5, 2),
        ("nonprivate", math.inf, 0),
    ]


def test_settings_are_fit_keywords_in_the_new_option_names():
    assert sweep.settings_for("dp_sgd") == {"method": "dp_sgd"}  # its default batch: n/2
    assert sweep.settings_for("single_step") == {"method": "single_step"}  # its defaults
    assert sweep.settings_for("some_future_method") == {"method": "some_future_method"}
    assert sweep.settings_for(sweep.RECIPE) == {
        "method": "dp_gd",
        "steps": 110,
        "optimizer": "momentum",
        "momentum": 0.9,
        "learning_rate": 1.0,
        "clip_norm": 1.0,
    }
    specs = [sweep.settings_for(m) for m in [*sweep.METHOD_SETTINGS, *sweep.RECIPES, *sweep.TUNED]]
    specs += [c for s in sweep.SELECTIONS.values() for c in s["candidates"]]
    for spec in specs:  # every option is one the method declares
        names = {o["name"] for o in private_head.describe_options(spec["method"])}
        assert set(spec) - {"method"} <= names, spec


def test_test_tuned_entries_are_one_reference_row_never_bold():
    def rows(method, values, eps=1.0):
        return [
            {"dataset": "d", "method": method, "epsilon": eps, "seed": i, "top1": v, "error": ""}
            for i, v in enumerate(values)
        ]

    tuned = next(iter(sweep.TUNED))
    result = sweep.SweepResult(meta={"seeds": 2})
    result.datasets["d"] = {"dim": 4, "num_classes": 3, "delta": 1e-5, "source": "test"}
    result.rows = [
        *rows("auto", [0.70, 0.72]),
        *rows("dp_gd", [0.60, 0.62]),
        *rows(tuned, [0.80, 0.84]),
        *rows("dp_gd", [0.50, 0.50], eps=2.0),
        *rows(tuned, [0.40, 0.40], eps=2.0),
    ]
    for row in result.rows:
        row["hyperparameter_selection"] = sweep.selection_kind(row["method"])
    table = report.markdown_table(result)
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert not any(tuned in line for line in lines)  # no row of its own
    (line,) = [line for line in lines if line.startswith(f"| {sweep.label(sweep.TUNED_ROW)}")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "test split"
    assert cells[2] == f"0.820 ({tuned.removeprefix(sweep.TUNED_PREFIX)})"  # its own best
    assert cells[3] == "0.500 (dp_gd)"  # a default row beats the grid there
    assert "**" not in line and "**0.710 ± 0.014**" in table  # bold: the best private row


def test_the_table_says_which_head_auto_chose_at_each_budget():
    result = sweep.SweepResult(meta={"seeds": 1})
    result.datasets["d"] = {"dim": 4, "num_classes": 3, "delta": 1e-5, "source": "test"}
    chosen = {1.0: "dp_gd", 3.0: "dp_feature_covariance", 8.0: "dp_feature_covariance"}
    result.rows = [
        {
            "dataset": "d",
            "method": "auto",
            "epsilon": e,
            "seed": 0,
            "top1": 0.5,
            "error": "",
            "chosen": c,
            "hyperparameter_selection": "rule",
        }
        for e, c in chosen.items()
    ]
    table = report.markdown_table(result)
    assert "`auto` chose dp_gd at ε=1; dp_feature_covariance at ε=3, 8." in table
    assert "| auto | rule |" in table  # no single head in its label
    for row in result.rows:
        row["chosen"] = "dp_gd"
    table = report.markdown_table(result)
    assert "`auto` chose" not in table and "| auto (→ dp_gd) | rule |" in table


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


def test_chosen_text_of_auto_and_selection():
    assert sweep.chosen_text("auto", {"auto": {"chosen": {"method": "dp_gd", "steps": 3}}}) == (
        "dp_gd"
    )
    privacy = {"selection": {"chosen": 1, "candidates": []}}
    assert sweep.chosen_text("dp_gd+select_lr", privacy) == "dp_gd(learning_rate=10.0)"
    assert sweep.chosen_text("single_step", {}) == ""


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    missing = str(tmp_path / "missing.h5")
    assert main(["sweep", "--features", missing, "--jax-cache", "none"]) == 2
    err = capsys.readouterr().err
    assert "no feature store" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="unknown method"):
        sweep.run_sweep([], methods=["no_such_method"])
    assert main(["nothing"]) == 2
    assert main(["sweep", "--seeds", "0"]) == 2
    assert main(["report", str(tmp_path)]) == 2  # no results there
    assert "no sweep results" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ("benchmarks", "sweep", "--epsilons", "abc"),
        ("benchmarks", "nothing"),
        ("benchmarks.store_speed", "--rows", "0"),
        ("benchmarks.head_speed", "--shapes", "nope"),
    ],
)
def test_cli_bad_input_is_one_line_and_status_2(args):
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_help_exits_0_and_shows_defaults():
    proc = _cli("benchmarks", "report", "--help")
    assert proc.returncode == 0 and "RUN_DIR" in proc.stdout, proc.stderr
    proc = _cli("benchmarks", "sweep", "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "(default: 0.5,1,2,4,8,inf)" in text and "(default: 1e-05)" in text
    assert "(default: 5)" in text and "--fresh" in text


def test_speed_report_collects_ratios_and_tables():
    from benchmarks import speed

    sections = {
        "store": {
            "status": "ok",
            "seconds": 1.0,
            "result": {"raw_read_gb_s": 2.0, "streamed_gradient_over_raw": 0.5},
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
        ("store: streamed_gradient_over_raw", 0.5),
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
    assert "| store: streamed_gradient_over_raw | 0.5 |" in text
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
    assert empty.rows == [] and sweep.selection_kind("dp_gd+select_lr") == "private"
    assert sweep.selection_kind("auto") == "rule" and sweep.selection_kind("dp_gd") == "fixed"


def test_report_command_rebuilds_files_from_json(smoke, tmp_path):
    _, run = smoke
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "table.md").unlink()
    (copy / "accuracy_vs_epsilon.png").unlink()
    assert main(["report", str(copy)]) == 0
    assert (copy / "table.md").read_text() == (run / "table.md").read_text()
    assert (copy / "results.csv").read_text() == (run / "results.csv").read_text()
    assert (copy / "accuracy_vs_epsilon.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_legend_says_what_the_error_bars_are(smoke, tmp_path, monkeypatch):
    import matplotlib.figure

    _, run = smoke
    titles: list[str] = []
    save = matplotlib.figure.Figure.savefig

    def spy(self, *args, **kwargs):
        titles.extend(ax.get_legend().get_title().get_text() for ax in self.axes)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    report.plot(report.read_run(str(run)), str(tmp_path / "plot.png"))
    assert titles == ["error bars: mean ± std over 2 noise seeds"]


def test_a_dataset_with_its_own_grid_and_a_reference(tmp_path):
    """The real datasets of the default suite carry their own epsilons and seeds, and a published
    figure that the table quotes beside them."""
    import dataclasses

    tiny = dataclasses.replace(
        sweep.load_synthetic("tiny"), epsilons=(1.0, math.inf), seeds=1, reference="Quoted: 98.7%"
    )
    result = sweep.run_sweep(
        [tiny], methods=["single_step", "nonprivate"], epsilons=[0.5, 1.0], seeds=3
    )
    assert sorted((r["epsilon"], r["seed"]) for r in result.rows) == [(1.0, 0), (math.inf, 0)]
    table = report.markdown_table(result)
    assert "its own grid: ε 1, ∞; 1 noise seed" in table and "Quoted: 98.7%." in table
    assert {n for _, n, _ in sweep.DEFAULT_SUITE} >= set(sweep.REAL_SUITE_GRID)
    assert "98.7%" in sweep.REFERENCES["mnist5k-scatnet"]
