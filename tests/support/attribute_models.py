"""Tiny random Crab models with emotional attributes, exported for inference: the inference-side tests' joint
(classes + attributes) and attributes-only models."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Wav2Vec2FeatureExtractor

from modeling_crab import CrabForEmotionClassification, CrabProcessor, export_for_inference
from modeling_crab.training.tiny import tiny_crab_config

ATTRIBUTES = ["arousal", "valence", "dominance"]
LABELS = {0: "angry", 1: "happy", 2: "neutral", 3: "sad"}


def export_attribute_model(
    tokenizer, folder: Path, id2label: dict[int, str] = LABELS, crop_s: float = 2.0, seed: int = 0
) -> tuple[CrabForEmotionClassification, CrabProcessor, Path]:
    """`(model in eval mode, processor with a `crop_s` crop and global statistics, inference export in `folder`)` of
    a model predicting `ATTRIBUTES` and the classes `id2label` (`{}`: attributes only)."""
    config = tiny_crab_config(len(id2label), id2label, vocab_size=len(tokenizer), attribute_names=ATTRIBUTES)
    config.audio_config.mask_time_prob = 0.0
    torch.manual_seed(seed)
    model = CrabForEmotionClassification(config).eval()
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, return_attention_mask=True)
    processor = CrabProcessor(extractor, tokenizer, max_duration_s=crop_s, max_text_length=32)
    processor.set_waveform_stats(0.0, 0.3)
    return model, processor, export_for_inference(model, processor, folder)
