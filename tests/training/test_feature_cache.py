"""The encoder cache of the frozen-encoder mode: resuming an interrupted encoding, refusing a stale cache, storage."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from conftest import SENTENCES

from modeling_crab import CrabForEmotionClassification
from modeling_crab.training import CrabDataCollator
from modeling_crab.training.feature_cache import (
    CachedFeatures,
    FeatureCacheError,
    cache_encoder_outputs,
    cache_key,
    cache_status,
    collate_cached,
    encode_dataset,
    encoder_fingerprint,
)


class ToyDataset(torch.utils.data.Dataset):
    """Items as `CrabAudioTextDataset` gives them; `fail_at` raises on that item, like a clip that breaks mid-run."""

    def __init__(self, n: int = 6, fail_at: int | None = None):
        rng = np.random.default_rng(1)
        self.items = [
            {
                "audio": rng.standard_normal(4000 + 1500 * i).astype(np.float32) * 0.1,
                "text": SENTENCES[i % len(SENTENCES)],
                "label": i % 4,
                "id": f"utt{i}",
            }
            for i in range(n)
        ]
        self.lengths = [len(item["audio"]) for item in self.items]
        self.fail_at = fail_at

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        if i == self.fail_at:
            raise OSError(f"clip {i} cannot be read")
        return self.items[i]


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    return CrabForEmotionClassification(tiny_config).eval()


def _features(dataset: CachedFeatures) -> dict[str, torch.Tensor]:
    return {dataset[i]["id"]: dataset[i]["speech_frames"] for i in range(len(dataset))}


def test_an_interrupted_encoding_resumes_from_its_last_whole_shard(model, tiny_processor, tmp_path):
    collator = CrabDataCollator(tiny_processor)
    key = cache_key(encoder_fingerprint(model), "settings")
    reference = encode_dataset(model, ToyDataset(), collator, tmp_path / "whole", key, batch_size=2)

    out = tmp_path / "resumed"
    model.train()
    with pytest.raises(OSError, match="cannot be read"):  # length-sorted: items 5, 4 | 3, 2 | 1 (fails) ...
        _encode_with_tiny_shards(model, ToyDataset(fail_at=1), collator, out, key)
    assert model.training  # encoding ran in eval mode and gave the mode back, failure or not
    model.eval()
    complete, done = cache_status(out, key)
    assert not complete and done == {"utt5", "utt4", "utt3", "utt2"}  # two whole shards survived
    with pytest.raises(FeatureCacheError, match="unfinished"):
        CachedFeatures(out)

    resumed = encode_dataset(model, ToyDataset(), collator, out, key, batch_size=2)
    assert sorted(resumed.ids) == sorted(reference.ids)
    expected = _features(reference)
    for utt_id, frames in _features(resumed).items():
        torch.testing.assert_close(frames, expected[utt_id])
    assert not (out / "index.partial.json").exists()


def _encode_with_tiny_shards(model, dataset, collator, out, key) -> None:
    """`encode_dataset`'s loop with one shard per batch, so that a failure leaves whole shards behind."""
    order = sorted(range(len(dataset)), key=lambda i: -dataset.lengths[i])
    batches = (
        {
            **collator([dataset[i] for i in order[start : start + 2]]),
            "ids": [f"utt{i}" for i in order[start : start + 2]],
        }
        for start in range(0, len(order), 2)
    )
    cache_encoder_outputs(model, batches, out, fingerprint=key, shard_bytes=1)


def test_features_beyond_fp16_are_stored_in_fp32(model, tiny_processor, tmp_path):
    collator = CrabDataCollator(tiny_processor)
    items = ToyDataset(2).items
    with torch.no_grad():  # text features far beyond fp16's range: stored in fp32 rather than as inf
        model.crab.text_encoder.encoder.layer[-1].output.LayerNorm.bias.fill_(1e6)
    batch = {**collator(items), "ids": ["a", "b"]}
    cache_encoder_outputs(model, [batch], tmp_path / "big", dtype=torch.float16)
    dataset = CachedFeatures(tmp_path / "big")
    assert dataset[0]["text_tokens"].dtype == torch.float32 and torch.isfinite(dataset[0]["text_tokens"]).all()
    assert dataset[0]["speech_frames"].dtype == torch.float16


def test_cached_features_travel_to_dataloader_workers(model, tiny_processor, tmp_path):
    encode_dataset(model, ToyDataset(), CrabDataCollator(tiny_processor), tmp_path, batch_size=3)
    dataset = CachedFeatures(tmp_path)
    dataset[0]  # opens a shard handle, which must not be pickled
    copy = pickle.loads(pickle.dumps(dataset))
    torch.testing.assert_close(copy[0]["speech_frames"], dataset[0]["speech_frames"])
    index = json.loads((tmp_path / "index.json").read_text())
    assert dataset.lengths == [index["utterances"][i]["frames"] for i in dataset.ids]
    encoder_outputs = collate_cached([dataset[i] for i in range(3)])["encoder_outputs"]
    assert encoder_outputs["speech_frames"].shape[:2] == encoder_outputs["frame_mask"].shape
    assert encoder_outputs["frame_mask"].sum(1).tolist() == dataset.lengths[:3]


@pytest.mark.slow  # spawned DataLoader workers each import the stack
def test_encoding_with_spawned_workers(model, tiny_processor, tmp_path, monkeypatch):
    """DataLoader workers started with `spawn` (macOS, Windows; Python 3.14's default is not fork either) get the
    dataset and the batch builder by pickling."""
    import multiprocessing

    collator = CrabDataCollator(tiny_processor)
    reference = encode_dataset(model, ToyDataset(), collator, tmp_path / "main", batch_size=3)
    context = multiprocessing.get_context("spawn")
    original = torch.utils.data.DataLoader.__init__

    def spawning(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "multiprocessing_context": context if kwargs.get("num_workers") else None})

    monkeypatch.setattr(torch.utils.data.DataLoader, "__init__", spawning)
    workers = encode_dataset(model, ToyDataset(), collator, tmp_path / "workers", batch_size=3, num_workers=1)
    expected = _features(reference)
    assert sorted(workers.ids) == sorted(reference.ids)
    for utt_id, frames in _features(workers).items():
        torch.testing.assert_close(frames, expected[utt_id])


def test_a_shard_cut_short_while_written_is_never_listed_or_named_as_a_shard(
    model, tiny_processor, tmp_path, monkeypatch
):
    """Shards are written under a temporary name and renamed: a write that dies half-way (a kill, a full disk) leaves
    no file under a shard's name, the index lists the shards before it, and the next run removes the remains."""
    import errno

    from modeling_crab.training import feature_cache

    collator = CrabDataCollator(tiny_processor)
    reference = encode_dataset(model, ToyDataset(), collator, tmp_path / "whole", batch_size=1)
    writes = []
    original = feature_cache.save_file

    def dies_on_the_second_shard(tensors, filename, *args, **kwargs):
        writes.append(filename)
        original(tensors, filename, *args, **kwargs)
        if len(writes) == 2:
            with open(filename, "r+b") as handle:
                handle.truncate(100)
            raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "cut"
    monkeypatch.setattr(feature_cache, "save_file", dies_on_the_second_shard)
    with pytest.raises(OSError, match="No space left"):
        _encode_with_tiny_shards(model, ToyDataset(), collator, out, "key")
    monkeypatch.undo()
    assert sorted(path.name for path in out.glob("features-*")) == [
        "features-00000.safetensors",
        "features-00001.safetensors.tmp",  # the remains, under no shard's name
    ]
    assert cache_status(out, "key") == (False, {"utt5", "utt4"})

    resumed = encode_dataset(model, ToyDataset(), collator, out, "key", batch_size=1)
    assert sorted(path.name for path in out.iterdir()) == [
        "features-00000.safetensors",
        "features-00001.safetensors",
        "index.json",
    ]
    expected = _features(reference)
    assert sorted(resumed.ids) == sorted(expected)
    for utt_id, frames in _features(resumed).items():
        torch.testing.assert_close(frames, expected[utt_id])


def test_the_fingerprint_is_made_of_named_parts_that_the_index_records(model, tiny_processor, tmp_path):
    """`dataset_sources`: each part changes with its own input alone (an audio file's size or modification time,
    not its path's rows); the index keeps the parts beside the fingerprint made of them."""
    import os
    from dataclasses import replace

    from training_helpers import write_tone

    from modeling_crab.manifest import Utterance
    from modeling_crab.training.data import CrabAudioTextDataset
    from modeling_crab.training.feature_cache import dataset_sources

    for i in range(2):
        write_tone(tmp_path / f"u{i}.wav", 200.0 * (i + 1), 0.5)
    utterances = [Utterance(f"u{i}", str(tmp_path / f"u{i}.wav"), "i miss her", "sad") for i in range(2)]
    dataset = CrabAudioTextDataset(utterances, {"sad": 0, "happy": 1}, max_duration_s=None)
    encoders = encoder_fingerprint(model)
    sources = dataset_sources(encoders, {"max_text_length": 32}, dataset)
    assert set(sources) == {"encoders", "processor", "utterances", "labels", "audio files"}

    def changed(settings=None, **dataset_changes) -> set[str]:
        other = CrabAudioTextDataset(
            dataset_changes.get("utterances", utterances),
            dataset_changes.get("label2id", dataset.label2id),
            max_duration_s=None,
        )
        parts = dataset_sources(encoders, settings or {"max_text_length": 32}, other)
        return {name for name in parts if parts[name] != sources[name]}

    assert changed() == set()
    assert changed({"max_text_length": 16}) == {"processor"}
    assert changed(label2id={"sad": 1, "happy": 0}) == {"labels"}
    assert changed(utterances=[replace(utterances[0], text="i hate this"), utterances[1]]) == {"utterances"}
    stat = os.stat(utterances[1].audio)
    os.utime(utterances[1].audio, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # the same bytes, touched
    assert changed() == {"audio files"}

    collator = CrabDataCollator(tiny_processor)
    encode_dataset(model, ToyDataset(2), collator, tmp_path / "cache", cache_key(sources), sources=sources)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["fingerprint"] == cache_key(sources) and index["sources"] == sources
    assert cache_status(tmp_path / "cache", cache_key(sources), sources=sources) == (True, {"utt0", "utt1"})
