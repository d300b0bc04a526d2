"""Frozen-encoder mode: encode a corpus once, cache both encoders' outputs on disk, train only the head from the cache.

With both encoders frozen, a training step costs the Crab head alone (17 M of the large model's 690 M parameters),
so a whole recipe runs in minutes. It is a different, cheaper recipe than the paper's (no encoder fine-tuning, no
SpecAugment or encoder dropout): use it for ablations and hyperparameter search. `train.py --encoder_cache DIR` runs
it end to end; the pieces:

    sources = dataset_sources(encoder_fingerprint(model), settings, audio_text_dataset)  # what the features depend on
    key = cache_key(sources)
    dataset = encode_dataset(model, audio_text_dataset, collator, "cache/train", key, sources=sources)
    loader = DataLoader(dataset, batch_size=32, collate_fn=collate_cached)
    for batch in loader:                       # {"encoder_outputs": {speech_frames, frame_mask, ...}, "labels"}
        out = model(**batch)                   # the head alone: the encoders do not run

The model keeps its encoders (frozen), so checkpoints and the inference export are complete models that take audio
and text. Cached features are unpadded, so the head must mask padding (`mask_padding=True`).

Cache layout: `features-00000.safetensors`, ... (`<id>/speech` (T, Da) and `<id>/text` (L, Dt), fp16) and
`index.json` (`features`: what each utterance holds, `speech` and `text` here; distillation stores a teacher's
outputs in the same kind of cache, `distill.teacher_outputs`; `fingerprint`; `sources`: the hash of each part the fingerprint was made from, so that a refusal names
what changed; `utterances`: id -> shard, frames, tokens, label). While encoding, the index of the shards written so
far is `index.partial.json`: an interrupted run continues from the last whole shard. Shards and indexes are written
under a temporary name and then renamed, so a listed file is whole unless something else cut it short; reading checks
the index and every listed shard (`encode_dataset` encodes the utterances of a broken one again, `CachedFeatures`
refuses it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm

from ..modeling_crab import CrabForEmotionClassification, CrabModel
from .checkpoints import safetensors_problem
from .collator import CrabDataCollator, attribute_labels_of
from .data import file_stamp

logger = logging.getLogger(__name__)

INDEX = "index.json"
PARTIAL_INDEX = "index.partial.json"
_SHARD = re.compile(r"features-(\d+)\.safetensors")
_REBUILD = "run encode_dataset (train.py --encoder_cache) again to rebuild it"

# the parts of a split's fingerprint (`dataset_sources`), as a refusal names them when they differ
SOURCES = {
    "encoders": "other encoders",
    "processor": "other processor settings",
    "utterances": "other utterances (manifest rows)",
    "labels": "another label set",
    "audio files": "other audio files (re-recorded or edited since it was encoded)",
}


class FeatureCacheError(ValueError):
    """A cache folder that cannot be used as asked (other encoders or data, or not written yet)."""


def _crab(model: CrabModel | CrabForEmotionClassification) -> CrabModel:
    return model.crab if isinstance(model, CrabForEmotionClassification) else model


_CONFIG_KEYS_NOT_HASHED = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures"}


def encoder_fingerprint(model: CrabModel | CrabForEmotionClassification) -> str:
    """A hash of both encoders' configs and weights (a few seconds at large size). Config entries that do not change
    the features (where it was loaded from, the saving version, the load dtype) are left out."""
    crab = _crab(model)
    return weights_fingerprint(crab.audio_encoder, crab.text_encoder)


def weights_fingerprint(*modules) -> str:
    """A hash of `modules`' configs (their `config`, as `encoder_fingerprint` leaves it) and weights: what a cache's
    features depend on (the encoders for the encoder cache, a whole teacher for distillation's)."""
    digest = hashlib.blake2b(digest_size=16)
    for encoder in modules:
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


def dataset_sources(encoders: str, settings, dataset) -> dict[str, str]:
    """The named parts a split's cache fingerprint is made from (`cache_key(sources)`), each a hash: the encoders
    (an `encoder_fingerprint`), the processor's `settings`, the utterances (`dataset.utterances`, manifest rows), the
    label set (`dataset.label2id`) and the audio files (each file's size and modification time), so that audio
    re-recorded or edited under the same path does not keep the features of what it replaced."""
    utterances = dataset.utterances
    return {
        "encoders": encoders,
        "processor": cache_key(settings),
        "utterances": cache_key([asdict(u) for u in utterances]),
        "labels": cache_key(dataset.label2id),
        "audio files": cache_key([file_stamp(u.audio) for u in utterances]),
    }


def cache_status(
    out_dir: str | Path, expected_fingerprint: str | None = None, *, sources: dict | None = None
) -> tuple[bool, set[str]]:
    """`(complete, cached ids)` of the cache in `out_dir` (`(False, set())` when there is none): the utterances whose
    features can be read. An index that cannot be read counts as no cache; the utterances of a listed shard that is
    missing or cut short as not cached, and the cache as not complete (`encode_dataset` encodes them again). Raises
    `FeatureCacheError` when the cache was written for another fingerprint, naming the parts of `sources` (see
    `dataset_sources`) that differ from the ones the cache was written for."""
    out_dir = Path(out_dir)
    state = _read_cache(out_dir)
    _check_fingerprint(out_dir, state.index, expected_fingerprint, sources)
    return state.complete and not state.bad_shards, state.cached_ids()


@dataclass
class _CacheState:
    """What `_read_cache` found: the usable index (checked), and the files that cannot be used."""

    index: dict | None = None
    complete: bool = False  # the index is index.json
    bad_indexes: list[tuple[Path, str]] = field(default_factory=list)  # index file, what is wrong with it
    bad_shards: dict[str, str] = field(default_factory=dict)  # listed shard -> what is wrong with it

    def cached_ids(self) -> set[str]:
        if self.index is None:
            return set()
        return {u for u, entry in self.index["utterances"].items() if entry["shard"] not in self.bad_shards}


def _read_cache(out_dir: Path) -> _CacheState:
    """The cache in `out_dir`: index.json, else index.partial.json (an index file that cannot be read is passed
    over), and the problems of the shards it lists."""
    state = _CacheState()
    for name, complete in ((INDEX, True), (PARTIAL_INDEX, False)):
        path = out_dir / name
        if not path.exists():
            continue
        index, problem = _load_index(path)
        if problem is not None:
            state.bad_indexes.append((path, problem))
            continue
        state.index, state.complete = index, complete
        state.bad_shards = _shard_problems(out_dir, index)
        break
    return state


def _load_index(path: Path) -> tuple[dict | None, str | None]:
    """`(index, None)`, or `(None, what is wrong)` for an index file that is unreadable, cut short, not JSON or not an
    index of this cache."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, f"{path.name} cannot be read ({error.strerror or error})"
    if not data.strip():
        return None, f"{path.name} is empty"
    try:
        index = json.loads(data)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        return None, f"{path.name} is cut short or not JSON ({error})"
    utterances = index.get("utterances") if isinstance(index, dict) else None
    if not isinstance(utterances, dict):
        return None, f"{path.name} is not an encoder cache index (no 'utterances' table)"
    for utt_id, entry in utterances.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("shard"), str)
            and _SHARD.fullmatch(entry["shard"])
            and isinstance(entry.get("frames"), int)
            and isinstance(entry.get("tokens"), int)
        ):
            return None, f"{path.name} lists utterance '{utt_id}' without a features-N.safetensors shard and its sizes"
    return index, None


def _shard_problems(out_dir: Path, index: dict) -> dict[str, str]:
    """What is wrong with each listed shard that is missing, cut short or lacks an utterance it is listed for."""
    names = index.get("features", ENCODER_FEATURES)
    listed: dict[str, list[str]] = {}
    for utt_id, entry in index["utterances"].items():
        listed.setdefault(entry["shard"], []).append(utt_id)
    problems = {}
    for shard, ids in listed.items():
        path = out_dir / shard
        problem = safetensors_problem(path)
        if problem is None:
            try:
                with safe_open(str(path), framework="pt") as handle:
                    keys = set(handle.keys())
            except (SafetensorError, OSError) as error:
                problem = f"{shard} is unreadable ({error})"
            else:
                missing = [u for u in ids if any(f"{u}/{name}" not in keys for name in names)]
                if missing:
                    listed_for = f"{_utterances(len(missing))} it is listed for ('{missing[0]}', ...)"
                    problem = f"{shard} lacks the features of {listed_for}"
        if problem is not None:
            problems[shard] = problem
    return problems


def _utterances(count: int) -> str:
    return f"{count} utterance" if count == 1 else f"{count} utterances"


def _check_fingerprint(out_dir: Path, index: dict | None, expected: str | None, sources: dict | None) -> None:
    if index is None or expected is None or index.get("fingerprint") == expected:
        return
    written_for = index.get("sources")
    if isinstance(sources, dict) and isinstance(written_for, dict):
        names = [*SOURCES, *sorted((set(sources) | set(written_for)) - set(SOURCES))]
        changed = [SOURCES.get(name, f"other {name}") for name in names if sources.get(name) != written_for.get(name)]
        if changed:
            what = changed[0] if len(changed) == 1 else f"{', '.join(changed[:-1])} and {changed[-1]}"
            raise FeatureCacheError(
                f"the encoder cache in '{out_dir}' was written for {what}; delete '{out_dir}' to encode again, or "
                "pass another --encoder_cache folder"
            )
    raise FeatureCacheError(
        f"the encoder cache in '{out_dir}' was written for other encoders, processor settings or "
        "utterances; pass another --encoder_cache folder, or delete this one to encode again"
    )


@torch.inference_mode()
def cache_encoder_outputs(
    model: CrabModel | CrabForEmotionClassification,
    batches: Iterable[dict],
    out_dir: str | Path,
    dtype: torch.dtype = torch.float16,
    shard_bytes: int = 1 << 30,
    fingerprint: str | None = None,
    *,
    sources: dict | None = None,
    features=None,
) -> int:
    """Run both encoders (eval mode) over `batches` and write each utterance's unpadded speech frames (T, Da) and
    text tokens (L, Dt) to safetensors shards in `out_dir`; returns the number of utterances in the finished cache.
    `features(model, batch tensors)` computes something else to store per utterance instead (`encoder_features`'
    contract; distillation caches a teacher's outputs so: `distill.teacher_outputs`).

    Batches are `CrabDataCollator` outputs plus an `"ids"` list naming the utterances. A partial cache in `out_dir`
    (from an interrupted call) is extended: pass only the utterances `cache_status` does not list. A feature that
    overflows `dtype` is stored in fp32. Speech encoders without an attention mask (group-norm CNNs, the base
    checkpoints) see their batch's padding: give them batches of one, as at inference. `fingerprint` and its parts
    `sources` (`dataset_sources`) are recorded in the index.
    """
    crab = _crab(model)
    was_training = crab.training
    crab.eval()
    try:
        features = features or encoder_features
        return _write_cache(model, batches, Path(out_dir), dtype, shard_bytes, fingerprint, sources, features)
    finally:
        crab.train(was_training)


def encoder_features(model, tensors: dict) -> tuple[dict[str, list[torch.Tensor]], list[int], list[int]]:
    """What the encoder cache stores of a batch (`CrabDataCollator`'s tensors): each utterance's unpadded `speech`
    frames (T, Da) and `text` tokens (L, Dt), in fp32 on the CPU, and their numbers of frames and tokens."""
    encoded = _crab(model).encode(
        tensors["input_values"],
        tensors["input_ids"],
        attention_mask=tensors.get("attention_mask"),
        text_attention_mask=tensors.get("text_attention_mask"),
    )
    speech, frame_mask = encoded["speech_frames"], encoded["frame_mask"]
    text, token_mask = encoded["text_tokens"], encoded["token_mask"]
    batch_size = len(speech)
    num_frames = frame_mask.sum(1).tolist() if frame_mask is not None else [speech.shape[1]] * batch_size
    num_tokens = token_mask.sum(1).tolist() if token_mask is not None else [text.shape[1]] * batch_size
    speech, text = speech.float().cpu(), text.float().cpu()  # one copy per batch, then slices
    stored = {
        "speech": [speech[i, :n] for i, n in enumerate(num_frames)],
        "text": [text[i, :n] for i, n in enumerate(num_tokens)],
    }
    return stored, num_frames, num_tokens


ENCODER_FEATURES = ["speech", "text"]  # what `encoder_features` stores; an index that names none holds these
ITEM_KEYS = {"speech": "speech_frames", "text": "text_tokens"}  # a stored feature's key in `CachedFeatures`' items


def _write_cache(
    model, batches, out_dir: Path, dtype, shard_bytes: int, fingerprint: str | None, sources: dict | None, features
) -> int:
    crab = _crab(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / PARTIAL_INDEX
    if partial.exists():
        index, problem = _load_index(partial)
        if problem is not None:
            raise FeatureCacheError(f"the encoder cache '{out_dir}' is broken: {problem}; {_REBUILD}")
    else:
        index = {"fingerprint": fingerprint, "utterances": {}}
        if sources is not None:
            index["sources"] = sources
    # one past the highest listed shard: a shard dropped from the middle leaves a gap, never a listed name to reuse
    listed = [int(_SHARD.fullmatch(entry["shard"]).group(1)) for entry in index["utterances"].values()]
    shard_number = max(listed, default=-1) + 1
    pending: dict[str, dict] = {}
    shard: dict[str, torch.Tensor] = {}
    shard_size = 0
    device = next(crab.parameters()).device

    def flush() -> None:
        nonlocal shard, shard_size, shard_number, pending
        if not shard:
            return
        path = out_dir / f"features-{shard_number:05d}.safetensors"
        temporary = path.with_name(path.name + ".tmp")
        save_file(shard, str(temporary))
        os.replace(temporary, path)  # a kill leaves a whole shard or none under a shard's name
        index["utterances"].update(pending)
        _write_json(partial, index)  # only whole shards are ever listed
        shard, pending, shard_size, shard_number = {}, {}, 0, shard_number + 1

    total = len(batches) if hasattr(batches, "__len__") else None
    # tqdm's disable=None: a bar on a terminal, nothing in logs and pipes
    for batch in tqdm(batches, total=total, desc=f"encoding into '{out_dir}'", unit="batch", disable=None):
        ids = [str(utt_id) for utt_id in batch["ids"]]
        tensors = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        stored, num_frames, num_tokens = features(model, tensors)
        if sorted(stored) != ENCODER_FEATURES:  # the encoder cache's index stays as it was before there were others
            index.setdefault("features", sorted(stored))
        labels = tensors["labels"].tolist() if "labels" in tensors else [None] * len(ids)
        attributes = batch.get("attribute_labels")  # (B, A), NaN: missing; stored as null
        attributes = (
            [None] * len(ids)
            if attributes is None
            else [[None if math.isnan(value) else value for value in row] for row in attributes.tolist()]
        )
        shard_name = f"features-{shard_number:05d}.safetensors"
        for i, utt_id in enumerate(ids):
            if utt_id in index["utterances"] or utt_id in pending:
                raise FeatureCacheError(f"utterance id '{utt_id}' is cached twice; ids must be unique in a split")
            for name, values in stored.items():
                shard[f"{utt_id}/{name}"] = tensor = _stored(values[i], dtype)
                shard_size += tensor.nbytes
            sizes = {"frames": num_frames[i], "tokens": num_tokens[i]}
            pending[utt_id] = {"shard": shard_name, **sizes, "label": labels[i]}
            if attributes[i] is not None:
                pending[utt_id]["attributes"] = attributes[i]
        if shard_size >= shard_bytes:
            flush()
    flush()
    _write_json(out_dir / INDEX, index)
    partial.unlink(missing_ok=True)
    _remove_unlisted_shards(out_dir, index)
    return len(index["utterances"])


def _remove_unlisted_shards(out_dir: Path, index: dict) -> None:
    """Delete the shards a finished index does not list (a broken shard's remains, an unfinished write, a cache
    encoded again over a longer one)."""
    listed = {entry["shard"] for entry in index["utterances"].values()}
    for path in out_dir.glob("features-*.safetensors*"):
        name = path.name.removesuffix(".tmp")
        if _SHARD.fullmatch(name) and path.name not in listed:
            path.unlink(missing_ok=True)


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
    *,
    sources: dict | None = None,
    features=None,
) -> CachedFeatures:
    """Cache the encoders' outputs for every item of `dataset` (items with `"id"`, as `CrabAudioTextDataset`) in
    `out_dir`, unless a finished cache with the same `fingerprint` is there; resumes a partial one. Batches are
    length-sorted, so little padding is encoded; batch size 1 for speech encoders that take no attention mask.

    A cache for another `fingerprint` is refused (`FeatureCacheError`, naming the parts of `sources` that differ).
    Files of the cache that cannot be read are rebuilt, each with one warning: an index cut short or not JSON is
    encoded again, a listed shard that is missing or cut short has its utterances encoded again (the others stay)."""
    out_dir = Path(out_dir)
    _check_writable(out_dir)
    state = _read_cache(out_dir)
    _check_fingerprint(out_dir, state.index, fingerprint, sources)
    complete, done = _repair(out_dir, state)
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
    cache_encoder_outputs(
        model, loader, out_dir, dtype=dtype, fingerprint=fingerprint, sources=sources, features=features
    )
    return CachedFeatures(out_dir)


def _repair(out_dir: Path, state: _CacheState) -> tuple[bool, set[str]]:
    """Drop the files of the cache that cannot be read, one warning each, and return `(complete, cached ids)` of what
    is left: an index file that cannot be read is deleted; the entries of broken shards leave the index, which
    becomes `index.partial.json` (the encoding then completes it)."""
    for path, problem in state.bad_indexes:
        logger.warning(f"encoder cache '{out_dir}': {problem}; encoding the utterances it listed again")
        path.unlink(missing_ok=True)
    if state.index is None:
        return False, set()
    if not state.bad_shards:
        return state.complete, state.cached_ids()
    utterances = state.index["utterances"]
    for shard, problem in state.bad_shards.items():
        count = sum(entry["shard"] == shard for entry in utterances.values())
        logger.warning(f"encoder cache '{out_dir}': {problem}; encoding its {_utterances(count)} again")
    kept = {u: entry for u, entry in utterances.items() if entry["shard"] not in state.bad_shards}
    _write_json(out_dir / PARTIAL_INDEX, {**state.index, "utterances": kept})
    (out_dir / INDEX).unlink(missing_ok=True)
    for shard in state.bad_shards:
        (out_dir / shard).unlink(missing_ok=True)
    return False, set(kept)


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
    cache; `ids` and `lengths` (speech frames, for length-grouped batching) in cache order. The index and every
    shard it lists are checked on opening: a cache with a file that cannot be read is refused (`FeatureCacheError`
    naming the file; `encode_dataset` rebuilds it)."""

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)
        index_path = self.cache_dir / INDEX
        if not index_path.exists():
            state = "is unfinished (index.partial.json)" if (self.cache_dir / PARTIAL_INDEX).exists() else "is empty"
            raise FeatureCacheError(
                f"the encoder cache '{cache_dir}' {state}; write it with encode_dataset / cache_encoder_outputs"
            )
        index, problem = _load_index(index_path)
        if problem is None:
            problem = ", ".join(_shard_problems(self.cache_dir, index).values()) or None
        if problem is not None:
            raise FeatureCacheError(f"the encoder cache '{cache_dir}' is broken: {problem}; {_REBUILD}")
        self.fingerprint = index.get("fingerprint")
        self.features = index.get("features", ENCODER_FEATURES)
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
        item = {ITEM_KEYS.get(name, name): shard.get_tensor(f"{utt_id}/{name}") for name in self.features}
        item.update(label=entry["label"], id=utt_id)
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
    folders = {role: Path(cache_root) / splits[role] for role in datasets}
    return encode_datasets(
        model,
        processor,
        datasets,
        folders,
        encoder_fingerprint(model),
        training_args,
        "encoding every split into the encoder cache",
    )


def encode_datasets(
    model, processor, datasets: dict, folders: dict, fingerprint: str, training_args, desc: str, **options
) -> dict:
    """`encode_dataset` for each dataset (by name) into `folders[name]` (the main process encodes, the others wait
    and read), keyed on `fingerprint` (of the model's weights that compute the features), the processor's settings
    (crop, normalisation, its statistics, the transcript length, the vocabulary) and the dataset's clips.
    `options`: `encode_dataset`'s (`features`, `dtype`)."""
    settings = {
        "feature_extractor": {  # the crop, normalisation and its statistics; not where it would be loaded from
            key: value
            for key, value in processor.feature_extractor.to_dict().items()
            if key not in ("auto_map", "processor_class")
        },
        "max_text_length": processor.max_text_length,
        "vocabulary": cache_key(sorted(processor.tokenizer.get_vocab().items())),
    }
    cached = {}
    with training_args.main_process_first(desc=desc):
        for name, dataset in datasets.items():
            sources = dataset_sources(fingerprint, settings, dataset)
            cached[name] = encode_dataset(
                model,
                dataset,
                CrabDataCollator(processor),
                folders[name],
                fingerprint=cache_key(sources),
                batch_size=training_args.per_device_eval_batch_size,
                num_workers=training_args.dataloader_num_workers,
                sources=sources,
                **options,
            )
    return cached


__all__ = [
    "cache_datasets",
    "encode_datasets",
    "FeatureCacheError",
    "encoder_fingerprint",
    "weights_fingerprint",
    "encoder_features",
    "cache_key",
    "dataset_sources",
    "cache_status",
    "cache_encoder_outputs",
    "encode_dataset",
    "CachedFeatures",
    "collate_cached",
    "freeze_encoders",
]
