"""CrabProcessor: routes audio to the Crab feature extractor and transcripts to a RoBERTa tokenizer.

Everything about waveforms (checks, the crop to `max_duration_s`, resampling, normalisation and its statistics,
padding) is `CrabFeatureExtractor`'s (`feature_extraction_crab.py`) and saved with it. The processor owns the text
side: transcripts are checked, tokenised, truncated at `max_text_length` and padded as the model was trained
(`text_padding`: to the longest transcript of the batch, or always to `max_text_length` as the released code did);
a whitespace-only transcript is the empty one (`<s></s>`, audio only).

A call takes transformers' processor keywords (`CrabProcessorKwargs`: flat, or nested in `text_kwargs` /
`audio_kwargs`); those it leaves unset fall back to the saved settings, so a call without keywords processes as the
model was trained. Every keyword is honoured or refused with an error naming it: none is ignored.

Shape buckets (`shape_buckets.py`) are asked for per call, `pad_to_buckets=`: the audio ones go to the feature
extractor (its `pad_to_buckets`), the text ones pad the tokenised batch further. A training run with
`--shape_buckets` saves its buckets here (`processor.shape_buckets`, in `processor_config.json`) for
`pad_to_buckets=True`; a call
without it pads to the longest, bucketed or not, as padding never changes a masked model's outputs.
"""

import threading
import warnings
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, TextKwargs, Unpack
from transformers.tokenization_utils_base import PaddingStrategy, TruncationStrategy
from transformers.utils import TensorType

from .audio import check_sampling_rate
from .feature_extraction_crab import (
    AUDIO_LENGTH_HINT,
    CrabFeatureExtractor,
    as_crab_feature_extractor,
    check_audio_settings,
    check_flag,
    check_pad_to_multiple_of,
    unpadded_batch_error,
)
from .options import MAX_TEXT_TOKENS, TEXT_PADDINGS
from .shape_buckets import ShapeBuckets, bucket_length
from .text import check_transcript, clean_transcript

# Fast tokenizers keep truncation and padding settings in shared state: concurrent calls would mix them up.
_TOKENIZER_LOCK = threading.Lock()


class _FeatureExtractorSetting:
    """A processor attribute that is its feature extractor's setting of the same name (read and written there)."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, processor, owner=None):
        return self if processor is None else getattr(processor.feature_extractor, self.name)

    def __set__(self, processor, value) -> None:
        setattr(processor.feature_extractor, self.name, value)


def check_processor_settings(
    normalization: str | None = None,
    max_duration_s: float | None = ...,
    max_text_length: int | None = None,
    text_padding: str | None = None,
) -> None:
    """The processor's options, checked where they are set or used (attributes can be assigned directly): the
    text ones here, the audio ones by the feature extractor's `check_audio_settings`."""
    check_audio_settings(normalization, max_duration_s)
    if text_padding is not None and text_padding not in TEXT_PADDINGS:
        raise ValueError(f"text_padding={text_padding!r}; use one of {TEXT_PADDINGS}")
    if max_text_length is not None and (
        isinstance(max_text_length, bool) or not isinstance(max_text_length, int) or max_text_length < 2
    ):
        raise ValueError(f"max_text_length={max_text_length!r}; pass a whole number of tokens >= 2 (<s> and </s>)")


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
    hint = AUDIO_LENGTH_HINT if group == "audio_kwargs" and key in ("max_length", "truncation") else _REFUSED.get(key)
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


class CrabProcessor(ProcessorMixin):
    r"""
    Args:
        feature_extractor: a `CrabFeatureExtractor`, which owns the audio settings; a `Wav2Vec2FeatureExtractor`
            (an encoder's, or one saved by earlier Crab releases) becomes one with its `sampling_rate` and
            `padding_value`.
        tokenizer: a RoBERTa tokenizer.
        max_text_length: transcripts are truncated at this many tokens (128 in the paper).
        text_padding: `"longest"` pads transcripts to the longest of the batch; `"max_length"` always pads them to
            `max_text_length`, as the released code did in training and testing. A model whose head does not mask
            padding (`mask_padding=False`) computes another function under other padding, so training saves the
            padding it used here and every caller (pipeline, `crab predict`, handler, Space) inherits it.
        max_duration_s / normalization / waveform_mean / waveform_std: the feature extractor's settings (see
            `CrabFeatureExtractor`), set on it when given (on a copy of a `CrabFeatureExtractor` passed in, so
            processors sharing one do not change each other). Unset: the feature extractor's own. Processors
            saved by earlier Crab releases keep them here, in `processor_config.json`; they load into the feature
            extractor, which saves them from then on.
        shape_buckets: the padded lengths the model was trained with (`ShapeBuckets`, or its dict `{"audio":
            [16 kHz samples], "text": [tokens]}`; `train.py --shape_buckets K` sets them), applied by a call that
            passes `pad_to_buckets=True`. None: none saved.

    `max_duration_s`, `normalization`, `waveform_mean`, `waveform_std`, `set_waveform_stats` and `sampling_rate`
    read and write the feature extractor's. Bad input gets an error naming the input and the fix (the audio's from
    the feature extractor; a transcript that is not a string from here). docs/bad_input.md lists every case.
    """

    valid_processor_kwargs = CrabProcessorKwargs
    text_kwargs = CrabProcessorKwargs._defaults["text_kwargs"]  # transformers' call defaults, written once above
    audio_kwargs = CrabProcessorKwargs._defaults["audio_kwargs"]

    def __init__(
        self,
        feature_extractor,
        tokenizer,
        max_duration_s: float | None = ...,
        max_text_length: int = MAX_TEXT_TOKENS,
        normalization: str | None = None,
        text_padding: str = "longest",
        waveform_mean: float | None = None,
        waveform_std: float | None = None,
        shape_buckets: ShapeBuckets | dict | None = None,
        **kwargs,
    ):
        check_processor_settings(max_text_length=max_text_length, text_padding=text_padding)
        audio_settings = {
            key: value
            for key, value in [
                ("normalization", normalization),
                ("waveform_mean", waveform_mean),
                ("waveform_std", waveform_std),
            ]
            if value is not None
        }
        if max_duration_s is not ...:
            audio_settings["max_duration_s"] = max_duration_s
        self.text_padding = text_padding
        self.max_text_length = max_text_length
        self.shape_buckets = shape_buckets
        super().__init__(as_crab_feature_extractor(feature_extractor, **audio_settings), tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        # the folder's config.json names the Crab model code in `auto_map`; the tokenizer and feature extractor
        # need none of it, so loading them should not ask whether to run it
        kwargs.setdefault("trust_remote_code", False)
        # the tokenizer's loader reads config.json: known as a Crab config, it is not taken for an unknown model;
        # the feature extractor saved as `CrabFeatureExtractor` is found by that name
        from transformers import AutoConfig, AutoFeatureExtractor

        from .configuration_crab import CrabConfig

        AutoConfig.register(CrabConfig.model_type, CrabConfig, exist_ok=True)
        AutoFeatureExtractor.register(CrabConfig, CrabFeatureExtractor, exist_ok=True)
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
    def model_input_names(self) -> list[str]:
        return ["input_values", "attention_mask", "input_ids", "text_attention_mask"]

    @property
    def shape_buckets(self) -> ShapeBuckets | None:
        """The saved shape buckets (None: none), which a call applies with `pad_to_buckets=True`."""
        saved = self.__dict__.get("shape_buckets")
        return None if saved is None else ShapeBuckets.of(saved)

    @shape_buckets.setter
    def shape_buckets(self, value: ShapeBuckets | dict | None) -> None:
        # kept as its dict under the attribute's own name: what `to_dict` saves in processor_config.json
        self.__dict__["shape_buckets"] = None if value is None else ShapeBuckets.of(value).to_dict()

    def _call_buckets(self, pad_to_buckets) -> ShapeBuckets:
        """A call's `pad_to_buckets=`: None/False (none), True (the saved ones), or the buckets themselves."""
        if pad_to_buckets is None or pad_to_buckets is False:
            return ShapeBuckets()
        if pad_to_buckets is True:
            if self.shape_buckets is None:
                raise ValueError(
                    "pad_to_buckets=True pads to the buckets saved with the processor, and it has none (the model was "
                    "trained without --shape_buckets); pass them: pad_to_buckets={'audio': [16 kHz samples, ...], "
                    "'text': [tokens, ...]}"
                )
            return self.shape_buckets
        return ShapeBuckets.of(pad_to_buckets)

    # -- audio: the feature extractor's settings --------------------------------------------------------------
    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    # the audio settings are the feature extractor's: set here, they are set there
    max_duration_s = _FeatureExtractorSetting()
    normalization = _FeatureExtractorSetting()
    waveform_mean = _FeatureExtractorSetting()
    waveform_std = _FeatureExtractorSetting()

    def set_waveform_stats(self, mean: float, std: float) -> None:
        """The feature extractor's `set_waveform_stats`: global statistics of the training audio, global
        normalisation."""
        self.feature_extractor.set_waveform_stats(mean, std)

    def prepare_waveform(
        self, audio, sampling_rate: int | None, name: str = "audio", max_duration_s: float | None = ...
    ) -> np.ndarray:
        """The feature extractor's `prepare_waveform`: one waveform as the model reads it, unpadded."""
        return self.feature_extractor.prepare_waveform(audio, sampling_rate, name, max_duration_s)

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
            raise unpadded_batch_error(padding, "transcripts", "max_length")
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
        check_pad_to_multiple_of(options.get("pad_to_multiple_of"))
        check_flag("return_attention_mask", return_attention_mask)
        for key in ("add_special_tokens", "verbose"):
            check_flag(key, options.get(key))
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
        self,
        texts: list[str],
        names: Sequence[str] | None = None,
        return_attention_mask: bool = True,
        pad_to_buckets: tuple[int, ...] | None = None,
        **options,
    ) -> dict[str, np.ndarray]:
        """Transcripts -> `input_ids` (B, L) and `text_attention_mask` (B, L), then padded on to the bucket of L
        among `pad_to_buckets` (tokens)."""
        for i, text in enumerate(texts):
            check_transcript(text, f"the transcript of {names[i]}" if names else f"transcript {i}")
        texts = [clean_transcript(text) for text in texts]  # as in training: nothing visible is the empty one
        with _TOKENIZER_LOCK:
            encoded = self.tokenizer(texts, return_tensors="np", return_attention_mask=True, **options)
        input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
        extra = bucket_length(input_ids.shape[1], pad_to_buckets) - input_ids.shape[1]
        if extra:
            input_ids = np.pad(input_ids, ((0, 0), (0, extra)), constant_values=self.tokenizer.pad_token_id)
            attention_mask = np.pad(attention_mask, ((0, 0), (0, extra)))
        if not return_attention_mask:
            return {"input_ids": input_ids}
        return {"input_ids": input_ids, "text_attention_mask": attention_mask}

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
        pad_to_buckets: ShapeBuckets | dict | list | bool | None = None,
        **kwargs: Unpack[CrabProcessorKwargs],
    ) -> BatchFeature:
        """Process one utterance or a batch.

        Args:
            audio: a 1-D waveform; a list of waveforms, each 1-D or 2-D ((samples, channels) or (channels,
                samples), downmixed to mono); or a 2-D array/tensor (B, N), read as B waveforms. Wrap one
                multichannel recording in a list.
            text: the transcript(s), one per waveform.
            names: what to call each utterance in errors and warnings (default `audio 0`, `audio 1`, ...).
            pad_to_buckets: pad the batch to shape buckets (`ShapeBuckets`; a dict `{"audio": [16 kHz samples],
                "text": [tokens]}`; a list: audio buckets only; `True`: the saved `shape_buckets`): the audio to the
                smallest audio bucket that holds its longest waveform, the transcripts likewise in tokens; a batch
                longer than every bucket pads to its longest. Unset: no buckets.
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
        check_processor_settings(max_text_length=self.max_text_length, text_padding=self.text_padding)
        kwargs = self._call_keywords(kwargs, None if audio is None else names[0] if names else "audio 0")
        buckets = self._call_buckets(pad_to_buckets)
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
            data.update(self.feature_extractor(audio, names=names, pad_to_buckets=buckets.audio, **audio_kwargs))
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
            data.update(self._tokenize(texts, names, pad_to_buckets=buckets.text, **tokenizer_options))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


__all__ = [
    "CrabProcessor",
    "CrabProcessorKwargs",
    "CrabAudioKwargs",
    "check_processor_settings",
]
