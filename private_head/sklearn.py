"""``DPLinearProbe``: ``private_head.fit`` as a scikit-learn classifier (docs/architecture.md,
"The scikit-learn estimator").

    from private_head.sklearn import DPLinearProbe
    clf = DPLinearProbe(epsilon=4.0, delta=1e-5, num_classes=10).fit(x, y)
    clf.predict(x_test), clf.predict_proba(x_test), clf.score(x_test, y_test)

It follows scikit-learn's conventions (``get_params``/``set_params``, ``clone``, ``Pipeline``,
``cross_val_score``) where they fit a differentially private estimator, and departs where they
do not:

- **The label space is a constructor argument** (``num_classes``: classes ``0..K-1``), never
  read from ``y``: ``classes_`` is ``arange(num_classes)`` whatever labels a fit sees, so a
  binary ``y`` on a 3-class probe gets 3 columns of probabilities; labels are integers.
- **Every fit spends budget.** Each ``fit`` is a fresh (epsilon, delta)-DP release on its rows:
  ``cross_val_score`` with 5 folds makes 5 heads, each on its own training part; a grid search
  over hyperparameters on private data is model selection and must be charged
  (``private_head.select`` does it inside one budget).
- **Outputs are random** unless ``seed`` is set (and a seeded head is private only while the seed
  stays secret).

``**options`` are ``fit``'s: the method's options and the shared ones (``clip_norm=0.5``,
``dataset_size=...``), and ``budget_file``, ``total_epsilon``, ``public_mean``,
``public_scale``, ``progress`` (default False here). ``coef_`` [K, D] and ``intercept_`` [K] act
on the preprocessed rows (each scaled to norm ``feature_norm``, centred or standardised when
asked: ``head_.preprocessing``), so use
``decision_function`` rather than ``X @ coef_.T``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from private_head._api import fit


class DPLinearProbe(ClassifierMixin, BaseEstimator):
    """A differentially private linear head as a scikit-learn classifier (module docstring)."""

    def __init__(
        self,
        epsilon: float = 1.0,
        delta: float = 1e-5,
        num_classes: int | None = None,
        method: str = "auto",
        seed: int | None = None,
        **options: Any,
    ):
        self.epsilon = epsilon
        self.delta = delta
        self.num_classes = num_classes
        self.method = method
        self.seed = seed
        self._options = dict(options)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments, ``**options`` included."""
        return {**super().get_params(deep=deep), **self._options}

    def set_params(self, **params: Any) -> DPLinearProbe:
        """Set constructor arguments and options (an unknown option is refused by ``fit``)."""
        named = set(self._get_param_names())
        for key, value in params.items():
            if key in named:
                setattr(self, key, value)
            else:
                self._options[key] = value
        return self

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.seed is None
        tags.input_tags.allow_nan = False
        return tags

    def fit(self, X: Any, y: Any) -> DPLinearProbe:
        """Train a private head on rows ``X`` [N, D] and labels ``y`` in ``[0, num_classes)``;
        spends (epsilon, delta) on them."""
        X, y = validate_data(self, X, y, dtype=(np.float32, np.float64, np.float16))
        check_classification_targets(y)
        if self.num_classes is None:
            raise ValueError(
                "DPLinearProbe needs num_classes: the label space is public, never read from y"
            )
        labels = np.asarray(y)
        if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        if labels.dtype.kind not in "iu":
            raise ValueError(
                f"DPLinearProbe takes integer labels in [0, {self.num_classes}), got dtype "
                f"{labels.dtype} (the label space is num_classes, never read from y)"
            )
        options = {"progress": False, **self._options}
        self.head_ = fit(
            X,
            labels,
            num_classes=int(self.num_classes),
            epsilon=self.epsilon,
            delta=self.delta,
            method=self.method,
            seed=self.seed,
            **options,
        )
        self.classes_ = np.arange(int(self.num_classes))
        self.coef_ = self.head_.weights.T
        self.intercept_ = self.head_.bias
        return self

    def _logits(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float32, np.float64, np.float16))
        return self.head_.logits(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """The logits [N, K] (for K = 2, as scikit-learn has it, ``z_1 - z_0`` [N])."""
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """The softmax of the logits [N, K]."""
        logits = self._logits(X)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """The class of the largest logit (ties: the smallest class)."""
        best = np.argmax(self._logits(X), axis=1)
        return self.classes_[best]


__all__ = ["DPLinearProbe"]
