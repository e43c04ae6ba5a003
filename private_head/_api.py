"""``fit`` and ``select``: one path from the caller's arguments to a ``PrivateHead``.

    fit(x, y, num_classes=K, epsilon=4, delta=1e-6)  ->  PrivateHead
    select(x, y, num_classes=K, epsilon=2, delta=1e-6, candidates=[...])  ->  PrivateHead

The steps (docs/architecture.md, "What fit does"):

1. the options are sorted into the method's option type and the shared types (``_options``);
   ``select`` is the selection among its candidates run as one method (``_selection``); the
   fit's whole budget is reserved in the dataset's budget across runs, which refuses it when the
   total would pass the dataset's cap (``_spending``), before any row is read;
2. the rows are opened (``_rows.open_rows``): shapes, dtype and labels checked, nothing released;
3. to 6. ``_train.train``: the divisor, a private mean, the method's plan charged, its run; what
   the ledger spent is recorded in the dataset's budget.

The report never holds the true row count. ``head.performance`` holds the caller's
``Performance`` options only; how the rows were read (in place, streamed, the chunk sizes, the
passes) and the wall time depend on the row count and go to ``head.operator_log``, never saved
and not to be published (docs/architecture.md, "The whole artefact").
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

from accounting import PrivacyLedger
from feature_extract import store
from private_head._budget import Ledger
from private_head._data_files import ArraySplit, array_split, is_array_file
from private_head._head import PrivateHead
from private_head._keys import noise_key
from private_head._method import Method
from private_head._options import NoOptions, Routed, route
from private_head._progress import showing_progress
from private_head._registry import get_method
from private_head._rows import Rows, is_store_spec, open_rows
from private_head._selection import Selection
from private_head._spending import budget_target, dataset_spending
from private_head._statement import guarantee_warnings
from private_head._train import Trained, train
from private_head._validation import check_budget

OPERATOR_NOTE = (
    "operator information: how this machine read the rows and how long it took. It depends on "
    "the private data (the row count among it), is not covered by the privacy guarantee and must "
    "not be published."
)
ADJACENCY = (
    "add_or_remove_one: the guarantee hides whether any one row (features and label) is in the "
    "training data, its presence included; nothing released depends on the true row count except "
    "through charged releases. Replace-one adjacency: twice the reported mu (GDP)."
)


def make_ledger(epsilon: float, delta: float) -> PrivacyLedger:
    """The budget as a ledger; an (epsilon, delta) no finite noise can meet is a ValueError."""
    try:
        return PrivacyLedger(float(epsilon), float(delta))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"the budget epsilon={epsilon}, delta={delta} cannot be met: {err}"
        ) from err


def privacy_report(
    ledger: Ledger, method: Method[Any, Any], seeded: bool, trained: Trained
) -> dict[str, Any]:
    """The privacy report: the ledger's composition plus what the guarantee covers, and the
    entries the method's run added (e.g. what ``auto`` or a selection chose)."""
    report = {
        **ledger.report(),
        "adjacency": "add_or_remove_one",
        "adjacency_detail": ADJACENCY,
        "private": method.private,
        "method": method.name,
        "seeded": seeded,
        "dataset_size": trained.dataset_size,
        **({"standardize": trained.standardize} if trained.standardize else {}),
        **({"feature_spread": trained.feature_spread} if trained.feature_spread else {}),
        **trained.fitted.report,
        "warnings": guarantee_warnings(ledger.epsilon, method.private, seeded),
    }
    if not method.private:
        report.update(epsilon_spent="inf", mu="inf")
    return report


def warn_void(epsilon: float, private: bool) -> None:
    """A ``UserWarning`` for an epsilon above ``VOID_EPSILON``: the report's first warning
    (``_statement.guarantee_warnings``), said before the fit runs."""
    for text in guarantee_warnings(epsilon, private, seeded=False):
        warnings.warn(text, stacklevel=3)


def operator_log(rows: Rows, started: float) -> dict[str, Any]:
    """The fit's operator log (module docstring): the data path and the wall time since
    ``started`` (``time.perf_counter``), marked ``publish: false``."""
    seconds = time.perf_counter() - started
    return {"publish": False, "note": OPERATOR_NOTE, **rows.describe(), "seconds": seconds}


def describe_data(features: Any, arrays: ArraySplit | None, split: str) -> dict[str, Any]:
    """What a head was trained on, for its settings and its privacy statement: public facts
    only (a file's name, never its folder; a store's dataset and backbone attributes), never a
    row count."""
    if arrays is not None:
        return {"kind": "array_file", "name": arrays.name}
    if not is_store_spec(features):
        return {"kind": "arrays", "name": None}
    path, split = store.parse_store_path(os.fspath(features), split)
    info = store.split_info(path, split)
    described = {
        "kind": "store",
        "name": f"{os.path.basename(path)}:{split}",
        "dataset": info.attrs.get("dataset"),
        "backbone": info.attrs.get("backbone"),
    }
    if info.feature_groups is not None:  # the backbone's declared layout (standardize="auto")
        described["feature_groups"] = info.feature_groups
    return described


def _fit(
    method: Method[Any, Any],
    routed: Routed,
    features: Any,
    labels: Any,
    *,
    num_classes: int,
    epsilon: float,
    delta: float,
    seed: int | None,
    public_mean: Any,
    public_scale: Any,
    split: str,
    total_epsilon: float | None,
    budget_file: Any,
    progress: bool,
) -> PrivateHead:
    """Steps 1-6 of the module docstring for ``method`` with the routed options (``epsilon`` and
    ``delta`` checked for it)."""
    started = time.perf_counter()
    ledger = make_ledger(epsilon, delta)
    key, seeded = noise_key(seed)
    arrays = array_split(features, labels, split) if is_array_file(features) else None
    if arrays is not None:
        arrays.shape()  # the files hold what they should: checked before the budget is charged
    path, read_split = budget_target(features, split, budget_file)
    spending = dataset_spending(
        path,
        total_epsilon,
        method=method,
        split=read_split,
        epsilon=epsilon,
        delta=delta,
        seeded=seeded,
    )
    with spending as settle, showing_progress(progress, method.name):
        # the dataset's budget is charged before a row (or a store's metadata) is read
        data = describe_data(features, arrays, split)
        if arrays is not None:
            features, labels = arrays.load()
        rows = open_rows(
            features,
            labels,
            num_classes=num_classes,
            feature_norm=routed.preprocess.feature_norm,
            split=split,
            performance=routed.performance,
        )
        trained = train(
            rows,
            method,
            routed.method,
            routed.preprocess,
            routed.size,
            ledger,
            key,
            public_mean=public_mean,
            public_scale=public_scale,
            feature_groups=data.get("feature_groups"),
        )
        settle(ledger)
    privacy = privacy_report(ledger, method, seeded, trained)
    settings = {**trained.settings, "data": data}
    chosen = trained.fitted.chosen
    if chosen is not None:  # a selection: the head is its chosen candidate's
        privacy["method"] = chosen.method.name
        settings = {**settings, "method": chosen.method.name, "options": chosen.options.to_dict()}
    return PrivateHead(
        trained.weights,
        trained.bias,
        trained.preprocessing,
        privacy,
        settings,
        routed.performance.to_dict(),
        operator_log(rows, started),
    )


def fit(
    features: Any,
    labels: Any = None,
    *,
    num_classes: int,
    epsilon: float,
    delta: float,
    method: str = "auto",
    seed: int | None = None,
    public_mean: Any = None,
    public_scale: Any = None,
    split: str = "train",
    total_epsilon: float | None = None,
    budget_file: Any = None,
    progress: bool = True,
    **options: Any,
) -> PrivateHead:
    """Train a differentially private linear head and return it with its report.

    ``features``: an array [N, D] (float32, float16 or bfloat16; numpy or jax) with ``labels``
    [N], a store path ``"file.h5:train"`` (``split`` when the path names none), or your arrays
    in files: ``"X.npy"`` with ``labels`` an array or a ``.npy`` path, ``"F.npz[:split]"``
    (``_data_files``).
    ``num_classes`` is required: the label space is public. ``epsilon = math.inf`` only with
    ``method="nonprivate"``. ``options`` are the method's own (``describe_options(method)``) and
    the shared ones (``Preprocess``, ``DatasetSize``, ``Performance``); anything else is an error.
    ``public_mean`` [D] centres the rows (``center="public"``), or with ``public_scale`` [D] is
    the mean of ``standardize="public"``: ``x -> bound((x - public_mean) / public_scale)``.
    The noise key comes from 64 bits of the OS secure random source unless ``seed`` is given
    (the report then says ``seeded: true``). A fit on a store records what it spends in the
    store's budget file, an array file's in ``<file>.budget.json`` (``budget_file=`` sets
    another, or one for arrays in memory); ``total_epsilon`` caps the dataset's total across
    runs, and a fit that would pass the cap is refused before it reads a row (``_spending``).
    ``progress`` shows a bar on stderr for a plan of several releases (``_progress``).
    """
    chosen = get_method(method)
    epsilon, delta = check_budget(chosen.name, chosen.private, epsilon, delta)
    warn_void(epsilon, chosen.private)
    return _fit(
        chosen,
        route(method, chosen.options, options),
        features,
        labels,
        num_classes=num_classes,
        epsilon=epsilon,
        delta=delta,
        seed=seed,
        public_mean=public_mean,
        public_scale=public_scale,
        split=split,
        total_epsilon=total_epsilon,
        budget_file=budget_file,
        progress=progress,
    )


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
    public_scale: Any = None,
    split: str = "train",
    total_epsilon: float | None = None,
    budget_file: Any = None,
    progress: bool = True,
    **options: Any,
) -> PrivateHead:
    """Train every candidate (``{"method": name, **its options}``) and return the one chosen
    privately on a validation part of the rows (``_selection``); ``.privacy`` holds the whole
    cost: the count, every candidate's releases and the selection, in one ledger. ``options`` are
    the shared ones (preprocessing, dataset size, performance) for all candidates;
    ``total_epsilon``, ``budget_file`` and ``progress`` as in ``fit``."""
    selection = Selection.parse(
        candidates,
        mechanism=mechanism,
        validation_fraction=validation_fraction,
        selection_fraction=selection_fraction,
        split_salt=int(split_salt),
        public_validation=public_validation,
    )
    method = selection.as_method()
    epsilon, delta = check_budget(method.name, method.private, epsilon, delta)
    warn_void(epsilon, method.private)
    return _fit(
        method,
        route("select", NoOptions, options),
        features,
        labels,
        num_classes=num_classes,
        epsilon=epsilon,
        delta=delta,
        seed=seed,
        public_mean=public_mean,
        public_scale=public_scale,
        split=split,
        total_epsilon=total_epsilon,
        budget_file=budget_file,
        progress=progress,
    )


__all__ = ["fit", "select"]
