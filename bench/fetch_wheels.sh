#!/usr/bin/env bash
# Wheels for what the lent GPU machine's image lacks (soundfile and what they need; the image has PyTorch,
# transformers, accelerate, scikit-learn, matplotlib and tokenizers) into .whl/, which git ignores. Call the device
# with carry=[".whl"]: bench/gpu_session.sh installs them when it finds them and then also runs train.py there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .git/info
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl soundfile cffi pycparser
ls .whl
