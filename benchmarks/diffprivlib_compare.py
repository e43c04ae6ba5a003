"""diffprivlib's ``LogisticRegression`` beside this toolkit's ``auto`` on the same features.

    python -m benchmarks.diffprivlib_compare --python /work/tools/dpl-venv/bin/python \\
        --data features/digits-pixels.h5 --data features/mnist5k-scatnet.h5 \\
        --epsilons 1,3,4,8 --seeds 3

diffprivlib (IBM's DP library, what many users know) fails to import with scikit-learn >= 1.6,
and this project needs a newer one, so it runs in a virtual environment of its own (``--python``;
the README gives the commands that make it): this module runs itself there as a worker
(``--worker``), which imports only numpy and diffprivlib. Both see the same rows: each store's
train and test splits, every row scaled to unit L2 norm (the toolkit's default preprocessing, a
per-row map, free), so diffprivlib's ``data_norm=1`` bounds every row without looking at the
data. diffprivlib's model is pure epsilon-DP (objective perturbation, one-vs-rest, its defaults:
C = 1, 100 L-BFGS iterations); ``auto`` is (epsilon, 1e-5)-DP under add-or-remove-one adjacency.
Test top-1, mean and std over ``--seeds`` noise seeds; the table goes to stdout and, with every
run, to ``OUT/diffprivlib/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

DELTA = 1e-5


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Every row scaled to L2 norm 1 (a zero row stays zero), float64."""
    x = np.asarray(x, np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def worker(arrays: str, out: str, epsilons: list[float], seeds: int) -> None:
    """diffprivlib's accuracy per epsilon and seed on the arrays of ``arrays`` (this runs in
    diffprivlib's environment: numpy and diffprivlib only)."""
    import warnings

    from diffprivlib.models import LogisticRegression

    with np.load(arrays) as f:
        x, y, tx, ty = (f[k] for k in ("x", "y", "tx", "ty"))
    results = {}
    for eps in epsilons:
        scores = []
        for seed in range(seeds):
            model = LogisticRegression(epsilon=eps, data_norm=1.0, random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence warnings of the noisy objective
                model.fit(x, y)
            scores.append(float(np.mean(model.predict(tx) == ty)))
        results[f"{eps:g}"] = scores
    with open(out, "w") as f:
        json.dump(results, f)


def toolkit(x, y, tx, ty, num_classes: int, epsilons: list[float], seeds: int) -> dict:
    """This toolkit's ``auto`` accuracy per epsilon and seed."""
    import private_head

    results = {}
    for eps in epsilons:
        results[f"{eps:g}"] = [
            private_head.fit(
                x,
                y,
                num_classes=num_classes,
                epsilon=eps,
                delta=DELTA,
                method="auto",
                seed=seed,
                progress=False,
            ).accuracy(tx, ty)["top1"]
            for seed in range(seeds)
        ]
    return results


def compare(path: str, python: str, epsilons: list[float], seeds: int) -> dict:
    """Both libraries on one store's train and test splits (module docstring)."""
    from feature_extract.store import read_split

    x, y, info = read_split(path, "train")
    tx, ty, _ = read_split(path, "test")
    x, tx = unit_rows(x), unit_rows(tx)
    with tempfile.TemporaryDirectory() as tmp:
        arrays, out = os.path.join(tmp, "rows.npz"), os.path.join(tmp, "out.json")
        np.savez(arrays, x=x, y=y, tx=tx, ty=ty)
        command = [python, os.path.abspath(__file__), "--worker", arrays, out]
        command += ["--epsilons", ",".join(f"{e:g}" for e in epsilons), "--seeds", str(seeds)]
        subprocess.run(command, check=True)
        with open(out) as f:
            theirs = json.load(f)
    ours = toolkit(
        x.astype(np.float32), y, tx.astype(np.float32), ty, info.num_classes, epsilons, seeds
    )
    name = os.path.splitext(os.path.basename(path))[0]
    return {"data": name, "dim": info.dim, "diffprivlib": theirs, "auto": ours}


def _cell(scores: list[float]) -> str:
    return f"{np.mean(scores):.3f} ± {np.std(scores):.3f}"


def table(results: list[dict], epsilons: list[float]) -> str:
    """The Markdown table: one row per data set and library."""
    head = "| features | model | " + " | ".join(f"ε={e:g}" for e in epsilons) + " |"
    lines = [head, "|---|---|" + "---|" * len(epsilons)]
    models = (
        ("diffprivlib", "diffprivlib `LogisticRegression` (ε-DP, `data_norm=1`)"),
        ("auto", "this toolkit, `auto` (ε, 1e-5)"),
    )
    for result in results:
        for key, label in models:
            cells = " | ".join(_cell(result[key][f"{e:g}"]) for e in epsilons)
            lines.append(f"| {result['data']} (D={result['dim']}) | {label} | {cells} |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.diffprivlib_compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--python", help="the Python of diffprivlib's virtual environment")
    p.add_argument("--data", action="append", default=[], help="a feature store (repeatable)")
    p.add_argument("--epsilons", default="1,3,4,8", help="(default: 1,3,4,8)")
    p.add_argument("--seeds", type=int, default=3, help="noise seeds per cell (default: 3)")
    p.add_argument("--out", default=os.path.join("benchmarks", "results"), help="results folder")
    p.add_argument("--worker", nargs=2, metavar=("ARRAYS", "OUT"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    epsilons = [float(e) for e in args.epsilons.split(",")]
    if args.worker:
        worker(*args.worker, epsilons, args.seeds)
        return 0
    if not args.python or not args.data:
        parser().error("give --python (diffprivlib's environment) and at least one --data")
    results = [compare(path, args.python, epsilons, args.seeds) for path in args.data]
    folder = os.path.join(args.out, "diffprivlib")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(table(results, epsilons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
