"""`crab predict` classifies files from an export and prints a table or JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_crab import CrabForEmotionClassification, export_for_inference
from modeling_crab.cli import main

LABELS = {"angry", "happy", "neutral", "sad"}


@pytest.fixture
def checkpoint(tiny_config, tiny_processor, tmp_path):
    torch.manual_seed(0)
    return export_for_inference(CrabForEmotionClassification(tiny_config).eval(), tiny_processor, tmp_path / "ckpt")


def speech(path: Path, seconds: float = 1.0, rate: int = 16000, seed: int = 0) -> str:
    samples = np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * rate))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((samples * 32767).astype("<i2").tobytes())
    return str(path)


def test_predict_prints_json_per_file(checkpoint, tmp_path, capsys):
    a, b = speech(tmp_path / "a.wav"), speech(tmp_path / "b.wav", 0.7, 8000, seed=1)
    args = ["predict", a, b, "--text", "that is wonderful news", "--text", "i miss her", "--model", str(checkpoint)]
    assert main([*args, "--json", "--top-k", "2", "--device", "cpu"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == [a, b]
    assert results[1]["text"] == "i miss her" and results[1]["transcribed"] is False
    for result in results:
        assert len(result["scores"]) == 2 and {s["label"] for s in result["scores"]} <= LABELS
        assert result["scores"][0]["score"] >= result["scores"][1]["score"]


def test_files_and_their_texts_may_alternate(checkpoint, tmp_path, capsys, monkeypatch):
    """`a.wav --text x b.wav --text y` pairs like `a.wav b.wav --text x --text y`; CRAB_MODEL is the default model."""
    a, b = speech(tmp_path / "a.wav"), speech(tmp_path / "b.wav", 0.7, seed=1)
    texts = ["that is wonderful news", "i miss her"]
    assert main(["predict", a, b, "--text", texts[0], "--text", texts[1], "--model", str(checkpoint), "--json"]) == 0
    grouped = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("CRAB_MODEL", str(checkpoint))
    from modeling_crab.cli import build_parser

    assert "CRAB_MODEL" in build_parser()._subparsers._group_actions[0].choices["predict"].format_help()
    assert main(["predict", a, "--text", texts[0], b, "--json", "--text", texts[1]]) == 0
    alternating = json.loads(capsys.readouterr().out)
    assert [(r["file"], r["text"]) for r in alternating] == [(a, texts[0]), (b, texts[1])]
    assert alternating == grouped


def test_predict_bf16_scores_stay_within_1e_2(checkpoint, tmp_path, capsys):
    args = ["predict", speech(tmp_path / "a.wav"), "--text", "that is wonderful news", "--model", str(checkpoint)]
    scores = []
    for precision in ([], ["--bf16"]):
        assert main([*args, "--json", "--device", "cpu", *precision]) == 0
        scores.append({s["label"]: s["score"] for s in json.loads(capsys.readouterr().out)[0]["scores"]})
    assert scores[0].keys() == scores[1].keys() and scores[0] != scores[1]
    assert max(abs(scores[0][label] - scores[1][label]) for label in scores[0]) < 1e-2


def test_predict_prints_a_table_from_a_transcripts_file(checkpoint, tmp_path, capsys):
    speech(tmp_path / "a.wav")
    speech(tmp_path / "b.wav", seed=1)
    tsv = tmp_path / "clips.tsv"
    tsv.write_text("path\ttext\na.wav\tthat is wonderful news\nb.wav\twe talked about it\n")
    assert main(["predict", "--transcripts", str(tsv), "--model", str(checkpoint), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["file", "emotion", "score"]
    assert len(lines) == 3 and lines[1].split()[0].endswith("a.wav") and lines[2].split()[0].endswith("b.wav")
    assert lines[1].split()[1] in LABELS
    scores = [float(word) for word in lines[1].split()[2::2]]
    assert sum(scores) == pytest.approx(1.0, abs=0.01)  # all four labels, rounded to 3 decimals


def test_usage_errors_say_what_to_pass(checkpoint, tmp_path, capsys):
    a = speech(tmp_path / "a.wav")
    with pytest.raises(SystemExit):
        main(["predict", a, a, "--text", "only one", "--model", str(checkpoint)])
    assert "got 2 files but 1 --text; pass --text once per file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "missing.wav"), "--text", "x", "--model", str(checkpoint)])
    assert "missing.wav' does not exist" in capsys.readouterr().err
    tsv = tmp_path / "t.tsv"
    tsv.write_text("other.wav\thello\n")
    with pytest.raises(SystemExit):
        main(["predict", a, "--transcripts", str(tsv), "--model", str(checkpoint)])
    assert "has no line in" in capsys.readouterr().err


def test_console_script(checkpoint, tmp_path):
    crab = shutil.which("crab", path=str(Path(sys.executable).parent))
    if crab is None:
        pytest.skip("the `crab` console script is not installed; pip install -e .")
    a = speech(tmp_path / "a.wav")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run(
        [crab, "predict", a, "--text", "hello there", "--model", str(checkpoint), "--json", "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)[0]["scores"][0]["label"] in LABELS


@pytest.mark.parametrize("id2label", [{0: "angry", 1: "happy", 2: "neutral", 3: "sad"}, {}], ids=["joint", "only"])
def test_predict_prints_the_attributes_after_the_labels(id2label, tiny_tokenizer, tmp_path, capsys):
    from attribute_models import ATTRIBUTES, export_attribute_model

    _, _, model = export_attribute_model(tiny_tokenizer, tmp_path / "ckpt", id2label)
    a = speech(tmp_path / "a.wav", seconds=3.0)  # two windows of the 2 s crop
    args = ["predict", a, "--text", "that is wonderful news", "--model", str(model), "--device", "cpu"]
    assert main([*args, "--json", "--windows", "--top-k", "2"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert list(result["attributes"]) == ATTRIBUTES and all(0 <= v <= 1 for v in result["attributes"].values())
    assert len(result["scores"]) == (2 if id2label else 0)
    assert len(result["windows"]) == 2 and all(list(w["attributes"]) == ATTRIBUTES for w in result["windows"])

    assert main([*args, "--windows"]) == 0
    header, line, *windows = capsys.readouterr().out.splitlines()
    shown = "  ".join(f"{name} {value:.3f}" for name, value in result["attributes"].items())
    assert line.endswith(shown) and header.split()[-1] == "attributes" and len(windows) == 2
    assert header.index("attributes") == line.index(ATTRIBUTES[0])  # the column heads its values
    if id2label:
        assert header.split()[:3] == ["file", "emotion", "score"] and line.split()[1] in LABELS
        assert line.split()[1] == result["scores"][0]["label"] and " | " in line
    else:
        assert line.split()[:2] == [a, ATTRIBUTES[0]]
