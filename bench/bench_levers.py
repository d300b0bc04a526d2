"""Single levers measured in isolation, each against a copy without it (the end-to-end view is bench_train.py).

python bench/bench_levers.py attention --size base     # WavLM encoder stack: eager vs SDPA attention
python bench/bench_levers.py gru --size base           # the unimodal GRU: over padding, packed, the model's
python bench/bench_levers.py compile --size base       # Crab head blocks: eager vs torch.compile (+ compile time)
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: spinning workers stall every small op when the CPU is shared. See bench_train.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
from common import crab_config, format_table, record, synchronize  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402
from transformers import WavLMModel  # noqa: E402

from modeling_crab.modeling_crab import CrabForEmotionClassification, CrabUnimodalBlock  # noqa: E402
from modeling_crab.wavlm_attention import set_wavlm_attention  # noqa: E402


def lengths_tensor(args, device: torch.device) -> torch.Tensor:
    """Frame counts (50 per second) of one batch, uniform in [min_s, max_s]."""
    generator = torch.Generator().manual_seed(0)
    seconds = args.min_s + (args.max_s - args.min_s) * torch.rand(args.batch_size, generator=generator)
    return (seconds * 50).long().to(device)


def time_calls(calls: dict[str, Callable[[], None]], device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds per call of each variant after one warm-up call; variants alternate call by call, so that load
    changes on a shared machine hit them alike."""
    times = {name: [] for name in calls}
    for repeat in range(repeats + 1):
        for name, fn in calls.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            if repeat:
                times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def attention(args, device: torch.device) -> tuple[list[dict], list[str]]:
    config = copy.deepcopy(crab_config(args.size).audio_config)
    config.layerdrop, config.hidden_dropout, config.attention_dropout, config.activation_dropout = 0.0, 0.0, 0.0, 0.0
    torch.manual_seed(0)
    eager = WavLMModel(config).to(device).train()
    sdpa = set_wavlm_attention(copy.deepcopy(eager), "sdpa")
    lengths = lengths_tensor(args, device)
    frames = int(lengths.max())
    hidden = torch.randn(args.batch_size, frames, config.hidden_size, device=device)
    mask = torch.arange(frames, device=device) < lengths[:, None]

    def call(model: WavLMModel, mode: str) -> Callable[[], None]:
        if mode == "forward":
            return torch.inference_mode()(lambda: model.encoder(hidden, attention_mask=mask))
        return lambda: model.encoder(hidden.clone(), attention_mask=mask).last_hidden_state.sum().backward()

    rows = []
    for mode in ("forward", "forward+backward"):
        times = time_calls({"eager": call(eager, mode), "sdpa": call(sdpa, mode)}, device, args.repeats)
        rows.append(_row(f"WavLM encoder {mode}", times["eager"], times["sdpa"]))
    note = f"{args.size} WavLM encoder ({config.num_hidden_layers} layers), batch {args.batch_size} x {frames} frames"
    return rows, [note]


def gru(args, device: torch.device) -> tuple[list[dict], list[str]]:
    config = crab_config(args.size)
    torch.manual_seed(0)
    block = CrabUnimodalBlock(config.audio_config.hidden_size, config.fusion_hidden_size).to(device)
    lengths = lengths_tensor(args, device)
    frames = int(lengths.max())
    features = torch.randn(args.batch_size, frames, config.audio_config.hidden_size, device=device)
    mask = torch.arange(frames, device=device) < lengths[:, None]

    def packed(x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:  # cuDNN's way, on any device
        sequences = pack_padded_sequence(x, frame_mask.sum(1).cpu(), batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(block.gru(sequences)[0], batch_first=True, total_length=x.shape[1])[0]

    variants = {
        "padded": lambda: block.recurrence(projected, None),  # the released GRU over padding
        "packed": lambda: packed(projected, mask),
        "masked": lambda: block.recurrence(projected, mask),  # the model's: packed on CUDA or without grad
    }
    projected = block.layer_norm(block.projection(features)).detach().requires_grad_()

    def call(variant: Callable[[], torch.Tensor], mode: str) -> Callable[[], None]:
        if mode == "forward":
            return torch.inference_mode()(variant)
        return lambda: variant().sum().backward()

    rows = []
    for mode in ("forward", "forward+backward"):
        times = time_calls({name: call(v, mode) for name, v in variants.items()}, device, args.repeats)
        rows.append(_row(f"GRU {mode}", times["padded"], times["masked"], ("over padding", "masked (model)")))
        rows.append(_row(f"GRU {mode}", times["packed"], times["masked"], ("packed", "masked (model)")))
    padding = 1 - lengths.sum().item() / (frames * args.batch_size)
    return rows, [
        f"{args.size} audio unimodal block, batch {args.batch_size} x {frames} frames, {padding:.0%} padding"
    ]


def compile_head(args, device: torch.device) -> tuple[list[dict], list[str]]:
    """The head blocks after the GRUs (cross-attention, pooling, classifier; GRUs are not compiled), fwd + bwd."""
    config = crab_config(args.size)
    config.mask_padding = True
    torch.manual_seed(0)
    with torch.device("meta"):
        shell = CrabForEmotionClassification(config)  # only the head blocks are materialised below
    blocks = torch.nn.ModuleDict(
        {
            "audio_cross": shell.crab.audio_cross,
            "text_cross": shell.crab.text_cross,
            "audio_pooling": shell.crab.audio_pooling,
            "text_pooling": shell.crab.text_pooling,
            "classifier": shell.classifier,
        }
    ).to_empty(device=device)
    for parameter in blocks.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    lengths = lengths_tensor(args, device)
    frames, width = int(lengths.max()), 2 * config.fusion_hidden_size
    audio = torch.randn(args.batch_size, frames, width, device=device, requires_grad=True)
    text = torch.randn(args.batch_size, 32, width, device=device, requires_grad=True)
    audio_mask = torch.arange(frames, device=device) < lengths[:, None]
    text_mask = torch.ones(args.batch_size, 32, dtype=torch.bool, device=device)

    def head(b: torch.nn.ModuleDict) -> torch.Tensor:
        audio_cross = b["audio_cross"](audio, text, text_mask)
        text_cross = b["text_cross"](text, audio, audio_mask)
        pooled = torch.cat([b["audio_pooling"](audio_cross, audio_mask), b["text_pooling"](text_cross, text_mask)], -1)
        return b["classifier"](pooled)[0]

    compiled = torch.compile(head, dynamic=True)
    start = time.perf_counter()
    compiled(blocks).sum().backward()
    compile_s = time.perf_counter() - start
    calls = {"eager": lambda: head(blocks).sum().backward(), "compiled": lambda: compiled(blocks).sum().backward()}
    times = time_calls(calls, device, args.repeats)
    rows = [_row("head blocks forward+backward", times["eager"], times["compiled"], ("eager", "compiled"))]
    return rows, [f"{args.size} head, batch {args.batch_size} x {frames} frames; first compile took {compile_s:.1f} s"]


def _row(name: str, before: float, after: float, labels: tuple[str, str] = ("eager", "sdpa")) -> dict:
    return {
        "measurement": name,
        "baseline": f"{labels[0]} {1000 * before:.1f} ms",
        "lever": f"{labels[1]} {1000 * after:.1f} ms",
        "speed-up": f"{before / after:.2f}x",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lever", choices=["attention", "gru", "compile"])
    parser.add_argument("--size", choices=["tiny", "base", "large"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--min-s", type=float, default=1.0)
    parser.add_argument("--max-s", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", default="bench/RESULTS.md", help="append the table here ('' to skip)")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows, notes = {"attention": attention, "gru": gru, "compile": compile_head}[args.lever](args, device)
    table = format_table(rows, ["measurement", "baseline", "lever", "speed-up"])
    record(args.results, f"Lever: {args.lever}, {args.size}, {args.device}", device, table, notes)


if __name__ == "__main__":
    main()
