"""Batching: pad both modalities with the Crab processor (to the batch's longest, or to shape buckets chosen from
the training split, `choose_shape_buckets`); the training samplers, whose order depends only on the seed and the
epoch (clips of similar length grouped, or shuffled), and the epoch carried to the dataset inside the indices for
waveform augmentation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..audio import crop_length
from ..shape_buckets import AUDIO_MULTIPLE, TEXT_MULTIPLE, ShapeBuckets, choose_buckets, padding_overhead
from .data import SAMPLING_RATE


@dataclass
class CrabDataCollator:
    """Features `{"audio": (N,) float32, "text": str, "label": int | None, "attributes": [float] (optional)}` -> a
    padded batch: `input_values` (B, T), `attention_mask` (B, T), `input_ids` (B, L), `text_attention_mask` (B, L),
    `labels` (B,) and `attribute_labels` (B, A; NaN where a row lacks an attribute, `attribute_labels_of`).

    `labels` is left out when any feature has no label (hidden test labels). Other feature keys (`id`) are dropped.
    Audio is not cropped again: the dataset's reader crops once, reading only the kept frames (`load_audio`), as the
    pipeline cuts its windows before calling the processor. With `shape_buckets`, T and L are the smallest buckets
    that hold the batch's longest clip and transcript (the processor's `pad_to_buckets=`).
    """

    processor: Any
    sampling_rate: int = SAMPLING_RATE
    shape_buckets: ShapeBuckets | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.processor(
            audio=[feature["audio"] for feature in features],
            text=[feature["text"] for feature in features],
            sampling_rate=self.sampling_rate,
            max_duration_s=None,
            return_tensors="pt",
            pad_to_buckets=self.shape_buckets,
        )
        batch = dict(batch)
        labels = [feature.get("label") for feature in features]
        if all(label is not None for label in labels):
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        attribute_labels = attribute_labels_of(features)
        if attribute_labels is not None:
            batch["attribute_labels"] = attribute_labels
        return batch


def choose_shape_buckets(
    train, processor, count: int, sampler: Iterable | None = None, batch_size: int = 1, evaluated: Iterable = ()
) -> tuple[ShapeBuckets, str]:
    """`count` audio buckets and `count` text buckets for training on `train` (a `CrabAudioTextDataset`), chosen
    from its length histograms (`shape_buckets.choose_buckets`), the largest holding the longest item of the
    `evaluated` datasets too; and the line that reports them with what they cost.

    Audio lengths are the clips as the collator gets them: cropped to the dataset's `max_duration_s` and, under
    speed perturbation, at each speed factor (N / f samples), so that a perturbed clip finds its bucket too. Token
    lengths are the transcripts', truncated at the processor's `max_text_length`; no text buckets where transcripts
    are always padded to it (`text_padding="max_length"`: one shape already). The cost is measured on the batches of
    `batch_size` that `sampler` (the trainer's, for one epoch) makes of the unperturbed clips: the padded samples
    and tokens they hold bucketed, against padded to each batch's longest."""
    evaluated = list(evaluated)
    clips, factors = _clip_lengths(train), getattr(train.augmentation, "speed_factors", None) or (1.0,)
    crop = crop_length(train.max_duration_s, SAMPLING_RATE) or float("inf")
    perturbed = [min(round(n / f), crop) for n in clips for f in factors]
    longest_evaluated = max((max(_clip_lengths(d), default=0) for d in evaluated), default=0)
    audio = choose_buckets(perturbed, count, AUDIO_MULTIPLE, longest=longest_evaluated)
    tokens = text = None
    if processor.text_padding != "max_length":
        tokens = _token_lengths(train, processor)
        longest_evaluated = max((max(_token_lengths(d, processor), default=0) for d in evaluated), default=0)
        text = choose_buckets(tokens, count, TEXT_MULTIPLE, longest=longest_evaluated)
    buckets = ShapeBuckets(audio, text)
    order = [item[1] if isinstance(item, tuple) else int(item) for item in (sampler or range(len(clips)))]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    cost = f"{padding_overhead(([clips[i] for i in b] for b in batches), buckets.audio):.1%} more audio samples"
    if tokens is not None:
        cost += f" and {padding_overhead(([tokens[i] for i in b] for b in batches), buckets.text):.1%} more tokens"
    line = (
        f"--shape_buckets {count}: {buckets.describe(SAMPLING_RATE)}; batches padded to their bucket hold {cost} "
        f"than padded to their longest ({len(batches)} batches of {batch_size}, one epoch of the training split)"
    )
    return buckets, line


def _clip_lengths(dataset) -> list[int]:
    """A dataset's clip lengths (16 kHz samples) cropped as its reader crops them."""
    crop = crop_length(dataset.max_duration_s, SAMPLING_RATE)
    return [n if crop is None else min(n, crop) for n in dataset.lengths]


def _token_lengths(dataset, processor) -> list[int]:
    """A dataset's transcript lengths in tokens, truncated at the processor's `max_text_length`."""
    lengths = processor.transcript_lengths([u.text for u in dataset.utterances]) if len(dataset) else []
    return [min(n, processor.max_text_length) for n in lengths]


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
    "choose_shape_buckets",
    "attribute_labels_of",
    "EpochIndexSampler",
    "EpochSeededLengthGroupedSampler",
    "EpochSeededRandomSampler",
]
