"""``PrivateHead``: the trained linear head, its reports, and its file format.

Prediction applies the training preprocessing to every row (``_preprocessing.Preprocessing``, on
the device, in chunks), then ``logits = x' W + b``. A head file (``.npz`` or ``.h5``) holds the
arrays ``weights`` [D, K], ``bias`` [K], ``mean`` [D] when centring or standardisation was used and
``scale`` [D] for a private or public standardisation (``x -> bound((. - mean) / scale)``; a head
file written before standardisation existed has neither and loads as before), plus one JSON
report (format, shapes, the privacy report, the settings, the preprocessing, the performance
facts) and ``sha256``: the SHA-256 over each array's name, dtype, shape and little-endian bytes
in name order, then the report's canonical JSON. ``load`` recomputes it and refuses a file whose
arrays or report were changed. The same head is written as the same bytes (no timestamps).

``save`` also writes the head's privacy statement beside it (``<stem>.privacy.md``, from
``_statement``: what was trained, on what, the guarantee in words), and creates the folder. The
rows to predict on may be an array, a store split (``"file.h5:test"``) or an array file
(``"X.npy"``, ``"F.npz[:split]"``; ``_data_files``), read in chunks.

``performance`` holds only what the caller asked for (the ``Performance`` options); how the rows
were read and how long it took depend on the private data and live in ``operator_log``, which
is never saved, never shown by ``repr`` and must not be published (docs/architecture.md, "The
whole artefact").
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from feature_extract import store
from private_head._atomic import replacing, write_text_atomically
from private_head._data_files import read_chunks
from private_head._preprocessing import Preprocessing
from private_head._statement import privacy_statement, statement_path

FORMAT = "private_head/2"
PREDICT_CHUNK_ROWS = 65536


@dataclass(frozen=True)
class PrivateHead:
    """A linear head ``z = preprocess(x) W + b`` with the reports of its training, and the
    operator log of the fit that made it (module docstring; empty for a loaded head)."""

    weights: np.ndarray  # [D, K] float32
    bias: np.ndarray  # [K] float32
    preprocessing: Preprocessing
    privacy: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    performance: dict[str, Any] = field(default_factory=dict)
    operator_log: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        w, b = np.asarray(self.weights, np.float32), np.asarray(self.bias, np.float32)
        if w.ndim != 2 or b.shape != (w.shape[1],):
            raise ValueError(f"a head needs weights [D, K] and bias [K], got {w.shape}, {b.shape}")
        for name in ("mean", "scale"):
            array = getattr(self.preprocessing, name)
            if array is not None and np.shape(array) != (w.shape[0],):
                raise ValueError(
                    f"the preprocessing {name} has shape {np.shape(array)}, the weights expect "
                    f"{w.shape[0]} features"
                )
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "bias", b)

    def __repr__(self) -> str:
        p = self.privacy
        eps = p.get("epsilon_spent")
        eps = f"{eps:.4g}" if isinstance(eps, float) else eps
        seeded = "True (noise reproducible from the seed)" if p.get("seeded") else p.get("seeded")
        return (
            f"PrivateHead(method={p.get('method')!r}, dim={self.dim}, num_classes="
            f"{self.num_classes}, epsilon={eps}, delta={p.get('delta')}, "
            f"private={p.get('private')}, seeded={seeded})"
        )

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.weights.shape[1])

    def logits(self, x: Any) -> np.ndarray:
        """``preprocess(x) W + b`` (float32 [N, K]) for rows x: an array [N, D], a store split
        ``"file.h5:test"`` or an array file (module docstring)."""
        if _is_path(x):
            chunks = [self._logits(rows) for rows, _ in read_chunks(x, need_labels=False)]
            return np.concatenate(chunks) if chunks else np.empty((0, self.num_classes))
        return self._logits(np.asarray(x))

    def _logits(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features must be [N, {self.dim}] for this head, got shape {x.shape}")
        store.check_finite(x)
        out = np.empty((x.shape[0], self.num_classes), np.float32)
        for start in range(0, x.shape[0], PREDICT_CHUNK_ROWS):
            rows = self.preprocessing.apply(x[start : start + PREDICT_CHUNK_ROWS])
            out[start : start + rows.shape[0]] = rows @ self.weights + self.bias
        return out

    def predict(self, x: Any) -> np.ndarray:
        """The top-1 class of each row (int [N]); ``x`` as in ``logits``."""
        return np.argmax(self.logits(x), axis=1)

    def accuracy(self, x: Any, y: Any = None) -> dict[str, float]:
        """``{"top1", "top5"}``: fraction of rows whose label is the best, or among the best
        ``min(5, K)`` logits (ties broken by class index). ``x`` as in ``logits``: a store split
        or a ``.npz`` brings its labels, a ``.npy`` takes ``y`` (an array or a ``.npy`` path)."""
        if not _is_path(x):
            return self._accuracy(self._logits(np.asarray(x)), np.asarray(y))
        sums, total = {"top1": 0.0, "top5": 0.0}, 0
        for rows, labels in read_chunks(x, y, need_labels=True):
            for k, v in self._accuracy(self._logits(rows), np.asarray(labels)).items():
                sums[k] += v * len(labels)
            total += len(labels)
        return {k: v / total for k, v in sums.items()}

    def _accuracy(self, logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
        if y.shape != (logits.shape[0],):
            raise ValueError(
                f"shape mismatch: {logits.shape[0]} rows but labels of shape {y.shape}"
            )
        if y.size == 0:
            raise ValueError("accuracy needs at least one row")
        store.check_labels(y, self.num_classes)
        k = min(5, self.num_classes)
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        return {
            "top1": float(np.mean(top[:, 0] == y)),
            "top5": float(np.mean((top == y[:, None]).any(axis=1))),
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"weights": self.weights, "bias": self.bias}
        if self.preprocessing.mean is not None:
            arrays["mean"] = np.asarray(self.preprocessing.mean, np.float32)
        if self.preprocessing.scale is not None:
            arrays["scale"] = np.asarray(self.preprocessing.scale, np.float32)
        return arrays

    def report(self) -> dict[str, Any]:
        """Everything about the head except its arrays (JSON-able)."""
        return {
            "format": FORMAT,
            "dim": self.dim,
            "num_classes": self.num_classes,
            "privacy": self.privacy,
            "settings": self.settings,
            "performance": self.performance,
            "preprocessing": self.preprocessing.to_dict(),
        }

    def privacy_statement(self) -> str:
        """The head's privacy statement in Markdown (module docstring; ``_statement``)."""
        return privacy_statement(self.report())

    def save(self, path: str | os.PathLike) -> str:
        """Write the head to ``path`` (``.npz`` or ``.h5``) and its privacy statement beside it
        (``<stem>.privacy.md``), each atomically, creating the folder; returns the path."""
        path = os.fspath(path)
        if not path.endswith((".npz", ".h5", ".hdf5")):
            raise ValueError(f"a head file must end in .npz or .h5, got {path!r}")
        report = self.report()
        report["sha256"] = checksum(self._arrays(), report)
        text = json.dumps(report, sort_keys=True, allow_nan=False)
        _make_folder(os.path.dirname(path))
        write_text_atomically(statement_path(path), self.privacy_statement())
        with replacing(path, os.path.splitext(path)[1]) as tmp:
            if path.endswith(".npz"):
                np.savez(tmp, report=np.array(text), **self._arrays())
            else:
                with h5py.File(tmp, "w") as f:
                    for key, array in self._arrays().items():
                        f.create_dataset(key, data=array, track_times=False)
                    f.attrs["report"] = text
        return path


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _make_folder(folder: str) -> None:
    """Create ``folder`` (and its parents); a ValueError naming it when that fails."""
    if not folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the folder {folder} for the head: {err}") from err


def checksum(arrays: dict[str, np.ndarray], report: dict[str, Any]) -> str:
    """SHA-256 over (name, dtype, shape, little-endian bytes) of each array, in name order, then
    the canonical JSON of ``report`` without its ``sha256`` field."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    body = {k: v for k, v in report.items() if k != "sha256"}
    digest.update(json.dumps(body, sort_keys=True, allow_nan=False).encode())
    return digest.hexdigest()


def _read(path: str) -> tuple[dict[str, np.ndarray], str]:
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        if "report" not in arrays:
            raise ValueError(
                f"{path} is an .npz file without a head report (arrays {sorted(arrays)})"
            )
        return arrays, str(arrays.pop("report"))
    if path.endswith((".h5", ".hdf5")):
        with h5py.File(path, "r") as f:
            if "format_version" in f.attrs and "report" not in f.attrs:
                raise ValueError(
                    f"{path} is a feature store (format_version {f.attrs['format_version']}), "
                    "not a head file; heads are written by PrivateHead.save"
                )
            if "report" not in f.attrs:
                raise ValueError(f"{path} is an HDF5 file without a head report")
            arrays = {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}
            text = f.attrs["report"]
        return arrays, text.decode() if isinstance(text, bytes) else str(text)
    raise ValueError(f"a head file must end in .npz or .h5, got {path!r}")


def load(path: str | os.PathLike) -> PrivateHead:
    """Read a head file written by ``PrivateHead.save``; a ValueError for a file that is not one
    (naming what it is), is damaged, or whose arrays or report were modified."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"no head file at {path}")
    try:
        arrays, text = _read(path)
        report = json.loads(text)
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is not a readable head file (truncated or damaged: {err})"
        ) from err
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        found = report.get("format") if isinstance(report, dict) else type(report).__name__
        raise ValueError(f"{path} is a head file of format {found!r}, not {FORMAT!r}")
    if checksum(arrays, report) != report.get("sha256"):
        raise ValueError(
            f"{path} was modified: its arrays or report do not match the sha256 it carries; "
            "refusing to load it (train the head again)"
        )
    try:
        return _from_report(path, arrays, report)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: its report lacks or mangles the field {err}") from err


def _from_report(path: str, arrays: dict[str, np.ndarray], report: dict[str, Any]) -> PrivateHead:
    w, b = arrays.get("weights"), arrays.get("bias")
    if w is None or b is None or w.shape != (report["dim"], report["num_classes"]):
        raise ValueError(
            f"{path}: weights of shape {None if w is None else w.shape} disagree with the report "
            f"(dim={report['dim']}, K={report['num_classes']})"
        )
    pre = report["preprocessing"]
    affine = pre.get("standardize", "none") in ("private", "public")
    if (pre["center"] != "none" or affine) != ("mean" in arrays) or affine != ("scale" in arrays):
        raise ValueError(
            f"{path}: its preprocessing (center={pre['center']!r}, standardize="
            f"{pre.get('standardize', 'none')!r}) disagrees with the stored mean and scale"
        )
    try:
        preprocessing = Preprocessing.from_dict(pre, arrays.get("mean"), arrays.get("scale"))
    except ValueError as err:
        raise ValueError(f"{path}: its preprocessing is not valid: {err}") from err
    return PrivateHead(
        w, b, preprocessing, report["privacy"], report["settings"], report["performance"]
    )
