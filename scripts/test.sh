#!/usr/bin/env bash
# Set up a virtual environment with everything the tests need, then run them. Offline apart from the package
# registries: PyPI (packages, and transformers' source distribution for its common test mixins), and Debian's
# packages for the browser (Space test) and ffmpeg (MELD recipe test) when root.
# With no arguments, the model tests then run once more on the lowest transformers pyproject.toml admits, in
# .venv-lowest: the suite holds on every transformers the dependency range promises, not only the newest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v ffmpeg >/dev/null || missing+=(ffmpeg)
  if [ ${#missing[@]} -gt 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
      || echo "could not install ${missing[*]}; the tests that need them will be skipped"
  fi
fi
. scripts/venv.sh "dev,space,onnx"
ruff check .
python -m pytest -q -n auto --dist worksteal "$@"  # a worker per core, each with one intra-op thread (tests/conftest.py)
if [ $# -eq 0 ]; then
  lowest=$(python -c "import re; print(re.search(r'\"transformers>=([0-9.]+)', open('pyproject.toml').read())[1])")
  # transformers $lowest and the versions of its requirements pip picks for it, in .venv-lowest, ahead of .venv's
  # packages on the path: torch and the rest as .venv has them
  step "installing transformers $lowest, the lowest pyproject.toml admits, into .venv-lowest"
  rm -rf .venv-lowest
  python -m pip install --quiet --target .venv-lowest "transformers==$lowest"
  export PYTHONPATH=$PWD/.venv-lowest
  step "the model tests on transformers $(python -c 'import transformers; print(transformers.__version__)')"
  python -m pytest -q -p no:cacheprovider -n auto --dist worksteal -m "not slow" tests/test_modeling_crab.py tests/test_fast_path.py \
    tests/test_transformers_modeling_common.py tests/test_transformers_configuration_common.py \
    tests/test_transformers_processing_common.py tests/test_processing_crab.py tests/test_feature_extraction_crab.py \
    tests/test_heads.py tests/test_export.py tests/test_pipeline_crab.py tests/test_train.py
fi
