"""``auto``: the head and its settings for the budget, from public quantities only.

``select="rule"`` (default) picks one method by the documented rule ``choose`` (in the public
n, D, K and mu) and runs it with the whole allowance; ``select="private"`` trains the rule's
candidates and picks one with the accounted private selection (``_selection.Selection``), charged
to the same budget. The report's ``auto`` entry says which head was chosen and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from private_head._budget import Allowance
from private_head._method import Candidate, Context, Fitted, Method, PublicInfo
from private_head._options import NoOptions, Options, option
from private_head._plan import Plan
from private_head._registry import register_method
from private_head._release import Releaser
from private_head._rows import Rows
from private_head._selection import Selection, SelectionSettings, parse_candidate
from private_head._settings import Settings

SELECTS = ("rule", "private")


@dataclass(frozen=True, kw_only=True)
class AutoOptions(Options):
    """How ``auto`` chooses."""

    select: str = option(
        "rule",
        "rule: the public rule picks one head; private: the accounted "
        "private selection among the rule's candidates",
        choices=SELECTS,
    )


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


def choose(public: PublicInfo, mu: float) -> tuple[dict[str, Any], str]:
    """``(candidate, reason)``: the rule (docs/architecture.md, "auto"; the measurements behind
    it in docs/utility.md). DP-FC is the best head or within about a point of it in every cell of
    the suite, and the one preset where plain DP-GD is ahead differs from the others only in its
    (private) feature spectrum, which DP-FC measures itself: no public quantity calls for another
    head. The preprocessing follows its own public rule (``standardize="auto"``)."""
    return (
        {"method": "dp_feature_covariance"},
        "dp_feature_covariance: whitened DP-GD where its noisy Gram shows structure above the "
        "noise, plain DP-GD on the rows where it does not; the best or within about 1 point of "
        "the best head at every budget of the benchmark suite",
    )


def plan(
    options: AutoOptions, public: PublicInfo, allowance: Allowance
) -> Plan[RuleChoice | PrivateChoice]:
    if options.select == "private":
        selection = Selection.parse(candidates(public))
        inner = selection.plan(NoOptions(), public, allowance)
        return Plan(inner.releases, PrivateChoice(selection, inner))
    spec, reason = choose(public, allowance.mu)
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
        "picks the head for the budget by a public rule, or by private selection",
    )
)
