"""CrabFeatureExtractor: raw speech -> the model's `input_values` (B, N) and `attention_mask` (B, N).

Each waveform goes through: checks -> crop to `max_duration_s` -> mono downmix -> resampling to `sampling_rate`
(16 kHz) -> waveform normalisation (`normalization`) -> right padding with `padding_value` (to the longest waveform,
to the crop, or to a shape bucket: `pad_to_buckets`, `shape_buckets.py`). The signal steps are
`audio.py`'s, the one home of audio; the crop comes first (only the input samples the kept seconds depend on are
read), so an hour-long recording costs no more than its first `max_duration_s`.

Every setting is saved with the feature extractor (`preprocessor_config.json`, or nested under `feature_extractor`
in the processor's `processor_config.json`) and applied to every call: the crop, the normalisation and its
statistics (SPEC §3: one global mean/std computed on the training audio), the padding value and the attention mask.
Training and serving share them by construction.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from transformers import BatchFeature, Wav2Vec2FeatureExtractor
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.utils import PaddingStrategy, TensorType

from .audio import (
    SILENCE_PEAK_TO_PEAK,
    as_waveform_list,
    check_amplitude,
    check_sampling_rate,
    crop_length,
    mono_float32,
    resample,
    resample_input_length,
)
from .configuration_crab import NORMALIZATIONS, TRAINING_CROP_S
from .shape_buckets import bucket_length, check_bucket_lengths

AUDIO_LENGTH_HINT = "audio is cropped in seconds: pass max_duration_s= (None keeps the whole waveform)"


def check_audio_settings(
    normalization: str | None = None,
    max_duration_s: float | None = ...,
    waveform_mean: float | None = None,
    waveform_std: float | None = None,
) -> None:
    """The feature extractor's settings, checked where they are set or used (attributes can be assigned directly);
    an argument left out is not checked (`...` for `max_duration_s`, whose None means no crop)."""
    if normalization is not None and normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r}; use one of {', '.join(NORMALIZATIONS)}")
    if max_duration_s is not ... and max_duration_s is not None:
        if isinstance(max_duration_s, bool) or not isinstance(max_duration_s, (int, float)):
            raise TypeError(f"max_duration_s={max_duration_s!r}; pass seconds (a positive number) or None")
        if not (math.isfinite(max_duration_s) and max_duration_s > 0):
            raise ValueError(f"max_duration_s={max_duration_s!r}; pass a positive number of seconds, or None")
    if waveform_mean is not None and not (_is_number(waveform_mean) and math.isfinite(waveform_mean)):
        raise ValueError(f"waveform_mean={waveform_mean!r}; pass the finite mean of the training audio")
    if waveform_std is not None and not (
        _is_number(waveform_std) and math.isfinite(waveform_std) and waveform_std > 0
    ):
        raise ValueError(f"waveform_std must be positive, got {waveform_std!r}; pass the training audio's std")


_OWN_FILES = ("feature_extraction_crab.py", "processing_crab.py")


def _caller_stacklevel() -> int:
    """The `stacklevel` of a warning raised here that points at the first caller outside the feature extractor and
    the processor: the user's line, however the call came in."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.basename(frame.f_code.co_filename) in _OWN_FILES:
        frame, level = frame.f_back, level + 1
    return level


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


def _strategy(value):
    """A `PaddingStrategy` / `TensorType` as its string; anything else as it is."""
    return value.value if isinstance(value, (PaddingStrategy, TensorType)) else value


def check_pad_to_multiple_of(value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"pad_to_multiple_of={value!r}; pass a positive whole number, or None")


def check_flag(key: str, value) -> None:
    if value is not None and not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{key}={value!r}; pass True or False")


def unpadded_batch_error(padding, what: str, limit: str) -> ValueError:
    return ValueError(
        f"padding={padding!r} leaves the {what} of a batch at different lengths, which no tensor holds; pass "
        f"padding=True (to the longest) or 'max_length' (to {limit})"
    )


class CrabFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Args:
        feature_size: 1 (mono waveforms).
        sampling_rate: the model's rate (16 kHz); audio at another rate is resampled to it.
        padding_value: the value of padded samples.
        return_attention_mask: whether a call returns `attention_mask` (unless the call says otherwise).
        max_duration_s: audio longer than this is cropped to its first `max_duration_s` seconds (12 s in training);
            `None` keeps the whole waveform.
        normalization: `"global"` (subtract `waveform_mean`, divide by `waveform_std`, the statistics of the
            training audio), `"utterance"` (zero mean, unit variance per utterance) or `"none"`.
        waveform_mean / waveform_std: the global statistics, set by training through `set_waveform_stats`.

    Bad input gets an error naming the input and the fix (empty, NaN/inf, wrong dtype or shape, a file path, a
    non-positive sampling rate); a silent waveform (no variation above one 16-bit step) gets a warning naming it.
    docs/bad_input.md lists every case.
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 16_000,
        padding_value: float = 0.0,
        return_attention_mask: bool = True,
        max_duration_s: float | None = TRAINING_CROP_S,
        normalization: str = "utterance",
        waveform_mean: float = 0.0,
        waveform_std: float = 1.0,
        **kwargs,
    ):
        if "do_normalize" in kwargs:
            raise TypeError(
                "CrabFeatureExtractor has no do_normalize (Wav2Vec2FeatureExtractor's switch); its normalisation is "
                "normalization= ('global', 'utterance' or 'none')"
            )
        if feature_size != 1:
            raise ValueError(f"feature_size={feature_size!r}; Crab reads mono waveforms: pass 1")
        check_sampling_rate(sampling_rate, "the feature extractor")
        check_audio_settings(normalization, max_duration_s, waveform_mean, waveform_std)
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        self.return_attention_mask = return_attention_mask
        self.max_duration_s = max_duration_s
        self.normalization = normalization
        self.waveform_mean = float(waveform_mean)
        self.waveform_std = float(waveform_std)

    def set_waveform_stats(self, mean: float, std: float) -> None:
        """Store the global waveform statistics of the training audio and switch to global normalisation."""
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ValueError(f"waveform statistics must be finite with std > 0, got mean={mean}, std={std}")
        self.waveform_mean, self.waveform_std, self.normalization = float(mean), float(std), "global"

    def check_settings(self) -> None:
        """The saved settings as they are now (attributes can be assigned directly), checked before they are used."""
        check_audio_settings(self.normalization, self.max_duration_s, self.waveform_mean, self.waveform_std)
        if self.padding_side != "right":
            raise ValueError(
                f"padding_side={self.padding_side!r}: Crab's model reads each waveform from sample 0, so waveforms "
                "are padded on the right; set padding_side='right'"
            )

    def prepare_waveform(
        self, audio, sampling_rate: int | None, name: str = "audio", max_duration_s: float | None = ...
    ) -> np.ndarray:
        """One waveform -> mono float32 at the model's rate, cropped and normalised. `name` labels errors;
        `max_duration_s` left out is the saved crop.

        Only the input samples that the kept `max_duration_s` depend on are converted, checked and resampled.
        """
        if isinstance(audio, (str, os.PathLike, bytes)):
            what = f"a path ('{audio}')" if isinstance(audio, (str, os.PathLike)) else "bytes"
            raise TypeError(
                f"{name} is {what}; the processor takes waveforms: read the file first (soundfile.read) or use the "
                "speech-emotion-recognition pipeline, which reads files"
            )
        rate = self.sampling_rate if sampling_rate is None else check_sampling_rate(sampling_rate, name)
        max_duration_s = self.max_duration_s if max_duration_s is ... else max_duration_s
        num_output = crop_length(max_duration_s, self.sampling_rate)
        keep = None if num_output is None else resample_input_length(num_output, rate, self.sampling_rate)
        waveform = mono_float32(audio, name, keep)
        if waveform.size == 0:
            raise ValueError(f"{name} is empty (0 samples); pass a non-empty waveform")
        check_amplitude(waveform, name)
        if rate != self.sampling_rate:
            waveform = resample(waveform, rate, self.sampling_rate)
        if num_output is not None:
            waveform = waveform[:num_output]
        if np.ptp(waveform) < SILENCE_PEAK_TO_PEAK:
            warnings.warn(
                f"{name} is silent (no variation above one 16-bit step), so its scores carry no information from the "
                "speech; check the recording",
                stacklevel=_caller_stacklevel(),
            )
        return self.normalize(waveform)

    def normalize(self, waveform: np.ndarray) -> np.ndarray:
        """A mono waveform at the model's rate normalised as `normalization` says, as float32."""
        if self.normalization == "global":
            waveform = (waveform - self.waveform_mean) / self.waveform_std
        elif self.normalization == "utterance":  # statistics in float64: large samples must not overflow
            waveform = (waveform - waveform.mean(dtype=np.float64)) / np.sqrt(waveform.var(dtype=np.float64) + 1e-7)
        elif self.normalization != "none":
            check_audio_settings(normalization=self.normalization)
        return waveform.astype(np.float32, copy=False)

    def _padding_options(
        self,
        max_duration_s: float | None,
        padding=True,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        pad_to_buckets=None,
    ) -> dict:
        """A call's padding keywords, checked: `length` is the length to pad to (None: the longest waveform, or its
        bucket among `pad_to_buckets`; `padding="max_length"`: the crop, `max_duration_s`)."""
        padding = _strategy(padding)
        if padding in (False, "do_not_pad"):
            raise unpadded_batch_error(padding, "waveforms", "max_duration_s")
        if padding not in (None, True, "longest", "max_length"):
            raise ValueError(f"audio padding={padding!r}; use True ('longest') or 'max_length' (to max_duration_s)")
        length = None
        if padding == "max_length":
            if max_duration_s is None:
                raise ValueError(
                    "audio padding='max_length' pads to the crop, max_duration_s, and this call keeps whole waveforms "
                    "(max_duration_s=None); pass max_duration_s= or pad audio to the longest: "
                    "audio_kwargs={'padding': True}"
                )
            length = crop_length(max_duration_s, self.sampling_rate)
        pad_to_buckets = check_bucket_lengths(pad_to_buckets, "pad_to_buckets", f"samples at {self.sampling_rate} Hz")
        if pad_to_buckets is not None and length is not None:
            raise ValueError(
                "audio padding='max_length' pads every batch to the crop and pad_to_buckets= to the bucket of its "
                "longest waveform; pass one of them"
            )
        check_pad_to_multiple_of(pad_to_multiple_of)
        check_flag("return_attention_mask", return_attention_mask)
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask
        return {
            "length": length,
            "pad_to_buckets": pad_to_buckets,
            "pad_to_multiple_of": pad_to_multiple_of,
            "return_attention_mask": bool(return_attention_mask),
        }

    def _pad_waveforms(
        self,
        waveforms: list[np.ndarray],
        length: int | None = None,
        pad_to_buckets: tuple[int, ...] | None = None,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool = True,
    ) -> dict[str, np.ndarray]:
        longest = bucket_length(max(len(w) for w in waveforms), pad_to_buckets) if length is None else length
        if pad_to_multiple_of:
            longest = math.ceil(longest / pad_to_multiple_of) * pad_to_multiple_of
        input_values = np.full((len(waveforms), longest), self.padding_value, dtype=np.float32)  # (B, N)
        attention_mask = np.zeros((len(waveforms), longest), dtype=np.int64)  # (B, N)
        for i, waveform in enumerate(waveforms):
            input_values[i, : len(waveform)] = waveform
            attention_mask[i, : len(waveform)] = 1
        if not return_attention_mask:
            return {"input_values": input_values}
        return {"input_values": input_values, "attention_mask": attention_mask}

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        max_duration_s: float | None = ...,
        padding: bool | str | PaddingStrategy | None = True,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
        names: Sequence[str] | None = None,
        pad_to_buckets: Sequence[int] | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Featurize one waveform or a batch.

        Args:
            raw_speech: a 1-D waveform; a list of waveforms, each 1-D or 2-D ((samples, channels) or (channels,
                samples), downmixed to mono); or a 2-D array/tensor (B, N), read as B waveforms. Wrap one
                multichannel recording in a list. Float or integer PCM (scaled to [-1, 1)).
            sampling_rate: the rate of `raw_speech`, resampled to `self.sampling_rate` when different (unset: a
                warning, and the model's rate is assumed).
            max_duration_s: the crop in seconds for this call (unset: the saved `max_duration_s`; `None`: whole
                waveforms).
            padding: `True`/`"longest"` pads to the longest of the batch; `"max_length"` to `max_duration_s`. No
                padding (`False`) is refused: a batch is one array.
            pad_to_multiple_of: pad the length up to a multiple of this.
            pad_to_buckets: shape buckets, in samples at `sampling_rate`: the batch pads to the smallest that holds
                its longest waveform (a batch longer than all of them to its longest), then to `pad_to_multiple_of`;
                a handful of shapes for compiled models (`shape_buckets.py`).
            return_attention_mask: unset: the saved `return_attention_mask`.
            return_tensors: `"pt"`, `"np"`, or None (numpy arrays).
            names: what to call each waveform in errors and warnings (default `audio 0`, `audio 1`, ...).
        Returns:
            `input_values` (B, N) float32 and `attention_mask` (B, N) int64.
        """
        for key in kwargs:
            hint = f" ({AUDIO_LENGTH_HINT})" if key in ("max_length", "truncation") else ""
            raise TypeError(
                f"CrabFeatureExtractor got an unexpected keyword argument '{key}'{hint}; it takes sampling_rate, "
                "max_duration_s, padding, pad_to_multiple_of, return_attention_mask, return_tensors, names and "
                "pad_to_buckets"
            )
        self.check_settings()
        check_audio_settings(max_duration_s=max_duration_s)
        return_tensors = _strategy(return_tensors)
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors={return_tensors!r}; pass 'pt' (torch tensors), 'np' or None (numpy)")
        crop_s = self.max_duration_s if max_duration_s is ... else max_duration_s
        padding_options = self._padding_options(
            crop_s, padding, pad_to_multiple_of, return_attention_mask, pad_to_buckets
        )
        single = isinstance(raw_speech, (str, os.PathLike, bytes)) or (
            isinstance(raw_speech, (np.ndarray, torch.Tensor)) and np.ndim(raw_speech) == 1
        )
        batch_array = isinstance(raw_speech, (np.ndarray, torch.Tensor)) and np.ndim(raw_speech) == 2
        waveforms = [raw_speech] if single else as_waveform_list(raw_speech) if batch_array else list(raw_speech)
        if not waveforms:
            raise ValueError("audio is an empty list; pass at least one waveform")
        if names is not None and len(names) != len(waveforms):
            raise ValueError(f"got {len(waveforms)} waveforms but {len(names)} names")
        if sampling_rate is None:
            warnings.warn(
                f"audio given without sampling_rate; assuming {self.sampling_rate} Hz, the model's rate. Pass "
                "sampling_rate= to have audio at other rates resampled.",
                stacklevel=_caller_stacklevel(),
            )
        prepared = []
        for i, waveform in enumerate(waveforms):
            name = names[i] if names else f"audio {i}"
            prepared.append(self.prepare_waveform(waveform, sampling_rate, name, max_duration_s))
        return BatchFeature(data=self._pad_waveforms(prepared, **padding_options), tensor_type=return_tensors)


def as_crab_feature_extractor(feature_extractor, **settings) -> CrabFeatureExtractor:
    """The feature extractor a processor is given, as a `CrabFeatureExtractor` holding `settings` (its
    `__init__` arguments: `max_duration_s`, `normalization`, `waveform_mean`, `waveform_std`).

    A `CrabFeatureExtractor` is kept as it is without settings, and copied with them (processors sharing one do not
    change each other); one of another copy of this code is rebuilt from its settings. A `Wav2Vec2FeatureExtractor` (an encoder's, or one saved by earlier Crab releases) becomes a
    new one with its `sampling_rate` and `padding_value`: its `do_normalize` and `return_attention_mask` never
    applied to Crab's input (the processor normalised by its own `normalization` and always returned the mask), so
    they are not carried over, and the model's input stays what it was.
    """
    if type(feature_extractor).__name__ == "CrabFeatureExtractor" and not isinstance(
        feature_extractor, CrabFeatureExtractor
    ):  # this class from another copy of the code (the package's, where a checkpoint's remote code runs)
        feature_extractor = CrabFeatureExtractor.from_dict(feature_extractor.to_dict())
    if isinstance(feature_extractor, CrabFeatureExtractor):
        if not settings:
            return feature_extractor
        check_audio_settings(**settings)
        converted = copy.deepcopy(feature_extractor)
        for key, value in settings.items():
            setattr(converted, key, float(value) if key in ("waveform_mean", "waveform_std") else value)
        return converted
    if isinstance(feature_extractor, Wav2Vec2FeatureExtractor):
        return CrabFeatureExtractor(
            feature_size=feature_extractor.feature_size,
            sampling_rate=feature_extractor.sampling_rate,
            padding_value=feature_extractor.padding_value,
            **settings,
        )
    raise TypeError(
        f"feature_extractor is a {type(feature_extractor).__name__}; pass a CrabFeatureExtractor (or the speech "
        "encoder's Wav2Vec2FeatureExtractor, converted to one)"
    )


__all__ = ["CrabFeatureExtractor", "as_crab_feature_extractor", "check_audio_settings"]
