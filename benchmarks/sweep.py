"""Accuracy across privacy budgets: every registered head method x epsilon grid x noise seeds.

For each dataset (a feature store, the bundled ``digits`` store, or a synthetic preset) the sweep
trains ``private_head.fit(method=m, epsilon=e, delta=delta, seed=s)`` for every registered method
``m`` (``private_head.available_methods()``), every finite ``e`` of the grid and seeds
``0 .. seeds-1``, and evaluates top-1/top-5 on the test split. Conventions:

- ``epsilon = inf`` runs the ``nonprivate`` method only (it is the only method defined there);
  it is deterministic (L-BFGS to convergence), so it runs once, with seed 0.
- ``delta`` defaults to ``min(1e-5, 1 / (2 N))`` with N the training rows; tables and JSON state it.
- Hyperparameters are the fixed defaults of ``METHOD_SETTINGS`` below: nothing is tuned on the
  test split. A method without an entry runs with ``fit``'s defaults. The column
  ``hyperparameter_selection`` says ``fixed`` (chosen before seeing any data) or ``private``
  (the ``SELECTIONS`` pseudo-methods: chosen by ``private_head.select``, an accounted private
  selection on a validation part of the training rows, charged to the same budget); ``public``
  is reserved for choices made on public data.
- The data are fixed per dataset; seeds vary only the privacy noise (seeded runs: reproducible).
  Every row records the epsilon and delta the ledger reports as spent, the noise multiplier(s),
  the steps and the wall time of ``fit`` (which includes JIT compilation the first time a shape
  is seen).
- A non-private scikit-learn logistic regression on the same L2-normalised rows is the
  independent ceiling (``CEILING_C`` below, fixed).
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks import synthetic

DEFAULT_EPSILONS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, math.inf)
DEFAULT_SEEDS = 5
DEFAULT_DIGITS_STORE = "features/digits-pixels.h5"
NONPRIVATE = "nonprivate"

# Fixed per-method hyperparameters (keyword arguments of private_head.fit). Chosen once, before the
# benchmarks ran, from the literature's recipes and one check on an independent draw (seed 1) of the
# cifar10-like preset at scale 0.05 -- never on a benchmark's test split:
# - single_step: one full-batch step from zero init, clip 1 (the scale of W does not change argmax).
# - dp_gd: 10 full-batch SGD steps at learning rate 10 on unit-norm rows (from zero init the first
#   step is the single step; the next ones use the softmax's feedback).
# - dp_sgd: Poisson sampling with expected batch N/10 ("batch_fraction", resolved per dataset by
#   settings_for), 50 steps (5 epochs), SGD at learning rate 5.
# - dp_feature_covariance: the dp_gd settings (10 SGD steps at learning rate 10) in the whitened
#   space.
# Others (dp_least_squares, dp_prototypes, nonprivate, later methods) use their method defaults.
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "single_step": {"steps": 1, "clip_norm": 1.0, "learning_rate": 1.0},
    "dp_gd": {"steps": 10, "optimizer": "sgd", "learning_rate": 10.0, "clip_norm": 1.0},
    "dp_sgd": {
        "steps": 50,
        "batch_fraction": 0.1,
        "optimizer": "sgd",
        "learning_rate": 5.0,
        "clip_norm": 1.0,
    },
    "dp_feature_covariance": {"steps": 10, "optimizer": "sgd", "learning_rate": 10.0},
}
# Accounted private hyperparameter selection (issue 6), run as pseudo-methods of the sweep: each
# trains the candidates (fit keywords) on the training part and picks one by report-noisy-max on
# a validation part of the private training rows (``private_head.select``), the whole cost in one
# ledger. Its rows say hyperparameter_selection "private". Not in the default method list (it
# trains every candidate at every epsilon and seed); ask for it with --methods.
SELECTIONS: dict[str, dict[str, Any]] = {
    "dp_gd+select_lr": {
        "candidates": [
            {"method": "dp_gd", "steps": 10, "optimizer": "sgd", "learning_rate": lr}
            for lr in (1.0, 10.0, 100.0)
        ],
        "mechanism": "noisy_max",
    },
}
CEILING_C = 1.0  # inverse L2 strength of the scikit-learn ceiling (its default), fixed

# The default suite of `make bench`: (kind, name, scale), with DEFAULT_SUITE_SEEDS noise seeds.
# Sized to finish in under 10 minutes on 2 CPU cores; with the Poisson calibration memoised and the
# training loops compiled once per shape, 5 seeds take a few minutes (README, Results).
DEFAULT_SUITE_SEEDS = DEFAULT_SEEDS
DEFAULT_SUITE = (
    ("digits", "digits", 1.0),
    ("synthetic", "cifar10-like", 0.2),
    ("synthetic", "anisotropic", 0.2),
)

COLUMNS = (
    "dataset",
    "method",
    "epsilon",
    "seed",
    "top1",
    "top5",
    "epsilon_spent",
    "delta",
    "sigma",
    "steps",
    "wall_s",
    "device",
    "hyperparameter_selection",
    "num_train",
    "num_test",
    "dim",
    "num_classes",
    "error",
)


@dataclass(frozen=True)
class Dataset:
    """Train and test rows of one benchmark dataset (features float32, labels int32)."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    source: str

    @property
    def shape(self) -> dict[str, int]:
        return {
            "num_train": len(self.train_y),
            "num_test": len(self.test_y),
            "dim": int(self.train_x.shape[1]),
            "num_classes": self.num_classes,
        }


@dataclass
class SweepResult:
    """Rows (one per dataset, method, epsilon, seed), ceilings per dataset, and run metadata."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    ceilings: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def default_delta(num_train: int) -> float:
    """``min(1e-5, 1 / (2 N))``: at most one in 2N examples' privacy may fail outright."""
    return min(1e-5, 1.0 / (2 * num_train))


def load_store(
    path: str, train_split: str = "train", test_split: str = "test", name: str | None = None
) -> Dataset:
    """A dataset from a feature store's train and test splits (``path`` or ``path:train``)."""
    from feature_extract.store import parse_store_path, read_split

    path, split = parse_store_path(path, train_split)
    train_x, train_y, info = read_split(path, split)
    test_x, test_y, _ = read_split(path, test_split)
    label = name or os.path.splitext(os.path.basename(path))[0]
    return Dataset(
        label,
        train_x.astype(np.float32),
        train_y,
        test_x.astype(np.float32),
        test_y,
        info.num_classes,
        f"store {path} ({split}/{test_split})",
    )


def load_digits(path: str = DEFAULT_DIGITS_STORE) -> Dataset:
    """The bundled digits store (raw pixels), extracted with ``feature_extract`` if missing."""
    if not os.path.exists(path):
        from feature_extract.__main__ import main as extract_main

        code = extract_main(
            [
                "--data",
                "digits",
                "--model",
                "pixels",
                "--out",
                path,
                "--no-progress",
                "--no-download",
            ]
        )
        if code:
            raise RuntimeError(
                f"building the digits store {path} failed (exit {code}); run "
                f"`make features` to see why"
            )
    return load_store(path, name="digits")


def load_synthetic(preset: str, scale: float = 1.0, seed: int = 0) -> Dataset:
    """A synthetic preset (``benchmarks.synthetic``) shrunk by ``scale``."""
    spec = synthetic.preset(preset, scale, seed)
    data = synthetic.generate(spec)
    name = preset if scale == 1 else f"{preset}@{scale:g}"
    return Dataset(
        name,
        data.train_x,
        data.train_y,
        data.test_x,
        data.test_y,
        data.num_classes,
        f"synthetic {spec}",
    )


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-``min(5, K)`` accuracy of class scores [N, K] (ties by class index)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, : min(5, scores.shape[1])]
    return {
        "top1": float(np.mean(top[:, 0] == labels)),
        "top5": float(np.mean((top == labels[:, None]).any(axis=1))),
    }


def sklearn_ceiling(data: Dataset) -> dict[str, Any]:
    """Non-private multinomial logistic regression (scikit-learn, L-BFGS, ``C = CEILING_C``) on the
    L2-normalised rows: an implementation independent of ``private_head``."""
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    model = LogisticRegression(C=CEILING_C, max_iter=1000)
    model.fit(_normalise(data.train_x), data.train_y)
    wall = time.perf_counter() - start
    scores = np.full((len(data.test_y), data.num_classes), -np.inf)
    scores[:, model.classes_] = model.predict_proba(_normalise(data.test_x))
    return {
        **topk_accuracy(scores, data.test_y),
        "wall_s": wall,
        "model": f"sklearn LogisticRegression(C={CEILING_C})",
    }


def device_name() -> str:
    """The JAX device the heads ran on, e.g. ``cpu x1 (2 cores)`` or ``NVIDIA H100 x1``."""
    import jax

    devices = jax.devices()
    kind = devices[0].platform if devices[0].platform == "cpu" else devices[0].device_kind
    cores = f" ({os.cpu_count()} cores)" if devices[0].platform == "cpu" else ""
    return f"{kind} x{len(devices)}{cores}"


def _sigma(releases: Sequence[dict[str, Any]]) -> float | str | None:
    """The noise multiplier: one number when every release shares it, else ``a;b;...``."""
    values = [r.get("noise_multiplier") for r in releases if r.get("noise_multiplier") is not None]
    distinct = list(dict.fromkeys(values))
    if not distinct:
        return None
    return distinct[0] if len(distinct) == 1 else ";".join(f"{v:.6g}" for v in distinct)


def settings_for(method: str, num_train: int) -> dict[str, Any]:
    """``METHOD_SETTINGS[method]`` as ``fit`` keywords; ``batch_fraction`` f becomes
    ``batch_size = max(1, round(f N))``."""
    settings = dict(METHOD_SETTINGS.get(method, {}))
    if "batch_fraction" in settings:
        settings["batch_size"] = max(1, round(settings.pop("batch_fraction") * num_train))
    return settings


def plan(
    methods: Sequence[str], epsilons: Sequence[float], seeds: int
) -> list[tuple[str, float, int]]:
    """The (method, epsilon, seed) runs: private methods at finite epsilons, ``nonprivate`` at
    infinity (once, it is deterministic)."""
    runs = []
    for eps in epsilons:
        for method in methods:
            if math.isinf(eps) != (method == NONPRIVATE):
                continue
            runs += [(method, eps, seed) for seed in range(1 if math.isinf(eps) else seeds)]
    return runs


def run_one(
    data: Dataset, method: str, epsilon: float, delta: float, seed: int, device: str
) -> dict[str, Any]:
    """Train one head and evaluate it; a failure is recorded in ``error``, not raised."""
    import private_head

    settings = settings_for(method, len(data.train_y))
    row: dict[str, Any] = {
        "dataset": data.name,
        "method": method,
        "epsilon": epsilon,
        "seed": seed,
        "device": device,
        "delta": delta,
        "hyperparameter_selection": "private" if method in SELECTIONS else "fixed",
        **data.shape,
        "steps": settings.get("steps", 1),
        "error": "",
    }
    try:
        start = time.perf_counter()
        train = private_head.select if method in SELECTIONS else private_head.fit
        options = SELECTIONS.get(method, {"method": method, **settings})
        head = train(
            data.train_x,
            data.train_y,
            num_classes=data.num_classes,
            epsilon=epsilon,
            delta=delta,
            seed=seed,
            **options,
        )
        row["wall_s"] = time.perf_counter() - start
        row.update(head.accuracy(data.test_x, data.test_y))
    except Exception as err:  # noqa: BLE001 - a failed run is reported, the sweep goes on
        row["error"] = f"{type(err).__name__}: {err}"
        return row
    privacy = head.privacy
    spent = privacy.get("epsilon_spent")
    row["epsilon_spent"] = math.inf if spent == "inf" else spent
    row["delta"] = privacy.get("delta", delta)
    row["sigma"] = _sigma(privacy.get("releases", []))
    row["steps"] = head.config.steps
    return row


def use_compilation_cache(path: str | None) -> None:
    """Keep XLA executables in JAX's persistent cache at ``path`` (None: leave JAX's setting).

    Methods jit their loops per call, so without the cache every ``fit`` compiles again; with it,
    a repeated (method, shape) costs tracing only (about 10x faster on CPU for these sweeps).
    """
    import jax

    if path is None or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run_sweep(
    datasets: Sequence[Dataset],
    *,
    methods: Sequence[str] | None = None,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    seeds: int = DEFAULT_SEEDS,
    delta: float | None = None,
    ceiling: bool = True,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Run every (dataset, method, epsilon, seed) of the grid; see the module docstring."""
    import private_head

    registered = private_head.available_methods()
    known = registered + (list(SELECTIONS) if hasattr(private_head, "select") else [])
    methods = list(registered if methods is None else methods)
    unknown = sorted(set(methods) - set(known))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; registered: {', '.join(known)}")
    if seeds < 1 or not epsilons or any(not e > 0 for e in epsilons):
        raise ValueError(f"need seeds >= 1 and epsilons > 0; got {seeds}, {list(epsilons)}")
    device = device_name()
    result = SweepResult(meta=run_metadata(methods, epsilons, seeds, delta, device))
    for data in datasets:
        data_delta = default_delta(len(data.train_y)) if delta is None else delta
        result.datasets[data.name] = {
            **data.shape,
            "delta": data_delta,
            "source": data.source,
            "delta_rule": "min(1e-5, 1/(2N))" if delta is None else "given",
        }
        if ceiling:
            result.ceilings[data.name] = sklearn_ceiling(data)
            log(f"[{data.name}] sklearn ceiling top1={result.ceilings[data.name]['top1']:.4f}")
        for method, eps, seed in plan(methods, epsilons, seeds):
            row = run_one(data, method, eps, data_delta, seed, device)
            result.rows.append(row)
            status = row["error"] or f"top1={row['top1']:.4f} ({row['wall_s']:.2f}s)"
            log(f"[{data.name}] {method} eps={eps:g} seed={seed}: {status}")
    return result


def run_metadata(
    methods: Sequence[str], epsilons: Sequence[float], seeds: int, delta: float | None, device: str
) -> dict[str, Any]:
    """What a reader needs to reproduce the run: grid, settings, device, versions, command."""
    import jax
    import sklearn

    return {
        "methods": list(methods),
        "epsilons": [_json_number(e) for e in epsilons],
        "seeds": seeds,
        "delta": "min(1e-5, 1/(2N))" if delta is None else delta,
        "method_settings": {m: SELECTIONS.get(m, METHOD_SETTINGS.get(m, {})) for m in methods},
        "hyperparameters": "fixed defaults (benchmarks/sweep.py METHOD_SETTINGS), not tuned "
        "on the test split",
        "ceiling": f"sklearn LogisticRegression(C={CEILING_C}) on L2-normalised rows",
        "device": device,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu(s)",
        "python": platform.python_version(),
        "jax": jax.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _json_number(x: float) -> float | str:
    return "inf" if math.isinf(x) else x


def default_datasets(scale: float | None = None) -> list[Dataset]:
    """The datasets of ``make bench`` (``DEFAULT_SUITE``); ``scale`` overrides synthetic scales."""
    out = []
    for kind, name, preset_scale in DEFAULT_SUITE:
        out.append(
            load_digits()
            if kind == "digits"
            else load_synthetic(name, preset_scale if scale is None else scale)
        )
    return out
