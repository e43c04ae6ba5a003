"""``fit`` end to end on CPU, the first fit of a process apart from a repeated one.

The speed suite's view of ``benchmarks.scale`` at a size that runs in about a minute on 2 cores
(320,000 x 1280 by default, K = 1000): each case in its own process, the first ``fit`` (cold:
its XLA compilations counted and timed on their own line) and the best of three repeated fits
(warm), each beside the same reference read measured in that process:

    array_single_step   float32 host array, against numpy ``X.sum(0)``
    store_single_step   float16 store, streamed under ``--budget`` (2.5e8: the split does not
                        fit, as the ImageNet-shape store does not fit 1 GB), against a raw h5py
                        read of the file

    python -m benchmarks.fit_speed [--rows 320000] [--dim 1280] [--classes 1000]
"""

from __future__ import annotations

import os
from typing import Any


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from benchmarks import scale

    p = scale.parser()
    p.prog, p.description = "python -m benchmarks.fit_speed", __doc__.split("\n\n")[0]
    p.set_defaults(
        rows=320_000,
        cases=["array_single_step", "store_single_step"],
        budget=2.5e8,
        out=os.path.join("benchmarks", "results", "fit_speed.json"),
    )
    args = p.parse_args(argv)
    results = scale.run_cases(args)
    print(scale.table(results))
    return results


if __name__ == "__main__":
    from benchmarks.cli import guard

    raise SystemExit(guard(main))
