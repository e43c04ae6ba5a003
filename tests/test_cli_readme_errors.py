"""The README's error texts of ``python -m private_head`` are the real ones: every ``$ python -m
private_head ...`` line of its "From the command line" section followed by an ``error:`` line
is run, and its stderr compared."""

from __future__ import annotations

import os
import re
import shlex

import numpy as np
import pytest

from private_head.cli import main
from tests.helpers import blobs, write_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _examples() -> list[tuple[list[str], str]]:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("### From the command line\n", 1)[1].split("\n### ", 1)[0]
    pairs = re.findall(r"^    \$ python -m private_head (.*)\n    (error: .*)$", section, re.M)
    return [(shlex.split(command), error) for command, error in pairs]


EXAMPLES = _examples()


def test_the_section_has_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize(("argv", "error"), EXAMPLES, ids=[" ".join(a) for a, _ in EXAMPLES])
def test_the_readme_error_is_the_real_one(argv, error, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    x, y = blobs(40, 4, 10, seed=1)
    os.makedirs("features")
    write_store("features/digits-pixels.h5", {"train": (x, y), "test": (x, y)}, 10)
    np.savez("feats.npz", features=x, labels=y)
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    assert code == 2 and capsys.readouterr().err == error + "\n"
