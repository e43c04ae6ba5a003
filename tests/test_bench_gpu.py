"""``python -m benchmarks.gpu --tiny`` runs every section end to end and writes both reports.

The GPU run happens rarely and on a machine lent for minutes; this keeps its script from rotting.
No timing value is asserted: only that every section measured numbers or says why it did not.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu import SECTIONS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--tiny", "--out-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, out


def _numbers(row: dict) -> list[float]:
    return [
        v
        for k, v in row.items()
        if k != "seconds" and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]


@pytest.mark.slow
def test_tiny_run_exits_cleanly(tiny_run):
    proc, _ = tiny_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


@pytest.mark.slow
def test_every_section_has_numbers_or_a_skip_reason(tiny_run):
    _, out = tiny_run
    report = json.loads((out / "results.json").read_text())
    assert report["environment"]["plan"]["name"] == "tiny"
    assert report["environment"]["versions"]["jax"]
    assert set(report["sections"]) == set(SECTIONS)
    for name, section in report["sections"].items():
        assert section["status"] in ("ok", "skipped"), (name, section)
        if section["status"] == "skipped":
            assert section["reason"].startswith("skipped:"), (name, section)
            continue
        assert section["rows"], name
        for row in section["rows"]:
            assert row["status"] in ("ok", "skipped"), (name, row)
            if row["status"] == "skipped":
                assert row["reason"].startswith("skipped:"), (name, row)
            else:
                numbers = _numbers(row)
                assert numbers and all(math.isfinite(v) for v in numbers), (name, row)
    for name in ("matmul", "head", "fit", "extract"):  # nothing optional: these always run
        assert report["sections"][name]["status"] == "ok", name


@pytest.mark.slow
def test_targets_and_markdown_table(tiny_run):
    _, out = tiny_run
    report = json.loads((out / "results.json").read_text())
    claims = [t["claim"] for t in report["targets"]]
    assert any("private / non-private" in c for c in claims)
    assert any("fit single_step" in c for c in claims)
    assert any("Opacus" in c for c in claims) and any("timm" in c for c in claims)
    for t in report["targets"]:
        assert t["pass"] in (True, False, None) and t["target"]
    head = [t for t in report["targets"] if t["claim"].startswith("private / non-private")]
    assert all(t["measured"] is not None for t in head)  # the head section ran
    table = (out / "table.md").read_text()
    assert "## Targets" in table and "| claim | target | measured | result |" in table
    for name in SECTIONS:
        assert f"## {name} (" in table
