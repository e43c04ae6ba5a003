"""Command line: ``python -m benchmarks sweep ...`` (accuracy vs epsilon) and ``... speed``.

python -m benchmarks sweep                                 # the default suite (make bench)
python -m benchmarks sweep --data digits --seeds 3
python -m benchmarks sweep --features features/cifar10-vit.h5 --epsilons 1,4,inf
python -m benchmarks sweep --synthetic imagenet-like --scale 0.05 --methods single_step,dp_gd
python -m benchmarks speed                                 # make bench-speed
python -m benchmarks report benchmarks/results/default     # rebuild table.md + plot from JSON
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

DEFAULT_OUT_DIR = os.path.join("benchmarks", "results")


def _floats(text: str) -> list[float]:
    try:
        return [
            math.inf if v.strip().lower() in ("inf", "infinity") else float(v)
            for v in text.split(",")
            if v.strip()
        ]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers or inf: {err}") from err


def sweep_parser() -> argparse.ArgumentParser:
    from benchmarks import sweep, synthetic

    p = argparse.ArgumentParser(
        prog="python -m benchmarks sweep",
        description="Accuracy of every private head method across privacy budgets. With no "
        "dataset option, runs the default suite: "
        + ", ".join(f"{n}@{s:g}" for _, n, s in sweep.DEFAULT_SUITE)
        + ".",
    )
    p.add_argument(
        "--features",
        action="append",
        default=[],
        metavar="PATH",
        help="feature store (file.h5 or file.h5:train); repeatable",
    )
    p.add_argument("--test-split", default="test", help="test split of --features stores")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        choices=["digits"],
        help="bundled dataset (digits store, built with feature_extract if missing)",
    )
    p.add_argument(
        "--digits-store",
        default=sweep.DEFAULT_DIGITS_STORE,
        help=f"where the digits store lives (default {sweep.DEFAULT_DIGITS_STORE})",
    )
    p.add_argument(
        "--synthetic",
        action="append",
        default=[],
        metavar="PRESET",
        choices=sorted(synthetic.PRESETS),
        help="synthetic preset; repeatable",
    )
    p.add_argument("--scale", type=float, help="shrink synthetic presets' N by this factor")
    p.add_argument("--methods", help="comma list (default: every registered method)")
    p.add_argument(
        "--epsilons",
        type=_floats,
        default=list(sweep.DEFAULT_EPSILONS),
        help="comma list, 'inf' runs nonprivate (default 0.25,0.5,1,2,4,8,inf)",
    )
    p.add_argument("--delta", type=float, help="default min(1e-5, 1/(2N)) per dataset")
    p.add_argument(
        "--seeds",
        type=int,
        help=f"noise seeds per (method, epsilon) (default {sweep.DEFAULT_SEEDS}; "
        f"{sweep.DEFAULT_SUITE_SEEDS} for the default suite)",
    )
    p.add_argument("--no-ceiling", action="store_true", help="skip the scikit-learn ceiling")
    p.add_argument("--name", help="run name: results go to OUT_DIR/NAME (default from data)")
    p.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help=f"default {DEFAULT_OUT_DIR}")
    p.add_argument(
        "--jax-cache",
        help="persistent XLA compilation cache (default OUT_DIR/.jax_cache; 'none' disables)",
    )
    return p


def run_sweep_cli(argv: list[str]) -> int:
    from benchmarks import report, sweep

    args = sweep_parser().parse_args(argv)
    start = time.perf_counter()
    methods = args.methods.split(",") if args.methods else None
    try:
        datasets = [sweep.load_store(path, test_split=args.test_split) for path in args.features]
        datasets += [sweep.load_digits(args.digits_store) for _ in args.data]
        datasets += [sweep.load_synthetic(name, args.scale or 1.0) for name in args.synthetic]
        name = args.name
        seeds = args.seeds or sweep.DEFAULT_SEEDS
        if not datasets:
            datasets = sweep.default_datasets(args.scale)
            name = name or "default"
            seeds = args.seeds or sweep.DEFAULT_SUITE_SEEDS
        name = name or "+".join(d.name for d in datasets)
        cache = args.jax_cache or os.path.join(args.out_dir, ".jax_cache")
        sweep.use_compilation_cache(None if cache == "none" else cache)
        result = sweep.run_sweep(
            datasets,
            methods=methods,
            epsilons=args.epsilons,
            seeds=seeds,
            delta=args.delta,
            ceiling=not args.no_ceiling,
            log=lambda line: print(line, flush=True),
        )
    except (ValueError, RuntimeError) as err:  # bad store, unknown method, failed extraction
        print(f"error: {err}", file=sys.stderr)
        return 2
    result.meta["command"] = " ".join(["python -m benchmarks sweep", *argv])
    result.meta["total_wall_s"] = time.perf_counter() - start
    paths = report.write_all(result, os.path.join(args.out_dir, name))
    print(report.markdown_table(result))
    print(f"total {result.meta['total_wall_s']:.1f}s; wrote " + ", ".join(paths.values()))
    failures = [r for r in result.rows if r.get("error")]
    if failures:
        print(
            f"{len(failures)} run(s) failed; see the error column of results.csv", file=sys.stderr
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["report"] and len(argv) == 2:  # rebuild table.md and the plot of a run
        from benchmarks import report

        result = report.read_json(os.path.join(argv[1], "results.json"))
        print("wrote " + ", ".join(report.write_all(result, argv[1]).values()))
        return 0
    if not argv or argv[0] not in ("sweep", "speed"):
        print(
            "usage: python -m benchmarks {sweep,speed} [options]  (--help after a command)\n"
            "       python -m benchmarks report RUN_DIR  (rewrite a run's files from results.json)",
            file=sys.stderr,
        )
        return 2
    if argv[0] == "speed":
        from benchmarks import speed

        return speed.main(argv[1:])
    return run_sweep_cli(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
