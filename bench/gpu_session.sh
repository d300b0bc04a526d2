#!/usr/bin/env bash
# The GPU measurements of bench/README.md in three phases, each well under ten minutes on one H100/H200, for a
# machine that has PyTorch, transformers, accelerate, scikit-learn and matplotlib but nothing else of ours
# (no pip install: the code runs from the checkout; the benchmarks need no soundfile/soxr; with wheels from
# bench/fetch_wheels.sh carried in .whl/, the check phase also runs train.py end to end).
#
#   bash bench/gpu_session.sh check    # environment, the CUDA tests, attention lever, release vs fast   (~5 min)
#   bash bench/gpu_session.sh train    # micro-batch 16/32, the encoder cache, regional compile          (~8 min)
#   bash bench/gpu_session.sh infer    # batch-1 latency, batched throughput, compiled inference          (~6 min)
#
# Tables go to $OUT/RESULTS-gpu.md (or bench/RESULTS-gpu.md), logs next to them; copy the tables into
# bench/RESULTS.md. SIZE=tiny DEVICE=cpu SCALE=0.05 runs the same phases small, to check the script itself.
set -euo pipefail
cd "$(dirname "$0")/.."
phase=${1:?usage: bash bench/gpu_session.sh check|train|infer}
size=${SIZE:-large}
device=${DEVICE:-cuda}
scale=${SCALE:-1}
out=${OUT:-bench}
mkdir -p "$out"
results="$out/RESULTS-gpu.md"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then  # from bench/fetch_wheels.sh, carried along
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
n() { "$python" -c "print(max(8, int($1 * $scale)))"; }

bench() {  # bench SCRIPT ARGS...: one benchmark, its log kept whatever happens
  local script=$1
  shift
  echo "== $script $*"
  "$python" "bench/$script" --size "$size" --device "$device" --results "$results" "$@" 2>&1 |
    tee -a "$out/$phase.log" | grep -v "^\[transformers\]" || echo "!! $script failed (see $out/$phase.log)"
}

case $phase in
check)
  {
    nvidia-smi || true
    "$python" -c "import torch, transformers, accelerate; print(torch.__version__, transformers.__version__,
accelerate.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
  } 2>&1 | tee "$out/environment.txt"
  # the fast-path equivalences on the GPU (CPU-only tests skip themselves there... and run here too: cheap)
  "$python" -m pytest -q -p no:cacheprovider tests/test_fast_path.py tests/test_model.py -rs 2>&1 |
    tee "$out/tests.log" | tail -15 || true
  if "$python" -c "import soundfile, soxr" 2>/dev/null; then
    # train.py end to end with this machine's defaults (bf16/TF32 on Ampere+, DataLoader workers): the built-in demo
    # (about a minute on 2 CPU cores, dev UAR ~0.86 there), then the same in the frozen-encoder mode
    for mode in full cached; do
      extra=()
      [[ $mode == cached ]] && extra=(--encoder_cache /tmp/crab_smoke_cache)
      "$python" train.py --output_dir "/tmp/crab_smoke_$mode" --disable_tqdm True "${extra[@]}" \
        2>&1 | tee "$out/smoke_$mode.log" | grep -A12 "^Crab results" || echo "!! train.py ($mode) failed"
    done
  else
    echo "soundfile/soxr not importable: run bash bench/fetch_wheels.sh and carry .whl to also run train.py here"
  fi
  bench bench_levers.py attention --batch-size 8
  bench bench_train.py --setups release,fast --utterances "$(n 240)"
  ;;
train)
  bench bench_train.py --setups fast@8,fast@16,fast@32,fast+cached@32 --utterances "$(n 640)"
  bench bench_train.py --setups fast@32,fast+ckpt@32,fast+ckpt@64 --utterances "$(n 640)"
  bench bench_train.py --setups fast@32,fast+compile@32 --utterances "$(n 640)" --warmup 8
  ;;
infer)
  bench bench_infer.py --setups release@1,fast@1 --fixed-s 6 --utterances "$(n 64)"
  bench bench_infer.py --setups release@1,fast@64,fast+compile@64 --utterances "$(n 2000)" --warmup 4
  ;;
*)
  echo "unknown phase '$phase': use check, train or infer" >&2
  exit 2
  ;;
esac
echo "tables: $results"
