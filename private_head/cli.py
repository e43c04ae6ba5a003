"""``python -m private_head``: train a head on a store's train split, evaluate it on the test split.

    python -m private_head --features features/digits-pixels.h5 --epsilon 4

prints the accuracy and the privacy report and writes the head (``.npz``) and a JSON result next to
the features (or in ``--out-dir``): ``<store>.<method>.eps<epsilon>.{npz,json}``. ``--epsilon inf``
trains the ``nonprivate`` ceiling. Without ``--delta`` the budget uses ``delta = min(1e-5, 1/(2N))``
for N training rows. Bad input ends with a one-line message and exit status 2. With several
processes (``--coordinator HOST:PORT --num-processes P --process-id I``, the ``JAX_*`` environment
variables, or ``--distributed``) each process trains on its share of the rows and process 0
writes the outputs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax

from feature_extract import multihost, store
from private_head.api import fit
from private_head.config import LOSSES, OPTIMIZERS
from private_head.head import PrivateHead
from private_head.methods import available_methods

EVAL_CHUNK_ROWS = 65536


def _epsilon(text: str) -> float:
    value = float(text)
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"epsilon must be > 0 or inf, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m private_head",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--features", required=True, help="feature store file (.h5)")
    p.add_argument(
        "--epsilon", type=_epsilon, required=True, help="privacy budget; inf: nonprivate"
    )
    p.add_argument("--delta", type=float, help="default: min(1e-5, 1/(2N)), N training rows")
    p.add_argument(
        "--method",
        help="default single_step (nonprivate when epsilon is inf); "
        f"one of {', '.join(available_methods())}",
    )
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--clip-norm", type=float, default=1.0)
    p.add_argument("--learning-rate", type=float, default=1.0)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--loss", choices=LOSSES, default="softmax")
    p.add_argument("--train-bias", action="store_true", help="train the bias (default: fixed)")
    p.add_argument("--feature-norm", type=float, default=1.0, help="rows are scaled to this norm")
    p.add_argument(
        "--center",
        choices=("none", "private"),
        default="none",
        help="private: subtract a noisy mean of the training rows (charged)",
    )
    p.add_argument(
        "--seed",
        type=int,
        help="noise seed (default: OS randomness; the report then says seeded: false)",
    )
    p.add_argument(
        "--max-device-bytes",
        type=int,
        help="stream the training rows from the store when they exceed this size",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option, e.g. --option batch_size=256 for dp_sgd (VALUE is read "
        "as JSON when it parses, else as a string); repeatable",
    )
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--out-dir", help="where the head and JSON go (default: next to the features)")
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


def default_delta(num_rows: int) -> float:
    """min(1e-5, 1 / (2N)): below 1/N, the usual requirement for a meaningful delta."""
    return min(1e-5, 1.0 / (2 * num_rows))


def evaluate(head: PrivateHead, path: str, split: str) -> dict[str, Any]:
    """Top-1/top-5 accuracy on a store split, read in chunks; None when the split is absent."""
    if split not in store.split_names(path):
        return {"split": split, "num_rows": 0, "top1": None, "top5": None}
    counts, total = {"top1": 0.0, "top5": 0.0}, 0
    with store.SplitReader(path, split) as reader:
        for x, y in reader.iter_chunks(EVAL_CHUNK_ROWS):
            acc = head.accuracy(x, y)
            for k in counts:
                counts[k] += acc[k] * len(y)
            total += len(y)
    if total == 0:
        raise ValueError(f"split {split!r} of {path} is empty; nothing to evaluate")
    return {"split": split, "num_rows": total, **{k: v / total for k, v in counts.items()}}


def output_stem(features: str, method: str, epsilon: float, out_dir: str | None) -> str:
    """``<dir>/<store name>.<method>.eps<epsilon>`` (epsilon as ``%g``: eps4, eps0.5, epsinf)."""
    base = os.path.splitext(os.path.basename(features))[0]
    folder = out_dir if out_dir is not None else os.path.dirname(features)
    return os.path.join(folder, f"{base}.{method}.eps{epsilon:g}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate, write the head and the JSON result; returns the result."""
    path = args.features
    info = store.split_info(path, args.train_split)
    method = args.method or ("nonprivate" if math.isinf(args.epsilon) else "single_step")
    if math.isinf(args.epsilon) and method != "nonprivate":
        raise ValueError(
            f"--epsilon inf trains the nonprivate ceiling; method {method!r} needs a finite epsilon"
        )
    delta_rule = "given" if args.delta is not None else "default min(1e-5, 1/(2N))"
    delta = args.delta if args.delta is not None else default_delta(info.num_rows)
    options: dict[str, Any] = {
        "weight_decay": args.weight_decay,
        "loss": args.loss,
        "train_bias": args.train_bias,
        "feature_norm": args.feature_norm,
        "center": args.center,
        "max_device_bytes": args.max_device_bytes,
        **method_options(args.option),
    }
    head = fit(
        f"{path}:{args.train_split}",
        num_classes=info.num_classes,
        epsilon=args.epsilon,
        delta=delta,
        method=method,
        steps=args.steps,
        clip_norm=args.clip_norm,
        learning_rate=args.learning_rate,
        optimizer=args.optimizer,
        seed=args.seed,
        **options,
    )
    if jax.process_index() != 0:  # several processes: the head is the same; process 0 writes it
        return {"privacy": head.privacy}
    stem = output_stem(path, method, args.epsilon, args.out_dir)
    if os.path.dirname(stem):
        os.makedirs(os.path.dirname(stem), exist_ok=True)
    result = {
        "features": path,
        "train_split": args.train_split,
        "num_train": info.num_rows,
        "num_classes": info.num_classes,
        "delta_rule": delta_rule,
        "test": evaluate(head, path, args.test_split),
        "privacy": head.privacy,
        "config": head.config.to_dict(),
        "head_file": head.save(stem + ".npz"),
        "result_file": stem + ".json",
    }
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    return result


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def summary(result: dict[str, Any]) -> str:
    """The lines printed after a run."""
    p, test = result["privacy"], result["test"]
    lines = [
        f"features  {result['features']} (train: {result['num_train']} rows, "
        f"{result['num_classes']} classes)"
    ]
    if test["top1"] is None:
        lines.append(f"test      no split {test['split']!r}: not evaluated")
    else:
        lines.append(
            f"test      top-1 {test['top1']:.4f}  top-5 {test['top5']:.4f} "
            f"({test['num_rows']} rows of {test['split']!r})"
        )
    lines.append(
        f"privacy   method {p['method']}: epsilon {_num(p['epsilon_spent'])} of "
        f"{_num(p['epsilon_budget'])}, delta {p['delta']:g} ({result['delta_rule']}), "
        f"mu {_num(p['mu'])}, accountant {p['accountant']}, seeded {p['seeded']}"
    )
    for r in p["releases"]:
        if r.get("kind") == "event":
            lines.append(f"  release {r['name']}: {r['event']}")
            continue
        lines.append(
            f"  release {r['name']}: sensitivity {_num(r['sensitivity'])}, noise std "
            f"{_num(r['noise_std'])}, noise multiplier {_num(r['noise_multiplier'])}, "
            f"count {r['count']}"
        )
    lines.append(f"wrote     {result['head_file']} and {result['result_file']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        multihost.initialize_from_args(args)
        result = run(args)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if "head_file" in result:
        print(summary(result))
    return 0
