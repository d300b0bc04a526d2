"""CrabProcessor: resampling, mono, cropping, normalisation, text truncation, and saved statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_crab import CrabProcessor
from modeling_crab.audio import resample


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
    released = tiny_processor(text=["hi"], padding="max_length", max_length=128)
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
    assert loaded(text=["hi"], padding=True)["input_ids"].shape[1] < 32
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


# ---- Keywords: transformers' processor keywords (`CrabProcessorKwargs`) act on one call; the saved settings otherwise
LONG_TEXT = "that is wonderful news " * 20  # over the fixture's max_text_length (32 tokens)


def _given(style: str, group: str, **keywords) -> dict:
    """`keywords` as a call gives them: flat, or nested in `group` (`text_kwargs` / `audio_kwargs`)."""
    return keywords if style == "flat" else {group: keywords}


def test_a_call_without_keywords_processes_as_the_saved_settings(tiny_processor):
    """What the pipeline, the collator and every test get: the saved crop, truncation and text padding, both masks,
    torch tensors; the same batch as the saved settings spelled out as keywords."""
    tiny_processor.text_padding = "max_length"
    audio, text = [_sine(200.0, 16000, 13.0), _sine(300.0, 16000, 1.0)], [LONG_TEXT, "hi"]
    batch = tiny_processor(audio=audio, text=text, sampling_rate=16000)
    assert list(batch) == ["input_values", "attention_mask", "input_ids", "text_attention_mask"]
    assert [batch[key].dtype for key in batch] == [torch.float32, torch.int64, torch.int64, torch.int64]
    assert batch["attention_mask"].sum(1).tolist() == [12 * 16000, 16000]  # cropped at the saved 12 s
    assert batch["input_ids"].shape == (2, 32) and batch["text_attention_mask"].sum(1)[0] == 32
    spelled_out = tiny_processor(
        audio=audio,
        text=text,
        audio_kwargs={"sampling_rate": 16000, "max_duration_s": 12.0, "padding": True, "return_attention_mask": True},
        text_kwargs={"padding": "max_length", "max_length": 32, "truncation": True, "add_special_tokens": True},
        return_tensors="pt",
    )
    for key in batch:
        torch.testing.assert_close(spelled_out[key], batch[key])


@pytest.mark.parametrize("style", ["flat", "nested"])
def test_text_keywords_reach_the_tokenizer(tiny_processor, style):
    def call(text, **keywords):
        return tiny_processor(text=text, **_given(style, "text_kwargs", **keywords))

    short = ["hi", "that is wonderful news"]
    assert call(short)["input_ids"].shape[1] < 32  # the saved padding: to the longest
    assert call(short, padding="max_length")["input_ids"].shape == (2, 32)  # to the saved max_text_length
    assert call(short, padding="max_length", max_length=40)["input_ids"].shape == (2, 40)
    cut = call([LONG_TEXT], max_length=8)["input_ids"]
    assert cut.shape == (1, 8) and cut[0, -1] == tiny_processor.tokenizer.eos_token_id
    whole = call([LONG_TEXT], truncation=False)["input_ids"]
    assert whole.shape == (1, tiny_processor.transcript_lengths([LONG_TEXT])[0]) and whole.shape[1] > 32
    bare = call(["hi"], add_special_tokens=False)["input_ids"][0].tolist()
    assert bare == tiny_processor.tokenizer("hi", add_special_tokens=False)["input_ids"]
    assert call(short, pad_to_multiple_of=16)["input_ids"].shape[1] == 16
    assert "text_attention_mask" not in call(short, return_attention_mask=False)
    assert isinstance(call(short, return_tensors="np")["input_ids"], np.ndarray)


@pytest.mark.parametrize("style", ["flat", "nested"])
def test_audio_keywords_reach_the_audio(tiny_processor, style):
    def call(audio, **keywords):
        return tiny_processor(audio=audio, **_given(style, "audio_kwargs", **keywords))

    tiny_processor.normalization = "none"
    at_8k = call([_sine(440.0, 8000)], sampling_rate=8000)["input_values"]
    np.testing.assert_allclose(at_8k[0, 200:-200].numpy(), _sine(440.0, 16000)[200:-200], atol=5e-3)  # resampled
    long_audio = [_sine(200.0, 16000, 13.0)]
    assert call(long_audio, sampling_rate=16000, max_duration_s=0.5)["input_values"].shape == (1, 8000)
    assert call(long_audio, sampling_rate=16000, max_duration_s=None)["input_values"].shape == (1, 13 * 16000)
    one_second = [_sine(200.0, 16000)]
    padded = call(one_second, sampling_rate=16000, padding="max_length")  # to the crop, the saved 12 s
    assert padded["input_values"].shape == (1, 12 * 16000) and padded["attention_mask"].sum() == 16000
    assert call(one_second, sampling_rate=16000, pad_to_multiple_of=5000)["input_values"].shape == (1, 20000)
    assert "attention_mask" not in call(one_second, sampling_rate=16000, return_attention_mask=False)
    assert isinstance(call(one_second, sampling_rate=16000, return_tensors="np")["input_values"], np.ndarray)


def test_a_flat_keyword_of_both_modalities_reaches_both(tiny_processor):
    """As in transformers' processors: flat `padding`, `pad_to_multiple_of`, `return_attention_mask` and
    `return_tensors` act on both modalities; nested, on one. Flat `max_length` / `truncation` are the text's only:
    audio is cropped in seconds (`max_duration_s`)."""
    audio, text = [_sine(200.0, 16000)[:1003]], ["hi"]  # 1003 samples, 3 tokens
    both = tiny_processor(audio=audio, text=text, sampling_rate=16000, padding="max_length")
    assert both["input_values"].shape == (1, 12 * 16000) and both["input_ids"].shape == (1, 32)
    text_only = tiny_processor(audio=audio, text=text, sampling_rate=16000, text_kwargs={"padding": "max_length"})
    assert text_only["input_values"].shape == (1, 1003) and text_only["input_ids"].shape == (1, 32)
    multiple = tiny_processor(audio=audio, text=text, sampling_rate=16000, pad_to_multiple_of=8)
    assert multiple["input_values"].shape == (1, 1008) and multiple["input_ids"].shape == (1, 8)
    assert list(tiny_processor(audio=audio, text=text, sampling_rate=16000, return_attention_mask=False)) == [
        "input_values",
        "input_ids",
    ]
    cut = tiny_processor(audio=audio, text=[LONG_TEXT], sampling_rate=16000, max_length=8, truncation=True)
    assert cut["input_values"].shape == (1, 1003) and cut["input_ids"].shape == (1, 8)


def test_a_keyword_overrides_its_saved_setting_for_one_call_only(tiny_processor):
    tiny_processor.text_padding = "max_length"
    assert tiny_processor(text=["hi"], max_length=8)["input_ids"].shape == (1, 8)  # the saved padding, to 8
    assert tiny_processor(text=["hi"], padding=True)["input_ids"].shape[1] < 8
    assert tiny_processor(text=["hi"])["input_ids"].shape == (1, 32)  # the next call: the saved settings again
    assert (tiny_processor.text_padding, tiny_processor.max_text_length) == ("max_length", 32)


@pytest.mark.parametrize(
    "keywords, named",
    [
        ({"paddding": True}, "unexpected keyword argument 'paddding'"),
        ({"text_kwargs": {"max_len": 8}}, "unexpected keyword 'max_len' in text_kwargs"),
        ({"audio_kwargs": {"do_normalize": False}}, "unexpected keyword 'do_normalize' in audio_kwargs"),
    ],
)
def test_an_unknown_keyword_is_refused_with_the_accepted_ones(tiny_processor, keywords, named):
    with pytest.raises(TypeError, match=named) as error:
        tiny_processor(audio=[_sine(200.0, 16000)], text=["hi"], sampling_rate=16000, **keywords)
    assert "max_duration_s" in str(error.value) or "max_length" in str(error.value)  # the accepted ones


def test_the_former_keyword_names_still_work_with_a_future_warning(tiny_processor):
    """`text_padding=` / `max_text_length=` in a call were Crab's names of the transcripts' `padding=` /
    `max_length=`: they act on the text only, as they did."""
    with pytest.warns(FutureWarning, match=r"text_padding= is now the transcripts' padding="):
        former = tiny_processor(text=["hi"], text_padding="max_length", max_text_length=16)
    current = tiny_processor(text=["hi"], text_kwargs={"padding": "max_length", "max_length": 16})
    assert former["input_ids"].shape == (1, 16) and torch.equal(former["input_ids"], current["input_ids"])


def test_saving_keeps_the_processor_equal_to_the_loaded_one(tiny_processor, tmp_path):
    """Saving writes the registered Auto class into processor_config.json without leaving it on the processor:
    the loaded processor equals the saved one (transformers' round trip)."""
    tiny_processor.save_pretrained(tmp_path)
    assert CrabProcessor.from_pretrained(tmp_path).to_dict() == tiny_processor.to_dict()
    assert "auto_map" not in vars(tiny_processor)


def test_the_tokenizers_saved_call_state_does_not_override_the_saved_settings(tiny_processor, tmp_path):
    """A fast tokenizer keeps the truncation and padding of its last call, saves them in tokenizer.json and loads
    them back as init keywords (here max_length=128); the loaded processor still truncates and pads by its own
    saved settings, so no call made before a save changes the calls after it."""
    tiny_processor(text=["hi"], padding="max_length", max_length=128)
    tiny_processor.save_pretrained(tmp_path)
    loaded = CrabProcessor.from_pretrained(tmp_path)
    assert loaded.tokenizer.init_kwargs.get("max_length") == 128  # the stale call state, as transformers loads it
    assert loaded(text=["that is wonderful news " * 20])["input_ids"].shape == (1, 32)
    assert loaded(text=["hi"])["input_ids"].shape[1] < 32
