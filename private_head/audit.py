"""Empirical privacy audit: a statistical LOWER bound on the epsilon a mechanism really spends.

The audit plays the privacy game of the (epsilon, delta) definition. Two neighbouring datasets
differ by one worst-case "canary" example (add/remove adjacency): ``D`` and ``D' = D + canary``.
The real mechanism is run many times on each (vectorised with ``jax.vmap`` over noise keys), a
distinguishing test "canary present?" is applied to every output, and its error rates bound
epsilon from below. For any (epsilon, delta)-DP mechanism and any test (Kairouz et al. 2015),

    FPR + exp(eps) * FNR >= 1 - delta   and   FNR + exp(eps) * FPR >= 1 - delta,

so with one-sided Clopper-Pearson upper bounds FPR_hi, FNR_hi (each at level alpha/2, jointly
holding with probability >= 1 - alpha)

    eps_lb = max( log((1 - delta - FNR_hi) / FPR_hi),  log((1 - delta - FPR_hi) / FNR_hi) ),

clamped at 0 (Jagielski et al. 2020, "Auditing differentially private machine learning";
Nasr et al. 2021, "Adversary instantiation"). With probability >= 1 - alpha the true epsilon is at
least eps_lb; a correct mechanism therefore gives eps_lb <= claimed epsilon (except with
probability alpha), and eps_lb > claimed epsilon is evidence of a bug. The audit can only prove a
mechanism BROKEN; a low bound is not a proof of privacy.

The test statistic is the projection of the released gradient sum (or head weights) on the
canary's clipped-gradient direction; "canary present" is called when it lies beyond a threshold.
The orientation and the threshold are chosen on calibration runs and the bound is computed on
separate evaluation runs, so the search does not inflate the bound.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import beta

ReleaseFn = Callable[[Any, jax.Array], Any]


def clopper_pearson(successes: Any, trials: int, alpha: float = 0.05) -> tuple[Any, Any]:
    """Exact two-sided (1 - alpha) Clopper-Pearson interval for a binomial proportion.

    lo = Beta^-1(alpha/2; k, n - k + 1) (0 when k = 0), hi = Beta^-1(1 - alpha/2; k + 1, n - k)
    (1 when k = n). Each end alone is a one-sided bound at level alpha/2. ``successes`` may be
    an array (vectorised); floats are returned for scalar input.
    """
    k = np.asarray(successes, dtype=np.float64)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if trials < 1 or np.any(k < 0) or np.any(k > trials) or np.any(k != np.round(k)):
        raise ValueError(
            f"need integer successes in [0, trials] and trials >= 1; got "
            f"successes={successes}, trials={trials}"
        )
    with np.errstate(invalid="ignore"):
        lo = np.where(k > 0, beta.ppf(alpha / 2, k, trials - k + 1), 0.0)
        hi = np.where(k < trials, beta.ppf(1 - alpha / 2, k + 1, trials - k), 1.0)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def epsilon_lower_bound(
    fp_count: Any, fn_count: Any, trials_per_world: int, delta: float, alpha: float = 0.05
) -> Any:
    """Epsilon lower bound from a test's false positives and false negatives (module docstring).

    ``fp_count``: runs on D the test called "canary present"; ``fn_count``: runs on D' it called
    "absent"; both out of ``trials_per_world``. eps_lb = max(log((1-delta-FNR_hi)/FPR_hi),
    log((1-delta-FPR_hi)/FNR_hi)) with Clopper-Pearson upper bounds at level alpha/2 each,
    clamped at 0. Holds with probability >= 1 - alpha. Vectorised over the counts.
    """
    if not 0 <= delta < 1:
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    fpr_hi = clopper_pearson(fp_count, trials_per_world, alpha)[1]
    fnr_hi = clopper_pearson(fn_count, trials_per_world, alpha)[1]
    fpr_hi, fnr_hi = np.asarray(fpr_hi), np.asarray(fnr_hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.maximum(1 - delta - fnr_hi, 0.0)) - np.log(fpr_hi)
        b = np.log(np.maximum(1 - delta - fpr_hi, 0.0)) - np.log(fnr_hi)
    eps = np.maximum(
        np.maximum(np.nan_to_num(a, nan=0.0, neginf=0.0), np.nan_to_num(b, nan=0.0, neginf=0.0)),
        0.0,
    )
    return float(eps) if eps.ndim == 0 else eps


@dataclass(frozen=True)
class AuditResult:
    """Outcome of ``audit_mechanism``.

    ``epsilon_lower_bound`` holds with probability >= 1 - ``alpha``; ``fpr`` and ``fnr`` are the
    empirical error rates of the test ``orientation * statistic > threshold`` on the ``runs``
    evaluation runs per world (the calibration runs are not counted).
    """

    epsilon_lower_bound: float
    epsilon_claimed: float
    delta: float
    fpr: float
    fnr: float
    threshold: float
    orientation: int
    runs: int
    alpha: float

    @property
    def consistent(self) -> bool:
        """True when the measured lower bound does not contradict the claimed epsilon."""
        return self.epsilon_lower_bound <= self.epsilon_claimed


@dataclass(frozen=True)
class Neighbours:
    """Two datasets differing by one example: ``without`` = D, ``with_canary`` = D + canary.

    ``direction`` is a unit vector (a pytree shaped like the release) along which the canary moves
    the release; ``projection_statistic(direction)`` is the matching test statistic.
    """

    without: Any
    with_canary: Any
    direction: Any


def orthogonal_canary(
    features: Any,
    labels: Any,
    num_classes: int,
    clip_norm: float,
    *,
    canary_norm: float = 1.0,
    canary_label: int = 0,
    loss: str = "softmax",
    bias0: float = 0.0,
    train_bias: bool = False,
) -> Neighbours:
    """Worst-case neighbours: D = (X, y) and D' = D plus one canary row (x_c, y_c).

    x_c is a unit vector orthogonal to every row of X (the last right-singular vector of X), scaled
    to ``canary_norm``: no data row moves its logits, so the canary's gradient never interacts with
    theirs. At W = 0 its gradient is ``[x_c; 1] (p0 - onehot(y_c))^T`` with norm
    ``sqrt(||x_c||^2 + [train_bias]) ||p0 - onehot(y_c)||``; this must be >= C so that the clipped
    gradient has norm exactly C (the sensitivity). ``direction`` is that clipped gradient / C as
    ``(uW [D, K], ub [K])``, the direction the canary moves the released gradient sum.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"need features [N, D] and labels [N], got {x.shape} and {y.shape}")
    if not 0 <= canary_label < num_classes:
        raise ValueError(f"canary_label must lie in [0, {num_classes}), got {canary_label}")
    _, singular, vt = np.linalg.svd(x, full_matrices=True)
    rank = int(np.sum(singular > singular.max(initial=0.0) * 1e-6 * max(x.shape)))
    if rank >= x.shape[1]:
        raise ValueError(
            f"the {x.shape[0]} rows span all {x.shape[1]} dimensions: no canary is "
            "orthogonal to them; audit data of lower rank (or add a zero column)"
        )
    x_c = vt[-1] * canary_norm
    z0 = np.broadcast_to(np.asarray(bias0, np.float64), (num_classes,))
    p0 = (
        np.exp(z0 - z0.max()) / np.exp(z0 - z0.max()).sum()
        if loss == "softmax"
        else 1.0 / (1.0 + np.exp(-z0))
    )
    e_c = p0 - np.eye(num_classes)[canary_label]
    grad_norm = math.sqrt(canary_norm**2 + float(train_bias)) * float(np.linalg.norm(e_c))
    if grad_norm < clip_norm:
        raise ValueError(
            f"the canary's gradient norm {grad_norm:.4g} is below clip_norm="
            f"{clip_norm}, so it is not worst-case; raise canary_norm or lower "
            "clip_norm"
        )
    u_w = np.outer(x_c, e_c) / grad_norm
    u_b = e_c / grad_norm if train_bias else np.zeros(num_classes)
    dtype = np.asarray(features).dtype
    with_canary = (
        np.concatenate([np.asarray(features), x_c[None].astype(dtype)]),
        np.concatenate([y, [canary_label]]).astype(np.int32),
    )
    return Neighbours(
        without=(np.asarray(features), y.astype(np.int32)),
        with_canary=with_canary,
        direction=(u_w.astype(np.float32), u_b.astype(np.float32)),
    )


def projection_statistic(direction: Any) -> Callable[[Any], jax.Array]:
    """Statistic <release, direction> summed over the leaves of the pytrees (a scalar)."""

    def statistic(release: Any) -> jax.Array:
        parts = jax.tree.map(
            lambda r, d: jnp.vdot(jnp.asarray(r, jnp.float32), jnp.asarray(d, jnp.float32)),
            release,
            direction,
        )
        return sum(jax.tree.leaves(parts))

    return statistic


AUDITABLE = (
    "single_step",
    "dp_gd",
    "dp_sgd",
    "dp_least_squares",
    "dp_feature_covariance",
    "dp_prototypes",
)


def method_release(
    method: str,
    options: dict[str, Any],
    *,
    num_classes: int,
    dim: int,
    epsilon: float,
    delta: float,
    dataset_size: int,
) -> ReleaseFn:
    """A registered method as a release ``(X, y), key -> (-n W, -n (b - b0))``.

    Runs the method's real plan (calibration against a fresh ledger) and its real run (the rows
    path, preprocessing, clipping and noise) with a public ``dataset_size`` n, the same constant
    in both worlds: the worlds are true neighbours (N and N + 1 rows) and the divisor is public, so
    ``-n W`` is post-processing of the head (for ``single_step`` it is the noisy clipped sum).
    Methods whose run is not a traceable function of the key (``nonprivate``, private selection)
    are refused.
    """
    from accounting import PrivacyLedger
    from private_head._budget import remaining_allowance
    from private_head._method import Context, PublicInfo
    from private_head._methods._descent import LossOptions
    from private_head._options import route
    from private_head._preprocessing import Preprocessing
    from private_head._registry import get_method
    from private_head._release import PlanReleaser
    from private_head._rows import open_rows

    if method not in AUDITABLE:
        raise ValueError(
            f"the audit covers {', '.join(AUDITABLE)}, got {method!r} (auto runs one of them; "
            "nonprivate is not private)"
        )
    m = get_method(method)
    opts, pre_opts, _, _ = route(method, m.options, options)
    public = PublicInfo(dim, num_classes, float(dataset_size), pre_opts.feature_norm)
    plan = m.plan(opts, public, remaining_allowance(PrivacyLedger(epsilon, delta)))
    pre = Preprocessing("normalize" if pre_opts.normalize else "shrink", pre_opts.feature_norm)
    bias0 = opts.initial_bias(num_classes) if isinstance(opts, LossOptions) else 0.0
    prepared: dict[int, Any] = {}

    def rows_of(dataset: tuple[Any, Any]):
        key = id(dataset[0])
        if key not in prepared:  # open and validate once, outside any trace
            rows = open_rows(
                jnp.asarray(dataset[0]),
                dataset[1],
                num_classes=num_classes,
                feature_norm=pre_opts.feature_norm,
            )
            rows.validate(pre)
            prepared[key] = rows
        return prepared[key]

    def release(dataset: tuple[Any, Any], key: jax.Array) -> tuple[jax.Array, jax.Array]:
        rows = rows_of(dataset)
        head = m.run(plan, rows, PlanReleaser(plan, key), Context(public, pre))
        return -dataset_size * jnp.asarray(head.weights, jnp.float32), -dataset_size * (
            jnp.asarray(head.bias, jnp.float32) - bias0
        )

    release.prepare = rows_of  # type: ignore[attr-defined]
    return release


def statistics_sampler(
    release_fn: ReleaseFn,
    neighbours: Neighbours,
    statistic: Callable[[Any], jax.Array],
    batch: int = 8192,
) -> Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]:
    """``sample(rng, runs) -> (stats on D, stats on D')``, ``runs`` independent keys per world.

    The release is vmapped over the noise keys with the datasets fixed (closed over, concrete), so
    whatever the mechanism computes from the data alone (e.g. the single step's clipped class
    sums) is not batched: only the noise-adding code runs per key. The keys are random bits from
    ``rng`` wrapped as JAX keys inside the compiled function, in batches of one shape; both worlds
    share one compiled function, so a sampler compiles exactly once.
    """
    key_shape = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape

    def both(raw: jax.Array) -> tuple[jax.Array, jax.Array]:
        keys = jax.random.wrap_key_data(raw)
        return (
            statistic(release_fn(neighbours.without, keys[0])),
            statistic(release_fn(neighbours.with_canary, keys[1])),
        )

    # lax.map over blocks of 512 keys, not one vmap over the whole batch: XLA:CPU deadlocked on
    # some batch sizes (e.g. 3000 runs of dp_least_squares) with the whole batch in one op.
    fn = jax.jit(lambda raw: jax.lax.map(both, raw, batch_size=min(512, raw.shape[0])))

    def sample(rng: np.random.Generator, runs: int) -> tuple[np.ndarray, np.ndarray]:
        size = max(1, min(batch, runs))
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for _ in range(-(-runs // size)):  # one batch in flight at a time, read back at once
            keys = rng.integers(0, 2**32, size=(size, 2, *key_shape), dtype=np.uint32)
            s0, s1 = jax.device_get(fn(keys))
            out.append((np.asarray(s0, np.float64), np.asarray(s1, np.float64)))
        stats = tuple(np.concatenate([o[w] for o in out])[:runs] for w in (0, 1))
        if not all(np.all(np.isfinite(x)) for x in stats):
            raise ValueError("the mechanism released non-finite values; audit a finite mechanism")
        return stats

    return sample


def _counts(stat0: np.ndarray, stat1: np.ndarray, thresholds: np.ndarray):
    """False positives (#D runs > t) and false negatives (#D' runs <= t) for each threshold."""
    s0, s1 = np.sort(stat0), np.sort(stat1)
    fp = s0.size - np.searchsorted(s0, thresholds, side="right")
    fn = np.searchsorted(s1, thresholds, side="right")
    return fp, fn


def best_threshold(
    stat0: np.ndarray, stat1: np.ndarray, delta: float, alpha: float = 0.05, candidates: int = 4000
) -> tuple[float, float]:
    """``(threshold, bound)``: among quantiles of the pooled statistics, the threshold of the
    test "statistic > threshold" with the largest epsilon bound, and that bound.

    Use CALIBRATION runs here and evaluate the chosen threshold on fresh runs: the bound returned
    here is optimistically biased by the search.
    """
    if stat0.size != stat1.size:
        raise ValueError("need the same number of runs in both worlds")
    pooled = np.concatenate([stat0, stat1])
    thresholds = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, candidates)))
    fp, fn = _counts(stat0, stat1, thresholds)
    eps = epsilon_lower_bound(fp, fn, stat0.size, delta, alpha)
    best = int(np.argmax(eps))
    return float(thresholds[best]), float(eps[best])


def _split_runs(runs: int, calibration_fraction: float) -> tuple[int, int]:
    if not 0 < calibration_fraction < 1:
        raise ValueError(f"calibration_fraction must lie in (0, 1), got {calibration_fraction}")
    calibration = int(round(runs * calibration_fraction))
    if calibration < 1 or calibration >= runs:
        raise ValueError(f"runs={runs} is too few to split into calibration and evaluation runs")
    return calibration, runs - calibration


def _bound_on_fresh_runs(
    cal0: np.ndarray, cal1: np.ndarray, ev0: np.ndarray, ev1: np.ndarray, delta: float, alpha: float
) -> tuple[float, float, int, int, int]:
    """Orientation and threshold from the calibration runs, the bound from the evaluation runs.

    Returns ``(bound, threshold, orientation, false positives, false negatives)``.
    """
    # The canary may move the statistic either way (e.g. weights = -lr * gradient).
    (t_up, eps_up), (t_down, eps_down) = (
        best_threshold(cal0, cal1, delta, alpha),
        best_threshold(-cal0, -cal1, delta, alpha),
    )
    sign, threshold = (1, t_up) if eps_up >= eps_down else (-1, t_down)
    fp, fn = _counts(sign * ev0, sign * ev1, np.array([threshold]))
    fp, fn = int(fp[0]), int(fn[0])
    return epsilon_lower_bound(fp, fn, ev0.size, delta, alpha), threshold, sign, fp, fn


def audit_mechanism(
    release_fn: ReleaseFn,
    neighbours: Neighbours,
    *,
    epsilon_claimed: float,
    delta: float,
    runs: int = 100_000,
    seed: int | None = 0,
    statistic: Callable[[Any], jax.Array] | None = None,
    alpha: float = 0.05,
    calibration_fraction: float = 0.2,
    batch: int = 8192,
) -> AuditResult:
    """Audit ``release_fn(dataset, key) -> release`` on ``neighbours`` (module docstring).

    Runs the mechanism ``runs`` times on each dataset. The first ``calibration_fraction`` of the
    runs pick the orientation and threshold of the test ``+-statistic(release) > t`` (default
    statistic: projection on ``neighbours.direction``); the other runs count its false positives
    and negatives, and ``epsilon_lower_bound`` turns them into a bound that holds with probability
    >= 1 - alpha. A small calibration share picks a moderate threshold, which the many evaluation
    runs then measure precisely. The noise keys come from ``numpy.random.default_rng(seed)``: the
    fixed default makes an audit reproducible; ``seed=None`` draws fresh OS entropy.
    """
    n_cal, n_ev = _split_runs(runs, calibration_fraction)
    statistic = statistic or projection_statistic(neighbours.direction)
    rng = np.random.default_rng(seed)
    sample = statistics_sampler(release_fn, neighbours, statistic, batch)
    cal0, cal1 = sample(rng, n_cal)
    ev0, ev1 = sample(rng, n_ev)
    eps, threshold, sign, fp, fn = _bound_on_fresh_runs(cal0, cal1, ev0, ev1, delta, alpha)
    return AuditResult(
        epsilon_lower_bound=eps,
        epsilon_claimed=float(epsilon_claimed),
        delta=float(delta),
        fpr=fp / n_ev,
        fnr=fn / n_ev,
        threshold=threshold,
        orientation=sign,
        runs=n_ev,
        alpha=alpha,
    )


def audit_method(
    method: str = "single_step",
    *,
    epsilon: float,
    delta: float,
    runs: int = 100_000,
    seed: int | None = 0,
    num_rows: int = 15,
    dim: int = 4,
    num_classes: int = 2,
    clip_norm: float = 0.1,
    alpha: float = 0.05,
    **options: Any,
) -> AuditResult:
    """Audit a registered training method at (epsilon, delta) on synthetic worst-case neighbours.

    ``num_rows`` Gaussian rows spanning ``dim - 1`` dimensions with random labels (D, N rows) and
    D plus an orthogonal canary of norm ``feature_norm`` (``orthogonal_canary``: N + 1 rows), whose
    gradient is clipped from ``0.71 * feature_norm`` to ``clip_norm``. The divisor is the public
    ``dataset_size = num_rows`` in both worlds. ``options`` are the method's (``steps``,
    ``learning_rate``, ...). Audits the method's own plan and run (``method_release``); the
    statistic is the projection on the canary's direction.
    """
    if method in ("single_step", "dp_gd", "dp_sgd", "dp_feature_covariance"):
        options = {"clip_norm": clip_norm, **options}
    feature_norm = float(options.get("feature_norm", 1.0))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_rows, dim)).astype(np.float32)
    x[:, -1] = 0.0
    neighbours = orthogonal_canary(
        x,
        rng.integers(0, num_classes, size=num_rows),
        num_classes,
        min(clip_norm, float(options.get("clip_norm", clip_norm))),
        canary_norm=feature_norm,
    )
    release = method_release(
        method,
        options,
        num_classes=num_classes,
        dim=dim,
        epsilon=epsilon,
        delta=delta,
        dataset_size=num_rows,
    )
    for dataset in (neighbours.without, neighbours.with_canary):
        release.prepare(dataset)
    return audit_mechanism(
        release,
        neighbours,
        epsilon_claimed=epsilon,
        delta=delta,
        runs=runs,
        seed=seed,
        alpha=alpha,
    )


def gaussian_shift_epsilon_bound(
    mu: float,
    runs: int,
    delta: float,
    alpha: float = 0.05,
    seed: int | None = 0,
    calibration_fraction: float = 0.2,
) -> float:
    """The audit's bound on the ideal mu-GDP release N(0,1) vs N(mu,1), ``runs`` per world.

    The same procedure as ``audit_mechanism`` on exact Gaussian samples: what a perfect
    implementation of a mechanism with GDP parameter mu can show at this sample size, the
    reference for how tight an audit of the real code is.
    """
    if not (mu >= 0 and math.isfinite(mu)):
        raise ValueError(f"mu must be finite and >= 0, got {mu}")
    n_cal, n_ev = _split_runs(runs, calibration_fraction)
    rng = np.random.default_rng(seed)
    cal0, cal1 = rng.standard_normal(n_cal), rng.standard_normal(n_cal) + mu
    ev0, ev1 = rng.standard_normal(n_ev), rng.standard_normal(n_ev) + mu
    return _bound_on_fresh_runs(cal0, cal1, ev0, ev1, delta, alpha)[0]


def main(argv: list[str] | None = None) -> int:
    """``python -m private_head.audit --method dp_gd --steps 3 --epsilon 1 2 4 --runs 200000``.

    Exit status: 0 when no claimed epsilon is contradicted, 1 on a VIOLATION (so that a script or
    CI job fails on it), 2 on a usage error or a refused audit."""
    import argparse

    from accounting import mu_from_epsilon

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            self.exit(2, f"{self.prog}: error: {message}\n")

    def positive(kind):
        def parse(text: str):
            try:
                value = kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected a positive number, got {text!r}"
                ) from None
            if not value > 0 or (isinstance(value, float) and math.isinf(value)):
                raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
            return value

        return parse

    parser = Parser(
        prog="python -m private_head.audit",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--method", default="single_step", choices=AUDITABLE)
    parser.add_argument("--epsilon", type=positive(float), nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--delta", type=positive(float), default=1e-5)
    parser.add_argument(
        "--steps",
        type=positive(int),
        help="steps of dp_gd, dp_sgd and "
        "dp_feature_covariance (default 3: the audit unrolls every step)",
    )
    parser.add_argument("--runs", type=positive(int), default=100_000, help="runs per world")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.delta < 1:
        parser.error(f"argument --delta: must lie in (0, 1), got {args.delta}")
    options: dict[str, Any] = {}
    iterative = ("dp_gd", "dp_sgd", "dp_feature_covariance")
    if args.steps is not None and args.method not in iterative:
        parser.error(f"--steps applies to {', '.join(iterative)}, not {args.method}")
    if args.method in iterative:
        options["steps"] = args.steps or 3
    if args.method == "dp_sgd":
        options["batch_size"] = 5
    print(
        f"method={args.method} options={options} delta={args.delta} runs={args.runs} per world "
        "(20% calibration, 80% evaluation); each bound holds with 95% confidence"
    )
    print("epsilon_claimed  epsilon_lower_bound  ideal_gaussian_bound  fpr      fnr")
    results = []
    for eps in args.epsilon:
        try:
            result = audit_method(
                args.method,
                epsilon=eps,
                delta=args.delta,
                runs=args.runs,
                seed=args.seed,
                **options,
            )
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        ideal = gaussian_shift_epsilon_bound(
            mu_from_epsilon(eps, args.delta), args.runs, args.delta, seed=args.seed
        )
        print(
            f"{eps:<16g} {result.epsilon_lower_bound:<20.3f} {ideal:<21.3f} "
            f"{result.fpr:<8.5f} {result.fnr:.5f}"
        )
        results.append(result)
    print()
    for result in results:
        print(verdict(result))
    return 0 if all(result.consistent for result in results) else 1


def verdict(result: AuditResult) -> str:
    """The audit's outcome in words: the lower bound against the claim, at its confidence."""
    bound = f"the {1 - result.alpha:.0%}-confidence lower bound {result.epsilon_lower_bound:.2f}"
    claim = f"the claimed {result.epsilon_claimed:g}"
    if result.consistent:
        below = "below" if result.epsilon_lower_bound < result.epsilon_claimed else "equal to"
        return (
            f"epsilon {result.epsilon_claimed:g}: no violation detected: {bound} is {below} "
            f"{claim} (a lower bound only: passing is not a proof of privacy)"
        )
    return (
        f"epsilon {result.epsilon_claimed:g}: VIOLATION: {bound} is above {claim}: the method "
        "leaks more than it claims"
    )


__all__ = [
    "AuditResult",
    "Neighbours",
    "audit_mechanism",
    "audit_method",
    "epsilon_lower_bound",
    "gaussian_shift_epsilon_bound",
    "main",
    "method_release",
    "orthogonal_canary",
]

if __name__ == "__main__":
    raise SystemExit(main())
