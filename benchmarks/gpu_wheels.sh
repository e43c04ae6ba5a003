#!/usr/bin/env bash
# Download the wheels that `python -m benchmarks.gpu` needs on the GPU machine and that its image
# lacks, into .whl/ at the repository root (Python 3.12, manylinux x86_64; no dependencies).
#
#   bash benchmarks/gpu_wheels.sh            # PYTHON=... to use another interpreter's pip
#
# Why exactly these (the image already has jax, flax, optax, numpy, scipy, h5py, tqdm, pillow,
# absl-py, attrs, mpmath, opt-einsum, torch and timm):
#   dp-accounting  imported by accounting/ (private_head.fit charges a PrivacyLedger); its
#                  dependency dm-tree is used only by its own tests, so it is not carried
#   opacus         the Opacus peer section (needs torch, numpy, scipy, opt-einsum: all there)
# tensorflow-datasets is not needed: benchmarks.gpu reads synthetic images, never a TFDS source.
set -euo pipefail

PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST="$ROOT/.whl"
WHEELS=(dp-accounting==0.6.0 opacus==1.6.0)

mkdir -p "$DEST"
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DEST" "${WHEELS[@]}"

echo "wheels in $DEST:"
ls -l "$DEST"
for wheel in "$DEST"/*.whl; do
    echo "== $(basename "$wheel") requires (install them there if the image lacks one):"
    unzip -p "$wheel" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true
done
