"""Batching: pad both modalities with the Crab processor; the training samplers, whose order depends only on the
seed and the epoch (clips of similar length grouped, or shuffled), and the epoch carried to the dataset inside the
indices for waveform augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from .data import SAMPLING_RATE


@dataclass
class CrabDataCollator:
    """Features `{"audio": (N,) float32, "text": str, "label": int | None, "attributes": [float] (optional)}` -> a
    padded batch: `input_values` (B, T), `attention_mask` (B, T), `input_ids` (B, L), `text_attention_mask` (B, L),
    `labels` (B,) and `attribute_labels` (B, A; NaN where a row lacks an attribute, `attribute_labels_of`).

    `labels` is left out when any feature has no label (hidden test labels). Other feature keys (`id`) are dropped.
    Audio is not cropped again: the dataset's reader crops once, reading only the kept frames (`load_audio`), as the
    pipeline cuts its windows before calling the processor.
    """

    processor: Any
    sampling_rate: int = SAMPLING_RATE

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.processor(
            audio=[feature["audio"] for feature in features],
            text=[feature["text"] for feature in features],
            sampling_rate=self.sampling_rate,
            max_duration_s=None,
            return_tensors="pt",
        )
        batch = dict(batch)
        labels = [feature.get("label") for feature in features]
        if all(label is not None for label in labels):
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        attribute_labels = attribute_labels_of(features)
        if attribute_labels is not None:
            batch["attribute_labels"] = attribute_labels
        return batch


def attribute_labels_of(features: list[dict[str, Any]]) -> torch.Tensor | None:
    """(B, A) float32 of the features' `attributes` (NaN: missing), or None when they carry none."""
    rows = [feature.get("attributes") for feature in features]
    if not any(rows):
        return None
    missing = [float("nan")] * len(next(row for row in rows if row))
    return torch.tensor([row or missing for row in rows], dtype=torch.float32)


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` (random mega-batches of 50 batches, sorted by length inside) whose shuffle depends only
    on `seed + epoch`, so a run resumed from a checkpoint sees the same batches as an uninterrupted one.

    `lengths` are clip lengths (16 kHz samples); `batch_size` should be the per-device batch x accumulation steps.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int = 42):
        super().__init__(batch_size, lengths=list(lengths))
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class EpochSeededRandomSampler(torch.utils.data.Sampler):
    """A shuffle of `range(num_items)` that depends only on `seed + epoch`: `torch.randperm` with a generator seeded
    so, the order of the random sampler accelerate gives Trainer for `train_sampling_strategy="random"`."""

    def __init__(self, num_items: int, seed: int = 42):
        self.num_items, self.seed, self.epoch = num_items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(self.num_items, generator=generator).tolist()


class EpochIndexSampler(torch.utils.data.Sampler):
    """`(epoch, index)` for every index of `sampler`, for a dataset whose items depend on the epoch (waveform
    augmentation: `CrabAudioTextDataset`). DataLoader workers, persistent ones especially, never see an attribute
    the main process sets after they start; the indices they are sent carry the epoch to them. `set_epoch` reaches
    `sampler` too."""

    def __init__(self, sampler):
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch = self.epoch
        for index in self.sampler:
            yield epoch, int(index)


__all__ = [
    "CrabDataCollator",
    "attribute_labels_of",
    "EpochIndexSampler",
    "EpochSeededLengthGroupedSampler",
    "EpochSeededRandomSampler",
]
