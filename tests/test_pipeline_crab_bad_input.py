"""Bad input to the pipeline: each case is handled as docs/bad_input.md says or stopped by an error that names the
input and the fix. Every test here is a row of that table, under the same name."""

from __future__ import annotations

import io
import re
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from bad_input import SR, direct, manifest, noise, predict, scan_problems, scores, truncate, write

from modeling_crab.audio import read_audio
from modeling_crab.cli import main
from modeling_crab.manifest import load_manifest
from modeling_crab.training.data import load_audio, scan_manifest

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # many small forward passes (conftest)


# ---- Pipeline
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


@pytest.mark.parametrize("transcript", ["", "  \t ", "\u200b", "\ufeff \u200d\u2060"])  # invisible: no words
def test_pipeline_empty_or_whitespace_transcript_is_audio_only(crab, transcript):
    audio = noise(1)
    with pytest.warns(UserWarning, match="empty transcript asks for audio-only prediction"):
        result = crab[2](audio, text=transcript)
    np.testing.assert_allclose(scores(result), direct(crab, audio, "", SR), atol=1e-5)


def test_pipeline_truncates_long_transcripts(crab):
    audio, long = noise(1), "that is wonderful news " * 200
    ids = crab[1].tokenizer(long, truncation=True, max_length=crab[1].max_text_length)["input_ids"]
    truncated = crab[1].tokenizer.decode(ids[1:-1])  # what the model sees of it: the first 30 tokens
    length = len(crab[1].tokenizer(long.strip(), verbose=False)["input_ids"])  # stripped, as in training
    assert crab[1].transcript_lengths([long, " ", truncated]) == [length, 2, len(ids)]
    cut = rf"the transcript of audio 0 is {length} tokens, and the model reads only its first {len(ids)} \(the "
    with pytest.warns(UserWarning, match=cut + r"processor's max_text_length, as in training\)\. Pass each clip"):
        result = crab[2](audio, text=long)
    np.testing.assert_allclose(scores(result), direct(crab, audio, truncated, SR), atol=1e-5)
    with pytest.warns(UserWarning, match=r"; each of its 3 windows gets those same tokens\. Pass each clip") as caught:
        crab[2](noise(2.5), text=long, chunk_length_s=1.0)
    assert len([w for w in caught if "tokens, and the model reads" in str(w.message)]) == 1  # once per recording
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crab[2](audio, text=truncated)  # a transcript within the limit: no warning


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


# ---- Implausible audio, datasets audio and labels, odd paths and text
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
    hot = noise(0.5) * np.float32(200.0 / np.abs(noise(0.5)).max())  # 46 dB over full scale: finite scores
    assert np.isfinite(scores(pipe(hot, text="hi"))).all()


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


# ---- Long work: memory and progress
def test_long_files_are_decoded_downmixed_and_resampled_in_blocks(tmp_path):
    """A 3-minute 48 kHz stereo file: peak allocations stay near the 16 kHz mono result's (whole-file decoding
    held the file's bytes, its float32 samples and the mono copy: over 9 times the result), with the same values as
    resampling the whole downmixed waveform."""
    from modeling_crab.audio import resample

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


def test_pipeline_model_folder_without_its_tokenizer_vocabulary(crab, tmp_path):
    """Without tokenizer.json the processor's tokenizer is built from its special tokens alone and would read every
    transcript as empty: the pipeline refuses it."""
    import shutil

    from transformers import pipeline

    folder = Path(shutil.copytree(crab[3], tmp_path / "untokenized"))
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(
        ValueError,
        match=r"the model's tokenizer has no vocabulary \(only its \d+ special tokens\), so "
        r"every transcript would be read as empty: the model folder lacks tokenizer.json",
    ):
        pipeline("speech-emotion-recognition", model=str(folder), trust_remote_code=True)


def test_pipeline_reads_every_input_type_as_meant(crab, tmp_path):
    """What users of transformers' audio pipelines pass is read as they mean it: the bytes of a WAV file as bytes,
    bytearray, memoryview, BytesIO or an open file (never as 8-bit samples); a (waveform, sampling rate) pair as
    torchaudio.load and librosa.load return it; a list of numpy scalars as one waveform; a generator as a batch; one
    transcript in a list for one recording. What cannot be read is refused naming the type and the fix."""
    _, processor, pipe, _ = crab
    audio = noise(1.0, rate=8000)
    path = write(tmp_path / "a.wav", audio, rate=8000)
    data = Path(path).read_bytes()
    expected = scores(pipe(path, text="hi"))
    with open(path, "rb") as handle:
        as_bytes = [data, bytearray(data), memoryview(data), io.BytesIO(data), handle]
        for given in as_bytes:
            np.testing.assert_allclose(
                scores(pipe(given, text="hi")), expected, atol=1e-5, err_msg=type(given).__name__
            )
    waveform = read_audio(path)[0]
    pair = scores(pipe((waveform, 8000), text="hi"))
    np.testing.assert_allclose(pair, scores(pipe({"raw": waveform, "sampling_rate": 8000}, text="hi")), atol=1e-6)
    np.testing.assert_allclose(scores(pipe((torch.from_numpy(waveform)[None], 8000), text="hi")), pair, atol=1e-5)
    at_16k = noise(0.5)
    np.testing.assert_allclose(
        scores(pipe([np.float32(x) for x in at_16k], text="hi")), scores(pipe(at_16k, text="hi")), atol=1e-6
    )
    batch = pipe((p for p in [path, path]), text=["hi", "hi"])
    assert len(batch) == 2 and all(np.allclose(scores(answer), expected, atol=1e-5) for answer in batch)
    np.testing.assert_allclose(scores(pipe(path, text=["hi"])), expected, atol=1e-6)

    with open(path, encoding="latin-1") as text_mode:
        with pytest.raises(TypeError, match=r"opened in text mode; open it with open\(path, 'rb'\)"):
            pipe(text_mode, text="hi")
    for given in (bytearray(data), memoryview(data)):
        with pytest.raises(TypeError, match=rf"audio 0 is {type(given).__name__}, the bytes of an audio file"):
            processor(audio=[given], text=["hi"], sampling_rate=SR)
    with pytest.raises(ValueError, match=r"got 2 audio input\(s\) but 1 transcripts"):
        pipe([path, path], text=["hi"])
