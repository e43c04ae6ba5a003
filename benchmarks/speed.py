"""The speed suite (``make bench-speed``): every speed measurement in one run, one report.

Sections, each a module with ``main(argv) -> result`` run with its own defaults (small on CPU):

    head        benchmarks.head_speed     private vs non-private step, kernel vs vmap reference
    fit         benchmarks.fit_speed      fit end to end: first fit of a process (compilations
                                          on their own line) and repeated fit, beside X.sum(0)
                                          and a raw h5py read
    extract     benchmarks.extract_speed  backbone images/s, end-to-end extraction
    store       benchmarks.store_speed    streamed clipped gradient vs raw h5py read (GB/s)
    accounting  benchmarks.accounting_speed  sigma calibration time, full batch and Poisson
    opacus      benchmarks.opacus_speed   Opacus DP step vs ours (needs the compare extra)

A missing module is reported as absent, one that returns ``{"skipped": why}`` as skipped, a failing
one as failed (the others still run). Ratios are
collected from every section's results (keys containing ``ratio`` or ``_over_``), so each ratio
is between two times measured in the same run on the same device. The report (device, versions,
ratios, absolute figures) is printed and saved as ``benchmarks/results/speed-<UTC time>.json``
and ``.md``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import math
import os
import platform
import time
import traceback
from collections.abc import Iterator
from typing import Any

from benchmarks.cli import Parser, choices_list

SECTIONS = {
    "head": "benchmarks.head_speed",
    "fit": "benchmarks.fit_speed",
    "extract": "benchmarks.extract_speed",
    "store": "benchmarks.store_speed",
    "accounting": "benchmarks.accounting_speed",
    "opacus": "benchmarks.opacus_speed",
}


def run_section(module_name: str) -> dict[str, Any]:
    """``{"status", "seconds", "result"}`` of ``module.main([])``; never raises."""
    if importlib.util.find_spec(module_name) is None:
        return {"status": "absent", "seconds": 0.0, "result": None}
    start = time.perf_counter()
    try:
        result = importlib.import_module(module_name).main([])
        status = "skipped" if isinstance(result, dict) and "skipped" in result else "ok"
    except Exception:  # noqa: BLE001 - one failing section must not hide the others
        result, status = traceback.format_exc(limit=3), "failed"
    return {"status": status, "seconds": time.perf_counter() - start, "result": result}


def _items(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` pairs of nested dicts and lists; list items named by their ``what``."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _items(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            label = item.get("what", item.get("kind", i)) if isinstance(item, dict) else i
            yield from _items(item, f"{path}[{label}]")
    else:
        yield path, value


def ratios(sections: dict[str, dict[str, Any]]) -> list[tuple[str, float]]:
    """Every numeric result whose name contains ``ratio`` or ``_over_``."""
    out = []
    for name, section in sections.items():
        if section["status"] != "ok":
            continue
        for path, value in _items(section["result"]):
            leaf = path.rsplit(".", 1)[-1]
            if (
                ("ratio" in leaf or "_over_" in leaf)
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
            ):
                out.append((f"{name}: {path}", float(value)))
    return out


def environment() -> dict[str, Any]:
    """Device and versions, for the report's header."""
    import h5py
    import jax
    import numpy as np

    devices = jax.devices()
    versions = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
    }
    for module in ("jaxlib", "dp_accounting", "flax", "torch", "opacus"):
        with contextlib.suppress(Exception):
            versions[module] = importlib.import_module(module).__version__
    return {
        "device": f"{devices[0].device_kind} x{len(devices)} ({devices[0].platform})",
        "host": f"{platform.machine()}, {os.cpu_count()} cpu(s)",
        "versions": versions,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value).replace("|", "/").replace("\n", " ")


def _table(rows: list[dict[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return lines


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, dict) for r in value)


def _result_lines(result: Any) -> list[str]:
    """A section's result as markdown: a dict's scalars as one row, each list of dicts as a table;
    anything else (a traceback) verbatim."""
    if _is_rows(result):
        return _table(result)
    if isinstance(result, dict):
        scalars = {k: v for k, v in result.items() if not _is_rows(v)}
        lines = _table([scalars]) if scalars else []
        for value in result.values():
            if _is_rows(value):
                lines += ["", *_table(value)]
        return lines
    return [] if result is None else ["```", str(result), "```"]


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: header, ratio table, one table per section."""
    env = report["environment"]
    lines = [
        "# Speed suite",
        "",
        f"Device: {env['device']}; host: {env['host']}; {env['time']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + ".",
        "Command: `python -m benchmarks speed` (make bench-speed).",
        "",
        "## Ratios (both sides measured in this run)",
        "",
        "| measurement | ratio |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:.3g} |" for name, value in report["ratios"]]
    for name, section in report["sections"].items():
        lines += ["", f"## {name} ({section['status']}, {section['seconds']:.1f}s)", ""]
        lines += _result_lines(section["result"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m benchmarks speed", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--only",
        type=choices_list(list(SECTIONS)),
        default=",".join(SECTIONS),
        help="comma list of sections",
    )
    p.add_argument(
        "--out-dir", default=os.path.join("benchmarks", "results"), help="where the report goes"
    )
    args = p.parse_args(argv)
    chosen = args.only
    sections = {}
    for name in chosen:
        print(f"== {name} ({SECTIONS[name]})", flush=True)
        sections[name] = run_section(SECTIONS[name])
    report = {"environment": environment(), "sections": sections, "ratios": ratios(sections)}
    text = markdown(report)
    print(text)
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, "speed-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(stem + ".md", "w") as f:
        f.write(text)
    print(f"wrote {stem}.json and {stem}.md")
    return 1 if any(s["status"] == "failed" for s in sections.values()) else 0


if __name__ == "__main__":
    from benchmarks.cli import guard

    raise SystemExit(guard(main))
