"""Bad input to distillation (`crab distill`, `train.py --teacher`): each case is stopped by one line that names the
input and the fix, before the teacher's weights are read (a teacher or a preset: before any audio is). Every test
here is a row of docs/bad_input.md, under the same name."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from training_helpers import write_corpus

from modeling_crab import CrabConfig, CrabModel
from modeling_crab.cli import main
from modeling_crab.training.tiny import tiny_crab_config


def _crab_error(capsys, argv: list[str]) -> str:
    """`crab ARGV`'s one error line (exit 1), its last; before it only progress bars (loading weights)."""
    capsys.readouterr()
    assert main(argv) == 1
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    said = [line for line in lines if "it/s]" not in line]
    assert len(said) == 1 and said[0] == lines[-1] and said[0].startswith("crab: error: "), lines
    return said[0].removeprefix("crab: error: ")


def test_distill_teacher_that_is_not_a_crab_model(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _crab_error(capsys, ["distill", str(empty)]) == (
        f"--teacher '{empty}' has no config.json, so it is not a Crab model; pass a trained Crab model's folder "
        "(train.py writes <output_dir>/inference) or its Hub repo id"
    )
    other = tmp_path / "wavlm"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "wavlm"}))
    assert _crab_error(capsys, ["distill", str(other)]).startswith(
        f"--teacher '{other}' holds a wavlm model, not a Crab"
    )


def test_distill_teacher_without_a_classification_head(tmp_path, capsys):
    embedder = tmp_path / "embedder"  # what AutoModel saves: the CrabModel, no classifier
    torch.manual_seed(0)
    CrabModel(tiny_crab_config(2)).save_pretrained(embedder)
    assert _crab_error(capsys, ["distill", str(embedder)]) == (
        f"--teacher '{embedder}' has no output head to learn from (a CrabModel with 2 classes); pass a Crab emotion "
        "classifier (train.py writes <output_dir>/inference)"
    )
    attributes_only = tmp_path / "attributes"
    config = tiny_crab_config(2, attribute_names=["arousal"])
    CrabConfig.from_dict({**config.to_dict(), "id2label": {}, "label2id": {}}).save_pretrained(attributes_only)
    assert "has no classes to learn from" in _crab_error(capsys, ["distill", str(attributes_only)])


def test_distill_unknown_student_preset(tmp_path, capsys):
    assert _crab_error(capsys, ["distill", str(tmp_path), "--student", "huge"]) == (
        "--student 'huge': no such student preset; pass one of small, tiny"
    )


def test_distill_manifest_without_audio(tmp_path, capsys):
    from test_distill import _save_teacher

    teacher = tmp_path / "teacher"
    _save_teacher(teacher, ["i miss her"], attributes=False)
    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    with manifest.open() as handle:
        rows = [{k: v for k, v in row.items() if k != "audio"} for row in csv.DictReader(handle)]
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "out"
    message = _crab_error(capsys, ["distill", str(teacher), "--manifest", str(manifest), "--output_dir", str(out)])
    assert message == (
        f"manifest '{manifest}' (columns: id, label, split, text): no 'audio' column; add it (the audio file's path, "
        "relative to the manifest's folder or absolute)"
    )


def test_distill_unlabelled_audio_without_transcripts_and_no_speech_recognizer(tmp_path, capsys):
    from test_distill import _save_teacher
    from training_helpers import write_tone

    teacher = tmp_path / "teacher"
    _save_teacher(teacher, ["i miss her"], attributes=False)
    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    recordings = tmp_path / "recordings"
    write_tone(recordings / "call.wav", 220.0, 0.5)
    missing = tmp_path / "no_such_recognizer"
    argv = ["distill", str(teacher), "--manifest", str(manifest), "--output_dir", str(tmp_path / "out")]
    without = f"1 clip(s) of --unlabelled_manifest have no transcript (the first: '{recordings / 'call.wav'}'), and"
    fixes = "give the manifest a text column, pass --asr_model a local speech recognizer, or --empty_transcripts audio_only"
    message = _crab_error(capsys, [*argv, "--unlabelled_manifest", str(recordings), "--asr_model", str(missing)])
    assert message == f"{without} --asr_model '{missing}': no such folder, and not a Hub repo id; {fixes}"
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    message = _crab_error(capsys, [*argv, "--unlabelled_manifest", str(recordings), "--asr_model", str(not_a_model)])
    assert message == f"{without} --asr_model '{not_a_model}': the folder has no config.json; {fixes}"
    assert _crab_error(capsys, [*argv, "--unlabelled_manifest", str(tmp_path / "calls")]) == (
        f"--unlabelled_manifest '{tmp_path / 'calls'}' does not exist; pass manifests (CSV, JSONL or saved datasets "
        "folders), folders of audio files or audio files"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _crab_error(capsys, [*argv, "--unlabelled_manifest", str(empty)]) == (
        f"--unlabelled_manifest folder '{empty}' holds no audio files (.wav, .flac, .ogg, .opus, .mp3, in it or its "
        "subfolders); pass the folder that holds them, or a manifest"
    )


@pytest.fixture(autouse=True)
def _tests_beside(monkeypatch):
    """`test_distill` (its teacher) importable from here."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
