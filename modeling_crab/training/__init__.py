"""Training: the Crab Trainer, audio loading and the scan of a manifest (`modeling_crab.manifest`), batching, metrics, plots and the built-in demo.

Nothing in here travels with a checkpoint; the checkpoint files never import from `training/`. Classifying with a
trained model goes through the pipeline (`crab predict`, `pipeline("speech-emotion-recognition", ...)`).
"""

from .collator import CrabDataCollator, EpochSeededLengthGroupedSampler
from .data import (
    CrabAudioTextDataset,
    ManifestScan,
    label_names_from,
    load_audio,
    scan_manifest,
)
from .metrics import build_compute_metrics, classification_metrics, confusion
from .tiny import build_tiny_tokenizer, tiny_crab_config
from .trainer import CrabTrainer, compute_class_weights

__all__ = [
    "CrabTrainer",
    "compute_class_weights",
    "CrabDataCollator",
    "EpochSeededLengthGroupedSampler",
    "CrabAudioTextDataset",
    "ManifestScan",
    "label_names_from",
    "load_audio",
    "scan_manifest",
    "build_compute_metrics",
    "classification_metrics",
    "confusion",
    "build_tiny_tokenizer",
    "tiny_crab_config",
]
