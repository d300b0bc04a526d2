"""Manifests, audio loading, validation before training, the collator and length-grouped batching."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
from training_helpers import LABELS, write_corpus, write_tone

from modeling_crab.manifest import ManifestError, load_manifest, select_split
from modeling_crab.training import (
    CrabAudioTextDataset,
    CrabDataCollator,
    EpochSeededLengthGroupedSampler,
    label_names_from,
    load_audio,
    scan_manifest,
)


def _write_csv(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def test_load_audio_downmixes_resamples_cuts_and_crops(tmp_path):
    write_tone(tmp_path / "stereo.wav", 440.0, seconds=2.0, sampling_rate=44100, channels=2)
    whole = load_audio(tmp_path / "stereo.wav")
    assert whole.dtype == np.float32 and whole.ndim == 1
    assert abs(len(whole) - 32000) <= 1
    segment = load_audio(tmp_path / "stereo.wav", start=0.5, end=1.5)
    assert abs(len(segment) - 16000) <= 1
    cropped = load_audio(tmp_path / "stereo.wav", start=0.5, max_duration_s=0.25)
    assert len(cropped) == 4000


def test_csv_jsonl_and_datasets_manifests_read_alike(tmp_path):
    manifest = write_corpus(tmp_path, {"train": 1, "dev": 1})
    from_csv = load_manifest(manifest)
    assert len(from_csv) == 8 and Path(from_csv[0].audio).is_absolute() and Path(from_csv[0].audio).is_file()

    rows = [json.loads(json.dumps(r)) for r in datasets.load_dataset("csv", data_files=str(manifest))["train"]]
    jsonl = tmp_path / "manifest.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert [u.audio for u in load_manifest(jsonl)] == [u.audio for u in from_csv]

    in_memory = datasets.Dataset.from_list(rows)
    assert [u.audio for u in load_manifest(in_memory, audio_root=tmp_path)] == [u.audio for u in from_csv]
    splits = datasets.DatasetDict(
        {name: datasets.Dataset.from_list([r for r in rows if r["split"] == name]) for name in ("train", "dev")}
    )
    by_split = load_manifest(splits, audio_root=tmp_path)
    assert {u.split for u in by_split} == {"train", "dev"}
    assert label_names_from(by_split) == list(LABELS)


def test_misnamed_columns_are_named_with_the_fix(tmp_path):
    manifest = _write_csv(tmp_path / "m.csv", "path,transcript,emotion,split", ["a.wav,hi,sad,train"])
    with pytest.raises(ManifestError) as error:
        load_manifest(manifest)
    message = str(error.value)
    for fix in ("rename column 'path' to 'audio'", "'transcript' to 'text'", "'emotion' to 'label'"):
        assert fix in message


def test_every_bad_row_is_reported_together(tmp_path):
    write_tone(tmp_path / "good.wav", 200.0, 0.5)
    write_tone(tmp_path / "good2.wav", 200.0, 0.5)
    (tmp_path / "garbage.wav").write_bytes(b"this is not audio")
    sf.write(str(tmp_path / "nan.wav"), np.array([0.1, np.nan, 0.2] * 100, dtype=np.float32), 16000, subtype="FLOAT")
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, dtype=np.float32), 16000)
    manifest = _write_csv(
        tmp_path / "manifest.csv",
        "id,audio,text,label,split,start,end",
        [
            "ok,good.wav,fine words,sad,train,,",
            "missing,nowhere.wav,some words,sad,train,,",
            "garbage,garbage.wav,some words,sad,train,,",
            "nan,nan.wav,some words,sad,train,,",
            "empty,empty.wav,some words,sad,train,,",
            "notext,good2.wav,,sad,train,,",
            "ok,good2.wav,duplicate id,sad,train,,",
            "unknown,good2.wav,some words,furious,dev,,",
            "times,good2.wav,some words,sad,dev,0.4,0.1",
        ],
    )
    utterances = load_manifest(manifest)
    with pytest.raises(ManifestError) as error:
        scan_manifest(utterances, ["sad"], labelled_splits=["dev"], name=str(manifest))
    message = str(error.value)
    expected = {
        "line 3 (id 'missing'": "not found",
        "line 4 (id 'garbage'": "unreadable",
        "line 5 (id 'nan'": "NaN",
        "line 6 (id 'empty'": "empty",
        "line 7 (id 'notext'": "empty transcript",
        "line 8 (id 'ok'": "make ids unique",
        "line 9 (id 'unknown'": "unknown label 'furious'",
        "line 10 (id 'times'": "end=0.1 is not after start=0.4",
    }
    lines = message.splitlines()
    for where, problem in expected.items():
        assert any(where in line and problem in line for line in lines), (where, problem, message)
    assert "nothing was trained" in message


def test_scan_computes_lengths_and_global_statistics_of_the_training_audio(tmp_path):
    manifest = write_corpus(tmp_path, {"train": 2, "dev": 1})
    utterances = load_manifest(manifest)
    scan = scan_manifest(utterances, list(LABELS), labelled_splits=["dev"], num_workers=2)
    train_audio = np.concatenate([load_audio(u.audio) for u in utterances if u.split == "train"]).astype(np.float64)
    assert scan.waveform_mean == pytest.approx(train_audio.mean(), abs=1e-9)
    assert scan.waveform_std == pytest.approx(train_audio.std(), rel=1e-9)
    assert scan.num_training_samples == len(train_audio)
    assert all(scan.num_samples[u.id] == len(load_audio(u.audio)) for u in utterances)


def test_release_waveform_statistics_follow_the_released_code(tmp_path, monkeypatch):
    """`waveform_stats="release"`: the released `LazyWavSet.compute_norm_stats`, written out here as it is there
    (whole files of a RandomState(42) sample of the training files, sums and sums of squares, std + 1e-6), not the
    crops that training reads."""
    from modeling_crab.training import data

    monkeypatch.setattr(data, "RELEASE_STATS_CLIPS", 5)  # 8 training clips: a sample of 5, as of 5000 in the release
    utterances = load_manifest(write_corpus(tmp_path, {"train": 2, "dev": 1}))
    training = [u for u in utterances if u.split == "train"]
    for u in training:  # louder towards the end: the whole files and their 0.5 s crops differ
        wav, rate = sf.read(u.audio)
        sf.write(u.audio, wav * np.linspace(0.2, 1.0, len(wav)), rate)
    count = wav_sum = wav_sqsum = 0.0
    for index in np.random.RandomState(42).choice(len(training), size=5, replace=False):
        wav = load_audio(training[index].audio)  # the whole file
        wav_sum, wav_sqsum, count = wav_sum + np.sum(wav), wav_sqsum + np.sum(wav**2), count + len(wav)
    mean = wav_sum / count
    std = np.sqrt(max(wav_sqsum / count - mean**2, 1e-10))
    cache, scans = tmp_path / "scan.json", {}
    for stats in ("release", "crops", "release"):  # the cache tells them apart
        scans[stats] = scan_manifest(
            utterances, list(LABELS), max_duration_s=0.5, num_workers=1, cache_path=cache, waveform_stats=stats
        )
    assert scans["release"].waveform_mean == pytest.approx(mean, rel=1e-5)
    assert scans["release"].waveform_std == pytest.approx(std + 1e-6, rel=1e-5)
    assert scans["crops"].waveform_std < 0.9 * scans["release"].waveform_std  # the quieter 0.5 s crops
    with pytest.raises(ValueError, match="waveform_stats='whole'; use one of crops, release"):
        scan_manifest(utterances, list(LABELS), waveform_stats="whole")


def test_scan_cache_is_reused_for_the_same_rows_and_files(tmp_path, monkeypatch):
    """The same rows over the same files: the cached scan, no audio read; a file gone since: scanned again, and
    reported before anything is trained."""
    from modeling_crab.manifest import ManifestError
    from modeling_crab.training import data

    utterances = load_manifest(write_corpus(tmp_path, {"train": 1}))
    cache = tmp_path / "scan.json"
    first = scan_manifest(utterances, list(LABELS), cache_path=cache)
    with monkeypatch.context() as unread:
        unread.setattr(data, "_check_audio", lambda *args: pytest.fail("the audio was read again"))
        assert scan_manifest(utterances, list(LABELS), cache_path=cache) == first
    for u in utterances:
        Path(u.audio).unlink()
    with pytest.raises(ManifestError, match="not found"):
        scan_manifest(utterances, list(LABELS), cache_path=cache)


def test_dataset_items_and_lengths(tmp_path):
    utterances = load_manifest(write_corpus(tmp_path, {"train": 1}))
    scan = scan_manifest(utterances, list(LABELS))
    dataset = CrabAudioTextDataset(select_split(utterances, "train"), {n: i for i, n in enumerate(LABELS)}, 0.5, None)
    item = dataset[0]
    assert set(item) == {"audio", "text", "label", "id"} and len(item["audio"]) <= 8000
    dataset = CrabAudioTextDataset(utterances, {n: i for i, n in enumerate(LABELS)}, 12.0, scan.num_samples)
    assert dataset.lengths == [len(dataset[i]["audio"]) for i in range(len(dataset))]


def test_collator_pads_both_modalities(tiny_processor):
    rng = np.random.default_rng(0)
    features = [
        {"audio": rng.standard_normal(n).astype(np.float32), "text": text, "label": label}
        for n, text, label in [(8000, "hi", 0), (16000, "this is a much longer transcript", 2), (3000, "ok", 3)]
    ]
    batch = CrabDataCollator(tiny_processor)(features)
    assert batch["input_values"].shape == batch["attention_mask"].shape == (3, 16000)
    assert batch["attention_mask"].sum(dim=1).tolist() == [8000, 16000, 3000]
    assert (batch["input_values"][2, 3000:] == 0).all()
    assert batch["input_ids"].shape == batch["text_attention_mask"].shape
    token_counts = batch["text_attention_mask"].sum(dim=1)
    assert token_counts[1] == batch["input_ids"].shape[1] and (token_counts[[0, 2]] < token_counts[1]).all()
    assert (batch["input_ids"][0, token_counts[0] :] == tiny_processor.tokenizer.pad_token_id).all()
    assert batch["labels"].tolist() == [0, 2, 3]
    features[1]["label"] = None  # hidden test labels: no `labels` in the batch
    assert "labels" not in CrabDataCollator(tiny_processor)(features)


def _padding_fraction(order: list[int], lengths: list[int], batch_size: int) -> float:
    """Padded samples / real samples when `order` is cut into batches."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return padded / sum(lengths) - 1.0


def test_length_grouped_batches_hold_similar_lengths():
    lengths = torch.randint(1000, 200_000, (256,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = EpochSeededLengthGroupedSampler(batch_size=4, lengths=lengths, seed=42)
    order = list(sampler)
    assert sorted(order) == list(range(256))
    shuffled = torch.randperm(256, generator=torch.Generator().manual_seed(1)).tolist()
    assert _padding_fraction(order, lengths, 4) < 0.25 * _padding_fraction(shuffled, lengths, 4)
    assert max(lengths[i] for i in order[:4]) == max(lengths)  # the longest batch first (out-of-memory early)
    assert list(sampler) == order  # the same epoch gives the same batches, so a resumed run sees them again
    sampler.set_epoch(1)
    assert list(sampler) != order
