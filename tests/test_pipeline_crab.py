"""The `speech-emotion-recognition` pipeline travels with an export and works where this package is not installed:
files, arrays at any rate, batches, long audio in windows, and speech without a transcript (tiny random Whisper)."""

from __future__ import annotations

import io
import json
import warnings
import wave

import numpy as np
import pytest
import soundfile
import torch
from conftest import CROP_S, LABELS
from hub_user import run_as_hub_user
from tiny_whisper import build_tiny_whisper
from transformers import pipeline

from modeling_crab.audio import read_audio
from modeling_crab.pipeline_crab import window_bounds


def write_wav(path, samples: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> None:
    """Integer PCM WAV from float samples in [-1, 1) (interleaved when `channels` > 1)."""
    scale = 2 ** (8 * width - 1)
    ints = np.clip(np.round(samples * scale), -scale, scale - 1).astype(np.int64)
    if width == 1:
        data = (ints + 128).astype(np.uint8).tobytes()
    elif width == 3:
        data = ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        data = ints.astype({2: "<i2", 4: "<i4"}[width]).tobytes()
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(data)


@pytest.fixture(scope="module")
def crab(tiny_export):
    """A tiny random Crab model, its processor (2 s crop) and its inference export (conftest)."""
    return tiny_export


def probabilities(model, processor, audio, text: str, sampling_rate: int) -> np.ndarray:
    """What the model says about one utterance, computed directly (no pipeline, no cropping)."""
    batch = processor(audio=[audio], text=[text], sampling_rate=sampling_rate, max_duration_s=None)
    with torch.no_grad():
        return model(**batch).logits.softmax(-1)[0].numpy()


def as_array(scores: list[dict]) -> np.ndarray:
    """Label-sorted [{"label", "score"}] -> probabilities in label-id order."""
    by_label = {s["label"]: s["score"] for s in scores}
    return np.array([by_label[LABELS[i]] for i in range(len(LABELS))])


HUB_USER_CALLS = """
import json, sys, numpy as np
from transformers import pipeline
checkpoint, inputs = sys.argv[1:3]
data = np.load(inputs)
pipe = pipeline("speech-emotion-recognition", model=checkpoint, trust_remote_code=True, device="cpu")
raw = {"raw": data["raw"], "sampling_rate": 22050}
results = {
    "class": type(pipe).__name__,
    "file": pipe("speech_8k.wav", text="that is wonderful news"),
    "raw": pipe(raw, text="i miss her so much", top_k=2),
    "array": pipe(data["array"], text="i miss her so much"),
    "batch": pipe(["speech_8k.wav", raw], text=["that is wonderful news", "i miss her so much"], batch_size=2),
    "long": pipe(data["long"], text="we talked about it yesterday", return_windows=True),
    "long_aggregate": pipe(data["long"], text="we talked about it yesterday"),
    "whole": pipe(data["long"], text="we talked about it yesterday", chunk_length_s=0, return_windows=True),
}
json.dump(results, open(OUT, "w"))
"""


@pytest.fixture(scope="module")
def hub_user_results(crab, tmp_path_factory):
    work = tmp_path_factory.mktemp("hub_user")
    rng = np.random.default_rng(0)
    speech_8k = rng.uniform(-0.5, 0.5, 12000)  # 1.5 s at 8 kHz
    write_wav(work / "speech_8k.wav", speech_8k, 8000)
    inputs = {
        "raw": rng.standard_normal(26460).astype(np.float32) * 0.1,  # 1.2 s at 22.05 kHz
        "array": rng.standard_normal(16000).astype(np.float32) * 0.1,  # 1 s at 16 kHz
        "long": rng.standard_normal(80000).astype(np.float32) * 0.1,  # 5 s at 16 kHz: three windows
    }
    np.savez(work / "inputs.npz", **inputs)
    results = run_as_hub_user(HUB_USER_CALLS, work, crab[2], work / "inputs.npz")
    pcm = np.round(speech_8k * 32768).clip(-32768, 32767).astype(np.int16)
    return results, inputs, pcm


def test_pipeline_travels_with_the_export(crab, hub_user_results):
    results, _, _ = hub_user_results
    config = json.loads((crab[2] / "config.json").read_text())
    assert config["custom_pipelines"]["speech-emotion-recognition"]["impl"] == "pipeline_crab.CrabEmotionPipeline"
    assert (crab[2] / "pipeline_crab.py").is_file()
    assert results["class"] == "CrabEmotionPipeline"


def test_file_input_matches_the_model(crab, hub_user_results):
    model, processor, _ = crab
    results, _, pcm = hub_user_results
    scores = results["file"]
    assert [s["score"] for s in scores] == sorted((s["score"] for s in scores), reverse=True)
    assert {s["label"] for s in scores} == set(LABELS.values())
    assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-5)
    expected = probabilities(model, processor, pcm, "that is wonderful news", 8000)
    np.testing.assert_allclose(as_array(scores), expected, atol=1e-5)


def test_raw_array_at_another_rate_is_resampled(crab, hub_user_results):
    model, processor, _ = crab
    results, inputs, _ = hub_user_results
    top2 = results["raw"]
    assert len(top2) == 2
    expected = probabilities(model, processor, inputs["raw"], "i miss her so much", 22050)
    assert top2[0]["label"] == LABELS[int(expected.argmax())]
    assert top2[0]["score"] == pytest.approx(float(expected.max()), abs=1e-5)
    expected_16k = probabilities(model, processor, inputs["array"], "i miss her so much", 16000)
    np.testing.assert_allclose(as_array(results["array"]), expected_16k, atol=1e-5)


def test_batch_equals_one_by_one(hub_user_results):
    results, _, _ = hub_user_results
    batch = results["batch"]
    assert len(batch) == 2
    np.testing.assert_allclose(as_array(batch[0]), as_array(results["file"]), atol=1e-5)
    assert [s["label"] for s in batch[1][:2]] == [s["label"] for s in results["raw"]]


def test_batches_are_length_sorted_and_answers_come_back_in_input_order(crab):
    """The pipeline batches windows longest first (little padding); each answer is still its own input's."""
    model, processor, _ = crab
    pipe = pipeline("speech-emotion-recognition", model=model, processor=processor, device="cpu")
    rng = np.random.default_rng(5)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (4000, 30000, 9000, 20000, 6000)]
    texts = ["i miss her so much", "that is wonderful news", "we talked about it yesterday", "", "i am going"]
    seen_lengths = []
    hook = model.register_forward_hook(
        lambda module, args, kwargs, out: seen_lengths.append(kwargs["input_values"].shape[1]), with_kwargs=True
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the empty transcript's audio-only warning
            batched = pipe(clips, text=texts, batch_size=2, chunk_length_s=0)
    finally:
        hook.remove()
    assert seen_lengths == [30000, 9000, 4000]  # (30000, 20000), (9000, 6000), (4000,)
    for clip, text, scores in zip(clips, texts, batched):
        np.testing.assert_allclose(as_array(scores), probabilities(model, processor, clip, text, 16000), atol=1e-5)


def test_bf16_precision_stays_close_to_fp32(crab):
    model, processor, _ = crab
    pipe = pipeline("speech-emotion-recognition", model=model, processor=processor, device="cpu")
    audio = np.random.default_rng(7).standard_normal(24000).astype(np.float32) * 0.1
    exact = as_array(pipe(audio, text="that is wonderful news"))
    low = as_array(pipe(audio, text="that is wonderful news", precision="bf16"))
    np.testing.assert_allclose(
        exact, probabilities(model, processor, audio, "that is wonderful news", 16000), atol=1e-5
    )
    assert not np.array_equal(low, exact) and np.abs(low - exact).max() < 1e-2  # bf16 did run, and stayed close
    built_bf16 = pipeline(
        "speech-emotion-recognition", model=model, processor=processor, device="cpu", precision="bf16"
    )
    np.testing.assert_array_equal(as_array(built_bf16(audio, text="that is wonderful news")), low)
    with pytest.raises(ValueError, match="precision='fp16'"):
        pipe(audio, text="hi", precision="fp16")


def test_long_audio_is_classified_in_windows(crab, hub_user_results):
    model, processor, _ = crab
    results, inputs, _ = hub_user_results
    long = results["long"]
    spans = [(w["start"], w["end"]) for w in long["windows"]]
    assert spans == [(0.0, 1.667), (1.667, 3.333), (3.333, 5.0)]  # equal windows of at most the 2 s crop
    for window, (start, end) in zip(long["windows"], window_bounds(80000, int(CROP_S * 16000))):
        expected = probabilities(model, processor, inputs["long"][start:end], "we talked about it yesterday", 16000)
        np.testing.assert_allclose(as_array(window["scores"]), expected, atol=1e-5)
    durations = np.array([end - start for start, end in spans])
    weighted = sum(d * as_array(w["scores"]) for d, w in zip(durations, long["windows"])) / durations.sum()
    np.testing.assert_allclose(as_array(long["aggregate"]), weighted, atol=1e-4)
    assert long["aggregate"] == results["long_aggregate"]
    assert long["text"] == "we talked about it yesterday"
    whole = results["whole"]  # chunk_length_s=0: one pass over the whole recording, no truncation
    assert [(w["start"], w["end"]) for w in whole["windows"]] == [(0.0, 5.0)]


def test_window_bounds_never_leave_a_short_tail():
    assert window_bounds(100, 40) == [(0, 33), (33, 67), (67, 100)]
    assert window_bounds(40, 40) == [(0, 40)]
    assert window_bounds(100, None) == [(0, 100)]


# -- transcript-free ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    out = tmp_path_factory.mktemp("whisper") / "tiny-whisper"
    build_tiny_whisper(out)
    return out


HUB_USER_ASR = """
import json, sys, numpy as np
from transformers import pipeline
checkpoint, whisper, inputs = sys.argv[1:4]
data = np.load(inputs)
asr = pipeline("automatic-speech-recognition", model=whisper, device="cpu")
pipe = pipeline("speech-emotion-recognition", model=checkpoint, trust_remote_code=True, device="cpu", asr_model=whisper)
short, long = {"raw": data["short"], "sampling_rate": 16000}, {"raw": data["long"], "sampling_rate": 16000}
try:
    pipeline("speech-emotion-recognition", model=checkpoint, trust_remote_code=True, device="cpu")(data["short"])
    default_asr_error = None
except RuntimeError as error:
    default_asr_error = str(error)
json.dump({
    "asr_short": asr(dict(short))["text"],
    "asr_long": asr(dict(long), return_timestamps=True),
    "short": pipe(data["short"], return_windows=True),
    "long": pipe(data["long"], return_windows=True),
    "prebuilt": pipe(data["short"], asr_model=asr, return_windows=True),
    "default_asr_error": default_asr_error,
}, open(OUT, "w"))
"""


def test_speech_without_transcript_is_transcribed(crab, tiny_whisper, tmp_path):
    rng = np.random.default_rng(1)
    inputs = {"short": rng.standard_normal(16000).astype(np.float32) * 0.1, "long": rng.standard_normal(48000) * 0.1}
    np.savez(tmp_path / "inputs.npz", short=inputs["short"], long=inputs["long"].astype(np.float32))
    results = run_as_hub_user(HUB_USER_ASR, tmp_path, crab[2], tiny_whisper, tmp_path / "inputs.npz")

    transcript = results["asr_short"].strip()
    assert transcript  # the tiny recognizer says something, so the text branch really received it
    assert results["short"]["text"] == transcript
    assert results["short"]["windows"][0]["text"] == transcript
    model, processor, _ = crab
    expected = probabilities(model, processor, inputs["short"], transcript, 16000)
    np.testing.assert_allclose(as_array(results["short"]["aggregate"]), expected, atol=1e-5)
    assert results["prebuilt"] == results["short"]  # an already-built ASR pipeline works the same

    # 3 s -> two windows; each gets the words whose timestamps fall inside it
    long, chunks = results["long"], results["asr_long"]["chunks"]
    assert long["text"] == results["asr_long"]["text"].strip()
    for window in long["windows"]:
        words = [c["text"].strip() for c in chunks if window["start"] <= sum(c["timestamp"]) / 2 < window["end"]]
        assert window["text"] == (" ".join(w for w in words if w) or long["text"])

    # offline, the default recognizer cannot be fetched: the error says what to do instead
    assert "openai/whisper-large-v3-turbo" in results["default_asr_error"]
    assert "pass text=" in results["default_asr_error"]


def test_empty_transcript_is_audio_only(crab):
    model, processor, _ = crab
    pipe = pipeline("speech-emotion-recognition", model=model, processor=processor, device="cpu")
    audio = np.random.default_rng(2).standard_normal(16000).astype(np.float32) * 0.1
    with pytest.warns(UserWarning, match="without modality dropout"):
        scores = pipe(audio, text="")
    np.testing.assert_allclose(as_array(scores), probabilities(model, processor, audio, "", 16000), atol=1e-5)
    model.config.modality_dropout = 0.3  # a model trained to work from audio alone: no warning
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe(audio, text="")
        assert not [w for w in caught if "modality dropout" in str(w.message)]
    finally:
        model.config.modality_dropout = 0.0


# -- inputs and errors --------------------------------------------------------------------------------------------
def test_errors_name_the_input_and_the_fix(crab, tmp_path):
    model, processor, _ = crab
    pipe = pipeline("speech-emotion-recognition", model=model, processor=processor, device="cpu")
    audio = np.zeros(16000, dtype=np.float32)
    with pytest.raises(FileNotFoundError, match="'missing.wav' does not exist"):
        pipe("missing.wav", text="hi")
    with pytest.raises(ValueError, match="2 audio input.* but 3 transcripts"):
        pipe([audio, audio], text=["a", "b", "c"])
    with pytest.raises(ValueError, match="one transcript string; pass text="):
        pipe([audio, audio], text="a")
    with pytest.raises(ValueError, match="'raw': array, 'sampling_rate': sr"):
        pipe({"array_data": audio}, text="a")
    with pytest.raises(ValueError, match="pass at least 25 ms"):
        pipe(np.zeros(100, dtype=np.float32), text="a")
    (tmp_path / "notes.txt").write_text("not audio")
    with pytest.raises(ValueError, match="notes.txt' could not be decoded"):
        pipe(str(tmp_path / "notes.txt"), text="a")


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_wav_reader_matches_soundfile(tmp_path, width):
    samples = np.random.default_rng(3).uniform(-0.9, 0.9, (4000, 2))
    write_wav(tmp_path / "s.wav", samples.reshape(-1), 11025, width=width, channels=2)
    waveform, rate = read_audio(tmp_path / "s.wav")
    reference, reference_rate = soundfile.read(tmp_path / "s.wav", dtype="float32")
    assert rate == reference_rate == 11025
    np.testing.assert_allclose(waveform, reference.mean(axis=1), atol=1e-6)


def test_other_formats_and_bytes_go_through_soundfile(tmp_path):
    samples = np.random.default_rng(4).uniform(-0.5, 0.5, 8000).astype(np.float32)
    soundfile.write(tmp_path / "s.flac", samples, 16000)
    waveform, rate = read_audio(tmp_path / "s.flac")
    assert rate == 16000 and np.allclose(waveform, samples, atol=1e-4)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16000, format="WAV", subtype="FLOAT")  # float WAV: not for the wave module
    waveform, _ = read_audio(buffer.getvalue())
    np.testing.assert_allclose(waveform, samples, atol=1e-6)


# -- emotional attributes -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["joint", "attributes-only"])
def attribute_crab(request, tiny_tokenizer, tmp_path_factory):
    """(model, processor, pipeline) of a tiny model predicting attributes, with the four classes or without."""
    from attribute_models import export_attribute_model

    id2label = {} if request.param == "attributes-only" else LABELS
    folder = tmp_path_factory.mktemp("attributes") / "inference"
    model, processor, folder = export_attribute_model(tiny_tokenizer, folder, id2label, crop_s=CROP_S)
    pipe = pipeline("speech-emotion-recognition", model=str(folder), trust_remote_code=True, device="cpu")
    return model, processor, pipe


def attributes_of(model, processor, audio, text: str) -> np.ndarray:
    batch = processor(audio=[audio], text=[text], sampling_rate=16000, max_duration_s=None)
    with torch.no_grad():
        return model(**batch).attributes[0].numpy()


def test_a_model_with_attributes_answers_labels_and_named_attributes(attribute_crab):
    from attribute_models import ATTRIBUTES

    model, processor, pipe = attribute_crab
    audio = np.random.default_rng(7).standard_normal(16000).astype(np.float32) * 0.1
    answer = pipe(audio, text="that is wonderful news", top_k=2)
    assert set(answer) == {"labels", "attributes"} and list(answer["attributes"]) == ATTRIBUTES
    assert len(answer["labels"]) == (2 if model.config.num_labels else 0)  # top_k applies to labels only
    expected = attributes_of(model, processor, audio, "that is wonderful news")
    np.testing.assert_allclose([answer["attributes"][a] for a in ATTRIBUTES], expected, atol=1e-5)
    assert all(isinstance(value, float) and 0 <= value <= 1 for value in answer["attributes"].values())
    if model.config.num_labels:
        assert as_array(pipe(audio, text="that is wonderful news")["labels"]) == pytest.approx(
            probabilities(model, processor, audio, "that is wonderful news", 16000), abs=1e-5
        )


def test_attributes_batched_and_padded_equal_one_by_one(attribute_crab):
    _, _, pipe = attribute_crab
    rng = np.random.default_rng(8)
    audios = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 5000, 28000, 9000)]
    texts = ["that is wonderful news", "i miss her so much", "", "we talked about it yesterday"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the empty transcript's audio-only warning
        batched = pipe(audios, text=texts, batch_size=4)
        alone = [pipe(audio, text=text) for audio, text in zip(audios, texts)]
    for got, expected in zip(batched, alone):
        assert got["attributes"] == pytest.approx(expected["attributes"], abs=1e-5)
        assert [s["label"] for s in got["labels"]] == [s["label"] for s in expected["labels"]]


def test_long_audio_attributes_are_the_duration_weighted_mean_of_the_windows(attribute_crab):
    from attribute_models import ATTRIBUTES

    model, processor, pipe = attribute_crab
    audio = np.random.default_rng(9).standard_normal(int(16000 * 2.5 * CROP_S)).astype(np.float32) * 0.1
    result = pipe(audio, text="we talked about it yesterday", return_windows=True)
    assert set(result) == {"aggregate", "windows", "text"} and len(result["windows"]) == 3
    assert result["aggregate"] == pipe(audio, text="we talked about it yesterday")
    window_values, durations = [], []
    for window, (start, end) in zip(result["windows"], window_bounds(len(audio), int(CROP_S * 16000))):
        expected = attributes_of(model, processor, audio[start:end], "we talked about it yesterday")
        window_values.append([window["attributes"][a] for a in ATTRIBUTES])
        np.testing.assert_allclose(window_values[-1], expected, atol=1e-5)
        assert len(window["scores"]) == model.config.num_labels
        durations.append(window["end"] - window["start"])
    weighted = np.average(window_values, axis=0, weights=durations)
    np.testing.assert_allclose([result["aggregate"]["attributes"][a] for a in ATTRIBUTES], weighted, atol=1e-4)
