"""Train Crab: WavLM + RoBERTa + the Crab head, with class-weighted CE and Multi Layer Contrastive Supervision.

    python train.py                                       # built-in demo: synthetic corpus, tiny model, CPU, minutes
    python train.py --manifest data/iemocap/manifest.csv --output_dir outputs/iemocap
    python train.py configs/meld.json --num_train_epochs 1   # a JSON/YAML config file, then CLI overrides
    python train.py --manifest m.csv --recipe release     # the authors' released training loop, setting by setting
    accelerate launch train.py configs/msp_podcast.json   # DDP (see docs/training.md for FSDP)

Every argument, with the value this run would use: `python train.py [config file] [flags] --help`. The defaults are
written once, below: the paper's hyperparameters with our training loop (`CRAB_RECIPE`), what the released loop
changes (`RELEASE_RECIPE`), small-model settings for `--tiny` (`SMALL_MODEL`); config files hold only what differs.
At the end `output_dir` holds `eval_results.json` (with the recipe and padding the model was trained with),
`predictions_<split>.csv`, `confusion_matrix_*.png`, `training_curves.png` and the inference export in `inference/`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
from argparse import SUPPRESS, ArgumentDefaultsHelpFormatter, Namespace, RawDescriptionHelpFormatter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainingArguments

from modeling_crab.configuration_crab import (
    AUDIO_ATTENTIONS,
    MAX_TEXT_TOKENS,
    MLCS_LOSSES,
    MLCS_TAPS,
    NORMALIZATIONS,
    TEXT_PADDINGS,
    TRAINING_CROP_S,
    UNIMODAL_TAPS,
    CrabConfig,
    min_audio_samples,
)
from modeling_crab.manifest import EMPTY_TRANSCRIPTS
from modeling_crab.training.augment import NOISE_TYPES, SPEC_AUGMENT_KEYS, AugmentationError, WaveformAugmentation

logger = logging.getLogger("crab.train")


RECIPES = ("crab", "release")


@dataclass
class ModelArguments:
    _argument_group_name = "ModelArguments (the recipe, encoders and head)"

    recipe: str = field(
        default="crab",
        metadata={
            "help": "crab: our training loop (masked padding, per-batch text padding, length-grouped batches); "
            "release: the authors' released training loop, setting by setting (docs/training.md)",
            "choices": list(RECIPES),
        },
    )
    audio_encoder: str = field(default=CrabConfig.audio_encoder_name, metadata={"help": "speech encoder on the Hub"})
    text_encoder: str = field(default=CrabConfig.text_encoder_name, metadata={"help": "text encoder on the Hub"})
    tiny: bool = field(
        default=False,
        metadata={
            "help": "random tiny encoders, a local tokenizer and small-model settings (SMALL_MODEL: demo, tests)"
        },
    )
    model_name_or_path: str | None = field(default=None, metadata={"help": "fine-tune an existing Crab checkpoint"})
    mask_padding: bool = field(
        default=CrabConfig.mask_padding, metadata={"help": "False: the released head's unmasked numerics"}
    )
    unimodal_tap: str = field(
        default=CrabConfig.unimodal_tap,
        metadata={"help": "pre_gru (released code) or post_gru (paper)", "choices": list(UNIMODAL_TAPS)},
    )
    freeze_feature_encoder: bool = field(default=True, metadata={"help": "freeze the speech encoder's CNN"})
    classifier_dropout: float | None = field(
        default=None,
        metadata={"help": f"head dropout; none: {CrabConfig.classifier_dropout}, or a fine-tuned checkpoint's own"},
    )
    cross_attention_dropout: float | None = field(
        default=None,
        metadata={
            "help": f"cross-modal attention dropout; none: {CrabConfig.cross_attention_dropout} or a checkpoint's"
        },
    )
    modality_dropout: float = field(
        default=CrabConfig.modality_dropout,
        metadata={
            "help": "probability that a training transcript is replaced by the empty one, so that the model also "
            "classifies audio alone (the pipeline's text='', crab predict --audio-only). Not in the paper"
        },
    )
    pass_audio_attention_mask: bool | None = field(
        default=None,
        metadata={
            "help": "give the speech encoder the waveform padding mask: none = only encoders with a layer-norm CNN "
            "(WavLM-large); true = always (the release)"
        },
    )
    audio_attention: str = field(
        default="sdpa",
        metadata={"help": "WavLM self-attention: sdpa (fused) or eager", "choices": list(AUDIO_ATTENTIONS)},
    )
    frozen_baseline: bool = field(
        default=False,
        metadata={
            "help": "after training, train the head alone on the encoders frozen at their starting weights "
            "(--encoder_cache, into output_dir/frozen_baseline) and show both in the summary: fine-tuning that "
            "loses to it overfits"
        },
    )
    compile_regions: str | None = field(
        default=None,
        metadata={
            "help": "torch.compile every encoder layer and the head blocks with this backend (inductor on GPUs): "
            "minutes of compilation up front, then fewer kernel launches (same function). --torch_compile instead "
            "compiles the whole model as one region"
        },
    )


@dataclass
class DataArguments:
    _argument_group_name = "DataArguments (manifest, splits, audio and text preprocessing)"

    manifest: str | None = field(
        default=None, metadata={"help": "CSV/JSONL manifest or saved datasets folder; none: the built-in demo"}
    )
    audio_root: str | None = field(default=None, metadata={"help": "folder relative audio paths start from"})
    train_split: str = field(default="train", metadata={"help": "the manifest's split to train on"})
    eval_split: str = field(
        default="dev", metadata={"help": "the split evaluated every epoch; the best checkpoint is chosen on it"}
    )
    test_split: str | None = field(default="test", metadata={"help": "evaluated at the end if the manifest has it"})
    labels: str | None = field(
        default=None, metadata={"help": "comma-separated classes, in logit order; none: the train split's, sorted"}
    )
    attributes: str | None = field(
        default=None, metadata={"help": "attribute columns to predict too (0-1), e.g. arousal,valence,dominance"}
    )
    attributes_only: bool = field(default=False, metadata={"help": "predict --attributes alone, with no classes"})
    max_duration_s: float = field(
        default=TRAINING_CROP_S, metadata={"help": "audio is cropped to its first N seconds"}
    )
    max_text_length: int = field(default=MAX_TEXT_TOKENS, metadata={"help": "transcripts are truncated at N tokens"})
    text_padding: str = field(
        default="longest",
        metadata={
            "help": "longest: pad transcripts to the longest of the batch; max_length: always to max_text_length "
            "(the release). Saved with the processor, so inference pads the same way",
            "choices": list(TEXT_PADDINGS),
        },
    )
    normalization: str = field(default="global", metadata={"help": "global (train-set stats), utterance or none"})
    test_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "batch size of the final test-split evaluation (none: per_device_eval_batch_size; 1: each clip "
            "alone, without audio padding, the release's test protocol)"
        },
    )
    preprocessing_num_workers: int = field(default=4, metadata={"help": "threads that read audio for the scan"})
    empty_transcripts: str = field(
        default="error",
        metadata={
            "help": "a row with an empty transcript: error, or audio_only (the release)",
            "choices": list(EMPTY_TRANSCRIPTS),
        },
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "leave bad rows out (output_dir/skipped_rows.csv lists them)"},
    )
    encoder_cache: str | None = field(
        default=None,
        metadata={
            "help": "frozen-encoder mode: cache both encoders' outputs for every split in this folder (reused while "
            "encoders, processor and data are unchanged; an interrupted encoding resumes) and train only the head "
            "and CSL legs from it, in minutes. Not the paper's recipe: no encoder fine-tuning; needs the masked "
            "head (--recipe crab) (docs/training.md)"
        },
    )


@dataclass
class CrabLossArguments:
    _argument_group_name = "CrabLossArguments (the objective, saved in the model's config)"

    mlcs_weight: float = field(default=CrabConfig.mlcs_weight, metadata={"help": "alpha; 0 trains with CE alone"})
    mlcs_temperature: float = field(default=CrabConfig.mlcs_temperature, metadata={"help": "tau of MPCL/SupCon"})
    mlcs_loss: str = field(
        default=CrabConfig.mlcs_loss, metadata={"help": "mpcl (paper) or supcon", "choices": list(MLCS_LOSSES)}
    )
    mlcs_taps: list[str] = field(default_factory=lambda: list(MLCS_TAPS), metadata={"help": "active CSL taps"})
    mlcs_gather: bool = field(default=False, metadata={"help": "contrast over the global batch of all DDP ranks"})
    class_weighted: bool = field(default=True, metadata={"help": "w_j = N / (C N_j) in the CE term"})
    attribute_loss_weight: float = field(
        default=CrabConfig.attribute_loss_weight, metadata={"help": "beta of the attribute term mean(1 - CCC)"}
    )
    attribute_contrast_bins: int = field(
        default=CrabConfig.attribute_contrast_bins,
        metadata={"help": "attributes-only MLCS: positives share every attribute's bin (N per 0-1); 0: none"},
    )


@dataclass
class OptimizerArguments:
    _argument_group_name = (
        "OptimizerArguments (hierarchical learning rates, early stopping and the release's optimiser switches)"
    )

    encoder_learning_rate: float = field(default=1e-6, metadata={"help": "lr of both encoders (head: learning_rate)"})
    decay_every_parameter: bool = field(
        default=False,
        metadata={"help": "weight decay on biases and LayerNorm weights too, as torch AdamW and the release do"},
    )
    epoch_cosine: bool = field(
        default=False,
        metadata={
            "help": "the release's schedule: torch CosineAnnealingLR(T_max=num_train_epochs) per parameter group, "
            "stepped once per epoch, down to learning_rate_floor (head) and encoder_learning_rate_floor; "
            "lr_scheduler_type and warmup are then unused"
        },
    )
    learning_rate_floor: float = field(default=1e-6, metadata={"help": "eta_min of the head under --epoch_cosine"})
    encoder_learning_rate_floor: float = field(
        default=1e-7, metadata={"help": "eta_min of both encoders under --epoch_cosine"}
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "stop when the dev metric (metric_for_best_model) has not improved for N evaluations; the best "
            "checkpoint is kept and loaded at the end. None: train every epoch"
        },
    )
    full_accumulation_divisor: bool = field(
        default=False,
        metadata={
            "help": "divide the loss by gradient_accumulation_steps also in an epoch's last, shorter accumulation "
            "(the release); false: by the micro-batches that step has"
        },
    )


@dataclass
class AugmentationArguments:
    _argument_group_name = "AugmentationArguments (training audio only: waveform augmentation, SpecAugment)"

    pitch_prob: float = field(
        default=WaveformAugmentation.pitch_prob,
        metadata={"help": "pitch shift probability per clip"},
    )
    pitch_semitones: list[float] = field(
        default_factory=lambda: list(WaveformAugmentation.pitch_semitones),
        metadata={"help": "LOW HIGH, in semitones"},
    )
    speed_factors: list[float] = field(
        default_factory=lambda: list(WaveformAugmentation.speed_factors),
        metadata={"help": "speed perturbation: a factor drawn per clip from these (0.9 1.0 1.1); none: off"},
    )
    gain_db: float = field(
        default=WaveformAugmentation.gain_db,
        metadata={"help": "a gain drawn in +-N dB, not clipped"},
    )
    noise_prob: float = field(default=WaveformAugmentation.noise_prob, metadata={"help": "noise probability per clip"})
    noise_snr_db: list[float] = field(
        default_factory=lambda: list(WaveformAugmentation.noise_snr_db),
        metadata={"help": "LOW HIGH: SNR in dB"},
    )
    noise_types: list[str] = field(
        default_factory=lambda: list(WaveformAugmentation.noise_types),
        metadata={"help": f"generated noise colours to draw from ({', '.join(NOISE_TYPES)})"},
    )
    noise_dir: str | None = field(
        default=WaveformAugmentation.noise_dir,
        metadata={"help": "a folder of noise recordings (WAV/FLAC) to add instead of generated noise"},
    )
    reverb_prob: float = field(
        default=WaveformAugmentation.reverb_prob,
        metadata={"help": "reverberation probability per clip"},
    )
    reverb_rt60_s: list[float] = field(
        default_factory=lambda: list(WaveformAugmentation.reverb_rt60_s),
        metadata={"help": "LOW HIGH: RT60 in s"},
    )
    mask_time_prob: float | None = field(
        default=None,
        metadata={"help": "SpecAugment: the speech encoder's time-masking probability; none: the encoder's own"},
    )
    mask_time_length: int | None = field(
        default=None, metadata={"help": "SpecAugment: frames per time mask; none: the encoder's own"}
    )
    mask_feature_prob: float | None = field(
        default=None, metadata={"help": "SpecAugment: the feature-masking probability; none: the encoder's own"}
    )
    mask_feature_length: int | None = field(
        default=None, metadata={"help": "SpecAugment: channels per feature mask; none: the encoder's own"}
    )

    @property
    def waveform(self) -> WaveformAugmentation | None:
        """The waveform augmentation these flags describe, or None when it changes nothing."""
        augmentation = WaveformAugmentation(**{name: getattr(self, name) for name in WAVEFORM_FLAGS})
        return augmentation if augmentation.active else None

    @property
    def spec_augment(self) -> dict:
        """The speech encoder config's SpecAugment values that these flags set (the others keep the encoder's)."""
        return {name: getattr(self, name) for name in SPEC_AUGMENT_KEYS if getattr(self, name) is not None}


WAVEFORM_FLAGS = [f.name for f in fields(WaveformAugmentation) if f.init]


# ---- defaults: each written once. The dataclasses above hold those of Crab's own arguments; the recipes below hold
# TrainingArguments' values and whatever a recipe changes. Layers, lowest first: dataclass defaults < CRAB_RECIPE
# (+ the GPU's settings) < RELEASE_RECIPE with --recipe release < SMALL_MODEL with --tiny < DEMO without a manifest
# < RELEASE_DERIVED's values of a source the file or the flags set < a config file < command-line flags.
# `python train.py [config] [flags] --help` shows the result.

# "crab", the default: the paper's hyperparameters (SPEC §3; effective batch 32, 20 epochs, AdamW 0.01, cosine, best
# dev macro-F1, seed 42) with our training loop (masked padding, length-grouped batches, Trainer's cosine per step).
CRAB_RECIPE = {
    "output_dir": "outputs/crab",
    "learning_rate": 1e-5,
    "weight_decay": 0.01,
    "lr_scheduler_type": "cosine",
    "num_train_epochs": 20,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "gradient_accumulation_steps": 4,
    "seed": 42,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "load_best_model_at_end": True,
    "metric_for_best_model": "macro_f1",
    "greater_is_better": True,
    "remove_unused_columns": False,
    "train_sampling_strategy": "group_by_length",
    "logging_steps": 10,
    "report_to": "none",
    # transformers only goes data-parallel on a machine without GPUs when told to use the CPU (torchrun + gloo)
    "use_cpu": not torch.accelerator.is_available(),
}

# "release": the authors' released training loop (train_crab.py, dataset.py, test_crab.py), setting by setting; only
# what differs from "crab". docs/training.md has the two side by side, with the reasons.
RELEASE_RECIPE = {
    "mask_padding": False,  # the head masks nothing
    "text_padding": "max_length",  # every transcript padded to 128 tokens, in training, dev, test and serving
    "pass_audio_attention_mask": True,  # the waveform mask goes to the speech encoder whatever its CNN norm
    "decay_every_parameter": True,  # three torch AdamW with the default 0.01 on every tensor
    "epoch_cosine": True,  # CosineAnnealingLR(T_max=epochs) stepped per epoch, floors 1e-6 head / 1e-7 encoders
    "max_grad_norm": 0.0,  # no gradient clipping
    "train_sampling_strategy": "random",  # shuffled batches; dev and test in manifest order
    "full_accumulation_divisor": True,  # loss / accumulation steps, also in an epoch's last, shorter step
    "per_device_eval_batch_size": 32,  # dev batched at 4 micro-batches, padded like training (RELEASE_DERIVED)
    # the dev epoch kept: sklearn's default f1_score(average="macro"), over the classes in the dev labels or
    # predictions; `macro_f1` (crab) averages over the whole label set, an absent class counting 0 (SPEC §4)
    "metric_for_best_model": "macro_f1_present",
    "test_batch_size": 1,  # test: one clip at a time (no audio padding), argmax
    "empty_transcripts": "audio_only",  # rows without a transcript are kept, with <s></s> (its fillna(""))
    "bf16": False,  # fp32 throughout, also on GPUs where CRAB_RECIPE turns on bf16 autocast
    "tf32": False,
}
RECIPE_SETTINGS = {"crab": {}, "release": RELEASE_RECIPE}
# What the release derives from another setting unless it is set itself (train_crab.py's argument defaults): target
# -> (source, rule). A source set in a config file or on the command line carries its target along, above every
# preset (SMALL_MODEL's one learning rate included); a target set there itself wins. Otherwise the presets stand,
# which agree with the rules (1e-6 = 1e-5 / 10, 32 = 4 x 8).
RELEASE_DERIVED = {
    "encoder_learning_rate": ("learning_rate", lambda lr: lr / 10),  # its encoders' lr: --lr / 10
    "per_device_eval_batch_size": ("per_device_train_batch_size", lambda batch: 4 * batch),  # dev: 4 micro-batches
}
RECIPE_DERIVED = {"crab": {}, "release": RELEASE_DERIVED}  # crab: 1e-6 and 8 whatever the head's lr and batch


def gpu_defaults() -> dict:
    """On CUDA machines: DataLoader workers (up to 4 per GPU, kept across epochs), so that reading and resampling
    audio overlaps the GPU step (one core turns 16 kHz WAV into batches at about 5000 audio-s/s, 44.1 kHz FLAC at
    about 1200: bench/bench_data.py); on Ampere or newer, bf16 autocast (the speech CNN, the GRUs and the losses stay
    in fp32; logits within 1e-2 of fp32 at base size, 1.5e-2 at large) and TF32 matmuls (`--bf16 false --tf32 false`
    trains in fp32). Fused AdamW is TrainingArguments' default optimizer everywhere. Nothing changes on a machine
    without a GPU."""
    if not torch.cuda.is_available():
        return {}
    cores_per_gpu = (os.cpu_count() or 1) // max(1, torch.cuda.device_count())
    defaults = {"dataloader_num_workers": min(4, max(1, cores_per_gpu)), "dataloader_persistent_workers": True}
    if torch.cuda.get_device_capability() >= (8, 0):
        defaults.update(bf16=True, tf32=True)
    return defaults


# --tiny trains random tiny encoders, not pretrained ones, so it gets small-model settings whatever the recipe: one
# learning rate of 2e-3 for everything (the paper's 1e-5/1e-6 suit pretrained encoders; a tiny random model trained
# with them predicts one class for every clip), the random CNN trained, light dropout, and a small MLCS weight (at
# alpha = 2 the contrastive pull on random features slows a from-scratch model down; see docs/training.md).
SMALL_MODEL = {
    "learning_rate": 2e-3,
    "encoder_learning_rate": 2e-3,
    "freeze_feature_encoder": False,
    "classifier_dropout": 0.1,
    "cross_attention_dropout": 0.1,
    "mlcs_weight": 0.2,
    "weight_decay": 0.05,  # the paper's 0.01 fits the training voices (docs/training.md, "Small data")
    "num_train_epochs": 10,
    "warmup_steps": 10,
    "gradient_accumulation_steps": 1,
    "logging_steps": 5,
}
# No --manifest: the built-in demo corpus, with a tiny model.
DEMO = {"tiny": True, "output_dir": "outputs/demo", "frozen_baseline": True, "attributes": "arousal,valence,dominance"}
# An attributes-only model keeps the dev checkpoint with the best mean CCC (there are no classes to score).
ATTRIBUTES_ONLY = {"metric_for_best_model": "ccc_mean"}


HELP_DESCRIPTION = """\
Train Crab on a manifest, or without --manifest on the built-in demo corpus (tiny model, CPU).

  CONFIG   optional first argument: a JSON or YAML file of flag values (configs/meld.json); flags after it
           override it. The defaults printed below are the values this run would use: the recipe, --tiny or
           the demo, CONFIG and the flags given already applied."""


class _HelpFormatter(RawDescriptionHelpFormatter, ArgumentDefaultsHelpFormatter):
    """The description as written, each flag's default after its help."""


ARGUMENT_GROUPS = (ModelArguments, DataArguments, CrabLossArguments, OptimizerArguments, AugmentationArguments)


def build_parser() -> HfArgumentParser:
    """Six groups, as the dataclasses: Crab's model, data, loss, optimizer and augmentation arguments, then
    transformers' `TrainingArguments` with the first sentence of their help only (`--help` otherwise runs to 700
    lines)."""
    parser = HfArgumentParser(
        (*ARGUMENT_GROUPS, TrainingArguments),
        prog="train.py",
        usage="python train.py [CONFIG] [--flag VALUE ...]    (accelerate launch train.py ... on several GPUs)",
        description=HELP_DESCRIPTION,
        epilog="docs/training.md: the recipes, the outputs, the data format, speed and multi-GPU training.",
        formatter_class=_HelpFormatter,
    )
    training = parser._optionals  # TrainingArguments have no group of their own: the parser's, shown last
    training.title = "TrainingArguments (transformers: optimizer, schedule, precision, saving, logging)"
    parser._action_groups.remove(training)
    parser._action_groups.append(training)
    for action in parser._actions:
        action.option_strings = [option for option in action.option_strings if "-" not in option[2:]]  # no aliases
        if action.dest == "help" or not action.help:
            continue
        if any(option.startswith("--no_") for option in action.option_strings):
            action.help = SUPPRESS  # `--no_X` works, and so does `--X false`, the one shown
        elif action in training._group_actions:
            action.help = _first_sentence(action.help)
    return parser


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def parse_arguments(
    argv: list[str],
) -> tuple[
    ModelArguments, DataArguments, CrabLossArguments, OptimizerArguments, AugmentationArguments, TrainingArguments
]:
    """Arguments with the layered defaults above; `--help` shows the values this run would use."""
    parser = build_parser()
    known = {action.dest for action in parser._actions}
    file_values: dict = {}
    if argv and argv[0].endswith((".json", ".yaml", ".yml")):
        config_file, argv = argv[0], argv[1:]
        file_values = _read_config_file(config_file)
        unknown = sorted(set(file_values) - known)
        if unknown:
            raise SystemExit(f"config file '{config_file}': unknown key(s) {unknown}; see `python train.py --help`")
    # which recipe, model and data: the file's values under the command line's (without --help, which would exit)
    parser.set_defaults(**file_values)
    without_help = [arg for arg in argv if arg not in ("-h", "--help")]
    chosen, _ = parser.parse_known_args(without_help)
    defaults = {**CRAB_RECIPE, **gpu_defaults(), **RECIPE_SETTINGS[chosen.recipe]}
    if chosen.tiny or chosen.manifest is None:
        defaults.update(SMALL_MODEL)
    if chosen.manifest is None:
        defaults.update(DEMO)
    if chosen.attributes_only:
        defaults.update(ATTRIBUTES_ONLY)
    explicit = set(file_values) | given_on_command_line(parser, without_help)
    derived = {
        target: rule(getattr(chosen, source))
        for target, (source, rule) in RECIPE_DERIVED[chosen.recipe].items()
        if source in explicit and target not in explicit
    }
    parser.set_defaults(**{**defaults, **derived, **file_values})
    if "-h" in argv or "--help" in argv:  # show this run's values, the command line's included
        parser.set_defaults(**vars(parser.parse_known_args(without_help)[0]))
    try:
        arguments = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ValueError as error:  # TrainingArguments' own checks
        parser.exit(2, f"train.py: error: {error}\n")
    problems = check_arguments(*arguments)
    if problems:  # without argparse's usage: it lists every TrainingArguments flag
        parser.exit(2, "train.py: error: " + "\n  ".join(problems) + "\n")
    return arguments


def given_on_command_line(parser: HfArgumentParser, argv: list[str]) -> set[str]:
    """The arguments `argv` sets itself (abbreviated and `--no_X` flags included), not by a default."""
    unset = object()
    given, _ = parser.parse_known_args(argv, namespace=Namespace(**{action.dest: unset for action in parser._actions}))
    return {name for name, value in vars(given).items() if value is not unset}


# Enumerated options: a value from a config file never meets argparse's `choices`, so every one is checked here.
# The fields' own `choices` (argparse's, for the command line) plus --normalization, which argparse leaves to this
# check so that its message lists the choices the same way for the command line and a file.
CHOICES = {
    **{
        option.name: tuple(option.metadata["choices"])
        for arguments in ARGUMENT_GROUPS
        for option in fields(arguments)
        if "choices" in option.metadata
    },
    "normalization": NORMALIZATIONS,
}
# Bounded options: (test, what the value must be).
BOUNDS = {
    "max_duration_s": (lambda v: math.isfinite(v) and v > 0, "a positive number of seconds"),
    "max_text_length": (lambda v: v >= 2, "a whole number of tokens >= 2 (<s> and </s>)"),
    "preprocessing_num_workers": (lambda v: v >= 1, "a whole number >= 1"),
    "mlcs_weight": (lambda v: math.isfinite(v) and v >= 0, "a number >= 0 (0 trains with CE alone)"),
    "mlcs_temperature": (lambda v: math.isfinite(v) and v > 0, "a positive number"),
    "attribute_loss_weight": (lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    "attribute_contrast_bins": (lambda v: v >= 0, "a whole number >= 0 (0: no MLCS for an attributes-only model)"),
    "encoder_learning_rate": (lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    "classifier_dropout": (lambda v: v is None or 0 <= v < 1, "a probability in [0, 1)"),
    "cross_attention_dropout": (lambda v: v is None or 0 <= v < 1, "a probability in [0, 1)"),
    "learning_rate": (lambda v: math.isfinite(v) and v > 0, "a positive number"),
    "per_device_train_batch_size": (lambda v: v >= 1, "a whole number >= 1"),
    "per_device_eval_batch_size": (lambda v: v >= 1, "a whole number >= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "a whole number >= 1"),
    "label_smoothing_factor": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "early_stopping_patience": (lambda v: v is None or v >= 1, "a whole number of evaluations >= 1"),
    "mask_time_prob": (lambda v: v is None or 0 <= v <= 1, "a probability in [0, 1]"),
    "mask_feature_prob": (lambda v: v is None or 0 <= v <= 1, "a probability in [0, 1]"),
    "mask_time_length": (lambda v: v is None or v >= 1, "a whole number of frames >= 1"),
    "mask_feature_length": (lambda v: v is None or v >= 1, "a whole number of channels >= 1"),
}


def check_arguments(*arguments) -> list[str]:
    """Every enumerated or bounded option of the six argument dataclasses, each problem naming its flag; the
    waveform augmentation's settings (and its noise folder) as `WaveformAugmentation` checks them; waveform
    augmentation with `--encoder_cache`."""
    values = {name: value for group in arguments for name, value in vars(group).items()}
    problems = []
    for name, allowed in CHOICES.items():
        if values[name] not in allowed:
            problems.append(f"--{name} {values[name]!r} is not one of {', '.join(allowed)}")
    unknown_taps = [tap for tap in values["mlcs_taps"] if tap not in MLCS_TAPS]
    if unknown_taps or not values["mlcs_taps"]:
        problems.append(f"--mlcs_taps {values['mlcs_taps']}: pass one or more of {', '.join(MLCS_TAPS)}")
    for name, (test, expected) in BOUNDS.items():
        if not test(values[name]):
            problems.append(f"--{name} {values[name]!r}: pass {expected}")
    if values["attributes_only"] and not attribute_names(values["attributes"]):
        problems.append("--attributes_only needs the attributes to predict: --attributes arousal,valence,dominance")
    if values["early_stopping_patience"] and not (
        values["load_best_model_at_end"] and values["eval_strategy"] != "no"
    ):
        problems.append(
            "--early_stopping_patience needs evaluation and model selection: --eval_strategy epoch (or steps) and "
            "--load_best_model_at_end true"
        )
    try:  # the augmentation checks its own settings, the noise folder included
        augmentation = WaveformAugmentation(**{name: values[name] for name in WAVEFORM_FLAGS})
    except AugmentationError as error:
        problems.extend(str(error).splitlines())
    else:
        if augmentation.active and values["encoder_cache"]:
            problems.append(
                "--encoder_cache trains on encoder outputs cached once per clip, which waveform augmentation cannot "
                "change; drop --encoder_cache, or the augmentation flags (--pitch_prob, --speed_factors, --gain_db, "
                "--noise_prob, --reverb_prob)"
            )
    return problems


def attribute_names(flag: str | None) -> list[str]:
    """`--attributes` as a list of column names ("none" or empty: no attributes)."""
    names = [name.strip() for name in (flag or "").split(",") if name.strip()]
    return [] if names in ([], ["none"]) else names


def _read_config_file(path: str) -> dict:
    text = Path(path).read_text()
    if path.endswith(".json"):
        return json.loads(text)
    import yaml

    return yaml.safe_load(text) or {}


# ---- `--help` stops here: the training stack below takes seconds more to import --------------------------------------
if __name__ == "__main__" and {"-h", "--help"} & set(sys.argv[1:]):
    parse_arguments(sys.argv[1:])

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    EarlyStoppingCallback,
    RobertaTokenizerFast,
    Wav2Vec2FeatureExtractor,
    set_seed,
)

from modeling_crab import CrabForEmotionClassification, CrabProcessor, export_for_inference  # noqa: E402
from modeling_crab.attributes import ATTRIBUTE_NAMES  # noqa: E402
from modeling_crab.manifest import ManifestError, column_names, load_manifest, select_splits  # noqa: E402
from modeling_crab.training import (  # noqa: E402
    CrabAudioTextDataset,
    CrabDataCollator,
    CrabTrainer,
    build_compute_metrics,
    build_tiny_tokenizer,
    check_label_set,
    classification_metrics,
    compute_class_weights,
    confusion,
    label_names_from,
    scan_manifest,
    tiny_crab_config,
)
from modeling_crab.training.checkpoints import (  # noqa: E402
    CheckpointError,
    check_output_dir,
    check_resume_config,
    check_resume_weights_and_optimizer,
    clear_checkpoints,
    resolve_resume_checkpoint,
)
from modeling_crab.training.feature_cache import (  # noqa: E402
    CachedFeatures,
    FeatureCacheError,
    cache_key,
    collate_cached,
    encode_dataset,
    encoder_fingerprint,
    freeze_encoders,
)
from modeling_crab.training.metrics import (  # noqa: E402
    SplitPredictions,
    attribute_metrics,
    split_predictions,
    summary_table,
)
from modeling_crab.training.plots import plot_attributes, plot_confusion_matrix, plot_training_curves  # noqa: E402
from modeling_crab.wavlm_attention import quiet_eager_mask_warning  # noqa: E402


def build_processor(model_args, data_args, train_texts: list[str], checkpoint: str | None) -> CrabProcessor:
    """The saved processor when resuming or fine-tuning; else a tokenizer + feature extractor for the encoders."""
    source = checkpoint or model_args.model_name_or_path
    if source:
        processor = CrabProcessor.from_pretrained(source, trust_remote_code=False)  # our class; no prompt
    else:
        if model_args.tiny:
            tokenizer = build_tiny_tokenizer(train_texts, vocab_size=1000)
            feature_extractor = Wav2Vec2FeatureExtractor(
                feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=False, return_attention_mask=True
            )
        else:
            tokenizer = RobertaTokenizerFast.from_pretrained(model_args.text_encoder)
            feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(model_args.audio_encoder)
        processor = CrabProcessor(feature_extractor, tokenizer)
    processor.max_duration_s = data_args.max_duration_s
    processor.max_text_length = data_args.max_text_length
    processor.text_padding = data_args.text_padding
    processor.normalization = data_args.normalization
    return processor


def note_classes_missing(rows: dict[str, list], splits: dict[str, str], label_names: list[str], test: bool) -> None:
    """A class without a clip in the dev (or labelled test) split: its recall counts as 0 in UAR and macro-F1,
    which average over every class, so the scores there cannot reach 1; said once, with the ceiling."""
    for role in ("eval", "test") if test else ("eval",):
        present = {u.label for u in rows.get(role, [])}
        missing = [name for name in label_names if name not in present]
        if missing and len(missing) < len(label_names):
            ceiling = 1 - len(missing) / len(label_names)
            logger.warning(
                f"split '{splits[role]}' has no clip of {missing}: their recall counts as 0 in its UAR and macro-F1, "
                f"which average over all {len(label_names)} classes, so its UAR is at most {ceiling:.2f}; add clips "
                "of them to compare models on every class"
            )


def note_reused_audio(rows: dict[str, list], splits: dict[str, str], shown: int = 5) -> None:
    """One clip (the same audio file and segment) in several rows is said once per kind, with the rows; nothing is
    dropped: in training and in dev or test, in dev and test, under different labels, or twice in one split."""
    clips: dict[tuple, dict[str, object]] = {}
    for part in rows.values():
        for u in part:  # keyed by row: a split in two roles (--eval_split = --train_split) counts each row once
            clips.setdefault((os.path.realpath(u.audio), u.start, u.end), {})[u.where] = u
    train = splits["train"]
    held_out = {splits[role] for role in ("eval", "test") if role in splits} - {train}
    kinds = {
        f"in split '{train}' and in {' or '.join(map(repr, sorted(held_out)))}": "scores there count clips the model "
        "was trained on, not unseen ones",
        "in both evaluation splits": "the test scores count clips the best checkpoint was chosen on",
        "under different labels": "the model is trained or scored on contradictory answers",
        "twice in one split": "it counts twice in training or in the scores",
    }
    found: dict[str, list[str]] = {kind: [] for kind in kinds}
    for same in clips.values():
        if len(same) < 2:
            continue
        names = [u.split for u in same.values()]
        listed = " = ".join(same)
        flags = (
            train in names and bool(held_out & set(names)),
            len(held_out & set(names)) > 1,
            len({u.label for u in same.values() if u.label}) > 1,
            len(names) > len(set(names)),
        )
        for what, flagged in zip(kinds, flags):
            if flagged:
                found[what].append(listed)
    for what, listed in found.items():
        if listed:
            more = f"\n  ... and {len(listed) - shown} more" if len(listed) > shown else ""
            logger.warning(
                f"{len(listed)} clip(s) (the same audio file and segment) are {what}: {kinds[what]}. Keep each clip "
                "in one row, or fix the path:\n  " + "\n  ".join(listed[:shown]) + more
            )


def encoder_configs(model_args) -> tuple:
    """The configs of the speech and text encoders the run will build, read before any audio or weights: the
    speech CNN sets the shortest clip the scan accepts (`min_audio_samples`: 25 ms for WavLM, 40 ms for `--tiny`),
    the text encoder's positions the longest `--max_text_length` (`check_text_length`)."""
    if model_args.model_name_or_path:
        config = CrabConfig.from_pretrained(model_args.model_name_or_path)
    elif model_args.tiny:
        config = tiny_crab_config(2)
    else:
        return AutoConfig.from_pretrained(model_args.audio_encoder), AutoConfig.from_pretrained(
            model_args.text_encoder
        )
    return config.audio_config, config.text_config


def check_text_length(max_text_length: int, text_config) -> None:
    """--max_text_length within what the text encoder's position embeddings can number (RoBERTa's start after its
    padding index: 514 of them read 512 tokens); before any audio is read or weights are loaded."""
    positions = text_config.max_position_embeddings
    offset = (text_config.pad_token_id or 0) + 1 if "roberta" in text_config.model_type else 0
    if max_text_length > positions - offset:
        print(
            f"train.py: error: --max_text_length {max_text_length}: the text encoder ({text_config.model_type}) reads "
            f"at most {positions - offset} tokens; pass --max_text_length {positions - offset} or less",
            file=sys.stderr,
        )
        raise SystemExit(2)


def report_long_transcripts(processor: CrabProcessor, rows: dict[str, list], splits: dict[str, str]) -> None:
    """Transcripts longer than --max_text_length tokens are cut to their first ones (the paper's truncation): how
    many in each split (`rows` and `splits` by role), and the longest, once per run."""
    limit, parts = processor.max_text_length, []
    for role, part in rows.items():
        cut = [(n, u.id) for n, u in zip(processor.transcript_lengths([u.text for u in part]), part) if n > limit]
        if cut:
            length, uid = max(cut)
            parts.append(
                f"split '{splits[role]}' {len(cut)} of {len(part)} (the longest: id '{uid}', {length} tokens)"
            )
    if parts:
        logger.warning(
            f"transcripts longer than --max_text_length {limit} tokens are cut to their first {limit}, as in the "
            f"paper's recipe: {'; '.join(parts)}. Raise --max_text_length to keep more of them"
        )


def build_model(
    model_args,
    loss_args,
    label_names: list[str],
    vocab_size: int,
    distributed: bool,
    training_args,
    spec_augment: dict | None = None,
    attributes: list[str] | None = None,
):
    """The Crab model to train: a checkpoint to fine-tune, the tiny random one or pretrained encoders, with the head
    options of the flags; `attributes` are the emotional attributes it predicts beside the `label_names` classes
    (no classes: an attributes-only model). `spec_augment` (`mask_time_prob`, ...) goes into the speech encoder's
    config before the encoder is built, so its `masked_spec_embed` exists when a masking probability is turned on
    from 0."""
    spec_augment = spec_augment or {}
    id2label = dict(enumerate(label_names))
    head_options = {
        "label_smoothing": training_args.label_smoothing_factor,  # transformers' flag, applied by the model's loss
        "attribute_names": list(attributes or []),
        "attribute_loss_weight": loss_args.attribute_loss_weight,
        "attribute_contrast_bins": loss_args.attribute_contrast_bins,
        "mask_padding": model_args.mask_padding,
        "unimodal_tap": model_args.unimodal_tap,
        "mlcs_taps": loss_args.mlcs_taps,
        "mlcs_weight": loss_args.mlcs_weight,
        "mlcs_temperature": loss_args.mlcs_temperature,
        "mlcs_loss": loss_args.mlcs_loss,
        "mlcs_gather": loss_args.mlcs_gather,
        "use_csl_legs": loss_args.mlcs_weight > 0,
        "modality_dropout": model_args.modality_dropout,
        "pass_audio_attention_mask": model_args.pass_audio_attention_mask,
        "audio_attention": model_args.audio_attention,
        "head_init": "pytorch" if model_args.recipe == "release" else "normal",  # the release's plain nn.Module head
    }
    for name in ("classifier_dropout", "cross_attention_dropout"):
        if getattr(model_args, name) is not None:
            head_options[name] = getattr(model_args, name)
    if model_args.model_name_or_path:
        config = CrabConfig.from_pretrained(model_args.model_name_or_path, **head_options)
        config.audio_config.update(spec_augment)
        model = CrabForEmotionClassification.from_pretrained(model_args.model_name_or_path, config=config)
        if list(model.config.id2label.values()) != list(label_names):
            raise ManifestError(
                f"checkpoint '{model_args.model_name_or_path}' predicts {list(model.config.id2label.values())} but the "
                f"label set is {label_names}; pass --labels with the checkpoint's classes in its order"
            )
    elif model_args.tiny:
        config = tiny_crab_config(len(label_names), id2label, vocab_size, **head_options)
        config.audio_config.update(spec_augment)
        model = CrabForEmotionClassification(config)
    else:
        model = CrabForEmotionClassification.from_pretrained_encoders(
            model_args.audio_encoder,
            model_args.text_encoder,
            audio_config_overrides={**spec_augment, **({"layerdrop": 0.0} if distributed else {})},
            id2label=id2label,
            label2id={name: i for i, name in id2label.items()},
            **head_options,
        )
    if distributed:  # ranks that skip different WavLM layers would desynchronise DDP's gradient buckets
        model.config.audio_config.layerdrop = 0.0
        model.crab.audio_encoder.config.layerdrop = 0.0
    return model


def write_predictions(
    trainer: CrabTrainer, split: SplitPredictions, dataset, label_names: list[str], attributes: list[str], path: Path
) -> None:
    """`id,prediction,<score per class>,<attribute>...` for every utterance of a split, in the dataset's order (the
    class columns for a model with classes, the attribute columns for one with attributes)."""
    scores = torch.from_numpy(split.logits).float().softmax(dim=-1).tolist()
    values = [] if split.attributes is None else split.attributes.tolist()
    ids = dataset.ids if isinstance(dataset, CachedFeatures) else [u.id for u in dataset.utterances]
    if trainer.is_world_process_zero():
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", *(["prediction", *label_names] if label_names else []), *attributes])
            for i, utterance_id in enumerate(ids):
                row = scores[i]
                classes = [label_names[max(range(len(row)), key=row.__getitem__)], *row] if label_names else []
                writer.writerow([utterance_id, *classes, *(values[i] if values else [])])


def best_step(state) -> int | None:
    """The step of the checkpoint `load_best_model_at_end` kept, or None without model selection."""
    if getattr(state, "best_global_step", None):
        return state.best_global_step
    checkpoint = state.best_model_checkpoint
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else None


def collapsed_class(predicted, label_names: list[str]) -> str | None:
    """The one class a split's predictions all fall in (a model that learned only the prior), else None."""
    classes = set(predicted.tolist())
    return label_names[classes.pop()] if len(classes) == 1 and len(label_names) > 1 and len(predicted) > 1 else None


def build_encoder_cache(model, processor, datasets: dict, splits: dict, cache_root: str, training_args) -> dict:
    """Frozen-encoder mode: freeze both encoders, cache their outputs for every split in `cache_root/<split>` (the
    main process encodes, the others wait and read) and return the cached datasets."""
    if not model.config.mask_padding:
        raise SystemExit(
            "--encoder_cache needs --mask_padding true: cached features are stored without padding, and the unmasked "
            "head computes another function without it; add --recipe crab (or --mask_padding true)"
        )
    freeze_encoders(model)
    model.to(training_args.device)
    settings = {
        "max_duration_s": processor.max_duration_s,
        "max_text_length": processor.max_text_length,
        "normalization": processor.normalization,
        "waveform_stats": [processor.waveform_mean, processor.waveform_std],
        "feature_extractor": {  # not where it would be loaded from (auto_map, processor_class)
            key: value
            for key, value in processor.feature_extractor.to_dict().items()
            if key not in ("auto_map", "processor_class")
        },
        "vocabulary": cache_key(sorted(processor.tokenizer.get_vocab().items())),
    }
    encoders = encoder_fingerprint(model)
    cached = {}
    with training_args.main_process_first(desc="encoding every split into the encoder cache"):
        for role, dataset in datasets.items():
            key = cache_key(encoders, settings, [asdict(u) for u in dataset.utterances], dataset.label2id)
            try:
                cached[role] = encode_dataset(
                    model,
                    dataset,
                    CrabDataCollator(processor),
                    Path(cache_root) / splits[role],
                    fingerprint=key,
                    batch_size=training_args.per_device_eval_batch_size,
                    num_workers=training_args.dataloader_num_workers,
                )
            except FeatureCacheError as error:
                raise SystemExit(f"error: {error}") from None
    return cached


def note_attribute_columns(manifest) -> None:
    """Say so when the manifest has attribute columns the run leaves unused (no --attributes)."""
    present = [name for name in ATTRIBUTE_NAMES if name in column_names(manifest)]
    if present:
        logger.info(
            f"the manifest has the attribute column(s) {', '.join(present)}; this run predicts the classes only. "
            f"Pass --attributes {','.join(present)} to predict them too"
        )


def skip_bad_rows(rows: dict, scanned: list, skipped: dict[int, list[str]], report: Path) -> dict:
    """Drop the rows `scan_manifest` found bad, record them in `report`, and check every split still has rows."""
    report.parent.mkdir(parents=True, exist_ok=True)
    with report.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["where", "id", "audio", "problems"])
        for position, problems in skipped.items():
            u = scanned[position]
            writer.writerow([u.where, u.id, u.audio, "; ".join(problems)])
    logger.warning(f"--skip_bad_rows: left out {len(skipped)} bad row(s); they are listed in {report}")
    bad = {id(scanned[position]) for position in skipped}
    kept = {role: [u for u in part if id(u) not in bad] for role, part in rows.items()}
    empty = [role for role, part in kept.items() if not part]
    if empty:
        raise ManifestError(f"after leaving out the bad rows, {', '.join(empty)} has no rows; see {report}")
    return kept


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, evaluate and export as the arguments say (`python train.py --help`); the dev and test metrics."""
    quiet_eager_mask_warning()
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(arguments[-1].get_process_log_level())
    return train_and_evaluate(*arguments)[0]


def frozen_baseline(
    manifest, model_args, data_args, loss_args, optimizer_args, augment_args, training_args
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The same run with both encoders frozen at their starting weights, only the head trained (`--encoder_cache`),
    in `output_dir/frozen_baseline`: what fine-tuning has to beat. Its metrics and per-split metrics, as
    `train_and_evaluate`'s. Cached features are not augmented, so the baseline trains on the plain audio whatever
    the augmentation flags."""
    out = Path(training_args.output_dir) / "frozen_baseline"
    logger.info(f"--frozen_baseline: training the head alone on frozen encoders into {out}")
    if training_args.should_save:  # it starts over each time: an earlier baseline's checkpoints leave its rotation
        clear_checkpoints(out)
    return train_and_evaluate(
        replace(model_args, frozen_baseline=False),
        replace(data_args, manifest=manifest, encoder_cache=str(out / "encoder_cache")),
        loss_args,
        optimizer_args,
        augment_args,
        replace(training_args, output_dir=str(out), resume_from_checkpoint=None),
        report=False,
    )


def train_and_evaluate(
    model_args, data_args, loss_args, optimizer_args, augment_args, training_args, report: bool = True
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The whole run: data, processor, model, training, evaluation, export. The metrics (`eval_*`, `test_*`, as in
    eval_results.json) and, per split name, the summary table's metrics; `report` prints the table."""
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)
    if report:  # the run asked for; its frozen-encoder baseline (report=False) retrains in its own subfolder
        check_output_dir(output_dir, training_args.resume_from_checkpoint)

    # ---- data: manifest -> validated splits -> datasets ------------------------------------------------------------
    manifest = data_args.manifest
    if manifest is None:
        from modeling_crab.recipes.demo import generate_demo_corpus

        with training_args.main_process_first(desc="generating the demo corpus"):
            manifest = generate_demo_corpus(output_dir / "demo_corpus")
        logger.info(f"no --manifest: training the built-in demo on {manifest}")
    attributes = attribute_names(data_args.attributes)
    utterances = load_manifest(manifest, data_args.audio_root, attributes, needs_label=not data_args.attributes_only)
    if not attributes:
        note_attribute_columns(manifest)
    splits = {"train": data_args.train_split, "eval": data_args.eval_split, "test": data_args.test_split}
    flags = {"train": "--train_split", "eval": "--eval_split", "test": "--test_split"}
    rows = select_splits(utterances, splits, flags)
    if "eval" not in rows:
        raise ManifestError(f"split '{data_args.eval_split}' has no rows; add dev rows or pass --eval_split NAME")
    splits = {role: splits[role] for role in rows}
    # a test split with no labels at all gets a predictions file; one with some labels is evaluated, and the scan
    # reports each of its unlabelled rows
    test_has_labels = "test" in rows and any(
        (u.label and not data_args.attributes_only) or any(v is not None for v in u.attributes.values())
        for u in rows["test"]
    )
    if data_args.attributes_only:
        label_names = []
    elif data_args.labels:
        label_names = [name.strip() for name in data_args.labels.split(",") if name.strip()]
        check_label_set(label_names, "--labels")
    else:
        label_names = label_names_from(utterances, data_args.train_split, manifest)
    scanned = [u for part in rows.values() for u in part]
    with training_args.main_process_first(desc="reading the encoders' configs"):
        audio_config, text_config = encoder_configs(model_args)
    check_text_length(data_args.max_text_length, text_config)
    with training_args.main_process_first(desc="checking the manifest and reading the training audio"):
        scan = scan_manifest(
            scanned,
            label_names,
            train_split=data_args.train_split,
            labelled_splits=[data_args.eval_split] + ([data_args.test_split] if test_has_labels else []),
            max_duration_s=data_args.max_duration_s,
            num_workers=data_args.preprocessing_num_workers,
            cache_path=output_dir / "manifest_scan.json",
            name=str(manifest),
            skip_bad_rows=data_args.skip_bad_rows,
            needs_labels=bool(label_names),
            empty_transcripts=data_args.empty_transcripts,
            waveform_stats="release" if model_args.recipe == "release" else "crops",  # the release's own rule
            min_samples=min_audio_samples(audio_config),
        )
    if scan.skipped:
        rows = skip_bad_rows(rows, scanned, scan.skipped, output_dir / "skipped_rows.csv")
    if report:
        note_classes_missing(rows, splits, label_names, test_has_labels)
        note_reused_audio(rows, splits)
    label2id = {name: i for i, name in enumerate(label_names)}
    # the training split only (cached encoder outputs cannot be augmented); a bad noise file stops the run here
    augmentation = None if data_args.encoder_cache else augment_args.waveform
    data_seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    datasets = {
        role: CrabAudioTextDataset(
            part,
            label2id,
            data_args.max_duration_s,
            scan.num_samples,
            augmentation=augmentation if role == "train" else None,
            seed=data_seed,
        )
        for role, part in rows.items()
    }

    # ---- processor and model ---------------------------------------------------------------------------------------
    checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, output_dir)
    processor = build_processor(model_args, data_args, [u.text for u in rows["train"]], checkpoint)
    if data_args.normalization == "global":
        processor.set_waveform_stats(scan.waveform_mean, scan.waveform_std)
    distributed = training_args.world_size > 1
    model = build_model(
        model_args,
        loss_args,
        label_names,
        len(processor.tokenizer),
        distributed,
        training_args,
        augment_args.spec_augment,
        attributes,
    )
    model.config.augmentation = None if augmentation is None else augmentation.to_dict()  # for the model card
    if report:  # not again for the frozen-encoder baseline, on the same rows
        report_long_transcripts(processor, rows, splits)
    if checkpoint is not None:  # before anything is encoded or trained
        check_resume_config(checkpoint, model.config, data_args.normalization)

    if model_args.compile_regions:
        model.compile_regions(backend=model_args.compile_regions)
    collator = CrabDataCollator(processor)
    if data_args.encoder_cache:
        datasets = build_encoder_cache(model, processor, datasets, splits, data_args.encoder_cache, training_args)
        collator = collate_cached

    if (
        loss_args.class_weighted and label_names
    ):  # saved in config.json: the model's loss is the objective trained with
        model.config.class_weights = compute_class_weights(datasets["train"].label_ids, len(label_names)).tolist()
    else:
        model.config.class_weights = None
    trainer = CrabTrainer(
        model=model,
        args=training_args,
        train_dataset=datasets["train"],
        eval_dataset=datasets["eval"],
        data_collator=collator,
        processing_class=processor,
        compute_metrics=build_compute_metrics(label_names, attributes),
        encoder_learning_rate=optimizer_args.encoder_learning_rate,
        freeze_feature_encoder=model_args.freeze_feature_encoder,
        decay_every_parameter=optimizer_args.decay_every_parameter,
        epoch_cosine_floors=(
            (optimizer_args.learning_rate_floor, optimizer_args.encoder_learning_rate_floor)
            if optimizer_args.epoch_cosine
            else None
        ),
        full_accumulation_divisor=optimizer_args.full_accumulation_divisor,
        callbacks=(
            [EarlyStoppingCallback(optimizer_args.early_stopping_patience)]
            if optimizer_args.early_stopping_patience
            else None
        ),
    )

    # ---- train, evaluate, export ----------------------------------------------------------------------------------
    if checkpoint is not None:
        check_resume_weights_and_optimizer(checkpoint, trainer)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    trainer.save_state()
    trainer.log_metrics("train", train_result.metrics)

    results = {}
    per_split = {}
    notes = []
    for role in ("eval", "test"):
        if role not in datasets:
            continue
        batch_size = data_args.test_batch_size if role == "test" else None
        prediction = trainer.predict(datasets[role], metric_key_prefix=role, batch_size=batch_size)
        split = split_predictions(prediction.predictions, prediction.label_ids)
        path = output_dir / f"predictions_{splits[role]}.csv"
        write_predictions(trainer, split, datasets[role], label_names, attributes, path)
        if role == "test" and not test_has_labels:  # hidden labels (MSP-Podcast Test3): predictions only
            continue
        results.update(prediction.metrics)
        per_split[splits[role]] = {}
        if label_names:
            predicted = split.logits.argmax(axis=-1)
            per_split[splits[role]] = classification_metrics(split.labels, predicted, label_names)
            collapsed = collapsed_class(predicted, label_names)
            if collapsed is not None:
                notes.append(
                    f"warning: every {splits[role]} clip is predicted '{collapsed}': the model learned the class "
                    "prior only. Check the learning rates (--tiny models need SMALL_MODEL's), the epochs and the labels"
                )
                logger.warning(notes[-1])
            if trainer.is_world_process_zero():
                matrix = confusion(split.labels, predicted, len(label_names))
                plot_confusion_matrix(
                    matrix, label_names, output_dir / f"confusion_matrix_{splits[role]}.png", f"{splits[role]} split"
                )
        if attributes:
            per_split[splits[role]].update(attribute_metrics(split.attribute_labels, split.attributes, attributes))
            if trainer.is_world_process_zero():
                plot_attributes(
                    split.attribute_labels,
                    split.attributes,
                    attributes,
                    output_dir / f"attributes_{splits[role]}.png",
                    f"{splits[role]} split",
                    per_split[splits[role]],
                )
    # how the model was trained, so that a reader of the results (and the model card) can tell
    results.update(
        recipe=model_args.recipe, text_padding=processor.text_padding, mask_padding=model.config.mask_padding
    )
    if trainer.is_world_process_zero():
        plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png", best_step(trainer.state))
        export_for_inference(trainer.model, processor, output_dir / "inference")
    table = dict(per_split)
    if model_args.frozen_baseline and not data_args.encoder_cache:
        baseline, baseline_per_split = frozen_baseline(
            manifest, model_args, data_args, loss_args, optimizer_args, augment_args, training_args
        )
        results.update({f"frozen_baseline_{k}": v for k, v in baseline.items() if k.startswith(("eval_", "test_"))})
        table.update({f"{split} (frozen)": metrics for split, metrics in baseline_per_split.items()})
        headline, title = ("eval_uar", "UAR") if label_names else ("eval_ccc_mean", "mean CCC")
        if baseline.get(headline, -math.inf) > results.get(headline, -math.inf):
            notes.append(
                f"warning: the frozen-encoder baseline beats fine-tuning on {splits['eval']} ({title} "
                f"{baseline[headline]:.4f} vs {results.get(headline, math.nan):.4f}): fine-tuning overfits the training "
                "data. "
                "Fewer epochs (--early_stopping_patience), augmentation or a lower --encoder_learning_rate may help; "
                f"{output_dir / 'frozen_baseline'} holds the baseline's model (docs/training.md)"
            )
    if trainer.is_world_process_zero():
        (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
        if report:
            summary = summary_table(table, label_names, attributes)
            print(f"\nCrab results ({output_dir}, recipe '{model_args.recipe}'):\n" + "\n".join([summary, *notes]))
            print(f"inference model: {output_dir / 'inference'}  (eval_results.json, *.png next to it)\n")
    return results, per_split


if __name__ == "__main__":
    try:
        main()
    except (ManifestError, CheckpointError, AugmentationError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
