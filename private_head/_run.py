"""One training run of the command line: refuse a rerun that would replace another choice's
head, train, evaluate, write the files (docs/architecture.md, "The command line").

    stem = <out dir>/<features file name>.<method>.eps<epsilon>
    <stem>.npz           the head (its privacy statement beside it: <stem>.privacy.md)
    <stem>.json          the result: the choice, the test accuracy, the reports, the budget
    <stem>.operator.json the operator log ("publish": false)

**The choice** is what the user chose: the method, every option with its default filled in, the
budget (epsilon, delta), the data (the features and labels given, the train split) and the seed;
never what a run derives from its releases (a learning rate from the noisy count). A rerun with
the same choice replaces the files (a new draw of the same mechanism); another choice is refused
before a row is read, unless ``--overwrite``. Every file is written under a temporary name and
renamed into place, so an interrupted run leaves whole files or none.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import jax

from accounting.budget_file import BudgetFile
from private_head._api import fit
from private_head._arguments import TrainData
from private_head._atomic import write_text_atomically
from private_head._head import PrivateHead
from private_head._options import route
from private_head._registry import get_method
from private_head._statement import statement_path

DEFAULT_DELTA = 1e-5
OPERATOR_SUFFIX = ".operator.json"


def default_delta(dataset_size: int | None) -> tuple[float, str]:
    """``(delta, rule)``: ``min(1e-5, 1/(2n))`` for a public size n, else 1e-5 (the true N is
    private, so it cannot pick delta)."""
    if dataset_size is None:
        return DEFAULT_DELTA, "default 1e-5 (no public dataset size; pass --delta well below 1/N)"
    return min(DEFAULT_DELTA, 1.0 / (2 * dataset_size)), "default min(1e-5, 1/(2n)), n public"


def output_stem(features: str, method: str, epsilon: float, out_dir: str | None) -> str:
    """``<dir>/<features file name>.<method>.eps<epsilon>`` (epsilon as ``%g``: eps4, eps0.5,
    epsinf)."""
    base = os.path.splitext(os.path.basename(features))[0]
    folder = out_dir if out_dir is not None else os.path.dirname(features)
    return os.path.join(folder, f"{base}.{method}.eps{epsilon:g}")


def user_choice(
    args: argparse.Namespace, data: TrainData, method: str, delta: float, options: dict[str, Any]
) -> dict[str, Any]:
    """The choice of the module docstring, as JSON data (the options validated and their
    defaults filled in: a ValueError names a bad one)."""
    routed = route(method, get_method(method).options, options)
    choice = {
        "method": method,
        "options": {kind: value.to_dict() for kind, value in routed._asdict().items()},
        "epsilon": "inf" if math.isinf(args.epsilon) else args.epsilon,
        "delta": delta,
        "data": {"features": data.train.spec, "labels": data.train.labels},
        "seed": args.seed,
    }
    return json.loads(json.dumps(choice))


def _changed(earlier: Any, now: Any, path: str = "") -> list[str]:
    """The fields where two choices differ, as ``path: earlier -> now``."""
    if isinstance(earlier, dict) and isinstance(now, dict):
        keys = sorted(set(earlier) | set(now))
        return [c for k in keys for c in _changed(earlier.get(k), now.get(k), f"{path}.{k}")]
    return [] if earlier == now else [f"{path.lstrip('.')}: {earlier!r} -> {now!r}"]


def refuse_other_choice(json_path: str, choice: dict[str, Any], overwrite: bool) -> None:
    """A ValueError when ``json_path`` holds a run of another choice (module docstring)."""
    if overwrite or not os.path.exists(json_path):
        return
    try:
        with open(json_path) as f:
            earlier = json.load(f)["choice"]
        changed = _changed(earlier, choice)
    except (OSError, ValueError, KeyError, TypeError):
        changed = ["(it records no choice)"]
    if changed:
        raise ValueError(
            f"{json_path} holds a head trained with other choices ({'; '.join(changed[:3])}); "
            "pass --overwrite to replace it (make probe ... OVERWRITE=1), or --out-dir to keep "
            "both"
        )


def evaluate(head: PrivateHead, data: TrainData) -> dict[str, Any]:
    """Top-1/top-5 accuracy on the test rows (public data), read in chunks."""
    if data.test is None:
        return {"split": None, "num_rows": 0, "top1": None, "top5": None}
    accuracy = head.accuracy(data.test.spec, data.test.labels)
    return {"split": data.test.name, "num_rows": data.test_rows, **accuracy}


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


def run(
    args: argparse.Namespace, data: TrainData, method: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Refuse, train, evaluate, write (module docstring); returns the result."""
    if args.delta is not None:
        delta, delta_rule = args.delta, "given"
    else:
        delta, delta_rule = default_delta(options.get("dataset_size"))
    stem = output_stem(data.file, method, args.epsilon, args.out_dir)
    choice = user_choice(args, data, method, delta, options)
    refuse_other_choice(stem + ".json", choice, args.overwrite)
    started = time.perf_counter()
    head = fit(
        data.train.spec,
        data.train.labels,
        num_classes=data.num_classes,
        epsilon=args.epsilon,
        delta=delta,
        method=method,
        seed=args.seed,
        total_epsilon=args.total_epsilon,
        budget_file=args.budget_file,
        progress=not args.quiet,
        **options,
    )
    if jax.process_index() != 0:  # several processes: the head is the same; process 0 writes it
        return {"privacy": head.privacy}
    result = {
        "choice": choice,
        "features": args.features,
        "train": data.train.name,
        "num_classes": data.num_classes,
        "delta_rule": delta_rule,
        "seed": args.seed,
        "test": evaluate(head, data),
        "privacy": head.privacy,
        "settings": head.settings,
        "performance": head.performance,
        "dataset_budget": dataset_budget(args.budget_file or data.file),
    }
    head_file = head.save(stem + ".npz")
    result.update(
        head_file=head_file, statement_file=statement_path(head_file), result_file=stem + ".json"
    )
    write_text_atomically(stem + ".json", json.dumps(result, indent=2, sort_keys=True))
    operator = {**head.operator_log, "command_seconds": time.perf_counter() - started}
    write_text_atomically(stem + OPERATOR_SUFFIX, json.dumps(operator, indent=2, sort_keys=True))
    result["operator"] = {**operator, "file": stem + OPERATOR_SUFFIX}
    return result


__all__ = [
    "OPERATOR_SUFFIX",
    "dataset_budget",
    "default_delta",
    "evaluate",
    "output_stem",
    "refuse_other_choice",
    "run",
    "user_choice",
]
