"""Writing a sweep's results: ``results.csv``, ``results.json``, ``table.md`` and the plot.

The table gives, per dataset, the mean ± sample standard deviation (ddof 1; 0 for one run) of test
top-1 accuracy over the noise seeds for every method (rows) and epsilon (columns); the best mean in
each column is bold. The test-tuned entries (``sweep.TUNED``) are shown as one row, the best mean
per column over them and every other private row, chosen on the test split: a reference that
no private result may claim, never bold. Private methods fill the finite columns,
``nonprivate`` and the scikit-learn ceiling the infinite one. Nothing written states the number
of training rows (``benchmarks.sweep`` module docstring): per dataset only D, K, the data
source, delta and the dataset-size convention.

Rows are also in ``results.jsonl`` (``sweep.ResultsLog``), written as the sweep runs; ``read_run``
rebuilds a ``SweepResult`` from ``results.json`` or, for a sweep that never finished, from it.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.sweep import (
    COLUMNS,
    NONPRIVATE,
    RESULTS_LOG,
    TUNED,
    TUNED_PREFIX,
    TUNED_ROW,
    ResultsLog,
    SweepResult,
    _plain,
    label,
    previous_results,
    restore,
)

CEILING_ROW = "sklearn logistic regression"
FILES = ("results.csv", "results.json", "table.md", "accuracy_vs_epsilon.png")


def write_csv(rows: Sequence[dict[str, Any]], path: str) -> None:
    """One line per run with the columns of ``sweep.COLUMNS`` (missing values empty)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _plain(row.get(k, "")) for k in COLUMNS})


def write_json(result: SweepResult, path: str) -> None:
    """Metadata, per-dataset information, ceilings and every row (infinity as "inf")."""
    doc = {
        "meta": {**result.meta, "interrupted": result.interrupted},
        "datasets": result.datasets,
        "ceilings": result.ceilings,
        "rows": [{k: _plain(v) for k, v in row.items()} for row in result.rows],
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=_plain)


def summarise(
    rows: Sequence[dict[str, Any]], metric: str = "top1"
) -> dict[tuple[str, str, float], tuple[float, float, int]]:
    """``{(dataset, method, epsilon): (mean, std, runs)}`` over the successful seeds."""
    groups: dict[tuple[str, str, float], list[float]] = {}
    for row in rows:
        if not row.get("error"):
            groups.setdefault((row["dataset"], row["method"], row["epsilon"]), []).append(
                float(row[metric])
            )
    return {
        key: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
        for key, v in groups.items()
    }


def _eps_label(eps: float) -> str:
    return "ε=∞" if math.isinf(eps) else f"ε={eps:g}"


def _delta_text(result: SweepResult) -> str:
    deltas = sorted({float(info["delta"]) for info in result.datasets.values()})
    if not deltas:
        return ""
    rule = result.meta.get("delta_rule", "")
    values = ", ".join(f"{d:g}" for d in deltas)
    return f"δ = {values} for every dataset ({rule}). " if rule else f"δ = {values}. "


def _seeds_text(meta: dict[str, Any]) -> str:
    seeds = meta.get("seeds")
    return f"{seeds} noise seed{'s' if seeds != 1 else ''}" if seeds else "the noise seeds"


def markdown_table(result: SweepResult, metric: str = "top1") -> str:
    """The markdown tables of ``table.md`` (one per dataset)."""
    stats = summarise(result.rows, metric)
    failed = {(r["dataset"], r["method"], r["epsilon"]) for r in result.rows if r.get("error")}
    meta = result.meta
    settings = meta.get("hyperparameters", "fixed defaults, not tuned on the test split")
    lines = [
        f"# Test {metric} accuracy across privacy budgets",
        "",
        f"Hyperparameters: {settings}; "
        "`rule`: `auto` picked the head by its rule (public facts and a released feature spread); "
        "`private`: chosen among candidates "
        "by an accounted private selection on the training rows, charged to the same ε. Mean ± "
        f"std over {_seeds_text(meta)} (ε=∞: the deterministic `nonprivate` head, one run). "
        f"{_delta_text(result)}Dataset size: every private head divides by a noisy count of the "
        "training rows, charged to the same budget (fit's default); the number of training rows "
        "is private and not reported. Best mean per column in bold. "
        f"Device: {meta.get('device')}. Command: `{meta.get('command')}`."
        + (" **Interrupted: some runs are missing.**" if result.interrupted else ""),
        "",
    ]
    for name, info in result.datasets.items():
        epsilons = sorted({r["epsilon"] for r in result.rows if r["dataset"] == name})
        entries = list(dict.fromkeys(r["method"] for r in result.rows if r["dataset"] == name))
        methods = [m for m in entries if m not in TUNED]
        cells: dict[tuple[str, float], tuple[float, float, int]] = {
            (m, e): stats[(name, m, e)] for m in methods for e in epsilons if (name, m, e) in stats
        }
        best = {
            e: max((v[0] for (m, ee), v in cells.items() if ee == e), default=None)
            for e in epsilons
        }
        tuned = tuned_cells(stats, name, entries, epsilons)
        if tuned:
            methods.append(TUNED_ROW)
        if name in result.ceilings and math.inf in epsilons:
            cells[(CEILING_ROW, math.inf)] = (result.ceilings[name][metric], 0.0, 1)
            methods.append(CEILING_ROW)
            best[math.inf] = max(best[math.inf] or 0.0, result.ceilings[name][metric])
        lines += [
            f"## {name}",
            "",
            f"D={info['dim']}, K={info['num_classes']}; δ={float(info['delta']):g}; "
            f"{info['source']}" + (f"; {info['grid']}" if info.get("grid") else "") + ".",
            "",
            *([f"{info['reference']}.", ""] if info.get("reference") else []),
            "| method | hyperparameters | " + " | ".join(map(_eps_label, epsilons)) + " |",
            "|---|---|" + "---|" * len(epsilons),
        ]
        for method in methods:
            row = [
                _method_cell(result, name, method),
                "—" if method == CEILING_ROW else _selection(result, name, method),
            ]
            for eps in epsilons:
                if method == TUNED_ROW:
                    won = tuned.get(eps)
                    row.append(f"{won[0]:.3f} ({won[1]})" if won else "—")
                elif (method, eps) in cells:
                    mean, std, _ = cells[(method, eps)]
                    text = f"{mean:.3f} ± {std:.3f}" if method != CEILING_ROW else f"{mean:.3f}"
                    row.append(f"**{text}**" if mean == best[eps] else text)
                else:
                    row.append("failed" if (name, method, eps) in failed else "—")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        choices = _auto_choices(result, name)
        if choices:
            lines += [choices, ""]
    return "\n".join(lines)


def _auto_choices(result: SweepResult, dataset: str) -> str | None:
    """``auto chose: A at ε=1; B at ε=3, 8.`` when its head differs between budgets (the row's
    label names it when it is always the same); a cell whose seeds chose differently lists each."""
    by_eps: dict[float, set[str]] = {}
    for r in result.rows:
        if r["dataset"] == dataset and r["method"] == "auto" and not r.get("error"):
            by_eps.setdefault(float(r["epsilon"]), set()).add(str(r.get("chosen") or "?"))
    if len({head for chosen in by_eps.values() for head in chosen}) < 2:
        return None
    heads: dict[str, list[str]] = {}
    for eps in sorted(by_eps):
        heads.setdefault(" or ".join(sorted(by_eps[eps])), []).append(f"{eps:g}")
    parts = [f"{head} at ε={', '.join(eps)}" for head, eps in heads.items()]
    return "`auto` chose " + "; ".join(parts) + "."


def tuned_cells(
    stats: dict[tuple[str, str, float], tuple[float, float, int]],
    dataset: str,
    entries: Sequence[str],
    epsilons: Sequence[float],
) -> dict[float, tuple[float, str]]:
    """``{epsilon: (mean, entry)}``: the best mean over the test-tuned entries and every other
    private row at each finite epsilon (empty when no test-tuned entry ran)."""
    if not any(m in TUNED for m in entries):
        return {}
    pool = [m for m in entries if m != NONPRIVATE]
    out = {}
    for eps in epsilons:
        scored = [(stats[(dataset, m, eps)][0], m) for m in pool if (dataset, m, eps) in stats]
        if scored and not math.isinf(eps):
            mean, entry = max(scored)
            out[eps] = (mean, entry.removeprefix(TUNED_PREFIX))
    return out


def _method_cell(result: SweepResult, dataset: str, method: str) -> str:
    """The entry's label; for ``auto``, the head it chose when that was always the same."""
    if method == CEILING_ROW:
        return method
    chosen = {
        r.get("chosen")
        for r in result.rows
        if r["dataset"] == dataset and r["method"] == method and not r.get("error")
    }
    text = label(method)
    if method == "auto" and len(chosen) == 1 and next(iter(chosen)):
        text += f" (→ {next(iter(chosen))})"
    return text


def _selection(result: SweepResult, dataset: str, method: str) -> str:
    if method == TUNED_ROW:
        return "test split"
    for row in result.rows:
        if row["dataset"] == dataset and row["method"] == method:
            return str(row.get("hyperparameter_selection", "fixed"))
    return "fixed"


def plot(result: SweepResult, path: str, metric: str = "top1") -> None:
    """``accuracy_vs_epsilon.png``: one panel per dataset, log-x epsilon, one line per private
    method with error bars (mean ± std over the seeds, said in the legend), the scikit-learn
    ceiling dashed and ``nonprivate`` dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    stats = summarise(result.rows, metric)
    names = list(result.datasets) or ["(no data)"]
    fig, axes = plt.subplots(1, len(names), figsize=(6.0 * len(names), 4.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        keys = [k for k in stats if k[0] == name]
        for method in dict.fromkeys(k[1] for k in keys if k[1] not in TUNED):
            points = sorted(
                (e, *stats[(name, method, e)][:2])
                for (_, m, e) in keys
                if m == method and not math.isinf(e)
            )
            if points:
                eps, mean, std = zip(*points, strict=True)
                ax.errorbar(eps, mean, yerr=std, marker="o", capsize=3, label=label(method))
        if (name, NONPRIVATE, math.inf) in stats:
            ax.axhline(
                stats[(name, NONPRIVATE, math.inf)][0],
                color="grey",
                linestyle=":",
                label=f"{NONPRIVATE} (ε=∞)",
            )
        if name in result.ceilings:
            ax.axhline(
                result.ceilings[name][metric],
                color="black",
                linestyle="--",
                label=f"{CEILING_ROW} (ε=∞)",
            )
        ax.set_xscale("log")
        finite = sorted({k[2] for k in keys if not math.isinf(k[2])})
        if finite:
            ax.set_xticks(finite, [f"{e:g}" for e in finite])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("ε")
        ax.set_ylabel(f"test {metric} accuracy")
        delta = result.datasets.get(name, {}).get("delta")
        ax.set_title(name if delta is None else f"{name} (δ={float(delta):.2g})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(
            fontsize=7,
            title=f"error bars: mean ± std over {_seeds_text(result.meta)}",
            title_fontsize=7,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_json(path: str) -> SweepResult:
    """The ``SweepResult`` saved by ``write_json`` (infinite values restored)."""
    with open(path) as f:
        doc = json.load(f)
    meta = dict(doc["meta"])
    interrupted = bool(meta.pop("interrupted", False))
    rows = [restore(row) for row in doc["rows"]]
    return SweepResult(rows, doc["ceilings"], doc["datasets"], meta, interrupted)


def read_log(path: str) -> SweepResult:
    """A ``SweepResult`` from ``results.jsonl`` alone (a sweep stopped before writing the rest):
    the latest record of every run, in the order the runs finished."""
    datasets, ceilings, runs = previous_results(ResultsLog(path))
    for info in datasets.values():
        info.pop("dataset", None)
    for values in ceilings.values():
        values.pop("dataset", None)
    rows = list(runs.values())
    seeds = len({r["seed"] for r in rows if not math.isinf(r["epsilon"])}) or None
    meta = {"seeds": seeds, "command": f"rebuilt from {path}"}
    return SweepResult(rows, ceilings, datasets, meta, interrupted=True)


def read_run(run_dir: str) -> SweepResult:
    """A run directory's results: ``results.json``, else ``results.jsonl``."""
    json_path = os.path.join(run_dir, "results.json")
    log_path = os.path.join(run_dir, RESULTS_LOG)
    if os.path.exists(json_path):
        return read_json(json_path)
    if os.path.exists(log_path):
        return read_log(log_path)
    raise FileNotFoundError(
        f"no sweep results in {run_dir} (neither results.json nor {RESULTS_LOG})"
    )


def write_all(result: SweepResult, out_dir: str) -> dict[str, str]:
    """Write the four result files into ``out_dir`` and return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name) for name in FILES}
    write_csv(result.rows, paths["results.csv"])
    write_json(result, paths["results.json"])
    with open(paths["table.md"], "w") as f:
        f.write(markdown_table(result))
    plot(result, paths["accuracy_vs_epsilon.png"])
    return paths
