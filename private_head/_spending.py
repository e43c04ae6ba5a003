"""A fit's entry in its dataset's budget across runs (``accounting.budget_file``;
docs/architecture.md, "A dataset's budget across runs").

    with dataset_spending(path, total_epsilon, method=..., ...) as settle:
        ... read the rows, train ...
        settle(ledger)

Before the body runs (so before any row is read) the fit's whole budget is reserved in the budget
file, which refuses it (``BudgetExceededError``) when the dataset's total would pass its cap; the
plan's cost is known before the run: ``mu_from_epsilon(epsilon, delta)`` for a GDP method, its
(epsilon, delta) otherwise. ``settle(ledger)`` records what the ledger spent; an exception in the
body marks the entry ``failed`` (still charged). A fit on a store uses ``<store>.budget.json``, a
fit on arrays in files the features file's (``X.npy.budget.json``, ``F.npz.budget.json``, every
split of a ``.npz`` together, as a store's splits are); a fit on arrays in memory keeps no budget
unless given ``budget_file``. With several JAX processes, process 0
reads and writes the file and every process gets its answer.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from accounting import BudgetExceededError, mu_from_epsilon
from accounting.budget_file import BudgetFile, budget_path, run_entry
from feature_extract import store
from private_head._budget import Ledger
from private_head._data_files import is_array_file, split_spec
from private_head._method import Method
from private_head._rows import is_store_spec

Settle = Callable[[Ledger], None]


def budget_target(features: Any, split: str, budget_file: Any) -> tuple[str | None, str | None]:
    """``(budget file, split)`` of a fit: ``budget_file`` when given, else the store's or the
    array file's, else None; the split read (None for arrays in memory)."""
    if is_array_file(features):
        path, named = split_spec(features)
        return budget_path(path if budget_file is None else budget_file), named or split
    if not is_store_spec(features):
        return (None if budget_file is None else budget_path(budget_file)), None
    path, split = store.parse_store_path(os.fspath(features), split)
    return budget_path(path if budget_file is None else budget_file), split


def _on_process_0(fn: Callable[[], Any]) -> Any:
    """``fn()`` on process 0; its failure is raised on every process."""
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils

    result, error = None, None
    if jax.process_index() == 0:
        try:
            result = fn()
        except ValueError as err:
            error = err
    failed = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
    if error is not None:
        raise error
    if failed:
        raise BudgetExceededError("process 0 refused this fit (see its error: the budget file)")
    return result


@contextlib.contextmanager
def dataset_spending(
    path: str | None,
    total_epsilon: float | None,
    *,
    method: Method,
    split: str | None,
    epsilon: float,
    delta: float,
    seeded: bool,
) -> Iterator[Settle]:
    """Reserve, run the body, settle (module docstring)."""
    if path is None:
        if total_epsilon is not None:
            raise ValueError(
                "total_epsilon caps a dataset's budget across runs, kept in a budget file: fit "
                "on a store, or pass budget_file= for arrays"
            )
        yield lambda ledger: None
        return
    budget = BudgetFile(path)
    gdp = method.gaussian and method.private
    reserved = run_entry(
        method=method.name,
        split=split,
        private=method.private,
        seeded=seeded,
        accountant="gdp" if gdp else ("pld" if method.private else "none"),
        epsilon=epsilon,
        delta=delta,
        mu=mu_from_epsilon(epsilon, delta) if gdp else (math.inf if not method.private else None),
    )
    run_id = _on_process_0(lambda: budget.reserve(reserved, total_epsilon))
    settled = []

    def settle(ledger: Ledger) -> None:
        spent = (
            {
                "epsilon": ledger.epsilon_spent,
                "mu": ledger.mu,
                "accountant": ledger.accountant,
            }
            if method.private
            else {}
        )
        if jax.process_index() == 0:
            budget.settle(run_id, "done", spent)
        settled.append(True)

    try:
        yield settle
    except BaseException:
        if not settled and jax.process_index() == 0:
            with contextlib.suppress(ValueError):  # unmarked, it stays "running": charged too
                budget.settle(run_id, "failed")
        raise


__all__ = ["budget_target", "dataset_spending"]
