"""`crab annotate`: a corpus (manifest, folder, dataset) -> one row per recording, with the pipeline's scores;
resumable after a kill; the same output from two processes as from one."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from training_helpers import write_tone
from transformers import pipeline

from modeling_crab.annotate import PartWriter, parts_folder, read_table
from modeling_crab.cli import main

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

LABELS = ["angry", "happy", "neutral", "sad"]
TEXTS = ["this is absolutely unacceptable", "that is wonderful news", "i miss her so much"]
# seconds of each clip: short ones, and longer than the tiny export's 2 s crop (2 and 3 windows)
SECONDS = [0.4, 1.0, 2.5, 0.7, 5.0, 1.3, 0.9, 3.1]


def write_clips(folder: Path, count: int = len(SECONDS), seconds=SECONDS) -> list[Path]:
    """`count` tones of different pitches and lengths, at 16 and 8 kHz, in `folder` and a subfolder."""
    paths = []
    for i in range(count):
        path = folder / ("sub" if i % 3 == 2 else "") / f"clip{i:03d}.wav"
        write_tone(path, 120.0 + 37 * i, seconds[i % len(seconds)], sampling_rate=8000 if i % 4 == 1 else 16000)
        paths.append(path)
    return paths


def write_manifest(folder: Path, paths: list[Path], texts: bool = True) -> Path:
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "audio", *(["text"] if texts else [])])
        for i, path in enumerate(paths):
            writer.writerow([f"utt{i}", path.relative_to(folder).as_posix(), *([TEXTS[i % 3]] if texts else [])])
    return manifest


def annotate(*args) -> int:
    return main(["annotate", *map(str, args), "--device", "cpu", "--num-workers", "1"])


def rows_of(path: Path) -> list[dict]:
    return read_table(path)


def scores_of(row: dict, names=LABELS) -> np.ndarray:
    return np.array([row[name] for name in names], dtype=np.float64)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    paths = write_clips(folder)
    return folder, paths, write_manifest(folder, paths)


def test_scores_are_the_pipelines_one_file_at_a_time(tiny_export, corpus, tmp_path, capsys):
    """Each recording's row holds what the pipeline answers for that file alone (windows of long audio included),
    though annotate batches the windows of many files by length."""
    model, processor, checkpoint = tiny_export
    folder, paths, manifest = corpus
    out = tmp_path / "scores.parquet"
    assert annotate(manifest, "--model", checkpoint, "--output", out, "--batch-size", "3", "--windows") == 0
    summary = capsys.readouterr().out
    assert f"{len(paths)} recordings" in summary and f"{len(paths)} done, 0 failed" in summary

    rows = rows_of(out)
    classify = pipeline("speech-emotion-recognition", model=model, processor=processor, device="cpu")
    assert [row["id"] for row in rows] == [f"utt{i}" for i in range(len(paths))]
    for i, (row, path) in enumerate(zip(rows, paths)):
        alone = classify(str(path), text=TEXTS[i % 3], return_windows=True)
        expected = {entry["label"]: entry["score"] for entry in alone["aggregate"]}
        np.testing.assert_allclose(scores_of(row), [expected[name] for name in LABELS], atol=1e-5)
        assert row["prediction"] == alone["aggregate"][0]["label"] and row["error"] is None
        assert row["text"] == TEXTS[i % 3] and Path(row["audio"]).resolve() == path.resolve()
        assert row["duration"] == pytest.approx(SECONDS[i], abs=1e-3)
        assert len(row["windows"]) == len(alone["windows"]) == {2.5: 2, 5.0: 3, 3.1: 2}.get(SECONDS[i], 1)
        for window, reference in zip(row["windows"], alone["windows"]):
            assert (window["start"], window["end"]) == (reference["start"], reference["end"])
            expected = {entry["label"]: entry["score"] for entry in reference["scores"]}
            np.testing.assert_allclose(scores_of(window), [expected[name] for name in LABELS], atol=1e-5)


def test_pad_to_buckets_reaches_the_pipeline_and_keeps_the_scores(tiny_export, corpus, tmp_path, monkeypatch):
    """--pad-to-buckets: the windows are scored padded to the model's saved shape buckets (the pipeline's
    `pad_to_buckets=True`), with the scores of unpadded batches."""
    import shutil

    from modeling_crab import annotate as corpus_annotation

    _, _, checkpoint = tiny_export
    _, _, manifest = corpus
    bucketed = tmp_path / "bucketed"
    shutil.copytree(checkpoint, bucketed)
    saved = json.loads((bucketed / "processor_config.json").read_text())
    saved["shape_buckets"] = {"audio": [16000, 40000], "text": [16, 48]}
    (bucketed / "processor_config.json").write_text(json.dumps(saved))
    asked, score_pool = [], corpus_annotation.score_pool
    monkeypatch.setattr(
        corpus_annotation,
        "score_pool",
        lambda pipe, pool, size, forward, *rest: (
            asked.append(dict(forward)) or (score_pool(pipe, pool, size, forward, *rest))
        ),
    )
    plain, padded = tmp_path / "plain.csv", tmp_path / "padded.csv"
    assert annotate(manifest, "--model", bucketed, "--output", plain, "--batch-size", "3") == 0
    assert asked and all(forward.get("pad_to_buckets") is None for forward in asked)
    asked.clear()
    assert annotate(manifest, "--model", bucketed, "--output", padded, "--batch-size", "3", "--pad-to-buckets") == 0
    assert asked and all(forward["pad_to_buckets"] is True for forward in asked)
    for got, expected in zip(rows_of(padded), rows_of(plain), strict=True):
        assert got["error"] is None and got["prediction"] == expected["prediction"]
        np.testing.assert_allclose(scores_of(got), scores_of(expected), atol=1e-5)


def test_a_folder_a_dataset_and_csv_output_give_the_same_rows(tiny_export, corpus, tmp_path):
    """A folder of audio files (ids: their relative paths; --audio-only), a saved `datasets` folder with an audio
    column and a manifest without transcripts annotate the same recordings to the same scores, in Parquet or CSV."""
    import datasets

    _, _, checkpoint = tiny_export
    folder, paths, _ = corpus
    by_folder = tmp_path / "folder.parquet"
    with pytest.warns(UserWarning, match="without modality dropout"):
        assert annotate(folder, "--model", checkpoint, "--output", by_folder, "--audio-only") == 0
    relative = sorted(p.relative_to(folder).as_posix() for p in paths)
    folder_rows = rows_of(by_folder)
    assert [row["id"] for row in folder_rows] == relative and all(row["text"] == "" for row in folder_rows)

    saved = tmp_path / "saved"
    dataset = datasets.Dataset.from_dict({"id": relative, "audio": [str(folder / r) for r in relative]})
    dataset.cast_column("audio", datasets.Audio()).save_to_disk(saved)  # the audio embedded as bytes
    as_csv = tmp_path / "dataset.csv"
    with pytest.warns(UserWarning, match="without modality dropout"):
        assert annotate(saved, "--model", checkpoint, "--output", as_csv, "--audio-only") == 0
    csv_rows = rows_of(as_csv)
    assert [row["id"] for row in csv_rows] == relative
    for a, b in zip(folder_rows, csv_rows):
        np.testing.assert_allclose(scores_of(a), scores_of(b), atol=1e-6)
        assert a["prediction"] == b["prediction"] and a["duration"] == pytest.approx(b["duration"])


def test_a_model_with_attributes_gets_their_columns(tiny_tokenizer, corpus, tmp_path):
    from attribute_models import ATTRIBUTES, export_attribute_model

    model, processor, checkpoint = export_attribute_model(tiny_tokenizer, tmp_path / "ckpt")
    _, paths, manifest = corpus
    out = tmp_path / "scores.csv"
    assert annotate(manifest, "--model", checkpoint, "--output", out, "--windows") == 0
    rows = rows_of(out)
    classify = pipeline("speech-emotion-recognition", model=model, processor=processor, device="cpu")
    for i, row in enumerate(rows):
        alone = classify(str(paths[i]), text=TEXTS[i % 3])
        np.testing.assert_allclose(scores_of(row, ATTRIBUTES), list(alone["attributes"].values()), atol=1e-5)
        assert row["prediction"] == alone["labels"][0]["label"]
        assert all(list(w)[-len(ATTRIBUTES) :] == ATTRIBUTES for w in row["windows"])


def test_a_resumed_run_skips_the_recordings_its_parts_hold(tiny_export, corpus, tmp_path, capsys):
    """`--resume` keeps the rows of complete parts (even a row no run would write: the parts are trusted), tries
    again a recording that failed, adds the rest, and merges each recording once; a finished output continued with
    `--resume` annotates only new files."""
    _, _, checkpoint = tiny_export
    folder, paths, manifest = corpus
    whole = tmp_path / "whole.parquet"
    assert annotate(manifest, "--model", checkpoint, "--output", whole) == 0
    reference = rows_of(whole)

    out = tmp_path / "resumed.parquet"
    kept = [dict(row, prediction="kept") for row in reference[:3]]
    failed = dict(reference[3], prediction=None, angry=None, error="a failure of the earlier run")
    writer = PartWriter(parts_folder(out), rank=1, sequence=0, every=100)
    for row in [*kept, failed]:
        writer.add(row)
    writer.flush()
    (parts_folder(out) / ".part-00000-000001.jsonl.tmp").write_text('{"id": "half a row')  # a killed write
    capsys.readouterr()
    assert annotate(manifest, "--model", checkpoint, "--output", out, "--resume") == 0
    assert "5 done, 0 failed (their error column says why), 3 skipped" in capsys.readouterr().out
    rows = rows_of(out)
    assert [row["id"] for row in rows] == [row["id"] for row in reference] and not parts_folder(out).exists()
    assert [row["prediction"] for row in rows[:3]] == ["kept"] * 3
    assert rows[3]["error"] is None and rows[3]["prediction"] == reference[3]["prediction"]  # tried again
    for a, b in zip(rows[3:], reference[3:]):
        np.testing.assert_allclose(scores_of(a), scores_of(b), atol=1e-5)

    grown = tmp_path / "grown"
    write_clips(grown, 3)
    first = tmp_path / "grown.csv"
    with pytest.warns(UserWarning, match="without modality dropout"):
        assert annotate(grown, "--model", checkpoint, "--output", first, "--audio-only") == 0
    write_tone(grown / "late.wav", 300.0, 0.8)
    capsys.readouterr()
    with pytest.warns(UserWarning, match="without modality dropout"):
        assert annotate(grown, "--model", checkpoint, "--output", first, "--audio-only", "--resume") == 0
    assert "1 done, 0 failed (their error column says why), 3 skipped" in capsys.readouterr().out
    assert [row["id"] for row in rows_of(first)] == ["clip000.wav", "clip001.wav", "late.wav", "sub/clip002.wav"]


def _env(tmp_path: Path) -> dict:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }


def _command(*args) -> list[str]:
    return [sys.executable, "-m", "modeling_crab.cli", "annotate", *map(str, args), "--device", "cpu"]


@pytest.mark.slow
def test_a_killed_run_resumes_to_every_recording_once(tiny_export, tmp_path):
    """A run killed (SIGKILL) after its first parts, started again with --resume, ends with every recording exactly
    once and the scores of an uninterrupted run."""
    _, _, checkpoint = tiny_export
    folder = tmp_path / "clips"
    paths = write_clips(folder, 60, seconds=[0.5, 1.5, 0.8, 2.5])
    manifest = write_manifest(folder, paths)
    env = _env(tmp_path)
    common = ["--model", checkpoint, "--batch-size", "4", "--flush-every", "4", "--num-workers", "1"]
    whole, out = tmp_path / "whole.parquet", tmp_path / "killed.parquet"
    subprocess.run(_command(manifest, "--output", whole, *common), env=env, check=True, timeout=600)

    run = subprocess.Popen(_command(manifest, "--output", out, *common), env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(parts_folder(out).glob("part-*.jsonl"))) < 3 and time.monotonic() < deadline:
        assert run.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    parts = list(parts_folder(out).glob("part-*.jsonl"))
    assert not out.exists() and 3 <= len(parts) < 15

    done = subprocess.run(
        _command(manifest, "--output", out, *common, "--resume"), env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "60 recordings" in done.stdout and "0 failed" in done.stdout and " skipped" in done.stdout
    rows, reference = rows_of(out), rows_of(whole)
    assert [row["id"] for row in rows] == [row["id"] for row in reference] == [f"utt{i}" for i in range(60)]
    for a, b in zip(rows, reference):
        np.testing.assert_allclose(scores_of(a), scores_of(b), atol=1e-5)
        assert (a["prediction"], a["duration"], a["text"]) == (b["prediction"], b["duration"], b["text"])


@pytest.mark.slow
def test_two_processes_write_what_one_writes(tiny_export, tmp_path, alone_among_process_groups):
    """`torchrun --nproc_per_node 2` (gloo on the CPU): each process annotates every other recording into its own
    parts, rank 0 merges them: the same rows in the same order as one process."""
    _, _, checkpoint = tiny_export
    folder = tmp_path / "clips"
    paths = write_clips(folder, 11)
    manifest = write_manifest(folder, paths)
    env = _env(tmp_path)
    common = ["--model", checkpoint, "--batch-size", "4", "--flush-every", "2", "--num-workers", "0"]
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    subprocess.run(_command(manifest, "--output", one, *common), env=env, check=True, timeout=600)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launch, *_command(manifest, "--output", two, *common)[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("crab annotate: 11 recordings") == 1  # rank 0's summary alone
    rows, reference = rows_of(two), rows_of(one)
    assert [row["id"] for row in rows] == [row["id"] for row in reference]
    for a, b in zip(rows, reference):
        np.testing.assert_allclose(scores_of(a), scores_of(b), atol=1e-5)
        assert json.dumps({**a, **dict.fromkeys(LABELS)}) == json.dumps({**b, **dict.fromkeys(LABELS)})
