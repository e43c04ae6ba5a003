"""The privacy statement beside every head, the report's warnings (a seeded run, a void
epsilon) wherever a head is described, and the progress bar: public counts on stderr only."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

import private_head
from private_head import PrivateHead, cli
from private_head._statement import VOID_EPSILON
from private_head.testing import check_neighbours, fit_artifacts, neighbours
from tests.helpers import blobs, numbers_in, write_store

K, D = 3, 5


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    x, y = blobs(77, D, K, seed=2)
    path = tmp_path_factory.mktemp("statement") / "s.h5"
    return write_store(path, {"train": (x, y)}, K)


def test_the_statement_says_what_on_what_at_which_budget_and_not_the_row_count(store_path):
    head = private_head.fit(
        f"{store_path}:train", num_classes=K, epsilon=2.0, delta=1e-6, method="auto"
    )
    text = head.privacy_statement()
    assert "`auto`, which chose `" in text and f"({D} features -> {K} classes)" in text
    assert "The feature store split `s.h5:train`" in text and "s.h5" in text
    assert "**(2, 1e-06)-differential privacy**" in text and "add-or-remove-one" in text
    assert "not published: the methods divided by a noisy count" in text
    assert "not seeded" in text and "Warnings" not in text
    assert 77 not in numbers_in(text) and "Not protected" in text
    path = head.save(store_path + ".head.npz")
    with open(store_path + ".head.privacy.md") as f:
        assert f.read() == text == private_head.load(path).privacy_statement()


def test_a_seeded_head_says_its_guarantee_needs_the_seed_secret_everywhere(tmp_path, capsys):
    x, y = blobs(60, D, K)
    head = private_head.fit(
        x, y, method="single_step", num_classes=K, epsilon=2.0, delta=1e-5, seed=3
    )
    (warning,) = head.privacy["warnings"]
    assert "reproducible from the seed" in warning and "seed stays secret" in warning
    assert "the guarantee holds only while the seed stays secret" in head.privacy_statement()
    assert "seeded=True (noise reproducible from the seed)" in repr(head)
    path = write_store(tmp_path / "s.h5", {"train": (x, y)}, K)
    assert cli.main(["--features", path, "--epsilon", "2", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "seeded True (the noise is reproducible from the seed" in out
    assert f"warning   {warning}" in out
    unseeded = private_head.fit(x, y, method="single_step", num_classes=K, epsilon=2.0, delta=1e-5)
    assert unseeded.privacy["warnings"] == [] and "seeded=False" in repr(unseeded)


def test_an_epsilon_above_the_threshold_warns_that_the_guarantee_is_void(tmp_path, capsys):
    x, y = blobs(60, D, K)
    with pytest.warns(UserWarning, match="guarantee is void"):
        head = private_head.fit(x, y, method="single_step", num_classes=K, epsilon=1e9, delta=1e-5)
    (warning,) = head.privacy["warnings"]
    assert warning.startswith(f"epsilon 1e+09 is above {VOID_EPSILON:g}: the guarantee is void")
    assert warning in head.privacy_statement()
    path = write_store(tmp_path / "s.h5", {"train": (x, y)}, K)
    with pytest.warns(UserWarning):
        assert cli.main(["--features", path, "--epsilon", "1e9"]) == 0
    assert f"warning   {warning}" in capsys.readouterr().out
    assert (
        private_head.fit(
            x, y, method="single_step", num_classes=K, epsilon=VOID_EPSILON, delta=1e-5
        ).privacy["warnings"]
        == []
    )


def test_a_nonprivate_head_says_it_has_no_guarantee():
    x, y = blobs(60, D, K)
    head = private_head.fit(x, y, num_classes=K, epsilon=math.inf, delta=1e-5, method="nonprivate")
    assert "**Guarantee: none.**" in head.privacy_statement()


def test_the_whole_artefact_contract_compares_the_statement(tmp_path, monkeypatch):
    """A statement that depended on the row count would be caught between neighbours."""
    x, y = blobs(40, D, K, seed=6)
    count = itertools.count()
    true_rows = []

    def run(data, recorder):
        folder = tmp_path / f"run{next(count)}"
        true_rows.append(len(data[0]))
        fit = dict(num_classes=K, epsilon=1.0, delta=1e-5, seed=7)
        return fit_artifacts(private_head.fit, recorder, folder, *data, **fit)

    check_neighbours(run, (x, y), neighbours(x, y))
    statement = PrivateHead.privacy_statement

    def leaky(head):
        return statement(head) + f"\n{true_rows[-1]} rows\n"  # the true N, leaked

    monkeypatch.setattr(PrivateHead, "privacy_statement", leaky)
    with pytest.raises(AssertionError, match="statement"):
        check_neighbours(run, (x, y), neighbours(x, y))


def test_progress_is_a_bar_of_public_counts_on_stderr(capsys):
    x, y = blobs(60, D, K)
    fit = dict(num_classes=K, epsilon=2.0, delta=1e-5, seed=1)
    private_head.fit(x, y, method="dp_gd", steps=3, **fit)
    captured = capsys.readouterr()
    assert "fit dp_gd: 3/3 releases" in captured.err and captured.out == ""
    assert not re.search(r"\d+:\d\d|it/s|s/it", captured.err)  # no times, no rates
    private_head.fit(x, y, method="dp_gd", steps=3, progress=False, **fit)
    private_head.fit(x, y, method="single_step", **fit)  # one release: no bar
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(
        private_head.fit(x, y, method="dp_gd", steps=3, **fit).weights,
        private_head.fit(x, y, method="dp_gd", steps=3, progress=False, **fit).weights,
    )


def test_the_command_line_shows_progress_unless_quiet(tmp_path, capsys):
    path = write_store(tmp_path / "s.h5", {"train": blobs(60, D, K)}, K)
    argv = ["--features", path, "--epsilon", "2", "--method", "dp_gd", "--steps", "4"]
    assert cli.main(argv) == 0
    assert "fit dp_gd: 4/4 releases" in capsys.readouterr().err
    assert cli.main([*argv, "--quiet"]) == 0
    assert "releases" not in capsys.readouterr().err
