#!/usr/bin/env bash
# The GPU measurements of bench/README.md in three phases, each within ten minutes on one H100/H200, for a
# machine that has PyTorch, transformers, accelerate, scikit-learn and matplotlib but nothing else of ours
# (no pip install: the code runs from the checkout; the benchmarks need no soundfile; with wheels from
# bench/fetch_wheels.sh carried in .whl/, the check phase also runs train.py end to end).
#
#   bash bench/gpu_session.sh check    # environment, the CUDA tests, attention lever, release vs fast   (~5 min)
#   bash bench/gpu_session.sh train    # micro-batch 16/32, the encoder cache, compile, bucketed graphs  (~10 min)
#   bash bench/gpu_session.sh infer    # batch-1 latency, batched throughput, compiled, bucketed graphs   (~8 min)
#   bash bench/gpu_session.sh all      # the essentials of all three in one call of < 8 min (a 15-minute lease)
#
# Tables go to $OUT/RESULTS-gpu.md (or bench/RESULTS-gpu.md), logs next to them; copy the tables into
# bench/RESULTS.md. SIZE=tiny DEVICE=cpu SCALE=0.05 runs the same phases small, to check the script itself.
set -euo pipefail
cd "$(dirname "$0")/.."
phase=${1:?usage: bash bench/gpu_session.sh check|train|infer|all}
size=${SIZE:-large}
device=${DEVICE:-cuda}
scale=${SCALE:-1}
out=${OUT:-bench}
mkdir -p "$out"
results="$out/RESULTS-gpu.md"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then  # from bench/fetch_wheels.sh, carried along
  if "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl; then
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
  else
    echo "the carried wheels do not install on this Python: train.py will not run here"
  fi
fi
n() { "$python" -c "print(max(8, int($1 * $scale)))"; }

bench() {  # bench SCRIPT ARGS...: one benchmark, its log kept whatever happens (within $limit seconds when set)
  local script=$1
  shift
  echo "== $script $*"
  timeout --kill-after=10 "${limit:-0}" "$python" "bench/$script" --size "$size" --device "$device" --results "$results" "$@" 2>&1 |
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
  if "$python" -c "import soundfile" 2>/dev/null; then
    # train.py end to end with this machine's defaults (bf16/TF32 on Ampere+, DataLoader workers): the built-in demo
    # (about two minutes on 2 CPU cores, dev UAR ~0.73 there on unseen voices), then the same in the frozen-encoder mode
    for mode in full cached; do
      extra=()
      [[ $mode == cached ]] && extra=(--encoder_cache /tmp/crab_smoke_cache)
      "$python" train.py --output_dir "/tmp/crab_smoke_$mode" --disable_tqdm True "${extra[@]}" \
        2>&1 | tee "$out/smoke_$mode.log" | grep -A12 "^Crab results" || echo "!! train.py ($mode) failed"
    done
  else
    echo "soundfile not importable: run bash bench/fetch_wheels.sh and carry .whl to also run train.py here"
  fi
  bench bench_levers.py attention --batch-size 8
  bench bench_train.py --setups release,fast --utterances "$(n 240)"
  ;;
train)
  bench bench_train.py --setups fast@8,fast@16,fast@32,fast+bf16w@32,fast+cached@32 --utterances "$(n 640)"
  bench bench_train.py --setups fast@32,fast+ckpt@32,fast+ckpt@64 --utterances "$(n 640)"
  bench bench_train.py --setups fast@32,fast+compile@32 --utterances "$(n 640)" --warmup 8
  # bucketed shapes (train.py --shape_buckets 8) with CUDA graphs; capped, as each shape compiles on first sight
  limit=150 bench bench_train.py --setups fast@32,fast+graphs@32 --utterances "$(n 320)" --warmup 24
  ;;
infer)
  bench bench_infer.py --setups release@1,fast@1 --fixed-s 6 --utterances "$(n 64)"
  bench bench_infer.py --setups release@1,fast@64,fast+compile@64 --utterances "$(n 2000)" --warmup 4
  limit=120 bench bench_infer.py --setups fast@64,fast+graphs@64 --utterances "$(n 1000)" --warmup 12  # pad_to_buckets
  ;;
all)
  # One call for a short lease: every step has its own time limit, the cheapest and most important first, and the
  # logs are packed after each step (logs.tgz), so that whatever finished comes back even if a later step hangs.
  # The device machine returns at most 8 files: the logs and profiles go to a scratch folder, packed as one file.
  final=$out
  out=$(mktemp -d)
  pack() { tar czf "$final/logs.tgz" -C "$out" . 2>/dev/null || true; }
  limit() {
    local seconds=$1
    shift
    timeout --kill-after=10 "$seconds" "$@" || echo "!! $1 ended with $? (limit ${seconds}s)"
  }
  {
    nvidia-smi -L || true
    "$python" -c "import torch, transformers, accelerate; print(torch.__version__, transformers.__version__,
accelerate.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
  } 2>&1 | tee "$out/environment.txt" || true
  limit 80 "$python" -m pytest -q -p no:cacheprovider tests/test_fast_path.py -k cuda -rs 2>&1 |
    tee "$out/tests.log" | tail -8
  pack
  limit=170 bench bench_train.py --setups release,fast,fast@32,fast+bf16w@32 --utterances "$(n 240)" --profile "$out"
  pack
  limit=60 bench bench_infer.py --setups release@1,fast@1,fast-bf16-cnn32-gru32@1 --fixed-s 6 --utterances "$(n 48)" \
    --profile "$out"
  limit=60 bench bench_infer.py --setups fast@64,fast@128 --utterances "$(n 1280)" --warmup 3
  pack
  if [[ ${SMOKE:-1} == 1 ]] && "$python" -c "import soundfile" 2>/dev/null; then  # SMOKE=0 skips train.py
    limit 75 "$python" train.py --output_dir /tmp/crab_smoke --disable_tqdm True 2>&1 | tee "$out/smoke.log" |
      grep -A12 "^Crab results" || echo "!! train.py failed (smoke.log)"
    pack
  fi
  limit=130 bench bench_train.py --setups fast@32,fast+compile@32 --utterances "$(n 320)" --warmup 6
  pack
  ;;
*)
  echo "unknown phase '$phase': use check, train or infer" >&2
  exit 2
  ;;
esac
echo "tables: $results"
