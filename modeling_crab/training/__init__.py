"""Training: the Crab Trainer, audio loading and the scan of a manifest (`modeling_crab.manifest`), waveform augmentation, batching, metrics, plots and the built-in demo.

Nothing in here travels with a checkpoint; the checkpoint files never import from `training/`. Classifying with a
trained model goes through the pipeline (`crab predict`, `pipeline("speech-emotion-recognition", ...)`).
Names are imported on first use, so `train.py --help` reads the augmentation defaults (`augment.py`) without loading
the trainer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "CrabTrainer": "trainer",
    "compute_class_weights": "trainer",
    "CrabDataCollator": "collator",
    "EpochIndexSampler": "collator",
    "EpochSeededLengthGroupedSampler": "collator",
    "EpochSeededRandomSampler": "collator",
    "CrabAudioTextDataset": "data",
    "ManifestScan": "data",
    "label_names_from": "data",
    "check_label_set": "data",
    "load_audio": "data",
    "scan_manifest": "data",
    "WaveformAugmentation": "augment",
    "build_compute_metrics": "metrics",
    "classification_metrics": "metrics",
    "confusion": "metrics",
    "build_tiny_tokenizer": "tiny",
    "tiny_crab_config": "tiny",
}

__all__ = [
    "CrabTrainer",
    "compute_class_weights",
    "CrabDataCollator",
    "EpochIndexSampler",
    "EpochSeededLengthGroupedSampler",
    "EpochSeededRandomSampler",
    "CrabAudioTextDataset",
    "ManifestScan",
    "label_names_from",
    "check_label_set",
    "load_audio",
    "scan_manifest",
    "WaveformAugmentation",
    "build_compute_metrics",
    "classification_metrics",
    "confusion",
    "build_tiny_tokenizer",
    "tiny_crab_config",
]

if TYPE_CHECKING:
    from .augment import WaveformAugmentation
    from .collator import (
        CrabDataCollator,
        EpochIndexSampler,
        EpochSeededLengthGroupedSampler,
        EpochSeededRandomSampler,
    )
    from .data import CrabAudioTextDataset, ManifestScan, check_label_set, label_names_from, load_audio, scan_manifest
    from .metrics import build_compute_metrics, classification_metrics, confusion
    from .tiny import build_tiny_tokenizer, tiny_crab_config
    from .trainer import CrabTrainer, compute_class_weights


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'modeling_crab.training' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
