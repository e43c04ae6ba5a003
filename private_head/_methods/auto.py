"""``auto``: the head and its settings for the budget, from public quantities only.

``select="rule"`` (default) picks one head by the documented rule ``choose`` and runs it with the
whole allowance. The rule reads one released statistic: ``fit`` spends ``spread_budget_fraction``
of mu^2, before the plan, on the feature spread ``PublicInfo.feature_spread`` (``_train``: about
``sqrt(D ||X^T X||_F^2 / tr(X^T X)^2)``, 1 for isotropic rows). Whitening pays where the
features' second moment is spread over a few directions, and costs its Gram's share of the budget
where it is not (docs/utility.md, "The head"), so the rule is ``dp_gd`` when the spread is below
``spread_threshold`` (also when no spread was released: the Gram does not fit the memory budget,
or ``auto`` runs inside a selection). It is ``dp_gd`` too when DP-FC could not whiten: DP-FC keeps
A = I unless its noisy Gram's top eigenvalue reaches ``structure_threshold x e`` (e its noise edge,
a function of D, n and its budget share), which the top eigenvalue of ``M = X^T X / n`` does from
its ``whitening_line`` on, and that eigenvalue is at most ``||M||_F = spread r^2 / sqrt(D)``;
below the line DP-FC would be ``dp_gd`` with less budget.
Otherwise the rule is ``dp_feature_covariance``.
``select="private"`` trains the rule's candidates and picks one with the accounted private
selection (``_selection.Selection``), charged to the same budget. The report's ``auto`` entry says
which head was chosen and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from private_head._budget import Allowance
from private_head._method import Candidate, Context, Fitted, Method, PublicInfo
from private_head._methods import dp_feature_covariance
from private_head._options import NoOptions, Options, option
from private_head._plan import Plan
from private_head._registry import register_method
from private_head._release import Releaser
from private_head._rows import Rows
from private_head._selection import Selection, SelectionSettings, parse_candidate
from private_head._settings import Settings
from private_head._validation import check_fraction, check_non_negative

SELECTS = ("rule", "private")
SPREAD_FRACTION = 0.02  # of mu^2: the spread's noise std is sqrt(D) / (n mu_s) in its units
SPREAD_THRESHOLD = 2.5  # the middle of the band where the two heads cross: docs/utility.md


@dataclass(frozen=True, kw_only=True)
class AutoOptions(Options):
    """How ``auto`` chooses."""

    select: str = option(
        "rule",
        "rule: the rule picks one head from the released feature spread; private: the "
        "accounted private selection among the rule's candidates",
        choices=SELECTS,
    )
    spread_budget_fraction: float = option(
        SPREAD_FRACTION, "share of mu^2 for the feature spread the rule reads (select='rule')"
    )
    spread_threshold: float = option(
        SPREAD_THRESHOLD,
        "the rule whitens (dp_feature_covariance) when the released spread is at least this, "
        "else runs dp_gd",
    )

    def validate(self) -> None:
        check_fraction("spread_budget_fraction", self.spread_budget_fraction)
        check_non_negative("spread_threshold", self.spread_threshold)


@dataclass(frozen=True)
class RuleChoice(Settings):
    """``select="rule"``: the head the rule chose, why, and its plan."""

    candidate: Candidate
    reason: str
    plan: Plan[Settings]

    def to_dict(self) -> dict[str, object]:
        return {
            "select": "rule",
            "chosen": self.candidate.to_dict(),
            "reason": self.reason,
            "resolved": self.plan.settings.to_dict(),
        }


@dataclass(frozen=True)
class PrivateChoice(Settings):
    """``select="private"``: the selection among the rule's candidates, and its plan."""

    selection: Selection
    plan: Plan[SelectionSettings]

    def to_dict(self) -> dict[str, object]:
        return {"select": "private", "resolved": self.plan.settings.to_dict()}


def candidates(public: PublicInfo) -> list[dict[str, Any]]:
    """The heads ``auto`` chooses among (each ``{"method": name, **options}``)."""
    del public
    return [{"method": "dp_feature_covariance"}, {"method": "dp_gd"}]


def choose(
    public: PublicInfo, allowance: Allowance, threshold: float = SPREAD_THRESHOLD
) -> tuple[dict[str, Any], str]:
    """``(candidate, reason)``: the rule of the module docstring (docs/architecture.md, "auto";
    the measurements behind it in docs/utility.md), from public facts, the allowance and the
    released feature spread only. The preprocessing follows its own public rule
    (``standardize="auto"``)."""
    spread = public.feature_spread
    if spread is None:
        return (
            {"method": "dp_gd"},
            "dp_gd: no feature spread was released (the Gram does not fit the memory budget, "
            "or auto runs inside a selection), so nothing calls for whitening",
        )
    if spread < threshold:
        return (
            {"method": "dp_gd"},
            f"dp_gd: the released feature spread {spread:.3g} is below {threshold:g}: the rows "
            "are close to isotropic, so a covariance release would cost its share of the budget "
            "and buy no whitening",
        )
    covariance = dp_feature_covariance.METHOD
    line = covariance.plan(covariance.options(), public, allowance).settings.whitening_line
    second_moment = spread * public.feature_norm**2 / math.sqrt(public.dim)
    if second_moment < line:
        return (
            {"method": "dp_gd"},
            f"dp_gd: the rows' second moment ||X^T X / n||_F, {second_moment:.3g} from the "
            f"released spread, is below the {line:.3g} that dp_feature_covariance's noisy Gram "
            "must show to whiten at this budget: it would run dp_gd with less budget",
        )
    return (
        {"method": "dp_feature_covariance"},
        f"dp_feature_covariance: the released feature spread {spread:.3g} is at least "
        f"{threshold:g} (the rows' second moment stands out in a few directions, which "
        f"whitening evens out), and its norm {second_moment:.3g} clears the noisy Gram's "
        f"whitening line {line:.3g}",
    )


def spread_fraction(options: AutoOptions) -> float:
    """``fit``'s budget share for the feature spread: the rule's, none for a selection."""
    return options.spread_budget_fraction if options.select == "rule" else 0.0


def plan(
    options: AutoOptions, public: PublicInfo, allowance: Allowance
) -> Plan[RuleChoice | PrivateChoice]:
    if options.select == "private":
        selection = Selection.parse(candidates(public))
        inner = selection.plan(NoOptions(), public, allowance)
        return Plan(inner.releases, PrivateChoice(selection, inner))
    spec, reason = choose(public, allowance, options.spread_threshold)
    candidate = parse_candidate(spec)
    chosen = candidate.method.plan(candidate.options, public, allowance)
    return Plan(chosen.releases, RuleChoice(candidate, reason, chosen))


def run(
    plan: Plan[RuleChoice | PrivateChoice], rows: Rows, releaser: Releaser, context: Context
) -> Fitted:
    settings = plan.settings
    if isinstance(settings, PrivateChoice):
        chosen = settings.selection.choose(settings.plan, rows, releaser, context)
        report = {
            "select": "private",
            "chosen": chosen.candidate.to_dict(),
            "selection": chosen.report,
            "reason": "chosen by the accounted private selection",
        }
        return Fitted(chosen.head.weights, chosen.head.bias, {"auto": report})
    head = settings.candidate.method.run(settings.plan, rows, releaser, context)
    report = {"select": "rule", "chosen": settings.candidate.to_dict(), "reason": settings.reason}
    return Fitted(head.weights, head.bias, {"auto": report})


METHOD = register_method(
    Method(
        "auto",
        AutoOptions,
        plan,
        run,
        "picks the head for the budget by a rule on the released feature spread, or by "
        "private selection",
        spread_fraction=spread_fraction,
    )
)
