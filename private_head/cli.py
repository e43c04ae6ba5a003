"""``python -m private_head``: train a head on a store's train split, evaluate it on the test split.

    python -m private_head --features features/digits-pixels.h5 --epsilon 4
    python -m private_head --features F --epsilon 2 --method dp_sgd --batch-size 256 --steps 50
    python -m private_head --method dp_gd --help        # the options of one method

prints the accuracy and the privacy report and writes the head (``.npz``) and a JSON result next to
the features (or in ``--out-dir``): ``<store>.<method>.eps<epsilon>.{npz,json}``; a file written
with other settings is not overwritten (``--overwrite``). Both, and everything printed on stdout,
are the same for neighbouring datasets unless charged. How the rows were read and the wall time
depend on the private data: they go to ``<stem>.operator.json`` (``"publish": false``) and one
``operator`` line on stderr, never to be published. ``--epsilon inf`` trains the
``nonprivate`` ceiling. Without ``--delta``: ``min(1e-5, 1/(2n))`` for a public ``--dataset-size``
n, else 1e-5. Every requested split is checked before training. What each run spends is kept
in the dataset's budget file (``<features>.budget.json``); ``--total-epsilon X`` caps the total,
and the summary ends with what has been spent on the dataset so far. Bad input ends with one line
``error: ...`` and exit status 2. The option flags are generated from the option types (their
defaults are in ``--help``); ``--option KEY=VALUE`` passes any option too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax

from accounting.budget_file import BudgetFile
from feature_extract import multihost, store
from private_head._api import fit
from private_head._head import PrivateHead
from private_head._options import SHARED, Options
from private_head._registry import available_methods, get_method

EVAL_CHUNK_ROWS = 65536
DEFAULT_DELTA = 1e-5
OPERATOR_SUFFIX = ".operator.json"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: error: ...``) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _epsilon(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"epsilon must be a number or inf, got {text!r}") from None
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"epsilon must be > 0 or inf, got {text}")
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_options(group: argparse._ArgumentGroup, kind: type[Options], taken: set[str]) -> None:
    """One flag per field of ``kind`` (default SUPPRESS: only given flags reach ``fit``)."""
    for spec in kind.describe():
        name = spec["name"]
        if name in taken:
            continue
        taken.add(name)
        text = f"{spec['help']} (default: {spec['shown']})"
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": text}
        if spec["type"] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = {int: int, float: float, str: str}[spec["type"]]
            if spec["choices"]:
                kwargs["choices"] = spec["choices"]
            kwargs["metavar"] = spec["name"].upper() if not spec["choices"] else None
        group.add_argument(_flag(name), **kwargs)


def parser(method: str | None = None) -> Parser:
    p = Parser(
        prog="python -m private_head",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--features", required=True, help="feature store file (.h5)")
    p.add_argument(
        "--epsilon", type=_epsilon, required=True, help="privacy budget; inf: nonprivate"
    )
    p.add_argument(
        "--delta",
        type=float,
        help="default: min(1e-5, 1/(2n)) with a public --dataset-size n, else 1e-5",
    )
    p.add_argument(
        "--method",
        default=method,
        help=f"one of {', '.join(available_methods())} "
        "(default: single_step; nonprivate when epsilon is inf)",
    )
    p.add_argument(
        "--seed",
        type=int,
        help="noise seed (default: 64 OS-random bits; the report then says seeded: false)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any option, e.g. --option batch_size=256 (VALUE is read as JSON when it "
        "parses, else as a string); repeatable",
    )
    p.add_argument(
        "--total-epsilon",
        type=float,
        help="cap the dataset's total epsilon across runs (kept in <features>.budget.json); a "
        "fit that would pass it is refused before it reads a row",
    )
    p.add_argument(
        "--budget-file", help="the dataset's budget file (default: <features>.budget.json)"
    )
    p.add_argument("--train-split", default="train", help="(default: train)")
    p.add_argument("--test-split", help="(default: test, when the store has it)")
    p.add_argument("--out-dir", help="where the head and JSON go (default: next to the features)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier head of this method and epsilon written with other settings",
    )
    taken: set[str] = set()
    shown = method or "single_step"
    _add_options(
        p.add_argument_group(f"options of method {shown!r} (see --method NAME --help)"),
        get_method(shown).options,
        taken,
    )
    for kind in SHARED:
        _add_options(p.add_argument_group(f"{kind.__name__} options (every method)"), kind, taken)
    multihost.add_arguments(p)
    return p


def method_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["batch_size=256", "metric=cosine"]`` -> ``{"batch_size": 256, "metric": "cosine"}``."""
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option needs KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def default_delta(dataset_size: int | None) -> tuple[float, str]:
    """``(delta, rule)``: ``min(1e-5, 1/(2n))`` for a public size n, else 1e-5 (the true N is
    private, so it cannot pick delta)."""
    if dataset_size is None:
        return DEFAULT_DELTA, "default 1e-5 (no public dataset size; pass --delta well below 1/N)"
    return min(DEFAULT_DELTA, 1.0 / (2 * dataset_size)), "default min(1e-5, 1/(2n)), n public"


def check_splits(path: str, train_split: str, test_split: str | None) -> tuple[Any, str | None]:
    """The train split's info and the test split to evaluate (None: none), checked before any
    training: a named split must exist, be complete and match the train split."""
    info = store.split_info(path, train_split)
    names = store.split_names(path)
    if test_split is None:
        test_split = "test" if "test" in names else None
    elif test_split not in names:
        raise ValueError(f"{path} has no split {test_split!r} to evaluate; it has {names}")
    if test_split is not None:
        test = store.split_info(path, test_split)
        if (test.dim, test.num_classes) != (info.dim, info.num_classes):
            raise ValueError(
                f"test split {test_split!r} of {path} has dim {test.dim} and {test.num_classes} "
                f"classes, the train split {train_split!r} {info.dim} and {info.num_classes}"
            )
    return info, test_split


def evaluate(head: PrivateHead, path: str, split: str | None) -> dict[str, Any]:
    """Top-1/top-5 accuracy on a store split (public data), read in chunks."""
    if split is None:
        return {"split": None, "num_rows": 0, "top1": None, "top5": None}
    counts, total = {"top1": 0.0, "top5": 0.0}, 0
    with store.SplitReader(path, split) as reader:
        for x, y in reader.iter_chunks(EVAL_CHUNK_ROWS):
            acc = head.accuracy(x, y)
            for k in counts:
                counts[k] += acc[k] * len(y)
            total += len(y)
    return {"split": split, "num_rows": total, **{k: v / total for k, v in counts.items()}}


def output_stem(features: str, method: str, epsilon: float, out_dir: str | None) -> str:
    """``<dir>/<store name>.<method>.eps<epsilon>`` (epsilon as ``%g``: eps4, eps0.5, epsinf)."""
    base = os.path.splitext(os.path.basename(features))[0]
    folder = out_dir if out_dir is not None else os.path.dirname(features)
    return os.path.join(folder, f"{base}.{method}.eps{epsilon:g}")


def _settings_key(result: dict[str, Any]) -> Any:
    return (result["settings"], result["privacy"]["delta"], result.get("seed"))


def run(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Check, train, evaluate, write the head and the JSON result; returns the result."""
    path = args.features
    info, test_split = check_splits(path, args.train_split, args.test_split)
    method = args.method or ("nonprivate" if math.isinf(args.epsilon) else "single_step")
    if math.isinf(args.epsilon) and method != "nonprivate":
        raise ValueError(
            f"--epsilon inf (make probe EPS=inf) trains the nonprivate ceiling; "
            f"method {method!r} needs a finite epsilon"
        )
    if args.delta is not None:
        delta, delta_rule = args.delta, "given"
    else:
        delta, delta_rule = default_delta(options.get("dataset_size"))
    stem = output_stem(path, method, args.epsilon, args.out_dir)
    started = time.perf_counter()
    head = fit(
        f"{path}:{args.train_split}",
        num_classes=info.num_classes,
        epsilon=args.epsilon,
        delta=delta,
        method=method,
        seed=args.seed,
        total_epsilon=args.total_epsilon,
        budget_file=args.budget_file,
        **options,
    )
    if jax.process_index() != 0:  # several processes: the head is the same; process 0 writes it
        return {"privacy": head.privacy}
    result = {
        "features": path,
        "train_split": args.train_split,
        "num_classes": info.num_classes,
        "delta_rule": delta_rule,
        "seed": args.seed,
        "test": evaluate(head, path, test_split),
        "privacy": head.privacy,
        "settings": head.settings,
        "performance": head.performance,
        "dataset_budget": dataset_budget(args.budget_file or path),
    }
    _refuse_other_settings(stem + ".json", result, args.overwrite)
    if os.path.dirname(stem):
        os.makedirs(os.path.dirname(stem), exist_ok=True)
    result.update(head_file=head.save(stem + ".npz"), result_file=stem + ".json")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    operator = {**head.operator_log, "command_seconds": time.perf_counter() - started}
    with open(stem + OPERATOR_SUFFIX, "w") as f:
        json.dump(operator, f, indent=2, sort_keys=True)
    result["operator"] = {**operator, "file": stem + OPERATOR_SUFFIX}
    return result


def dataset_budget(path: str) -> dict[str, Any]:
    """The dataset's budget across runs after this one: its file, cap and total."""
    budget = BudgetFile(path)
    document = budget.read()
    total = budget.total(document)
    cap = document.get("cap")
    return {
        "file": budget.path,
        "cap": None if not cap else {"epsilon": cap["epsilon"], "delta": cap["delta"]},
        "total": total.to_dict(),
        "spent_so_far": total.describe(),
    }


def _refuse_other_settings(json_path: str, result: dict[str, Any], overwrite: bool) -> None:
    if overwrite or not os.path.exists(json_path):
        return
    try:
        with open(json_path) as f:
            earlier = json.load(f)
        same = _settings_key(earlier) == _settings_key(result)
    except (OSError, ValueError, KeyError):
        same = False
    if not same:
        raise ValueError(
            f"{json_path} holds a head trained with other settings; pass --overwrite to replace "
            "it, or --out-dir to keep both"
        )


def _chosen_text(chosen: Any) -> str:
    """``method(option=value, ...)`` with only the options set (None: the method's rule)."""
    if not isinstance(chosen, dict):
        return str(chosen)
    given = ", ".join(f"{k}={v}" for k, v in chosen.items() if k != "method" and v is not None)
    return f"{chosen.get('method')}({given})"


def _noise_multiplier(event: dict[str, Any]) -> float:
    """sigma of a ``[self_composed] gaussian`` event (as ``accounting.event_to_dict`` writes it)."""
    while event["type"] != "gaussian":
        event = event["event"]
    return event["noise_multiplier"]


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def summary(result: dict[str, Any]) -> str:
    """The lines printed on stdout after a run: nothing there depends on the private data
    except through charged releases."""
    p, test = result["privacy"], result["test"]
    lines = [f"features  {result['features']} ({result['num_classes']} classes)"]
    if test["top1"] is None:
        lines.append("test      the store has no test split: not evaluated")
    else:
        lines.append(
            f"test      top-1 {test['top1']:.4f}  top-5 {test['top5']:.4f} "
            f"({test['num_rows']} rows of {test['split']!r})"
        )
    mu = "n/a (PLD)" if p["mu"] is None else _num(p["mu"])
    lines.append(
        f"privacy   method {p['method']}: epsilon {_num(p['epsilon_spent'])} of "
        f"{_num(p['epsilon_budget'])}, delta {p['delta']:g} ({result['delta_rule']}), mu {mu}, "
        f"accountant {p['accountant']}, seeded {p['seeded']}"
    )
    size = p["dataset_size"]
    if size["source"] == "noisy_count":
        lines.append(
            f"  size    noisy count {size['value']:g} (noise std {size['noise_std']:.3g}, "
            f"{size['budget_fraction']:g} of mu^2), the divisor"
        )
    elif size["source"] == "public":
        lines.append(f"  size    public dataset_size {size['value']}, the divisor")
    if "auto" in p:
        lines.append(f"  auto    chose {_chosen_text(p['auto']['chosen'])}: {p['auto']['reason']}")
    for r in p["releases"]:
        if r["description"] is None:  # a Gaussian release
            lines.append(
                f"  release {r['name']}: sensitivity {_num(r['sensitivity'])}, noise std "
                f"{_num(r['noise_std'])}, noise multiplier {_num(_noise_multiplier(r['event']))},"
                f" count {r['count']}"
            )
        else:
            lines.append(f"  release {r['name']}: {r['description']}")
    lines.append(f"wrote     {result['head_file']} and {result['result_file']}")
    lines.append(f"spent so far on this dataset: {result['dataset_budget']['spent_so_far']}")
    return "\n".join(lines)


def operator_line(log: dict[str, Any]) -> str:
    """The one line printed on stderr: the data path and the time, which depend on the private
    data (never publish them)."""
    passes = f"{log['passes']} pass{'' if log['passes'] == 1 else 'es'}"
    return (
        f"operator  (do not publish: depends on the private data) rows {log['rows']} "
        f"({log['dtype']}), chunks of {log['chunk_rows']} rows (at most {log['chunk_rows_max']}), "
        f"{passes}, fit {log['seconds']:.2f} s; {log['file']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    early = Parser(add_help=False)
    early.add_argument("--method")
    early.add_argument("--epsilon")
    known, _ = early.parse_known_args(argv)
    if known.method is None and str(known.epsilon).strip().lower() in ("inf", "infinity"):
        known.method = "nonprivate"  # its flags, not the single step's
    if known.method is not None and known.method not in available_methods():
        print(
            f"python -m private_head: error: unknown method {known.method!r}; available: "
            f"{', '.join(available_methods())}",
            file=sys.stderr,
        )
        return 2
    args = parser(known.method).parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in _FIXED}
    try:
        options.update(method_options(args.option))
        multihost.initialize_from_args(args)
        result = run(args, options)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if "head_file" in result:
        print(summary(result))
        print(operator_line(result["operator"]), file=sys.stderr)
    return 0


_FIXED = {
    "features",
    "epsilon",
    "delta",
    "method",
    "seed",
    "option",
    "train_split",
    "test_split",
    "out_dir",
    "overwrite",
    "total_epsilon",
    "budget_file",
    "coordinator",
    "num_processes",
    "process_id",
    "distributed",
}


def options_markdown() -> str:
    """The README's table of every method's options and the shared ones, with their defaults
    (generated from the option types; a test keeps the README equal to it)."""
    lines = ["| method | option | default | meaning |", "|---|---|---|---|"]
    rows = [
        (f"`{name}`", spec)
        for name in available_methods()
        for spec in get_method(name).options.describe()
    ]
    rows += [("every method", spec) for kind in SHARED for spec in kind.describe()]
    for who, spec in rows:
        lines.append(f"| {who} | `{spec['name']}` | {spec['shown']} | {spec['help']} |")
    return "\n".join(lines)


__all__ = ["main", "options_markdown"]
