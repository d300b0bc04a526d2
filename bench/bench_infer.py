"""Crab inference throughput and real-time factor: the release-equivalent path and the fast path, side by side.

    python bench/bench_infer.py --size base --device cpu                          # uniform 1-12 s utterances
    python bench/bench_infer.py --size base --device cpu --fixed-s 6 --setups release@1,fast@1,fast@8
    python bench/bench_infer.py --size large --device cuda --setups release@1,fast@64,fast+compile@64
    python bench/bench_infer.py --size base --fixed-s 6 --setups fast@1,fast+int8@1,fast+onnx@1,fast+onnx+int8@1

CPU backends (`onnx`, `int8`; the `onnx` extra): each such setup is compared with the PyTorch fp32 setup of the same
levers and batch in the run: top-1 agreement and the largest score (probability) difference over the timed batches.

The release-equivalent path is the released test script: batch 1 (`release@1`), fp32, text padded to 128, eager
WavLM attention. Models are the inference export (no CSL legs), in eval mode under `torch.inference_mode()`.
RTF = compute seconds per audio second (below 1 is faster than real time).
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: spinning workers stall every small op when the CPU is shared. See bench_train.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from common import (  # noqa: E402
    LEVERS,
    Prepared,
    Setup,
    Utterances,
    batch_indices,
    build_model,
    make_batch,
    make_utterances,
    mfu_peak,
    parse_setup,
    report,
    run_side_by_side,
    set_precision,
    summarize,
)

MODEL_INPUTS = ("input_values", "attention_mask", "input_ids", "text_attention_mask")
COLUMNS = ["setup", "batch", "utt/s", "audio-s/s", "RTF", "step ms", "peak GiB", "padding", "GFLOP/audio-s"]
COLUMNS += ["TFLOP/s", "MFU", "size MB", "agreement", "max Δscore", "vs first"]
BACKENDS = {"onnx", "int8"}


def cpu_backend(model, setup: Setup, work_dir: Path):
    """`(forward(inputs) -> logits tensor, size on disk in bytes)` of an `onnx` / `int8` setup."""
    if "onnx" in setup:
        from modeling_crab.onnx_export import OnnxCrabSession, export_onnx, quantize_onnx

        path = export_onnx(model, work_dir / "model.onnx")
        if "int8" in setup:
            path = quantize_onnx(path, work_dir / "model_quantized.onnx")
        session = OnnxCrabSession(path, threads=torch.get_num_threads())
        return (lambda inputs: torch.from_numpy(session(**inputs)["logits"])), path.stat().st_size
    linears = {  # WavLM's gated relative position bias reads its Linear's weight directly: it stays fp32
        name: torch.ao.quantization.default_dynamic_qconfig
        for name, module in model.named_modules()
        if type(module) is torch.nn.Linear and not name.endswith("gru_rel_pos_linear")  # not attention out_proj
    }
    quantized = torch.ao.quantization.quantize_dynamic(model, linears, dtype=torch.qint8)
    torch.save(quantized.state_dict(), work_dir / "model.pt")
    return (lambda inputs: quantized(**inputs).logits), (work_dir / "model.pt").stat().st_size


def model_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def prepare(args, setup: Setup, device: torch.device, utts: Utterances, warm_utts: Utterances) -> Prepared:
    model = build_model(args.size, Setup(setup.name, setup.levers - BACKENDS), device, inference=True)
    vocab_size = model.config.text_config.vocab_size
    grouped, batch_size = "grouped" in setup, setup.batch_size
    timed_idx = batch_indices(utts, batch_size, grouped, seed=0)
    warm_idx = batch_indices(warm_utts, batch_size, grouped, seed=0)[: args.warmup]
    timed = [make_batch(utts, idx, setup, device, vocab_size, seed=i) for i, idx in enumerate(timed_idx)]
    buckets = utts.shape_buckets()  # static setups: warm-up meets the timed batches' shapes
    warm = [make_batch(warm_utts, idx, setup, device, vocab_size, i, buckets) for i, idx in enumerate(warm_idx)]
    size_bytes = model_bytes(model)
    if setup.levers & BACKENDS:
        with tempfile.TemporaryDirectory(prefix="crab-bench-") as work_dir:  # sessions keep the graph in memory
            run, size_bytes = cpu_backend(model, setup, Path(work_dir))
    else:

        def run(inputs: dict) -> torch.Tensor:
            with set_precision(setup, device):  # per call: the TF32 switch is global and setups interleave
                return model(**inputs).logits

    logits: dict[int, torch.Tensor] = {}

    def forward(batch: dict) -> torch.Tensor:
        return run({k: batch[k] for k in MODEL_INPUTS})

    def step(batch: dict, i: int) -> None:
        with torch.inference_mode():
            result = forward(batch)
        if batch is timed[i]:
            logits[i] = result.float().cpu()

    def flops_call() -> None:  # FlopCounterMode trips over weight_norm under inference_mode
        if not setup.levers & BACKENDS:  # onnxruntime runs outside torch's counters
            with torch.no_grad():
                forward(timed[0])

    prepared = Prepared(step, timed, timed_idx, warm, flops_call)
    prepared.logits, prepared.size_bytes = logits, size_bytes
    return prepared


def agreement(candidate: Prepared, reference: Prepared) -> tuple[str, str]:
    """Top-1 agreement and the largest probability difference over the timed batches."""
    same = total = 0
    largest = 0.0
    for i, logits in candidate.logits.items():
        ref = reference.logits[i]
        same += int((logits.argmax(-1) == ref.argmax(-1)).sum())
        total += len(ref)
        largest = max(largest, (logits.softmax(-1) - ref.softmax(-1)).abs().max().item())
    return f"{same / total:.1%}", f"{largest:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "base", "large"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--setups", default="release@1,fast", help=f"comma-separated, `@N` sets the batch; levers: {', '.join(LEVERS)}"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="batch of setups without @N (cuda 64, cpu 1)")
    parser.add_argument("--utterances", type=int, default=64, help="timed utterances (the same for every setup)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches before timing")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default: cuda 1, cpu 2)")
    parser.add_argument("--min-s", type=float, default=1.0)
    parser.add_argument("--max-s", type=float, default=12.0)
    parser.add_argument("--fixed-s", type=float, default=None, help="every utterance this long (for the RTF)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="MFU denominator (default: measured on CUDA; no MFU on CPU)"
    )
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the same-function check")
    parser.add_argument("--profile", default=None, help="also profile a few steps of each setup into this folder")
    parser.add_argument("--results", default="bench/RESULTS.md", help="append the table here ('' to skip)")
    args = parser.parse_args()

    device = torch.device(args.device)
    args.rounds = args.rounds or (1 if device.type == "cuda" else 2)
    args.batch_size = args.batch_size or (64 if device.type == "cuda" else 1)  # on CPU, batching did not pay
    if args.threads:
        torch.set_num_threads(args.threads)
    show_mfu = mfu_peak(args, device)
    setups = [parse_setup(spec, device.type, "infer", args.batch_size) for spec in args.setups.split(",")]
    utts = make_utterances(args.utterances, args.min_s, args.max_s, seed=0, fixed_s=args.fixed_s)
    max_batch = max(s.batch_size for s in setups)
    warm_utts = make_utterances(max(args.warmup, 1) * max_batch, args.min_s, args.max_s, seed=1, fixed_s=args.fixed_s)
    warm_utts.num_samples[:max_batch] = utts.num_samples.max()  # the worst case sets peak memory

    done = run_side_by_side(
        setups, lambda s: prepare(args, s, device, utts, warm_utts), device, args.rounds, args.profile
    )
    columns = list(COLUMNS)
    rows = [
        summarize(setup, prepared, utts, args.peak_tflops or float("nan")) for setup, prepared in zip(setups, done)
    ]
    for setup, prepared, row in zip(setups, done, rows):
        row["RTF"] = f"{1 / row['audio_per_s']:.3f}"
        row["vs first"] = f"{row['audio_per_s'] / rows[0]['audio_per_s']:.2f}x"
        row["size MB"] = f"{prepared.size_bytes / 1e6:.0f}"
        row["agreement"] = row["max Δscore"] = "-"
        if setup.levers & BACKENDS:
            row["GFLOP/audio-s"] = row["TFLOP/s"] = (
                "-"  # onnxruntime runs outside torch's FLOP counter  # against the PyTorch fp32 setup of the same levers and batch
            )
            reference = next(
                (
                    p
                    for s, p in zip(setups, done)
                    if s.levers == setup.levers - BACKENDS and s.batch_size == setup.batch_size
                ),
                None,
            )
            if reference is not None:
                row["agreement"], row["max Δscore"] = agreement(prepared, reference)
    lengths = f"all {args.fixed_s} s" if args.fixed_s else f"uniform in {args.min_s}-{args.max_s} s"
    notes = [
        f"{args.size}; {args.utterances} utterances {lengths}, timed in {args.rounds} interleaved round(s) after "
        f"{args.warmup} warm-up batches",
    ]
    report(args, "Inference", device, setups, utts, rows, columns, notes, show_mfu)


if __name__ == "__main__":
    main()
