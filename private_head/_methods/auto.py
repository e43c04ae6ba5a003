"""``auto``: the head and its settings for the budget, from public quantities only.

``select="rule"`` (default) picks one method by the documented rule ``choose`` (in the public
n, D, K and mu) and runs it with the whole allowance; ``select="private"`` trains the rule's
candidates and picks one with the accounted private selection (``selection.Selection``), charged
to the same budget. The report's ``auto`` entry says which head was chosen and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from private_head._budget import Allowance
from private_head._methods import Context, Method, PublicInfo, get_method, register_method
from private_head._options import Options, option
from private_head._plan import Plan, Releaser
from private_head._rows import Rows

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


def candidates(public: PublicInfo) -> list[dict[str, Any]]:
    """The heads ``auto`` chooses among (each ``{"method": name, **options}``)."""
    del public
    return [{"method": "dp_feature_covariance"}, {"method": "dp_gd"}]


def choose(public: PublicInfo, mu: float) -> tuple[dict[str, Any], str]:
    """``(candidate, reason)``: the rule (docs/architecture.md, "auto")."""
    return (
        {"method": "dp_feature_covariance"},
        "dp_feature_covariance: whitened DP-GD where its noisy Gram shows structure above the "
        "noise, plain DP-GD on the rows where it does not; the best or within about 1 point of "
        "the best head at every budget of the benchmark suite",
    )


def _selection(public: PublicInfo):
    from private_head._selection import Candidate, Selection

    return Selection(tuple(Candidate.parse(c) for c in candidates(public)))


def plan(options: AutoOptions, public: PublicInfo, allowance: Allowance) -> Plan:
    if options.select == "private":
        selection = _selection(public)
        inner = selection.plan(options, public, allowance)
        return Plan(inner.releases, {"select": "private"}, {"selection": selection, "inner": inner})
    spec, reason = choose(public, allowance.mu)
    from private_head._selection import Candidate

    cand = Candidate.parse(spec)
    inner = cand.method.plan(cand.options, public, allowance)
    settings = {"chosen": cand.to_dict(), "reason": reason, "resolved": inner.settings}
    return Plan(inner.releases, settings, {"candidate": cand, "inner": inner})


def run(plan: Plan, rows: Rows, releaser: Releaser, context: Context):
    if "selection" in plan.notes:
        return plan.notes["selection"].run(plan.notes["inner"], rows, releaser, context)
    cand = plan.notes["candidate"]
    return cand.method.run(plan.notes["inner"], rows, releaser, context)


def details(plan: Plan) -> dict[str, Any]:
    if "selection" in plan.notes:
        report = plan.notes["selection"].report(plan.notes["inner"])
        chosen = report["candidates"][report["chosen"]]
        return {
            "auto": {
                "select": "private",
                "chosen": chosen,
                "selection": report,
                "reason": "chosen by the accounted private selection",
            }
        }
    return {
        "auto": {
            "select": "rule",
            "chosen": plan.settings["chosen"],
            "reason": plan.settings["reason"],
        }
    }


METHOD = register_method(
    Method(
        "auto",
        AutoOptions,
        plan,
        run,
        "picks the head for the budget by a public rule, or by private selection",
        details=details,
    )
)

__all__ = ["METHOD", "choose", "get_method"]
