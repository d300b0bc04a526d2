"""train.py's arguments: their groups, their defaults in four layers, and every check of their values.

Defaults, lowest first: each field's built-in default (and, on GPU machines, `machine_defaults`) < the presets, files
in `presets/` (the recipe's `crab.yaml` or `crab.yaml` + `release.yaml`; `tiny.yaml` with `--tiny` or without a
manifest; `demo.yaml` without a manifest) < a config file (`configs/meld.json`) < command-line flags.
`python train.py [CONFIG] [flags] --help` prints every value the run would use. Two settings follow others unless
set themselves (`derived_defaults`): the release's encoder learning rate and dev batch, and an attributes-only model's
selection metric.

Every value is checked here, from the command line or a config file alike, before any audio is read or any weight is
loaded: each field's `choices` or `check` (`options.option_problems`), transformers' own checks of
`TrainingArguments`, and the few that join two settings (`joint_problems`). Each problem is one line naming the flag
and what to pass.

This module imports no torch: `TrainingArguments` (which does) is imported when the parser is built.
"""

from __future__ import annotations

import json
import math
import os
import sys
from argparse import SUPPRESS, ArgumentDefaultsHelpFormatter, Namespace, RawDescriptionHelpFormatter
from dataclasses import MISSING, dataclass, fields, make_dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, get_type_hints

from ..attributes import attribute_list
from ..manifest import EMPTY_TRANSCRIPTS
from ..options import (
    AT_LEAST_ONE,
    AUDIO_ENCODER,
    MAX_TEXT_TOKENS,
    NON_NEGATIVE,
    NORMALIZATIONS,
    POSITIVE,
    PROBABILITY,
    TEXT_ENCODER,
    TEXT_PADDINGS,
    TRAINING_CROP_S,
    HeadOptions,
    option,
    option_problems,
)
from .augment import AugmentationError, SpecAugment, WaveformAugmentation

PRESETS = Path(__file__).parent / "presets"
RECIPES = ("crab", "release")


class SettingError(ValueError):
    """A setting that cannot work, found before the run reads audio or loads weights; its message names the flag."""


@dataclass
class ModelArguments:
    _argument_group_name = "ModelArguments (the recipe, the encoders, the checkpoint to fine-tune)"

    recipe: str = option(
        "crab",
        "crab: our training loop (masked padding, per-batch text padding, length-grouped batches); release: the "
        "authors' released training loop, setting by setting (presets/release.yaml, docs/training.md)",
        RECIPES,
    )
    audio_encoder: str = option(AUDIO_ENCODER, "speech encoder on the Hub")
    text_encoder: str = option(TEXT_ENCODER, "text encoder on the Hub")
    tiny: bool = option(
        False, "random tiny encoders, a local tokenizer and the small-model settings of presets/tiny.yaml"
    )
    model_name_or_path: str | None = option(None, "fine-tune an existing Crab checkpoint")
    freeze_feature_encoder: bool = option(True, "freeze the speech encoder's CNN")
    frozen_baseline: bool = option(
        False,
        "after training, train the head alone on the encoders frozen at their starting weights (--encoder_cache, "
        "into output_dir/frozen_baseline) and show both in the summary: fine-tuning that loses to it overfits",
    )
    compile_regions: str | None = option(
        None,
        "torch.compile every encoder layer and the head blocks with this backend (inductor on GPUs): minutes of "
        "compilation up front, then fewer kernel launches (same function). --torch_compile instead compiles the whole "
        "model as one region",
    )
    bf16_weights: bool = option(
        False,
        "with --bf16: bf16 copies of the encoders' linear weights, cast once per optimizer step rather than per "
        "micro-batch (the same function; fp32 masters). Not with DeepSpeed, FSDP or --torch_compile",
    )


def _head_arguments():
    """The head's switches as flags, one per field of `HeadOptions`: none (the default) leaves the field as the
    model has it, the config's built-in default for a new model or a fine-tuned checkpoint's own."""
    hints = get_type_hints(HeadOptions)
    specs = []
    for spec in fields(HeadOptions):
        default = spec.default if spec.default is not MISSING else None
        shown = "all" if default is None and spec.name == "mlcs_taps" else default
        help = f"{spec.metadata.get('help')} [built in: {shown}]"
        check = {key: spec.metadata.get(key) for key in ("choices", "check") if spec.metadata.get(key) is not None}
        specs.append((spec.name, hints[spec.name] | None, option(None, help, **check)))
    namespace = {
        "_argument_group_name": "HeadArguments (the head and its objective, saved in the model's config; unset: the "
        "built-in value, or a fine-tuned checkpoint's own)",
        "options": _options_set,
    }
    arguments = make_dataclass("HeadArguments", specs, namespace=namespace)
    arguments.__module__ = __name__  # where pickle finds it
    return arguments


def _options_set(self) -> dict:
    """The switches set, as `CrabConfig` keywords."""
    return {name: value for name, value in vars(self).items() if value is not None}


HeadArguments = _head_arguments()


@dataclass
class DataArguments:
    _argument_group_name = "DataArguments (manifest, splits, audio and text preprocessing)"

    manifest: str | None = option(None, "CSV/JSONL manifest or saved datasets folder; none: the built-in demo")
    audio_root: str | None = option(None, "folder relative audio paths start from")
    train_split: str = option("train", "the manifest's split to train on")
    eval_split: str = option("dev", "the split evaluated every epoch; the best checkpoint is chosen on it")
    test_split: str | None = option("test", "evaluated at the end if the manifest has it")
    labels: str | None = option(None, "comma-separated classes, in logit order; none: the train split's, sorted")
    attributes: str | None = option(None, "attribute columns to predict too (0-1), e.g. arousal,valence,dominance")
    attributes_only: bool = option(False, "predict --attributes alone, with no classes")
    max_duration_s: float = option(TRAINING_CROP_S, "audio is cropped to its first N seconds", check=POSITIVE)
    max_text_length: int = option(
        MAX_TEXT_TOKENS,
        "transcripts are truncated at N tokens",
        check=(lambda v: isinstance(v, int) and v >= 2, "a whole number of tokens >= 2 (<s> and </s>)"),
    )
    text_padding: str = option(
        "longest",
        "longest: pad transcripts to the longest of the batch; max_length: always to max_text_length (the release). "
        "Saved with the processor, so inference pads the same way",
        TEXT_PADDINGS,
    )
    shape_buckets: int | None = option(
        None,
        "pad batches to N audio and N text lengths chosen from the training split: static shapes for CUDA "
        "graphs, same loss (docs/training.md)",
        check=(AT_LEAST_ONE[0], "a whole number of buckets >= 1"),
    )
    normalization: str = option(
        "global", "waveform normalisation: global (train-set stats), utterance or none", NORMALIZATIONS
    )
    test_batch_size: int | None = option(
        None,
        "batch size of the final test-split evaluation (none: per_device_eval_batch_size; 1: each clip alone, "
        "without audio padding, the release's test protocol)",
        check=AT_LEAST_ONE,
    )
    preprocessing_num_workers: int = option(4, "threads that read audio for the scan", check=AT_LEAST_ONE)
    empty_transcripts: str = option(
        "error", "a row with an empty transcript: error, or audio_only (the release)", EMPTY_TRANSCRIPTS
    )
    skip_bad_rows: bool = option(False, "leave bad rows out (output_dir/skipped_rows.csv lists them)")
    encoder_cache: str | None = option(
        None,
        "frozen-encoder mode: cache both encoders' outputs for every split in this folder (reused while encoders, "
        "processor and data are unchanged; an interrupted encoding resumes) and train only the head and CSL legs "
        "from it, in minutes. Not the paper's recipe: no encoder fine-tuning; needs the masked head (--recipe crab) "
        "(docs/training.md)",
    )


@dataclass
class OptimizationArguments:
    _argument_group_name = (
        "OptimizationArguments (class weights, hierarchical learning rates, early stopping, the release's switches)"
    )

    class_weighted: bool = option(True, "w_j = N / (C N_j) in the CE term")
    encoder_learning_rate: float = option(1e-6, "lr of both encoders (head: learning_rate)", check=NON_NEGATIVE)
    decay_every_parameter: bool = option(
        False, "weight decay on biases and LayerNorm weights too, as torch AdamW and the release do"
    )
    epoch_cosine: bool = option(
        False,
        "the release's schedule: torch CosineAnnealingLR(T_max=num_train_epochs) per parameter group, stepped once "
        "per epoch, down to learning_rate_floor (head) and encoder_learning_rate_floor; lr_scheduler_type and warmup "
        "are then unused",
    )
    learning_rate_floor: float = option(1e-6, "eta_min of the head under --epoch_cosine", check=NON_NEGATIVE)
    encoder_learning_rate_floor: float = option(
        1e-7, "eta_min of both encoders under --epoch_cosine", check=NON_NEGATIVE
    )
    early_stopping_patience: int | None = option(
        None,
        "stop when the dev metric (metric_for_best_model) has not improved for N evaluations; the best checkpoint "
        "is kept and loaded at the end. None: train every epoch",
        check=(AT_LEAST_ONE[0], "a whole number of evaluations >= 1"),
    )
    full_accumulation_divisor: bool = option(
        False,
        "divide the loss by gradient_accumulation_steps also in an epoch's last, shorter accumulation (the "
        "release); false: by the micro-batches that step has",
    )


STUDENT_PRESETS = PRESETS / "students"  # distillation's student sizes, one YAML file each (distill.py reads them)


def student_preset_names() -> list[str]:
    """The student presets (`--student`): the files of `presets/students/`."""
    return sorted(path.stem for path in STUDENT_PRESETS.glob("*.yaml"))


@dataclass
class DistillationArguments:
    _argument_group_name = "DistillationArguments (a small student trained on a teacher's outputs: crab distill)"

    teacher: str | None = option(
        None,
        "the Crab model (folder or Hub repo) a small student learns from (docs/distillation.md)",
    )
    student: str = option("small", "the student's size: a preset of presets/students/", tuple(student_preset_names()))
    unlabelled_manifest: list[str] | None = option(
        None,
        "manifests, folders or files of further audio, labels unneeded: the teacher labels them for the student; "
        "clips without a transcript are transcribed by --asr_model",
    )
    asr_model: str | None = option(
        None,
        "their speech recognizer (none: the pipeline's Whisper)",
    )
    distill_temperature: float = option(
        2.0, "T of the soft-target term (scaled by T^2, as Hinton et al.)", check=POSITIVE
    )
    distill_soft_weight: float = option(1.0, "weight of the teacher's class probabilities (KL)", check=NON_NEGATIVE)
    distill_attribute_weight: float = option(
        1.0, "weight of the teacher's attributes (1 - CCC against them)", check=NON_NEGATIVE
    )
    distill_embedding_weight: float = option(
        0.0, "weight of the teacher's clip similarities (pooled embeddings; 0: off)", check=NON_NEGATIVE
    )
    distill_label_weight: float = option(
        1.0, "weight of the Crab objective on the rows with labels", check=NON_NEGATIVE
    )
    teacher_cache: str | None = option(
        None,
        "where the teacher's outputs are cached (none: output_dir/teacher_outputs)",
    )


# transformers' own TrainingArguments have no checks of ours; these values would only fail later
TRAINING_CHECKS = {
    "learning_rate": POSITIVE,
    "per_device_train_batch_size": AT_LEAST_ONE,
    "per_device_eval_batch_size": AT_LEAST_ONE,
    "gradient_accumulation_steps": AT_LEAST_ONE,
    "label_smoothing_factor": PROBABILITY,
}


class RunArguments(NamedTuple):
    """Everything a run is told: Crab's argument groups and transformers' `TrainingArguments`."""

    model: ModelArguments
    head: Any  # HeadArguments
    data: DataArguments
    optimization: OptimizationArguments
    augmentation: WaveformAugmentation
    spec_augment: SpecAugment
    distillation: DistillationArguments
    training: Any  # TrainingArguments

    @property
    def attributes(self) -> list[str]:
        """The attribute columns the model predicts (`--attributes`)."""
        return attribute_list(self.data.attributes)

    def frozen_baseline(self, manifest) -> RunArguments:
        """The same run with both encoders frozen at their starting weights and the head alone trained on their
        cached outputs, in `output_dir/frozen_baseline`, on the plain audio (cached features are not augmented)."""
        out = Path(self.training.output_dir) / "frozen_baseline"
        return self._replace(
            model=replace(self.model, frozen_baseline=False),
            data=replace(
                self.data, manifest=str(manifest), encoder_cache=str(out / "encoder_cache"), shape_buckets=None
            ),
            augmentation=WaveformAugmentation(),
            training=replace(self.training, output_dir=str(out), resume_from_checkpoint=None),
        )


ARGUMENT_GROUPS = (
    ModelArguments,
    HeadArguments,
    DataArguments,
    OptimizationArguments,
    WaveformAugmentation,
    SpecAugment,
    DistillationArguments,
)

HELP_DESCRIPTION = """\
Train Crab on a manifest, or without --manifest on the built-in demo corpus (tiny model, CPU).

  CONFIG   optional first argument: a JSON or YAML file of flag values (configs/meld.json); flags after it
           override it. The defaults printed below are the values this run would use: the presets, CONFIG and
           the flags given already applied."""


class _HelpFormatter(RawDescriptionHelpFormatter, ArgumentDefaultsHelpFormatter):
    """The description as written, each flag's default after its help (a head switch left unset says its own), and
    a flag's help beside it where the flag fits in 34 columns."""

    def __init__(self, prog, max_help_position=34, **kwargs):
        super().__init__(prog, max_help_position=max_help_position, **kwargs)

    def _get_help_string(self, action):
        if action.default is None and "[built in:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def training_arguments_class():
    """transformers' `TrainingArguments` as a group of its own, shown last: a subclass for the parser only, whose
    values build the plain `TrainingArguments` (`builds`). Imported here: transformers' module imports torch."""
    from transformers import TrainingArguments

    namespace = {
        "__module__": __name__,
        "_argument_group_name": "TrainingArguments (transformers: optimizer, schedule, precision, saving)",
        "builds": TrainingArguments,
    }
    return dataclass(type("TrainingArguments", (TrainingArguments,), namespace))


def build_parser():
    """One group per dataclass of `ARGUMENT_GROUPS`, then transformers' `TrainingArguments` with the first sentence
    of their help only (`--help` otherwise runs to 700 lines); `--X false` shown for `--no_X`, no dashed aliases."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        (*ARGUMENT_GROUPS, training_arguments_class()),
        prog="train.py",
        usage="python train.py [CONFIG] [--flag VALUE ...]    (accelerate launch train.py ... on several GPUs)",
        description=HELP_DESCRIPTION,
        epilog="docs/training.md: the recipes, the outputs, the data format, speed and multi-GPU training.",
        formatter_class=_HelpFormatter,
    )
    ours = {spec.name for group in ARGUMENT_GROUPS for spec in fields(group)}
    for action in parser._actions:
        action.option_strings = [option for option in action.option_strings if "-" not in option[2:]]  # no aliases
        action.metavar = _metavar(action)
        if action.metavar == "NAME":  # a list of choices: named in the help
            text, built_in, value = action.help.partition(" [built in:")
            action.help = f"{text}: any of {', '.join(action.choices)}{built_in}{value}"
        if action.dest == "help" or not action.help:
            continue
        if any(option.startswith("--no_") for option in action.option_strings):
            action.help = SUPPRESS  # `--no_X` works, and so does `--X false`, the one shown
        elif action.dest not in ours:
            action.help = _first_sentence(action.help)
    return parser


def _metavar(action) -> str | None:
    """A short placeholder for a flag's value: its choices where it has few, else N (a number), BOOL or VALUE."""
    if action.choices is not None:
        return "NAME" if action.nargs in ("+", "*") else None  # None: argparse lists the choices
    if action.type in (int, float):
        return "N"
    return "BOOL" if getattr(action.type, "__name__", "") == "string_to_bool" else "VALUE"


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def machine_defaults() -> dict:
    """What the machine changes in TrainingArguments' defaults. On CUDA machines: DataLoader workers (up to 4 per
    GPU, kept across epochs), so that reading and resampling audio overlaps the GPU step (one core turns 16 kHz WAV
    into batches at about 5000 audio-s/s, 44.1 kHz FLAC at about 1200: bench/bench_data.py); on Ampere or newer,
    bf16 autocast (the speech CNN, the GRUs and the losses stay in fp32) and TF32 matmuls (`--bf16 false --tf32
    false` trains in fp32). Without an accelerator, `use_cpu`: transformers only goes data-parallel on a machine
    without GPUs when told to use the CPU (torchrun + gloo)."""
    import torch

    if not torch.cuda.is_available():
        return {"use_cpu": not torch.accelerator.is_available()}
    cores_per_gpu = (os.cpu_count() or 1) // max(1, torch.cuda.device_count())
    defaults = {"dataloader_num_workers": min(4, max(1, cores_per_gpu)), "dataloader_persistent_workers": True}
    if torch.cuda.get_device_capability() >= (8, 0):
        defaults.update(bf16=True, tf32=True)
    return defaults


def read_settings_file(path: str | os.PathLike) -> dict:
    """A JSON or YAML file of settings (a config file or a preset), as a dict."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SettingError(f"config file '{path}' cannot be read ({error.strerror}); check the path") from None
    if path.suffix == ".json":
        try:
            values = json.loads(text)
        except ValueError as error:
            raise SettingError(f"config file '{path}' is not valid JSON: {error}") from None
    else:
        import yaml

        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise SettingError(f"config file '{path}' is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(values, dict):
        raise SettingError(f"config file '{path}' holds a {type(values).__name__}; write one 'flag: value' per line")
    return values


def preset_names(recipe: str, tiny: bool, manifest: str | None, teacher: str | None = None) -> list[str]:
    """The presets a run applies, in order: the recipe (crab, or crab then release), distill (a student of
    `--teacher`), tiny, demo (not for a student: its classes and attributes are the teacher's)."""
    names = ["crab"] + (["release"] if recipe == "release" else [])
    if teacher:
        names.append("distill")
    if tiny or manifest is None:
        names.append("tiny")
    if manifest is None and not teacher:
        names.append("demo")
    return names


def preset_defaults(names: list[str]) -> dict:
    """The presets' values, each over the previous ones."""
    values: dict = {}
    for name in names:
        values.update(read_settings_file(PRESETS / f"{name}.yaml"))
    return values


# What follows from another setting unless it is set itself: target -> (source, rule, when). The release derives
# its encoders' learning rate and its dev batch from the head's rate and the micro-batch (train_crab.py's argument
# defaults): a source set in the config file or by a flag carries its target along, above every preset. An
# attributes-only model keeps the dev checkpoint with the best mean CCC: it has no classes to score.
DERIVED = {
    "encoder_learning_rate": ("learning_rate", lambda lr: lr / 10, lambda chosen: chosen.recipe == "release"),
    "per_device_eval_batch_size": (
        "per_device_train_batch_size",
        lambda batch: 4 * batch,
        lambda chosen: chosen.recipe == "release",
    ),
    "metric_for_best_model": ("attributes_only", lambda _: "ccc_mean", lambda chosen: chosen.attributes_only),
}


def derived_defaults(chosen: Namespace, explicit: set[str]) -> dict:
    """`DERIVED`'s values for this run: those whose source is set explicitly (`explicit`) and whose target is not."""
    return {
        target: rule(getattr(chosen, source))
        for target, (source, rule, applies) in DERIVED.items()
        if applies(chosen) and source in explicit and target not in explicit
    }


def parse_arguments(argv: list[str]) -> RunArguments:
    """`argv` (an optional config file first, then flags) as the run's arguments, every value checked; a bad one
    exits with status 2 and one line per problem. `--help` prints the values this run would use."""
    parser = build_parser()
    known = {action.dest for action in parser._actions}
    file_values: dict = {}
    try:
        if argv and argv[0].endswith((".json", ".yaml", ".yml")):
            config_file, argv = argv[0], argv[1:]
            file_values = read_settings_file(config_file)
            unknown = sorted(set(file_values) - known)
            if unknown:
                raise SettingError(
                    f"config file '{config_file}': unknown key(s) {unknown}; see `python train.py --help`"
                )
    except SettingError as error:
        parser.exit(2, f"train.py: error: {error}\n")
    wants_help = "-h" in argv or "--help" in argv
    without_help = [arg for arg in argv if arg not in ("-h", "--help")]
    # which presets: the recipe, model and data of the file and the command line (without --help, which would exit)
    parser.set_defaults(**file_values)
    chosen, _ = parser.parse_known_args(without_help)
    if chosen.recipe not in RECIPES:  # it names the presets: checked before they are read
        parser.exit(2, f"train.py: error: --recipe {chosen.recipe!r}: pass one of {', '.join(RECIPES)}\n")
    presets = preset_defaults(preset_names(chosen.recipe, chosen.tiny, chosen.manifest, chosen.teacher))
    explicit = set(file_values) | given_on_command_line(parser, without_help)
    parser.set_defaults(**{**machine_defaults(), **presets})  # a preset's bf16 over the machine's
    parser.set_defaults(**file_values)
    chosen, _ = parser.parse_known_args(without_help)
    parser.set_defaults(**derived_defaults(chosen, explicit))
    if wants_help:  # show this run's values, the command line's included
        parser.set_defaults(**vars(parser.parse_known_args(without_help)[0]))
        parser.parse_args(argv)
    namespace = parser.parse_args(argv)
    groups, problems = [], []
    for dtype in parser.dataclass_types:
        values = {spec.name: getattr(namespace, spec.name) for spec in fields(dtype) if spec.init}
        try:
            groups.append(getattr(dtype, "builds", dtype)(**values))
        except ValueError as error:  # TrainingArguments' and WaveformAugmentation's own checks
            groups.append(None)
            problems.extend(str(error).splitlines())
    arguments = RunArguments(*groups)
    problems += check_arguments(arguments)
    if problems:  # without argparse's usage: it lists every TrainingArguments flag
        parser.exit(2, "train.py: error: " + "\n  ".join(problems) + "\n")
    return arguments


def given_on_command_line(parser, argv: list[str]) -> set[str]:
    """The arguments `argv` sets itself (abbreviated and `--no_X` flags included), not by a default."""
    unset = object()
    given, _ = parser.parse_known_args(argv, namespace=Namespace(**{action.dest: unset for action in parser._actions}))
    return {name for name, value in vars(given).items() if value is not unset}


def check_arguments(arguments: RunArguments) -> list[str]:
    """Every problem of a run's arguments, one line each naming its flag: each field's allowed values or check,
    the `TRAINING_CHECKS` of transformers' arguments, and the settings that only fail together. A group that its
    own checks refused (`TrainingArguments`, `WaveformAugmentation`) is None here."""
    problems = [problem for group in arguments[:-1] if group is not None for problem in option_problems(group)]
    if arguments.training is not None:
        for name, (test, expected) in TRAINING_CHECKS.items():
            value = getattr(arguments.training, name)
            if not test(value):
                problems.append(f"--{name} {value!r}: pass {expected}")
    if None in arguments:  # a group refused its own values: the settings of several groups cannot be weighed
        return problems
    return problems + joint_problems(arguments)


def joint_problems(arguments: RunArguments) -> list[str]:
    """The settings that work alone but not together."""
    data, training, problems = arguments.data, arguments.training, []
    if data.attributes_only and not arguments.attributes:
        problems.append("--attributes_only needs the attributes to predict: --attributes arousal,valence,dominance")
    if arguments.optimization.early_stopping_patience and not (
        training.load_best_model_at_end and training.eval_strategy != "no"
    ):
        problems.append(
            "--early_stopping_patience needs evaluation and model selection: --eval_strategy epoch (or steps) and "
            "--load_best_model_at_end true"
        )
    if arguments.augmentation.active and data.encoder_cache:
        problems.append(
            "--encoder_cache trains on encoder outputs cached once per clip, which waveform augmentation cannot "
            "change; drop --encoder_cache, or the augmentation flags (--pitch_prob, --speed_factors, --gain_db, "
            "--noise_prob, --reverb_prob)"
        )
    if arguments.model.bf16_weights:
        from .precision import bf16_weights_problems  # imports torch, as TrainingArguments already has

        problems += bf16_weights_problems(training)
    if data.shape_buckets and arguments.head.mask_padding is False:
        problems.append(
            "--shape_buckets pads batches further, and the unmasked head (--mask_padding false) computes another "
            "function on padding; drop --shape_buckets, or add --mask_padding true"
        )
    if data.shape_buckets and data.encoder_cache:
        problems.append(
            "--shape_buckets pads the encoders' input, and --encoder_cache trains the head alone on cached features "
            "that never go through the encoders again; drop one of them"
        )
    if arguments.distillation.teacher:
        problems += distillation_problems(arguments)
    if data.encoder_cache and arguments.head.mask_padding is False:
        problems.append(
            "--encoder_cache needs --mask_padding true: cached features are stored without padding, and the unmasked "
            "head computes another function without it; add --recipe crab (or --mask_padding true)"
        )
    return problems


def distillation_problems(arguments: RunArguments) -> list[str]:
    """What a student of `--teacher` cannot be trained with: the teacher's outputs are computed once per clip, on
    the audio as it is (so no waveform augmentation), and the student is built from the teacher (so no other model
    to start from, and no frozen-encoder run)."""
    problems = []
    if arguments.augmentation.active:
        problems.append(
            "--teacher: the teacher's outputs are computed once per clip, on the clip as it is, and augmented audio "
            "would be scored against another clip's targets; drop the augmentation flags (--pitch_prob, "
            "--speed_factors, --gain_db, --noise_prob, --reverb_prob)"
        )
    for flag, value in (
        ("--model_name_or_path", arguments.model.model_name_or_path),
        ("--encoder_cache", arguments.data.encoder_cache),
        ("--frozen_baseline", arguments.model.frozen_baseline),
    ):
        if value:
            problems.append(f"--teacher builds its student from the teacher; drop {flag}")
    return problems


def check_text_length(max_text_length: int, text_config) -> None:
    """--max_text_length within what the text encoder's position embeddings can number (RoBERTa's start after its
    padding index: 514 of them read 512 tokens)."""
    positions = text_config.max_position_embeddings
    offset = (text_config.pad_token_id or 0) + 1 if "roberta" in text_config.model_type else 0
    if max_text_length > positions - offset:
        raise SettingError(
            f"--max_text_length {max_text_length}: the text encoder ({text_config.model_type}) reads at most "
            f"{positions - offset} tokens; pass --max_text_length {positions - offset} or less"
        )


def check_crop_length(max_duration_s: float, min_samples: int, sampling_rate: int = 16_000) -> None:
    """--max_duration_s keeps at least the speech encoder's one frame (`min_samples` at 16 kHz: 400 for WavLM):
    a shorter crop would make every clip too short for the model, a setting's fault and not the data's."""
    if max_duration_s * sampling_rate < min_samples:
        shortest = math.ceil(min_samples / sampling_rate * 1000) / 1000
        raise SettingError(
            f"--max_duration_s {max_duration_s}: the crop keeps fewer samples than the speech encoder's one frame "
            f"({min_samples} samples, {min_samples / sampling_rate * 1000:.0f} ms); pass --max_duration_s {shortest} "
            "or more (the paper's 12)"
        )


__all__ = [
    "AugmentationError",
    "DataArguments",
    "DistillationArguments",
    "HeadArguments",
    "ModelArguments",
    "OptimizationArguments",
    "RunArguments",
    "SettingError",
    "check_arguments",
    "parse_arguments",
]

if __name__ == "__main__":  # pragma: no cover
    parse_arguments(sys.argv[1:])
