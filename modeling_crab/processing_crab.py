"""CrabProcessor: pairs a speech feature extractor with a RoBERTa tokenizer.

Audio goes through: validation -> crop to `max_duration_s` -> mono downmix -> resampling to the extractor's rate
(16 kHz) -> waveform normalisation -> zero padding; the steps up to the resampling are `audio.py`'s, the one home
of audio. The crop comes first (only the input samples the kept seconds
depend on are read), so an hour-long recording costs no more than its first `max_duration_s`. Text is tokenised,
truncated at `max_text_length` and padded as the model was trained (`text_padding`: to the longest transcript of
the batch, or always to `max_text_length` as the released code did); a whitespace-only transcript is the empty one
(`<s></s>`, audio only).
The normalisation statistics (SPEC §3: one global mean/std computed on the training audio) are saved with the
processor, so users never copy them into their code.

A call takes transformers' processor keywords (`CrabProcessorKwargs`: flat, or nested in `text_kwargs` /
`audio_kwargs`); those it leaves unset fall back to the saved settings, so a call without keywords processes as the
model was trained. Every keyword is honoured or refused with an error naming it: none is ignored.
"""

import math
import os
import threading
import unicodedata
import warnings
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, TextKwargs, Unpack
from transformers.tokenization_utils_base import PaddingStrategy, TruncationStrategy
from transformers.utils import TensorType

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
from .configuration_crab import (  # noqa: F401 (re-exported)
    MAX_TEXT_TOKENS,
    NORMALIZATIONS,
    TEXT_PADDINGS,
    TRAINING_CROP_S,
)

# Fast tokenizers keep truncation and padding settings in shared state: concurrent calls would mix them up.
_TOKENIZER_LOCK = threading.Lock()


def check_processor_settings(
    normalization: str | None = None,
    max_duration_s: float | None = ...,
    max_text_length: int | None = None,
    text_padding: str | None = None,
) -> None:
    """The processor's options, checked where they are set or used (attributes can be assigned directly)."""
    if normalization is not None and normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r}; use one of {', '.join(NORMALIZATIONS)}")
    if text_padding is not None and text_padding not in TEXT_PADDINGS:
        raise ValueError(f"text_padding={text_padding!r}; use one of {TEXT_PADDINGS}")
    if max_duration_s is not ... and max_duration_s is not None:
        if isinstance(max_duration_s, bool) or not isinstance(max_duration_s, (int, float)):
            raise TypeError(f"max_duration_s={max_duration_s!r}; pass seconds (a positive number) or None")
        if not (math.isfinite(max_duration_s) and max_duration_s > 0):
            raise ValueError(f"max_duration_s={max_duration_s!r}; pass a positive number of seconds, or None")
    if max_text_length is not None and (
        isinstance(max_text_length, bool) or not isinstance(max_text_length, int) or max_text_length < 2
    ):
        raise ValueError(f"max_text_length={max_text_length!r}; pass a whole number of tokens >= 2 (<s> and </s>)")


def clean_transcript(text: str) -> str:
    """A transcript as the model reads it: stripped of surrounding whitespace, and the empty transcript (audio only)
    when nothing visible is left: spaces, zero-width spaces, byte-order marks and other invisible format or control
    characters alone are no words."""
    text = text.strip()
    visible = any(not char.isspace() and unicodedata.category(char) not in ("Cf", "Cc") for char in text)
    return text if visible else ""


def transcript_problem(text: str) -> str | None:
    """What makes a transcript string untokenizable (lone surrogates, which UTF-8 cannot encode), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return (
            f"contains a lone surrogate ({text[error.start]!r} at character {error.start}), which is not text: it "
            "comes from bytes decoded with errors='surrogateescape'; decode the original bytes with their real "
            "encoding, or replace it: text.encode('utf-8', 'replace').decode('utf-8')"
        )
    return None


def check_transcript(text, name: str = "transcript") -> None:
    """A transcript is a string the tokenizer can encode; anything else is an error naming it and the fix. The
    processor and the pipeline both check transcripts here."""
    if isinstance(text, (bytes, bytearray)):
        raise TypeError(
            f"{name} is bytes, not a string; decode it first: text.decode('utf-8') "
            "(or .decode('utf-8', errors='replace') when it is not valid UTF-8)"
        )
    if not isinstance(text, str):
        raise TypeError(f"{name} is {type(text).__name__}, not a string; pass the utterance's text")
    problem = transcript_problem(text)
    if problem:
        raise ValueError(f"{name} {problem}")


class CrabAudioKwargs(TypedDict, total=False):
    """The audio keywords of a call. Audio is cropped in seconds (`max_duration_s`, as the saved setting), so
    transformers' audio `max_length` / `truncation` (in samples) are not among them: flat, those two reach the
    tokenizer only, and a length in tokens never crops the audio."""

    sampling_rate: int | None
    max_duration_s: int | float | None
    padding: bool | str | PaddingStrategy | None
    pad_to_multiple_of: int | None
    return_attention_mask: bool | None
    return_tensors: str | TensorType | None


class CrabProcessorKwargs(ProcessingKwargs, total=False):
    """`CrabProcessor.__call__`'s keywords: transformers' text keywords (`TextKwargs`) and Crab's audio keywords,
    each flat or nested (`text_kwargs={...}`, `audio_kwargs={...}`); a flat keyword of both (`padding`,
    `pad_to_multiple_of`, `return_attention_mask`, `return_tensors`) goes to both. Unset ones fall back to the saved
    settings (see `CrabProcessor.__call__`)."""

    audio_kwargs: CrabAudioKwargs
    # transformers' defaults for a call (`_merge_kwargs`), under the keywords a call gives; the saved settings fill
    # what stays unset. Read from here by transformers before 5.2x, from the processor's class attributes after.
    _defaults = {"text_kwargs": {"return_tensors": "pt"}, "audio_kwargs": {"return_tensors": "pt"}}


TEXT_KEYWORDS = frozenset(TextKwargs.__annotations__)
AUDIO_KEYWORDS = frozenset(CrabAudioKwargs.__annotations__)
# Standard text keywords that ask for inputs Crab does not have or outputs its model does not take: refused unless off
# (False, 0 or None), with the way to get what they ask for.
_ONE_TRANSCRIPT = "Crab reads one transcript per utterance: pass each as one string"
_TEXT_EXTRAS = {
    "text_pair": _ONE_TRANSCRIPT,
    "text_target": _ONE_TRANSCRIPT,
    "text_pair_target": _ONE_TRANSCRIPT,
    "is_split_into_words": _ONE_TRANSCRIPT,
    "stride": "a transcript over max_length is cut to its first tokens, as in training; for the overflow call "
    "processor.tokenizer(text, return_overflowing_tokens=True, stride=...)",
    "return_overflowing_tokens": "a transcript over max_length is cut to its first tokens, as in training; for the "
    "overflow call processor.tokenizer(text, return_overflowing_tokens=True)",
    "return_token_type_ids": "RoBERTa and Crab's model take no token type ids",
    "return_special_tokens_mask": "Crab's model takes none; call processor.tokenizer(text, "
    "return_special_tokens_mask=True)",
    "return_offsets_mapping": "Crab's model takes none; call processor.tokenizer(text, return_offsets_mapping=True)",
    "return_length": "use processor.transcript_lengths(texts), or the text_attention_mask's row sums",
    "return_mm_token_type_ids": "Crab's transcripts hold no image, video or audio placeholder tokens",
    "return_text_replacement_offsets": "Crab's transcripts hold no image, video or audio placeholder tokens",
    "sanitize_control_tokens": "Crab has no chat template and no control tokens",
}
# Keywords of other processors, and the processor's saved settings that are no per-call keywords: refused with the fix.
_NO_IMAGES = "Crab reads speech and its transcript: no images or videos"
_SAVED_NORMALIZATION = (
    "the waveform normalisation is the model's (a saved setting, not a per-call one): set processor.normalization, "
    "or processor.set_waveform_stats(mean, std)"
)
_AUDIO_LENGTH = "audio is cropped in seconds: pass max_duration_s= (None keeps the whole waveform)"
_REFUSED = {
    "images": _NO_IMAGES,
    "videos": _NO_IMAGES,
    "images_kwargs": _NO_IMAGES,
    "videos_kwargs": _NO_IMAGES,
    "audios": "pass the waveforms as audio=",
    "raw_speech": "pass the waveforms as audio=",
    "device": "the processor prepares batches on the CPU; move one with batch.to(device)",
    "load_audio_backend": "the processor takes waveforms, not files or URLs: read them first (soundfile.read) or "
    "use the speech-emotion-recognition pipeline",
    "normalization": _SAVED_NORMALIZATION,
    "waveform_mean": _SAVED_NORMALIZATION,
    "waveform_std": _SAVED_NORMALIZATION,
}
# `common_kwargs` (transformers' keywords for every modality) takes the keywords of both
_GROUPS = {
    "text_kwargs": TEXT_KEYWORDS,
    "audio_kwargs": AUDIO_KEYWORDS,
    "common_kwargs": TEXT_KEYWORDS & AUDIO_KEYWORDS,
}
# Crab's former names of two text keywords (FutureWarning; they act on the text only, as they did): the new name and
# the call that does the same
_RENAMED = {
    "text_padding": ("padding", "text_kwargs={{'padding': {value!r}}} (a flat padding= pads the audio too)"),
    "max_text_length": ("max_length", "max_length={value!r}"),
}


def _strategy(value):
    """A `PaddingStrategy` / `TruncationStrategy` / `TensorType` as its string; anything else as it is."""
    return value.value if isinstance(value, (PaddingStrategy, TruncationStrategy, TensorType)) else value


def _unexpected_keyword(key: str, group: str | None = None) -> TypeError:
    hint = _AUDIO_LENGTH if group == "audio_kwargs" and key in ("max_length", "truncation") else _REFUSED.get(key)
    hint = f" ({hint})" if hint else ""
    if group is None:
        return TypeError(
            f"CrabProcessor got an unexpected keyword argument '{key}'{hint}. It takes the text keywords "
            f"{', '.join(sorted(TEXT_KEYWORDS))} and the audio keywords {', '.join(sorted(AUDIO_KEYWORDS))}, flat or "
            "nested as text_kwargs={...} / audio_kwargs={...}"
        )
    return TypeError(
        f"CrabProcessor got an unexpected keyword '{key}' in {group}{hint}; {group} takes "
        f"{', '.join(sorted(_GROUPS[group]))}"
    )


def _check_pad_to_multiple_of(value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"pad_to_multiple_of={value!r}; pass a positive whole number, or None")


def _check_flag(key: str, value) -> None:
    if value is not None and not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{key}={value!r}; pass True or False")


def _unpadded_batch_error(padding, what: str, limit: str) -> ValueError:
    return ValueError(
        f"padding={padding!r} leaves the {what} of a batch at different lengths, which no tensor holds; pass "
        f"padding=True (to the longest) or 'max_length' (to {limit})"
    )


class CrabProcessor(ProcessorMixin):
    r"""
    Args:
        feature_extractor: a `Wav2Vec2FeatureExtractor` (its `sampling_rate`, 16 kHz, is the model's rate).
        tokenizer: a RoBERTa tokenizer.
        max_duration_s: audio longer than this is cropped to its first `max_duration_s` seconds (12 s in training);
            `None` keeps the whole waveform.
        max_text_length: transcripts are truncated at this many tokens (128 in the paper).
        text_padding: `"longest"` pads transcripts to the longest of the batch; `"max_length"` always pads them to
            `max_text_length`, as the released code did in training and testing. A model whose head does not mask
            padding (`mask_padding=False`) computes another function under other padding, so training saves the
            padding it used here and every caller (pipeline, `crab predict`, handler, Space) inherits it.
        normalization: `"global"` (subtract `waveform_mean`, divide by `waveform_std`, the statistics of the
            training audio), `"utterance"` (zero mean, unit variance per utterance) or `"none"`.
        waveform_mean / waveform_std: the global statistics, set by training through `set_waveform_stats`.

    Bad input gets an error naming the input and the fix (empty, NaN/inf, wrong dtype or shape, a non-positive
    sampling rate, a transcript that is not a string); a silent waveform (no variation above one 16-bit step) gets a
    warning naming it. docs/bad_input.md lists every case.
    """

    valid_processor_kwargs = CrabProcessorKwargs
    text_kwargs = CrabProcessorKwargs._defaults["text_kwargs"]  # transformers' call defaults, written once above
    audio_kwargs = CrabProcessorKwargs._defaults["audio_kwargs"]

    def __init__(
        self,
        feature_extractor,
        tokenizer,
        max_duration_s: float | None = TRAINING_CROP_S,
        max_text_length: int = MAX_TEXT_TOKENS,
        normalization: str = "utterance",
        text_padding: str = "longest",
        waveform_mean: float = 0.0,
        waveform_std: float = 1.0,
        **kwargs,
    ):
        check_processor_settings(normalization, max_duration_s, max_text_length, text_padding)
        if not waveform_std > 0:
            raise ValueError(f"waveform_std must be positive, got {waveform_std}")
        self.text_padding = text_padding
        self.max_duration_s = max_duration_s
        self.max_text_length = max_text_length
        self.normalization = normalization
        self.waveform_mean = float(waveform_mean)
        self.waveform_std = float(waveform_std)
        super().__init__(feature_extractor, tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        # the folder's config.json names the Crab model code in `auto_map`; the tokenizer and feature extractor
        # need none of it, so loading them should not ask whether to run it
        kwargs.setdefault("trust_remote_code", False)
        # the tokenizer's loader reads config.json: known as a Crab config, it is not taken for an unknown model
        from transformers import AutoConfig

        from .configuration_crab import CrabConfig

        AutoConfig.register(CrabConfig.model_type, CrabConfig, exist_ok=True)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        # transformers writes the registered Auto class (`auto_map`) into processor_config.json by setting it on the
        # processor, and `from_pretrained` drops it: dropped here too, so saving leaves the processor's settings as
        # they were and the loaded processor equals the saved one
        try:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            self.__dict__.pop("auto_map", None)

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
        """One waveform -> mono float32 at the model's rate, cropped and normalised. `name` labels errors.

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
                stacklevel=3,
            )
        if self.normalization == "global":
            waveform = (waveform - self.waveform_mean) / self.waveform_std
        elif self.normalization == "utterance":  # statistics in float64: large samples must not overflow
            waveform = (waveform - waveform.mean(dtype=np.float64)) / np.sqrt(waveform.var(dtype=np.float64) + 1e-7)
        elif self.normalization != "none":
            check_processor_settings(normalization=self.normalization)
        return waveform.astype(np.float32, copy=False)

    def _audio_padding(
        self,
        max_duration_s: float | None,
        padding=None,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
    ) -> dict:
        """The call's audio padding keywords, checked: `length` is the length to pad to (None: the longest waveform;
        `padding="max_length"`: the crop, `max_duration_s`)."""
        padding = _strategy(padding)
        if padding in (False, "do_not_pad"):
            raise _unpadded_batch_error(padding, "waveforms", "max_duration_s")
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
        _check_pad_to_multiple_of(pad_to_multiple_of)
        _check_flag("return_attention_mask", return_attention_mask)
        return {
            "length": length,
            "pad_to_multiple_of": pad_to_multiple_of,
            "return_attention_mask": True if return_attention_mask is None else bool(return_attention_mask),
        }

    def _pad_audio(
        self,
        waveforms: list[np.ndarray],
        length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool = True,
    ) -> dict[str, np.ndarray]:
        longest = max(len(w) for w in waveforms) if length is None else length
        if pad_to_multiple_of:
            longest = math.ceil(longest / pad_to_multiple_of) * pad_to_multiple_of
        input_values = np.full((len(waveforms), longest), self.feature_extractor.padding_value, dtype=np.float32)
        attention_mask = np.zeros((len(waveforms), longest), dtype=np.int64)
        for i, waveform in enumerate(waveforms):
            input_values[i, : len(waveform)] = waveform
            attention_mask[i, : len(waveform)] = 1
        if not return_attention_mask:
            return {"input_values": input_values}
        return {"input_values": input_values, "attention_mask": attention_mask}

    # -- text -------------------------------------------------------------------------------------------------
    def _tokenizer_options(
        self,
        padding=None,
        max_length: int | None = None,
        truncation=None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        **options,
    ) -> dict:
        """The call's text keywords -> the tokenizer's (unset ones: the saved `text_padding` and `max_text_length`,
        truncation on), checked; `return_attention_mask` says whether the batch keeps `text_attention_mask`."""
        padding = self.text_padding if padding is None else _strategy(padding)
        padding = "longest" if padding is True else padding
        if padding in (False, "do_not_pad"):
            raise _unpadded_batch_error(padding, "transcripts", "max_length")
        if padding not in TEXT_PADDINGS:
            raise ValueError(f"padding={padding!r}; use True ('longest') or 'max_length' (to max_length)")
        max_length = self.max_text_length if max_length is None else max_length
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length={max_length!r}; pass a whole number of tokens >= 2 (<s> and </s>)")
        truncation = True if truncation is None else _strategy(truncation)
        if truncation == "only_second":
            raise ValueError(f"truncation='only_second' cuts a second text ({_ONE_TRANSCRIPT}); pass truncation=True")
        if padding_side not in (None, "right"):
            raise ValueError(
                f"padding_side={padding_side!r}: Crab's model reads each transcript from position 0 (its head's GRUs "
                "run over the first text_attention_mask.sum() tokens), so transcripts are padded on the right; leave "
                "padding_side unset"
            )
        _check_pad_to_multiple_of(options.get("pad_to_multiple_of"))
        _check_flag("return_attention_mask", return_attention_mask)
        for key in ("add_special_tokens", "verbose"):
            _check_flag(key, options.get(key))
        for key in list(options):
            if key in _TEXT_EXTRAS:
                value = options.pop(key)
                if value:
                    raise ValueError(f"{key}={value!r} is not supported: {_TEXT_EXTRAS[key]}")
            elif key not in ("add_special_tokens", "pad_to_multiple_of", "verbose"):
                raise _unexpected_keyword(key, "text_kwargs")
        truncate = truncation not in (False, "do_not_truncate")
        return {
            "padding": padding,
            "truncation": truncation,
            # without truncation, max_length only sets the padded length
            "max_length": max_length if truncate or padding == "max_length" else None,
            "padding_side": "right",
            "return_attention_mask": True if return_attention_mask is None else bool(return_attention_mask),
            **options,
        }

    def _tokenize(
        self, texts: list[str], names: Sequence[str] | None = None, return_attention_mask: bool = True, **options
    ) -> dict[str, np.ndarray]:
        for i, text in enumerate(texts):
            check_transcript(text, f"the transcript of {names[i]}" if names else f"transcript {i}")
        texts = [clean_transcript(text) for text in texts]  # as in training: nothing visible is the empty one
        with _TOKENIZER_LOCK:
            encoded = self.tokenizer(texts, return_tensors="np", **options)
        if not return_attention_mask:
            return {"input_ids": encoded["input_ids"]}
        return {"input_ids": encoded["input_ids"], "text_attention_mask": encoded["attention_mask"]}

    def transcript_lengths(self, texts: Sequence[str]) -> list[int]:
        """Each transcript's length in the model's tokens, `<s>` and `</s>` included, before truncation: those
        over `max_text_length` are cut to their first `max_text_length` tokens (as in training)."""
        texts = [clean_transcript(text) for text in texts]
        with _TOKENIZER_LOCK:
            encoded = self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]
        return [len(ids) for ids in encoded]

    # -- keywords ---------------------------------------------------------------------------------------------
    def _call_keywords(self, kwargs: dict, audio_name: str | None) -> dict:
        """A call's keywords checked (an unknown one is an error naming it and the accepted ones), renamed ones
        given transformers' names, and the sampling rate checked with the errors of `check_sampling_rate`, which
        name the first utterance (`audio_name`; None: the call has no audio)."""
        kwargs = dict(kwargs)
        for group in ("text_kwargs", "audio_kwargs", "common_kwargs"):
            if group in kwargs:
                if not isinstance(kwargs[group], dict):
                    raise TypeError(
                        f"{group} is {type(kwargs[group]).__name__}; pass a dict of keywords, e.g. "
                        f"{group}={{'return_tensors': 'np'}}"
                    )
                kwargs[group] = dict(kwargs[group])
        for old, (new, fix) in _RENAMED.items():
            if old not in kwargs:
                continue
            if new in kwargs or new in kwargs.get("text_kwargs", {}):
                raise ValueError(f"got both {old}= and {new}=; pass {new}= only")
            value = kwargs.pop(old)
            warnings.warn(
                f"CrabProcessor's {old}= is now the transcripts' {new}= (transformers' name): pass "
                f"{fix.format(value=value)}",
                FutureWarning,
                stacklevel=3,
            )
            kwargs.setdefault("text_kwargs", {})[new] = value
        for key in kwargs:
            if key not in _GROUPS and key not in TEXT_KEYWORDS | AUDIO_KEYWORDS:
                raise _unexpected_keyword(key)
        for group, accepted in _GROUPS.items():
            for key in kwargs.get(group, {}):
                if key not in accepted:
                    raise _unexpected_keyword(key, group)
        if audio_name is not None:
            for keywords in (kwargs, kwargs.get("audio_kwargs", {})):
                if keywords.get("sampling_rate") is not None:
                    keywords["sampling_rate"] = check_sampling_rate(keywords["sampling_rate"], audio_name)
        return kwargs

    def _merged_keywords(self, kwargs: dict) -> dict[str, dict]:
        """transformers' merge (`ProcessorMixin._merge_kwargs`): the call's keywords > `common_kwargs` > the class's
        defaults; a value of the wrong type is a TypeError naming the keyword. The tokenizer's init keywords, which
        transformers ranks above the class's defaults, are left out: a fast tokenizer saves the truncation and
        padding of its last call in tokenizer.json and loads them back as init keywords, so they would let whatever
        call preceded a save set the truncation of every later call instead of the saved `max_text_length`."""
        try:
            return self._merge_kwargs(CrabProcessorKwargs, tokenizer_init_kwargs=None, **kwargs)
        except Exception as error:  # huggingface_hub's StrictDataclassFieldValidationError, no TypeError subclass
            if type(error).__name__ != "StrictDataclassFieldValidationError":
                raise
            raise TypeError(f"CrabProcessor: {error}") from error

    @staticmethod
    def _tensor_type(merged: dict[str, dict], has_audio: bool, has_text: bool) -> str:
        """The one `return_tensors` of the batch: 'pt' or 'np', the same for both modalities."""
        asked = [_strategy(merged["audio_kwargs"].pop("return_tensors", "pt"))]
        asked.append(_strategy(merged["text_kwargs"].pop("return_tensors", "pt")))
        asked = [value for value, present in zip(asked, (has_audio, has_text)) if present]
        for value in asked:
            if value not in ("pt", "np"):
                raise ValueError(
                    f"return_tensors={value!r}; CrabProcessor returns batches as 'pt' (torch tensors, the default) or "
                    "'np' (numpy arrays)"
                )
        if len(set(asked)) > 1:
            raise ValueError(
                f"audio_kwargs and text_kwargs ask for return_tensors {asked[0]!r} and {asked[1]!r}, and one batch "
                "holds both; pass return_tensors= once"
            )
        return asked[0]

    def __call__(
        self,
        audio=None,
        text: str | Sequence[str] | None = None,
        names: Sequence[str] | None = None,
        **kwargs: Unpack[CrabProcessorKwargs],
    ) -> BatchFeature:
        """Process one utterance or a batch.

        Args:
            audio: a 1-D waveform; a list of waveforms, each 1-D or 2-D ((samples, channels) or (channels,
                samples), downmixed to mono); or a 2-D array/tensor (B, N), read as B waveforms. Wrap one
                multichannel recording in a list.
            text: the transcript(s), one per waveform.
            names: what to call each utterance in errors and warnings (default `audio 0`, `audio 1`, ...).
            **kwargs: transformers' processor keywords (`CrabProcessorKwargs`), flat or nested in `text_kwargs` /
                `audio_kwargs`, for this call only; unset ones process as the model was trained:
                - `sampling_rate`: the rate of `audio`, resampled to the model's when different (unset: a warning,
                  and the model's rate is assumed).
                - `max_duration_s` (audio): the crop in seconds (unset: the saved `max_duration_s`; `None`: whole
                  waveforms).
                - `padding`: `True`/`"longest"` pads to the longest of the batch; `"max_length"` pads transcripts to
                  `max_length` and audio to `max_duration_s`. Unset: the saved `text_padding` for transcripts, the
                  longest for audio. No padding (`False`) is refused: a batch is one tensor per input.
                - `max_length` / `truncation` (text): transcripts are cut at `max_length` tokens (unset: the saved
                  `max_text_length`); `truncation=False` keeps them whole.
                - `pad_to_multiple_of`, `return_attention_mask` (unset: True), `add_special_tokens`, `verbose`.
                - `return_tensors`: `"pt"` (default) or `"np"`.
                A keyword Crab cannot honour (an image keyword, `padding_side="left"`, `return_offsets_mapping=True`,
                an unknown one) is an error naming it and the fix. `text_padding=` / `max_text_length=`, Crab's
                former names of the transcripts' `padding=` / `max_length=`, still work, with a FutureWarning.
        Returns:
            `input_values` (B, N), `attention_mask` (B, N), `input_ids` (B, L), `text_attention_mask` (B, L).
        """
        if audio is None and text is None:
            raise ValueError("CrabProcessor needs `audio`, `text`, or both")
        check_processor_settings(self.normalization, self.max_duration_s, self.max_text_length, self.text_padding)
        kwargs = self._call_keywords(kwargs, None if audio is None else names[0] if names else "audio 0")
        merged = self._merged_keywords(kwargs)
        return_tensors = self._tensor_type(merged, audio is not None, text is not None)
        audio_kwargs, text_kwargs = merged["audio_kwargs"], merged["text_kwargs"]
        for key in ("return_mm_token_type_ids", "return_text_replacement_offsets"):
            if merged.get(key):
                raise ValueError(f"{key}=True is not supported: {_TEXT_EXTRAS[key]}")
        data: dict[str, np.ndarray] = {}
        batch_array = isinstance(audio, (np.ndarray, torch.Tensor)) and np.ndim(audio) == 2
        if text is not None:
            tokenizer_options = self._tokenizer_options(**text_kwargs)  # checked before any audio is processed
        if audio is not None:
            sampling_rate = audio_kwargs.pop("sampling_rate", None)
            max_duration_s = audio_kwargs.pop("max_duration_s", ...)
            check_processor_settings(max_duration_s=max_duration_s)
            crop_s = self.max_duration_s if max_duration_s is ... else max_duration_s
            audio_padding = self._audio_padding(crop_s, **audio_kwargs)  # checked before any audio is processed
            single = isinstance(audio, (str, os.PathLike, bytes)) or (
                isinstance(audio, (np.ndarray, torch.Tensor)) and np.ndim(audio) == 1
            )
            waveforms = [audio] if single else as_waveform_list(audio) if batch_array else list(audio)
            if not waveforms:
                raise ValueError("audio is an empty list; pass at least one waveform")
            if names is not None and len(names) != len(waveforms):
                raise ValueError(f"got {len(waveforms)} waveforms but {len(names)} names")
            if sampling_rate is None:
                warnings.warn(
                    f"CrabProcessor called without sampling_rate; assuming {self.sampling_rate} Hz. Pass "
                    "sampling_rate= to have audio at other rates resampled.",
                    stacklevel=2,
                )
            prepared = []
            for i, waveform in enumerate(waveforms):  # a loop, not a comprehension: warnings point at the caller
                name = names[i] if names else f"audio {i}"
                prepared.append(self.prepare_waveform(waveform, sampling_rate, name, max_duration_s))
            data.update(self._pad_audio(prepared, **audio_padding))
        if text is not None:
            texts = [text] if isinstance(text, (str, bytes, bytearray)) else list(text)
            if audio is not None and len(texts) != len(data["input_values"]):
                hint = ""
                if batch_array and len(texts) == 1:
                    hint = (
                        f"; audio of shape {tuple(audio.shape)} is read as a batch of {audio.shape[0]} waveforms, "
                        "so for one multichannel recording pass [audio]"
                    )
                raise ValueError(f"got {len(data['input_values'])} waveforms but {len(texts)} transcripts{hint}")
            if names is not None and len(names) != len(texts):
                raise ValueError(f"got {len(texts)} transcripts but {len(names)} names")
            data.update(self._tokenize(texts, names, **tokenizer_options))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


__all__ = [
    "CrabProcessor",
    "CrabProcessorKwargs",
    "CrabAudioKwargs",
    "TRAINING_CROP_S",
    "MAX_TEXT_TOKENS",
    "TEXT_PADDINGS",
    "check_processor_settings",
    "transcript_problem",
    "check_transcript",
]
