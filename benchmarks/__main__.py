"""Command line: ``python -m benchmarks {sweep,speed,report} ...``.

python -m benchmarks sweep                                 # the default suite (make bench)
python -m benchmarks sweep --data digits --seeds 3
python -m benchmarks sweep --data mnist5k-scatnet --epsilons 1,3,8,inf --seeds 3
python -m benchmarks sweep --features features/cifar10-vit.h5 --epsilons 1,4,inf
python -m benchmarks sweep --synthetic imagenet-like --scale 0.05 --methods auto,dp_gd
python -m benchmarks speed                                 # make bench-speed
python -m benchmarks report benchmarks/results/default     # rebuild table.md + plot

A sweep appends every finished run to OUT_DIR/NAME/results.jsonl: Ctrl-C keeps them, and the same
command again resumes (runs already there are skipped; --fresh starts over). Bad input is one
line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import os
import sys
import time

from benchmarks.cli import (
    Parser,
    choices_list,
    epsilons,
    fail,
    open_unit_float,
    positive_int,
    scale_float,
)

DEFAULT_OUT_DIR = os.path.join("benchmarks", "results")
COMMANDS = {
    "sweep": "accuracy of every head method across privacy budgets",
    "speed": "the speed suite (make bench-speed)",
    "report": "rewrite a sweep's table.md, plot and CSV from its results",
}


def sweep_parser() -> Parser:
    from benchmarks import sweep, synthetic

    p = Parser(
        prog="python -m benchmarks sweep",
        description="Accuracy of every private head method across privacy budgets. With no "
        "dataset option, runs the default suite: "
        + ", ".join(f"{n}@{s:g}" for _, n, s in sweep.DEFAULT_SUITE)
        + f" with {sweep.DEFAULT_SUITE_SEEDS} seeds. Finished runs are kept in "
        f"OUT_DIR/NAME/{sweep.RESULTS_LOG}; rerunning the same command resumes.",
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
        choices=sorted(sweep.BUNDLED_STORES),
        help="bundled dataset store (features/NAME.h5, built with feature_extract if missing); "
        "repeatable",
    )
    p.add_argument(
        "--digits-store", default=sweep.DEFAULT_DIGITS_STORE, help="where the digits store lives"
    )
    p.add_argument(
        "--synthetic",
        action="append",
        default=[],
        metavar="PRESET",
        choices=sorted(synthetic.PRESETS),
        help=f"synthetic preset, one of {', '.join(sorted(synthetic.PRESETS))}; repeatable",
    )
    p.add_argument(
        "--scale",
        type=scale_float,
        help="shrink synthetic presets' sizes by this factor in (0, 1] (unset: 1, or the "
        "default suite's own scales)",
    )
    methods = sweep.known_methods()
    p.add_argument(
        "--methods",
        type=choices_list(methods),
        default=",".join(sweep.default_methods()),
        help=f"comma list of {', '.join(methods)}; nonprivate runs at epsilon=inf only",
    )
    p.add_argument(
        "--epsilons",
        type=epsilons,
        default=",".join("inf" if e == float("inf") else f"{e:g}" for e in sweep.DEFAULT_EPSILONS),
        help="comma list of positive numbers; 'inf' runs nonprivate",
    )
    p.add_argument(
        "--delta",
        type=open_unit_float,
        default=sweep.DEFAULT_DELTA,
        help="delta of every dataset (fixed; never derived from the private training-set size)",
    )
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=sweep.DEFAULT_SEEDS,
        help="noise seeds per (method, epsilon)",
    )
    p.add_argument(
        "--tuned",
        action="store_true",
        help="also run the test-tuned reference grid (sweep.TUNED; chosen on the test split, "
        "not private): one 'test-tuned' row per table",
    )
    p.add_argument("--no-ceiling", action="store_true", help="skip the scikit-learn ceiling")
    p.add_argument(
        "--name",
        help="run name: results go to OUT_DIR/NAME (unset: 'default' for the default suite, "
        "else the datasets' names joined by '+')",
    )
    p.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="where run directories go")
    p.add_argument(
        "--fresh",
        action="store_true",
        help=f"discard the runs an earlier sweep of the same name left in {sweep.RESULTS_LOG}",
    )
    p.add_argument(
        "--jax-cache",
        help="persistent XLA compilation cache (unset: OUT_DIR/.jax_cache; 'none' disables)",
    )
    return p


def run_sweep_cli(argv: list[str]) -> int:
    from benchmarks import report, sweep

    args = sweep_parser().parse_args(argv)
    start = time.perf_counter()
    log = lambda line: print(line, flush=True)  # noqa: E731
    try:
        datasets = [sweep.load_store(path, test_split=args.test_split) for path in args.features]
        datasets += [
            sweep.load_bundled(d, args.digits_store if d == "digits" else None, log)
            for d in args.data
        ]
        datasets += [sweep.load_synthetic(name, args.scale or 1.0) for name in args.synthetic]
        name = args.name
        if not datasets:
            datasets = sweep.default_datasets(args.scale, args.digits_store, log)
            name = name or "default"
        names = [d.name for d in datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"a dataset is given twice: {', '.join(names)}")
        name = name or "+".join(names)
        run_dir = os.path.join(args.out_dir, name)
        cache = args.jax_cache or os.path.join(args.out_dir, ".jax_cache")
        sweep.use_compilation_cache(None if cache == "none" else cache)
        tuned = list(sweep.TUNED) if args.tuned else []
        result = sweep.run_sweep(
            datasets,
            methods=[*args.methods, *(m for m in tuned if m not in args.methods)],
            epsilons=args.epsilons,
            seeds=args.seeds,
            delta=args.delta,
            ceiling=not args.no_ceiling,
            log=log,
            results_log=os.path.join(run_dir, sweep.RESULTS_LOG),
            fresh=args.fresh,
        )
    except (ValueError, RuntimeError, OSError) as err:  # bad store, failed extraction
        fail(str(err))
    result.meta["command"] = " ".join(["python -m benchmarks sweep", *argv])
    result.meta["total_wall_s"] = time.perf_counter() - start
    paths = report.write_all(result, run_dir)
    print(report.markdown_table(result))
    print(f"total {result.meta['total_wall_s']:.1f}s; wrote " + ", ".join(paths.values()))
    if result.interrupted:
        print(
            f"interrupted; the finished runs are in {paths['results.csv']}: run the same command "
            "again to resume",
            file=sys.stderr,
        )
        return 130
    failures = [r for r in result.rows if r.get("error")]
    if failures:
        print(
            f"{len(failures)} run(s) failed; see the error column of results.csv", file=sys.stderr
        )
        return 1
    return 0


def report_parser() -> Parser:
    from benchmarks import sweep

    p = Parser(
        prog="python -m benchmarks report",
        description="Rewrite a sweep's results.csv, results.json, table.md and "
        f"accuracy_vs_epsilon.png from its results.json (else from its {sweep.RESULTS_LOG}, "
        "e.g. after an interrupted sweep).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a sweep's run directory (OUT_DIR/NAME)")
    return p


def run_report_cli(argv: list[str]) -> int:
    from benchmarks import report

    args = report_parser().parse_args(argv)
    try:
        result = report.read_run(args.run_dir)
    except (OSError, ValueError, KeyError) as err:
        fail(f"cannot read the sweep results in {args.run_dir}: {err}")
    print("wrote " + ", ".join(report.write_all(result, args.run_dir).values()))
    return 0


def main_parser() -> Parser:
    p = Parser(
        prog="python -m benchmarks",
        description="Benchmarks of the private heads. Commands: "
        + "; ".join(f"{k}: {v}" for k, v in COMMANDS.items())
        + ". Run a command with --help for its options.",
    )
    p.add_argument("command", choices=list(COMMANDS), help="what to run")
    p.add_argument(
        "options", nargs="*", default=[], help="the command's options (see COMMAND --help)"
    )
    return p


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        main_parser().parse_args(argv)  # --help, or the error for a missing/unknown command
        fail("a command is required")  # pragma: no cover - parse_args exits first
    command, rest = argv[0], argv[1:]
    if command == "speed":
        from benchmarks import speed

        return speed.main(rest)
    if command == "report":
        return run_report_cli(rest)
    return run_sweep_cli(rest)


def main(argv: list[str] | None = None) -> int:
    """The exit status of ``python -m benchmarks argv`` (errors: one line, status 2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return dispatch(argv)
    except SystemExit as err:  # --help (0) or a one-line usage error (2)
        return err.code if isinstance(err.code, int) else 0 if err.code is None else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
