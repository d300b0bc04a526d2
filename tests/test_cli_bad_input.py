"""Bad input to `crab predict`: each case is handled as docs/bad_input.md says or stopped by an error that names the
input and the fix. Every test here is a row of that table, under the same name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input import SR, direct, noise, predict, scores, truncate, write

from modeling_crab.audio import read_audio
from modeling_crab.cli import main

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # many small forward passes (conftest)


# ---- crab predict (CLI)
def test_cli_missing_file(crab, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(predict(crab, str(tmp_path / "missing.wav"), "--text", "hi"))
    assert stop.value.code == 2 and "missing.wav' does not exist" in capsys.readouterr().err


def test_cli_corrupt_and_empty_files(crab, tmp_path, capsys):
    (tmp_path / "corrupt.wav").write_bytes(b"not audio at all" * 10)
    assert main(predict(crab, str(tmp_path / "corrupt.wav"), "--text", "hi")) == 1
    assert "corrupt.wav' could not be decoded" in capsys.readouterr().err
    empty = write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    assert main(predict(crab, empty, "--text", "hi")) == 1
    assert "empty.wav' is 0 ms long; pass at least 25 ms" in capsys.readouterr().err


def test_cli_nan_and_silence_name_the_file(crab, tmp_path, capsys):
    audio = noise(1)
    audio[10] = np.nan
    nan = write(tmp_path / "nan.wav", audio, subtype="FLOAT")
    assert main(predict(crab, nan, "--text", "hi")) == 1
    assert "crab: error: audio file '" in (err := capsys.readouterr().err) and "nan.wav' contains NaN" in err
    silent = write(tmp_path / "silent.wav", np.zeros(SR, np.float32))
    with pytest.warns(UserWarning, match="silent.wav' is silent"):
        assert main(predict(crab, silent, "--text", "hi")) == 0
    assert json.loads(capsys.readouterr().out)[0]["file"] == silent


def test_cli_truncated_8k_stereo_and_44k_6_channel_files(crab, tmp_path, capsys):
    stereo_8k = write(tmp_path / "stereo_8k.wav", noise(1.5, 8000, channels=2), 8000)
    six_44k = write(tmp_path / "six_44k.wav", noise(1.0, 44100, channels=6), 44100)
    cut = truncate(Path(write(tmp_path / "whole.wav", noise(1))), tmp_path / "cut.wav")
    files = [stereo_8k, six_44k, cut]
    with pytest.warns(UserWarning, match="cut.wav' is truncated"):
        assert main(predict(crab, *files, "--text", "hi", "--text", "hi", "--text", "hi")) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == files
    for path, result in zip(files, results):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            waveform, rate = read_audio(path)
        np.testing.assert_allclose(scores(result["scores"]), direct(crab, waveform, "hi", rate), atol=1e-5)


def test_cli_transcripts_file_with_invalid_utf8(crab, tmp_path, capsys):
    write(tmp_path / "a.wav", noise(1))
    tsv = tmp_path / "clips.tsv"
    tsv.write_bytes(b"path\ttext\na.wav\tcaf\xe9\n")  # Latin-1, not UTF-8
    assert main(predict(crab, "--transcripts", str(tsv))) == 1
    assert "clips.tsv:2 is not valid UTF-8" in (err := capsys.readouterr().err) and "save the file as UTF-8" in err


def test_cli_transcripts_file_with_byte_order_mark(crab, tmp_path, capsys):
    write(tmp_path / "a.wav", noise(1))
    tsv = tmp_path / "clips.tsv"
    tsv.write_text("path\ttext\na.wav\tthat is wonderful news\n", encoding="utf-8-sig")  # as Excel saves it
    assert main(predict(crab, "--transcripts", str(tsv))) == 0
    results = json.loads(capsys.readouterr().out)
    assert [Path(r["file"]).name for r in results] == ["a.wav"] and results[0]["text"] == "that is wonderful news"


def test_cli_whitespace_text_is_audio_only(crab, tmp_path, capsys):
    path = write(tmp_path / "a.wav", noise(1))
    with pytest.warns(UserWarning, match="audio-only prediction"):
        assert main(predict(crab, path, "--text", "   ")) == 0
    assert json.loads(capsys.readouterr().out)[0]["text"] == ""


@pytest.mark.parametrize(
    "flag, value, named",
    [
        ("--top-k", "0", "argument --top-k: '0': pass a whole number >= 1"),
        ("--top-k", "1.5", "argument --top-k: '1.5' is not a whole number"),
        ("--batch-size", "-2", "argument --batch-size: '-2': pass a whole number >= 1"),
        ("--chunk-length-s", "-1", "argument --chunk-length-s: '-1': pass seconds >= 0"),
        ("--device", "cuda:99", "--device 'cuda:99': this machine has"),
        ("--device", "gpu0", "--device 'gpu0' is not a device; pass cpu, cuda"),
    ],
)
def test_cli_options_are_checked(crab, tmp_path, capsys, flag, value, named):
    audio = write(tmp_path / "a.wav", noise(0.5))
    with pytest.raises(SystemExit) as stop:
        main(["predict", audio, "--text", "hi", "--model", str(crab[3]), flag, value])
    assert stop.value.code == 2 and named in capsys.readouterr().err


def test_cli_models_that_cannot_load(crab, tmp_path, capsys):
    """Each failure is one line naming --model and the fix; a path that does not exist is not sent to the Hub."""
    _, _, _, checkpoint = crab
    audio = write(tmp_path / "a.wav", noise(0.5))
    truncated = Path(shutil.copytree(checkpoint, tmp_path / "truncated"))
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    pickled = Path(shutil.copytree(checkpoint, tmp_path / "pickled"))
    (pickled / "model.safetensors").unlink()
    torch.save({"weights": Path("not a tensor")}, pickled / "pytorch_model.bin")  # a pickle weights_only refuses
    (tmp_path / "not_an_export").mkdir()
    untokenized = Path(shutil.copytree(checkpoint, tmp_path / "untokenized"))
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (untokenized / name).unlink(missing_ok=True)  # the tokenizer is built with its special tokens alone
    unprocessed = Path(shutil.copytree(checkpoint, tmp_path / "unprocessed"))
    (unprocessed / "processor_config.json").unlink()
    (unprocessed / "modeling_crab.py").unlink()
    cases = [
        (untokenized, 2, "--model '{}' lacks tokenizer.json; copy the whole folder", "export the model again"),
        (unprocessed, 2, "--model '{}' lacks processor_config.json, modeling_crab.py; copy", "<output_dir>/inference"),
        (truncated, 2, "--model '{}': model.safetensors is truncated (", "copy or export the model again"),
        (tmp_path / "gone" / "inference", 2, "--model '{}' is not a folder here", "pass the export folder"),
        (tmp_path / "not_an_export", 2, "--model '{}' has no config.json", "<output_dir>/inference"),
        (
            pickled,
            1,
            "crab: error: '{}/pytorch_model.bin' is a pickle holding Python objects (pathlib",
            "save_pretrained",
        ),
    ]
    for model, code, problem, fix in cases:
        argv = ["predict", audio, "--text", "hi", "--model", str(model)]
        if code == 2:
            with pytest.raises(SystemExit) as stop:
                main(argv)
            assert stop.value.code == 2
        else:
            assert main(argv) == code
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert problem.format(model) in err and fix in err, err
        assert "Traceback" not in err and "weights_only" not in err


OTHER_REPO = "someone/else--"
# (file, where in it a class reference is changed to another repo's): every place a model folder names code to run
REFERENCES = {
    "model class": ("config.json", ["auto_map", "AutoModelForAudioClassification"]),
    "config class": ("config.json", ["auto_map", "AutoConfig"]),
    "pipeline": ("config.json", ["custom_pipelines", "speech-emotion-recognition", "impl"]),
    "processor": ("processor_config.json", ["auto_map", "AutoProcessor"]),
    "feature extractor": ("processor_config.json", ["feature_extractor", "auto_map", "AutoFeatureExtractor"]),
    "tokenizer": ("tokenizer_config.json", ["auto_map", "AutoTokenizer"]),
}


def point_to_another_repo(folder: Path, name: str, keys: list[str]) -> str:
    """Make the reference at `keys` in `folder/name` another repo's code; the reference written."""
    path = folder / name
    settings = json.loads(path.read_text())
    parent = settings
    for key in keys[:-1]:
        parent = parent.setdefault(key, {})
    parent[keys[-1]] = reference = OTHER_REPO + "modeling_crab.CrabForEmotionClassification"
    path.write_text(json.dumps(settings))
    return reference


@pytest.mark.parametrize("where", list(REFERENCES))
def test_cli_model_folder_naming_another_repos_code(crab, tmp_path, capsys, monkeypatch, where):
    """`crab predict` loads with trust_remote_code: a local folder runs only its own .py files. One that names
    another repo's code anywhere is refused before anything is fetched or loaded, naming the file and reference."""
    import transformers

    folder = Path(shutil.copytree(crab[3], tmp_path / "model"))
    name, keys = REFERENCES[where]
    reference = point_to_another_repo(folder, name, keys)
    loaded = []
    monkeypatch.setattr(transformers, "pipeline", lambda *args, **kwargs: loaded.append(args))
    audio = write(tmp_path / "a.wav", noise(0.5))
    assert main(["predict", audio, "--text", "hi", "--model", str(folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"crab: error: --model '{folder}' names code from another repo ({name}: {reference}); a local model folder "
        "runs only its own .py files: put that code in the folder and drop the 'owner/repo--' prefix, or export "
        "the model again (train.py writes <output_dir>/inference)"
    )
    assert loaded == []


def test_cli_hub_model_naming_another_repos_code(crab, tmp_path):
    """A Hub repo (here from the Hub cache, offline) may name its own code as `owner/repo--module.Class`; code from
    another repo is refused before the pipeline fetches or runs it."""
    repo = tmp_path / "hub" / "models--user--crab"
    snapshot = Path(shutil.copytree(crab[3], repo / "snapshots" / ("0" * 40)))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    config = json.loads((snapshot / "config.json").read_text())
    config["auto_map"]["AutoConfig"] = "user/crab--configuration_crab.CrabConfig"  # its own: allowed
    config["auto_map"]["AutoModel"] = "someone/else--modeling_crab.CrabModel"
    (snapshot / "config.json").write_text(json.dumps(config))
    audio = write(tmp_path / "a.wav", noise(0.5))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    done = subprocess.run(
        [sys.executable, "-m", "modeling_crab.cli", "predict", audio, "--text", "hi", "--model", "user/crab"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "crab: error: --model 'user/crab' names code from another repo (config.json: "
        "someone/else--modeling_crab.CrabModel); crab predict runs only the code of the repo it is given; if you "
        "trust the other repo's code, load the model in Python with pipeline(..., trust_remote_code=True)"
    )
    assert not (tmp_path / "modules").exists()  # no code was copied in to be run


def test_cli_names_its_flags_not_python_keywords(crab, tmp_path, capsys):
    audio = write(tmp_path / "a.wav", noise(0.5))
    assert main(predict(crab, audio, "--asr-model", str(tmp_path / "no_such_recognizer"))) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("crab: error:")]
    assert len(errors) == 1 and "pass --text, or --asr-model" in errors[0] and "Traceback" not in err
    assert "text=" not in err and "asr_model=" not in err
