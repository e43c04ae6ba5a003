"""``train``: the releases that every fit makes before its method, the method's plan, its charge and
its run, on rows already opened (steps 3-6 of "What fit does", docs/architecture.md):

3. the divisor n: the caller's public ``dataset_size``, or the noisy count ``N + N(0, 1 / mu_n^2)``
   (planned, charged, released first; rounded, at least 1);
4. with ``center="private"``, the private mean of the bounded rows (planned, charged, released:
   a sum of sensitivity r, divided by n); with ``standardize="private"`` (or ``"auto"`` resolved
   to it, ``resolve_standardization``), the private per-group standardisation
   (``_private_standardization``: two sums planned, charged, released);
   when the method asks for it (``Method.spread_fraction``: ``auto``), the released feature
   spread of the preprocessed rows (``_feature_spread``: one sum planned, charged, released);
5. the method plans its releases from public information and the allowance left; the whole plan
   is charged to the ledger (which refuses to overspend) before the method runs;
6. the method runs; every planned draw must have been made; the head must be finite.

Budget shares are fractions of the total mu^2 (``_budget.split_mu``): ``count_budget_fraction``
to the count, ``center_budget_fraction`` to the mean, ``standardize_budget_fraction`` f to the
standardisation (half of it to each of its two sums), the method's ``spread_fraction`` to the
feature spread, the rest to the method.

The feature spread (docs/architecture.md, "auto"): with G = sum_i b_i b_i^T over the preprocessed
rows (``||b_i|| <= r``), adding or removing a row moves ``||G||_F`` by at most ``||b b^T||_F =
||b||^2 <= r^2`` (the triangle inequality), so ``F = ||G||_F + N(0, (r^2 / mu_s)^2)`` is mu_s-GDP.
Post-processing with the divisor n: ``spread = sqrt(D) F / (n r^2)``. For rows of norm r (the
default ``normalize``) ``tr G = N r^2`` and the spread estimates ``sqrt(D ||G||_F^2 / tr(G)^2)``:
1 when the second moment is isotropic, sqrt(D) when it has rank one. It is released only when
the D x D Gram fits the memory budget (``gram_fits``; otherwise nothing is charged and the
method plans without it). The exact G is kept on the rows for the next pass (``Rows.sum(keep=
True)``): when the rule chooses DP-FC, its Gram release (the same statistic, the same
preprocessing) takes it instead of reading the rows again; any other pass, or the end of the
method's run, drops it. Only the noisy releases leave the fit.

The private standardisation (docs/architecture.md, "Standardisation"): with b_i = bound(x_i)
(``||b_i|| <= r``) and G contiguous groups of at least m_min features, each row gives
``u_i = [mean_{j in g} b_ij]_g`` and ``v_i = [mean_{j in g} b_ij^2]_g`` (``GroupMoments``), of
sensitivities ``Delta_u = r / sqrt(m_min)`` and ``Delta_v = r^2 / m_min``. Released:
``S_u = sum_i u_i + N(0, (Delta_u / mu_u)^2 I_G)`` and ``S_v = sum_i v_i + N(0, (Delta_v / mu_v)^2
I_G)`` with ``mu_u^2 = mu_v^2 = f mu^2 / 2``. Post-processing with the divisor n:
``m = S_u / n``, ``q = S_v / n``, ``var = max(q - m^2, 0)``, ``e_v = Delta_v / (mu_v n)`` (the
noise std of q), ``s_g = sqrt(var_g + e_v + 1e-6 mean(var) + 1e-12 r^2 / D)``; the map is then
``x -> bound((bound(x) - m[gid]) / s[gid])``. Non-private (epsilon = inf): the exact sums, e_v = 0.
Its noise key is the private mean's with 1 folded in (the two are never used together).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from private_head._budget import Allowance, Ledger, remaining_allowance, split_mu
from private_head._method import Context, Fitted, Method, PublicInfo
from private_head._options import DatasetSize, Options, Preprocess
from private_head._plan import Plan, PlannedRelease
from private_head._preprocessing import Preprocessing, group_ids, group_sizes
from private_head._release import PlanReleaser
from private_head._rows import Rows
from private_head._settings import Settings
from private_head._statistics import Gram, GroupMoments, RowSum
from private_head._validation import check_public_mean, check_public_scale, gram_fits

COUNT, CENTER = "dataset_size/noisy_count", "center/row_sum"
STANDARDIZE_SUM = "standardize/group_sum"
STANDARDIZE_SQUARES = "standardize/group_square_sum"
SPREAD = "feature_spread/gram_frobenius_norm"
SPREAD_TEXT = "sqrt(D) (||X^T X||_F + N(0, (r^2 / mu_s)^2)) / (n r^2), X the preprocessed rows"


@dataclass(frozen=True)
class Trained:
    """A trained head with everything its reports need: the method's run (``fitted``: the
    parameters, its report entries, a selection's choice), the preprocessing, the settings, how
    the divisor was obtained, and the plan that was charged."""

    weights: np.ndarray
    bias: np.ndarray
    fitted: Fitted
    preprocessing: Preprocessing
    settings: dict[str, object]
    dataset_size: dict[str, object]
    plan: Plan[Settings]
    standardize: dict[str, object] | None = None  # the privacy report's entry (None: off)
    feature_spread: dict[str, object] | None = None  # the privacy report's entry (None: none)


@dataclass(frozen=True)
class Standardization:
    """The standardisation a fit applies, resolved from the options and public facts only:
    ``kind`` (none, group, private, public), ``groups`` G (0 when it has none) and why."""

    kind: str
    groups: int
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "groups": self.groups, "reason": self.reason}


def resolve_standardization(
    opts: Preprocess,
    dim: int,
    feature_groups: int | None,
    public_scale: Any = None,
    public_mean: Any = None,
) -> Standardization:
    """``standardize`` resolved (``"auto"``: ``"public"`` when ``public_scale`` is given, else
    ``"private"`` when no centring is asked for (``center``, ``public_mean``) and the features
    declare their groups (the store's ``feature_groups``, or the ``groups`` option: arrays in
    memory declare them that way), else ``"none"``), with its groups G
    (the ``groups`` option, else the declared feature groups, else D) checked: ``1 <= G <= D``,
    and group normalisation needs groups of at least two features. Public inputs only."""
    kind, reason = opts.standardize, "asked for"
    if kind == "auto":
        if public_scale is not None:
            kind, reason = "public", "auto: public_scale was given"
        elif opts.center != "none" or public_mean is not None:
            kind, reason = "none", "auto: centring was asked for"
        elif feature_groups is not None:
            kind, reason = "private", f"auto: the store declares {feature_groups} feature groups"
        elif opts.groups is not None:
            kind, reason = "private", f"auto: groups={opts.groups} was declared"
        else:
            kind, reason = "none", "auto: the features declare no groups"
    if public_scale is not None and kind != "public":
        raise ValueError(
            f"public_scale was given with standardize={opts.standardize!r}; it is the scale of "
            "standardize='public'"
        )
    if kind == "public" and opts.center != "none":
        raise ValueError(
            f"standardize='public' with center={opts.center!r}: standardisation centres the "
            "features itself (public_mean is its m); choose one"
        )
    if kind not in ("group", "private"):
        return Standardization(kind, 0, reason)
    groups = opts.groups if opts.groups is not None else feature_groups or dim
    if not 1 <= groups <= dim:
        raise ValueError(
            f"groups must lie in [1, D] = [1, {dim}] (contiguous groups of the features), "
            f"got {groups}"
        )
    if kind == "group" and int(group_sizes(dim, groups).min()) < 2:
        raise ValueError(
            f"standardize='group' with groups={groups} of {dim} features leaves a group of one "
            f"feature (normalised to 0); use groups <= {dim // 2}"
        )
    return Standardization(kind, int(groups), reason)


def preprocessing_of(
    opts: Preprocess,
    public_mean: Any,
    dim: int,
    standardization: Standardization | None = None,
    public_scale: Any = None,
) -> Preprocessing:
    """The map before any private statistic (the private mean or standardisation is filled in
    later)."""
    kind = "normalize" if opts.normalize else "shrink"
    std = standardization or Standardization("none", 0, "")
    if std.kind == "public":
        if public_scale is None:
            raise ValueError(
                "standardize='public' needs public_scale (a [D] vector of positive scales from "
                "public data; public_mean, default 0, is its mean)"
            )
        mean = np.zeros(dim, np.float32) if public_mean is None else public_mean
        m, s = check_public_mean(mean, dim), check_public_scale(public_scale, dim)
        return Preprocessing(kind, opts.feature_norm, "none", m, "public", 0, s)
    if std.kind == "group":
        return Preprocessing(kind, opts.feature_norm, standardize="group", groups=std.groups)
    if std.kind == "private" and public_mean is not None:
        raise ValueError("public_mean was given with standardize='private'; choose one")
    if opts.center == "public" or public_mean is not None:
        if public_mean is None:
            raise ValueError("center='public' needs public_mean (a [D] vector from public data)")
        if opts.center == "private":
            raise ValueError("public_mean was given with center='private'; choose one")
        return Preprocessing(kind, opts.feature_norm, "public", check_public_mean(public_mean, dim))
    return Preprocessing(kind, opts.feature_norm)


def train(
    rows: Rows,
    method: Method[Any, Any],
    options: Options,
    preprocess: Preprocess,
    size: DatasetSize,
    ledger: Ledger,
    key: jax.Array,
    *,
    public_mean: Any = None,
    public_scale: Any = None,
    feature_groups: int | None = None,
) -> Trained:
    """Steps 3-6 of the module docstring on ``rows`` against ``ledger``; ``feature_groups``:
    the store's declared feature groups (a public fact), for ``standardize``."""
    std = resolve_standardization(preprocess, rows.dim, feature_groups, public_scale, public_mean)
    pre = preprocessing_of(preprocess, public_mean, rows.dim, std, public_scale)
    private = not math.isinf(ledger.mu_budget)
    shares = {}
    if private and size.dataset_size is None:
        shares["count"] = size.count_budget_fraction
    if preprocess.center == "private" and private:
        shares["center"] = preprocess.center_budget_fraction
    if std.kind == "private" and private:
        shares["standardize"] = preprocess.standardize_budget_fraction
    spread_share = method.spread_fraction(options) if private else 0.0
    if spread_share and gram_fits(rows.dim, rows.budget):
        shares["spread"] = spread_share
    mu = split_mu(remaining_allowance(ledger).mu, shares, rest="method") if shares else {}
    keys = _split3(key)

    n, size_report = _divisor(rows, size, ledger, mu.get("count"), keys[0], private)
    std_report = None
    if preprocess.center == "private":
        pre = _private_mean(rows, pre, ledger, mu.get("center"), n, keys[1])
    elif std.kind == "private":
        pre, std_report = _private_standardization(
            rows, pre, std.groups, ledger, mu.get("standardize"), n, _fold(keys[1], 1)
        )
        std_report["budget_fraction"] = preprocess.standardize_budget_fraction
    if std.kind != "none":
        std_report = {**std.to_dict(), **(std_report or {})}
    spread, spread_report = None, None
    if "spread" in mu:
        spread, spread_report = _feature_spread(
            rows, pre, ledger, mu["spread"], n, _fold(keys[1], 2)
        )
        spread_report["budget_fraction"] = spread_share
    public = PublicInfo(rows.dim, rows.num_classes, n, pre.feature_norm, spread)
    allowance = (
        remaining_allowance(ledger) if private else Allowance(math.inf, math.inf, ledger.delta)
    )
    plan = method.plan(options, public, allowance)
    plan.charge(ledger)
    releaser = PlanReleaser(plan, keys[2])
    try:
        fitted = method.run(plan, rows, releaser, Context(public, pre))
    finally:
        rows.drop_kept()  # the spread's exact Gram, if the run did not take it
    missing = releaser.unreleased()
    if missing:
        raise RuntimeError(f"method {method.name!r} charged draws it never made: {missing}")
    weights = np.asarray(fitted.weights, np.float32)
    bias = np.asarray(fitted.bias, np.float32)
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
    settings: dict[str, object] = {
        "method": method.name,
        "options": options.to_dict(),
        "resolved": plan.settings.to_dict(),
        "preprocess": preprocess.to_dict(),
        "standardize": std.to_dict(),
        "dataset_size": size.to_dict(),
    }
    return Trained(
        weights, bias, fitted, pre, settings, size_report, plan, std_report, spread_report
    )


@jax.jit
def _fold(key: jax.Array, data: int | jax.Array) -> jax.Array:
    """``fold_in(key, data)``: the standardisation's (1) and the feature spread's (2) keys from
    the private mean's."""
    return jax.random.fold_in(key, data)


@jax.jit
def _split3(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``jax.random.split(key, 3)`` as three keys, in one compiled call."""
    first, second, third = jax.random.split(key, 3)
    return first, second, third


def _divisor(
    rows: Rows, size: DatasetSize, ledger: Ledger, mu: float | None, key: jax.Array, private: bool
) -> tuple[float, dict[str, object]]:
    """The public divisor n and how it was obtained (never the true count)."""
    if size.dataset_size is not None:
        return float(size.dataset_size), {"source": "public", "value": size.dataset_size}
    if not private:  # the non-private ceiling: nothing is protected, nothing is reported
        return float(rows.global_rows), {"source": "true_count_not_private"}
    std = Allowance(mu, ledger.epsilon, ledger.delta).gaussian_std(1.0)
    plan = Plan((PlannedRelease.gaussian(COUNT, 1.0, std),), Settings())
    plan.charge(ledger)
    released = PlanReleaser(plan, key).release(COUNT, np.float64(rows.global_rows))
    n = max(1.0, float(np.round(np.asarray(released, np.float64))))
    return n, {
        "source": "noisy_count",
        "value": n,
        "noise_std": std,
        "budget_fraction": size.count_budget_fraction,
    }


def _released_sums(
    rows: Rows,
    stat: Any,
    bound: Preprocessing,
    releases: tuple[PlannedRelease, ...],
    ledger: Ledger,
    key: jax.Array,
    finish: Callable[[Any], Any] | None = None,
    keep: bool = False,
) -> tuple[Any, ...]:
    """The sums of ``stat`` over the bounded rows (mapped by ``finish``, when given), one per
    planned release: the whole plan is charged before the pass and each value drawn after it;
    exact at epsilon = inf (the non-private ceiling, nothing charged). ``keep``: the exact sum
    stays on the rows for the next pass (``Rows.sum``)."""
    exact = math.isinf(ledger.mu_budget)
    plan = Plan(releases, Settings())
    if not exact:
        plan.charge(ledger)
    sums = rows.sum(stat, None, bound, keep=keep)
    sums = finish(sums) if finish is not None else sums
    sums = sums if isinstance(sums, tuple) else (sums,)
    if exact:
        return sums
    releaser = PlanReleaser(plan, key)
    return tuple(releaser.release(r.name, v) for r, v in zip(releases, sums, strict=True))


def _private_mean(
    rows: Rows, pre: Preprocessing, ledger: Ledger, mu: float | None, n: float, key: jax.Array
) -> Preprocessing:
    """The released mean ``(sum_i bound(x_i) + N(0, (r / mu_c)^2 I)) / n``."""
    r = pre.feature_norm
    release = ()
    if not math.isinf(ledger.mu_budget):
        std = Allowance(mu, ledger.epsilon, ledger.delta).gaussian_std(r)
        release = (PlannedRelease.gaussian(CENTER, r, std),)
    (total,) = _released_sums(rows, RowSum(), Preprocessing(pre.kind, r), release, ledger, key)
    return Preprocessing(pre.kind, r, "private", np.asarray(total) / n)


def _private_standardization(
    rows: Rows,
    pre: Preprocessing,
    groups: int,
    ledger: Ledger,
    mu: float | None,
    n: float,
    key: jax.Array,
) -> tuple[Preprocessing, dict[str, object]]:
    """The private per-group standardisation of the module docstring: its two sums planned and
    charged, then computed in one pass and released; the map and the report entry."""
    r, dim = pre.feature_norm, rows.dim
    stat = GroupMoments(groups, float(r), int(group_sizes(dim, groups).min()))
    releases, noise_v, report = (), 0.0, {}
    if not math.isinf(ledger.mu_budget):
        delta_u, delta_v = stat.sensitivities()
        each = Allowance(mu / math.sqrt(2.0), ledger.epsilon, ledger.delta)
        std_u, std_v = each.gaussian_std(delta_u), each.gaussian_std(delta_v)
        releases = (
            PlannedRelease.gaussian(STANDARDIZE_SUM, delta_u, std_u),
            PlannedRelease.gaussian(STANDARDIZE_SQUARES, delta_v, std_v),
        )
        noise_v = std_v / n
        report = {"noise_std": {"group_sum": std_u, "group_square_sum": std_v}}
    su, sv = _released_sums(rows, stat, Preprocessing(pre.kind, r), releases, ledger, key)
    m, s = standardization_moments(su, sv, n, noise_v, r, dim)
    gid = group_ids(dim, groups)
    return Preprocessing(pre.kind, r, "none", m[gid], "private", groups, s[gid]), report


def _feature_spread(
    rows: Rows, pre: Preprocessing, ledger: Ledger, mu: float, n: float, key: jax.Array
) -> tuple[float, dict[str, object]]:
    """The released feature spread of the module docstring, and its report entry; the exact
    Gram is kept on ``rows`` for the method's Gram release."""
    r2, dim = float(pre.feature_norm) ** 2, rows.dim
    std = Allowance(mu, ledger.epsilon, ledger.delta).gaussian_std(r2)
    release = (PlannedRelease.gaussian(SPREAD, r2, std),)
    (norm,) = _released_sums(rows, Gram(), pre, release, ledger, key, _frobenius, keep=True)
    spread = math.sqrt(dim) * float(norm) / (n * r2)
    return spread, {"value": spread, "noise_std": std, "statistic": SPREAD_TEXT}


def _frobenius(gram: Any) -> np.ndarray:
    """``||G||_F`` in float64 (a 0-d array: the releaser adds its noise on the host)."""
    return np.asarray(np.linalg.norm(np.asarray(gram, np.float64)), np.float64)


def standardization_moments(
    su: Any, sv: Any, n: float, noise_v: float, radius: float, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(m, s)`` [G] float32 from the released sums (module docstring), in float64:
    ``m = S_u / n``, ``var = max(S_v / n - m^2, 0)``, ``s = sqrt(var + e_v + 1e-6 mean(var) +
    1e-12 r^2 / D)``, at least float32's smallest normal."""
    m = np.asarray(su, np.float64) / n
    var = np.maximum(np.asarray(sv, np.float64) / n - m * m, 0.0)
    floor = noise_v + 1e-6 * float(np.mean(var)) + 1e-12 * float(radius) ** 2 / dim
    s = np.maximum(np.sqrt(var + floor), np.finfo(np.float32).tiny)
    return m.astype(np.float32), s.astype(np.float32)


__all__ = [
    "CENTER",
    "COUNT",
    "SPREAD",
    "STANDARDIZE_SQUARES",
    "STANDARDIZE_SUM",
    "Standardization",
    "Trained",
    "preprocessing_of",
    "resolve_standardization",
    "standardization_moments",
    "train",
]
