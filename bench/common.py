"""Shared pieces of the Crab benchmarks: model sizes, synthetic data, the levers of a setup, and measurement.

A *setup* is the release-equivalent configuration plus any set of levers, written `release+sdpa+grouped`;
`fast` names every lever that pays on the device. Both benchmarks run their setups one after another in one process
on the same synthetic utterances, with freshly built models from the same seed.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import transformers
from transformers import RobertaConfig, WavLMConfig

from modeling_crab import CrabConfig, CrabForEmotionClassification
from modeling_crab.shape_buckets import AUDIO_MULTIPLE, TEXT_MULTIPLE, ShapeBuckets, bucket_length, choose_buckets
from modeling_crab.training.feature_cache import freeze_encoders
from modeling_crab.training.tiny import tiny_crab_config

SAMPLING_RATE = 16000
NUM_LABELS = 7  # MELD
RELEASE_TEXT_LENGTH = 128
SHAPE_BUCKETS = 8  # the `bucket` lever's: train.py --shape_buckets 8

# ---------------------------------------------------------------------------------------------------------------------
# Model sizes


def crab_config(size: str) -> CrabConfig:
    """tiny: the test/demo config; base: WavLM-base-plus + roberta-base shapes; large: the paper's (CrabConfig)."""
    labels = {"id2label": {i: f"LABEL_{i}" for i in range(NUM_LABELS)}}
    if size == "tiny":
        return tiny_crab_config(NUM_LABELS)
    if size == "base":
        audio = WavLMConfig(  # microsoft/wavlm-base-plus
            feat_extract_norm="group",
            do_stable_layer_norm=False,
            conv_bias=False,
            layerdrop=0.05,
            mask_time_prob=0.05,
            activation_dropout=0.0,
            feat_proj_dropout=0.1,
        )
        text = RobertaConfig(max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)  # roberta-base
        return CrabConfig(audio_config=audio, text_config=text, num_labels=NUM_LABELS, **labels)
    if size == "large":
        return CrabConfig(num_labels=NUM_LABELS, **labels)
    raise ValueError(f"--size {size}: use tiny, base or large")


# ---------------------------------------------------------------------------------------------------------------------
# Setups: the release-equivalent configuration and the levers of the fast path

LEVERS = {
    "sdpa": "WavLM self-attention through scaled_dot_product_attention (modeling_crab.wavlm_attention)",
    "grouped": "length-grouped batches (sorted within a window of 50 batches), so padding stops costing compute",
    "textpad": "text padded to the longest transcript of the batch (multiple of 8) instead of 128",
    "mask": "mask_padding=True: masked GRUs, key-padding masks, masked pooling (padding-invariant head)",
    "fused": "fused AdamW (one kernel for all parameters) instead of foreach=False",
    "bf16": "bf16 autocast (losses in fp32)",
    "tf32": "TF32 matmuls (convolutions use TF32 in every setup: PyTorch's default)",
    "gru32": "the unimodal GRUs run in fp32 under autocast (bf16 GRUs are slow or unsupported in cuDNN)",
    "cnn32": "the frozen speech CNN runs in fp32 under autocast (in bf16 it alone breaks the 1e-2 logits tolerance)",
    "compile": "torch.compile of every encoder layer and the head blocks (regional, dynamic shapes)",
    "bucket": "static shapes: audio and text padded to 8 lengths chosen from the timed utterances' length histogram, "
    "as train.py --shape_buckets 8 does (modeling_crab.shape_buckets); with compile, one graph per shape",
    "graphs": "compile with CUDA graphs (mode='reduce-overhead', static shapes; implies compile and bucket)",
    "cached": "frozen-encoder mode: encoders frozen, steps run the head and CSL legs on precomputed encoder outputs",
    "ckpt": "activation checkpointing in both encoders (train.py --gradient_checkpointing): memory for compute",
    "bf16w": "bf16 copies of the encoders' linear weights, cast once per optimizer step (train.py --bf16_weights)",
    "onnx": "inference through onnxruntime on the ONNX export (modeling_crab.onnx_export; CPU, fp32 unless int8)",
    "int8": "int8 dynamic quantization of the linear layers: onnxruntime's quantizer with onnx, torch's without",
}
# What `fast` means per device and benchmark (measured; see RESULTS.md). On CPU, SDPA with a bias that needs a
# gradient falls back to PyTorch's math kernel, no faster than eager WavLM, so CPU training leaves it out; bf16 pays
# for CPU inference where the CPU has native bf16 dot products (AVX512-BF16 / AMX).
FP32_PARTS = {"cnn32": "feature_encoder", "gru32": "gru"}  # lever -> config.fp32_under_autocast entry
CPU_BF16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
FAST_LEVERS = {
    ("cuda", "train"): ["sdpa", "grouped", "textpad", "mask", "fused", "bf16", "tf32", "gru32", "cnn32"],
    ("cuda", "infer"): ["sdpa", "grouped", "textpad", "mask", "bf16", "tf32", "gru32", "cnn32"],
    ("cpu", "train"): ["grouped", "textpad", "mask", "fused"],
    ("cpu", "infer"): ["sdpa", "grouped", "textpad", "mask"] + (["bf16", "cnn32"] if CPU_BF16 else []),
}


@dataclass
class Setup:
    name: str
    levers: set[str] = field(default_factory=set)
    batch_size: int = 8

    def __contains__(self, lever: str) -> bool:
        return lever in self.levers


def parse_setup(spec: str, device: str, mode: str, batch_size: int) -> Setup:
    """`release` or `fast`, then `+lever` / `-lever` edits and an optional `@batch`: `release+sdpa`, `fast@32`."""
    spec_levers, _, batch = spec.partition("@")
    base, *edits = re.split(r"(?=[+-])", spec_levers)
    if base not in ("release", "fast"):
        raise ValueError(f"setup '{spec}' must start with 'release' or 'fast'")
    levers = set(FAST_LEVERS[device, mode]) if base == "fast" else set()
    for edit in edits:
        lever = edit[1:]
        if lever not in LEVERS:
            raise ValueError(f"unknown lever '{lever}' in '{spec}'; choose from {sorted(LEVERS)}")
        (levers.add if edit[0] == "+" else levers.discard)(lever)
    return Setup(spec, levers, int(batch) if batch else batch_size)


def build_model(
    size: str, setup: Setup, device: torch.device, inference: bool = False
) -> CrabForEmotionClassification:
    """The same random weights for every setup (seed 0); only numerics-neutral switches differ."""
    config = crab_config(size)
    config.mask_padding = "mask" in setup
    config.use_csl_legs = not inference
    config.audio_attention = "sdpa" if "sdpa" in setup else "eager"
    config.fp32_under_autocast = [part for lever, part in FP32_PARTS.items() if lever in setup]
    torch.manual_seed(0)
    with device:
        model = CrabForEmotionClassification(config)
    model.to(device)  # WavLM's masked_spec_embed comes from the legacy torch.Tensor(), which ignores `with device`
    model.freeze_feature_encoder()
    if "cached" in setup:
        if "mask" not in setup:
            raise ValueError(f"setup '{setup.name}': cached (unpadded) encoder outputs need the mask lever")
        freeze_encoders(model)
    if "ckpt" in setup:  # the name transformers >= 5.24 calls it by; 5.17 has only the older one
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    if setup.levers & {"compile", "graphs"}:
        compile_regions(model, static="bucket" in setup or "graphs" in setup, graphs="graphs" in setup)
    return model.eval() if inference else model.train()


def cached_batch(model: CrabForEmotionClassification, batch: dict) -> dict:
    """What the frozen-encoder mode feeds the model: both encoders' outputs (eval mode) in place of audio and ids,
    with 0/1 masks, as `training.feature_cache.collate_cached` gives them."""
    with torch.no_grad():
        model.crab.audio_encoder.eval(), model.crab.text_encoder.eval()
        encoded = model.crab.encode(
            batch["input_values"], batch["input_ids"], batch["attention_mask"], batch["text_attention_mask"]
        )
        model.crab.audio_encoder.train(model.training), model.crab.text_encoder.train(model.training)
    encoder_outputs = {
        **encoded,
        "frame_mask": encoded["frame_mask"].long(),
        "token_mask": batch["text_attention_mask"],
    }
    return {"encoder_outputs": encoder_outputs, "labels": batch["labels"]}


def compile_regions(model: CrabForEmotionClassification, static: bool = False, graphs: bool = False) -> None:
    """`model.compile_regions`: each encoder layer once plus the head blocks. `static` compiles one graph per
    (bucketed) shape; `graphs` also captures CUDA graphs."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)  # one per shape bucket
    model.compile_regions(dynamic=not static, mode="reduce-overhead" if graphs else None)


def set_precision(setup: Setup, device: torch.device) -> contextlib.AbstractContextManager:
    """The global TF32 matmul switch for this setup; returns its autocast context (a no-op without bf16)."""
    torch.set_float32_matmul_precision("high" if "tf32" in setup else "highest")  # cuDNN convs: TF32 by default
    if "bf16" in setup:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------------------------------
# Synthetic data: waveform lengths uniform in [min_s, max_s], transcripts about 3 tokens a second


@dataclass
class Utterances:
    num_samples: np.ndarray  # (N,) waveform lengths
    num_tokens: np.ndarray  # (N,) transcript lengths, <= 128 with <s> and </s>
    labels: np.ndarray  # (N,)

    @property
    def seconds(self) -> np.ndarray:
        return self.num_samples / SAMPLING_RATE

    def shape_buckets(self) -> ShapeBuckets:
        """The `bucket` lever's padded lengths: `SHAPE_BUCKETS` audio and token lengths chosen from these
        utterances' lengths, as train.py --shape_buckets chooses them from a training split."""
        audio = choose_buckets(self.num_samples, SHAPE_BUCKETS, AUDIO_MULTIPLE)
        return ShapeBuckets(audio, choose_buckets(self.num_tokens, SHAPE_BUCKETS, TEXT_MULTIPLE))


def make_utterances(n: int, min_s: float, max_s: float, seed: int, fixed_s: float | None = None) -> Utterances:
    rng = np.random.default_rng(seed)
    seconds = np.full(n, fixed_s) if fixed_s else rng.uniform(min_s, max_s, n)
    tokens = np.clip(np.round(3.0 * seconds + rng.integers(2, 9, n)), 3, RELEASE_TEXT_LENGTH).astype(int)
    return Utterances((seconds * SAMPLING_RATE).astype(int), tokens, rng.integers(0, NUM_LABELS, n))


def batch_indices(utts: Utterances, batch_size: int, grouped: bool, seed: int) -> list[np.ndarray]:
    """Random batches, or length-grouped ones: shuffle, sort each window of 50 batches by length, cut, shuffle."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(utts.num_samples))
    if grouped:
        window = 50 * batch_size
        chunks = [order[i : i + window] for i in range(0, len(order), window)]
        order = np.concatenate([c[np.argsort(-utts.num_samples[c], kind="stable")] for c in chunks])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))] if grouped else batches


def make_batch(
    utts: Utterances,
    idx: np.ndarray,
    setup: Setup,
    device: torch.device,
    vocab_size: int,
    seed: int,
    buckets: ShapeBuckets | None = None,
) -> dict:
    """Random waveforms (zero padded, as the feature extractor does) and random token ids, on `device`. Setups with
    static shapes pad to `buckets` (default: `utts.shape_buckets()`; the warm-up batches take the timed ones)."""
    generator = torch.Generator().manual_seed(seed)
    num_samples = torch.as_tensor(utts.num_samples[idx])
    num_tokens = torch.as_tensor(utts.num_tokens[idx])
    static = bool(setup.levers & {"bucket", "graphs"})
    buckets = (buckets or utts.shape_buckets()) if static else ShapeBuckets()
    text_length = RELEASE_TEXT_LENGTH
    if "textpad" in setup:
        longest = int(num_tokens.max())
        text_length = min(
            RELEASE_TEXT_LENGTH, bucket_length(longest, buckets.text) if static else _round_up(longest, 8)
        )
    audio_length = bucket_length(int(num_samples.max()), buckets.audio)
    attention_mask = (torch.arange(audio_length) < num_samples[:, None]).long()
    text_attention_mask = (torch.arange(text_length) < num_tokens[:, None]).long()
    input_ids = torch.randint(5, vocab_size, text_attention_mask.shape, generator=generator) * text_attention_mask
    input_ids = input_ids + (1 - text_attention_mask)  # <pad> = 1
    batch = {
        "input_values": torch.randn(attention_mask.shape, generator=generator) * attention_mask,
        "attention_mask": attention_mask,
        "input_ids": input_ids,
        "text_attention_mask": text_attention_mask,
        "labels": torch.as_tensor(utts.labels[idx]),
    }
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def padding_fraction(utts: Utterances, batches: list[np.ndarray], buckets: ShapeBuckets | None = None) -> float:
    real = sum(utts.num_samples[b].sum() for b in batches)
    audio = buckets.audio if buckets else None
    padded = sum(bucket_length(int(utts.num_samples[b].max()), audio) * len(b) for b in batches)
    return 1.0 - real / padded


# ---------------------------------------------------------------------------------------------------------------------
# Measurement


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """CUDA: max_memory_allocated. CPU: growth of the peak resident set (VmHWM, reset via /proc/self/clear_refs)."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = 0
            return
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.baseline = _proc_status_kib("VmRSS")

    def peak_gib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        return (_proc_status_kib("VmHWM") - self.baseline) / 2**20


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def count_flops(fn) -> int:
    """FLOPs of one call of `fn` (matmuls, convolutions, attention; GRUs are not counted: ~1% at these sizes)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.compiler.set_stance("force_eager"), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def measured_peak_tflops(device: torch.device) -> float:
    """Dense matmul throughput of this device, best of 10 (bf16 8192² on CUDA, fp32 2048² on CPU): the MFU
    denominator. Best-of keeps it near the hardware's figure when other jobs share a CPU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(10):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def environment(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        name = f"{platform.machine()} CPU, {torch.get_num_threads()} threads, load average {load}"
    return (
        f"{name}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}"
    )


def format_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def record(path: str | None, title: str, device: torch.device, table: str, notes: list[str]) -> None:
    """Print the table and append it, with the exact command and environment, to `path`."""
    command = "python " + " ".join(sys.argv)
    text = f"\n### {title}\n\n`{command}`\n\n{environment(device)}\n\n{table}\n"
    text += "".join(f"\n- {note}" for note in notes) + ("\n" if notes else "")
    print(text)
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "a") as f:
            f.write(text)


# ---------------------------------------------------------------------------------------------------------------------
# Side by side


@dataclass
class Prepared:
    """One setup, ready to time: `step(batch, i)` is one timed unit; `flops_call` runs once under the FLOP counter."""

    step: Callable[[dict, int], None]
    timed: list[dict]
    timed_idx: list[np.ndarray]
    warm: list[dict]
    flops_call: Callable[[], None]
    after_warmup: Callable[[], None] = lambda: None
    elapsed: float = 0.0
    cpu_elapsed: float = 0.0  # process CPU time (all threads): on a shared CPU, less sensitive to other jobs
    flops: int = 0
    peak_gib: float = 0.0


def run_side_by_side(
    setups: list[Setup],
    prepare: Callable[[Setup], Prepared],
    device: torch.device,
    rounds: int,
    profile_dir: str | None = None,
) -> list[Prepared]:
    """Build and warm up each setup in turn (peak memory is measured from its build through its warm-up), then time
    them: one after another with `rounds=1` (each freed before the next is built), or interleaved in `rounds`
    chunks so that load changes on a shared machine hit every setup alike. With `profile_dir`, each setup's first
    timed steps are also run once more under the profiler after timing (`profile_steps`)."""
    memory = PeakMemory(device)
    done = []
    for setup in setups:
        memory.reset()
        prepared = prepare(setup)
        prepared.flops = count_flops(prepared.flops_call)
        for i, batch in enumerate(prepared.warm):
            prepared.step(batch, i)
        prepared.after_warmup()
        synchronize(device)
        prepared.peak_gib = memory.peak_gib()
        print(f"[{setup.name}] built and warmed up; peak {prepared.peak_gib:.2f} GiB", flush=True)
        if rounds == 1:
            _time_chunk(prepared, range(len(prepared.timed)), device)
            if profile_dir:
                profile_steps(prepared, setup, device, profile_dir)
            prepared.step = prepared.flops_call = prepared.after_warmup = None  # free the model and optimizer
            prepared.timed = prepared.warm = []
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        done.append(prepared)
    if rounds > 1:
        for r in range(rounds):
            for prepared in done:
                chunk = np.array_split(np.arange(len(prepared.timed)), rounds)[r]
                _time_chunk(prepared, chunk, device)
        if profile_dir:
            for setup, prepared in zip(setups, done):
                profile_steps(prepared, setup, device, profile_dir)
    return done


def profile_steps(prepared: Prepared, setup: Setup, device: torch.device, out_dir: str, steps: int = 4) -> str:
    """Where a step's time goes: `steps` timed steps (untimed here) under torch.profiler. Writes the top operators
    and kernels by self device time to `out_dir/profile-<setup>.txt` and returns the one-line summary: wall time,
    the time the device was busy with kernels (its share of the wall time is how far from launch-bound the step
    is), and the kernel count."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    indices = range(min(steps, len(prepared.timed)))
    synchronize(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for i in indices:
            prepared.step(prepared.timed[i], i)
        synchronize(device)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    sort_key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    kernels = [e for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / 1e6 if kernels else float("nan")
    summary = (
        f"{setup.name}: {len(indices)} steps in {wall * 1000:.0f} ms wall; kernels {busy * 1000:.0f} ms "
        f"({busy / wall:.0%} of wall), {len(kernels) / max(1, len(indices)):.0f} kernel launches per step"
    )
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "profile-" + re.sub(r"[^A-Za-z0-9._-]", "_", setup.name) + ".txt")
    with open(path, "w") as f:
        f.write(summary + "\n\n" + events.table(sort_by=sort_key, row_limit=30, max_name_column_width=70) + "\n")
    print("[profile] " + summary, flush=True)
    return summary


def _time_chunk(prepared: Prepared, indices, device: torch.device) -> None:
    synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in indices:
        prepared.step(prepared.timed[i], int(i))
    synchronize(device)
    prepared.elapsed += time.perf_counter() - start
    prepared.cpu_elapsed += time.process_time() - cpu_start


def summarize(setup: Setup, prepared: Prepared, utts: Utterances, peak_tflops: float) -> dict:
    audio_s = sum(utts.seconds[idx].sum() for idx in prepared.timed_idx)
    num_utts = sum(len(idx) for idx in prepared.timed_idx)
    audio_per_s = audio_s / prepared.elapsed
    flops_per_audio_s = prepared.flops / utts.seconds[prepared.timed_idx[0]].sum()
    achieved = flops_per_audio_s * audio_per_s / 1e12
    static = bool(setup.levers & {"bucket", "graphs"})
    return {
        "setup": setup.name,
        "batch": setup.batch_size,
        "utt/s": f"{num_utts / prepared.elapsed:.2f}",
        "audio-s/s": f"{audio_per_s:.1f}",
        "step ms": f"{1000 * prepared.elapsed / len(prepared.timed_idx):.0f}",
        "peak GiB": f"{prepared.peak_gib:.2f}",
        "padding": f"{padding_fraction(utts, prepared.timed_idx, utts.shape_buckets() if static else None):.0%}",
        "GFLOP/audio-s": f"{flops_per_audio_s / 1e9:.1f}",
        "TFLOP/s": f"{achieved:.3f}",
        "MFU": f"{achieved / peak_tflops:.1%}",
        "CPU-s/audio-s": f"{prepared.cpu_elapsed / audio_s:.3f}",
        "audio_per_s": audio_per_s,
    }


def check_same_function(size: str, setup: Setup, device: torch.device, utts: Utterances, vocab_size: int) -> str:
    """Logits and MLCS objective of `setup` against the reference path (eager WavLM, fp32, no compile; same
    `mask_padding`) on one padded batch of 4, in eval mode: within 1e-5 in fp32, 1e-2 relative in bf16."""
    idx = np.arange(min(4, len(utts.num_samples)))
    batch = make_batch(utts, idx, setup, device, vocab_size, seed=123)
    inputs = {k: batch[k] for k in ("input_values", "attention_mask", "input_ids", "text_attention_mask")}
    results = []
    for candidate in (Setup("reference", setup.levers & {"mask"}), setup):
        model = build_model(size, candidate, device).eval()
        model_inputs = inputs
        if "cached" in candidate:
            model_inputs = {k: v for k, v in cached_batch(model, batch).items() if k != "labels"}
        with torch.no_grad(), set_precision(candidate, device):
            out = model(**model_inputs, labels=batch["labels"], output_csl_embeddings=True)
            loss = out.loss
        results.append((out.logits.float(), loss.float()))
        del model
    (ref_logits, ref_loss), (logits, loss) = results
    abs_err = (logits - ref_logits).abs().max().item()
    rel_err = abs_err / ref_logits.abs().max().item()
    loss_rel = abs(loss.item() - ref_loss.item()) / abs(ref_loss.item())
    low_precision = bool(setup.levers & {"bf16", "tf32"})
    ok = rel_err <= 1e-2 and loss_rel <= 1e-2 if low_precision else abs_err <= 1e-5 and loss_rel <= 1e-5
    return (
        f"{setup.name} vs reference: max|Δlogits| {abs_err:.1e} (relative {rel_err:.1e}), MLCS objective relative "
        f"{loss_rel:.1e} -> {'same function' if ok else 'OUT OF TOLERANCE'} "
        f"({'1e-2 relative, low precision' if low_precision else '1e-5, fp32'})"
    )


def mfu_peak(args, device: torch.device) -> bool:
    """Whether to show MFU (CUDA, or a given `--peak-tflops`: a shared CPU has no meaningful peak); measures the
    peak into `args.peak_tflops` when it is needed and not given."""
    show = args.peak_tflops is not None or device.type == "cuda"
    if show and args.peak_tflops is None:
        args.peak_tflops = measured_peak_tflops(device)
    return show


def report(
    args,
    title: str,
    device: torch.device,
    setups: list[Setup],
    utts: Utterances,
    rows: list[dict],
    columns: list[str],
    notes: list[str],
    show_mfu: bool,
) -> None:
    """The shared tail of bench_train/bench_infer: MFU and lever notes, the same-function checks, the CPU-time
    column on CPU, then `record`."""
    notes = [
        *notes,
        f"MFU against {args.peak_tflops or float('nan'):.3g} TFLOP/s (measured dense matmul unless --peak-tflops)",
        "levers: " + "; ".join(f"{s.name} = {{{', '.join(sorted(s.levers)) or 'none'}}}" for s in setups),
    ]
    if args.check:
        vocab_size = crab_config(args.size).text_config.vocab_size
        checked = [s for s in setups if s.levers and not s.levers & {"onnx", "int8"}]  # those: agreement columns
        notes += [check_same_function(args.size, s, device, utts, vocab_size) for s in checked]
    if device.type == "cpu":  # process CPU time: the ratio least disturbed by other jobs on a shared machine
        columns = [*columns[:-1], "CPU-s/audio-s", columns[-1]]
    if not show_mfu:
        columns = [c for c in columns if c != "MFU"]
        notes = [note for note in notes if not note.startswith("MFU")]
    record(args.results, f"{title}, {args.size}, {args.device}", device, format_table(rows, columns), notes)
