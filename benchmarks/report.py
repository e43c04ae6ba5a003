"""Writing a sweep's results: ``results.csv``, ``results.json``, ``table.md`` and the plot.

The table gives, per dataset, the mean ± sample standard deviation (ddof 1; 0 for one run) of test
top-1 accuracy over the noise seeds for every method (rows) and epsilon (columns); the best mean in
each column is bold. Private methods fill the finite columns, ``nonprivate`` and the scikit-learn
ceiling the infinite one.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.sweep import COLUMNS, NONPRIVATE, SweepResult

CEILING_ROW = "sklearn logistic regression"


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_csv(rows: Sequence[dict[str, Any]], path: str) -> None:
    """One line per run with the columns of ``sweep.COLUMNS`` (missing values empty)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _plain(row.get(k, "")) for k in COLUMNS})


def write_json(result: SweepResult, path: str) -> None:
    """Metadata, per-dataset shapes and deltas, ceilings and every row (infinity as "inf")."""
    doc = {
        "meta": result.meta,
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


def markdown_table(result: SweepResult, metric: str = "top1") -> str:
    """The markdown tables of ``table.md`` (one per dataset)."""
    stats = summarise(result.rows, metric)
    failed = {(r["dataset"], r["method"], r["epsilon"]) for r in result.rows if r.get("error")}
    meta = result.meta
    lines = [
        f"# Test {metric} accuracy across privacy budgets",
        "",
        f"Hyperparameters: {meta.get('hyperparameters', 'fixed defaults')}; a row whose "
        "hyperparameters column says `private` chose among candidates by an accounted private "
        "selection on the training rows, charged to the same ε. Mean ± std over "
        f"{meta.get('seeds')} noise seed(s) (ε=∞: the deterministic `nonprivate` head, one "
        f"run). Best mean per column in bold. Device: {meta.get('device')}. "
        f"Command: `{meta.get('command')}`.",
        "",
    ]
    for name, info in result.datasets.items():
        epsilons = sorted({r["epsilon"] for r in result.rows if r["dataset"] == name})
        methods = list(dict.fromkeys(r["method"] for r in result.rows if r["dataset"] == name))
        cells: dict[tuple[str, float], tuple[float, float, int]] = {
            (m, e): stats[(name, m, e)] for m in methods for e in epsilons if (name, m, e) in stats
        }
        if name in result.ceilings and math.inf in epsilons:
            cells[(CEILING_ROW, math.inf)] = (result.ceilings[name][metric], 0.0, 1)
            methods.append(CEILING_ROW)
        best = {
            e: max((v[0] for (m, ee), v in cells.items() if ee == e), default=None)
            for e in epsilons
        }
        lines += [
            f"## {name}",
            "",
            f"N={info['num_train']} train, {info['num_test']} test, D={info['dim']}, "
            f"K={info['num_classes']}; δ={info['delta']:.3g} ({info['delta_rule']}); "
            f"{info['source']}.",
            "",
            "| method | hyperparameters | " + " | ".join(map(_eps_label, epsilons)) + " |",
            "|---|---|" + "---|" * len(epsilons),
        ]
        for method in methods:
            row = [method, "—" if method == CEILING_ROW else _selection(result, name, method)]
            for eps in epsilons:
                if (method, eps) in cells:
                    mean, std, _ = cells[(method, eps)]
                    text = f"{mean:.3f} ± {std:.3f}" if method != CEILING_ROW else f"{mean:.3f}"
                    row.append(f"**{text}**" if mean == best[eps] else text)
                else:
                    row.append("failed" if (name, method, eps) in failed else "—")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def _selection(result: SweepResult, dataset: str, method: str) -> str:
    for row in result.rows:
        if row["dataset"] == dataset and row["method"] == method:
            return str(row.get("hyperparameter_selection", "fixed"))
    return "fixed"


def plot(result: SweepResult, path: str, metric: str = "top1") -> None:
    """``accuracy_vs_epsilon.png``: one panel per dataset, log-x epsilon, one line per private
    method with std error bars, the scikit-learn ceiling dashed and ``nonprivate`` dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    stats = summarise(result.rows, metric)
    names = list(result.datasets)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        keys = [k for k in stats if k[0] == name]
        for method in dict.fromkeys(k[1] for k in keys):
            points = sorted(
                (e, *stats[(name, method, e)][:2])
                for (_, m, e) in keys
                if m == method and not math.isinf(e)
            )
            if points:
                eps, mean, std = zip(*points, strict=True)
                ax.errorbar(eps, mean, yerr=std, marker="o", capsize=3, label=method)
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
        ax.set_title(f"{name} (δ={result.datasets[name]['delta']:.2g})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_json(path: str) -> SweepResult:
    """The ``SweepResult`` saved by ``write_json`` (infinite values restored)."""
    with open(path) as f:
        doc = json.load(f)
    rows = [
        {
            k: math.inf if v == "inf" and k in ("epsilon", "epsilon_spent") else v
            for k, v in row.items()
        }
        for row in doc["rows"]
    ]
    return SweepResult(rows, doc["ceilings"], doc["datasets"], doc["meta"])


def write_all(result: SweepResult, out_dir: str) -> dict[str, str]:
    """Write the four result files into ``out_dir`` and return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        name: os.path.join(out_dir, name)
        for name in ("results.csv", "results.json", "table.md", "accuracy_vs_epsilon.png")
    }
    write_csv(result.rows, paths["results.csv"])
    write_json(result, paths["results.json"])
    with open(paths["table.md"], "w") as f:
        f.write(markdown_table(result))
    plot(result, paths["accuracy_vs_epsilon.png"])
    return paths
