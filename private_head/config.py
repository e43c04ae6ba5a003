"""The fit arguments as one frozen, JSON-able value: ``FitConfig``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

LOSSES = ("softmax", "sigmoid")
OPTIMIZERS = ("sgd", "momentum", "adam", "lamb")


@dataclass(frozen=True)
class FitConfig:
    """Everything ``private_head.fit`` was asked to do, checked once at construction.

    Privacy: ``epsilon`` (``math.inf`` only for ``method="nonprivate"``), ``delta`` in (0, 1).
    Optimisation: ``steps`` (T), ``clip_norm`` (C, the per-example gradient bound),
    ``learning_rate``, ``optimizer`` (one of ``OPTIMIZERS``), ``momentum`` (for ``"momentum"``),
    ``weight_decay`` (post-processing of the parameters, no privacy cost).
    Head: ``loss`` ``"softmax"`` (cross-entropy) or ``"sigmoid"`` (one-vs-all logistic with a fixed
    bias ``sigmoid_bias``, default ``-log(K - 1)``, so every class starts at probability ``1/K``);
    ``train_bias`` (False: the bias stays at its initial value and is neither clipped nor released).
    Preprocessing (``data.preprocess``): ``normalize`` (True: scale every row to norm
    ``feature_norm``; False: clip rows longer than ``feature_norm``), ``center`` (``"none"``,
    ``"public"``: subtract a caller's mean, ``"private"``: subtract a noisy mean charged to the
    ledger with a fraction ``center_budget_fraction`` of the mu^2 budget).
    ``method_options`` holds options only one method understands; that method validates them.
    """

    epsilon: float
    delta: float
    method: str = "single_step"
    steps: int = 1
    clip_norm: float = 1.0
    learning_rate: float = 1.0
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    loss: str = "softmax"
    sigmoid_bias: float | None = None
    train_bias: bool = False
    normalize: bool = True
    feature_norm: float = 1.0
    center: str = "none"
    center_budget_fraction: float = 0.1
    seed: int | None = None
    max_device_bytes: int | None = None
    method_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.epsilon > 0):
            raise ValueError(
                f"epsilon must be > 0 (math.inf only for method='nonprivate'), got {self.epsilon}"
            )
        if math.isinf(self.epsilon) != (self.method == "nonprivate"):
            raise ValueError(
                "epsilon=math.inf is accepted only with method='nonprivate', and 'nonprivate' "
                f"needs epsilon=math.inf (got method={self.method!r}, epsilon={self.epsilon})."
            )
        if not (0 < self.delta < 1):
            raise ValueError(f"delta must lie in (0, 1), got {self.delta}")
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps}")
        for name in ("clip_norm", "learning_rate", "feature_norm"):
            value = getattr(self, name)
            if not (0 < value < math.inf):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(
                f"need weight_decay >= 0 and 0 <= momentum < 1, got "
                f"{self.weight_decay}, {self.momentum}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.center not in ("none", "public", "private"):
            raise ValueError(f"center must be 'none', 'public' or 'private', got {self.center!r}")
        if not 0 < self.center_budget_fraction < 1:
            raise ValueError(
                f"center_budget_fraction must lie in (0, 1), got {self.center_budget_fraction}"
            )
        if self.max_device_bytes is not None and self.max_device_bytes < 1:
            raise ValueError(f"max_device_bytes must be positive, got {self.max_device_bytes}")

    def initial_bias(self, num_classes: int) -> float:
        """The bias every class starts from: 0 for softmax, ``sigmoid_bias`` or -log(K-1) else."""
        if self.loss == "softmax":
            return 0.0
        if self.sigmoid_bias is not None:
            return float(self.sigmoid_bias)
        return -math.log(max(num_classes - 1, 1))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy (infinite epsilon written as the string ``"inf"``)."""
        out = asdict(self)
        if math.isinf(out["epsilon"]):
            out["epsilon"] = "inf"
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitConfig:
        """Inverse of ``to_dict``."""
        values = dict(values)
        if values.get("epsilon") == "inf":
            values["epsilon"] = math.inf
        return cls(**values)
