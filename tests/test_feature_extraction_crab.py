"""CrabFeatureExtractor: the one place where waveforms become model input. Its settings are saved with it and
applied to every call; the processor hands it the audio and adds nothing; processors saved by earlier releases
(a Wav2Vec2FeatureExtractor beside Crab's audio settings in processor_config.json) load into it and process as
before. transformers' own feature-extractor tests (`SequenceFeatureExtractionTestMixin`,
`FeatureExtractionSavingTestMixin`, from the sdist of the installed release) run on it too."""

from __future__ import annotations

import json
import unittest

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoProcessor, Wav2Vec2FeatureExtractor
from transformers_common import common_module

from modeling_crab import CrabFeatureExtractor, CrabProcessor

SR = 16000


def _sine(freq: float, sr: int = SR, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.1 + 0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---- transformers' own tests ----------------------------------------------------------------------------------
SequenceFeatureExtractionTestMixin = common_module(
    "test_sequence_feature_extraction_common"
).SequenceFeatureExtractionTestMixin
FeatureExtractionSavingTestMixin = common_module("test_feature_extraction_common").FeatureExtractionSavingTestMixin


class CrabFeatureExtractionTester:
    """What the mixins read: the feature extractor's settings and lists of mono waveforms of rising lengths."""

    batch_size = 7
    min_seq_length = 400
    max_seq_length = 2000
    seq_length_diff = (max_seq_length - min_seq_length) // (batch_size - 1)
    feature_size = 1

    def prepare_feat_extract_dict(self) -> dict:
        # settings other than the defaults, so the round trips show they are kept
        return {
            "feature_size": 1,
            "sampling_rate": SR,
            "padding_value": 0.0,
            "return_attention_mask": True,
            "max_duration_s": 2.5,
            "normalization": "global",
            "waveform_mean": 0.01,
            "waveform_std": 0.2,
        }

    def prepare_inputs_for_common(self, equal_length=False, numpify=False):
        rng = np.random.default_rng(0)
        lengths = [self.max_seq_length] * self.batch_size
        if not equal_length:
            lengths = range(self.min_seq_length, self.max_seq_length, self.seq_length_diff)
        speech = [rng.uniform(-1, 1, length).astype(np.float32) for length in lengths]
        return speech if numpify else [x.tolist() for x in speech]


class CrabFeatureExtractionTest(
    SequenceFeatureExtractionTestMixin, FeatureExtractionSavingTestMixin, unittest.TestCase
):
    feature_extraction_class = CrabFeatureExtractor

    def setUp(self):
        self.feat_extract_tester = CrabFeatureExtractionTester()


# ---- the settings are saved and applied ----------------------------------------------------------------------
def test_every_saved_setting_is_applied(tmp_path):
    """crop (max_duration_s), normalisation and its statistics, padding value, attention mask: saved, loaded, and
    each one changes the output."""
    extractor = CrabFeatureExtractor(max_duration_s=0.5, padding_value=-7.0, return_attention_mask=False)
    extractor.set_waveform_stats(0.1, 0.25)
    extractor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert {key: saved[key] for key in ("max_duration_s", "normalization", "waveform_mean", "waveform_std")} == {
        "max_duration_s": 0.5,
        "normalization": "global",
        "waveform_mean": 0.1,
        "waveform_std": 0.25,
    }
    assert "do_normalize" not in saved
    loaded = CrabFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == extractor.to_dict()

    audio = [_sine(200.0, seconds=1.0), _sine(300.0, seconds=0.25)]
    batch = loaded(audio, sampling_rate=SR, return_tensors="np")
    assert list(batch) == ["input_values"]  # return_attention_mask=False, saved
    values = batch["input_values"]
    assert values.shape == (2, 8000)  # cropped to 0.5 s
    np.testing.assert_allclose(values[0], (audio[0][:8000] - 0.1) / 0.25, atol=1e-5)
    np.testing.assert_array_equal(values[1, 4000:], -7.0)  # padded with the saved padding_value
    assert "attention_mask" in loaded(audio, sampling_rate=SR, return_attention_mask=True)


def test_a_call_overrides_the_crop_and_padding_for_itself_only():
    extractor = CrabFeatureExtractor(max_duration_s=0.5, normalization="none")
    audio = [_sine(200.0, seconds=1.0), _sine(300.0, seconds=0.25)]
    whole = extractor(audio, sampling_rate=SR, max_duration_s=None, return_tensors="pt")
    assert whole["input_values"].shape == (2, SR) and whole["attention_mask"].sum(1).tolist() == [SR, 4000]
    padded = extractor([audio[1]], sampling_rate=SR, padding="max_length", return_tensors="pt")
    assert padded["input_values"].shape == (1, 8000) and padded["attention_mask"].dtype == torch.int64
    assert extractor(audio, sampling_rate=SR)["input_values"].shape == (2, 8000)  # the saved crop again


def test_resampling_and_downmix_happen_in_the_feature_extractor():
    extractor = CrabFeatureExtractor(normalization="none")
    stereo = np.stack([_sine(440.0, 8000), _sine(440.0, 8000)], axis=1)  # (N, 2) as soundfile reads it
    values = extractor([stereo], sampling_rate=8000, return_tensors="np")["input_values"]
    assert values.shape == (1, SR)
    np.testing.assert_allclose(values[0, 200:-200], _sine(440.0)[200:-200], atol=5e-3)


@pytest.mark.parametrize(
    "settings, named",
    [
        ({"normalization": "peak"}, "normalization='peak'; use one of global, utterance, none"),
        ({"max_duration_s": 0}, "max_duration_s=0; pass a positive number of seconds"),
        ({"waveform_std": 0.0}, "waveform_std must be positive"),
        ({"do_normalize": True}, "has no do_normalize (Wav2Vec2FeatureExtractor's switch)"),
        ({"feature_size": 2}, "feature_size=2; Crab reads mono waveforms"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(settings, named):
    with pytest.raises((TypeError, ValueError), match=named.replace("(", r"\(").replace(")", r"\)")):
        CrabFeatureExtractor(**settings)


def test_a_setting_assigned_later_is_checked_when_used():
    extractor = CrabFeatureExtractor()
    extractor.normalization = "globl"
    with pytest.raises(ValueError, match="normalization='globl'"):
        extractor([_sine(200.0)], sampling_rate=SR)


def test_an_unknown_keyword_is_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"'max_length' \(audio is cropped in seconds: pass max_duration_s="):
        CrabFeatureExtractor()([_sine(200.0)], sampling_rate=SR, max_length=16000)


# ---- the processor routes audio to it --------------------------------------------------------------------------
def test_the_processor_gives_the_feature_extractors_output(tiny_processor):
    """The processor adds nothing to the audio: its audio outputs are the feature extractor's."""
    tiny_processor.set_waveform_stats(0.02, 0.3)
    audio = [_sine(200.0, 22050, 2.0), _sine(300.0, 22050, 0.7)]
    batch = tiny_processor(audio=audio, text=["hi", "that is wonderful news"], sampling_rate=22050)
    alone = tiny_processor.feature_extractor(audio, sampling_rate=22050, return_tensors="pt")
    for key in ("input_values", "attention_mask"):
        torch.testing.assert_close(batch[key], alone[key])


def test_the_processors_audio_settings_are_the_feature_extractors(tiny_processor):
    extractor = tiny_processor.feature_extractor
    assert isinstance(extractor, CrabFeatureExtractor)
    tiny_processor.max_duration_s = 3.0
    tiny_processor.normalization = "none"
    assert (extractor.max_duration_s, extractor.normalization) == (3.0, "none")
    tiny_processor.set_waveform_stats(0.5, 2.0)
    assert (extractor.normalization, extractor.waveform_mean, extractor.waveform_std) == ("global", 0.5, 2.0)
    assert tiny_processor.sampling_rate == extractor.sampling_rate == SR
    saved = tiny_processor.to_dict()
    assert "max_duration_s" not in saved and saved["feature_extractor"]["max_duration_s"] == 3.0  # saved once


def test_settings_given_to_a_processor_do_not_change_a_shared_feature_extractor(tiny_processor):
    other = CrabProcessor(tiny_processor.feature_extractor, tiny_processor.tokenizer, normalization="none")
    assert other.normalization == "none" and tiny_processor.normalization == "utterance"
    assert CrabProcessor(tiny_processor.feature_extractor, tiny_processor.tokenizer).feature_extractor is (
        tiny_processor.feature_extractor
    )


def test_a_wav2vec2_feature_extractor_is_converted_keeping_the_mask(tiny_tokenizer):
    """A Wav2Vec2FeatureExtractor's `do_normalize` and `return_attention_mask` never applied to Crab's input: the
    converted one normalises by `normalization` and returns the mask, as the processor always did."""
    wav2vec2 = Wav2Vec2FeatureExtractor(sampling_rate=SR, padding_value=0.0, do_normalize=False)
    processor = CrabProcessor(wav2vec2, tiny_tokenizer, max_duration_s=1.0)
    extractor = processor.feature_extractor
    assert isinstance(extractor, CrabFeatureExtractor) and extractor.return_attention_mask
    assert (extractor.sampling_rate, extractor.max_duration_s, extractor.normalization) == (SR, 1.0, "utterance")
    batch = processor(audio=[_sine(200.0)], text=["hi"], sampling_rate=SR)
    assert "attention_mask" in batch and abs(batch["input_values"].mean().item()) < 1e-4


# ---- checkpoints ---------------------------------------------------------------------------------------------
WAV2VEC2_DICT = {
    "do_normalize": True,
    "feature_extractor_type": "Wav2Vec2FeatureExtractor",
    "feature_size": 1,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "sampling_rate": SR,
}
EARLIER_SETTINGS = {
    "max_duration_s": 1.5,
    "max_text_length": 24,
    "normalization": "global",
    "processor_class": "CrabProcessor",
    "text_padding": "max_length",
    "waveform_mean": 0.05,
    "waveform_std": 0.3,
}


def _write_earlier_checkpoint(folder, tokenizer, nested: bool) -> None:
    """A processor folder as earlier releases wrote it: Crab's audio settings in processor_config.json beside a
    Wav2Vec2FeatureExtractor, nested there (transformers 5) or in preprocessor_config.json."""
    tokenizer.save_pretrained(folder)
    processor_config = dict(EARLIER_SETTINGS)
    if nested:
        processor_config["feature_extractor"] = WAV2VEC2_DICT
    else:
        (folder / "preprocessor_config.json").write_text(json.dumps(WAV2VEC2_DICT))
    (folder / "processor_config.json").write_text(json.dumps(processor_config))


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "preprocessor_config"])
def test_a_processor_saved_by_earlier_releases_loads_and_processes_as_before(tiny_tokenizer, tmp_path, nested):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    _write_earlier_checkpoint(earlier, tiny_tokenizer, nested)
    loaded = CrabProcessor.from_pretrained(earlier)
    assert isinstance(loaded.feature_extractor, CrabFeatureExtractor)
    settings = (loaded.max_duration_s, loaded.normalization, loaded.waveform_mean, loaded.waveform_std)
    assert settings == (1.5, "global", 0.05, 0.3)
    assert (loaded.max_text_length, loaded.text_padding) == (24, "max_length")

    audio = [_sine(200.0, seconds=2.0), _sine(300.0, seconds=0.5)]
    batch = loaded(audio=audio, text=["hi", "that is wonderful news"], sampling_rate=SR, return_tensors="np")
    expected = np.zeros((2, 24000), np.float32)  # cropped at 1.5 s, globally normalised, padded with zeros
    expected[0] = (audio[0][:24000] - 0.05) / 0.3
    expected[1, :8000] = (audio[1] - 0.05) / 0.3
    np.testing.assert_allclose(batch["input_values"], expected, atol=1e-5)
    assert batch["attention_mask"].sum(1).tolist() == [24000, 8000] and batch["input_ids"].shape == (2, 24)

    loaded.save_pretrained(tmp_path / "again")  # saved from now on with the feature extractor
    config = json.loads((tmp_path / "again" / "processor_config.json").read_text())
    assert not {"max_duration_s", "normalization", "waveform_mean", "waveform_std"} & set(config)
    assert config["feature_extractor"]["feature_extractor_type"] == "CrabFeatureExtractor"
    assert "do_normalize" not in config["feature_extractor"]
    again = CrabProcessor.from_pretrained(tmp_path / "again")
    rerun = again(audio=audio, text=["hi", "that is wonderful news"], sampling_rate=SR, return_tensors="np")
    for key in batch:
        np.testing.assert_array_equal(rerun[key], batch[key])


def test_a_saved_processor_carries_the_feature_extractor_code(tiny_processor, tmp_path):
    """The folder holds feature_extraction_crab.py and auto_map entries, so the Auto classes load the Crab feature
    extractor from it (tests/test_export.py loads a whole export where the package is not installed)."""
    tiny_processor.set_waveform_stats(0.0, 0.5)
    tiny_processor.save_pretrained(tmp_path)
    assert (tmp_path / "feature_extraction_crab.py").is_file()
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["feature_extractor"]["auto_map"]["AutoFeatureExtractor"] == (
        "feature_extraction_crab.CrabFeatureExtractor"
    )
    extractor = AutoFeatureExtractor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(extractor).__name__ == "CrabFeatureExtractor" and extractor.waveform_std == 0.5
    processor = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    audio = [_sine(200.0, 22050, 1.0)]
    np.testing.assert_array_equal(
        processor(audio=audio, text=["hi"], sampling_rate=22050)["input_values"].numpy(),
        tiny_processor(audio=audio, text=["hi"], sampling_rate=22050)["input_values"].numpy(),
    )
