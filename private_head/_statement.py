"""What a head's guarantee means, in words: the warnings of its privacy report and its privacy
statement, a short Markdown file written beside every saved head (docs/architecture.md, "The
privacy statement").

Both are functions of the head's report alone (the privacy report and the settings: public
inputs and charged releases), so they are equal between neighbouring datasets with the releases
replayed, like every other artefact; they never hold the true row count or the seed.

**A void epsilon.** Above ``VOID_EPSILON`` = 20 the guarantee says nothing useful: it bounds how
much seeing the head can raise an attacker's odds that a given row was in the data, by a factor
``e^20 = 4.9e8``, and, read as GDP at delta 1e-5 (mu = 3.45), it allows a membership test that is
right 87% of the time with 1% false alarms. The published linear-probe results use epsilon <= 10
(Mehta et al. 2022), the benchmarks here at most 8.

**A seeded head.** Its noise is reproducible from the seed: the guarantee holds only while the
seed stays secret.
"""

from __future__ import annotations

from typing import Any

from accounting.gdp import epsilon_from_mu

VOID_EPSILON = 20.0
STATEMENT_SUFFIX = ".privacy.md"


def guarantee_warnings(epsilon: float, private: bool, seeded: bool) -> list[str]:
    """The report's ``warnings``: a void epsilon and a seeded run (module docstring)."""
    out = []
    if private and epsilon > VOID_EPSILON:
        out.append(
            f"epsilon {epsilon:g} is above {VOID_EPSILON:g}: the guarantee is void (an attacker "
            f"may become almost sure whether any one row was in the data); treat this head as "
            "not private"
        )
    if private and seeded:
        out.append(
            "seeded: the noise is reproducible from the seed, so the guarantee holds only while "
            "the seed stays secret; never publish the seed, or a head trained with a seed others "
            "know, as private"
        )
    return out


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _trained_on(data: dict[str, Any] | None) -> str:
    if not data or data.get("kind") == "arrays":
        return "Arrays passed to `private_head.fit` (not named)"
    if data["kind"] == "array_file":
        return f"The arrays of `{data['name']}`"
    facts = [f"{k} `{data[k]}`" for k in ("dataset", "backbone") if data.get(k)]
    return f"The feature store split `{data['name']}`" + (f" ({', '.join(facts)})" if facts else "")


def _trained_by(privacy: dict[str, Any]) -> str:
    if "auto" in privacy:
        chosen = privacy["auto"]["chosen"]
        name = chosen.get("method") if isinstance(chosen, dict) else chosen
        return f"`auto`, which chose `{name}` ({privacy['auto']['reason']})"
    if "selection" in privacy:
        return f"`{privacy['method']}`, chosen by a private selection (charged)"
    return f"`{privacy.get('method')}`"


def _size(privacy: dict[str, Any]) -> str:
    source = (privacy.get("dataset_size") or {}).get("source")
    if source == "public":
        return (
            f"The trainer declared the dataset size {privacy['dataset_size']['value']} public; "
            "the methods divided by it (a constant: the guarantee does not depend on it)."
        )
    if source == "noisy_count":
        return (
            "The number of training rows is not published: the methods divided by a noisy "
            "count, a release charged to the budget."
        )
    if source == "true_count_not_private":
        return "The true number of training rows was used (the non-private method)."
    return "How the methods divided by the row count is not recorded."


def _guarantee(privacy: dict[str, Any]) -> list[str]:
    eps, delta, mu = privacy.get("epsilon_spent"), privacy.get("delta"), privacy.get("mu")
    gdp = f", equivalently {_number(mu)}-GDP" if isinstance(mu, float) else ""
    lines = [
        f"- **({_number(eps)}, {_number(delta)})-differential privacy**{gdp} (accountant "
        f"`{privacy.get('accountant')}`), under **add-or-remove-one adjacency**: whether or not "
        "any one training row (its features and its label) was in the data, the head and its "
        "report have nearly the same distribution.",
    ]
    if isinstance(mu, float):
        replace = epsilon_from_mu(2 * mu, delta)
        lines.append(
            f"- Under replace-one adjacency (one row changed): {_number(2 * mu)}-GDP, "
            f"epsilon {_number(replace)} at delta {_number(delta)}."
        )
    return lines


def _releases(privacy: dict[str, Any]) -> list[str]:
    lines = []
    for r in privacy.get("releases", []):
        if r.get("description") is not None:
            lines.append(f"- `{r['name']}`: {r['description']}")
        else:
            lines.append(
                f"- `{r['name']}`: Gaussian noise of std {_number(r.get('noise_std'))} on a sum "
                f"of sensitivity {_number(r.get('sensitivity'))}, {r.get('count')} time(s)"
            )
    return lines


NOT_PROTECTED = (
    "- the test split and any accuracy measured on it (never evaluate on private data);",
    "- the backbone and its pretraining data, the label space, the hyperparameters (public by "
    "design);",
    "- the feature store or array file itself: it holds the private embeddings in the clear;",
    "- timing, memory and the operator log (`*.operator.json`): never publish them;",
    "- error messages that name rows;",
    "- floating-point attacks on the noise sampler (float32 Gaussian noise, no discrete Gaussian).",
)


def privacy_statement(report: dict[str, Any]) -> str:
    """The Markdown statement of a head's report (``PrivateHead.report()``)."""
    privacy, settings = report["privacy"], report["settings"]
    shape = f"{report['dim']} features -> {report['num_classes']} classes"
    lines = [
        f"# Privacy statement: a linear head trained by {privacy.get('method')}",
        "",
        f"**What.** A linear classifier head ({shape}) trained by {_trained_by(privacy)}.",
        "",
        f"**On what.** {_trained_on(settings.get('data'))}. {_size(privacy)}",
        "",
    ]
    if not privacy.get("private"):
        lines += [
            "**Guarantee: none.** This head was trained without privacy (`nonprivate`, "
            "epsilon = inf): it may reveal any training row. Do not publish it as private.",
            "",
        ]
    else:
        noise = (
            "reproducible from the seed given: **the guarantee holds only while the seed stays "
            "secret**"
            if privacy.get("seeded")
            else "keyed by 64 bits from the operating system's secure random source (not seeded)"
        )
        lines += [
            "**Guarantee.**",
            "",
            *_guarantee(privacy),
            f"- The noise is {noise}.",
            "",
            "**Released** (every statistic computed from the private rows, each charged):",
            "",
            *_releases(privacy),
            "",
            "**Not protected:**",
            "",
            *NOT_PROTECTED,
            "",
        ]
    warnings = privacy.get("warnings") or []
    if warnings:
        lines += ["**Warnings:**", "", *[f"- {w}" for w in warnings], ""]
    lines.append(
        "The JSON report inside the head file is the machine-readable record (every release as a "
        "dp-accounting event). The guarantee assumes finite rows and labels in [0, K)."
    )
    return "\n".join(lines) + "\n"


def statement_path(head_path: str) -> str:
    """``features/x.auto.eps4.npz`` -> ``features/x.auto.eps4.privacy.md``."""
    stem, _ = _split_suffix(head_path)
    return stem + STATEMENT_SUFFIX


def _split_suffix(path: str) -> tuple[str, str]:
    for suffix in (".npz", ".hdf5", ".h5"):
        if path.endswith(suffix):
            return path[: -len(suffix)], suffix
    return path, ""


__all__ = [
    "STATEMENT_SUFFIX",
    "VOID_EPSILON",
    "guarantee_warnings",
    "privacy_statement",
    "statement_path",
]
