"""The contract every method keeps, exported, as scikit-learn exports ``check_estimator``: a method
added with ``register_method`` gets the same checks as the built-in ones (docs/architecture.md,
"Privacy conventions"; README, "Adding a method").

    from private_head.testing import check_method
    check_method("my_method")                    # AssertionError listing every problem
    check_method("dp_gd", {"steps": 3})          # options of the method, or shared ones

``check_method`` fits the method on a dataset and on its neighbours (a row added, a row removed)
with the same seed and the releases replayed, and checks that every planned draw is made and
nothing else, that the ledger holds the plan (and re-accounts to the reported epsilon), that each
draw has its planned noise, that each statistic moves by at most its sensitivity, and that
everything else the fit writes or returns is byte-equal (the whole artefact). ``check_fit`` does
the same for any fit-like callable (``select`` with its candidates). The rest is the machinery,
for tests of other entry points (the command line, stores, several processes): a ``Recorder``
set on every releaser by ``observing``, the artefacts of a fit, a folder or a command line, and
their differences.
"""

from private_head._artifacts import (
    Recorder,
    artifact_differences,
    check_neighbours,
    cli_artifacts,
    fit_artifacts,
    folder_artifacts,
    head_artifacts,
    mask_parameters,
    replayed,
)
from private_head._contract import check_fit, check_method, contract_data, neighbours
from private_head._release import observing

__all__ = [
    "Recorder",
    "artifact_differences",
    "check_fit",
    "check_method",
    "check_neighbours",
    "cli_artifacts",
    "contract_data",
    "fit_artifacts",
    "folder_artifacts",
    "head_artifacts",
    "mask_parameters",
    "neighbours",
    "observing",
    "replayed",
]
