#!/usr/bin/env bash
# Set up a virtual environment with everything the tests need, then run them. Offline apart from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"   # a CPU build here; GPU users install their own torch first
python -m pip install --quiet -e ".[dev]"
ruff check .
python -m pytest -q "$@"
