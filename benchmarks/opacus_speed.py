"""One DP full-batch step of a linear softmax head: this project's kernel against Opacus.

Both sides take the same step on the same shapes (``N x D`` float32 features, ``K`` classes, a
bias, clip norm 1, noise multiplier 1, plain SGD):

- ours: ``clipped_gradient_sum`` (closed-form per-example norms, one matmul) + Gaussian noise on
  the sum + the SGD update, one jitted function;
- Opacus: ``PrivacyEngine.make_private`` on ``torch.nn.Linear(D, K)`` with the default hooks that
  materialise every per-example gradient ``[N, D, K]``, a forward, a backward and
  ``optimizer.step()`` (clip, sum, noise, update); torch's non-private step for reference.

Needs the optional ``compare`` extra (``pip install -e '.[compare]'``: torch and opacus); without
it the measurement is skipped with a message. Times are the best of ``repeats`` after a warm-up.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import Any

SKIPPED = "skipped: install .[compare] (torch and opacus) to compare with Opacus"


def available() -> bool:
    """True when both torch and opacus can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "opacus"))


def _best(fn: Callable[[], Any], repeats: int, sync: Callable[[Any], Any]) -> float:
    sync(fn())  # warm-up (compilation, allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def ours_seconds(num_rows: int, dim: int, num_classes: int, repeats: int) -> float:
    """Seconds of one jitted DP-SGD full-batch step with the project's kernel."""
    import jax
    import jax.numpy as jnp

    from private_head._kernel import clipped_gradient_sum

    key = jax.random.key(0)
    X = jax.random.normal(key, (num_rows, dim), jnp.float32)
    y = jax.random.randint(jax.random.fold_in(key, 1), (num_rows,), 0, num_classes)
    W, b = jnp.zeros((dim, num_classes)), jnp.zeros(num_classes)

    @jax.jit
    def step(W, b, X, y, key):
        gW, gb = clipped_gradient_sum(W, b, X, y, 1.0, train_bias=True)
        kW, kb = jax.random.split(key)
        gW = gW + jax.random.normal(kW, gW.shape) * 1.0
        gb = gb + jax.random.normal(kb, gb.shape) * 1.0
        return W - gW / num_rows, b - gb / num_rows

    return _best(lambda: step(W, b, X, y, key), repeats, jax.block_until_ready)


def opacus_seconds(
    num_rows: int, dim: int, num_classes: int, repeats: int
) -> tuple[float, float, str]:
    """``(opacus_s, torch_nonprivate_s, device)`` for one full-batch step."""
    import torch
    from opacus import PrivacyEngine

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(num_rows, dim, device=device)
    y = torch.randint(0, num_classes, (num_rows,), device=device)

    def sync(_: Any) -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def make_step(model: Any, optimizer: Any) -> Callable[[], None]:
        def step() -> None:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

        return step

    plain = torch.nn.Linear(dim, num_classes).to(device)
    nonprivate = _best(make_step(plain, torch.optim.SGD(plain.parameters(), lr=1.0)), repeats, sync)
    model = torch.nn.Linear(dim, num_classes).to(device)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=num_rows)
    model, optimizer, _ = PrivacyEngine().make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
    )
    private = _best(make_step(model, optimizer), repeats, sync)
    return private, nonprivate, device


def measure(num_rows: int, dim: int, num_classes: int, repeats: int) -> dict[str, Any]:
    """Both steps on the same shapes and their ratio (Opacus seconds / ours)."""
    import jax
    import opacus
    import torch

    ours = ours_seconds(num_rows, dim, num_classes, repeats)
    theirs, torch_plain, device = opacus_seconds(num_rows, dim, num_classes, repeats)
    return {
        "shape": f"{num_rows} x {dim} float32, {num_classes} classes",
        "ours_s": ours,
        "ours_device": str(jax.devices()[0]),
        "opacus_s": theirs,
        "torch_nonprivate_s": torch_plain,
        "torch_device": device,
        "opacus_over_ours": theirs / ours,
        "opacus_over_torch_nonprivate": theirs / torch_plain,
        "torch": torch.__version__,
        "opacus": opacus.__version__,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from benchmarks.cli import Parser, positive_int

    p = Parser(prog="python -m benchmarks.opacus_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=positive_int, default=8192, help="N")
    p.add_argument("--dim", type=positive_int, default=256, help="D")
    p.add_argument("--classes", type=positive_int, default=100, help="K")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed steps (best of)")
    args = p.parse_args(argv)
    if not available():
        print(SKIPPED)
        return {"skipped": SKIPPED}
    result = measure(args.rows, args.dim, args.classes, args.repeats)
    print(
        f"opacus comparison: {result['shape']}: ours {result['ours_s'] * 1e3:.2f} ms "
        f"({result['ours_device']}), Opacus {result['opacus_s'] * 1e3:.2f} ms "
        f"({result['torch_device']}), ratio {result['opacus_over_ours']:.1f}x"
    )
    return result


if __name__ == "__main__":
    from benchmarks.cli import guard

    raise SystemExit(guard(main))
