"""Classify one recording and its transcript with a trained Crab model.

    python -m modeling_crab.training.predict crab_demo/inference path/to/clip.wav "I can't believe you did that"

The model folder is an inference export (`train.py` writes `<output_dir>/inference`) or any Crab checkpoint.
Without this package installed, the same folder loads with
`AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True)` and `AutoProcessor`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import torch

from ..modeling_crab import CrabForEmotionClassification
from ..processing_crab import CrabProcessor
from .data import SAMPLING_RATE, load_audio


def classify_file(model_dir: str | os.PathLike, wav_path: str | os.PathLike, text: str) -> list[dict]:
    """`[{"label": ..., "score": ...}, ...]` for every class, highest score first."""
    model = CrabForEmotionClassification.from_pretrained(model_dir).eval()
    processor = CrabProcessor.from_pretrained(model_dir, trust_remote_code=False)  # this class; no code prompt
    waveform = load_audio(wav_path)  # mono, 16 kHz; the processor crops and normalises
    inputs = processor(audio=[waveform], text=[text], sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with torch.no_grad():
        scores = model(**inputs, output_csl_embeddings=False).logits.softmax(dim=-1)[0]
    ranked = sorted(zip(model.config.id2label.values(), scores.tolist()), key=lambda pair: -pair[1])
    return [{"label": label, "score": score} for label, score in ranked]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Classify the emotion of one recording and its transcript.")
    parser.add_argument("model_dir", help="a trained Crab model folder, e.g. crab_demo/inference")
    parser.add_argument("audio", help="an audio file (any rate and channel count soundfile reads)")
    parser.add_argument("text", help="the transcript of the recording")
    args = parser.parse_args(argv)
    for row in classify_file(args.model_dir, args.audio, args.text):
        print(f"{row['label']:>12}  {row['score']:.3f}")


if __name__ == "__main__":
    main()
