"""Bad input to the waveform augmentation and SpecAugment flags: each case is stopped, before training, by an error
that names the input and the fix, as docs/bad_input.md says. Every test here is a row of that table, under the same
name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from training_helpers import train_main, write_corpus, write_tone

from modeling_crab.training.arguments import parse_arguments
from modeling_crab.training.augment import AugmentationError, WaveformAugmentation

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def _parse_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        parse_arguments(["--manifest", "m.csv", *argv])
    assert stop.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--noise_prob", "1.5"], "--noise_prob 1.5: pass a probability in [0, 1]"),
        (["--pitch_prob", "-0.1"], "--pitch_prob -0.1: pass a probability in [0, 1]"),
        (["--pitch_semitones", "3", "-3"], "--pitch_semitones [3.0, -3.0]: pass LOW HIGH with -12.0 <= LOW <= HIGH"),
        (["--pitch_semitones", "-24", "0"], "--pitch_semitones [-24.0, 0.0]: pass LOW HIGH with"),
        (["--speed_factors", "0.9", "0"], "--speed_factors [0.9, 0.0]: pass factors in [0.5, 2.0]"),
        (["--noise_snr_db", "20", "5"], "--noise_snr_db [20.0, 5.0]: pass LOW HIGH with"),
        (["--noise_types", "grey"], "--noise_types ['grey']: pass one or more of white, pink, brown"),
        (["--gain_db", "-3"], "--gain_db -3.0: pass a number of dB in [0, 40]"),
        (["--reverb_rt60_s", "0.5"], "--reverb_rt60_s [0.5]: pass LOW HIGH"),
        (["--mask_time_prob", "2"], "--mask_time_prob 2.0: pass a probability in [0, 1]"),
        (["--mask_time_length", "0"], "--mask_time_length 0: pass a whole number of frames >= 1"),
    ],
)
def test_augmentation_flags_are_checked_where_parsed(capsys, argv, named):
    assert named in _parse_error(argv, capsys)


def test_noise_dir_missing_empty_or_a_file(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    err = _parse_error(["--noise_prob", "0.5", "--noise_dir", str(missing)], capsys)
    assert f"--noise_dir '{missing}' does not exist; pass a folder of noise recordings" in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("not audio")
    err = _parse_error(["--noise_prob", "0.5", "--noise_dir", str(tmp_path / "empty")], capsys)
    assert f"--noise_dir '{tmp_path / 'empty'}' holds no audio files (.wav, .flac, .ogg, .opus, .mp3)" in err
    write_tone(tmp_path / "one.wav", 100.0, 0.2)
    err = _parse_error(["--noise_prob", "0.5", "--noise_dir", str(tmp_path / "one.wav")], capsys)
    assert "is a file, not a folder; pass the folder that holds it" in err
    with pytest.raises(AugmentationError, match="does not exist"):  # the same check in Python
        WaveformAugmentation(noise_prob=0.5, noise_dir=str(missing))


@pytest.mark.parametrize("problem", ["unreadable", "silent"])
def test_noise_file_unreadable_or_silent_stops_before_training(tmp_path, problem):
    noise_dir = tmp_path / "noise"
    write_tone(noise_dir / "good.wav", 100.0, 0.2)
    bad = noise_dir / "bad.wav"
    if problem == "unreadable":
        bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    else:
        sf.write(str(bad), np.zeros(1600, np.float32), 16000)
    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    out = tmp_path / "run"
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(out), "--max_steps", "1"]
    argv += ["--disable_tqdm", "True", "--noise_prob", "0.5", "--noise_dir", str(noise_dir)]
    with pytest.raises(AugmentationError, match=f"noise file '{bad}' is {problem}") as error:
        train_main(argv)
    assert "--noise_dir" in str(error.value)  # the fix: remove it from the folder, or convert it
    assert not list(out.glob("checkpoint-*"))


def test_waveform_augmentation_with_the_encoder_cache(tmp_path, capsys):
    err = _parse_error(["--encoder_cache", str(tmp_path / "cache"), "--speed_factors", "0.9", "1.1"], capsys)
    assert "--encoder_cache trains on encoder outputs cached once per clip, which waveform augmentation cannot " in err
    assert "drop --encoder_cache, or the augmentation flags" in err
    # SpecAugment flags are no waveform augmentation: allowed (the frozen encoders run in eval mode, unmasked)
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"manifest": "m.csv", "encoder_cache": "c", "mask_time_prob": 0.1}))
    parse_arguments([str(config)])
