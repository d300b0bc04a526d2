"""Parameters and FLOPs of one Crab utterance, per size: what a training step and an inference call cost.

    python bench/count.py --size large --seconds 6

Runs one real forward(+backward) of a single utterance on CPU under `FlopCounterMode` (meta tensors do not get
through the encoders' mask checks), with the text padded to 128 (release) and to the transcript (fast).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import count_flops, crab_config, format_table, make_batch, make_utterances, parse_setup, record

from modeling_crab import CrabForEmotionClassification

MODEL_INPUTS = ("input_values", "attention_mask", "input_ids", "text_attention_mask")


def millions(module: torch.nn.Module | None) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.1f}" if module is not None else "0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "base", "large"], default="large")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--results", default="bench/RESULTS.md", help="append the table here ('' to skip)")
    args = parser.parse_args()

    config = crab_config(args.size)
    torch.manual_seed(0)
    model = CrabForEmotionClassification(config)
    model.freeze_feature_encoder()
    crab = model.crab
    encoders = sum(p.numel() for p in model.encoder_parameters())
    head = sum(p.numel() for p in model.head_parameters()) - sum(p.numel() for p in model.csl_legs.parameters())
    params = {
        "WavLM": millions(crab.audio_encoder),
        "RoBERTa": millions(crab.text_encoder),
        "head": f"{head / 1e6:.1f}",
        "CSL legs": millions(model.csl_legs),
        "total (train)": millions(model),
        "inference export": f"{(encoders + head) / 1e6:.1f}",
    }
    utts = make_utterances(1, args.seconds, args.seconds, seed=0, fixed_s=args.seconds)
    rows = []
    for name in ("release", "release+textpad"):
        setup = parse_setup(name, "cpu", "train", 1)
        batch = make_batch(utts, np.arange(1), setup, torch.device("cpu"), config.text_config.vocab_size, seed=0)
        inputs = {k: batch[k] for k in MODEL_INPUTS}
        model.eval()  # dropout, LayerDrop and SpecAugment off: they cost no FLOPs but hide the count's shape

        def train_call(inputs=inputs, labels=batch["labels"]) -> None:
            model(**inputs, labels=labels, output_csl_embeddings=True).loss.backward()

        train = count_flops(train_call)
        model.zero_grad(set_to_none=True)
        with torch.no_grad():  # FlopCounterMode trips over weight_norm under inference_mode
            infer = count_flops(lambda inputs=inputs: model(**inputs))
        tokens = inputs["input_ids"].shape[1]
        rows.append(
            {
                "text": f"{tokens} tokens" + (" (release)" if name == "release" else ""),
                "train GFLOP / utt": f"{train / 1e9:.0f}",
                "inference GFLOP / utt": f"{infer / 1e9:.0f}",
                "inference GFLOP / audio-s": f"{infer / 1e9 / args.seconds:.1f}",
            }
        )
    notes = [
        "parameters (M): " + ", ".join(f"{k} {v}" for k, v in params.items()),
        f"one {args.seconds:g} s utterance; train = forward + MLCS objective + backward (frozen CNN); GRUs uncounted",
    ]
    table = format_table(rows, list(rows[0]))
    record(args.results, f"FLOPs and parameters, {args.size}", torch.device("cpu"), table, notes)


if __name__ == "__main__":
    main()
