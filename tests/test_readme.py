"""The README says what the code does: its options table is generated from the option types, and
its Python snippets run as pasted (in a fresh folder, after `make features`)."""

from __future__ import annotations

import os
import re

import pytest

from private_head.cli import options_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_the_options_table_is_the_one_the_option_types_generate():
    text = _readme()
    table = text.split("<!-- options table -->\n", 1)[1].split("\n<!-- /options table -->", 1)[0]
    assert table == options_markdown()


def _snippet(after: str) -> str:
    text = _readme()
    start = text.index(after)
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    return block.group(1)


@pytest.mark.parametrize(
    "heading",
    ["## Feature extraction (`feature_extract/`)", "### Your own images", "### From Python"],
)
def test_python_snippets_run_as_pasted(heading, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from feature_extract import extract

    extract(
        "digits", "pixels", "features/digits-pixels.h5", splits=("train", "test"), progress=False
    )  # what `make features DATA=digits MODEL=pixels` leaves
    exec(compile(_snippet(heading), f"README {heading}", "exec"), {})
