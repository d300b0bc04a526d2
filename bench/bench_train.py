"""Crab training throughput: the release-equivalent step and the fast path, side by side in one process.

    python bench/bench_train.py --size tiny --device cpu
    python bench/bench_train.py --size large --device cuda --setups release,fast,fast+compile --steps 40

A step is one micro-batch: forward (encoders in train mode, CSL legs on), weighted CE + MLCS, backward, and an
AdamW step (two lr groups: 1e-5 head, 1e-6 encoders) every `--accum` micro-batches. See bench/README.md.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: spinning workers stall every small op when the CPU is shared (a tiny step took 15 s
# instead of 1 s on a loaded 2-core machine). Set OMP_WAIT_POLICY=ACTIVE to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402

import torch  # noqa: E402
from common import (  # noqa: E402
    LEVERS,
    NUM_LABELS,
    SAMPLING_RATE,
    Prepared,
    Setup,
    Utterances,
    batch_indices,
    build_model,
    cached_batch,
    make_batch,
    make_utterances,
    mfu_peak,
    parse_setup,
    report,
    run_side_by_side,
    set_precision,
    summarize,
)

from modeling_crab.training.precision import Bf16Weights  # noqa: E402

COLUMNS = ["setup", "batch", "utt/s", "audio-s/s", "step ms", "peak GiB", "padding", "GFLOP/audio-s", "TFLOP/s", "MFU"]
COLUMNS += ["vs first"]


def make_optimizer(model, setup: Setup) -> torch.optim.AdamW:
    groups = [
        {"params": [p for p in model.head_parameters() if p.requires_grad], "lr": 1e-5},
        {"params": [p for p in model.encoder_parameters() if p.requires_grad], "lr": 1e-6},
    ]
    if "fused" in setup:
        return torch.optim.AdamW(groups, weight_decay=0.01, fused=True)
    return torch.optim.AdamW(groups, weight_decay=0.01, foreach=False)


def prepare(args, setup: Setup, device: torch.device, utts: Utterances, warm_utts: Utterances) -> Prepared:
    model = build_model(args.size, setup, device)
    vocab_size = model.config.text_config.vocab_size
    optimizer = make_optimizer(model, setup)
    if "bf16w" in setup:  # cast once per optimizer step, not in every micro-batch's autocast
        Bf16Weights([model.crab.audio_encoder, model.crab.text_encoder]).attach(optimizer)
    model.config.class_weights = [1.0] * NUM_LABELS  # the weighted CE path, as train.py's
    grouped, batch_size = "grouped" in setup, setup.batch_size
    timed_idx = batch_indices(utts, batch_size, grouped, seed=0)
    warm_idx = batch_indices(warm_utts, batch_size, grouped, seed=0)[: args.warmup]
    timed = [make_batch(utts, idx, setup, device, vocab_size, seed=i) for i, idx in enumerate(timed_idx)]
    buckets = utts.shape_buckets()  # static setups: warm-up meets the timed batches' shapes
    warm = [make_batch(warm_utts, idx, setup, device, vocab_size, i, buckets) for i, idx in enumerate(warm_idx)]
    if "cached" in setup:  # encoded once, untimed, as `train.py --encoder_cache` does before training
        timed = [cached_batch(model, batch) for batch in timed]
        warm = [cached_batch(model, batch) for batch in warm]

    def forward_backward(batch: dict) -> None:
        with set_precision(setup, device):  # per call: the TF32 switch is global and setups interleave
            loss = model(**batch, output_csl_embeddings=True).loss  # weighted CE + MLCS, in fp32
        (loss / args.accum).backward()

    def step(batch: dict, i: int) -> None:
        forward_backward(batch)
        if (i + 1) % args.accum == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    def flops_call() -> None:
        forward_backward(timed[0])
        optimizer.zero_grad(set_to_none=True)

    return Prepared(
        step, timed, timed_idx, warm, flops_call, after_warmup=lambda: optimizer.zero_grad(set_to_none=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "base", "large"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--setups", default="release,fast", help=f"comma-separated; levers: {', '.join(LEVERS)}")
    parser.add_argument("--batch-size", type=int, default=8, help="micro-batch (MLCS is computed per micro-batch)")
    parser.add_argument("--accum", type=int, default=4, help="micro-batches per optimizer step (8 x 4 = 32)")
    parser.add_argument("--utterances", type=int, default=160, help="timed utterances (the same for every setup)")
    parser.add_argument("--warmup", type=int, default=4, help="untimed micro-batches before timing")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default: cuda 1, cpu 2)")
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the same-function check")
    parser.add_argument("--min-s", type=float, default=1.0)
    parser.add_argument("--max-s", type=float, default=12.0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="MFU denominator (default: measured on CUDA; no MFU on CPU)"
    )
    parser.add_argument("--profile", default=None, help="also profile a few steps of each setup into this folder")
    parser.add_argument("--results", default="bench/RESULTS.md", help="append the table here ('' to skip)")
    args = parser.parse_args()

    device = torch.device(args.device)
    args.rounds = args.rounds or (1 if device.type == "cuda" else 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    show_mfu = mfu_peak(args, device)
    setups = [parse_setup(spec, device.type, "train", args.batch_size) for spec in args.setups.split(",")]
    utts = make_utterances(args.utterances, args.min_s, args.max_s, seed=0)
    warm_utts = make_utterances(
        max(args.warmup, 1) * max(s.batch_size for s in setups), args.min_s, args.max_s, seed=1
    )
    warm_utts.num_samples[: args.batch_size] = int(args.max_s * SAMPLING_RATE)  # the worst case sets peak memory

    done = run_side_by_side(
        setups, lambda s: prepare(args, s, device, utts, warm_utts), device, args.rounds, args.profile
    )
    columns = list(COLUMNS)
    rows = [
        summarize(setup, prepared, utts, args.peak_tflops or float("nan")) for setup, prepared in zip(setups, done)
    ]
    for row in rows:
        row["vs first"] = f"{row['audio_per_s'] / rows[0]['audio_per_s']:.2f}x"
    notes = [
        f"{args.size}; {args.utterances} utterances uniform in {args.min_s}-{args.max_s} s, timed in {args.rounds} "
        f"interleaved round(s) after {args.warmup} warm-up micro-batches; {args.accum} micro-batches per AdamW step",
        "FLOPs counted on the first timed micro-batch, padding included",
    ]
    report(args, "Training", device, setups, utts, rows, columns, notes, show_mfu)


if __name__ == "__main__":
    main()
