#!/usr/bin/env bash
# Set up a virtual environment with everything the tests need, then run them. Offline apart from the package
# registries: PyPI, and Debian's packages for the browser (Space test) and ffmpeg (MELD recipe test) when root.
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
python -m pytest -q "$@"
