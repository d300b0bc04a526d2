#!/usr/bin/env bash
# Set up a virtual environment, train a tiny Crab on the built-in synthetic corpus (CPU), then classify the first
# test clips of each class with the exported model, beside their labels. Offline apart from PyPI.
# Measured times: README.md ("Two commands").
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh ""
out=${1:-outputs/demo}
step "training a tiny Crab on the synthetic corpus into $out (dev and test results at the end)"
python train.py --output_dir "$out" --disable_tqdm True
step "the first two test clips of each class, classified by the exported model ($out/inference)"
python -m modeling_crab.training.predict "$out/inference" --manifest "$out/demo_corpus/manifest.csv" --split test
step "done; what to run next: README.md (\"After the demo\")"
