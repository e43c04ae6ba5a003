"""``fit``: validate, preprocess, train with a registered method, and report the privacy spent."""

from __future__ import annotations

import dataclasses
import math
import secrets
from typing import Any

import jax
import numpy as np

from accounting import PrivacyLedger
from private_head.config import FitConfig
from private_head.data import check_num_classes, load_train_data
from private_head.head import PrivateHead
from private_head.methods import get_method

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(FitConfig)} - {"method_options"}


def noise_seed(seed: int | None) -> tuple[int, bool]:
    """``(seed, seeded)``: the caller's seed, else 63 bits from the OS secure random source.

    With several JAX processes the unseeded draw of process 0 is broadcast, so that every process
    adds the same noise (DESIGN.md 5).
    """
    if seed is not None:
        if isinstance(seed, bool) or int(seed) != seed:
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        return int(seed), True
    drawn = secrets.randbits(63)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        drawn = int(multihost_utils.broadcast_one_to_all(np.int64(drawn)))
    return drawn, False


def make_ledger(epsilon: float, delta: float) -> PrivacyLedger:
    """The budget as a ledger; an (epsilon, delta) no finite noise can meet is a ValueError."""
    try:
        return PrivacyLedger(epsilon, delta)
    except ValueError as err:
        raise ValueError(
            f"the budget epsilon={epsilon}, delta={delta} cannot be met: {err}"
        ) from err


def fit(
    features: Any,
    labels: Any = None,
    *,
    num_classes: int,
    epsilon: float,
    delta: float,
    method: str = "single_step",
    steps: int = 1,
    clip_norm: float = 1.0,
    learning_rate: float = 1.0,
    optimizer: str = "sgd",
    seed: int | None = None,
    public_mean: Any = None,
    split: str = "train",
    **options: Any,
) -> PrivateHead:
    """Train a differentially private linear head on features and return it with its report.

    ``features``: an array [N, D] (with ``labels`` [N]) or a store path ``"file.h5:train"``
    (``split`` when the path names none). ``num_classes`` is required: the label space is public.
    ``epsilon = math.inf`` only with ``method="nonprivate"``. Options that are FitConfig fields
    (``weight_decay``, ``loss``, ``train_bias``, ``normalize``, ``feature_norm``, ``center``,
    ``center_budget_fraction``, ``max_device_bytes``, ...) set them; any other option goes to
    ``config.method_options`` for the method. A ``public_mean`` implies ``center="public"``.
    The noise key comes from the OS secure random source unless ``seed`` is given; the report
    says ``seeded``.
    """
    num_classes = check_num_classes(num_classes)
    if public_mean is not None:
        options.setdefault("center", "public")
    config_options = {k: options.pop(k) for k in list(options) if k in _CONFIG_FIELDS}
    config = FitConfig(
        epsilon=float(epsilon),
        delta=float(delta),
        method=method,
        steps=steps,
        clip_norm=clip_norm,
        learning_rate=learning_rate,
        optimizer=optimizer,
        seed=seed,
        method_options=options,
        **config_options,
    )
    train = get_method(method)
    ledger = make_ledger(config.epsilon, config.delta)
    seed_value, seeded = noise_seed(seed)
    center_key, method_key = jax.random.split(jax.random.key(seed_value))
    data = load_train_data(
        features,
        labels,
        config=config,
        num_classes=num_classes,
        public_mean=public_mean,
        ledger=ledger,
        key=center_key,
        split=split,
    )
    weights, bias = train(data, config, ledger, method_key)
    weights, bias = np.asarray(weights, np.float32), np.asarray(bias, np.float32)
    if weights.shape != (data.dim, num_classes) or bias.shape != (num_classes,):
        raise RuntimeError(
            f"method {method!r} returned weights {weights.shape} and bias "
            f"{bias.shape}; expected ({data.dim}, {num_classes}) and "
            f"({num_classes},)"
        )
    private = not math.isinf(config.epsilon)
    if private and not ledger.releases:
        raise RuntimeError(f"method {method!r} returned parameters without charging the ledger")
    if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
        raise ValueError(
            f"training with method {method!r} diverged (non-finite weights); lower "
            "the learning_rate or the number of steps"
        )
    privacy = {
        **ledger.report(),
        "private": private,
        "method": method,
        "seeded": seeded,
        "dataset_size_public": True,
        "num_rows": data.num_rows,
    }
    if not private:  # no noise at all: the release is not private
        privacy.update(epsilon_spent="inf", mu="inf")
    return PrivateHead(weights, bias, config, privacy, data.preprocessing)
