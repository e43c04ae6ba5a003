"""The contract every method keeps, on any fit (docs/architecture.md, "Privacy conventions").

A fit runs on a dataset D with a fixed seed while a ``Recorder`` records every planned release,
each statistic before its noise and the value released; then on each neighbour D' (one row
added, one row removed) with the same seed while the recorder hands back D's released values
(record and replay). Then:

1. every planned draw is made and nothing else is drawn: each release in the report is drawn
   exactly its ``count`` times, in every run;
2. the ledger holds the plan: each reported release has the event, sensitivity, noise std and
   count of the planned release the releaser drew from, and the reported events re-account to
   exactly the reported ``epsilon_spent``;
3. every draw has its planned noise: over D's draws of a release (at least 20 values), the sum
   of squares of ``noise / noise_std`` (a symmetric release: its diagonal, and its upper
   triangle times sqrt(2)) is not in either 1e-6 tail of its chi-square distribution;
4. each statistic moves by at most its sensitivity between D and D' (in L2; a selection's scores,
   monotone counts, by at most 1 each);
5. with the releases fixed, nothing else moves: every artefact of the fit is byte-equal between
   D and D' (``_artifacts``: the head files, the reports, ``repr``, whatever the fit writes).

``check_fit(fit)`` runs it on any fit-like callable (``fit`` with a method bound, ``select`` with
its candidates); ``check_method(name)`` on a registered method through ``fit``. The default data
are Gaussian class blobs (300 rows, 8 features, 3 classes) and its neighbours add a far-out row of
class 0 and remove the last row.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import scipy.stats

from accounting import PrivacyLedger, event_from_dict, event_to_dict
from private_head._api import fit
from private_head._artifacts import Artifacts, Recorder, artifact_differences, fit_artifacts
from private_head._head import PrivateHead
from private_head._method import Method
from private_head._plan import PlannedRelease
from private_head._registry import get_method

Dataset = tuple[np.ndarray, np.ndarray]
NUM_CLASSES = 3
SHOWN = 20  # problems listed in the error
MIN_NOISE_VALUES = 20  # a release's noise is checked over at least this many values ...
NOISE_P_VALUE = 1e-6  # ... and refused when its chi-square is this far in either tail


def contract_data(n: int = 300, dim: int = 8, num_classes: int = NUM_CLASSES, seed: int = 3):
    """Gaussian class blobs ``(x float32 [n, dim], y int32 [n])``: class c around 3 times a
    random unit vector."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    centres *= 3.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, num_classes, n).astype(np.int32)
    return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), y


def neighbours(x: np.ndarray, y: np.ndarray) -> list[Dataset]:
    """``(x, y)`` with a far-out row of class 0 added, and with its last row removed."""
    row = (np.linspace(-5, 7, x.shape[1]) * 3).astype(x.dtype)
    added = (np.vstack([x, row]), np.append(y, 0).astype(np.int32))
    return [added, (x[:-1], y[:-1])]


def check_method(
    method: str | Method[Any, Any],
    options: Mapping[str, Any] | None = None,
    *,
    data: Dataset | None = None,
    num_classes: int | None = None,
    epsilon: float = 1.0,
    delta: float = 1e-5,
    seed: int = 7,
    **fit_options: Any,
) -> None:
    """The contract (module docstring) on the registered ``method`` with ``options``, fitted by
    ``private_head.fit`` (``epsilon = inf`` for a method that is not private); AssertionError
    listing every problem found."""
    name = method if isinstance(method, str) else method.name
    registered = get_method(name)
    if not isinstance(method, str) and registered is not method:
        raise ValueError(f"another method is registered as {name!r}; register this one first")
    bound = functools.partial(fit, method=name, **dict(options or {}), **fit_options)
    eps = epsilon if registered.private else math.inf
    check_fit(bound, data=data, num_classes=num_classes, epsilon=eps, delta=delta, seed=seed)


def check_fit(
    fit: Callable[..., PrivateHead],
    *,
    data: Dataset | None = None,
    num_classes: int | None = None,
    epsilon: float = 1.0,
    delta: float = 1e-5,
    seed: int = 7,
) -> None:
    """The contract (module docstring) on ``fit(x, y, num_classes=, epsilon=, delta=, seed=)``
    (e.g. ``functools.partial(private_head.select, candidates=[...])``), on ``data`` with its
    ``num_classes`` or on the default blobs."""
    if (data is None) != (num_classes is None):
        raise ValueError("check_fit takes data and its (public) num_classes together, or neither")
    x, y = contract_data() if data is None else data
    num_classes = NUM_CLASSES if num_classes is None else num_classes
    kwargs = dict(num_classes=num_classes, epsilon=epsilon, delta=delta, seed=seed)
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as root:
        folders = (os.path.join(root, f"run{i}") for i in itertools.count())

        def run(dataset: Dataset, recorder: Recorder) -> Artifacts:
            return fit_artifacts(fit, recorder, next(folders), *dataset, **kwargs)

        first = Recorder()
        reference = run((x, y), first)
        problems += plan_problems(reference, first) + noise_problems(first)
        for i, neighbour in enumerate(neighbours(x, y)):
            second = Recorder(replay=first.log)
            other = run(neighbour, second)
            found = plan_problems(other, second) + moved_problems(first, second)
            found += artifact_differences(reference, other)
            problems += [f"neighbour {i}: {line}" for line in found]
    if problems:
        shown = "\n".join(problems[:SHOWN])
        raise AssertionError(f"the method contract fails ({len(problems)} problems):\n{shown}")


def plan_problems(artifacts: Artifacts, recorder: Recorder) -> list[str]:
    """Items 1 and 2 of the module docstring for one run."""
    privacy = json.loads(artifacts["privacy"])
    releases = privacy["releases"]
    drawn = [name for name, _ in recorder.log]
    problems = [
        f"release {name!r} was drawn but not charged"
        for name in sorted(set(drawn) - {r["name"] for r in releases})
    ]
    for r in releases:
        name = r["name"]
        if drawn.count(name) != r["count"]:
            problems.append(
                f"release {name!r} was charged {r['count']} draws, made {drawn.count(name)}"
            )
        planned = recorder.planned.get(name)
        if planned is None:
            continue
        charged = (r["event"], r["sensitivity"], r["noise_std"], r["count"])
        plan = (event_to_dict(planned.event), planned.sensitivity, planned.noise_std, planned.count)
        if charged != plan:
            problems.append(f"release {name!r} was charged as {charged}, planned as {plan}")
    if privacy["private"]:
        ledger = PrivacyLedger(privacy["epsilon_budget"], privacy["delta"])
        for r in releases:
            ledger.compose(r["name"], event_from_dict(r["event"]))
        if ledger.epsilon_spent != privacy["epsilon_spent"]:
            problems.append(
                f"the reported releases re-account to epsilon {ledger.epsilon_spent!r}, the "
                f"report says {privacy['epsilon_spent']!r}"
            )
    return problems


def noise_problems(recorder: Recorder) -> list[str]:
    """Item 3 of the module docstring (on a recorded run)."""
    problems = []
    for name, planned in recorder.planned.items():
        if not planned.noise_std:
            continue
        z = np.concatenate(
            [
                _independent(_flat(released) - _flat(statistic), np.shape(statistic), planned)
                for (release, _), (statistic, released) in recorder.log.items()
                if release == name
            ]
        )
        if z.size < MIN_NOISE_VALUES:
            continue
        square = float(np.sum(z * z))  # chi-square with z.size degrees of freedom
        low, high = scipy.stats.chi2.cdf(square, z.size), scipy.stats.chi2.sf(square, z.size)
        if min(low, high) < NOISE_P_VALUE:
            ratio = math.sqrt(square / z.size)
            problems.append(
                f"release {name!r}: its noise has {ratio:.3g} times the planned std "
                f"{planned.noise_std:.4g} (over {z.size} values)"
            )
    return problems


def _independent(noise: np.ndarray, shape: tuple[int, ...], planned: PlannedRelease) -> np.ndarray:
    """``noise / noise_std`` as independent N(0, 1) values when the noise is the planned one: a
    symmetric release's diagonal (std s) and upper triangle times sqrt(2) (std s / sqrt(2))."""
    if planned.symmetric:
        m = noise.reshape(shape)
        upper = m[np.triu_indices(m.shape[0], 1)]
        noise = np.concatenate([np.diag(m), upper * math.sqrt(2)])
    return noise / planned.noise_std


def moved_problems(first: Recorder, second: Recorder) -> list[str]:
    """Item 4 of the module docstring, and the same draws in both runs."""
    if first.log.keys() != second.log.keys():
        return [f"the neighbour drew {sorted(second.log)}, the dataset {sorted(first.log)}"]
    problems = []
    for (name, draw), (statistic, _) in first.log.items():
        moved = _flat(second.log[(name, draw)][0]) - _flat(statistic)
        planned = first.planned[name]
        if planned.sensitivity is None:  # a selection: monotone scores of sensitivity 1
            size, bound = float(np.max(np.abs(moved), initial=0.0)), 1.0 + 1e-6
        else:
            size = float(np.linalg.norm(moved))
            bound = planned.sensitivity * (1 + 1e-5) + 1e-5 * float(
                np.linalg.norm(_flat(statistic))
            )
        if size > bound:
            problems.append(
                f"release {name!r} draw {draw} moved by {size:.6g}, over its sensitivity "
                f"{planned.sensitivity}"
            )
    return problems


def _flat(tree: Any) -> np.ndarray:
    leaves = jax.tree_util.tree_leaves(tree)
    return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in leaves])


__all__ = [
    "check_fit",
    "check_method",
    "contract_data",
    "moved_problems",
    "neighbours",
    "noise_problems",
    "plan_problems",
]
