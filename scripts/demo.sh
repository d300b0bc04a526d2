#!/usr/bin/env bash
# Set up a virtual environment, then run Crab end to end on the built-in data. Offline apart from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e .
python examples/quickstart.py outputs/quickstart
