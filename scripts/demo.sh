#!/usr/bin/env bash
# Set up a virtual environment, train a tiny Crab on the built-in synthetic corpus (CPU), then classify two demo
# clips with the exported model through `crab predict` (the pipeline). Offline apart from PyPI.
# The environment has the onnx extra (onnx, onnxscript, onnxruntime: about 37 MB of wheels, some 10 s), which the
# next steps in README.md ("After the demo") use: `crab export-onnx` and `crab predict --backend onnx-int8`.
# Measured times: README.md ("Quick start").
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/demo}
if [ -e "$out" ]; then  # before anything is installed: an earlier run's results are never overwritten
  echo "$out holds an earlier demo run; run the demo into another folder (bash scripts/demo.sh outputs/demo2), or delete $out to run it there again" >&2
  exit 1
fi
. scripts/venv.sh "onnx"
step "training a tiny Crab on the synthetic corpus into $out (dev and test results at the end)"
python train.py --output_dir "$out" --disable_tqdm True
step "two demo clips, classified by the exported model ($out/inference); every test clip: $out/predictions_test.csv"
crab predict "$out/demo_corpus/wavs/spk11_0076.wav" --text "Seriously, you ruined my phone, you idiot!" \
  "$out/demo_corpus/wavs/spk14_0025.wav" --text "Oh wow, I am so happy for you, Lucas!" \
  --model "$out/inference"
step "done; what to run next: README.md (\"After the demo\")"
