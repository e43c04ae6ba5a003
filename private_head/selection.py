"""``select``: train K candidate heads and pick one privately, all charged to one ledger.

Split. Each row goes to validation when a keyed 64-bit hash of its own bytes (features and label,
public salt ``split_salt``) falls below ``validation_fraction``. The split of a row depends on
that row alone, so adding or removing one example changes exactly one part by that example: the
training part and the validation part of neighbouring datasets are neighbouring (or equal). (A
permutation of ``range(N)`` would not have this property: adding a row reshuffles every row.)
The part sizes are treated as public, like N (DESIGN.md 4).

Budget, with ``mu = mu_from_epsilon(epsilon, delta)`` split by the public ``selection_fraction``
``f``: selection ``mu_sel = sqrt(f) mu``, each of the K candidates ``mu_j = sqrt((1 - f) / K) mu``
(a candidate's method calibrates its noise from that share, through a ledger view capped at
``mu_j`` that forwards every release to the shared ledger), so that
``mu^2 = sum_j mu_j^2 + mu_sel^2``.

Selection. The score of candidate j is ``c_j``, its number of correct validation predictions
(accuracy times n_val; the argmax is the same). Adding (removing) one validation example raises
(lowers) every ``c_j`` by 0 or 1: sensitivity 1, and all scores move the same way (monotone). With
``eps_sel = log(Phi(mu_sel / 2) / Phi(-mu_sel / 2))``:

- ``"noisy_max"``: ``argmax_j c_j + Laplace(1 / eps_sel)``, report-noisy-max, eps_sel-DP for
  monotone sensitivity-1 scores (Dwork & Roth 2014, claim 3.9);
- ``"exponential"``: ``P(j) ∝ exp(eps_sel c_j)`` (sampled as ``argmax_j eps_sel c_j + Gumbel``),
  the exponential mechanism, eps_sel-DP for monotone sensitivity-1 scores.

Accounting. An eps-DP mechanism is ``mu_eps``-GDP with ``mu_eps = -2 Phi^{-1}(1 / (1 + e^eps))``:
its trade-off curve ``max(0, 1 - e^eps a, e^-eps (1 - a))`` is piecewise linear and meets the
convex Gaussian curve ``G_mu`` at both ends and at ``a = 1 / (1 + e^eps)``, so lies above it. The
choice of ``eps_sel`` above is exactly ``mu_eps = mu_sel``, so the selection is charged as one
Gaussian-equivalent release of mu ``mu_sel`` (sensitivity 1, noise_std ``1 / mu_sel``; the name
says so), and the ledger composes everything exactly in GDP: the report's epsilon is the whole
cost. (The trained candidates see only the training part, the selection only the validation part,
so the sequential composition charged here is conservative.) Candidates must be Gaussian
(full-batch) methods; ``dp_sgd`` (a PLD event) is refused.

Without private validation, ``public_validation=(x, y)`` picks the best candidate on public data
(free), trains every candidate on all the private rows with ``mu_j = mu / sqrt(K)``, and charges no
selection. The cheapest option remains tuning on public data and training once with ``fit``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from scipy.special import log_ndtr, ndtri

from accounting import BudgetExceededError, epsilon_from_mu
from feature_extract import store
from private_head.api import make_ledger, noise_seed
from private_head.config import FitConfig
from private_head.data import check_num_classes, load_train_data
from private_head.head import PrivateHead
from private_head.methods import get_method

MECHANISMS = ("noisy_max", "exponential")
_NON_GAUSSIAN = ("dp_sgd",)  # refused before anything is trained (BudgetShare refuses any other)
_PRIME = np.uint64(0x100000001B3)
_TOLERANCE = 1e-9


def validation_mask(
    features: np.ndarray, labels: np.ndarray, fraction: float, salt: int = 0
) -> np.ndarray:
    """Bool [N]: row i is a validation row when ``hash(bytes(x_i), y_i, salt) / 2^64 < fraction``.

    A multiply-xor hash over the row's 8-byte words then the splitmix64 finaliser; it depends only
    on the row itself (add/remove-stable, see the module docstring).
    """
    x = np.ascontiguousarray(features)
    raw = x.view(np.uint8).reshape(x.shape[0], -1)
    pad = (-raw.shape[1]) % 8
    if pad:
        raw = np.pad(raw, ((0, 0), (0, pad)))
    words = np.ascontiguousarray(raw).view(np.uint64)
    with np.errstate(over="ignore"):
        h = np.full(x.shape[0], np.uint64(0xCBF29CE484222325) ^ np.uint64(salt % 2**64))
        for column in words.T:
            h = (h ^ column) * _PRIME
        h = (h ^ np.asarray(labels).astype(np.uint64)) * _PRIME
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53 < fraction


def epsilon_dominated_by(mu: float) -> float:
    """The eps whose eps-DP trade-off curve is dominated by mu-GDP with equality at the symmetric
    point: ``log(Phi(mu / 2) / Phi(-mu / 2))``; inverse of ``mu_dominating``."""
    return float(log_ndtr(mu / 2) - log_ndtr(-mu / 2))


def mu_dominating(epsilon: float) -> float:
    """``-2 Phi^{-1}(1 / (1 + e^eps))``: every eps-DP mechanism is this mu-GDP."""
    return float(-2.0 * ndtri(1.0 / (1.0 + math.exp(epsilon))))


class BudgetShare:
    """A view of ``ledger`` capped at ``mu_cap`` (GDP): what one candidate may spend.

    ``remaining_mu`` is what is left of the cap; every Gaussian release is checked against the cap,
    then recorded in the shared ledger (which checks the whole budget) under ``prefix``.
    """

    def __init__(self, ledger: Any, mu_cap: float, prefix: str):
        self.ledger, self.mu_budget, self.prefix = ledger, mu_cap, prefix
        self.delta = ledger.delta
        self.epsilon = epsilon_from_mu(mu_cap, ledger.delta)
        self._mu_sq = 0.0
        self.releases: list[Any] = []

    @property
    def mu(self) -> float:
        return math.sqrt(self._mu_sq)

    @property
    def epsilon_spent(self) -> float:
        return epsilon_from_mu(self.mu, self.delta)

    @property
    def remaining_mu(self) -> float:
        own = math.sqrt(max(0.0, self.mu_budget**2 - self._mu_sq))
        shared = self.ledger.remaining_mu
        return own if shared is None else min(own, shared)

    def record_gaussian(
        self, name: str, *, sensitivity: float, noise_std: float, count: int = 1
    ) -> Any:
        mu_sq = math.inf if noise_std == 0 else count * (sensitivity / noise_std) ** 2
        if self._mu_sq + mu_sq > self.mu_budget**2 * (1 + _TOLERANCE):
            raise BudgetExceededError(
                f"{self.prefix}{name}: a release of mu {math.sqrt(mu_sq):.6g} exceeds this "
                f"candidate's share mu={self.mu_budget:.6g} (already spent {self.mu:.6g})"
            )
        release = self.ledger.record_gaussian(
            self.prefix + name, sensitivity=sensitivity, noise_std=noise_std, count=count
        )
        self._mu_sq += mu_sq
        self.releases.append(release)
        return release

    def record_event(self, name: str, event: Any) -> Any:
        raise ValueError(
            f"{self.prefix}{name}: select() composes the candidates in GDP and "
            "accepts only Gaussian (full-batch) methods; this method records a "
            f"non-Gaussian event ({event!r}), e.g. dp_sgd. Use a full-batch method."
        )


def _candidate_config(
    candidate: dict[str, Any], common: dict[str, Any], epsilon: float, delta: float
) -> FitConfig:
    """The FitConfig of one candidate: ``common`` options overridden by the candidate's."""
    if not isinstance(candidate, dict):
        raise ValueError(f"each candidate must be a dict of fit arguments, got {candidate!r}")
    options = {**common, **candidate}
    if options.get("method", "single_step") == "nonprivate":
        raise ValueError(
            "a 'nonprivate' candidate would spend an infinite budget; select() "
            "takes private methods only"
        )
    if "public_mean" in options or "epsilon" in options or "delta" in options:
        raise ValueError(
            "candidates may not set epsilon, delta or public_mean (select() splits "
            "the budget itself; pass public_mean to select())"
        )
    if options.get("method") in _NON_GAUSSIAN:
        raise ValueError(
            f"method {options['method']!r} records a non-Gaussian (PLD) event; "
            "select() composes the candidates in GDP and accepts only Gaussian "
            "(full-batch) methods"
        )
    fields = set(FitConfig.__dataclass_fields__) - {"method_options", "epsilon", "delta", "seed"}
    known = {k: options.pop(k) for k in list(options) if k in fields}
    return FitConfig(epsilon=epsilon, delta=delta, method_options=options, **known)


def _train(
    config: FitConfig,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    share: BudgetShare,
    key: jax.Array,
    public_mean: Any,
) -> PrivateHead:
    center_key, method_key = jax.random.split(key)
    data = load_train_data(
        x,
        y,
        config=config,
        num_classes=num_classes,
        public_mean=public_mean,
        ledger=share,
        key=center_key,
    )
    weights, bias = get_method(config.method)(data, config, share, method_key)
    if not share.releases:
        raise RuntimeError(f"method {config.method!r} charged nothing; refusing its output")
    return PrivateHead(
        np.asarray(weights, np.float32),
        np.asarray(bias, np.float32),
        config,
        {},
        data.preprocessing,
    )


def _noisy_choice(correct: np.ndarray, eps_sel: float, mechanism: str, key: jax.Array) -> int:
    if mechanism == "noisy_max":
        noise = np.asarray(jax.random.laplace(key, correct.shape), np.float64) / eps_sel
        return int(np.argmax(correct + noise))
    gumbel = np.asarray(jax.random.gumbel(key, correct.shape), np.float64)
    return int(np.argmax(eps_sel * correct + gumbel))


def _check_args(
    candidates: Any, validation_fraction: float, selection_fraction: float, mechanism: str
) -> None:
    if not isinstance(candidates, (list, tuple)) or not candidates:
        raise ValueError("candidates must be a non-empty list of dicts of fit arguments")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction}")
    if not 0 < selection_fraction < 1:
        raise ValueError(f"selection_fraction must lie in (0, 1), got {selection_fraction}")
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")


def _load(features: Any, labels: Any, num_classes: int, split: str):
    if isinstance(features, (str, bytes)) or hasattr(features, "__fspath__"):
        if labels is not None:
            raise ValueError("labels come from the store; do not pass labels with a store path")
        path, split = store.parse_store_path(str(features), split)
        features, labels, _ = store.read_split(path, split)
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be a 2-D array with at least 2 rows, got {x.shape}")
    y = np.asarray(labels)
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"shape mismatch: {x.shape[0]} feature rows but labels of shape "
            f"{y.shape}; need one label per row"
        )
    store.check_finite(x)
    store.check_labels(y, num_classes)
    return x, y.astype(np.int32)


def select(
    features: Any,
    labels: Any = None,
    *,
    num_classes: int,
    epsilon: float,
    delta: float,
    candidates: list[dict[str, Any]],
    validation_fraction: float = 0.1,
    mechanism: str = "noisy_max",
    selection_fraction: float = 0.1,
    seed: int | None = None,
    split_salt: int = 0,
    public_mean: Any = None,
    public_validation: Any = None,
    split: str = "train",
    **common: Any,
) -> PrivateHead:
    """Train every candidate (a dict of ``fit`` arguments, over ``common``) and return the one
    chosen privately on a validation part of the data (module docstring), with ``.privacy`` the
    whole cost: every candidate's releases plus the selection, in one ledger.

    ``public_validation=(x, y)``: choose on public data instead (no split, no selection charge).
    """
    num_classes = check_num_classes(num_classes)
    _check_args(candidates, validation_fraction, selection_fraction, mechanism)
    x, y = _load(features, labels, num_classes, split)
    ledger = make_ledger(float(epsilon), float(delta))
    if math.isinf(ledger.mu_budget):
        raise ValueError("select() needs a finite epsilon")
    seed_value, seeded = noise_seed(seed)
    key = jax.random.key(seed_value)
    k = len(candidates)
    if public_validation is None:
        val = validation_mask(x, y, validation_fraction, split_salt)
        if val.all() or not val.any():
            raise ValueError(
                f"the validation split has {int(val.sum())} of {len(val)} rows; "
                "need rows in both parts (change validation_fraction or use more "
                "data)"
            )
        train_x, train_y, val_x, val_y = x[~val], y[~val], x[val], y[val]
        mu_sel = math.sqrt(selection_fraction) * ledger.mu_budget
        mu_each = math.sqrt((1.0 - selection_fraction) / k) * ledger.mu_budget
    else:
        val_x, val_y = public_validation
        train_x, train_y = x, y
        mu_sel, mu_each = 0.0, ledger.mu_budget / math.sqrt(k)
    eps_each = epsilon_from_mu(mu_each, ledger.delta)
    configs = [_candidate_config(c, common, eps_each, ledger.delta) for c in candidates]
    heads = []
    for j, config in enumerate(configs):
        share = BudgetShare(ledger, mu_each, f"candidate {j} ({config.method}): ")
        heads.append(
            _train(
                config,
                train_x,
                train_y,
                num_classes,
                share,
                jax.random.fold_in(key, j),
                public_mean,
            )
        )
    selection: dict[str, Any] = {
        "candidates": [c.to_dict() for c in configs],
        "num_train": int(train_x.shape[0]),
    }
    if public_validation is None:
        eps_sel = epsilon_dominated_by(mu_sel)
        ledger.record_gaussian(
            f"selection: {mechanism} over {k} candidates, {eps_sel:.6g}-DP "
            f"charged as its dominating {mu_sel:.6g}-GDP",
            sensitivity=1.0,
            noise_std=1.0 / mu_sel,
        )
        correct = np.array([np.sum(h.predict(val_x) == val_y) for h in heads], np.float64)
        chosen = _noisy_choice(correct, eps_sel, mechanism, jax.random.fold_in(key, k))
        selection.update(
            hyperparameters="selected privately",
            mechanism=mechanism,
            epsilon_selection=eps_sel,
            mu_selection=mu_sel,
            validation_fraction=validation_fraction,
            split_salt=split_salt,
            num_validation=int(val_x.shape[0]),
        )
    else:
        chosen = int(np.argmax([h.accuracy(*public_validation)["top1"] for h in heads]))
        selection.update(hyperparameters="selected on public data", mechanism="argmax")
    selection["chosen"] = chosen
    best = heads[chosen]
    privacy = {
        **ledger.report(),
        "private": True,
        "method": best.config.method,
        "seeded": seeded,
        "dataset_size_public": True,
        "num_rows": int(x.shape[0]),
        "selection": selection,
    }
    return PrivateHead(best.weights, best.bias, best.config, privacy, best.preprocessing)
