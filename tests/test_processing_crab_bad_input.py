"""Bad input to the processor (`CrabProcessor`): each case is handled as docs/bad_input.md says or stopped by an error
that names the input and the fix. Every test here is a row of that table, under the same name."""

from __future__ import annotations

import re
import time
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from bad_input import SR, noise

from modeling_crab import CrabForEmotionClassification

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # many small forward passes (conftest)


# ---- Processor
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


@pytest.mark.parametrize("transcript", ["", "   ", "\n\t ", "\u200b", "\ufeff\u200c \u2060"])
def test_processor_empty_or_whitespace_transcript_is_audio_only(tiny_processor, transcript):
    """Whitespace, or invisible characters only (zero-width spaces and joiners, byte-order marks): no words."""
    batch = tiny_processor(text=[transcript, "\u200bhi"])
    tokenizer = tiny_processor.tokenizer
    assert batch["input_ids"][0].tolist()[:2] == [tokenizer.bos_token_id, tokenizer.eos_token_id]
    assert batch["text_attention_mask"][0].sum() == 2 and batch["text_attention_mask"][1].sum() > 3  # words kept


def test_processor_truncates_long_transcripts(tiny_processor):
    long = "that is wonderful news " * 200  # far over 128 tokens
    batch = tiny_processor(text=[long, "hi"], max_length=128)
    assert batch["input_ids"].shape == (2, 128)
    assert batch["input_ids"][0, -1] == tiny_processor.tokenizer.eos_token_id
    assert tiny_processor(text=[long])["input_ids"].shape == (1, tiny_processor.max_text_length)


@pytest.mark.parametrize("transcript", [b"hello", b"caf\xe9 \xff"])
def test_processor_rejects_bytes_transcripts(tiny_processor, transcript):
    with pytest.raises(TypeError, match=r"transcript 0 is bytes, not a string; decode it first"):
        tiny_processor(text=transcript)
    with pytest.raises(TypeError, match=r"the transcript of clip-b is bytes.*errors='replace'"):
        tiny_processor(audio=[noise(1)] * 2, text=["ok", transcript], sampling_rate=SR, names=["clip-a", "clip-b"])


# ---- Processor keywords
@pytest.mark.parametrize(
    "keywords, named",
    [
        ({"paddding": True}, "unexpected keyword argument 'paddding'. It takes the text keywords add_special_tokens,"),
        ({"text_kwargs": {"max_len": 8}}, "unexpected keyword 'max_len' in text_kwargs; text_kwargs takes"),
        (
            {"audio_kwargs": {"max_length": 16000}},
            "'max_length' in audio_kwargs (audio is cropped in seconds: pass max_duration_s= (None keeps the whole",
        ),
        ({"images_kwargs": {"do_resize": True}}, "'images_kwargs' (Crab reads speech and its transcript: no images"),
        ({"normalization": "none"}, "'normalization' (the waveform normalisation is the model's (a saved setting"),
        ({"text_kwargs": "max_length"}, "text_kwargs is str; pass a dict of keywords"),
    ],
)
def test_processor_refuses_an_unknown_keyword(tiny_processor, keywords, named):
    """A keyword the processor does not take is an error naming it and what it takes, never ignored."""
    with pytest.raises(TypeError, match=re.escape(named)):
        tiny_processor(audio=[noise(0.5)], text=["hi"], sampling_rate=SR, **keywords)


@pytest.mark.parametrize(
    "keywords, named",
    [
        ({"padding": False}, "padding=False leaves the transcripts of a batch at different lengths, which no tensor"),
        ({"audio_kwargs": {"padding": "do_not_pad"}}, "padding='do_not_pad' leaves the waveforms of a batch at"),
        ({"padding_side": "left"}, "padding_side='left': Crab's model reads each transcript from position 0"),
        ({"return_tensors": "tf"}, "return_tensors='tf'; CrabProcessor returns batches as 'pt' (torch tensors"),
        ({"return_tensors": None}, "return_tensors=None; CrabProcessor returns batches as 'pt'"),
        ({"return_offsets_mapping": True}, "processor.tokenizer(text, return_offsets_mapping=True)"),
        ({"text_pair": ["b"]}, "text_pair=['b'] is not supported: Crab reads one transcript per utterance"),
        ({"return_token_type_ids": True}, "RoBERTa and Crab's model take no token type ids"),
        ({"max_length": 1}, "max_length=1; pass a whole number of tokens >= 2"),
        ({"verbose": "yes"}, "verbose='yes'; pass True or False"),
        (
            {"audio_kwargs": {"padding": "max_length", "max_duration_s": None}},
            "audio padding='max_length' pads to the crop, max_duration_s, and this call keeps whole waveforms",
        ),
    ],
)
def test_processor_refuses_a_keyword_it_cannot_honour(tiny_processor, keywords, named):
    """A standard keyword that would break the model's inputs (no padding, left padding, extra outputs, another
    framework) is an error naming it and the fix."""
    with pytest.raises((TypeError, ValueError), match=re.escape(named)):
        tiny_processor(
            audio=[noise(0.5), noise(0.3)], text=["hi", "that is wonderful news"], sampling_rate=SR, **keywords
        )


@pytest.mark.parametrize(
    "keywords, named",
    [
        ({"padding": True, "text_kwargs": {"padding": "max_length"}}, "Keyword argument padding was passed two times"),
        ({"text_padding": "max_length", "padding": True}, "got both text_padding= and padding=; pass padding= only"),
        (
            {"audio_kwargs": {"return_tensors": "np"}, "text_kwargs": {"return_tensors": "pt"}},
            "audio_kwargs and text_kwargs ask for return_tensors 'np' and 'pt', and one batch holds both",
        ),
    ],
)
def test_processor_refuses_a_keyword_given_twice(tiny_processor, keywords, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        tiny_processor(audio=[noise(0.5)], text=["hi"], sampling_rate=SR, **keywords)


def test_audio_at_another_scale_or_width_is_refused(tiny_processor, tmp_path):
    """Float audio at integer PCM's scale would set a corpus's normalisation statistics and be heard as near silence
    beside the rest; 64-bit integers (a list of Python ints) have no audio format's scale and would read as
    silence. Both are refused naming the fix, in the processor and in the scan (a bad row naming the file)."""
    from bad_input import manifest, scan_problems, write

    speech = noise(0.5)
    int16_scale = np.round(speech / np.abs(speech).max() * 12768).astype(np.float32)
    with pytest.raises(ValueError, match=r"audio 0 has samples up to 12768.*divide by 32768 \(16-bit\)"):
        tiny_processor(audio=[int16_scale], text=["hi"], sampling_rate=SR)
    int32_scale = int16_scale * np.float32(65536)
    with pytest.raises(ValueError, match=r"divide by 2147483648 \(32-bit\)"):
        tiny_processor(audio=[int32_scale], text=["hi"], sampling_rate=SR)
    for wide in (int16_scale.astype(np.int64), int16_scale.astype(np.int64).tolist(), torch.from_numpy(speech).long()):
        with pytest.raises(TypeError, match=r"dtype int64, a sample width no audio format has.*dtype=np.int16"):
            tiny_processor(audio=[wide], text=["hi"], sampling_rate=SR)
    pcm = tiny_processor(audio=[int16_scale.astype(np.int16)], text=["hi"], sampling_rate=SR)  # the same, as int16
    assert torch.isfinite(pcm["input_values"]).all() and pcm["input_values"].abs().max() > 0.5

    clip = write(tmp_path / "float_at_int_scale.wav", int16_scale, subtype="FLOAT")
    rows = [f"a,{write(tmp_path / 'a.wav', speech)},hi,sad,train", f"b,{clip},hi,happy,train"]
    problems = scan_problems(manifest(tmp_path, rows))
    assert "float_at_int_scale.wav' has samples up to 12768" in problems and "divide by 32768" in problems
