"""Frozen-encoder mode: encode a corpus once, cache both encoders' outputs on disk, train only the head from the cache.

With both encoders frozen, a training step costs the Crab head alone (17 M of the large model's 690 M parameters),
so a whole recipe runs in minutes. It is a different, cheaper recipe than the paper's (no encoder fine-tuning, no
SpecAugment or encoder dropout): use it for ablations and hyperparameter search. `train.py --encoder_cache DIR` runs
it end to end; the pieces:

    key = cache_key(encoder_fingerprint(model), settings)    # anything that changes the features
    dataset = encode_dataset(model, audio_text_dataset, collator, "cache/train", key)  # CachedFeatures
    loader = DataLoader(dataset, batch_size=32, collate_fn=collate_cached)
    for batch in loader:                       # {"encoder_outputs": {speech_frames, frame_mask, ...}, "labels"}
        out = model(**batch)                   # the head alone: the encoders do not run

The model keeps its encoders (frozen), so checkpoints and the inference export are complete models that take audio
and text. Cached features are unpadded, so the head must mask padding (`mask_padding=True`).

Cache layout: `features-00000.safetensors`, ... (`<id>/speech` (T, Da) and `<id>/text` (L, Dt), fp16) and
`index.json` (`fingerprint`, `utterances`: id -> shard, frames, tokens, label). While encoding, the index of the
shards written so far is `index.partial.json`: an interrupted run continues from the last whole shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm

from ..modeling_crab import CrabForEmotionClassification, CrabModel
from .collator import CrabDataCollator, attribute_labels_of

logger = logging.getLogger(__name__)

INDEX = "index.json"
PARTIAL_INDEX = "index.partial.json"


class FeatureCacheError(ValueError):
    """A cache folder that cannot be used as asked (other encoders or data, or not written yet)."""


def _crab(model: CrabModel | CrabForEmotionClassification) -> CrabModel:
    return model.crab if isinstance(model, CrabForEmotionClassification) else model


_CONFIG_KEYS_NOT_HASHED = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures"}


def encoder_fingerprint(model: CrabModel | CrabForEmotionClassification) -> str:
    """A hash of both encoders' configs and weights (a few seconds at large size). Config entries that do not change
    the features (where it was loaded from, the saving version, the load dtype) are left out."""
    crab = _crab(model)
    digest = hashlib.blake2b(digest_size=16)
    for encoder in (crab.audio_encoder, crab.text_encoder):
        config = {k: v for k, v in encoder.config.to_dict().items() if k not in _CONFIG_KEYS_NOT_HASHED}
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        for name, tensor in sorted(encoder.state_dict().items()):
            digest.update(name.encode())
            data = tensor.detach().to("cpu").contiguous()
            digest.update(data.view(torch.uint8).numpy().data if data.numel() else b"")
    return digest.hexdigest()


def cache_key(*parts) -> str:
    """A hash of JSON-able `parts` (an `encoder_fingerprint`, the processor's settings, the utterance list, the
    label set): a cache is reused only while all of them are unchanged."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def cache_status(out_dir: str | Path, expected_fingerprint: str | None = None) -> tuple[bool, set[str]]:
    """`(complete, cached ids)` of the cache in `out_dir` (`(False, set())` when there is none). Raises
    `FeatureCacheError` when the cache was written for another fingerprint."""
    out_dir = Path(out_dir)
    for name, complete in ((INDEX, True), (PARTIAL_INDEX, False)):
        path = out_dir / name
        if path.exists():
            index = json.loads(path.read_text())
            if expected_fingerprint is not None and index.get("fingerprint") != expected_fingerprint:
                raise FeatureCacheError(
                    f"the encoder cache in '{out_dir}' was written for other encoders, processor settings or "
                    "utterances; pass another --encoder_cache folder, or delete this one to encode again"
                )
            return complete, set(index["utterances"])
    return False, set()


@torch.inference_mode()
def cache_encoder_outputs(
    model: CrabModel | CrabForEmotionClassification,
    batches: Iterable[dict],
    out_dir: str | Path,
    dtype: torch.dtype = torch.float16,
    shard_bytes: int = 1 << 30,
    fingerprint: str | None = None,
) -> int:
    """Run both encoders (eval mode) over `batches` and write each utterance's unpadded speech frames (T, Da) and
    text tokens (L, Dt) to safetensors shards in `out_dir`; returns the number of utterances in the finished cache.

    Batches are `CrabDataCollator` outputs plus an `"ids"` list naming the utterances. A partial cache in `out_dir`
    (from an interrupted call) is extended: pass only the utterances `cache_status` does not list. A feature that
    overflows `dtype` is stored in fp32. Speech encoders without an attention mask (group-norm CNNs, the base
    checkpoints) see their batch's padding: give them batches of one, as at inference.
    """
    crab = _crab(model)
    was_training = crab.training
    crab.eval()
    try:
        return _write_cache(crab, batches, Path(out_dir), dtype, shard_bytes, fingerprint)
    finally:
        crab.train(was_training)


def _write_cache(crab: CrabModel, batches, out_dir: Path, dtype, shard_bytes: int, fingerprint: str | None) -> int:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / PARTIAL_INDEX
    index = json.loads(partial.read_text()) if partial.exists() else {"fingerprint": fingerprint, "utterances": {}}
    shard_number = len({entry["shard"] for entry in index["utterances"].values()})
    pending: dict[str, dict] = {}
    shard: dict[str, torch.Tensor] = {}
    shard_size = 0
    device = next(crab.parameters()).device

    def flush() -> None:
        nonlocal shard, shard_size, shard_number, pending
        if not shard:
            return
        save_file(shard, str(out_dir / f"features-{shard_number:05d}.safetensors"))
        index["utterances"].update(pending)
        _write_json(partial, index)  # only whole shards are ever listed
        shard, pending, shard_size, shard_number = {}, {}, 0, shard_number + 1

    total = len(batches) if hasattr(batches, "__len__") else None
    # tqdm's disable=None: a bar on a terminal, nothing in logs and pipes
    for batch in tqdm(batches, total=total, desc=f"encoding into '{out_dir}'", unit="batch", disable=None):
        ids = [str(utt_id) for utt_id in batch["ids"]]
        tensors = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        encoded = crab.encode(
            tensors["input_values"],
            tensors["input_ids"],
            attention_mask=tensors.get("attention_mask"),
            text_attention_mask=tensors.get("text_attention_mask"),
        )
        speech, frame_mask = encoded["speech_frames"], encoded["frame_mask"]
        text, token_mask = encoded["text_tokens"], encoded["token_mask"]
        num_frames = frame_mask.sum(1).tolist() if frame_mask is not None else [speech.shape[1]] * len(ids)
        num_tokens = token_mask.sum(1).tolist() if token_mask is not None else [text.shape[1]] * len(ids)
        labels = tensors["labels"].tolist() if "labels" in tensors else [None] * len(ids)
        attributes = batch.get("attribute_labels")  # (B, A), NaN: missing; stored as null
        attributes = (
            [None] * len(ids)
            if attributes is None
            else [[None if math.isnan(value) else value for value in row] for row in attributes.tolist()]
        )
        speech, text = speech.float().cpu(), text.float().cpu()  # one copy per batch, then slices
        shard_name = f"features-{shard_number:05d}.safetensors"
        for i, utt_id in enumerate(ids):
            if utt_id in index["utterances"] or utt_id in pending:
                raise FeatureCacheError(f"utterance id '{utt_id}' is cached twice; ids must be unique in a split")
            frames = _stored(speech[i, : num_frames[i]], dtype)
            tokens = _stored(text[i, : num_tokens[i]], dtype)
            shard[f"{utt_id}/speech"], shard[f"{utt_id}/text"] = frames, tokens
            shard_size += frames.nbytes + tokens.nbytes
            pending[utt_id] = {"shard": shard_name, "frames": len(frames), "tokens": len(tokens), "label": labels[i]}
            if attributes[i] is not None:
                pending[utt_id]["attributes"] = attributes[i]
        if shard_size >= shard_bytes:
            flush()
    flush()
    _write_json(out_dir / INDEX, index)
    partial.unlink(missing_ok=True)
    return len(index["utterances"])


def _stored(features: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(CPU, fp32) features as stored: in `dtype`, or in fp32 where `dtype` would overflow."""
    converted = features.to(dtype)
    if not torch.isfinite(converted).all() and torch.isfinite(features).all():
        converted = features  # beyond fp16's range: keep full precision
    return converted.contiguous()


def _write_json(path: Path, value: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=1) + "\n")
    temporary.replace(path)


def encode_dataset(
    model: CrabModel | CrabForEmotionClassification,
    dataset: torch.utils.data.Dataset,
    collator,
    out_dir: str | Path,
    fingerprint: str | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float16,
) -> CachedFeatures:
    """Cache the encoders' outputs for every item of `dataset` (items with `"id"`, as `CrabAudioTextDataset`) in
    `out_dir`, unless a finished cache with the same `fingerprint` is there; resumes a partial one. Batches are
    length-sorted, so little padding is encoded; batch size 1 for speech encoders that take no attention mask."""
    _check_writable(Path(out_dir))
    complete, done = cache_status(out_dir, fingerprint)
    if complete:
        logger.info(f"encoder cache '{out_dir}': reusing {len(done)} cached utterances")
        return CachedFeatures(out_dir)
    ids = _dataset_ids(dataset)
    todo = [i for i in range(len(dataset)) if ids[i] not in done]
    lengths = getattr(dataset, "lengths", None) or [0] * len(dataset)
    todo.sort(key=lambda i: -lengths[i])
    if not _crab(model).config.audio_feeds_attention_mask:
        batch_size = 1
    logger.info(f"encoder cache '{out_dir}': encoding {len(todo)} utterances ({len(done)} already cached)")

    subset = torch.utils.data.Subset(dataset, todo)
    loader = torch.utils.data.DataLoader(
        subset, batch_size=batch_size, collate_fn=_CollateWithIds(collator), num_workers=num_workers
    )
    cache_encoder_outputs(model, loader, out_dir, dtype=dtype, fingerprint=fingerprint)
    return CachedFeatures(out_dir)


class _CollateWithIds:
    """`collator`'s batch plus the items' `"ids"`; a class, so that spawned DataLoader workers can unpickle it."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, items: list[dict]) -> dict:
        return {**self.collator(items), "ids": [item["id"] for item in items]}


def _check_writable(out_dir: Path) -> None:
    """Fail before any audio is read or encoded when the cache folder cannot be created or written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise FeatureCacheError(
            f"cannot write the encoder cache in '{out_dir}' ({error.strerror or error}); pass a folder you can write to"
        ) from None


def _dataset_ids(dataset) -> list[str]:
    utterances = getattr(dataset, "utterances", None)
    if utterances is not None:
        return [str(u.id) for u in utterances]
    return [str(dataset[i]["id"]) for i in range(len(dataset))]


class CachedFeatures(torch.utils.data.Dataset):
    """Items `{"speech_frames": (T, Da), "text_tokens": (L, Dt), "label": int | None, "id": str}` from a finished
    cache; `ids` and `lengths` (speech frames, for length-grouped batching) in cache order."""

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)
        index_path = self.cache_dir / INDEX
        if not index_path.exists():
            state = "is unfinished (index.partial.json)" if (self.cache_dir / PARTIAL_INDEX).exists() else "is empty"
            raise FeatureCacheError(
                f"the encoder cache '{cache_dir}' {state}; write it with encode_dataset / cache_encoder_outputs"
            )
        index = json.loads(index_path.read_text())
        self.fingerprint = index.get("fingerprint")
        self.index = index["utterances"]
        self.ids = list(self.index)
        self.lengths = [self.index[i]["frames"] for i in self.ids]
        self._shards = {}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def label_ids(self) -> list[int]:
        return [entry["label"] for entry in self.index.values() if entry["label"] is not None]

    def __getitem__(self, i: int) -> dict:
        utt_id = self.ids[i]
        entry = self.index[utt_id]
        if entry["shard"] not in self._shards:
            self._shards[entry["shard"]] = safe_open(str(self.cache_dir / entry["shard"]), framework="pt")
        shard = self._shards[entry["shard"]]
        item = {
            "speech_frames": shard.get_tensor(f"{utt_id}/speech"),
            "text_tokens": shard.get_tensor(f"{utt_id}/text"),
            "label": entry["label"],
            "id": utt_id,
        }
        if "attributes" in entry:
            item["attributes"] = [math.nan if value is None else value for value in entry["attributes"]]
        return item

    def __getstate__(self) -> dict:  # DataLoader workers open their own shard handles
        return {**self.__dict__, "_shards": {}}


def collate_cached(items: Sequence[dict], dtype: torch.dtype = torch.float32) -> dict:
    """Pad cached features into the model's head-level input: `encoder_outputs` (what `CrabModel.encode` returns, unpadded per utterance:
    `speech_frames` (B, T, Da), `frame_mask` (B, T), `text_tokens` (B, L, Dt), `token_mask` (B, L)), `labels`
    when every item has one, and `attribute_labels` when items carry attributes. `model(**batch)` then runs the head alone (`CrabModel.forward_head`)."""
    frames = [item["speech_frames"].to(dtype) for item in items]
    tokens = [item["text_tokens"].to(dtype) for item in items]
    encoder_outputs = {  # a plain dict: Trainer, accelerate and DDP move it to the device as it is
        "speech_frames": pad_sequence(frames, batch_first=True),
        "frame_mask": _length_mask([len(f) for f in frames]),
        "text_tokens": pad_sequence(tokens, batch_first=True),
        "token_mask": _length_mask([len(t) for t in tokens]),
    }
    batch = {"encoder_outputs": encoder_outputs}
    if all(item["label"] is not None for item in items):
        batch["labels"] = torch.tensor([item["label"] for item in items])
    attribute_labels = attribute_labels_of(items)
    if attribute_labels is not None:
        batch["attribute_labels"] = attribute_labels
    return batch


def _length_mask(lengths: list[int]) -> torch.Tensor:
    lengths = torch.tensor(lengths)
    return (torch.arange(int(lengths.max())) < lengths[:, None]).long()


def freeze_encoders(model: CrabModel | CrabForEmotionClassification) -> None:
    """Freeze both encoders (no gradients): the frozen-encoder recipe, whose steps never run them."""
    crab = _crab(model)
    for encoder in (crab.audio_encoder, crab.text_encoder):
        encoder.requires_grad_(False)


def cache_datasets(model, processor, datasets: dict, splits: dict, cache_root: str, training_args) -> dict:
    """Frozen-encoder mode: freeze both encoders, cache their outputs for every split in `cache_root/<split>` (the
    main process encodes, the others wait and read) and return the cached datasets."""
    if not model.config.mask_padding:
        raise FeatureCacheError(
            "--encoder_cache needs a model with mask_padding true: cached features are stored without padding, and "
            "the unmasked head computes another function without it; pass --mask_padding true (and --recipe crab)"
        )
    freeze_encoders(model)
    model.to(training_args.device)
    settings = {
        "feature_extractor": {  # the crop, normalisation and its statistics; not where it would be loaded from
            key: value
            for key, value in processor.feature_extractor.to_dict().items()
            if key not in ("auto_map", "processor_class")
        },
        "max_text_length": processor.max_text_length,
        "vocabulary": cache_key(sorted(processor.tokenizer.get_vocab().items())),
    }
    encoders = encoder_fingerprint(model)
    cached = {}
    with training_args.main_process_first(desc="encoding every split into the encoder cache"):
        for role, dataset in datasets.items():
            key = cache_key(encoders, settings, [asdict(u) for u in dataset.utterances], dataset.label2id)
            cached[role] = encode_dataset(
                model,
                dataset,
                CrabDataCollator(processor),
                Path(cache_root) / splits[role],
                fingerprint=key,
                batch_size=training_args.per_device_eval_batch_size,
                num_workers=training_args.dataloader_num_workers,
            )
    return cached


__all__ = [
    "cache_datasets",
    "FeatureCacheError",
    "encoder_fingerprint",
    "cache_key",
    "cache_status",
    "cache_encoder_outputs",
    "encode_dataset",
    "CachedFeatures",
    "collate_cached",
    "freeze_encoders",
]
