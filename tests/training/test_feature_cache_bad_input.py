"""Bad input to the encoder cache (`train.py --encoder_cache`): each case is handled as docs/bad_input.md says or
stopped by an error that names the input and the fix. Every test here is a row of that table, under the same name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_crab import CrabForEmotionClassification

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # many small forward passes (conftest)


# ---- Encoder cache (train.py --encoder_cache)
@pytest.fixture
def encoder_inputs(tiny_config, tiny_processor):
    """A tiny model and one collated batch of three utterances (with ids) for the encoder cache."""
    from modeling_crab.training import CrabDataCollator

    torch.manual_seed(0)
    model = CrabForEmotionClassification(tiny_config).eval()
    rng = np.random.default_rng(3)
    items = [
        {"audio": (0.1 * rng.standard_normal(n)).astype(np.float32), "text": "i miss her", "label": i, "id": f"u{i}"}
        for i, n in enumerate((6000, 9000, 12000))
    ]
    return model, CrabDataCollator(tiny_processor), items


def test_encoder_cache_unfinished(encoder_inputs, tmp_path):
    from modeling_crab.training.feature_cache import CachedFeatures, FeatureCacheError, cache_encoder_outputs

    model, collator, items = encoder_inputs

    def batches_then_a_crash():
        yield {**collator(items[:1]), "ids": ["u0"]}
        raise OSError("clip u1 cannot be read")

    with pytest.raises(OSError, match="u1"):
        cache_encoder_outputs(model, batches_then_a_crash(), tmp_path, shard_bytes=1)
    with pytest.raises(FeatureCacheError, match="is unfinished .index.partial.json.; write it with encode_dataset"):
        CachedFeatures(tmp_path)


def test_encoder_cache_duplicate_ids(encoder_inputs, tmp_path):
    from modeling_crab.training.feature_cache import FeatureCacheError, cache_encoder_outputs

    model, collator, items = encoder_inputs
    with pytest.raises(FeatureCacheError, match="utterance id 'same' is cached twice; ids must be unique in a split"):
        cache_encoder_outputs(model, [{**collator(items[:2]), "ids": ["same", "same"]}], tmp_path)


def test_encoder_cache_in_an_unwritable_place(encoder_inputs, tmp_path):
    from modeling_crab.training.feature_cache import FeatureCacheError, encode_dataset

    model, collator, items = encoder_inputs
    (tmp_path / "a-file").write_text("")
    reads = []
    with pytest.raises(
        FeatureCacheError,
        match="cannot write the encoder cache in '.*a-file/cache' .*; pass a folder you can write to",
    ):
        encode_dataset(model, _Counting(items, reads), collator, tmp_path / "a-file" / "cache")
    assert reads == []  # refused before any audio was read


class _Counting(list):
    """A dataset (a list of items) that records which items were read."""

    def __init__(self, items, reads):
        super().__init__(items)
        self.reads = reads

    def __getitem__(self, i):
        self.reads.append(i)
        return super().__getitem__(i)


@pytest.fixture
def audio_split(tiny_processor, tmp_path):
    """A split of three utterances on WAV files (`CrabAudioTextDataset`) and `cache(model, root)`, which caches it as
    `train.py --encoder_cache root` does (`cache_datasets`) and returns the cached split."""
    import contextlib
    from types import SimpleNamespace

    from training_helpers import write_tone

    from modeling_crab.manifest import Utterance
    from modeling_crab.training.data import CrabAudioTextDataset
    from modeling_crab.training.feature_cache import cache_datasets

    utterances = []
    for i, hz in enumerate((150.0, 300.0, 450.0)):
        path = tmp_path / "wavs" / f"u{i}.wav"
        write_tone(path, hz, 0.5 + 0.25 * i)
        utterances.append(Utterance(id=f"u{i}", audio=str(path), text="i miss her", label="sad", split="train"))
    dataset = CrabAudioTextDataset(utterances, {"angry": 0, "happy": 1, "neutral": 2, "sad": 3}, max_duration_s=None)
    arguments = SimpleNamespace(
        device="cpu",
        per_device_eval_batch_size=1,
        dataloader_num_workers=0,
        main_process_first=lambda desc: contextlib.nullcontext(),
    )

    def cache(model, root, processor=tiny_processor):
        return cache_datasets(model, processor, {"train": dataset}, {"train": "train"}, str(root), arguments)["train"]

    return dataset, cache


def _speech(cached) -> dict:
    return {cached[i]["id"]: cached[i]["speech_frames"] for i in range(len(cached))}


def _written_for(root) -> str:
    return f"the encoder cache in '{root / 'train'}' was written for "


def _delete_to_encode_again(root) -> str:
    return f"; delete '{root / 'train'}' to encode again, or pass another --encoder_cache folder"


def _change_encoders(model, processor, dataset):
    with torch.no_grad():
        model.crab.text_encoder.encoder.layer[0].output.dense.weight[0, 0] += 1e-3  # any weight change counts
    return processor


def _change_processor(model, processor, dataset):
    import copy

    changed = copy.deepcopy(processor)
    changed.max_text_length = 16
    return changed


def _change_utterances(model, processor, dataset):
    dataset.utterances[1].text = "i hate this"
    return processor


def _change_labels(model, processor, dataset):
    dataset.label2id = {"sad": 0, "neutral": 1, "happy": 2, "angry": 3}
    return processor


@pytest.mark.parametrize(
    "changes, written_for",
    [
        ([_change_encoders], "other encoders"),
        ([_change_processor], "other processor settings"),
        ([_change_utterances], "other utterances (manifest rows)"),
        ([_change_labels], "another label set"),
        ([_change_encoders, _change_processor], "other encoders and other processor settings"),
        (
            [_change_encoders, _change_utterances, _change_labels],
            "other encoders, other utterances (manifest rows) and another label set",
        ),
    ],
    ids=["encoders", "processor", "utterances", "labels", "two parts", "three parts"],
)
def test_encoder_cache_for_other_encoders_or_data(
    encoder_inputs, audio_split, tiny_processor, tmp_path, changes, written_for
):
    from modeling_crab.training.feature_cache import FeatureCacheError, cache_key, encode_dataset, encoder_fingerprint

    model, collator, items = encoder_inputs
    dataset, cache = audio_split
    root = tmp_path / "cache"
    cache(model, root)
    files = {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}
    processor = tiny_processor
    for change in changes:
        processor = change(model, processor, dataset)
    with pytest.raises(FeatureCacheError) as refusal:
        cache(model, root, processor)
    assert str(refusal.value) == _written_for(root) + written_for + _delete_to_encode_again(root)
    assert {path: path.read_bytes() for path in root.rglob("*") if path.is_file()} == files  # left as it was

    # a cache whose index does not name the parts of its fingerprint (an older one), or fingerprints without parts
    encoders = encoder_fingerprint(model)
    encode_dataset(model, items, collator, tmp_path / "plain", cache_key(encoders, "settings"))
    with pytest.raises(FeatureCacheError, match="written for other encoders, processor settings or utterances"):
        encode_dataset(model, items, collator, tmp_path / "plain", cache_key(encoders, "other settings"))
    with pytest.raises(FeatureCacheError, match="pass another --encoder_cache folder, or delete this one"):
        encode_dataset(
            model, items, collator, tmp_path / "plain", cache_key(encoders, "other"), sources={"encoders": encoders}
        )


def _re_record(path, mtime_ns):
    """Other audio under the same path: another tone, 0.2 s longer."""
    import soundfile as sf
    from training_helpers import write_tone

    write_tone(path, 600.0, sf.info(str(path)).duration + 0.2)


def _edit_in_place(path, mtime_ns):
    """The same number of samples (the same file size), other values; the edit moves the modification time."""
    import os

    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32")
    sf.write(str(path), audio[::-1].copy(), rate)
    os.utime(path, ns=(mtime_ns, mtime_ns + 1_000_000_000))  # filesystems with coarse clocks keep the old time


@pytest.mark.parametrize(
    "edit, other_encoders",
    [(_re_record, False), (_edit_in_place, False), (_re_record, True)],
    ids=["re-recorded", "edited in place, same size", "re-recorded, and other encoders"],
)
def test_encoder_cache_for_re_recorded_audio(encoder_inputs, audio_split, tmp_path, edit, other_encoders):
    import shutil
    from pathlib import Path

    from modeling_crab.training.feature_cache import FeatureCacheError, encode_dataset

    model, collator, _ = encoder_inputs
    dataset, cache = audio_split
    root = tmp_path / "cache"
    before = _speech(cache(model, root))
    changed = Path(dataset.utterances[1].audio)
    size = changed.stat().st_size
    edit(changed, changed.stat().st_mtime_ns)
    assert (changed.stat().st_size == size) == (edit is _edit_in_place)
    if other_encoders:
        with torch.no_grad():
            model.crab.audio_encoder.feature_projection.projection.weight[0, 0] += 1e-2
    written_for = "other audio files (re-recorded or edited since it was encoded)"
    if other_encoders:
        written_for = "other encoders and " + written_for
    with pytest.raises(FeatureCacheError) as refusal:
        cache(model, root)
    assert str(refusal.value) == _written_for(root) + written_for + _delete_to_encode_again(root)

    shutil.rmtree(root / "train")  # as the message says
    after = _speech(cache(model, root))
    fresh = _speech(encode_dataset(model, dataset, collator, tmp_path / "fresh", batch_size=1))
    torch.testing.assert_close(after, fresh)  # the new audio's features
    assert after["u1"].shape != before["u1"].shape or not torch.allclose(after["u1"], before["u1"])
    if not other_encoders:
        torch.testing.assert_close({k: after[k] for k in ("u0", "u2")}, {k: before[k] for k in ("u0", "u2")})


def _three_shards(model, collator, items, out, key) -> None:
    """A cache of one shard per utterance: `features-0000i.safetensors` holds `items[i]`."""
    from modeling_crab.training.feature_cache import cache_encoder_outputs

    batches = [{**collator([item]), "ids": [item["id"]]} for item in items]
    cache_encoder_outputs(model, batches, out, fingerprint=key, shard_bytes=1)


def _counting_encodes(model, monkeypatch) -> list[int]:
    """The batch sizes of every encoding from here on."""
    encoded = []
    original = model.crab.encode

    def counting(input_values, *args, **kwargs):
        encoded.append(len(input_values))
        return original(input_values, *args, **kwargs)

    monkeypatch.setattr(model.crab, "encode", counting)
    return encoded


def _cut_short(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _without_a_shard(path):
    import json

    index = json.loads(path.read_text())
    del index["utterances"]["u1"]["shard"]
    path.write_text(json.dumps(index))


@pytest.mark.parametrize(
    "name, damage, problem",
    [
        ("index.json", _cut_short, "index.json is cut short or not JSON (Unterminated string"),
        ("index.json", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff"), "index.json is cut short or not JSON ("),
        ("index.json", lambda p: p.write_bytes(b""), "index.json is empty"),
        (
            "index.json",
            lambda p: p.write_text("[]"),
            "index.json is not an encoder cache index (no 'utterances' table)",
        ),
        ("index.json", _without_a_shard, "index.json lists utterance 'u1' without a features-N.safetensors shard"),
        ("index.partial.json", _cut_short, "index.partial.json is cut short or not JSON (Unterminated string"),
    ],
    ids=["cut short", "not JSON", "empty", "not an index", "an entry without its shard", "unfinished, cut short"],
)
def test_encoder_cache_with_a_broken_index(encoder_inputs, tmp_path, monkeypatch, caplog, name, damage, problem):
    from modeling_crab.training.feature_cache import encode_dataset

    model, collator, items = encoder_inputs
    reference = _speech(encode_dataset(model, items, collator, tmp_path / "reference", "key", batch_size=1))
    out = tmp_path / "cache"
    _three_shards(model, collator, items, out, "key")
    if name == "index.partial.json":
        (out / "index.json").rename(out / name)
    damage(out / name)
    if name == "index.json":
        _assert_refused(out, problem)

    encoded = _counting_encodes(model, monkeypatch)
    rebuilt = _rebuilt(encoder_inputs, out, caplog, problem, "; encoding the utterances it listed again")
    assert sum(encoded) == 3  # the cache's contents are unknown: all of it again
    torch.testing.assert_close(_speech(rebuilt), reference)
    assert sorted(path.name for path in out.iterdir()) == ["features-00000.safetensors", "index.json"]


def _assert_refused(out, problem: str) -> None:
    """Reading the broken cache `out` is refused naming `problem` and the command that rebuilds it."""
    from modeling_crab.training.feature_cache import CachedFeatures, FeatureCacheError

    with pytest.raises(FeatureCacheError) as refusal:
        CachedFeatures(out)
    assert str(refusal.value).startswith(f"the encoder cache '{out}' is broken: {problem}")
    assert str(refusal.value).endswith("; run encode_dataset (train.py --encoder_cache) again to rebuild it")


def _rebuilt(encoder_inputs, out, caplog, problem: str, redone: str):
    """`encode_dataset` into the broken cache `out`: it warns once, naming `problem` and what it encodes again
    (`redone`); the features it returns."""
    from modeling_crab.training.feature_cache import encode_dataset

    model, collator, items = encoder_inputs
    with caplog.at_level("WARNING"):
        rebuilt = encode_dataset(model, items, collator, out, "key", batch_size=1)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith(f"encoder cache '{out}': {problem}"), warnings
    assert warnings[0].endswith(redone)
    return rebuilt


def _copy_of_shard_0(path):
    path.write_bytes((path.parent / "features-00000.safetensors").read_bytes())


@pytest.mark.parametrize(
    "damage, problem, unfinished",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "features-00001.safetensors is truncated (", False),
        (
            lambda p: p.write_bytes(p.read_bytes()[:20]),
            "features-00001.safetensors is unreadable (header longer",
            False,
        ),
        (lambda p: p.write_bytes(b""), "features-00001.safetensors is unreadable (", False),
        (lambda p: p.unlink(), "features-00001.safetensors is missing", False),
        (
            _copy_of_shard_0,
            "features-00001.safetensors lacks the features of 1 utterance it is listed for ('u1'",
            False,
        ),
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "features-00001.safetensors is truncated (", True),
    ],
    ids=["cut in its data", "cut in its header", "empty", "missing", "holding other utterances", "unfinished cache"],
)
def test_encoder_cache_with_a_broken_shard(encoder_inputs, tmp_path, monkeypatch, caplog, damage, problem, unfinished):
    import json

    from modeling_crab.training.feature_cache import (
        cache_status,
        encode_dataset,
    )

    model, collator, items = encoder_inputs
    reference = _speech(encode_dataset(model, items, collator, tmp_path / "reference", "key", batch_size=1))
    out = tmp_path / "cache"
    _three_shards(model, collator, items, out, "key")
    if unfinished:
        (out / "index.json").rename(out / "index.partial.json")
    damage(out / "features-00001.safetensors")
    whole = {name: (out / name).read_bytes() for name in ("features-00000.safetensors", "features-00002.safetensors")}
    assert cache_status(out, "key") == (False, {"u0", "u2"})
    if not unfinished:
        _assert_refused(out, problem)

    encoded = _counting_encodes(model, monkeypatch)
    rebuilt = _rebuilt(encoder_inputs, out, caplog, problem, "; encoding its 1 utterance again")
    assert encoded == [1]  # u1 alone
    index = json.loads((out / "index.json").read_text())
    assert {u: entry["shard"] for u, entry in index["utterances"].items()} == {
        "u0": "features-00000.safetensors",
        "u1": "features-00003.safetensors",  # past the highest listed shard: u2's shard stays as it was
        "u2": "features-00002.safetensors",
    }
    assert {name: (out / name).read_bytes() for name in whole} == whole
    torch.testing.assert_close(_speech(rebuilt), reference)
    assert sorted(path.name for path in out.iterdir()) == [
        "features-00000.safetensors",
        "features-00002.safetensors",
        "features-00003.safetensors",
        "index.json",
    ]
