#!/usr/bin/env bash
# Set up a virtual environment, train a tiny Crab on the built-in synthetic corpus (CPU, a few minutes), then
# classify one held-out recording with the exported model. Offline apart from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"   # a CPU build here; GPU users install their own torch first
python -m pip install --quiet -e .
out=${1:-outputs/demo}
python train.py --output_dir "$out"
IFS=$'\t' read -r wav text label < <(python - "$out" <<'PY'
import csv, sys
manifest = f"{sys.argv[1]}/demo_corpus/manifest.csv"
row = next(r for r in csv.DictReader(open(manifest, newline="")) if r["split"] == "test")
print(f"{sys.argv[1]}/demo_corpus/{row['audio']}\t{row['text']}\t{row['label']}")
PY
)
echo "classifying $wav (\"$text\", labelled $label)"
crab predict "$wav" --text "$text" --model "$out/inference"
