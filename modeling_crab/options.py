"""Crab's settings declared once, without torch: every enumerated setting's allowed values, the head's options
(`HeadOptions`, the fields of `CrabConfig` a training run chooses) and the one check of a declared setting
(`option_problems`).

A setting's field says everything about it in its `metadata`: `help` (the `--help` line of train.py), and either
`choices` (the allowed values; for a list, of each element) or `check`, a pair (test, what to pass). `CrabConfig`,
train.py's parser and its option check read them from here, so a value is refused with the same words whether it
comes from a config file, the command line or Python. This module imports nothing heavy: `train.py --help` and the
corpus recipes start without torch.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields

# The paper's encoders: what `CrabConfig.from_pretrained_encoders` and train.py load unless told otherwise.
AUDIO_ENCODER = "microsoft/wavlm-large"
TEXT_ENCODER = "roberta-large"
MLCS_TAPS = ("audio_unimodal", "text_unimodal", "audio_pooled", "text_pooled", "fusion")
UNIMODAL_TAPS = ("pre_gru", "post_gru")  # released code, paper text
MLCS_LOSSES = ("mpcl", "supcon")
AUDIO_ATTENTIONS = ("sdpa", "eager")
HEAD_INITS = ("normal", "pytorch")  # transformers', the release's
FP32_UNDER_AUTOCAST = ("feature_encoder", "gru")
# The processor's input settings of the paper's recipe (SPEC §3): the training crop and the transcript length, and the
# ways of padding transcripts and normalising waveforms.
TRAINING_CROP_S = 12.0
MAX_TEXT_TOKENS = 128
TEXT_PADDINGS = ("longest", "max_length")
NORMALIZATIONS = ("global", "utterance", "none")


def _finite(test):
    return lambda value: isinstance(value, (int, float)) and math.isfinite(value) and test(value)


# The checks settings share: (test, what to pass).
PROBABILITY = (_finite(lambda v: 0 <= v < 1), "a probability in [0, 1)")
CLOSED_PROBABILITY = (_finite(lambda v: 0 <= v <= 1), "a probability in [0, 1]")
NON_NEGATIVE = (_finite(lambda v: v >= 0), "a number >= 0")
POSITIVE = (_finite(lambda v: v > 0), "a positive number")
AT_LEAST_ONE = (lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1")


class _Metadata(dict):
    """A field's metadata. Listed or copied as a mapping (`dict(field.metadata)`, `field.metadata.copy()`: what
    transformers' `HfArgumentParser` hands to `argparse.add_argument`), it leaves out the `check`, which argparse does
    not know; `.get("check")` reads it."""

    def keys(self):
        return [key for key in super().keys() if key != "check"]

    def copy(self) -> dict:
        return {key: self[key] for key in self.keys()}


def option(default=MISSING, help: str = "", choices: tuple | None = None, check: tuple | None = None, **kwargs):
    """A dataclass field carrying its help and its allowed values (`choices`) or its check (`check`)."""
    metadata = _Metadata(help=help)
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if check is not None:
        metadata["check"] = check
    return field(default=default, metadata=metadata, **kwargs)


def option_problems(settings, names=None, prefix: str = "--") -> list[str]:
    """One line per field of the dataclass `settings` whose value its `choices` or `check` refuse, naming the
    setting (`--name` for flags, `name` for configs) and what to pass. None passes where the field's default is None.
    `names`: only these fields."""
    problems = []
    for spec in fields(settings):
        if names is not None and spec.name not in names:
            continue
        value = getattr(settings, spec.name)
        if value is None and (spec.default is None or spec.default is MISSING and spec.default_factory is MISSING):
            continue
        problem = value_problem(spec.metadata, value)
        if problem:
            problems.append(f"{prefix}{spec.name} {value!r}: pass {problem}")
    return problems


def value_problem(metadata, value) -> str | None:
    """What to pass instead of `value`, by a field's `choices` or `check`; None when it is allowed."""
    choices = metadata.get("choices")
    if choices is not None:
        if isinstance(value, (list, tuple)):
            if not value or any(item not in choices for item in value):
                return f"one or more of {', '.join(choices)}"
        elif value not in choices:
            return f"one of {', '.join(choices)}"
    check = metadata.get("check")
    if check is not None:
        test, expected = check
        try:
            allowed = value is None or test(value)
        except TypeError:
            allowed = False
        if not allowed:
            return expected
    return None


@dataclass(kw_only=True)
class HeadOptions:
    """The switches of the Crab head and its objective that a training run chooses; `CrabConfig`'s fields, and
    train.py's flags of the same names (`python train.py --help`). `CrabConfig`'s docstring says what each does."""

    mask_padding: bool = option(True, "mask padded frames and tokens in the head; false: the released head's numerics")
    unimodal_tap: str = option(
        "pre_gru", "where the unimodal CSLs read: pre_gru (released code) or post_gru (paper)", UNIMODAL_TAPS
    )
    mlcs_taps: list[str] | None = option(None, "the CSL taps in the MLCS term (none: all five)", MLCS_TAPS)
    mlcs_temperature: float = option(0.1, "tau of MPCL/SupCon", check=POSITIVE)
    mlcs_weight: float = option(2.0, "alpha, the MLCS term's weight; 0 trains with CE alone", check=NON_NEGATIVE)
    mlcs_loss: str = option("mpcl", "mpcl (paper) or supcon", MLCS_LOSSES)
    mlcs_gather: bool = option(False, "contrast over the global batch of all DDP ranks")
    attribute_loss_weight: float = option(1.0, "beta of the attribute term mean(1 - CCC)", check=NON_NEGATIVE)
    attribute_contrast_bins: int = option(
        3,
        "attributes-only MLCS: positives share every attribute's bin (N per 0-1); 0: none",
        check=(
            lambda v: isinstance(v, int) and v >= 0,
            "a whole number >= 0 (0: no MLCS for an attributes-only model)",
        ),
    )
    classifier_dropout: float = option(0.5, "dropout of the head", check=PROBABILITY)
    cross_attention_dropout: float = option(0.5, "dropout of the cross-modal attention", check=PROBABILITY)
    modality_dropout: float = option(
        0.0,
        "probability that a training transcript is replaced by the empty one, so that the model also classifies "
        "audio alone (the pipeline's text='', crab predict --audio-only). Not in the paper",
        check=PROBABILITY,
    )
    pass_audio_attention_mask: bool | None = option(
        None,
        "give the speech encoder the waveform padding mask: none = only encoders with a layer-norm CNN "
        "(WavLM-large); true = always (the release)",
    )
    audio_attention: str = option("sdpa", "WavLM self-attention: sdpa (fused) or eager", AUDIO_ATTENTIONS)
    head_init: str = option(
        "normal", "how a new head starts: normal (transformers') or pytorch (the release's nn.Module)", HEAD_INITS
    )
