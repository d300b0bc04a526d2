"""Classify recordings with a trained Crab model: one file and its transcript, or a few clips of a manifest split
beside their labels (what the demo ends with).

    python -m modeling_crab.training.predict outputs/demo/inference clip.wav "I can't believe you did that"
    python -m modeling_crab.training.predict outputs/demo/inference --manifest outputs/demo/demo_corpus/manifest.csv

The model folder is an inference export (`train.py` writes `<output_dir>/inference`) or any Crab checkpoint.
Without this package installed, the same folder loads with
`AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True)` and `AutoProcessor`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..manifest import load_manifest, select_split
from ..modeling_crab import CrabForEmotionClassification
from ..processing_crab import CrabProcessor
from .data import SAMPLING_RATE, load_audio


def load_model(model_dir: str | os.PathLike) -> tuple[CrabForEmotionClassification, CrabProcessor]:
    """A local model folder; a path that does not exist is an error here, not a Hub repo id to try."""
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"model folder '{model_dir}' does not exist; train.py writes <output_dir>/inference")
    model = CrabForEmotionClassification.from_pretrained(model_dir).eval()
    processor = CrabProcessor.from_pretrained(model_dir, trust_remote_code=False)  # this class; no code prompt
    return model, processor


def _ranked(model, processor, wav_path: str | os.PathLike, text: str) -> list[dict]:
    waveform = load_audio(wav_path)  # mono, 16 kHz; the processor crops and normalises
    inputs = processor(audio=[waveform], text=[text], sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with torch.no_grad():
        scores = model(**inputs, output_csl_embeddings=False).logits.softmax(dim=-1)[0]
    ranked = sorted(zip(model.config.id2label.values(), scores.tolist()), key=lambda pair: -pair[1])
    return [{"label": label, "score": score} for label, score in ranked]


def classify_file(model_dir: str | os.PathLike, wav_path: str | os.PathLike, text: str) -> list[dict]:
    """`[{"label": ..., "score": ...}, ...]` for every class, highest score first."""
    return _ranked(*load_model(model_dir), wav_path, text)


def classify_split(
    model_dir: str | os.PathLike, manifest: str | os.PathLike, split: str = "test", per_class: int = 2
) -> list[dict]:
    """The first `per_class` clips of each label of `split`, in manifest order (no choosing), each with its
    `id`, `label`, `text`, `prediction` and that prediction's `score`."""
    model, processor = load_model(model_dir)
    rows, taken = [], {}
    for utterance in select_split(load_manifest(manifest), split):
        if taken.get(utterance.label, 0) >= per_class:
            continue
        taken[utterance.label] = taken.get(utterance.label, 0) + 1
        best = _ranked(model, processor, utterance.audio, utterance.text)[0]
        rows.append(
            {
                "id": utterance.id,
                "label": utterance.label,
                "text": utterance.text,
                "prediction": best["label"],
                "score": best["score"],
            }
        )
    return sorted(rows, key=lambda row: row["label"])


def format_split(rows: list[dict]) -> str:
    """id, label, prediction and score side by side, wrong predictions marked, and how many were right."""
    width = max(len("id"), *(len(row["id"]) for row in rows))
    lines = [f"{'id'.ljust(width)}  {'label':<10} {'predicted':<10} score  transcript"]
    for row in rows:
        mark = " " if row["prediction"] == row["label"] else "x"
        lines.append(
            f"{row['id'].ljust(width)}  {row['label']:<10} {row['prediction']:<9}{mark} {row['score']:.2f}   "
            f"{row['text']}"
        )
    right = sum(row["prediction"] == row["label"] for row in rows)
    lines.append(f"{right} of {len(rows)} right (x: wrong)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Classify one recording and its transcript, or with --manifest a few clips of a split beside "
        "their labels."
    )
    parser.add_argument("model_dir", help="a trained Crab model folder, e.g. outputs/demo/inference")
    parser.add_argument("audio", nargs="?", help="an audio file (any rate and channel count soundfile reads)")
    parser.add_argument("text", nargs="?", help="the transcript of the recording")
    parser.add_argument("--manifest", help="instead of one file: classify clips of this manifest")
    parser.add_argument("--split", default="test", help="the manifest's split (default: test)")
    parser.add_argument("--per_class", type=int, default=2, help="the first N clips of each label (default: 2)")
    args = parser.parse_args(argv)
    if args.manifest:
        print(format_split(classify_split(args.model_dir, args.manifest, args.split, args.per_class)))
        return
    if args.audio is None or args.text is None:
        parser.error("pass AUDIO and TEXT, or --manifest")
    for row in classify_file(args.model_dir, args.audio, args.text):
        print(f"{row['label']:>12}  {row['score']:.3f}")


if __name__ == "__main__":
    main()
