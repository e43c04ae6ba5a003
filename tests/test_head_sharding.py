"""Rows sharded over 4 (forced host) devices give the single-device results."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json
    import jax
    import numpy as np
    from accounting import PrivacyLedger
    from private_head import sharding
    from private_head.config import FitConfig
    from private_head.data import preprocess
    from private_head.kernel import clipped_gradient_sum, zero_init_class_sums
    from private_head.methods import get_method

    assert len(jax.devices()) == 4
    K, D, N = 3, 5, 103  # 103 rows: padded to 104 with mask 0
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, N).astype(np.int32)
    X = (rng.normal(size=(N, D)) + 2.0 * np.eye(K, D)[y]).astype(np.float32)
    W = rng.normal(size=(D, K)).astype(np.float32)
    b = rng.normal(size=K).astype(np.float32)

    def rel(a, b):
        a = np.concatenate([np.ravel(np.asarray(x)) for x in a])
        b = np.concatenate([np.ravel(np.asarray(x)) for x in b])
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    out = {}
    rows = sharding.device_rows(X, y)
    out["shards"] = len(rows.X.sharding.device_set)
    out["padded_rows"] = int(rows.X.shape[0])
    out["kernel"] = rel(clipped_gradient_sum(W, b, rows.X, rows.y, 0.5, loss="sigmoid",
                                             mask=rows.mask),
                        clipped_gradient_sum(W, b, X, y, 0.5, loss="sigmoid"))
    out["zero_init"] = rel(zero_init_class_sums(rows.X, rows.y, K, 0.5, train_bias=True,
                                                mask=rows.mask),
                           zero_init_class_sums(X, y, K, 0.5, train_bias=True))
    cases = {"single_step": {"train_bias": True},
             "dp_gd": {"steps": 3, "optimizer": "momentum", "learning_rate": 0.5,
                       "train_bias": True},
             "dp_sgd": {"steps": 2, "method_options": {"batch_size": 30}}}
    mesh = sharding.data_mesh
    for method, kw in cases.items():
        heads = []
        for sharded in (True, False):
            sharding.data_mesh = mesh if sharded else (lambda: None)
            cfg = FitConfig(epsilon=4.0, delta=1e-5, method=method, **kw)
            data = preprocess(X, y, cfg, num_classes=K)
            ledger = PrivacyLedger(4.0, 1e-5, value_discretization_interval=1e-2)
            heads.append(get_method(method)(data, cfg, ledger, jax.random.key(1)))
        out[method] = rel(*heads)
    print(json.dumps(out))
""")


def test_sharded_equals_single_device():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("shards") == 4 and out.pop("padded_rows") == 104
    for name, err in out.items():
        assert err < 1e-5, (name, err)
