"""``fit``: route the options, open the rows, plan and charge every release, run, and report.

    fit(x, y, num_classes=K, epsilon=4, delta=1e-6)  ->  PrivateHead

The steps (docs/architecture.md, "What fit does"):

1. the options are sorted into the method's option type and the shared types (``options``);
   the fit's whole budget is reserved in the dataset's budget across runs, which refuses it when
   the total would pass the dataset's cap (``spending``), before any row is read;
2. the rows are opened (``rows.open_rows``): shapes, dtype and labels checked, nothing released;
3. the divisor n: the caller's public ``dataset_size``, or the noisy count ``N + N(0, 1 / mu_n^2)``
   (planned, charged, released first; rounded, at least 1);
4. with ``center="private"``, the private mean of the bounded rows (planned, charged, released:
   a sum of sensitivity r, divided by n);
5. the method plans its releases from public information and the allowance left; the whole plan
   is charged to the ledger (which refuses to overspend) before the method runs;
6. the method runs; every planned draw must have been made; what the ledger spent is recorded
   in the dataset's budget.

Budget shares are fractions of the total mu^2 (``budget.split_mu``): ``count_budget_fraction``
to the count, ``center_budget_fraction`` to the mean, the rest to the method. The report never
holds the true row count. ``head.performance`` holds the caller's ``Performance`` options only;
how the rows were read (in place, streamed, the chunk sizes, the passes) and the wall time
depend on the row count and go to ``head.operator_log``, never saved and not to be published
(docs/architecture.md, "The whole artefact").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from accounting import PrivacyLedger
from private_head._budget import Allowance, Ledger, remaining_allowance, split_mu
from private_head._head import PrivateHead
from private_head._keys import noise_key
from private_head._methods import Context, Method, PublicInfo, get_method
from private_head._options import DatasetSize, Options, Performance, Preprocess, route
from private_head._plan import Plan, PlannedRelease, Releaser
from private_head._preprocessing import Preprocessing
from private_head._rows import Rows, open_rows
from private_head._spending import budget_target, dataset_spending
from private_head._statistics import RowSum

COUNT, CENTER = "dataset_size/noisy_count", "center/row_sum"
OPERATOR_NOTE = (
    "operator information: how this machine read the rows and how long it took. It depends on "
    "the private data (the row count among it), is not covered by the privacy guarantee and must "
    "not be published."
)
ADJACENCY = (
    "add_or_remove_one: the guarantee hides whether any one row (features and label) is in the "
    "training data, its presence included; nothing released depends on the true row count except "
    "through charged releases. Replace-one adjacency: twice the reported mu (GDP)."
)


def make_ledger(epsilon: float, delta: float) -> PrivacyLedger:
    """The budget as a ledger; an (epsilon, delta) no finite noise can meet is a ValueError."""
    try:
        return PrivacyLedger(float(epsilon), float(delta))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"the budget epsilon={epsilon}, delta={delta} cannot be met: {err}"
        ) from err


def check_budget(method: Method, epsilon: Any, delta: Any) -> tuple[float, float]:
    """``epsilon = inf`` exactly for the non-private method; delta in (0, 1)."""
    try:
        epsilon, delta = float(epsilon), float(delta)
    except (TypeError, ValueError):
        raise ValueError(f"epsilon and delta must be numbers, got {epsilon!r}, {delta!r}") from None
    if not epsilon > 0:
        raise ValueError(
            f"epsilon must be > 0 (math.inf only for method='nonprivate'), got {epsilon}"
        )
    if math.isinf(epsilon) == method.private:
        raise ValueError(
            "epsilon=math.inf is accepted only with method='nonprivate', and 'nonprivate' needs "
            f"epsilon=math.inf (got method={method.name!r}, epsilon={epsilon})."
        )
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    return epsilon, delta


@dataclass(frozen=True)
class Trained:
    """A trained head with everything its report needs."""

    weights: np.ndarray
    bias: np.ndarray
    preprocessing: Preprocessing
    settings: dict[str, Any]
    dataset_size: dict[str, Any]
    plan: Plan
    details: dict[str, Any]


def preprocessing_of(opts: Preprocess, public_mean: Any, dim: int) -> Preprocessing:
    """The map before any private statistic (the private mean is filled in later)."""
    kind = "normalize" if opts.normalize else "shrink"
    if opts.center == "public" or public_mean is not None:
        if public_mean is None:
            raise ValueError("center='public' needs public_mean (a [D] vector from public data)")
        if opts.center == "private":
            raise ValueError("public_mean was given with center='private'; choose one")
        mean = np.asarray(public_mean, dtype=np.float32)
        if mean.shape != (dim,):
            raise ValueError(f"public_mean must have shape ({dim},), got {mean.shape}")
        if not np.isfinite(mean).all():
            raise ValueError("public_mean holds NaN or infinite values")
        return Preprocessing(kind, opts.feature_norm, "public", mean)
    return Preprocessing(kind, opts.feature_norm)


def train(
    rows: Rows,
    method: Method,
    options: Options,
    preprocess: Preprocess,
    size: DatasetSize,
    ledger: Ledger,
    key: jax.Array,
    *,
    public_mean: Any = None,
    size_scale: float = 1.0,
    observer: Any = None,
) -> Trained:
    """Steps 3-6 of the module docstring on ``rows`` against ``ledger``; ``size_scale`` scales
    the divisor (a public fraction of the rows, e.g. select's training part)."""
    pre = preprocessing_of(preprocess, public_mean, rows.dim)
    private = not math.isinf(ledger.mu_budget)
    shares = {}
    if private and size.dataset_size is None:
        shares["count"] = size.count_budget_fraction
    if preprocess.center == "private" and private:
        shares["center"] = preprocess.center_budget_fraction
    mu = split_mu(remaining_allowance(ledger).mu, shares, rest="method") if shares else {}
    keys = jax.random.split(key, 3)

    n, size_report = _divisor(rows, size, ledger, mu.get("count"), keys[0], private, observer)
    n *= size_scale
    if preprocess.center == "private":
        pre = _private_mean(rows, pre, ledger, mu.get("center"), n, keys[1], observer)
    public = PublicInfo(
        dim=rows.dim,
        num_classes=rows.num_classes,
        dataset_size=n,
        size_source=size_report["source"],
        epsilon=ledger.epsilon,
        delta=ledger.delta,
        feature_norm=pre.feature_norm,
        feature_dtype=rows.dtype.name,
    )
    allowance = (
        remaining_allowance(ledger) if private else Allowance(math.inf, math.inf, ledger.delta)
    )
    plan = method.plan(options, public, allowance)
    plan.charge(ledger)
    releaser = Releaser(plan, keys[2], observer)
    weights, bias = method.run(plan, rows, releaser, Context(public, pre))
    missing = releaser.unreleased()
    if missing:
        raise RuntimeError(f"method {method.name!r} charged draws it never made: {missing}")
    weights, bias = np.asarray(weights, np.float32), np.asarray(bias, np.float32)
    if weights.shape != (rows.dim, rows.num_classes) or bias.shape != (rows.num_classes,):
        raise RuntimeError(
            f"method {method.name!r} returned weights {weights.shape} and bias {bias.shape}; "
            f"expected ({rows.dim}, {rows.num_classes}) and ({rows.num_classes},)"
        )
    if private and not ledger.releases:
        raise RuntimeError(f"method {method.name!r} returned parameters without charging anything")
    if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
        raise ValueError(
            f"training with method {method.name!r} diverged (non-finite weights); lower the "
            "learning_rate or the number of steps"
        )
    settings = {
        "method": method.name,
        "options": options.to_dict(),
        "resolved": _plain(plan.settings),
        "preprocess": preprocess.to_dict(),
        "dataset_size": size.to_dict(),
    }
    details = method.details(plan) if method.details is not None else {}
    return Trained(weights, bias, pre, settings, size_report, plan, details)


def _divisor(
    rows: Rows, size: DatasetSize, ledger: Ledger, mu: float | None, key, private: bool, observer
) -> tuple[float, dict[str, Any]]:
    """The public divisor n and how it was obtained (never the true count)."""
    if size.dataset_size is not None:
        return float(size.dataset_size), {"source": "public", "value": size.dataset_size}
    if not private:  # the non-private ceiling: nothing is protected, nothing is reported
        return float(rows.global_rows), {"source": "true_count_not_private"}
    std = Allowance(mu, ledger.epsilon, ledger.delta).gaussian_std(1.0)
    plan = Plan((PlannedRelease(COUNT, 1.0, std),))
    plan.charge(ledger)
    released = Releaser(plan, key, observer).release(COUNT, np.float64(rows.global_rows))
    n = max(1.0, float(np.round(np.asarray(released, np.float64))))
    return n, {
        "source": "noisy_count",
        "value": n,
        "noise_std": std,
        "budget_fraction": size.count_budget_fraction,
    }


def _private_mean(rows, pre, ledger, mu, n, key, observer) -> Preprocessing:
    """The released mean ``(sum_i bound(x_i) + N(0, (r / mu_c)^2 I)) / n``."""
    bound = Preprocessing(pre.kind, pre.feature_norm)
    if math.isinf(ledger.mu_budget):  # the non-private ceiling: the exact mean
        total = rows.sum(RowSum(), None, bound)
        return Preprocessing(pre.kind, pre.feature_norm, "private", np.asarray(total) / n)
    r = pre.feature_norm
    std = Allowance(mu, ledger.epsilon, ledger.delta).gaussian_std(r)
    plan = Plan((PlannedRelease(CENTER, r, std),))
    plan.charge(ledger)
    total = Releaser(plan, key, observer).release(CENTER, rows.sum(RowSum(), None, bound))
    return Preprocessing(pre.kind, pre.feature_norm, "private", np.asarray(total) / n)


def _plain(value: Any) -> Any:
    """Settings as JSON-able values (option types, NamedTuples, nested dicts)."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def privacy_report(
    ledger: Ledger, method: Method, seeded: bool, trained: Trained
) -> dict[str, Any]:
    """The privacy report: the ledger's composition plus what the guarantee covers."""
    report = {
        **ledger.report(),
        "adjacency": "add_or_remove_one",
        "adjacency_detail": ADJACENCY,
        "private": method.private,
        "method": method.name,
        "seeded": seeded,
        "dataset_size": trained.dataset_size,
        **trained.details,
    }
    if not method.private:
        report.update(epsilon_spent="inf", mu="inf")
    return report


def operator_log(rows: Rows, started: float) -> dict[str, Any]:
    """The fit's operator log (module docstring): the data path and the wall time since
    ``started`` (``time.perf_counter``), marked ``publish: false``."""
    seconds = time.perf_counter() - started
    return {"publish": False, "note": OPERATOR_NOTE, **rows.describe(), "seconds": seconds}


def fit(
    features: Any,
    labels: Any = None,
    *,
    num_classes: int,
    epsilon: float,
    delta: float,
    method: str = "single_step",
    seed: int | None = None,
    public_mean: Any = None,
    split: str = "train",
    total_epsilon: float | None = None,
    budget_file: Any = None,
    **options: Any,
) -> PrivateHead:
    """Train a differentially private linear head and return it with its report.

    ``features``: an array [N, D] (float32, float16 or bfloat16; numpy or jax) with ``labels``
    [N], or a store path ``"file.h5:train"`` (``split`` when the path names none).
    ``num_classes`` is required: the label space is public. ``epsilon = math.inf`` only with
    ``method="nonprivate"``. ``options`` are the method's own (``describe_options(method)``) and
    the shared ones (``Preprocess``, ``DatasetSize``, ``Performance``); anything else is an error.
    The noise key comes from 64 bits of the OS secure random source unless ``seed`` is given
    (the report then says ``seeded: true``). A fit on a store records what it spends in the
    store's budget file (``budget_file=`` sets another, or one for arrays); ``total_epsilon``
    caps the dataset's total across runs, and a fit that would pass the cap is refused before
    it reads a row (``private_head._spending``).
    """
    started = time.perf_counter()
    chosen = get_method(method)
    epsilon, delta = check_budget(chosen, epsilon, delta)
    method_options, preprocess, size, performance = route(method, chosen.options, options)
    ledger = make_ledger(epsilon, delta)
    key, seeded = noise_key(seed)
    path, read_split = budget_target(features, split, budget_file)
    spending = dataset_spending(
        path,
        total_epsilon,
        method=chosen,
        split=read_split,
        epsilon=epsilon,
        delta=delta,
        seeded=seeded,
    )
    with spending as settle:  # the dataset's budget is charged before a row is read
        rows = open_rows(
            features,
            labels,
            num_classes=num_classes,
            feature_norm=preprocess.feature_norm,
            split=split,
            performance=performance,
        )
        trained = train(
            rows, chosen, method_options, preprocess, size, ledger, key, public_mean=public_mean
        )
        settle(ledger)
    return PrivateHead(
        trained.weights,
        trained.bias,
        trained.preprocessing,
        privacy_report(ledger, chosen, seeded, trained),
        trained.settings,
        performance.to_dict(),
        operator_log(rows, started),
    )


__all__ = ["Performance", "fit", "train"]
