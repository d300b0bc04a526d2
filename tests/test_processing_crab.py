"""CrabProcessor: resampling, mono, cropping, normalisation, text truncation, and saved statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_crab import CrabProcessor
from modeling_crab.processing_crab import resample


def _sine(freq: float, sr: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("orig_sr", [8000, 22050, 44100, 48000])
def test_resampling_keeps_a_tone_and_the_duration(orig_sr):
    out = resample(_sine(440.0, orig_sr), orig_sr, 16000)
    expected = _sine(440.0, 16000)
    assert abs(len(out) - len(expected)) <= 1
    interior = slice(200, len(expected) - 200)  # away from the edges' zero padding
    np.testing.assert_allclose(out[interior], expected[interior], atol=5e-3)


def test_resampling_removes_content_above_the_new_nyquist():
    out = resample(_sine(12000.0, 48000), 48000, 16000)  # 12 kHz cannot exist at 16 kHz
    assert np.abs(out[200:-200]).max() < 0.02


def test_processor_resamples_downmixes_and_pads(tiny_processor):
    tiny_processor.normalization = "none"
    stereo = np.stack([_sine(440.0, 8000), -_sine(440.0, 8000)], axis=1)  # (N, 2) as soundfile reads it
    channels_first = torch.from_numpy(np.stack([_sine(300.0, 8000, 0.5)] * 6))  # (6, N)
    with pytest.warns(UserWarning, match="audio 0 is silent"):  # the opposite channels cancel
        batch = tiny_processor(audio=[stereo, channels_first], text=["a", "b"], sampling_rate=8000)
    assert batch["input_values"].shape == (2, 16000)
    assert batch["input_values"][0].abs().max() < 1e-6  # opposite channels cancel in the downmix
    assert batch["attention_mask"].sum(1).tolist() == [16000, 8000]
    assert torch.all(batch["input_values"][1, 8000:] == 0)


def test_rate_is_applied_and_missing_rate_warns(tiny_processor):
    with pytest.warns(UserWarning, match="sampling_rate"):
        tiny_processor(audio=_sine(440.0, 16000), text="x")
    batch = tiny_processor(audio=_sine(440.0, 8000), text="x", sampling_rate=8000)
    assert batch["input_values"].shape == (1, 16000)


def test_cropping_to_max_duration(tiny_processor):
    long_audio = _sine(200.0, 16000, seconds=15.0)
    assert tiny_processor(audio=long_audio, text="x", sampling_rate=16000)["input_values"].shape[1] == 12 * 16000
    uncropped = tiny_processor(audio=long_audio, text="x", sampling_rate=16000, max_duration_s=None)
    assert uncropped["input_values"].shape[1] == 15 * 16000


def test_normalisation_modes(tiny_processor):
    audio = 0.3 + 0.1 * _sine(200.0, 16000)
    utterance = tiny_processor(audio=audio, text="x", sampling_rate=16000)["input_values"][0]
    assert abs(utterance.mean().item()) < 1e-4 and abs(utterance.std().item() - 1) < 1e-2
    tiny_processor.set_waveform_stats(0.3, 0.05)
    globally = tiny_processor(audio=audio, text="x", sampling_rate=16000)["input_values"][0].numpy()
    np.testing.assert_allclose(globally, (audio - 0.3) / 0.05, atol=1e-5)
    tiny_processor.normalization = "none"
    raw = tiny_processor(audio=audio, text="x", sampling_rate=16000)["input_values"][0].numpy()
    np.testing.assert_allclose(raw, audio, atol=1e-7)


def test_integer_pcm_is_scaled(tiny_processor):
    tiny_processor.normalization = "none"
    pcm = (_sine(200.0, 16000) * 32767).astype(np.int16)
    out = tiny_processor(audio=pcm, text="x", sampling_rate=16000)["input_values"][0].numpy()
    np.testing.assert_allclose(out, _sine(200.0, 16000), atol=1e-4)


def test_text_truncation_and_padding(tiny_processor):
    long_text = "that is wonderful news " * 40
    batch = tiny_processor(text=[long_text, "hi"])
    assert batch["input_ids"].shape[1] == 32  # max_text_length of the fixture
    assert batch["text_attention_mask"].sum(1).tolist()[0] == 32
    assert batch["input_ids"][0, -1].item() == tiny_processor.tokenizer.eos_token_id
    released = tiny_processor(text=["hi"], text_padding="max_length", max_text_length=128)
    assert released["input_ids"].shape == (1, 128)


@pytest.mark.parametrize(
    "audio, message",
    [
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), "NaN"),
        (np.zeros((2, 2, 2), dtype=np.float32), "shape"),
        (np.array(["a", "b"]), "dtype"),
    ],
)
def test_bad_audio_is_named_in_the_error(tiny_processor, audio, message):
    with pytest.raises((ValueError, TypeError), match=message) as error:
        tiny_processor(audio=[_sine(200.0, 16000), audio], text=["a", "b"], sampling_rate=16000)
    assert "audio 1" in str(error.value)


def test_mismatched_counts_and_bad_text(tiny_processor):
    with pytest.raises(ValueError, match="2 waveforms but 1 transcripts"):
        tiny_processor(audio=[_sine(200.0, 16000)] * 2, text=["a"], sampling_rate=16000)
    with pytest.raises(TypeError, match="transcript 1"):
        tiny_processor(text=["a", None])
    with pytest.raises(ValueError, match="normalization"):
        CrabProcessor(tiny_processor.feature_extractor, tiny_processor.tokenizer, normalization="peak")
    with pytest.raises(ValueError, match=r"text_padding='max'; use one of \('longest', 'max_length'\)"):
        CrabProcessor(tiny_processor.feature_extractor, tiny_processor.tokenizer, text_padding="max")


def test_the_saved_text_padding_is_the_default_of_every_call(tiny_processor, tmp_path):
    """A processor saved with `text_padding="max_length"` (the release recipe) pads every later call to
    `max_text_length`, so a model trained on padded transcripts is served padded ones; a call can still override."""
    tiny_processor.text_padding = "max_length"
    tiny_processor.save_pretrained(tmp_path)
    loaded = CrabProcessor.from_pretrained(tmp_path)
    assert loaded.text_padding == "max_length"
    assert loaded(text=["hi", "that is wonderful news"])["input_ids"].shape == (2, 32)
    assert loaded(text=["hi"], text_padding=True)["input_ids"].shape[1] < 32
    assert (
        CrabProcessor(tiny_processor.feature_extractor, tiny_processor.tokenizer)(text=["hi"])["input_ids"].shape[1]
        < 32
    )


def test_settings_and_statistics_survive_save_and_load(tiny_processor, tmp_path):
    tiny_processor.set_waveform_stats(0.01, 0.2)
    tiny_processor.max_duration_s = 6.0
    tiny_processor.save_pretrained(tmp_path)
    loaded = CrabProcessor.from_pretrained(tmp_path)
    assert (loaded.normalization, loaded.waveform_mean, loaded.waveform_std) == ("global", 0.01, 0.2)
    assert (loaded.max_duration_s, loaded.max_text_length) == (6.0, 32)
    audio = _sine(200.0, 22050, 8.0)
    a = tiny_processor(audio=audio, text="that is wonderful news", sampling_rate=22050)
    b = loaded(audio=audio, text="that is wonderful news", sampling_rate=22050)
    for key in ("input_values", "attention_mask", "input_ids", "text_attention_mask"):
        torch.testing.assert_close(a[key], b[key])
    assert a["input_values"].shape[1] == 6 * 16000


def test_loading_beside_a_crab_config_warns_of_no_unknown_model(tiny_processor, tiny_config, tmp_path):
    """The tokenizer's loader reads the folder's config.json; a Crab config must not be reported as an unknown
    model type."""
    from transformers.configuration_utils import logger
    from transformers.testing_utils import CaptureLogger

    tiny_config.save_pretrained(tmp_path)
    tiny_processor.save_pretrained(tmp_path)
    with CaptureLogger(logger) as captured:
        CrabProcessor.from_pretrained(tmp_path)
    assert "instantiate a model of type" not in captured.out
