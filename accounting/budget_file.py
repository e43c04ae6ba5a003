"""A dataset's budget across runs: a JSON file beside the store, ``<store>.budget.json``.

Every fit on the store records one run: its ``method``, ``split``, whether it was ``private`` and
``seeded``, its ``accountant``, what it spent (``epsilon``, ``delta``, and ``mu`` when it is GDP),
its ``status`` and the UTC ``time``. The runs compose sequentially, whatever their split
(conservative: disjoint splits would compose in parallel):

- **every counted run is GDP** (it has a mu): ``mu = sqrt(sum_i mu_i^2)``, converted to epsilon
  with the analytic Gaussian curve at the cap's delta (without a cap: the smallest delta of the
  runs) — exact;
- **otherwise basic composition**: ``epsilon = sum_i epsilon_i`` and ``delta = sum_i delta_i``
  (a PLD run, e.g. Poisson-sampled steps, has no mu to compose exactly); the total says so.

A non-private run is recorded and listed but not counted: its head has no guarantee at all, so
it must never be published (and a capped dataset refuses it). A seeded run is counted and marked.

**The cap.** ``reserve(run, total_epsilon=X)`` sets a cap of ``(X, the run's delta)`` when the file
has none; the cap then holds for every later run, with or without ``total_epsilon`` (another X
is refused: changing a cap is a deliberate edit of the file). A run is admitted when the total
with it stays within the cap (GDP: ``epsilon(mu_total, cap delta) <= X``; basic: both sums within
the cap), else ``BudgetExceededError`` and nothing is written.

**A fit's entry.** Before it reads a row a fit reserves its entry (``status: running``, charged
its whole budget: ``mu_from_epsilon(epsilon, delta)`` for a GDP method); afterwards it settles it
(``done``, with what its ledger spent) or marks it ``failed``, which stays charged (a failed fit
may have read rows and computed releases). An interrupted fit stays ``running``, and charged.

**Concurrency.** Every read-modify-write holds ``flock`` on ``<file>.lock`` and replaces the file
atomically (a temporary file in the same folder, fsync, ``os.replace``): fits that append at the
same time lose nothing, and a reader never sees half a file.

**What it protects.** It is bookkeeping for honest users, like the budget managers of OpenDP and
Tumult: it keeps an analyst from spending a dataset's budget twice by accident. It is no defence
against someone who deletes or edits the file, or fits on a copy of the data.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import math
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from accounting.gdp import epsilon_from_mu
from accounting.ledger import BudgetExceededError

FORMAT = "dp-linear-probe budget/1"
SUFFIX = ".budget.json"
_TOLERANCE = 1e-9
STATUSES = ("running", "done", "failed")


def budget_path(path: str | os.PathLike) -> str:
    """The budget file of a store (``<store>.budget.json``); a budget file's own path as is."""
    path = os.fspath(path)
    return path if path.endswith(SUFFIX) else path + SUFFIX


def now() -> str:
    """The UTC time, to the second, in ISO 8601."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _number(value: Any) -> float | None:
    """A JSON number, or ``"inf"``, as a float (None stays None)."""
    if value is None:
        return None
    return math.inf if value == "inf" else float(value)


def _json_number(value: float | None) -> float | str | None:
    if value is None:
        return None
    return "inf" if math.isinf(value) else float(value)


@dataclass(frozen=True)
class Total:
    """What the counted runs spent together (module docstring)."""

    epsilon: float
    delta: float
    mu: float | None
    composition: str  # "gdp", "basic", or "none" (nothing counted yet)
    private_runs: int
    nonprivate_runs: int
    unsettled_runs: int  # running (or interrupted) and failed runs, counted

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon": _json_number(self.epsilon),
            "delta": self.delta,
            "mu": _json_number(self.mu),
            "composition": self.composition,
            "private_runs": self.private_runs,
            "nonprivate_runs": self.nonprivate_runs,
            "unsettled_runs": self.unsettled_runs,
        }

    def short(self) -> str:
        """``epsilon E at delta D (GDP, exact)`` or ``epsilon E, delta D (basic composition)``."""
        if self.composition == "basic":
            return f"epsilon {self.epsilon:.6g}, delta {self.delta:g} (basic composition)"
        return f"epsilon {self.epsilon:.6g} at delta {self.delta:g} (GDP, exact)"

    def describe(self) -> str:
        """One line, e.g. ``epsilon 5.66 at delta 1e-05 (mu 1.31: GDP composition of 2 private
        runs, exact)``."""
        runs = f"{self.private_runs} private run{'' if self.private_runs == 1 else 's'}"
        if self.composition == "none":
            text = "nothing (no private run recorded)"
        elif self.composition == "gdp":
            text = (
                f"epsilon {self.epsilon:.6g} at delta {self.delta:g} (mu {self.mu:.6g}: GDP "
                f"composition of {runs}, exact)"
            )
        else:
            text = (
                f"epsilon {self.epsilon:.6g}, delta {self.delta:g} (basic composition of {runs}: "
                "the sums of their epsilons and deltas, as a run without a GDP mu was recorded)"
            )
        if self.unsettled_runs:
            text += f"; {self.unsettled_runs} of them running, interrupted or failed, counted"
        if self.nonprivate_runs:
            text += (
                f"; {self.nonprivate_runs} non-private run(s) not counted: their heads have no "
                "privacy guarantee and must never be published"
            )
        return text


def compose(runs: Sequence[Mapping[str, Any]], delta: float | None = None) -> Total:
    """The total of ``runs`` (entries of a budget file) at ``delta`` (module docstring)."""
    counted = [r for r in runs if r.get("private", True)]
    nonprivate = len(runs) - len(counted)
    unsettled = sum(1 for r in counted if r.get("status") != "done")
    if not counted:
        return Total(0.0, delta or 0.0, 0.0, "none", 0, nonprivate, 0)
    mus = [_number(r.get("mu")) for r in counted]
    if all(m is not None for m in mus):
        mu = math.sqrt(math.fsum(m * m for m in mus))
        at = delta if delta is not None else min(float(r["delta"]) for r in counted)
        return Total(epsilon_from_mu(mu, at), at, mu, "gdp", len(counted), nonprivate, unsettled)
    epsilon = math.fsum(_number(r["epsilon"]) for r in counted)
    total_delta = math.fsum(float(r["delta"]) for r in counted)
    return Total(epsilon, total_delta, None, "basic", len(counted), nonprivate, unsettled)


def within(total: Total, cap: Mapping[str, Any]) -> bool:
    """Whether ``total`` (composed at the cap's delta) stays within ``cap``."""
    limit = float(cap["epsilon"]) * (1 + _TOLERANCE)
    if total.composition == "basic":
        return total.epsilon <= limit and total.delta <= float(cap["delta"]) * (1 + _TOLERANCE)
    return total.epsilon <= limit


class BudgetFile:
    """The budget file at ``budget_path(path)`` (module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = budget_path(path)

    # ---------------------------------------------------------------------------- reading
    def read(self) -> dict[str, Any]:
        """The document (an empty history when the file does not exist)."""
        try:
            with open(self.path) as f:
                document = json.load(f)
        except FileNotFoundError:
            return {"format": FORMAT, "cap": None, "runs": []}
        except (OSError, ValueError) as err:
            raise ValueError(self._damaged(err)) from err
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(self._damaged(f"format {document.get('format')!r}, not {FORMAT!r}"))
        return document

    def _damaged(self, why: Any) -> str:
        return (
            f"the budget file {self.path} cannot be read ({why}); it holds this dataset's "
            "history of privacy spending: repair it, or move it away deliberately"
        )

    def total(self, document: Mapping[str, Any] | None = None) -> Total:
        """What the recorded runs spent together, at the cap's delta when there is a cap."""
        document = self.read() if document is None else document
        cap = document.get("cap")
        return compose(document["runs"], None if not cap else float(cap["delta"]))

    # ---------------------------------------------------------------------------- writing
    def reserve(self, run: Mapping[str, Any], total_epsilon: float | None = None) -> str:
        """Record ``run`` (status ``running``) and return its id, or raise BudgetExceededError
        and record nothing when it would take the total over the cap (module docstring)."""
        with self._locked():
            document = self.read()
            cap = document.get("cap")
            if total_epsilon is not None:
                total_epsilon = float(total_epsilon)
                if not total_epsilon > 0:
                    raise ValueError(f"total_epsilon must be > 0, got {total_epsilon}")
                if cap is None:
                    cap = {"epsilon": total_epsilon, "delta": float(run["delta"]), "time": now()}
                    document["cap"] = cap
                elif float(cap["epsilon"]) != total_epsilon:
                    raise ValueError(
                        f"the budget file {self.path} caps this dataset at epsilon "
                        f"{cap['epsilon']:g} (delta {cap['delta']:g}, set {cap['time']}), not "
                        f"{total_epsilon:g}; a cap is changed only by editing the file deliberately"
                    )
            entry = {**run, "id": uuid.uuid4().hex, "time": now(), "status": "running"}
            if cap is not None:
                self._admit(document, entry, cap)
            document["runs"].append(entry)
            self._write(document)
        return entry["id"]

    def _admit(self, document: Mapping[str, Any], entry: Mapping[str, Any], cap: Any) -> None:
        if not entry.get("private", True):
            raise BudgetExceededError(
                f"a non-private fit has no privacy guarantee, and this dataset's budget is "
                f"capped at epsilon {cap['epsilon']:g} ({self.path})"
            )
        before = compose(document["runs"], float(cap["delta"]))
        after = compose([*document["runs"], entry], float(cap["delta"]))
        if not within(after, cap):
            raise BudgetExceededError(
                f"this fit (epsilon {_number(entry['epsilon']):g}, delta {entry['delta']:g}) "
                f"would bring this dataset's total to {after.short()}, over its cap of epsilon "
                f"{cap['epsilon']:g} at delta {cap['delta']:g}; spent so far: "
                f"{before.describe()} ({self.path}). The fit is refused before it reads a row; "
                "nothing was recorded."
            )

    def settle(self, run_id: str, status: str, spent: Mapping[str, Any] | None = None) -> None:
        """Set the status of run ``run_id`` (``done`` or ``failed``) and, when given, what it
        spent (``epsilon``, ``delta``, ``mu``, ``accountant``)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        with self._locked():
            document = self.read()
            for entry in document["runs"]:
                if entry.get("id") == run_id:
                    entry.update(spent or {}, status=status)
                    break
            else:
                raise ValueError(f"the budget file {self.path} holds no run {run_id!r}")
            self._write(document)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """``flock`` on ``<file>.lock`` (created once, never removed, so every writer locks the
        same file), blocking: each holder only reads and writes one small file."""
        try:
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ValueError(self._unwritable(err)) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _write(self, document: Mapping[str, Any]) -> None:
        """Replace the file atomically: a temporary file beside it, fsync, ``os.replace``."""
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".budget-", suffix=".tmp")
        except OSError as err:
            raise ValueError(self._unwritable(err)) from err
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(document, f, indent=1, sort_keys=True, allow_nan=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    def _unwritable(self, err: BaseException) -> str:
        return (
            f"cannot write the dataset's budget file {self.path} ({err}); pass budget_file= "
            "(--budget-file) a writable path for it"
        )

    # ---------------------------------------------------------------------------- showing
    def history(self) -> str:
        """Every run, one line each, then the cap and the total."""
        document = self.read()
        lines = [f"budget file {self.path}"]
        cap = document.get("cap")
        if cap:
            lines.append(f"cap       epsilon {cap['epsilon']:g} at delta {cap['delta']:g}")
        else:
            lines.append("cap       none (set one with total_epsilon= or --total-epsilon)")
        for i, run in enumerate(document["runs"], 1):
            mu = _number(run.get("mu"))
            lines.append(
                f"run {i:<5} {run['time']}  {run.get('split')}  {run['method']}  "
                f"epsilon {_number(run['epsilon']):.6g}  delta {run['delta']:g}  "
                f"mu {'-' if mu is None else f'{mu:.6g}'}  {run['accountant']}  "
                f"{'private' if run.get('private', True) else 'NON-PRIVATE'}  "
                f"{'SEEDED' if run.get('seeded') else 'unseeded'}  {run['status']}"
            )
        lines.append(f"spent so far on this dataset: {self.total(document).describe()}")
        return "\n".join(lines)


def run_entry(
    *,
    method: str,
    split: str | None,
    private: bool,
    seeded: bool,
    accountant: str,
    epsilon: float,
    delta: float,
    mu: float | None,
) -> dict[str, Any]:
    """A run as the budget file records it (JSON-able; infinities as ``"inf"``)."""
    return {
        "method": method,
        "split": split,
        "private": bool(private),
        "seeded": bool(seeded),
        "accountant": accountant,
        "epsilon": _json_number(epsilon),
        "delta": float(delta),
        "mu": _json_number(mu),
    }


__all__ = ["FORMAT", "SUFFIX", "BudgetFile", "Total", "budget_path", "compose", "run_entry"]
