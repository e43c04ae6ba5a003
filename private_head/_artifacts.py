"""The whole artefact: between a dataset and its neighbour, everything a fit writes or returns is
equal except the declared noisy releases (docs/architecture.md, "The whole artefact"); part of the
contract of ``private_head.testing``.

Record and replay. ``run(dataset, recorder)`` fits while a ``Recorder`` (the observer of every
releaser, ``_release.observing``) records each planned release, the statistic before its noise
and the value released;
``run(neighbour, Recorder(replay=log))`` fits on the neighbour (one row added or removed) with
the same seed while the recorder hands back the first run's released values. With the releases
fixed, the two runs' artefacts must be equal byte for byte. ``run`` returns them as
``{name: bytes | str}`` (``head_artifacts``: the head files and their privacy statements,
``folder_artifacts``, ``fit_artifacts``,
``cli_artifacts``); ``artifact_differences`` lists every name whose value differs or exists in
one run only, naming the differing JSON fields and zip or HDF5 members. Whatever a fit writes
into the folder is compared, so a file or field added later is covered without being named.

Masked, by declaration only:

- a non-private head's parameters (its release is the parameters themselves): ``fit_artifacts``
  compares them as zeros (``mask_parameters``);
- a budget-file entry's wall-clock ``time`` and random ``id`` (bookkeeping beside the store);
- what is declared unpublished: ``head.operator_log``, and ``*.operator.json`` files, which
  must say ``"publish": false``.

    check_neighbours(run, dataset, [added, removed])   # AssertionError listing the differences
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import h5py
import jax
import numpy as np

from private_head._plan import PlannedRelease
from private_head._release import observing
from private_head._statement import statement_path

Artifacts = dict[str, bytes | str]
Run = Callable[[Any, "Recorder"], Artifacts]
OPERATOR_SUFFIX = ".operator.json"
BUDGET_SUFFIX = ".budget.json"
BUDGET_MASKED = ("time", "id")
SHOWN = 8  # differences shown per artefact


class Recorder:
    """The releasers' observer: records ``(statistic, released)`` per ``(release, draw)`` in
    ``log`` and each planned release by name in ``planned``; with ``replay`` (an earlier
    recorder's ``log``) it hands back the recorded released values.

    Released values are handed on as host numpy arrays in both runs, so that the computations
    after a release see the same inputs whether recorded or replayed (a device array spread
    over several processes can round differently from a host copy of it)."""

    def __init__(self, replay: Mapping[tuple[str, int], tuple[Any, Any]] | None = None):
        self.log: dict[tuple[str, int], tuple[Any, Any]] = {}
        self.planned: dict[str, PlannedRelease] = {}
        self.replay = replay

    def __call__(self, release: PlannedRelease, draw: int, statistic: Any, released: Any) -> Any:
        name = release.name
        self.planned[name] = release
        statistic = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), statistic)
        if self.replay is None:
            released = jax.tree_util.tree_map(np.asarray, released)
        elif (name, draw) in self.replay:
            released = self.replay[(name, draw)][1]
        else:
            raise AssertionError(f"release {name!r} draw {draw} was not made in the first run")
        self.log[(name, draw)] = (statistic, released)
        return released

    def save(self, path: str | os.PathLike) -> None:
        """The log, for a replay in another process (``load``)."""
        with open(path, "wb") as f:
            pickle.dump(self.log, f)

    @staticmethod
    def load(path: str | os.PathLike) -> dict[tuple[str, int], tuple[Any, Any]]:
        """A log written by ``save`` (trusted input: the test's own file)."""
        with open(path, "rb") as f:
            return pickle.load(f)


def mask_parameters(head: Any) -> Any:
    """A non-private head with zero weights and bias (its parameters are its release)."""
    if head.privacy.get("private", True):
        return head
    return dataclasses.replace(
        head, weights=np.zeros_like(head.weights), bias=np.zeros_like(head.bias)
    )


def head_artifacts(head: Any, folder: str | os.PathLike) -> Artifacts:
    """A head as everything a caller sees: the bytes of its ``.npz`` and ``.h5`` files and of
    the privacy statement written beside each (in ``folder``), its reports as JSON, ``repr``
    and ``str``."""
    out: Artifacts = {}
    for suffix in (".npz", ".h5"):
        path = head.save(os.path.join(folder, "head" + suffix))
        for name, written in (
            ("head" + suffix, path),
            (f"head{suffix} statement", statement_path(path)),
        ):
            with open(written, "rb") as f:
                out[name] = f.read()
            os.remove(written)
    for name in ("privacy", "settings", "performance"):
        out[name] = json.dumps(getattr(head, name), sort_keys=True, allow_nan=False)
    out["report"] = json.dumps(head.report(), sort_keys=True, allow_nan=False)
    out["privacy_statement"] = head.privacy_statement()
    out["repr"], out["str"] = repr(head), str(head)
    return out


def folder_artifacts(folder: str | os.PathLike, *, inputs: Iterable[str] = ()) -> Artifacts:
    """Every file under ``folder`` but the ``inputs`` (relative names, e.g. the store), by
    relative name: operator logs only checked for ``"publish": false``, budget files with their
    masked fields dropped, everything else as bytes."""
    out: Artifacts = {}
    skip = set(inputs)
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if rel in skip:
                continue
            with open(path, "rb") as f:
                data = f.read()
            if name.endswith(OPERATOR_SUFFIX):
                log = json.loads(data)
                if log.get("publish") is not False:
                    raise AssertionError(f"{rel} is an operator log without 'publish': false")
                continue
            if name.endswith(BUDGET_SUFFIX):
                data = _masked_budget(data)
            out[rel] = data
    return out


def _masked_budget(data: bytes) -> str:
    budget = json.loads(data)
    for entry in budget.get("runs", []):
        for key in BUDGET_MASKED:
            entry.pop(key, None)
    if budget.get("cap"):
        budget["cap"].pop("time", None)
    return json.dumps(budget, sort_keys=True)


def fit_artifacts(
    fit: Callable[..., Any], recorder: Recorder, folder: str | os.PathLike, *args, **kwargs
) -> Artifacts:
    """``fit(*args, **kwargs)`` (``private_head.fit`` or ``select``) with ``recorder`` observing
    every release; the head's artefacts (parameters masked when it is not private) and whatever
    it wrote under ``folder``."""
    os.makedirs(folder, exist_ok=True)
    before = set(os.listdir(folder))
    with observing(recorder):
        head = fit(*args, **kwargs)
    written = folder_artifacts(folder, inputs=before)
    return {**head_artifacts(mask_parameters(head), folder), **written}


def cli_artifacts(
    main: Callable[[Sequence[str]], int],
    argv: Sequence[str],
    recorder: Recorder,
    folder: str | os.PathLike,
    *,
    inputs: Iterable[str] = (),
) -> Artifacts:
    """``main(argv)`` run in ``folder`` (relative paths name the same files in both runs) with
    ``recorder`` observing every release: its exit status, stdout, and every file under
    ``folder`` but the ``inputs``."""
    stdout, cwd = io.StringIO(), os.getcwd()
    os.chdir(folder)
    try:
        with observing(recorder), contextlib.redirect_stdout(stdout):
            status = main(list(argv))
    finally:
        os.chdir(cwd)
    return {
        "exit status": str(status),
        "stdout": stdout.getvalue(),
        **folder_artifacts(folder, inputs=inputs),
    }


def replayed(
    run: Run, dataset: Any, neighbours: Sequence[Any]
) -> list[tuple[Artifacts, Artifacts]]:
    """``run`` on ``dataset`` recording, then on each neighbour replaying: ``[(first, second)]``.
    The neighbour runs must make exactly the first run's releases."""
    first = Recorder()
    reference = run(dataset, first)
    pairs = []
    for neighbour in neighbours:
        second = Recorder(replay=first.log)
        pairs.append((reference, run(neighbour, second)))
        if second.log.keys() != first.log.keys():
            raise AssertionError(
                f"the neighbour's releases {sorted(second.log)} differ from {sorted(first.log)}"
            )
    return pairs


def artifact_differences(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """Every artefact that differs between two runs, as ``"name: what differs"`` lines."""
    out = []
    for name in sorted(set(first) | set(second)):
        if name not in second or name not in first:
            out.append(f"{name}: written by the {'first' if name in first else 'second'} run only")
        elif first[name] != second[name]:
            out += [f"{name}: {line}" for line in _explain(name, first[name], second[name])]
    return out


def check_neighbours(run: Run, dataset: Any, neighbours: Sequence[Any]) -> None:
    """Raise AssertionError listing every artefact that differs between ``dataset`` and a
    neighbour with the releases replayed (module docstring)."""
    problems = []
    for i, (a, b) in enumerate(replayed(run, dataset, neighbours)):
        problems += [f"neighbour {i}: {line}" for line in artifact_differences(a, b)]
    if problems:
        raise AssertionError("artefacts differ between neighbours:\n" + "\n".join(problems))


# --------------------------------------------------------------------------- explaining a diff
def _explain(name: str, a: Any, b: Any) -> list[str]:
    for parse in (_as_json, _as_zip, _as_hdf5):
        pa, pb = parse(a), parse(b)
        if pa is not None and pb is not None:
            lines = _diff_tree(pa, pb, "")
            return lines[:SHOWN] or ["equal content, different bytes (e.g. timestamps)"]
    return [_first_text_difference(a, b)]


def _as_json(data: Any) -> Any:
    try:
        return json.loads(data)
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


def _as_zip(data: Any) -> Any:
    if not isinstance(data, bytes) or not data.startswith(b"PK"):
        return None
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        out = {}
        for info in z.infolist():
            body = z.read(info)
            if info.filename.endswith(".npy"):
                array = np.load(io.BytesIO(body), allow_pickle=False)
                text = str(array) if array.dtype.kind == "U" else None
                body = _as_json(text) if text is not None else array.tobytes()
            out[info.filename] = {"data": body, "entry date_time": list(info.date_time)}
        return out


def _as_hdf5(data: Any) -> Any:
    if not isinstance(data, bytes) or not data.startswith(b"\x89HDF"):
        return None
    out: dict[str, Any] = {}
    with h5py.File(io.BytesIO(data), "r") as f:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()].tobytes()

        f.visititems(visit)
        for key, value in f.attrs.items():
            value = value.decode() if isinstance(value, bytes) else value
            out[f"attrs/{key}"] = _as_json(value) if isinstance(value, str) else value
    return out


def _diff_tree(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        lines = []
        for key in sorted(set(a) | set(b), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                lines.append(f"{where}: only in the {'first' if key in a else 'second'} run")
            else:
                lines += _diff_tree(a[key], b[key], where)
        return lines
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = enumerate(zip(a, b, strict=True))
        return [line for i, (x, y) in pairs for line in _diff_tree(x, y, f"{path}[{i}]")]
    if isinstance(a, bytes) or isinstance(b, bytes):
        return [] if a == b else [f"{path}: bytes differ"]
    if np.ndim(a) or np.ndim(b):
        return [] if np.array_equal(a, b) else [f"{path}: arrays differ"]
    return [] if a == b else [f"{path}: {_short(a)} != {_short(b)}"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _first_text_difference(a: Any, b: Any) -> str:
    if isinstance(a, bytes) or isinstance(b, bytes):
        return "bytes differ"
    for i, (x, y) in enumerate(zip(a.splitlines(), b.splitlines(), strict=False)):
        if x != y:
            return f"line {i + 1}: {_short(x)} != {_short(y)}"
    return f"{len(a.splitlines())} lines != {len(b.splitlines())} lines"


__all__ = [
    "Artifacts",
    "Recorder",
    "artifact_differences",
    "check_neighbours",
    "cli_artifacts",
    "fit_artifacts",
    "folder_artifacts",
    "head_artifacts",
    "mask_parameters",
    "replayed",
]
