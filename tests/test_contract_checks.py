"""``private_head.testing.check_method`` can fail: a method that understates a sensitivity or lets
the row count into its head, and a releaser that draws less noise than planned, are caught, with
what is wrong."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import pytest

import private_head as ph
from private_head import _registry, _release
from private_head.testing import check_method

SUMS = "broken/class_sums"


@dataclass(frozen=True, kw_only=True)
class BrokenOptions(ph.Options):
    """What is broken."""

    fault: str = ph.option("none", "the fault", choices=("none", "sensitivity", "count"))


def plan(options, public, allowance):
    r = public.feature_norm
    declared = r / 4 if options.fault == "sensitivity" else r  # one row moves a sum by r
    release = ph.PlannedRelease.gaussian(SUMS, declared, allowance.gaussian_std(declared))
    return ph.Plan((release,), options)


def run(plan, rows, releaser, context):
    sums, _ = rows.sum(ph.ClassSumsAndCounts(rows.num_classes), None, context.preprocessing)
    noisy = releaser.release(SUMS, sums)
    bias = jnp.zeros(rows.num_classes)
    if plan.settings.fault == "count":  # the true row count in the head
        bias = bias + rows.global_rows
    return ph.Fitted(noisy.T, bias)


@pytest.fixture
def broken():
    ph.available_methods()  # the built-in methods are loaded first, and stay
    method = ph.register_method(ph.Method("broken", BrokenOptions, plan, run, "broken"))
    yield method
    del _registry._REGISTRY[method.name]


def test_a_correct_method_passes(broken):
    check_method(broken)


@pytest.mark.parametrize(
    ("fault", "match"),
    [
        ("sensitivity", "'broken/class_sums' draw 0 moved by .*, over its sensitivity 0.25"),
        ("count", r"head.npz: .*bytes differ|privacy|repr"),
    ],
)
def test_a_broken_method_is_caught_with_what_is_wrong(broken, fault, match):
    with pytest.raises(AssertionError, match=match):
        check_method(broken, {"fault": fault})


def test_a_method_registered_under_the_name_of_another_is_refused(broken):
    other = dataclasses.replace(broken, summary="another")
    with pytest.raises(ValueError, match="another method is registered as 'broken'"):
        check_method(other)


def test_noise_below_the_planned_std_is_caught(monkeypatch):
    honest = _release.gaussian_noise_like
    monkeypatch.setattr(
        _release, "gaussian_noise_like", lambda key, tree, std: honest(key, tree, std / 2)
    )
    jax.clear_caches()  # the noisy release is compiled: trace it anew with the patched noise
    try:
        with pytest.raises(
            AssertionError,
            match=r"'dp_gd/clipped_gradient_sums': its noise has 0\.[3-6]\d* times the planned std",
        ):
            check_method("dp_gd", {"steps": 3})
    finally:
        monkeypatch.undo()
        jax.clear_caches()
