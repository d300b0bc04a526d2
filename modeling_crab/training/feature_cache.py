"""Frozen-encoder mode: encode a corpus once, cache both encoders' outputs on disk, train only the head from the cache.

With the encoders frozen, a training step costs the Crab head alone (about 1% of a full step), so the whole recipe
runs in minutes. It is a different, cheaper recipe than the paper's (no encoder fine-tuning, no SpecAugment or
encoder dropout): use it for ablations and hyperparameter search. It assumes `mask_padding=True` (the head ignores
padding, so caching unpadded features loses nothing); group-norm speech encoders (base checkpoints, no attention
mask) see their padding, so encode those with batch size 1 or length-grouped batches.

    cache_encoder_outputs(model, batches, "cache/")            # batches from CrabDataCollator, with optional "ids"
    dataset = CachedFeatures("cache/")
    with cached_encoders(model):                              # the encoders become pass-through stubs
        optimizer = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
        for items in DataLoader(dataset, batch_size=32, collate_fn=collate_cached):
            out = model(**items, output_csl_embeddings=True)  # CrabForEmotionClassification.forward, unchanged
            ...
    model.save_pretrained(...)                                # the real encoders are back in place
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers.modeling_outputs import BaseModelOutput

from ..modeling_crab import CrabForEmotionClassification, CrabModel

INDEX = "index.json"


def _crab(model: CrabModel | CrabForEmotionClassification) -> CrabModel:
    return model.crab if isinstance(model, CrabForEmotionClassification) else model


@torch.inference_mode()
def cache_encoder_outputs(
    model: CrabModel | CrabForEmotionClassification,
    batches: Iterable[dict],
    out_dir: str | Path,
    dtype: torch.dtype = torch.float16,
    shard_bytes: int = 1 << 30,
) -> int:
    """Run both encoders (eval mode) over `batches` and write each utterance's unpadded speech frames (T, Da) and
    text tokens (L, Dt) to safetensors shards in `out_dir`, with an `index.json` of shard, lengths and label.
    Batches are `CrabDataCollator` outputs; an optional `"ids"` list names the utterances. Returns the count."""
    crab = _crab(model)
    was_training = crab.training
    crab.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index, shard, shard_size, shard_number = {}, {}, 0, 0
    device = next(crab.parameters()).device

    def flush() -> None:
        nonlocal shard, shard_size, shard_number
        if shard:
            save_file(shard, str(out_dir / f"features-{shard_number:05d}.safetensors"))
            shard, shard_size, shard_number = {}, 0, shard_number + 1

    for batch in batches:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        audio_kwargs = (
            {"attention_mask": batch.get("attention_mask")} if crab.config.audio_feeds_attention_mask else {}
        )
        speech = crab.audio_encoder(batch["input_values"], **audio_kwargs).last_hidden_state  # (B, T, Da)
        text = crab.text_encoder(batch["input_ids"], attention_mask=batch.get("text_attention_mask"))
        text = text.last_hidden_state  # (B, L, Dt)
        frame_mask = crab.audio_frame_mask(batch.get("attention_mask"), speech.shape[1])
        num_frames = frame_mask.sum(1) if frame_mask is not None else torch.full((len(speech),), speech.shape[1])
        token_mask = batch.get("text_attention_mask")
        num_tokens = token_mask.sum(1) if token_mask is not None else torch.full((len(text),), text.shape[1])
        ids = batch.get("ids") or [str(len(index) + i) for i in range(len(speech))]
        shard_name = f"features-{shard_number:05d}.safetensors"
        for i, utt_id in enumerate(ids):
            frames, tokens = speech[i, : int(num_frames[i])], text[i, : int(num_tokens[i])]
            shard[f"{utt_id}/speech"] = frames.to(dtype).cpu().contiguous()
            shard[f"{utt_id}/text"] = tokens.to(dtype).cpu().contiguous()
            shard_size += (frames.numel() + tokens.numel()) * dtype.itemsize
            label = batch["labels"][i].item() if "labels" in batch else None
            index[str(utt_id)] = {"shard": shard_name, "frames": len(frames), "tokens": len(tokens), "label": label}
        if shard_size >= shard_bytes:
            flush()
    flush()
    (out_dir / INDEX).write_text(json.dumps(index, indent=1) + "\n")
    crab.train(was_training)
    return len(index)


class CachedFeatures(torch.utils.data.Dataset):
    """Items `{"speech_frames": (T, Da), "text_tokens": (L, Dt), "label": int | None, "id": str}` from a cache."""

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)
        index_path = self.cache_dir / INDEX
        if not index_path.exists():
            raise FileNotFoundError(f"no {INDEX} in '{cache_dir}'; write the cache with cache_encoder_outputs first")
        self.index = json.loads(index_path.read_text())
        self.ids = list(self.index)
        self._shards = {}

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        """Frame counts, for length-grouped sampling."""
        return [self.index[i]["frames"] for i in self.ids]

    def __getitem__(self, i: int) -> dict:
        utt_id = self.ids[i]
        entry = self.index[utt_id]
        if entry["shard"] not in self._shards:
            self._shards[entry["shard"]] = safe_open(str(self.cache_dir / entry["shard"]), framework="pt")
        shard = self._shards[entry["shard"]]
        return {
            "speech_frames": shard.get_tensor(f"{utt_id}/speech"),
            "text_tokens": shard.get_tensor(f"{utt_id}/text"),
            "label": entry["label"],
            "id": utt_id,
        }


def collate_cached(items: list[dict], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Pad cached features into the inputs `CrabForEmotionClassification.forward` takes under `cached_encoders`:
    `input_values` (B, T, Da) frames, `attention_mask` (B, T) frame mask, `input_ids` (B, L, Dt) token features,
    `text_attention_mask` (B, L), and `labels` when every item has one."""
    frames = [item["speech_frames"].to(dtype) for item in items]
    tokens = [item["text_tokens"].to(dtype) for item in items]
    batch = {
        "input_values": pad_sequence(frames, batch_first=True),
        "attention_mask": _length_mask([len(f) for f in frames]),
        "input_ids": pad_sequence(tokens, batch_first=True),
        "text_attention_mask": _length_mask([len(t) for t in tokens]),
    }
    if all(item["label"] is not None for item in items):
        batch["labels"] = torch.tensor([item["label"] for item in items])
    return batch


def _length_mask(lengths: list[int]) -> torch.Tensor:
    lengths = torch.tensor(lengths)
    return (torch.arange(int(lengths.max())) < lengths[:, None]).long()


class _PassThroughEncoder(nn.Module):
    """Stands in for an encoder whose outputs are already computed: returns its input as `last_hidden_state`."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> BaseModelOutput:
        return BaseModelOutput(last_hidden_state=features)

    # What CrabModel.forward asks of a speech encoder: cached features are frame-level already.
    def _get_feat_extract_output_lengths(self, num_samples):
        return num_samples

    def _get_feature_vector_attention_mask(self, num_frames: int, attention_mask: torch.Tensor) -> torch.Tensor:
        return attention_mask[:, :num_frames]


@contextmanager
def cached_encoders(model: CrabModel | CrabForEmotionClassification) -> Iterator[nn.Module]:
    """Swap both encoders for pass-through stubs while the block runs, so the model's own forward runs the head on
    cached features (and `model.parameters()` lists only the head and CSL legs); the encoders come back on exit."""
    crab = _crab(model)
    if not crab.config.mask_padding:
        raise ValueError("cached features are unpadded: train the head from a cache with mask_padding=True")
    audio_encoder, text_encoder = crab.audio_encoder, crab.text_encoder
    crab.audio_encoder = _PassThroughEncoder(audio_encoder.config)
    crab.text_encoder = _PassThroughEncoder(text_encoder.config)
    try:
        yield model
    finally:
        crab.audio_encoder, crab.text_encoder = audio_encoder, text_encoder


__all__ = ["cache_encoder_outputs", "CachedFeatures", "collate_cached", "cached_encoders"]
