"""Offline fixtures: tiny random encoders and a tokenizer trained on the spot. Nothing comes from the Hub."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2FeatureExtractor

from modeling_crab import CrabProcessor
from modeling_crab.training.tiny import build_tiny_tokenizer, tiny_crab_config

LABELS = {0: "angry", 1: "happy", 2: "neutral", 3: "sad"}
SENTENCES = [
    "this is absolutely unacceptable",
    "that is wonderful news",
    "i am going to the station at five",
    "i miss her so much",
    "we talked about it yesterday",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer(SENTENCES, vocab_size=400)


@pytest.fixture
def tiny_config(tiny_tokenizer):
    config = tiny_crab_config(num_labels=len(LABELS), id2label=LABELS, vocab_size=len(tiny_tokenizer))
    config.audio_config.mask_time_prob = 0.0
    return config


@pytest.fixture
def tiny_processor(tiny_tokenizer):
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )
    return CrabProcessor(feature_extractor, tiny_tokenizer, max_duration_s=12.0, max_text_length=32)


@pytest.fixture
def tiny_batch(tiny_processor):
    """Four utterances of different lengths and transcripts, padded: the case masking must get right."""
    rng = np.random.default_rng(0)
    waveforms = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 9000, 12500, 4000)]
    batch = tiny_processor(audio=waveforms, text=SENTENCES[:4], sampling_rate=16000, return_tensors="pt")
    batch["labels"] = torch.tensor([0, 1, 1, 3])
    return batch
