"""``PrivateHead``: the trained linear head, its privacy report, and its file format.

Prediction applies the training preprocessing to every row (``data.Preprocessing``), then
``logits = x W + b``. A head file (``.npz`` or ``.h5``) holds the arrays ``weights`` [D, K],
``bias`` [K] and, when centring was used, ``mean`` [D], plus one JSON report with the privacy
report, the FitConfig, the preprocessing and ``arrays_sha256``: the sha256 over each array's name,
dtype, shape and little-endian bytes, in name order. ``load`` recomputes it and refuses a file
whose arrays and report disagree.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from feature_extract import store
from private_head.config import FitConfig
from private_head.data import Preprocessing

FORMAT = "private_head/1"


@dataclass(frozen=True)
class PrivateHead:
    """A linear head ``z = preprocess(x) W + b`` with the privacy report of its training."""

    weights: np.ndarray  # [D, K] float32
    bias: np.ndarray  # [K] float32
    config: FitConfig
    privacy: dict[str, Any]
    preprocessing: Preprocessing

    def __post_init__(self) -> None:
        w, b = np.asarray(self.weights, np.float32), np.asarray(self.bias, np.float32)
        if w.ndim != 2 or b.shape != (w.shape[1],):
            raise ValueError(
                f"a head needs weights [D, K] and bias [K], got {w.shape} and {b.shape}"
            )
        mean = self.preprocessing.mean
        if mean is not None and np.shape(mean) != (w.shape[0],):
            raise ValueError(
                f"the preprocessing mean has shape {np.shape(mean)}, the weights "
                f"expect {w.shape[0]} features"
            )
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "bias", b)

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.weights.shape[1])

    def logits(self, x: Any) -> np.ndarray:
        """``preprocess(x) W + b`` for rows x [N, D] (float32 [N, K])."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features must be [N, {self.dim}] for this head, got shape {x.shape}")
        store.check_finite(x)
        return self.preprocessing.apply(x) @ self.weights + self.bias

    def predict(self, x: Any) -> np.ndarray:
        """The top-1 class of each row (int [N])."""
        return np.argmax(self.logits(x), axis=1)

    def accuracy(self, x: Any, y: Any) -> dict[str, float]:
        """``{"top1", "top5"}``: fraction of rows whose label is the best, or among the best
        ``min(5, K)`` logits (ties broken by class index)."""
        y = np.asarray(y)
        logits = self.logits(x)
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
        return arrays

    def report(self) -> dict[str, Any]:
        """Everything about the head except its arrays (JSON-able)."""
        return {
            "format": FORMAT,
            "dim": self.dim,
            "num_classes": self.num_classes,
            "privacy": self.privacy,
            "config": self.config.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "arrays_sha256": arrays_sha256(self._arrays()),
        }

    def save(self, path: str | os.PathLike) -> str:
        """Write the head to ``path`` (``.npz`` or ``.h5``); returns the path.

        Atomic: the file is written under a temporary name in the same folder and renamed, so a
        run killed while saving leaves the previous file (or none), never a half-written head.
        """
        path = os.fspath(path)
        text = json.dumps(self.report(), sort_keys=True)
        if not path.endswith((".npz", ".h5", ".hdf5")):
            raise ValueError(f"a head file must end in .npz or .h5, got {path!r}")
        folder, name = os.path.split(path)
        tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}{os.path.splitext(path)[1]}")
        try:
            if path.endswith(".npz"):
                np.savez(tmp, report=np.array(text), **self._arrays())
            else:
                with h5py.File(tmp, "w") as f:
                    for key, array in self._arrays().items():
                        f.create_dataset(key, data=array)
                    f.attrs["report"] = text
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over (name, dtype, shape, little-endian bytes) of each array, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def _read(path: str) -> tuple[dict[str, np.ndarray], str]:
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        return arrays, str(arrays.pop("report", ""))
    if path.endswith((".h5", ".hdf5")):
        with h5py.File(path, "r") as f:
            arrays = {k: f[k][()] for k in f}
            text = f.attrs.get("report", "")
        return arrays, text.decode() if isinstance(text, bytes) else str(text)
    raise ValueError(f"a head file must end in .npz or .h5, got {path!r}")


def load(path: str | os.PathLike) -> PrivateHead:
    """Read a head file written by ``PrivateHead.save``; refuses one whose arrays and report
    disagree (checksum, shapes, number of classes) with a ValueError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"no head file at {path}")
    try:
        arrays, text = _read(path)
        report = json.loads(text)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable head file ({err})") from err
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        raise ValueError(f"{path} is not a head file of format {FORMAT}")
    if arrays_sha256(arrays) != report.get("arrays_sha256"):
        raise ValueError(
            f"{path} was modified: its arrays do not match the sha256 in its report; "
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
            f"{path}: weights of shape {None if w is None else w.shape} disagree "
            f"with the report (dim={report['dim']}, K={report['num_classes']})"
        )
    pre = report["preprocessing"]
    preprocessing = Preprocessing(
        bool(pre["normalize"]), float(pre["feature_norm"]), str(pre["center"]), arrays.get("mean")
    )
    if (preprocessing.center != "none") != (preprocessing.mean is not None):
        raise ValueError(f"{path}: center={preprocessing.center!r} disagrees with the stored mean")
    return PrivateHead(
        w, b, FitConfig.from_dict(report["config"]), report["privacy"], preprocessing
    )
