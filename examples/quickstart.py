"""Crab end to end on a tiny random model, offline: process audio + transcript, classify, export, reload, classify.

python examples/quickstart.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile

import numpy as np
import torch
from transformers import AutoModelForAudioClassification, AutoProcessor, Wav2Vec2FeatureExtractor

from modeling_crab import CrabForEmotionClassification, CrabProcessor, export_for_inference
from modeling_crab.training.tiny import build_tiny_tokenizer, tiny_crab_config

LABELS = {0: "angry", 1: "happy", 2: "neutral", 3: "sad"}


def main(out_dir: str) -> None:
    tokenizer = build_tiny_tokenizer(["that is wonderful news", "i am going to the station"])
    feature_extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)
    processor = CrabProcessor(feature_extractor, tokenizer, max_duration_s=12.0, max_text_length=128)
    model = CrabForEmotionClassification(tiny_crab_config(4, LABELS, vocab_size=len(tokenizer))).eval()

    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (44100, 22050)]  # 1 s and 0.5 s at 44.1 kHz
    batch = processor(audio=audio, text=["that is wonderful news", "i am going"], sampling_rate=44100)
    with torch.no_grad():
        logits = model(**batch).logits

    checkpoint = export_for_inference(model, processor, out_dir)
    reloaded = AutoModelForAudioClassification.from_pretrained(checkpoint, trust_remote_code=True).eval()
    reloaded_processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    batch = reloaded_processor(audio=audio, text=["that is wonderful news", "i am going"], sampling_rate=44100)
    with torch.no_grad():
        reloaded_logits = reloaded(**batch).logits
    for scores in reloaded_logits.softmax(-1):
        print({reloaded.config.id2label[i]: round(float(p), 3) for i, p in enumerate(scores)})
    print(
        f"exported to {checkpoint}; max |logit difference| after reload: {(logits - reloaded_logits).abs().max():.2e}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="crab_quickstart_"))
