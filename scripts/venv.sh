# Sourced by demo.sh and test.sh: create and activate a virtual environment (.venv, or the folder in $2), then install
# this package with the extras in $1 (and, for test.sh's second environment, the extra requirement in $3).
# A torch already importable there (a GPU build you installed first) is kept; otherwise torch 2.13.0 from PyPI.
step() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
venv=${2:-.venv}
step "virtual environment $venv (Python $(python3 -c 'import platform; print(platform.python_version())'))"
python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
if version=$(python -c "import torch; print(torch.__version__)" 2>/dev/null); then
  step "keeping torch $version, already in $venv"
else
  step "installing torch 2.13.0 (about 200 MB for the CPU build; the longest step)"
  python -m pip install --quiet "torch==2.13.0"
fi
step "installing crab-ser${1:+[$1]}${3:+ with $3} and its dependencies (transformers, datasets, scikit-learn, ...)"
# setuptools' note on editable installs ("careful with folders named like the package") is about other projects'
# layouts: here the package folder is the one installed
PYTHONWARNINGS="ignore:Editable installation" python -m pip install --quiet -e ".${1:+[$1]}" ${3:+"$3"}
step "environment ready"
