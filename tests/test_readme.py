"""The README says what the code does: its options table is generated from the option types, and
every ```python block runs as pasted, on its own, in an empty folder.

A block may opt out only with a first line ``# readme-test: skip (why)``; the blocks that do are
listed in ``OPTED_OUT`` (a new opt-out fails until it is listed here) and are still compiled.
"""

from __future__ import annotations

import os
import sys
import types

import pytest

from private_head import _registry, available_methods
from private_head.cli import options_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPT_OUT = "# readme-test: skip ("
# The blocks allowed to opt out (by the heading above them), and why.
OPTED_OUT = {"### Backbones and checkpoints": "downloads checkpoints: needs network"}
# Blocks that take more than a few seconds on 2 CPU cores: `make test-all` runs them.
SLOW = {"## Feature extraction (`feature_extract/`)": "extracts mnist5k through the ScatterNet"}


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def python_blocks(text: str) -> dict[str, str]:
    """Every ```python block of ``text`` by the heading above it (``heading #2``, ... for a
    heading's later blocks). Headings are read outside fences only (a shell comment is not one)."""
    blocks: dict[str, str] = {}
    heading, fence, lines = "(top)", None, []
    for line in text.splitlines():
        if fence is None and line.startswith("```"):
            fence, lines = line[3:].strip(), []
        elif fence is not None and line.startswith("```"):
            if fence == "python":
                name, n = heading, 2
                while name in blocks:
                    name, n = f"{heading} #{n}", n + 1
                blocks[name] = "\n".join(lines) + "\n"
            fence = None
        elif fence is not None:
            lines.append(line)
        elif line.startswith("#"):
            heading = line.strip()
    return blocks


BLOCKS = python_blocks(_readme())


def test_the_options_table_is_the_one_the_option_types_generate():
    text = _readme()
    table = text.split("<!-- options table -->\n", 1)[1].split("\n<!-- /options table -->", 1)[0]
    assert table == options_markdown()


def test_only_the_listed_blocks_opt_out_and_they_still_compile():
    opted = {name for name, code in BLOCKS.items() if code.startswith(OPT_OUT)}
    assert opted == set(OPTED_OUT)
    for name in opted:
        compile(BLOCKS[name], f"README {name}", "exec")
    assert set(SLOW) <= set(BLOCKS)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
        for name, code in BLOCKS.items()
        if not code.startswith(OPT_OUT)
    ],
)
def test_python_block_runs_as_pasted(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty folder: the block makes what it needs
    available_methods()  # the built-in methods loaded; a method a block registers is undone after
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    module = types.ModuleType("__readme__")  # a real module: dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(BLOCKS[name], f"README {name}", "exec"), module.__dict__)
