"""ImageNet-scale full batch on a small machine: peak memory and wall time of ``private_head.fit``.

Each case runs in its own process (so its peak resident memory is its own) and measures, in that
one run, the fit and the reference it is judged against:

    array_single_step   fit(single_step) on a float32 host array [N, D], K classes, against one
                        numpy pass over the same array (``X.sum(0)``); peak RSS against the bytes
    store_single_step   fit(single_step) from a float16 store, streamed, against one raw h5py read
                        of the file (``read_direct`` in 65,536-row chunks)
    store_dp_gd         fit(dp_gd, steps=T) from the same store, against T raw reads
    memory_single_step  fit(single_step) on a float32 array of ``--memory-rows`` rows: peak RSS

The targets printed beside the figures come from the data-path issue (README, "Scale"):
peak RSS <= 1.3 x the feature bytes + 1 GB and wall <= 5 x ``X.sum(0)`` in memory; peak RSS <= 2
GB and wall <= 1.5 x a raw read from a store; dp_gd <= 1.5 x T raw reads (only reachable where a
step's two GEMMs, ``4 N D K`` flops, are faster than a read: a GPU, or a small K).

    python -m benchmarks.scale                       # 1,281,167 x 1280, K = 1000 (several minutes)
    python -m benchmarks.scale --rows 200000 --cases array_single_step,store_single_step
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

CASES = ("array_single_step", "store_single_step", "store_dp_gd", "memory_single_step")
BLOCK_ROWS = 65536


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _features(rows: int, dim: int, dtype: str) -> np.ndarray:
    """A [rows, dim] array filled block by block from one random block (fast, finite, varied)."""
    rng = np.random.default_rng(0)
    block = rng.standard_normal((min(rows, BLOCK_ROWS), dim), dtype=np.float32).astype(dtype)
    x = np.empty((rows, dim), dtype)
    for start in range(0, rows, block.shape[0]):
        stop = min(rows, start + block.shape[0])
        np.copyto(x[start:stop], block[: stop - start])
    return x


def _labels(rows: int, classes: int) -> np.ndarray:
    return (np.arange(rows, dtype=np.int64) * 7919 % classes).astype(np.int32)


def _fit(features: Any, labels: Any, classes: int, method: str, steps: int) -> tuple[float, dict]:
    import private_head

    options = (
        {"steps": steps, "optimizer": "sgd", "learning_rate": 1.0} if method == "dp_gd" else {}
    )
    started = time.perf_counter()
    head = private_head.fit(
        features,
        labels,
        num_classes=classes,
        epsilon=4.0,
        delta=1e-6,
        method=method,
        seed=0,
        **options,
    )
    return time.perf_counter() - started, head.operator_log


def raw_read_seconds(path: str) -> float:
    """One read of the whole features dataset with h5py ``read_direct`` into a reused buffer."""
    import h5py

    with h5py.File(path, "r") as f:
        ds = f["train/features"]
        buf = np.empty((BLOCK_ROWS, ds.shape[1]), ds.dtype)
        started = time.perf_counter()
        for start in range(0, ds.shape[0], BLOCK_ROWS):
            stop = min(ds.shape[0], start + BLOCK_ROWS)
            ds.read_direct(buf, np.s_[start:stop], np.s_[0 : stop - start])
        return time.perf_counter() - started


def write_store(path: str, rows: int, dim: int, classes: int) -> float:
    """A float16 store of the benchmark's rows, written in appends; returns the seconds."""
    from feature_extract import store

    started = time.perf_counter()
    block = _features(min(rows, BLOCK_ROWS), dim, "float16")
    labels = _labels(rows, classes)
    with store.SplitWriter(
        path,
        "train",
        dim=dim,
        total_rows=rows,
        num_classes=classes,
        feature_dtype="float16",
        overwrite=True,
    ) as writer:
        for start in range(0, rows, BLOCK_ROWS):
            stop = min(rows, start + BLOCK_ROWS)
            writer.append(block[: stop - start], labels[start:stop], np.arange(start, stop))
        writer.finish()
    return time.perf_counter() - started


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """One case in this process (the child of ``main``)."""
    rows, dim, classes = args.rows, args.dim, args.classes
    if case in ("array_single_step", "memory_single_step"):
        rows = rows if case == "array_single_step" else args.memory_rows
        x, y = _features(rows, dim, "float32"), _labels(rows, classes)
        started = time.perf_counter()
        x.sum(axis=0)
        numpy_pass = time.perf_counter() - started
        base = _peak_rss_bytes()
        seconds, perf = _fit(x, y, classes, "single_step", 1)
        return {
            "rows": rows,
            "feature_bytes": x.nbytes,
            "fit_s": seconds,
            "numpy_pass_s": numpy_pass,
            "peak_rss_bytes": _peak_rss_bytes(),
            "rss_before_fit_bytes": base,
            "operator_log": perf,
        }
    path = args.store
    read = min(raw_read_seconds(path) for _ in range(2))
    steps = args.steps if case == "store_dp_gd" else 1
    method = "dp_gd" if case == "store_dp_gd" else "single_step"
    seconds, perf = _fit(f"{path}:train", None, classes, method, steps)
    return {
        "rows": rows,
        "file_bytes": os.path.getsize(path),
        "fit_s": seconds,
        "raw_read_s": read,
        "steps": steps,
        "peak_rss_bytes": _peak_rss_bytes(),
        "operator_log": perf,
    }


def judge(case: str, r: dict[str, Any]) -> list[tuple[str, str, float, bool]]:
    """``(claim, target, measured, pass)`` rows for one case."""
    gb = 1 << 30
    if case in ("array_single_step", "memory_single_step"):
        rss_limit = 1.3 * r["feature_bytes"] + gb
        out = [
            (
                f"{case}: peak RSS / (1.3 x features + 1 GB)",
                "<= 1",
                r["peak_rss_bytes"] / rss_limit,
                r["peak_rss_bytes"] <= rss_limit,
            )
        ]
        if case == "array_single_step":
            ratio = r["fit_s"] / r["numpy_pass_s"]
            out.append((f"{case}: wall / X.sum(0)", "<= 5", ratio, ratio <= 5))
        return out
    ratio = r["fit_s"] / (r["steps"] * r["raw_read_s"])
    out = [(f"{case}: wall / ({r['steps']} x raw h5py read)", "<= 1.5", ratio, ratio <= 1.5)]
    if case == "store_single_step":
        out.append(
            (
                f"{case}: peak RSS (GB)",
                "<= 2",
                r["peak_rss_bytes"] / gb,
                r["peak_rss_bytes"] <= 2 * gb,
            )
        )
    return out


def table(results: dict[str, Any]) -> str:
    lines = ["| claim | target | measured | result |", "|---|---|---|---|"]
    for case, r in results["cases"].items():
        if "error" in r:
            lines.append(f"| {case} | | error: {r['error']} | |")
            continue
        for claim, target, value, ok in judge(case, r):
            lines.append(f"| {claim} | {target} | {value:.3g} | {'PASS' if ok else 'FAIL'} |")
    lines.append("")
    lines.append("| case | wall (s) | reference (s) | peak RSS (GB) | rows held as |")
    lines.append("|---|---|---|---|---|")
    for case, r in results["cases"].items():
        if "error" in r:
            continue
        ref = r.get("numpy_pass_s", r.get("raw_read_s", 0.0) * r.get("steps", 1))
        lines.append(
            f"| {case} | {r['fit_s']:.2f} | {ref:.2f} | "
            f"{r['peak_rss_bytes'] / (1 << 30):.2f} | {r['operator_log']['rows']} |"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    from benchmarks.cli import Parser, choices_list, positive_int

    p = Parser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=positive_int, default=1_281_167, help="N of the big cases")
    p.add_argument("--dim", type=positive_int, default=1280)
    p.add_argument("--classes", type=positive_int, default=1000)
    p.add_argument(
        "--memory-rows", type=positive_int, default=320_000, help="N of memory_single_step"
    )
    p.add_argument("--steps", type=positive_int, default=10, help="T of store_dp_gd")
    p.add_argument("--cases", type=choices_list(CASES), default=list(CASES))
    p.add_argument("--tmp-dir", default=None, help="where the temporary store is written")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "scale.json"))
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.case:  # a child: one case, its result as JSON on the last line
        print(json.dumps(run_case(args.case, args)))
        return 0
    results: dict[str, Any] = {"shape": [args.rows, args.dim, args.classes], "cases": {}}
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
        store_path = os.path.join(tmp, "scale.h5")
        if any(c.startswith("store") for c in args.cases):
            results["store_write_s"] = write_store(store_path, args.rows, args.dim, args.classes)
        for case in args.cases:
            argv_child = [
                sys.executable,
                "-m",
                "benchmarks.scale",
                "--case",
                case,
                "--store",
                store_path,
                "--rows",
                str(args.rows),
                "--dim",
                str(args.dim),
                "--classes",
                str(args.classes),
                "--memory-rows",
                str(args.memory_rows),
                "--steps",
                str(args.steps),
            ]
            print(f"running {case} ...", flush=True)
            proc = subprocess.run(argv_child, capture_output=True, text=True)
            if proc.returncode != 0:
                results["cases"][case] = {"error": proc.stderr.strip().splitlines()[-1:]}
            else:
                results["cases"][case] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(table({"cases": {case: results["cases"][case]}}), flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(table(results))
    return 0


if __name__ == "__main__":
    from benchmarks.cli import guard

    raise SystemExit(guard(main))
