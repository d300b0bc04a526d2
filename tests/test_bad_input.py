"""Bad input, wherever audio or text enters (processor, pipeline, `crab predict`, manifests): each case is either
handled as docs/bad_input.md says (resampled, downmixed, windowed, cropped, truncated) or stopped by an error that
names the input and the fix. Every row of that table is a test here, under the same name.

Rows the manifest code does not handle yet are marked `xfail(strict=True)`: they pass once it does, and then the
marker must go.
"""

from __future__ import annotations

import io
import json
import re
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import LABELS
from transformers import pipeline

from modeling_crab import CrabForEmotionClassification
from modeling_crab.cli import main
from modeling_crab.pipeline_crab import read_audio
from modeling_crab.training.data import ManifestError, load_audio, load_manifest, scan_manifest

SR = 16000


def noise(seconds: float, rate: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    shape = (int(seconds * rate),) if channels == 1 else (int(seconds * rate), channels)
    return (np.random.default_rng(seed).standard_normal(shape) * 0.1).astype(np.float32)


def write(path: Path, samples: np.ndarray, rate: int = SR, subtype: str = "PCM_16") -> str:
    sf.write(str(path), samples, rate, subtype=subtype)
    return str(path)


def truncate(path: Path, out: Path, keep_fraction: float = 0.5) -> str:
    """`out`: `path` cut mid-sample, so the header promises more frames than the file holds."""
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * keep_fraction) | 1])
    return str(out)


def scores(result: list[dict]) -> np.ndarray:
    by_label = {s["label"]: s["score"] for s in result}
    return np.array([by_label[LABELS[i]] for i in range(len(LABELS))])


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # many small forward passes (conftest)


@pytest.fixture(scope="module")
def crab(tiny_export):
    """A tiny random model, its processor (2 s crop, global statistics), a pipeline over them and their export."""
    model, processor, checkpoint = tiny_export
    pipe = pipeline("speech-emotion-recognition", model=model, processor=processor, device="cpu")
    return model, processor, pipe, checkpoint


def direct(crab, audio: np.ndarray, text: str, rate: int) -> np.ndarray:
    """The model's probabilities for one utterance, without the pipeline."""
    model, processor, _, _ = crab
    batch = processor(audio=[audio], text=[text], sampling_rate=rate, max_duration_s=None)
    with torch.no_grad():
        return model(**batch).logits.softmax(-1)[0].numpy()


# ================================================================================================================
# Processor
# ================================================================================================================
def test_processor_rejects_a_path(tiny_processor):
    with pytest.raises(TypeError, match="audio 0 is a path .*speech.wav.*read the file first"):
        tiny_processor(audio="speech.wav", text="hi", sampling_rate=SR)


def test_processor_rejects_empty_audio(tiny_processor):
    with pytest.raises(ValueError, match="audio 1 is empty"):
        tiny_processor(audio=[noise(1), np.zeros(0, np.float32)], text=["a", "b"], sampling_rate=SR)
    with pytest.raises(ValueError, match="audio is an empty list"):
        tiny_processor(audio=[], text=[], sampling_rate=SR)


@pytest.mark.parametrize("normalization", ["utterance", "global", "none"])
@pytest.mark.parametrize("silence", ["float zeros", "int16 zeros", "uint8 midpoint", "constant offset"])
def test_processor_warns_on_silence_and_stays_finite(tiny_processor, tiny_config, normalization, silence):
    audio = {
        "float zeros": np.zeros(SR, np.float32),
        "int16 zeros": np.zeros(SR, np.int16),
        "uint8 midpoint": np.full(SR, 128, np.uint8),  # 8-bit PCM is unsigned: 128 is zero
        "constant offset": np.full(SR, 0.25, np.float32),
    }[silence]
    tiny_processor.normalization = normalization
    with pytest.warns(UserWarning, match="audio 1 is silent"):
        batch = tiny_processor(audio=[noise(1), audio], text=["a", "b"], sampling_rate=SR)
    values = batch["input_values"][1]
    assert torch.isfinite(values).all()
    if normalization == "utterance":  # sqrt(var + 1e-7) keeps 0 / 0 away
        assert values.abs().max() == 0
    with torch.no_grad():
        logits = CrabForEmotionClassification(tiny_config).eval()(**batch).logits
    assert torch.isfinite(logits).all()


def test_processor_keeps_quiet_speech_without_warning(tiny_processor):
    quiet = noise(1) * 1e-2  # about -60 dBFS: quiet, not silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = tiny_processor(audio=quiet, text="hi", sampling_rate=SR)
    variance = quiet.var()  # the released code's epsilon: x / sqrt(var + 1e-7) is a little under unit variance
    assert batch["input_values"].std() == pytest.approx(np.sqrt(variance / (variance + 1e-7)), rel=1e-2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_processor_rejects_nan_and_inf(tiny_processor, bad):
    audio = noise(1)
    audio[100] = bad
    with pytest.raises(ValueError, match="audio 1 contains NaN or infinite samples"):
        tiny_processor(audio=[noise(1), audio], text=["a", "b"], sampling_rate=SR)


@pytest.mark.parametrize("rate", [8000, 44100])
def test_processor_resamples_8k_and_44k(tiny_processor, rate):
    audio = noise(1.5, rate)
    batch = tiny_processor(audio=audio, text="hi", sampling_rate=rate)
    assert batch["input_values"].shape == (1, int(1.5 * SR))


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, float("nan"), "16k"])
def test_processor_rejects_a_bad_sampling_rate(tiny_processor, rate):
    with pytest.raises(ValueError, match=r"audio 0 has sampling_rate=.*pass the audio's rate in Hz"):
        tiny_processor(audio=noise(1), text="hi", sampling_rate=rate)


def test_processor_resamples_an_odd_rate_without_a_huge_table(tiny_processor):
    """44101 Hz reduces to 44101/16000: a polyphase table would take gigabytes; the direct path does not."""
    start = time.perf_counter()
    batch = tiny_processor(audio=noise(2, 44101), text="hi", sampling_rate=44101)
    assert batch["input_values"].shape == (1, 2 * SR)
    assert time.perf_counter() - start < 20


@pytest.mark.parametrize("channels", [2, 6])
@pytest.mark.parametrize("layout", ["samples-first", "channels-first"])
def test_processor_downmixes_stereo_and_6_channels(tiny_processor, channels, layout):
    tiny_processor.normalization = "none"
    multi = noise(1, channels=channels)  # (N, C) as soundfile reads it
    audio = multi if layout == "samples-first" else torch.from_numpy(multi.T.copy())  # (C, N) as torchaudio
    batch = tiny_processor(audio=[audio], text="hi", sampling_rate=SR)
    np.testing.assert_allclose(batch["input_values"][0].numpy(), multi.mean(axis=1), atol=1e-6)


def test_processor_explains_a_bare_multichannel_array(tiny_processor):
    with pytest.raises(ValueError, match=r"read as 16000 waveforms of 2 samples.*pass \[audio\]"):
        tiny_processor(audio=noise(1, channels=2), sampling_rate=SR)
    with pytest.raises(ValueError, match=r"batch of 2 waveforms, so for one multichannel recording pass \[audio\]"):
        tiny_processor(audio=torch.from_numpy(noise(1, channels=2).T.copy()), text="hi", sampling_rate=SR)


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (8000, 2)])
def test_processor_crops_20_minutes_without_copying_them(tiny_processor, rate, channels):
    """20 min of int16 (38 MB; an hour is 57.6 M samples at 16 kHz) -> the first 12 s. Only the input that the kept
    seconds depend on is converted and resampled: the processor's numpy allocations stay near 12 s of float32,
    where one float32 copy of the input alone would be 77 MB."""
    shape = (20 * 60 * rate,) if channels == 1 else (20 * 60 * rate, channels)
    pcm = np.random.default_rng(0).integers(-3000, 3000, shape, dtype=np.int16)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        batch = tiny_processor(audio=[pcm], text="hi", sampling_rate=rate, return_tensors="np")
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert batch["input_values"].shape == (1, 12 * SR)
    assert peak < 16e6, f"{peak / 1e6:.0f} MB allocated to crop 12 s"
    assert seconds < 5
    head = tiny_processor(audio=[pcm[: 13 * rate]], text="hi", sampling_rate=rate, return_tensors="np")
    np.testing.assert_allclose(batch["input_values"], head["input_values"], atol=1e-5)


@pytest.mark.parametrize(
    "setting, value, named",
    [
        ("normalization", "globl", "normalization='globl'; use one of global, utterance, none"),
        ("max_duration_s", 0, "max_duration_s=0; pass a positive number of seconds"),
        ("max_text_length", 1, "max_text_length=1; pass a whole number of tokens >= 2"),
    ],
)
def test_processor_settings_are_checked_when_used(tiny_processor, setting, value, named):
    """Settings assigned after construction (as train.py does) are checked at the next call, not ignored."""
    setattr(tiny_processor, setting, value)
    with pytest.raises(ValueError, match=re.escape(named)):
        tiny_processor(audio=[noise(0.5)], text=["hi"], sampling_rate=SR)
    with pytest.raises(ValueError, match=re.escape(named)):
        type(tiny_processor)(tiny_processor.feature_extractor, tiny_processor.tokenizer, **{setting: value})


@pytest.mark.parametrize("transcript", ["", "   ", "\n\t "])
def test_processor_empty_or_whitespace_transcript_is_audio_only(tiny_processor, transcript):
    batch = tiny_processor(text=[transcript])
    tokenizer = tiny_processor.tokenizer
    assert batch["input_ids"][0].tolist() == [tokenizer.bos_token_id, tokenizer.eos_token_id]


def test_processor_truncates_long_transcripts(tiny_processor):
    long = "that is wonderful news " * 200  # far over 128 tokens
    batch = tiny_processor(text=[long, "hi"], max_text_length=128)
    assert batch["input_ids"].shape == (2, 128)
    assert batch["input_ids"][0, -1] == tiny_processor.tokenizer.eos_token_id
    assert tiny_processor(text=[long])["input_ids"].shape == (1, tiny_processor.max_text_length)


@pytest.mark.parametrize("transcript", [b"hello", b"caf\xe9 \xff"])
def test_processor_rejects_bytes_transcripts(tiny_processor, transcript):
    with pytest.raises(TypeError, match=r"transcript 0 is bytes, not a string; decode it first"):
        tiny_processor(text=transcript)
    with pytest.raises(TypeError, match=r"the transcript of clip-b is bytes.*errors='replace'"):
        tiny_processor(audio=[noise(1)] * 2, text=["ok", transcript], sampling_rate=SR, names=["clip-a", "clip-b"])


# ================================================================================================================
# Pipeline
# ================================================================================================================
def test_pipeline_missing_file(crab):
    with pytest.raises(FileNotFoundError, match="audio file 'missing.wav' does not exist; pass the path"):
        crab[2]("missing.wav", text="hi")


@pytest.mark.parametrize("content", [b"", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"not audio at all" * 10])
def test_pipeline_corrupt_file(crab, tmp_path, content):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="corrupt.wav' could not be decoded .*pass WAV, FLAC or OGG"):
        crab[2](str(path), text="hi")


def test_pipeline_truncated_wav_is_read_up_to_its_last_frame(crab, tmp_path):
    audio = noise(1)
    whole = Path(write(tmp_path / "whole.wav", audio))
    cut = truncate(whole, tmp_path / "cut.wav")
    with pytest.warns(UserWarning, match="cut.wav' is truncated: its header promises 16000 frames but it holds"):
        waveform, rate = read_audio(cut)
    assert rate == SR and 0 < len(waveform) < SR
    np.testing.assert_allclose(waveform, read_audio(whole)[0][: len(waveform)])
    with pytest.warns(UserWarning, match="truncated"):
        result = crab[2](cut, text="hi")
    np.testing.assert_allclose(scores(result), direct(crab, waveform, "hi", SR), atol=1e-5)


def test_pipeline_zero_length_wav(crab, tmp_path):
    path = write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="empty.wav' is 0 ms long; pass at least 25 ms"):
        crab[2](path, text="hi")


def test_pipeline_audio_shorter_than_one_encoder_frame(crab):
    min_samples = crab[2]._min_samples()  # 645 samples for the tiny encoder (400 = 25 ms for WavLM)
    with pytest.raises(ValueError, match=r"audio 0 is 38 ms long, shorter than one frame.*at least 40 ms"):
        crab[2](noise(1)[: min_samples - 40], text="hi")
    assert np.isfinite(scores(crab[2](noise(1)[:min_samples], text="hi"))).all()


def test_pipeline_warns_on_silence(crab, tmp_path):
    path = write(tmp_path / "silent.wav", np.zeros(SR, np.float32))
    with pytest.warns(UserWarning, match="silent.wav' is silent"):
        result = crab[2](path, text="hi")
    assert np.isfinite(scores(result)).all() and scores(result).sum() == pytest.approx(1.0, abs=1e-5)
    long_silence = np.zeros(5 * SR, np.int16)  # several windows: each is named with its time span
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        crab[2](long_silence, text="hi")
    # warned in batch order (longest window first)
    silent = [str(w.message).split(" is silent")[0] for w in caught if "is silent" in str(w.message)]
    assert sorted(silent) == ["audio 0 (0.00-1.67 s)", "audio 0 (1.67-3.33 s)", "audio 0 (3.33-5.00 s)"]


def test_pipeline_rejects_nan_naming_the_file(crab, tmp_path):
    audio = noise(1)
    audio[5000] = np.nan
    path = write(tmp_path / "nan.wav", audio, subtype="FLOAT")
    with pytest.raises(ValueError, match="nan.wav' contains NaN or infinite samples"):
        crab[2](path, text="hi")
    audio[5000] = np.inf
    with pytest.raises(ValueError, match="audio 0 contains NaN or infinite"):
        crab[2]({"raw": audio, "sampling_rate": SR}, text="hi")


@pytest.mark.parametrize("rate", [8000, 44100])
def test_pipeline_resamples_8k_and_44k_files(crab, tmp_path, rate):
    audio = noise(1.2, rate)
    path = write(tmp_path / f"speech_{rate}.wav", audio, rate)
    pcm = sf.read(path, dtype="int16")[0]
    np.testing.assert_allclose(scores(crab[2](path, text="hi")), direct(crab, pcm, "hi", rate), atol=1e-5)


@pytest.mark.parametrize("channels", [2, 6])
def test_pipeline_downmixes_stereo_and_6_channel_files(crab, tmp_path, channels):
    path = write(tmp_path / f"speech_{channels}ch.wav", noise(1, channels=channels))
    waveform, rate = read_audio(path)
    np.testing.assert_allclose(waveform, sf.read(path, dtype="float32")[0].mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(scores(crab[2](path, text="hi")), direct(crab, waveform, "hi", rate), atol=1e-5)


def test_pipeline_windows_20_minutes_with_one_copy(crab, monkeypatch):
    """20 min of int16 at 16 kHz is classified in 100 windows of 12 s. The model is stubbed (the tiny encoder takes
    minutes over 20 min on CPU): what is measured is the pipeline's own work. Its numpy allocations hold one float32
    copy of the recording plus a batch of windows; an hour (57.6 M samples) holds 230 MB the same way."""
    _, _, pipe, _ = crab
    pcm = np.random.default_rng(0).integers(-3000, 3000, 20 * 60 * SR, dtype=np.int16)
    forwarded = []

    def uniform(model_inputs):
        forwarded.append(model_inputs["input_values"].shape)
        return {"probabilities": torch.full((len(model_inputs["input_values"]), 4), 0.25)}

    monkeypatch.setattr(pipe, "_forward", uniform)
    tracemalloc.start()
    try:
        result = pipe(
            {"raw": pcm, "sampling_rate": SR}, text="hi", chunk_length_s=12, batch_size=8, return_windows=True
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(result["windows"]) == 100 and result["windows"][-1]["end"] == 1200.0
    assert all(shape == (8, 12 * SR) for shape in forwarded[:-1])
    recording, window_batch = pcm.size * 4, 8 * 12 * SR * 4
    assert peak < recording + 10 * window_batch, f"{peak / 1e6:.0f} MB for a {recording / 1e6:.0f} MB recording"


@pytest.mark.parametrize("transcript", ["", "  \t "])
def test_pipeline_empty_or_whitespace_transcript_is_audio_only(crab, transcript):
    audio = noise(1)
    with pytest.warns(UserWarning, match="empty transcript asks for audio-only prediction"):
        result = crab[2](audio, text=transcript)
    np.testing.assert_allclose(scores(result), direct(crab, audio, "", SR), atol=1e-5)


def test_pipeline_truncates_long_transcripts(crab):
    audio, long = noise(1), "that is wonderful news " * 200
    ids = crab[1].tokenizer(long, truncation=True, max_length=crab[1].max_text_length)["input_ids"]
    truncated = crab[1].tokenizer.decode(ids[1:-1])  # what the model sees of it: the first 30 tokens
    np.testing.assert_allclose(scores(crab[2](audio, text=long)), direct(crab, audio, truncated, SR), atol=1e-5)


@pytest.mark.parametrize("transcript", [b"hello", b"caf\xe9 \xff"])
def test_pipeline_rejects_bytes_transcripts(crab, transcript):
    with pytest.raises(TypeError, match=r"the transcript of audio 0 is bytes, not a string; decode it first"):
        crab[2](noise(1), text=transcript)


@pytest.mark.parametrize(
    "option, value, named",
    [
        ("top_k", 0, "top_k=0; pass a whole number >= 1"),
        ("top_k", -1, "top_k=-1; pass a whole number >= 1"),
        ("top_k", 1.5, "top_k=1.5; pass a whole number >= 1"),
        ("top_k", True, "top_k=True; pass a whole number >= 1"),
        ("batch_size", 0, "batch_size=0; pass a whole number >= 1"),
        ("chunk_length_s", -2.0, "chunk_length_s=-2.0; pass a window length in seconds"),
        ("chunk_length_s", float("nan"), "chunk_length_s=nan; pass a window length in seconds"),
    ],
)
def test_pipeline_options_are_checked(crab, option, value, named):
    _, _, pipe, _ = crab
    with pytest.raises(ValueError, match=re.escape(named)):
        pipe(noise(0.5), text="hi", **{option: value})


def test_pipeline_empty_batch_gives_no_results(crab):
    assert crab[2]([], text=[]) == []


@pytest.mark.parametrize("rate", [0, -8000, 22050.5])
def test_pipeline_rejects_a_bad_sampling_rate(crab, rate):
    with pytest.raises(ValueError, match=r"audio 0 has sampling_rate=.*pass the audio's rate in Hz"):
        crab[2]({"raw": noise(1), "sampling_rate": rate}, text="hi")


# ================================================================================================================
# crab predict (CLI)
# ================================================================================================================
def predict(crab, *args: str) -> list[str]:
    return ["predict", *args, "--model", str(crab[3]), "--device", "cpu", "--json"]


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
    import shutil

    _, _, _, checkpoint = crab
    audio = write(tmp_path / "a.wav", noise(0.5))
    truncated = Path(shutil.copytree(checkpoint, tmp_path / "truncated"))
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    pickled = Path(shutil.copytree(checkpoint, tmp_path / "pickled"))
    (pickled / "model.safetensors").unlink()
    torch.save({"weights": Path("not a tensor")}, pickled / "pytorch_model.bin")  # a pickle weights_only refuses
    (tmp_path / "not_an_export").mkdir()
    cases = [
        (truncated, 2, "--model '{}': model.safetensors is truncated (", "copy or export the model again"),
        (tmp_path / "gone" / "inference", 2, "--model '{}' is not a folder here", "pass the export folder"),
        (tmp_path / "not_an_export", 2, "--model '{}' has no config.json", "<output_dir>/inference"),
        (pickled, 1, "crab: error: cannot load --model '{}' (", "export it again"),
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
        assert "Traceback" not in err


def test_cli_names_its_flags_not_python_keywords(crab, tmp_path, capsys):
    audio = write(tmp_path / "a.wav", noise(0.5))
    assert main(predict(crab, audio, "--asr-model", str(tmp_path / "no_such_recognizer"))) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("crab: error:")]
    assert len(errors) == 1 and "pass --text, or --asr-model" in errors[0] and "Traceback" not in err
    assert "text=" not in err and "asr_model=" not in err


# ================================================================================================================
# Manifests (modeling_crab.training.data)
# ================================================================================================================
def manifest(tmp_path: Path, rows: list[str], header: str = "id,audio,text,label,split") -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def scan_problems(path: Path, labels=("sad", "happy"), **kwargs) -> str:
    with pytest.raises(ManifestError) as error:
        scan_manifest(load_manifest(path), list(labels), num_workers=1, **kwargs)
    return str(error.value)


def test_manifest_missing_file(tmp_path):
    write(tmp_path / "ok.wav", noise(0.5))
    message = scan_problems(manifest(tmp_path, ["a,ok.wav,hi,sad,train", "b,gone.wav,hi,sad,train"]))
    assert "line 3 (id 'b', split 'train'): audio file '" in message and "gone.wav' not found; fix the path" in message


def test_manifest_corrupt_file(tmp_path):
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
    message = scan_problems(manifest(tmp_path, ["a,zero.wav,hi,sad,train", "b,junk.wav,hi,sad,train"]))
    assert "id 'a'" in message and "zero.wav' is unreadable" in message and "junk.wav' is unreadable" in message


def test_manifest_truncated_wav_is_read_up_to_its_last_frame(tmp_path):
    cut = truncate(Path(write(tmp_path / "whole.wav", noise(1))), tmp_path / "cut.wav")
    scan = scan_manifest(load_manifest(manifest(tmp_path, ["a,cut.wav,hi,sad,train"])), ["sad"], num_workers=1)
    assert 0 < scan.num_samples["a"] < SR and len(load_audio(cut)) == scan.num_samples["a"]


def test_manifest_zero_length_audio(tmp_path):
    write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    assert "line 2 (id 'a', split 'train'): audio '" in (
        message := scan_problems(manifest(tmp_path, ["a,empty.wav,hi,sad,train"]))
    )
    assert "empty.wav' is empty" in message


def test_manifest_warns_on_a_silent_clip(tmp_path):
    write(tmp_path / "ok.wav", noise(0.5))
    write(tmp_path / "silent.wav", np.zeros(SR, np.float32))
    path = manifest(tmp_path, ["a,ok.wav,hi,sad,train", "b,silent.wav,hi,sad,train"])
    with pytest.warns(UserWarning, match="id 'b'.*silent"):
        scan_manifest(load_manifest(path), ["sad"], num_workers=1)


def test_manifest_rejects_all_silent_training_audio(tmp_path):
    write(tmp_path / "silent.wav", np.zeros(SR, np.float32))
    assert "silent" in scan_problems(manifest(tmp_path, ["a,silent.wav,hi,sad,train"]), labels=["sad"])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_manifest_nan_and_inf_audio(tmp_path, bad):
    audio = noise(0.5)
    audio[7] = bad
    write(tmp_path / "bad.wav", audio, subtype="FLOAT")
    assert "bad.wav' contains NaN or infinite samples" in scan_problems(manifest(tmp_path, ["a,bad.wav,hi,sad,train"]))


@pytest.mark.parametrize("rate", [8000, 44100])
def test_manifest_audio_at_8k_and_44k_is_resampled(tmp_path, rate):
    write(tmp_path / "a.wav", noise(1.5, rate), rate)
    scan = scan_manifest(load_manifest(manifest(tmp_path, ["a,a.wav,hi,sad,train"])), ["sad"], num_workers=1)
    assert abs(scan.num_samples["a"] - int(1.5 * SR)) <= 1


@pytest.mark.parametrize("channels", [2, 6])
def test_manifest_stereo_and_6_channel_audio_is_downmixed(tmp_path, channels):
    multi = noise(1, channels=channels)
    write(tmp_path / "a.wav", multi, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "a.wav"), multi.mean(axis=1), atol=1e-6)
    assert scan_manifest(load_manifest(manifest(tmp_path, ["a,a.wav,hi,sad,train"])), ["sad"]).num_samples["a"] == SR


def test_manifest_20_minute_clip_reads_only_the_crop(tmp_path):
    """A 20 min file (38 MB) is read only up to `max_duration_s`: allocations stay near 12 s of audio."""
    pcm = np.random.default_rng(0).integers(-3000, 3000, 20 * 60 * SR, dtype=np.int16)
    write(tmp_path / "long.wav", pcm)
    del pcm
    tracemalloc.start()
    try:
        waveform = load_audio(tmp_path / "long.wav", max_duration_s=12.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(waveform) == 12 * SR and peak < 16e6
    scan = scan_manifest(load_manifest(manifest(tmp_path, ["a,long.wav,hi,sad,train"])), ["sad"], max_duration_s=12.0)
    assert scan.num_samples["a"] == 12 * SR


@pytest.mark.parametrize("transcript", ['""', '"   "'])
def test_manifest_empty_or_whitespace_transcript(tmp_path, transcript):
    write(tmp_path / "a.wav", noise(0.5))
    message = scan_problems(manifest(tmp_path, [f"a,a.wav,{transcript},sad,train"]))
    assert "line 2 (id 'a', split 'train'): empty transcript; write the transcript" in message


def test_manifest_long_transcript_is_truncated_in_batches(tmp_path, tiny_processor):
    from modeling_crab.training import CrabAudioTextDataset, CrabDataCollator

    write(tmp_path / "a.wav", noise(0.5))
    long = "that is wonderful news " * 200
    utterances = load_manifest(manifest(tmp_path, [f"a,a.wav,{long},sad,train"]))
    scan_manifest(utterances, ["sad"], num_workers=1)  # accepted
    batch = CrabDataCollator(tiny_processor)([CrabAudioTextDataset(utterances, {"sad": 0})[0]])
    assert batch["input_ids"].shape == (1, tiny_processor.max_text_length)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_manifest_with_invalid_utf8(tmp_path, suffix):
    write(tmp_path / "a.wav", noise(0.5))
    path = tmp_path / f"manifest.{suffix}"
    if suffix == "csv":
        path.write_bytes(b"audio,text,label\na.wav,caf\xe9,sad\n")
    else:
        path.write_bytes(b'{"audio": "a.wav", "text": "caf\xe9", "label": "sad"}\n')
    with pytest.raises(ManifestError, match=rf"manifest.{suffix}.*(line|record) [12].*UTF-8"):
        load_manifest(path)


def test_manifest_csv_with_byte_order_mark(tmp_path):
    write(tmp_path / "a.wav", noise(0.5))
    path = tmp_path / "manifest.csv"
    path.write_text("audio,text,label\na.wav,hi,sad\n", encoding="utf-8-sig")  # as Excel saves CSV
    assert Path(load_manifest(path)[0].audio).name == "a.wav"


def test_manifest_unknown_and_missing_labels(tmp_path):
    write(tmp_path / "a.wav", noise(0.5))
    rows = ["a,a.wav,hi,furious,train", "b,a.wav,hi,,train", "c,a.wav,hi,,test", "d,a.wav,hi,Sad,dev"]
    message = scan_problems(manifest(tmp_path, rows), labelled_splits=["dev"])
    assert "id 'a', split 'train'): unknown label 'furious' (label set: sad, happy); fix the spelling" in message
    assert "id 'b', split 'train'): empty label in split 'train'; label the row or drop it" in message
    assert "id 'd', split 'dev'): unknown label 'Sad'" in message
    assert "id 'c'" not in message  # an unlabelled split (hidden test labels) may leave labels empty


def test_manifest_duplicate_ids(tmp_path):
    write(tmp_path / "a.wav", noise(0.5))
    message = scan_problems(manifest(tmp_path, ["x,a.wav,hi,sad,train", "x,a.wav,yo,sad,train"]))
    assert "line 2 (id 'x', split 'train'): id 'x' is used by 2 rows; make ids unique" in message
    assert "line 3 (id 'x', split 'train')" in message


def test_manifest_missing_and_misnamed_columns(tmp_path):
    path = manifest(tmp_path, ["a.wav,hi,sad"], header="wav_path,transcript,emotion")
    with pytest.raises(ManifestError) as error:
        load_manifest(path)
    for fix in ("rename column 'wav_path' to 'audio'", "'transcript' to 'text'", "'emotion' to 'label'"):
        assert fix in str(error.value)
    with pytest.raises(ManifestError, match=r"no 'label' column; add it \(the emotion class name\)"):
        load_manifest(manifest(tmp_path, ["a.wav,hi"], header="audio,text"))


def test_manifest_row_with_an_unquoted_comma(tmp_path):
    write(tmp_path / "a.wav", noise(0.5))
    path = manifest(tmp_path, ["a,a.wav,well, i never,sad,train"])  # the transcript's comma is not quoted
    with pytest.raises(ManifestError, match="line 2.*(fields|columns).*quote"):
        scan_manifest(load_manifest(path), ["sad"], num_workers=1)


def test_manifest_quote_that_swallows_the_rows_after_it(tmp_path):
    """An unclosed quote merges the following rows into one field: that row is reported with the lines it
    swallowed, and the rows after a (legitimately) multi-line transcript keep their own line numbers."""
    write(tmp_path / "a.wav", noise(0.5))
    rows = ['a,a.wav,"two lines,\nof transcript",sad,train', "b,gone.wav,hi,sad,train"]
    rows += ['c,a.wav,"i said no,sad,train', "d,a.wav,hi,sad,train", "e,a.wav,yo,happy,train"]
    message = scan_problems(manifest(tmp_path, rows))
    assert "line 4 (id 'b', split 'train'): audio file" in message  # after the two-line row
    assert "line 5 (id 'c'): a quoted field opened on line 5 runs on to line 7" in message
    assert "2 row(s) after it were read as part of this one; close the quote" in message
    assert "line 2" not in message


def test_manifest_row_with_too_few_fields(tmp_path):
    write(tmp_path / "a.wav", noise(0.5))
    message = scan_problems(manifest(tmp_path, ["a,a.wav,hi,sad,train", "b,a.wav,hi"]))
    assert "line 3 (id 'b'): 3 fields but the header has 5 columns; give every column a value" in message


@pytest.mark.parametrize(
    "split, hint",
    [
        ("Train", "split 'Train' looks like 'train' but is not it, so these rows would be left out; rename it"),
        ("validation", "split 'validation' is not 'dev', which has no rows; rename it to 'dev' or pass --eval_split"),
        ("", "empty split; give every row one of"),
    ],
)
def test_manifest_split_names_are_checked(tmp_path, split, hint):
    from modeling_crab.training import select_splits

    rows = ["a,a.wav,hi,sad,train", f"b,a.wav,hi,sad,{split}", "c,a.wav,hi,sad,test2", "d,a.wav,hi,sad,test"]
    rows += ["e,a.wav,hi,sad,dev"] if split != "validation" else []
    utterances = load_manifest(manifest(tmp_path, rows))
    flags = {"train": "--train_split", "eval": "--eval_split", "test": "--test_split"}
    with pytest.raises(ManifestError) as error:
        select_splits(utterances, {"train": "train", "eval": "dev", "test": "test"}, flags)
    assert f"1 row(s) (line 3): {hint}" in str(error.value)

    # another split (test2 next to test) is left out with a warning that names its rows
    utterances = [u for u in utterances if u.id not in ("b", "e")]
    utterances += load_manifest(manifest(tmp_path, ["e,a.wav,hi,sad,dev"]))
    with pytest.warns(
        UserWarning, match=r"belong to splits this run does not use.*\n  1 row\(s\) \(line 4\): split 'test2'"
    ):
        rows = select_splits(utterances, {"train": "train", "eval": "dev", "test": "test"}, flags)
    assert {role: [u.id for u in part] for role, part in rows.items()} == {
        "train": ["a"],
        "eval": ["e"],
        "test": ["d"],
    }


def test_manifest_one_unlabelled_test_row_is_reported(tmp_path):
    """A test split with some labels is evaluated: an unlabelled row among them is a bad row, not a reason to turn
    the whole split into a predictions file."""
    from training_helpers import load_train_script, write_corpus

    path = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1, "test": 1})
    lines = path.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("test_sad_0,"))
    lines[row] = lines[row].replace(",sad,test", ",,test")
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with pytest.raises(
        ManifestError, match=rf"line {row + 1} \(id 'test_sad_0', split 'test'\): empty label in split"
    ):
        load_train_script().main(["--manifest", str(path), "--tiny", "--output_dir", str(out), "--max_steps", "1"])
    assert not list(out.glob("predictions_*.csv")) and not list(out.glob("checkpoint-*"))


@pytest.mark.parametrize("content", ['["a.wav", "hi", "sad"]\n', '[{"audio": "a.wav", "text": "hi", "label": "sad"}]'])
def test_manifest_jsonl_line_that_is_not_an_object(tmp_path, content):
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(ManifestError, match="manifest.json.*(line|record) 1.*object"):
        load_manifest(path)


# ================================================================================================================
# Encoder cache (train.py --encoder_cache)
# ================================================================================================================
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


def test_encoder_cache_for_other_encoders_or_data(encoder_inputs, tmp_path):
    from modeling_crab.training.feature_cache import FeatureCacheError, cache_key, encode_dataset, encoder_fingerprint

    model, collator, items = encoder_inputs
    encoders = encoder_fingerprint(model)
    encode_dataset(model, items, collator, tmp_path, cache_key(encoders, "settings"))
    with pytest.raises(FeatureCacheError, match="written for other encoders, processor settings or utterances"):
        encode_dataset(model, items, collator, tmp_path, cache_key(encoders, "other settings"))
    with torch.no_grad():
        model.crab.text_encoder.encoder.layer[0].output.dense.weight[0, 0] += 1e-3  # any weight change counts
    assert encoder_fingerprint(model) != encoders
    with pytest.raises(FeatureCacheError, match="pass another --encoder_cache folder, or delete this one"):
        encode_dataset(model, items, collator, tmp_path, cache_key(encoder_fingerprint(model), "settings"))


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


# ================================================================================================================
# Implausible audio, datasets audio and labels, odd paths and text
# ================================================================================================================
def wav_with_rate(path: Path, rate: int, seconds: float = 0.5) -> str:
    """A 16 kHz WAV whose header claims `rate` (patched in place: soundfile refuses to write rate 0)."""
    write(path, noise(seconds))
    data = bytearray(path.read_bytes())
    data[24:28] = rate.to_bytes(4, "little")  # fmt chunk: sample rate
    data[28:32] = (rate * 2).to_bytes(4, "little")  # byte rate (mono int16)
    path.write_bytes(bytes(data))
    return str(path)


@pytest.mark.parametrize("rate, hint", [(16, "in Hz: 16000, not 16"), (1, "fix the file's header"), (0, "")])
def test_implausible_sampling_rates_are_refused(crab, tmp_path, capsys, rate, hint):
    _, processor, pipe, _ = crab
    with pytest.raises(ValueError, match=rf"audio 0 has sampling_rate={rate}.*rate in Hz"):
        processor(audio=[noise(0.5)], text=["hi"], sampling_rate=rate)
    path = wav_with_rate(tmp_path / f"rate{rate}.wav", rate)
    with pytest.raises(ValueError, match=rf"audio file '.*rate{rate}.wav' has sampling_rate={rate}") as error:
        pipe(path, text="hi")
    assert hint in str(error.value)
    assert main(predict(crab, path, "--text", "hi")) == 1
    assert f"rate{rate}.wav' has sampling_rate={rate}" in capsys.readouterr().err
    message = scan_problems(manifest(tmp_path, [f"a,rate{rate}.wav,hi,sad,train"]))
    assert f"rate{rate}.wav' has sampling_rate={rate}" in message or "unreadable" in message


@pytest.mark.parametrize("layout", ["numpy", "torch"])
def test_a_2d_array_is_a_batch_everywhere(crab, layout):
    """(B, N) is B recordings for the processor and the pipeline alike; (N, channels) bare is refused by both."""
    model, processor, pipe, _ = crab
    batch = np.stack([noise(0.5, seed=1), noise(0.5, seed=2)])
    audio = torch.from_numpy(batch) if layout == "torch" else batch
    results = pipe(audio, text=["i miss her", "what a great day"])
    assert len(results) == 2
    for row, text, result in zip(batch, ["i miss her", "what a great day"], results):
        np.testing.assert_allclose(scores(result), direct(crab, row, text, SR), atol=1e-5)
    stereo = noise(1.0, channels=2)
    for call in (lambda: processor(audio=stereo, sampling_rate=SR), lambda: pipe(stereo, text=["hi"] * 16000)):
        with pytest.raises(
            ValueError, match=r"shape \(16000, 2\).*for one \(samples, channels\) recording pass \[audio\]"
        ):
            call()


@pytest.mark.parametrize("amplitude", [1e12, 1e20, 1e30])
def test_enormous_amplitudes_never_give_nan_scores(crab, amplitude):
    _, processor, pipe, _ = crab
    audio = noise(0.5) * np.float32(amplitude)
    with pytest.raises(ValueError, match=r"audio 0 has samples up to .*beyond any audio scale.*rescale it"):
        processor(audio=[audio], text=["hi"], sampling_rate=SR)
    with pytest.raises(ValueError, match=r"audio 0 has samples up to"):
        pipe(audio, text="hi")
    loud = noise(0.5) * np.float32(30000.0)  # int16-scaled floats: unusual, but finite scores
    assert np.isfinite(scores(pipe(loud, text="hi"))).all()


def test_datasets_class_label_names_and_order(tmp_path):
    import datasets

    from modeling_crab.training import label_names_from

    names = [f"class{i}" for i in (10, 2, 0, 1, 3, 4, 5, 6, 7, 8, 9)]  # eleven classes, not in sorted order
    path = write(tmp_path / "a.wav", noise(0.5))
    rows = {"audio": [path] * 12, "text": ["hi"] * 12, "label": [*range(11), -1]}
    features = datasets.Features(
        {
            "audio": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=names),
        }
    )
    train = datasets.Dataset.from_dict(rows, features=features)
    corpus = datasets.DatasetDict({"train": train.select(range(11)), "test": train.select([11])})
    utterances = load_manifest(corpus)
    assert [u.label for u in utterances] == [*names, ""]  # names, not '0', '1', ...; -1 is unlabelled
    assert label_names_from(utterances, "train", corpus) == names  # the feature's order
    corpus.save_to_disk(str(tmp_path / "saved"))
    assert label_names_from(load_manifest(tmp_path / "saved"), "train", tmp_path / "saved") == names


def test_datasets_audio_column(crab, tmp_path):
    """`{path, bytes}` and decoded `{array, sampling_rate}` audio are read, in manifests and the pipeline; a bare
    array is reported by its size, never printed."""
    import datasets

    _, _, pipe, _ = crab
    audio = noise(0.5, rate=8000)
    wav = Path(write(tmp_path / "clip.wav", audio, rate=8000)).read_bytes()
    struct = datasets.Features({"path": datasets.Value("string"), "bytes": datasets.Value("binary")})
    embedded = datasets.Dataset.from_dict(
        {"audio": [{"path": "gone/clip.wav", "bytes": wav}], "text": ["hi"], "label": ["sad"], "split": ["train"]},
        features=datasets.Features(
            {
                "audio": struct,
                "text": datasets.Value("string"),
                "label": datasets.Value("string"),
                "split": datasets.Value("string"),
            }
        ),
    ).cast_column("audio", datasets.Audio())
    decoded = datasets.Dataset.from_list(
        [{"audio": {"array": audio, "sampling_rate": 8000}, "text": "hi", "label": "sad", "split": "train", "id": "d"}]
    )
    for dataset in (embedded, decoded):
        utterances = load_manifest(dataset)
        scan = scan_manifest(utterances, ["sad"], num_workers=1)
        assert list(scan.num_samples.values()) == [8000]
        np.testing.assert_allclose(load_audio(utterances[0].audio), load_audio(tmp_path / "clip.wav"), atol=1e-4)
    expected = scores(pipe(str(tmp_path / "clip.wav"), text="hi"))
    np.testing.assert_allclose(scores(pipe({"path": "gone/clip.wav", "bytes": wav}, text="hi")), expected, atol=1e-6)
    np.testing.assert_allclose(scores(pipe({"array": audio, "sampling_rate": 8000}, text="hi")), expected, atol=1e-4)

    bare = datasets.Dataset.from_list([{"audio": noise(1).tolist(), "text": "hi", "label": "sad", "split": "train"}])
    message = scan_problems(bare, labels=["sad"])
    assert "'audio' is a list of 16000 values, not a path" in message and len(message) < 1000


def test_transcript_with_a_lone_surrogate(crab, tmp_path):
    _, processor, pipe, _ = crab
    text = b"caf\xe9".decode("utf-8", errors="surrogateescape")
    with pytest.raises(ValueError, match=r"transcript 0 contains a lone surrogate \('\\udce9' at character 3\)"):
        processor(audio=[noise(0.5)], text=[text], sampling_rate=SR)
    with pytest.raises(ValueError, match=r"the transcript of audio 0 contains a lone surrogate"):
        pipe(noise(0.5), text=text)
    write(tmp_path / "a.wav", noise(0.5))
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"audio": "a.wav", "text": "caf\\udce9", "label": "sad", "split": "train"}\n')
    assert "line 1 (split 'train'): the transcript contains a lone surrogate" in scan_problems(path)


def test_folders_unreadable_files_and_paths_relative_to_the_wrong_folder(crab, tmp_path, capsys, monkeypatch):
    import os

    _, _, pipe, _ = crab
    (tmp_path / "x.wav").mkdir()
    with pytest.raises(IsADirectoryError, match=r"x.wav' is a folder, not an audio file"):
        pipe(str(tmp_path / "x.wav"), text="hi")
    with pytest.raises(SystemExit) as stop:
        main(predict(crab, str(tmp_path / "x.wav"), "--text", "hi"))
    assert stop.value.code == 2 and "x.wav' is a folder, not an audio file" in capsys.readouterr().err

    data = tmp_path / "data"
    (data / "wavs").mkdir(parents=True)
    write(data / "wavs" / "a.wav", noise(0.5))
    (data / "meta").mkdir()
    rows = ["a,wavs/a.wav,hi,sad,train", "b,../../x.wav,hi,sad,train"]
    message = scan_problems(manifest(data / "meta", rows))  # paths written relative to data/, not data/meta/
    assert (
        f"wavs/a.wav' not found; fix the path (relative paths start at the manifest's folder, or at --audio_root; '{data / 'wavs' / 'a.wav'}' exists: pass --audio_root {data})"
        in message
    )
    assert "x.wav' is a folder, not an audio file" in message

    readable = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: "a.wav" not in str(path) and readable(path, mode))
    with pytest.raises(PermissionError, match=r"a.wav' cannot be read \(permission denied\)"):
        pipe(str(data / "wavs" / "a.wav"), text="hi")
    message = scan_problems(manifest(data, ["a,wavs/a.wav,hi,sad,train"]))
    assert "a.wav' cannot be read (permission denied); make it readable" in message


# ================================================================================================================
# Long work: memory and progress
# ================================================================================================================
def test_long_files_are_decoded_downmixed_and_resampled_in_blocks(tmp_path):
    """A 3-minute 48 kHz stereo file: peak allocations stay near the 16 kHz mono result's (whole-file decoding
    held the file's bytes, its float32 samples and the mono copy: over 9 times the result), with the same values as
    resampling the whole downmixed waveform."""
    from modeling_crab.processing_crab import resample

    rate, seconds = 48_000, 180
    stereo = (np.random.default_rng(0).standard_normal((rate * seconds, 2)) * 3000).astype(np.int16)
    for suffix, subtype in ((".wav", "PCM_16"), (".flac", "PCM_16")):
        path = write(tmp_path / f"long{suffix}", stereo, rate, subtype=subtype)
        tracemalloc.start()
        waveform, got_rate = read_audio(path, target_rate=SR)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        result_bytes = SR * seconds * 4
        assert got_rate == SR and waveform.shape == (SR * seconds,)
        assert peak < 1.3 * result_bytes + 8e6, f"{peak / 1e6:.0f} MB for a {result_bytes / 1e6:.0f} MB result"
    expected = resample((stereo.astype(np.float32) / 32768).mean(axis=1), rate, SR)
    np.testing.assert_allclose(waveform, expected, atol=1e-5)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_long_work_shows_progress_on_a_terminal_only(crab, tmp_path, monkeypatch):
    """The manifest scan and long-audio inference show tqdm bars on a terminal, and nothing in logs or pipes."""
    import sys

    _, _, pipe, _ = crab
    write(tmp_path / "a.wav", noise(0.5))
    path = manifest(tmp_path, ["a,a.wav,hi,sad,train", "b,a.wav,hi,sad,train"])
    long_audio = noise(30.0)  # 15 windows of 2 s: 4 forward batches of 4
    for stream, shown in ((io.StringIO(), False), (_Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        scan_manifest(load_manifest(path), ["sad"], num_workers=1)
        pipe(long_audio, text="hi", batch_size=4)
        monkeypatch.undo()
        output = stream.getvalue()
        assert ("checking the manifest" in output and "classifying windows" in output) == shown, output
        assert shown or output == ""


# ================================================================================================================
# Checkpoints that keep working
# ================================================================================================================
RESAVE_AND_PUSH = """
import shutil, sys
import numpy as np
import transformers.utils.hub as hub
from transformers import AutoModelForAudioClassification, AutoProcessor, pipeline

source, resaved, pushed = sys.argv[1:4]
model = AutoModelForAudioClassification.from_pretrained(source, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
model.save_pretrained(resaved)
processor.save_pretrained(resaved)


class Repo:  # push_to_hub, offline: the folder it would upload is copied to `pushed`
    repo_id = "user/crab"


hub.hf_api = lambda: type("Api", (), {"create_repo": lambda self, *a, **k: Repo()})()
hub.create_and_tag_model_card = lambda *a, **k: type("Card", (), {"save": lambda self, path: None})()
hub.PushToHubMixin._upload_modified_files = lambda self, folder, *a, **k: shutil.copytree(
    folder, pushed, dirs_exist_ok=True
)
model.push_to_hub("user/crab")
processor.push_to_hub("user/crab")

audio = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
scores = {}
for name, folder in (("source", source), ("resaved", resaved), ("pushed", pushed)):
    pipe = pipeline("speech-emotion-recognition", model=folder, trust_remote_code=True, device="cpu")
    scores[name] = {s["label"]: s["score"] for s in pipe(audio, text="i miss her")}
try:
    pipeline("audio-classification", model=source, trust_remote_code=True, device="cpu")(audio)
    generic = "worked"
except ValueError as error:
    generic = str(error)
import json
json.dump({"scores": scores, "generic": generic}, open(OUT, "w"))
"""


def test_checkpoint_saved_again_or_pushed_keeps_working(crab, tmp_path):
    """Loaded with trust_remote_code where the package is not installed, then saved again and pushed: both keep
    the pipeline code, and classify like the original; the generic audio-classification pipeline names the task
    and text=."""
    from hub_user import run_as_hub_user

    _, _, _, checkpoint = crab
    resaved, pushed = tmp_path / "resaved", tmp_path / "pushed"
    result = run_as_hub_user(RESAVE_AND_PUSH, tmp_path, checkpoint, resaved, pushed)
    for folder in (resaved, pushed):
        assert (folder / "pipeline_crab.py").is_file() and (folder / "processing_crab.py").is_file()
        config = json.loads((folder / "config.json").read_text())
        assert "speech-emotion-recognition" in config["custom_pipelines"]
    for name in ("resaved", "pushed"):
        assert result["scores"][name] == pytest.approx(result["scores"]["source"], abs=1e-6)
    assert "pipeline('speech-emotion-recognition'" in result["generic"] and "text=" in result["generic"]


def test_model_called_without_a_transcript(crab):
    model, processor, _, _ = crab
    batch = processor(audio=[noise(0.5)], sampling_rate=SR)
    with pytest.raises(ValueError, match=r"no input_ids.*speech-emotion-recognition.*text="):
        model(input_values=batch["input_values"], attention_mask=batch["attention_mask"])


def test_train_output_folder_loads_with_the_pipeline_and_the_cli(resumable_run, tmp_path, capsys):
    """train.py's top-level output folder (what --push_to_hub uploads) is a whole checkpoint too."""
    _, run = resumable_run
    pipe = pipeline("speech-emotion-recognition", model=str(run), trust_remote_code=True, device="cpu")
    assert len(pipe(noise(0.5), text="i miss her")) == 4
    audio = write(tmp_path / "a.wav", noise(0.5))
    assert main(["predict", audio, "--text", "i miss her", "--model", str(run), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["scores"]) == 4


# ================================================================================================================
# train.py arguments
# ================================================================================================================
@pytest.mark.parametrize(
    "argv, named",
    [
        (["--normalization", "globl"], "--normalization 'globl' is not one of global, utterance, none"),
        (["--unimodal_tap", "post"], "--unimodal_tap: invalid choice: 'post'"),  # argparse's choices
        ({"unimodal_tap": "post"}, "--unimodal_tap 'post' is not one of pre_gru, post_gru"),  # a file meets no choices
        ({"text_padding": "max"}, "--text_padding 'max' is not one of longest, max_length"),
        (["--mlcs_taps", "fusion", "fuson"], "--mlcs_taps ['fusion', 'fuson']: pass one or more of"),
        (["--max_duration_s", "0"], "--max_duration_s 0.0: pass a positive number of seconds"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0: pass a whole number >= 1"),
        (["--mlcs_temperature", "-1"], "--mlcs_temperature -1.0: pass a positive number"),
        ({"normalization": "Global"}, "--normalization 'Global' is not one of"),  # from a config file
    ],
)
def test_train_arguments_are_checked_where_parsed(tmp_path, capsys, argv, named):
    from training_helpers import load_train_script

    if isinstance(argv, dict):
        config = tmp_path / "run.json"
        config.write_text(json.dumps({"manifest": "m.csv", **argv}))
        argv = [str(config)]
    else:
        argv = ["--manifest", "m.csv", *argv]
    with pytest.raises(SystemExit) as stop:
        load_train_script().parse_arguments(argv)
    assert stop.value.code == 2 and named in capsys.readouterr().err


# ================================================================================================================
# Training runs (train.py): resuming and interrupted saves
# ================================================================================================================
def _run_argv(manifest, out, *extra) -> list[str]:
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(out), "--max_steps", "4"]
    argv += ["--save_strategy", "steps", "--save_steps", "1", "--eval_strategy", "no"]
    argv += ["--load_best_model_at_end", "False", "--max_duration_s", "0.5", "--disable_tqdm", "True"]
    argv += ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--save_total_limit", "5"]
    return argv + list(extra)


@pytest.fixture(scope="module")
def resumable_run(tmp_path_factory):
    """A manifest and a finished 4-step run that saved a checkpoint at every step."""
    from training_helpers import load_train_script, write_corpus

    root = tmp_path_factory.mktemp("resumable")
    manifest = write_corpus(root / "corpus", {"train": 1, "dev": 1})
    load_train_script().main(_run_argv(manifest, root / "run"))
    return manifest, root / "run"


@pytest.mark.parametrize(
    "change, named",
    [
        (
            ["--labels", "sad,neutral,happy,angry"],
            r"labels .*\['angry', 'happy', 'neutral', 'sad'\].*\['sad', 'neutral'",
        ),
        (["--labels", "angry,happy,neutral,sad,calm"], r"labels .*'sad'\], this run has \[.*'calm'\]"),
        (["--mlcs_weight", "0"], r"CSL legs .*checkpoint has True, this run has False"),
        (["--mask_padding", "false"], r"--mask_padding: the checkpoint has True, this run has False"),
        (["--mlcs_taps", "fusion"], r"--mlcs_taps: the checkpoint has \[.*\], this run has \['fusion'\]"),
        (["--freeze_feature_encoder", "true"], r"trainable parameters .*encoders: \d+.*this run has .*encoders: \d+"),
        (["--normalization", "utterance"], r"--normalization: the checkpoint has 'global', this run has 'utterance'"),
    ],
)
def test_resume_of_a_run_that_means_something_else(resumable_run, tmp_path, change, named):
    from training_helpers import load_train_script

    from modeling_crab.training.checkpoints import CheckpointError

    manifest, run = resumable_run
    checkpoint = run / "checkpoint-2"
    out = tmp_path / "resumed"
    with pytest.raises(CheckpointError, match=named) as error:
        load_train_script().main(_run_argv(manifest, out, "--resume_from_checkpoint", str(checkpoint), *change))
    assert f"--resume_from_checkpoint '{checkpoint}' was trained for something else" in str(error.value)
    assert not out.exists() or not list(out.glob("checkpoint-*"))  # refused before the first step


def test_resume_after_an_interrupted_save(resumable_run, tmp_path, monkeypatch, caplog):
    """A run killed while writing checkpoint-3 leaves no checkpoint-3; a broken checkpoint-3 as older versions left
    it (weights cut short) is skipped with a warning; `--resume_from_checkpoint last` resumes from checkpoint-2 and
    ends with the uninterrupted run's weights."""
    import shutil

    from safetensors.torch import load_file
    from training_helpers import load_train_script

    from modeling_crab.training import CrabTrainer

    manifest, uninterrupted = resumable_run
    out = tmp_path / "run"
    save_rng_state = CrabTrainer._save_rng_state

    def killed_at_step_3(self, output_dir):
        if self.state.global_step == 3:
            raise KeyboardInterrupt  # the kill, halfway through writing checkpoint-3
        save_rng_state(self, output_dir)

    monkeypatch.setattr(CrabTrainer, "_save_rng_state", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        load_train_script().main(_run_argv(manifest, out))
    monkeypatch.undo()
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]

    shutil.copytree(out / "checkpoint-2", out / "checkpoint-3")  # what a kill left before checkpoints were staged
    weights = out / "checkpoint-3" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with caplog.at_level("WARNING"):
        load_train_script().main(_run_argv(manifest, out, "--resume_from_checkpoint", "last"))
    assert "skipping the incomplete checkpoint" in caplog.text and "model.safetensors is truncated" in caplog.text
    expected, resumed = load_file(uninterrupted / "model.safetensors"), load_file(out / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=0)


def test_best_checkpoint_and_its_metrics_survive_rotation_and_kills(tmp_path, monkeypatch):
    """With save_total_limit=1 the best checkpoint stays next to the newest, its trainer_state.json holding its
    metrics; a kill during a later save touches neither."""
    from training_helpers import load_train_script, write_corpus

    from modeling_crab.training import CrabTrainer
    from modeling_crab.training.checkpoints import checkpoint_problem

    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    out = tmp_path / "run"
    argv = _run_argv(manifest, out, "--save_total_limit", "1", "--eval_strategy", "steps", "--eval_steps", "1")
    argv += ["--metric_for_best_model", "loss", "--greater_is_better", "False"]
    save_rng_state = CrabTrainer._save_rng_state

    def killed_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise KeyboardInterrupt
        save_rng_state(self, output_dir)

    monkeypatch.setattr(CrabTrainer, "_save_rng_state", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        load_train_script().main(argv)
    kept = sorted(out.glob("checkpoint-*"))
    assert 1 <= len(kept) <= 2 and all(checkpoint_problem(path) is None for path in kept)
    state = json.loads((kept[-1] / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"])
    assert best.parent == out and best.is_dir() and checkpoint_problem(best) is None
    best_state = json.loads((best / "trainer_state.json").read_text())
    assert any("eval_loss" in entry for entry in best_state["log_history"])


def test_every_row_of_the_table_is_a_test_here():
    import re

    table = (Path(__file__).resolve().parents[1] / "docs" / "bad_input.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| input")]
    named = [re.findall(r"`(test_\w+)`", row) for row in rows]
    assert all(len(names) == 1 for names in named), [row for row, names in zip(rows, named) if len(names) != 1]
    documented = {names[0] for names in named}
    defined = {
        name for name in globals() if name.startswith("test_") and name != "test_every_row_of_the_table_is_a_test_here"
    }
    assert documented == defined, (documented - defined, defined - documented)
