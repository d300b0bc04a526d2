"""CrabProcessor: pairs a speech feature extractor with a RoBERTa tokenizer.

Audio goes through: validation -> mono downmix -> resampling to the extractor's rate (16 kHz) -> crop to
`max_duration_s` -> waveform normalisation -> zero padding. Text is tokenised, truncated at `max_text_length`.
The normalisation statistics (SPEC §3: one global mean/std computed on the training audio) are saved with the
processor, so users never copy them into their code.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

NORMALIZATIONS = ("global", "utterance", "none")


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int, lowpass_filter_width: int = 6) -> np.ndarray:
    """Band-limited (Hann-windowed sinc) polyphase resampling of a 1-D float32 waveform."""
    if orig_sr == target_sr:
        return waveform
    g = math.gcd(int(orig_sr), int(target_sr))
    orig, new = int(orig_sr) // g, int(target_sr) // g
    cutoff = min(orig, new) * 0.99  # just below the lower Nyquist rate
    width = math.ceil(lowpass_filter_width * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig  # (K,)
    phase = -torch.arange(new, dtype=torch.float64)[:, None] / new  # (new, 1)
    t = ((phase + taps[None, :]) * cutoff).clamp(-lowpass_filter_width, lowpass_filter_width)  # (new, K)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    kernels = (sinc * window * cutoff / orig).float()  # (new, K)

    x = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    x = F.pad(x[None, None], (width, width + orig))  # (1, 1, N + K - 1 + ...)
    y = F.conv1d(x, kernels[:, None, :], stride=orig)  # (1, new, frames)
    y = y.transpose(1, 2).reshape(-1)
    return y[: math.ceil(new * len(waveform) / orig)].numpy()


class CrabProcessor(ProcessorMixin):
    r"""
    Args:
        feature_extractor: a `Wav2Vec2FeatureExtractor` (its `sampling_rate`, 16 kHz, is the model's rate).
        tokenizer: a RoBERTa tokenizer.
        max_duration_s: audio longer than this is cropped to its first `max_duration_s` seconds (12 s in training);
            `None` keeps the whole waveform.
        max_text_length: transcripts are truncated at this many tokens (128 in the paper).
        normalization: `"global"` (subtract `waveform_mean`, divide by `waveform_std`, the statistics of the
            training audio), `"utterance"` (zero mean, unit variance per utterance) or `"none"`.
        waveform_mean / waveform_std: the global statistics, set by training through `set_waveform_stats`.
    """

    def __init__(
        self,
        feature_extractor,
        tokenizer,
        max_duration_s: float | None = 12.0,
        max_text_length: int = 128,
        normalization: str = "utterance",
        waveform_mean: float = 0.0,
        waveform_std: float = 1.0,
        **kwargs,
    ):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization='{normalization}'; use one of {NORMALIZATIONS}")
        if not waveform_std > 0:
            raise ValueError(f"waveform_std must be positive, got {waveform_std}")
        self.max_duration_s = max_duration_s
        self.max_text_length = max_text_length
        self.normalization = normalization
        self.waveform_mean = float(waveform_mean)
        self.waveform_std = float(waveform_std)
        super().__init__(feature_extractor, tokenizer, **kwargs)

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    @property
    def model_input_names(self) -> list[str]:
        return ["input_values", "attention_mask", "input_ids", "text_attention_mask"]

    def set_waveform_stats(self, mean: float, std: float) -> None:
        """Store the global waveform statistics of the training audio and switch to global normalisation."""
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ValueError(f"waveform statistics must be finite with std > 0, got mean={mean}, std={std}")
        self.waveform_mean, self.waveform_std, self.normalization = float(mean), float(std), "global"

    # -- audio ------------------------------------------------------------------------------------------------
    def prepare_waveform(
        self, audio, sampling_rate: int | None, name: str = "audio", max_duration_s: float | None = ...
    ) -> np.ndarray:
        """One waveform -> mono float32 at the model's rate, cropped and normalised. `name` labels errors."""
        waveform = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        if waveform.dtype.kind in "iu":  # integer PCM
            waveform = waveform.astype(np.float32) / float(np.iinfo(waveform.dtype).max + 1)
        elif waveform.dtype.kind != "f":
            raise TypeError(f"{name} has dtype {waveform.dtype}; pass float or integer PCM samples")
        waveform = waveform.astype(np.float32, copy=False)
        if waveform.ndim == 2:  # (N, channels) as soundfile reads it, or (channels, N) as torchaudio does
            channel_axis = 1 if waveform.shape[1] <= waveform.shape[0] else 0
            waveform = waveform.mean(axis=channel_axis)
        elif waveform.ndim != 1:
            raise ValueError(f"{name} has shape {waveform.shape}; pass a 1-D waveform or a (samples, channels) array")
        if waveform.size == 0:
            raise ValueError(f"{name} is empty (0 samples); pass a non-empty waveform")
        if not np.isfinite(waveform).all():
            raise ValueError(f"{name} contains NaN or infinite samples; clean or drop this audio")
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            waveform = resample(waveform, sampling_rate, self.sampling_rate)
        max_duration_s = self.max_duration_s if max_duration_s is ... else max_duration_s
        if max_duration_s is not None:
            waveform = waveform[: int(round(max_duration_s * self.sampling_rate))]
        if self.normalization == "global":
            waveform = (waveform - self.waveform_mean) / self.waveform_std
        elif self.normalization == "utterance":
            waveform = (waveform - waveform.mean()) / np.sqrt(waveform.var() + 1e-7)
        return waveform.astype(np.float32, copy=False)

    def _pad_audio(self, waveforms: list[np.ndarray], pad_to_multiple_of: int | None) -> dict[str, np.ndarray]:
        longest = max(len(w) for w in waveforms)
        if pad_to_multiple_of:
            longest = math.ceil(longest / pad_to_multiple_of) * pad_to_multiple_of
        input_values = np.full((len(waveforms), longest), self.feature_extractor.padding_value, dtype=np.float32)
        attention_mask = np.zeros((len(waveforms), longest), dtype=np.int64)
        for i, waveform in enumerate(waveforms):
            input_values[i, : len(waveform)] = waveform
            attention_mask[i, : len(waveform)] = 1
        return {"input_values": input_values, "attention_mask": attention_mask}

    # -- text -------------------------------------------------------------------------------------------------
    def _tokenize(self, texts: list[str], text_padding: bool | str, max_text_length: int) -> dict[str, np.ndarray]:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"transcript {i} is {type(text).__name__}, not a string; pass the utterance's text")
        encoded = self.tokenizer(
            texts, padding=text_padding, truncation=True, max_length=max_text_length, return_tensors="np"
        )
        return {"input_ids": encoded["input_ids"], "text_attention_mask": encoded["attention_mask"]}

    def __call__(
        self,
        audio=None,
        text: str | Sequence[str] | None = None,
        sampling_rate: int | None = None,
        return_tensors: str | None = "pt",
        padding: bool = True,
        text_padding: bool | str = True,
        max_duration_s: float | None = ...,
        max_text_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Process one utterance or a batch.

        Args:
            audio: a waveform (1-D array/tensor, or (samples, channels)) or a list of them.
            text: the transcript(s), one per waveform.
            sampling_rate: the rate of `audio`; it is resampled to the model's rate when different.
            text_padding: `True` pads to the longest transcript; `"max_length"` pads to `max_text_length`, as the
                released code did.
            max_duration_s / max_text_length: override the saved crop and truncation lengths for this call.
        Returns:
            `input_values` (B, N), `attention_mask` (B, N), `input_ids` (B, L), `text_attention_mask` (B, L).
        """
        if audio is None and text is None:
            raise ValueError("CrabProcessor needs `audio`, `text`, or both")
        data: dict[str, np.ndarray] = {}
        if audio is not None:
            single = isinstance(audio, (np.ndarray, torch.Tensor)) and np.ndim(audio) == 1
            waveforms = [audio] if single else list(audio)
            if sampling_rate is None:
                warnings.warn(
                    f"CrabProcessor called without sampling_rate; assuming {self.sampling_rate} Hz. Pass "
                    "sampling_rate= to have audio at other rates resampled.",
                    stacklevel=2,
                )
            waveforms = [
                self.prepare_waveform(w, sampling_rate, name=f"audio {i}", max_duration_s=max_duration_s)
                for i, w in enumerate(waveforms)
            ]
            data.update(self._pad_audio(waveforms, pad_to_multiple_of))
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            if audio is not None and len(texts) != len(data["input_values"]):
                raise ValueError(f"got {len(data['input_values'])} waveforms but {len(texts)} transcripts")
            data.update(self._tokenize(texts, text_padding, max_text_length or self.max_text_length))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


__all__ = ["CrabProcessor", "resample"]
