"""What the command line prints after a training run: the summary on stdout (nothing there
depends on the private data except through charged releases: it is part of the whole artefact,
docs/architecture.md) and the operator line on stderr (never to be published)."""

from __future__ import annotations

from typing import Any


def _chosen_text(chosen: Any) -> str:
    """``method(option=value, ...)`` with only the options set (None: the method's rule)."""
    if not isinstance(chosen, dict):
        return str(chosen)
    given = ", ".join(f"{k}={v}" for k, v in chosen.items() if k != "method" and v is not None)
    return f"{chosen.get('method')}({given})"


def _noise_multiplier(event: dict[str, Any]) -> float:
    """sigma of a ``[self_composed] gaussian`` event (as ``accounting.event_to_dict`` writes it)."""
    while event["type"] != "gaussian":
        event = event["event"]
    return event["noise_multiplier"]


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _seeded(p: dict[str, Any]) -> str:
    if p["seeded"] and p["private"]:
        return "seeded True (the noise is reproducible from the seed: see the warning)"
    return f"seeded {p['seeded']}"


def summary(result: dict[str, Any]) -> str:
    """The lines printed on stdout after a run (module docstring)."""
    p, test = result["privacy"], result["test"]
    lines = [f"features  {result['features']} ({result['num_classes']} classes)"]
    if test["top1"] is None:
        lines.append("test      no test rows: not evaluated")
    else:
        lines.append(
            f"test      top-1 {test['top1']:.4f}  top-5 {test['top5']:.4f} "
            f"({test['num_rows']} rows of {test['split']!r})"
        )
    mu = "n/a (PLD)" if p["mu"] is None else _num(p["mu"])
    lines.append(
        f"privacy   method {p['method']}: epsilon {_num(p['epsilon_spent'])} of "
        f"{_num(p['epsilon_budget'])}, delta {p['delta']:g} ({result['delta_rule']}), mu {mu}, "
        f"accountant {p['accountant']}, {_seeded(p)}"
    )
    size = p["dataset_size"]
    if size["source"] == "noisy_count":
        lines.append(
            f"  size    noisy count {size['value']:g} (noise std {size['noise_std']:.3g}, "
            f"{size['budget_fraction']:g} of mu^2), the divisor"
        )
    elif size["source"] == "public":
        lines.append(f"  size    public dataset_size {size['value']}, the divisor")
    if "auto" in p:
        lines.append(f"  auto    chose {_chosen_text(p['auto']['chosen'])}: {p['auto']['reason']}")
    for r in p["releases"]:
        if r["description"] is None:  # a Gaussian release
            lines.append(
                f"  release {r['name']}: sensitivity {_num(r['sensitivity'])}, noise std "
                f"{_num(r['noise_std'])}, noise multiplier {_num(_noise_multiplier(r['event']))},"
                f" count {r['count']}"
            )
        else:
            lines.append(f"  release {r['name']}: {r['description']}")
    lines += [f"warning   {w}" for w in p.get("warnings", [])]
    lines.append(
        f"wrote     {result['head_file']}, {result['result_file']} and the privacy statement "
        f"{result['statement_file']}"
    )
    lines.append(f"spent so far on this dataset: {result['dataset_budget']['spent_so_far']}")
    return "\n".join(lines)


def operator_line(log: dict[str, Any]) -> str:
    """The one line printed on stderr: the data path and the time, which depend on the private
    data (never publish them)."""
    passes = f"{log['passes']} pass{'' if log['passes'] == 1 else 'es'}"
    return (
        f"operator  (do not publish: depends on the private data) rows {log['rows']} "
        f"({log['dtype']}), chunks of {log['chunk_rows']} rows (at most {log['chunk_rows_max']}), "
        f"{passes}, fit {log['seconds']:.2f} s; {log['file']}"
    )


__all__ = ["operator_line", "summary"]
