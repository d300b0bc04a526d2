"""Distillation: a small student Crab trained on a teacher Crab's outputs (`crab distill`, `train.py --teacher`).

The student is an ordinary `CrabForEmotionClassification` with the teacher's classes, attributes, tokenizer and
processor and smaller encoders and head (`presets/students/*.yaml`: each size a fraction of the teacher's), so export,
the pipeline, ONNX and the Hub take it as they take any Crab. Its text encoder starts from evenly spaced layers of the
teacher's, first and last kept (DistilBERT's initialisation), and so does every other tensor whose shape the student
shares with the teacher's (a head of the same width, a speech encoder of the same width); the rest starts random.

The run is train.py's, step by step (`run.py`), with three additions:
  1. `prepare_student`: the student built from the teacher and saved as `output_dir/student_init`, which the run then
     fine-tunes as it would any checkpoint (`--model_name_or_path`), with the teacher's classes and attributes;
  2. `add_teacher_outputs`: the teacher's logits and attributes for every training clip (the training split and the
     `--unlabelled_manifest` rows) and every dev and test clip, computed once into the encoder cache's kind of cache
     (`feature_cache.encode_dataset` with `teacher_outputs`) and reused while teacher, processor and data are
     unchanged; the training batches carry them as `teacher_logits` and `teacher_attributes`, which `CrabTrainer`
     scores with `losses.distillation_objective` (the labels where a row has them);
  3. `teacher_agreement`: the student's top-1 agreement with the teacher on dev and test, and the teacher's own
     metrics there, in `eval_results.json` and the summary table.

The teacher's outputs belong to the clip as the student reads it: the first `max_duration_s` seconds, with no waveform
augmentation (`arguments.distillation_problems` refuses it): augmented audio would be scored against the targets of
another waveform. The speech encoder's own SpecAugment and dropout still act in training, on the student alone.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from transformers.utils import CONFIG_NAME

from ..configuration_crab import CrabConfig, min_audio_samples
from ..heads import ClassHead, heads_of
from ..losses import DISTILLATION_DEFAULTS, TEACHER_PREFIX
from ..manifest import ManifestError, Utterance, column_names, is_saved_dataset, load_manifest
from ..modeling_crab import CrabForEmotionClassification
from ..processing_crab import CrabProcessor
from ..text import clean_transcript
from .arguments import STUDENT_PRESETS, RunArguments, SettingError, read_settings_file, student_preset_names
from .collator import CrabDataCollator
from .data import SAMPLING_RATE, CrabAudioTextDataset, attribute_row, file_stamp, load_audio, scan_manifest
from .feature_cache import CachedFeatures, encode_datasets, weights_fingerprint

logger = logging.getLogger("crab.train")

STUDENT_INIT = "student_init"  # output_dir/student_init: the student as built from the teacher, before training
TEACHER_OUTPUTS = "teacher_outputs"  # output_dir/teacher_outputs/<split>: the teacher's outputs (--teacher_cache)
UNLABELLED = "unlabelled"  # the split name of --unlabelled_manifest rows
UNLABELLED_TRANSCRIPTS = "unlabelled_transcripts.jsonl"  # output_dir/: transcripts made for unlabelled clips
DEMO_UNLABELLED = "demo_unlabelled"  # output_dir/demo_unlabelled: further demo clips (a student of the demo)
# what a preset may scale, per part (speech encoder, text encoder, head)
SCALABLE = {
    "speech": ("conv_dim", "hidden_size", "num_hidden_layers"),
    "text": ("hidden_size", "num_hidden_layers"),
    "head": ("fusion_hidden_size",),
}
_LAYER = re.compile(r"^(encoder\.layers?)\.(\d+)\.")  # WavLM's encoder.layers.N., RoBERTa's encoder.layer.N.


# ---- the teacher -------------------------------------------------------------------------------------------------


def check_teacher(source: str) -> CrabConfig:
    """The teacher's config, after checking that `source` holds a Crab model with a classification head; else one
    `SettingError` naming `--teacher` and what to pass."""
    pass_instead = "pass a trained Crab model's folder (train.py writes <output_dir>/inference) or its Hub repo id"
    path = Path(source).expanduser()
    if path.exists() and not (path / CONFIG_NAME).is_file():
        raise SettingError(f"--teacher '{source}' has no {CONFIG_NAME}, so it is not a Crab model; {pass_instead}")
    if path.is_dir():
        try:
            saved = json.loads((path / CONFIG_NAME).read_text())
        except (OSError, ValueError) as error:
            raise SettingError(f"--teacher '{source}': its {CONFIG_NAME} cannot be read ({error})") from None
        if not isinstance(saved, dict) or saved.get("model_type") != "crab":
            kind = saved.get("model_type") if isinstance(saved, dict) else None
            raise SettingError(
                f"--teacher '{source}' holds a {kind or 'non-Crab'} model, not a Crab model; {pass_instead}"
            )
    try:
        config = CrabConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        reason = " ".join(str(error).split())[:300]
        raise SettingError(f"--teacher '{source}': no Crab config could be read ({reason}); {pass_instead}") from None
    architectures = config.architectures or [CrabForEmotionClassification.__name__]
    if CrabForEmotionClassification.__name__ not in architectures or not config.num_labels:
        what = "classes" if CrabForEmotionClassification.__name__ in architectures else "output head"
        raise SettingError(
            f"--teacher '{source}' has no {what} to learn from (a {', '.join(architectures)} with "
            f"{config.num_labels} classes); pass a Crab emotion classifier (train.py writes <output_dir>/inference)"
        )
    return config


def load_teacher(source: str) -> tuple[CrabForEmotionClassification, CrabProcessor]:
    """The teacher (eval mode, no gradients) and its processor, `source` checked first (`check_teacher`)."""
    config = check_teacher(source)
    teacher = CrabForEmotionClassification.from_pretrained(source, config=config).eval().requires_grad_(False)
    processor = CrabProcessor.from_pretrained(source, trust_remote_code=False)
    return teacher, processor


def inference_parameters(model: CrabForEmotionClassification) -> int:
    """Parameters of the model as exported for inference: without the training-only CSL legs."""
    legs = sum(p.numel() for p in model.csl_legs.parameters()) if model.csl_legs is not None else 0
    return sum(p.numel() for p in model.parameters()) - legs


# ---- the student -------------------------------------------------------------------------------------------------


def read_student_preset(name: str) -> dict:
    """`presets/students/<name>.yaml`: {part: {size: fraction of the teacher's}}; an unknown name or key is one
    `SettingError` listing what there is."""
    path = STUDENT_PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise SettingError(
            f"--student '{name}': no such student preset; pass one of {', '.join(student_preset_names())}"
        )
    preset = read_settings_file(path)
    for part, sizes in preset.items():
        known = SCALABLE.get(part)
        if known is None or not isinstance(sizes, dict) or set(sizes) - set(known):
            raise SettingError(
                f"student preset '{path}': '{part}' {sorted(sizes) if isinstance(sizes, dict) else sizes!r} is not "
                f"one of {json.dumps(SCALABLE)} with fractions of the teacher's sizes"
            )
        for size, fraction in sizes.items():
            if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
                raise SettingError(f"student preset '{path}': {part}.{size} {fraction!r}: pass a fraction in (0, 1]")
    return preset


def _scaled(value: int, fraction: float, multiple: int = 1) -> int:
    return max(multiple, round(value * fraction / multiple) * multiple)


def _shrink_encoder(config, fractions: dict) -> None:
    """An encoder config scaled in place: the CNN's channels, the width (as many attention heads as the fraction
    leaves, each as wide as the teacher's; the feed-forward in proportion; the positional convolution's groups what
    divides the width) and the layers."""
    if "conv_dim" in fractions:
        config.conv_dim = [_scaled(channels, fractions["conv_dim"]) for channels in config.conv_dim]
    if "hidden_size" in fractions:
        head_width = config.hidden_size // config.num_attention_heads
        heads = _scaled(config.num_attention_heads, fractions["hidden_size"])
        width = heads * head_width
        config.intermediate_size = _scaled(config.intermediate_size * width // config.hidden_size, 1.0)
        if hasattr(config, "num_conv_pos_embedding_groups"):
            config.num_conv_pos_embedding_groups = math.gcd(config.num_conv_pos_embedding_groups, width)
        config.hidden_size, config.num_attention_heads = width, heads
    if "num_hidden_layers" in fractions:
        config.num_hidden_layers = _scaled(config.num_hidden_layers, fractions["num_hidden_layers"])


def student_config(teacher_config: CrabConfig, preset: dict) -> CrabConfig:
    """The student's config: the teacher's (classes, attributes, head switches) with the preset's smaller sizes,
    no class weights (the run sets them) and no pretrained encoder names (its encoders are the student's own)."""
    config = copy.deepcopy(teacher_config)
    _shrink_encoder(config.audio_config, preset.get("speech", {}))
    _shrink_encoder(config.text_config, preset.get("text", {}))
    if "fusion_hidden_size" in preset.get("head", {}):
        config.fusion_hidden_size = _scaled(config.fusion_hidden_size, preset["head"]["fusion_hidden_size"], 2)
    config.class_weights = None
    config.use_csl_legs = True  # a model in training has them, whatever the teacher's export dropped
    config.audio_encoder_name = config.text_encoder_name = None
    config.architectures = [CrabForEmotionClassification.__name__]
    return config


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer each student layer starts from: evenly spaced, the first and the last kept (12 -> 6:
    0, 2, 4, 7, 9, 11, DistilBERT's choice); one student layer starts from the first."""
    if student_layers == 1:
        return [0]
    return [round(i * (teacher_layers - 1) / (student_layers - 1)) for i in range(student_layers)]


def copy_from_teacher(student: CrabForEmotionClassification, teacher: CrabForEmotionClassification) -> dict:
    """Every student tensor whose teacher counterpart has its shape, copied: an encoder's layer i from teacher layer
    `layer_map(...)[i]`, any other tensor from the one of the same name. Returns, per encoder, the teacher layers its
    layers were copied from: None where they were not whole (another width; a narrower WavLM layer still shares its
    per-head gate with the teacher's, which is copied, but that is no copied layer)."""
    state = student.state_dict()
    teacher_state = teacher.state_dict()
    mapped = {}
    for part, name in (("audio_encoder", "speech"), ("text_encoder", "text")):
        student_layers = getattr(student.crab, part).config.num_hidden_layers
        mapped[name] = layer_map(student_layers, getattr(teacher.crab, part).config.num_hidden_layers)
    copied, layers_copied = {}, {name: True for name in mapped}
    for key, tensor in state.items():
        source = key
        for part, name in (("audio_encoder", "speech"), ("text_encoder", "text")):
            prefix = f"crab.{part}."
            if key.startswith(prefix):
                layers = mapped[name]
                inner = _LAYER.sub(
                    lambda m, layers=layers: f"{m.group(1)}.{layers[int(m.group(2))]}.", key[len(prefix) :]
                )
                source = prefix + inner
                if _LAYER.match(inner):
                    layers_copied[name] &= source in teacher_state and teacher_state[source].shape == tensor.shape
        if source in teacher_state and teacher_state[source].shape == tensor.shape:
            copied[key] = teacher_state[source]
    student.load_state_dict(copied, strict=False)
    return {name: mapped[name] if layers_copied[name] else None for name in mapped}


def build_student(
    teacher: CrabForEmotionClassification, preset_name: str, teacher_name: str, loss_settings: dict | None = None
) -> CrabForEmotionClassification:
    """The student of `preset_name` for `teacher` (`student_config`, then `copy_from_teacher`), its config recording
    how it was made (`config.distillation`: the teacher, the preset, both sizes, the copied layers, the objective's
    settings: `losses.DISTILLATION_DEFAULTS`' keys)."""
    student = CrabForEmotionClassification(student_config(teacher.config, read_student_preset(preset_name)))
    layers = copy_from_teacher(student, teacher)
    student.config.distillation = {
        "teacher": teacher_name,
        "student": preset_name,
        "teacher_parameters": inference_parameters(teacher),
        "student_parameters": inference_parameters(student),
        "speech_layers_from_teacher": layers["speech"],
        "text_layers_from_teacher": layers["text"],
        **DISTILLATION_DEFAULTS,
        **(loss_settings or {}),
    }
    return student


def prepare_student(arguments: RunArguments) -> RunArguments:
    """A distillation run's first step: the student built from `--teacher` and saved with the teacher's processor
    in `output_dir/student_init`, and the run's arguments for it: that checkpoint to fine-tune, the teacher's
    classes (`--labels`) and its attributes where the manifest has their columns."""
    distillation, data, training = arguments.distillation, arguments.data, arguments.training
    teacher_config = check_teacher(distillation.teacher)
    read_student_preset(distillation.student)  # before the teacher's weights are read
    classes = [teacher_config.id2label[i] for i in sorted(teacher_config.id2label)]
    attributes = list(teacher_config.attribute_names)
    given = [name.strip() for name in (data.labels or "").split(",") if name.strip()]
    if given and given != classes:
        raise SettingError(
            f"--labels {','.join(given)}: the student predicts the teacher's classes, {','.join(classes)}; drop "
            "--labels or pass those"
        )
    if arguments.attributes and arguments.attributes != attributes:
        raise SettingError(
            f"--attributes {data.attributes}: the student predicts the teacher's attributes "
            f"({','.join(attributes) or 'none'}); drop --attributes"
        )
    read_attributes = attributes and (data.manifest is None or set(attributes) <= column_names(data.manifest))
    out = Path(training.output_dir) / STUDENT_INIT
    with training.main_process_first(desc="building the student from the teacher"):
        if training.should_save:
            teacher, processor = load_teacher(distillation.teacher)
            loss_settings = {
                "temperature": distillation.distill_temperature,
                "soft_weight": distillation.distill_soft_weight,
                "attribute_weight": distillation.distill_attribute_weight,
                "label_weight": distillation.distill_label_weight,
                "embedding_weight": distillation.distill_embedding_weight,
            }
            student = build_student(teacher, distillation.student, distillation.teacher, loss_settings)
            student.save_pretrained(out)
            processor.save_pretrained(out)
            size = student.config.distillation
            logger.info(
                f"student '{distillation.student}' of {distillation.teacher}: {size['student_parameters']:,} "
                f"parameters (teacher {size['teacher_parameters']:,}), text layers from the teacher's "
                f"{size['text_layers_from_teacher']}; saved in {out}"
            )
    return arguments._replace(
        model=replace(arguments.model, model_name_or_path=str(out)),
        data=replace(data, labels=",".join(classes), attributes=",".join(attributes) if read_attributes else None),
    )


# ---- the teacher's outputs ---------------------------------------------------------------------------------------


@torch.no_grad()
def teacher_outputs(teacher: CrabForEmotionClassification, tensors: dict) -> tuple[dict, list[int], list[int]]:
    """What the teacher cache stores of a batch (`feature_cache.encoder_features`' contract): each clip's
    `teacher_logits` (C,) and `teacher_attributes` (A,) where the teacher has them and its pooled bimodal embedding
    `teacher_embedding` (4h,), fp32 on the CPU, and its frames and tokens."""
    encoded = teacher.crab.encode(
        tensors["input_values"],
        tensors["input_ids"],
        attention_mask=tensors.get("attention_mask"),
        text_attention_mask=tensors.get("text_attention_mask"),
    )
    outputs = teacher(encoder_outputs=encoded, output_csl_embeddings=False)
    stored = {
        TEACHER_PREFIX + head.output: list(getattr(outputs, head.output).float().cpu())
        for head in heads_of(teacher.config)
    }
    stored[TEACHER_PREFIX + "embedding"] = list(outputs.pooled_output.float().cpu())  # (4h,) per clip
    batch_size = len(tensors["input_values"])
    frames, tokens = encoded["frame_mask"], encoded["token_mask"]
    num_frames = frames.sum(1).tolist() if frames is not None else [encoded["speech_frames"].shape[1]] * batch_size
    num_tokens = tokens.sum(1).tolist() if tokens is not None else [encoded["text_tokens"].shape[1]] * batch_size
    return stored, num_frames, num_tokens


def cache_teacher_outputs(
    teacher: CrabForEmotionClassification, processor: CrabProcessor, datasets: dict, cache_root: Path, training
) -> dict[str, CachedFeatures]:
    """The teacher's outputs for every dataset (by name) in `cache_root/<name>`, computed once with a progress bar
    (the main process computes, the others wait and read) and reused while teacher, processor and clips are
    unchanged (`feature_cache.encode_dataset`)."""
    teacher.to(training.device)
    folders = {name: cache_root / name for name in datasets}
    return encode_datasets(
        teacher,
        processor,
        datasets,
        folders,
        weights_fingerprint(teacher),
        training,
        "computing the teacher's outputs",
        dtype=torch.float32,  # a few numbers per clip: fp16 would round the targets for nothing
        features=teacher_outputs,
    )


class WithTeacherOutputs(torch.utils.data.Dataset):
    """`dataset`'s items (a `CrabAudioTextDataset`), each with the teacher's outputs for its clip from `targets`
    (a `CachedFeatures` of `teacher_outputs`: `teacher_logits`, `teacher_attributes`); its `lengths`, `utterances` and `label_ids`."""

    def __init__(self, dataset: CrabAudioTextDataset, targets: CachedFeatures):
        self.dataset, self.targets = dataset, targets
        self.position = {utt_id: i for i, utt_id in enumerate(targets.ids)}
        missing = [u.id for u in dataset.utterances if str(u.id) not in self.position]
        if missing:
            raise ManifestError(
                f"the teacher cache '{targets.cache_dir}' lacks clip '{missing[0]}'; delete it to compute it again"
            )
        self.lengths, self.utterances = dataset.lengths, dataset.utterances

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def label_ids(self) -> list[int]:
        return self.dataset.label_ids

    def __getitem__(self, key):
        item = self.dataset[key]
        cached = self.targets[self.position[str(item["id"])]]
        item.update({name: cached[name] for name in self.targets.features})
        return item


class DistillationCollator:
    """`collator`'s batch, and with the teacher's outputs of the items (`teacher_<output>`, (B, K)) where they have
    them; there, `labels` with -100 on the rows without a class (unlabelled audio), when some row has one."""

    def __init__(self, collator: CrabDataCollator):
        self.collator = collator

    def __call__(self, items: list[dict]) -> dict:
        batch = self.collator(items)
        keys = [key for key in items[0] if key.startswith(TEACHER_PREFIX)]
        for key in keys:
            batch[key] = torch.stack([item[key] for item in items]).float()
        labels = [item.get("label") for item in items]
        if keys and "labels" not in batch and any(label is not None for label in labels):
            batch["labels"] = torch.tensor([-100 if label is None else label for label in labels])
        return batch


def demo_unlabelled_manifest(arguments: RunArguments, demo_clips: int, num_classes: int) -> Path:
    """A student of the demo (no `--manifest`) also learns from as many further demo clips as the demo corpus has
    (`demo_clips`), spoken by 48 other voices (`recipes.demo.generate_unlabelled_demo_clips`), which the teacher
    labels: on the demo's 16 training voices alone the student follows the teacher on those voices and less on new
    ones (docs/distillation.md measures both)."""
    from ..recipes.demo import generate_unlabelled_demo_clips

    training = arguments.training
    with training.main_process_first(desc="generating further demo clips for the teacher to label"):
        manifest = generate_unlabelled_demo_clips(
            Path(training.output_dir) / DEMO_UNLABELLED, n_per_class=max(3, round(demo_clips / num_classes))
        )
    logger.info(f"no --manifest: further demo clips of other voices, for the teacher to label, in {manifest.parent}")
    return manifest


def read_unlabelled(source: str, audio_root: str | None) -> list[Utterance]:
    """The rows of one `--unlabelled_manifest`: a manifest's (`load_manifest`; text and labels optional), a folder's
    audio files (`audio.audio_files`, recursively; the relative path is the id) or one audio file's (a shell's
    `calls/*.wav`), those without a transcript not yet transcribed."""
    from ..audio import AUDIO_SUFFIXES, audio_files

    path = Path(source).expanduser()
    if not path.exists():
        raise ManifestError(
            f"--unlabelled_manifest '{source}' does not exist; pass manifests (CSV, JSONL or saved datasets folders), "
            "folders of audio files or audio files"
        )
    if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
        return [Utterance(id=source, audio=str(path.resolve()), text="", label="", where=source)]
    if not path.is_dir() or is_saved_dataset(path):
        return load_manifest(source, audio_root, needs_label=False, needs_text=False)
    files = audio_files(path)
    if not files:
        raise ManifestError(
            f"--unlabelled_manifest folder '{source}' holds no audio files ({', '.join(AUDIO_SUFFIXES)}, in it or its "
            "subfolders); pass the folder that holds them, or a manifest"
        )
    return [Utterance(id=f.relative_to(path).as_posix(), audio=str(f), text="", label="", where=str(f)) for f in files]


def transcribe_rows(arguments: RunArguments, rows: list[Utterance]) -> list[Utterance]:
    """`rows`, each readable one without a transcript transcribed by `--asr_model` (the pipeline's speech recognizer,
    `pipeline_crab.speech_recognizer`): the clip as the student reads it, its first `--max_duration_s` seconds.
    Transcripts are kept in `output_dir/unlabelled_transcripts.jsonl` as they are made, so a run started again
    (or killed and resumed) transcribes only what is new; the main process transcribes, the others read. With
    `--empty_transcripts audio_only` rows stay without text (the student learns them from audio alone). A clip that
    cannot be read keeps the empty transcript, for the scan to report with its audio's problem."""
    data, training = arguments.data, arguments.training
    todo = [u for u in rows if not u.text and u.audio and not u.problems]
    if not todo or data.empty_transcripts == "audio_only":
        return rows
    asr_name = arguments.distillation.asr_model
    path = Path(training.output_dir) / UNLABELLED_TRANSCRIPTS

    def key(u: Utterance) -> str:
        return json.dumps([u.audio, u.start, u.end, data.max_duration_s, asr_name, file_stamp(u.audio)])

    keys = {u.id: key(u) for u in todo}
    with training.main_process_first(desc="transcribing clips without a transcript"):
        known, ended = kept_transcripts(path)
        missing = [u for u in todo if keys[u.id] not in known]
        if missing:
            from tqdm.auto import tqdm

            from ..pipeline_crab import transcribe

            asr, named = load_recognizer(asr_name, todo, training.device)
            logger.info(f"transcribing {len(missing)} clips without a transcript with {named}, into {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as handle:
                handle.write("" if ended else "\n")  # after a line a stopped run cut short
                bar = tqdm(missing, desc="transcribing", unit="clip", disable=True if training.disable_tqdm else None)
                for u in bar:  # on a terminal, as every progress bar here
                    try:
                        waveform = load_audio(u.audio, u.start, u.end, data.max_duration_s)
                    except Exception as error:  # unreadable: the scan reports the row with its audio's problem
                        logger.debug(f"'{u.audio}' was not transcribed: {error}")
                        waveform = None
                    text = ""  # unreadable, kept so that the other processes do not try again (a changed file would)
                    if waveform is not None:
                        span = [(0.0, len(waveform) / SAMPLING_RATE)]
                        text = clean_transcript(transcribe(asr, waveform, SAMPLING_RATE, span)[0])
                    known[keys[u.id]] = text
                    handle.write(json.dumps({"key": keys[u.id], "text": text}) + "\n")
                    handle.flush()
            del asr
    return [replace(u, text=known.get(keys[u.id], "")) if u.id in keys else u for u in rows]


def load_recognizer(asr_name: str | None, todo: list[Utterance], device) -> tuple[object, str]:
    """The speech recognizer `--asr_model` names (`pipeline_crab.speech_recognizer`) and its name, checked first
    where it needs the Hub (`run.check_model_sources`: at once, not after the Hub's retries); one that cannot be
    had is a `SettingError` naming the clips that need it and the fixes."""
    from ..pipeline_crab import DEFAULT_ASR_MODEL, speech_recognizer
    from .run import check_model_sources

    named = asr_name or DEFAULT_ASR_MODEL
    without = f"{len(todo)} clip(s) of --unlabelled_manifest have no transcript (the first: '{todo[0].audio}')"
    fixes = "give the manifest a text column, pass --asr_model a local speech recognizer, or --empty_transcripts "
    fixes += "audio_only"
    try:
        check_model_sources([("--asr_model", named)], fixes)
        return speech_recognizer(asr_name, device), named
    except SettingError as error:
        raise SettingError(f"{without}, and {error}") from None
    except Exception as error:
        reason = " ".join(str(error.__cause__ or error).split())[:300]
        raise SettingError(f"{without}, and the speech recognizer '{named}' cannot load ({reason}); {fixes}") from None


def kept_transcripts(path: Path) -> tuple[dict[str, str], bool]:
    """`transcribe_rows`' transcripts by key (a line a stopped run left half-written is skipped), and whether the
    file ends where a line ends (no file: it does)."""
    text = path.read_text() if path.is_file() else ""
    known = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            known[entry["key"]] = entry["text"]
        except (ValueError, KeyError, TypeError):
            continue
    return known, text.endswith("\n") or not text


def unlabelled_rows(
    arguments: RunArguments, label_names: list[str], demo_clips: int = 0
) -> tuple[list[Utterance], dict[str, int]]:
    """The rows of every `--unlabelled_manifest` (`read_unlabelled`: audio, transcripts where there are; labels and
    splits there are unused), with ids made unique across them, those without a transcript transcribed
    (`transcribe_rows`), each row checked and its audio read once (`scan_manifest`); their lengths. Without
    `--manifest` and `--unlabelled_manifest`, further demo clips (`demo_unlabelled_manifest`)."""
    manifests = arguments.distillation.unlabelled_manifest or []
    if not manifests and arguments.data.manifest is None and demo_clips:
        manifests = [demo_unlabelled_manifest(arguments, demo_clips, len(label_names))]
    rows = []
    for k, manifest in enumerate(manifests):
        utterances = read_unlabelled(manifest, arguments.data.audio_root)
        rows += [replace(u, id=f"{UNLABELLED}{k}:{u.id}", label="", split=UNLABELLED) for u in utterances]
    if not rows:
        return [], {}
    rows = transcribe_rows(arguments, rows)
    scan = scan_manifest(
        rows,
        label_names,
        train_split=UNLABELLED,
        max_duration_s=arguments.data.max_duration_s,
        num_workers=arguments.data.preprocessing_num_workers,
        cache_path=Path(arguments.training.output_dir) / "unlabelled_scan.json",
        name="--unlabelled_manifest",
        needs_labels=False,
        empty_transcripts=arguments.data.empty_transcripts,
        min_samples=min_audio_samples(CrabConfig.from_pretrained(arguments.model.model_name_or_path).audio_config),
    )
    return rows, scan.num_samples


def add_teacher_outputs(arguments: RunArguments, datasets: dict, splits: dict, collator) -> tuple[dict, object]:
    """A distillation run's datasets and collator (`run.fit`): the training split and the unlabelled rows, each clip
    with the teacher's outputs, and the teacher's outputs cached for the dev and test clips too (`teacher_agreement`
    reads them)."""
    train = datasets["train"]
    demo_clips = sum(len(datasets[role]) for role in ("train", "eval", "test") if role in datasets)
    extra, lengths = unlabelled_rows(arguments, list(train.label2id), demo_clips)
    if extra:
        logger.info(f"{len(extra)} clips without labels join the {len(train)} training clips; the teacher labels them")
        num_samples = {**dict(zip((u.id for u in train.utterances), train.lengths)), **lengths}
        train = CrabAudioTextDataset(train.utterances + extra, train.label2id, train.max_duration_s, num_samples)
    teacher, processor = load_teacher(arguments.distillation.teacher)
    named = {splits["train"]: train, **{splits[role]: datasets[role] for role in ("eval", "test") if role in datasets}}
    if extra:
        named[f"{splits['train']}+{UNLABELLED}"] = named.pop(splits["train"])
    cached = cache_teacher_outputs(teacher, processor, named, teacher_cache(arguments), arguments.training)
    del teacher
    train_targets = cached[f"{splits['train']}+{UNLABELLED}" if extra else splits["train"]]
    if (
        arguments.distillation.distill_embedding_weight > 0
        and TEACHER_PREFIX + "embedding" not in train_targets.features
    ):
        raise ManifestError(
            f"the teacher cache '{train_targets.cache_dir}' holds no embeddings of the teacher's (an earlier version "
            "wrote it), and --distill_embedding_weight needs them; delete it to compute it again"
        )
    return {**datasets, "train": WithTeacherOutputs(train, train_targets)}, DistillationCollator(collator)


def teacher_cache(arguments: RunArguments) -> Path:
    """Where the teacher's outputs are cached: `--teacher_cache`, else `output_dir/teacher_outputs`."""
    return Path(arguments.distillation.teacher_cache or Path(arguments.training.output_dir) / TEACHER_OUTPUTS)


# ---- agreement ---------------------------------------------------------------------------------------------------


def teacher_agreement(
    arguments: RunArguments, rows: dict[str, list[Utterance]], splits: dict[str, str], label_names: list[str]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The student's top-1 agreement with the teacher on the dev and test clips (`eval_teacher_agreement`,
    `test_teacher_agreement`: the share of clips whose predicted class is the teacher's, from the run's
    `predictions_<split>.csv`), and the teacher's own metrics on each labelled split (`teacher_eval_uar`, ...; the
    summary's `<split> (teacher)` rows)."""
    output_dir = Path(arguments.training.output_dir)
    metrics, per_split = {}, {}
    head = ClassHead(label_names)
    for role, prefix in (("eval", "eval"), ("test", "test")):
        predictions = output_dir / f"predictions_{splits.get(role)}.csv"
        if role not in rows or not predictions.is_file():
            continue
        cached = CachedFeatures(teacher_cache(arguments) / splits[role])
        teacher = {utt_id: cached[i] for i, utt_id in enumerate(cached.ids)}
        with predictions.open(newline="") as handle:
            student = {row["id"]: row["prediction"] for row in csv.DictReader(handle)}
        ids = [str(u.id) for u in rows[role]]
        logits = np.stack([teacher[utt_id][TEACHER_PREFIX + "logits"].numpy() for utt_id in ids])  # (N, C)
        agree = [student[utt_id] == label_names[int(i)] for utt_id, i in zip(ids, logits.argmax(-1))]
        metrics[f"{prefix}_teacher_agreement"] = float(np.mean(agree))
        labelled = [i for i, u in enumerate(rows[role]) if u.label in label_names]
        if labelled:
            labels = np.array([label_names.index(rows[role][i].label) for i in labelled])
            scores = head.metrics(logits[labelled], labels)
            if TEACHER_PREFIX + "attributes" in cached.features and rows[role][0].attributes:
                attributes = np.stack([teacher[utt_id][TEACHER_PREFIX + "attributes"].numpy() for utt_id in ids])
                names = list(rows[role][0].attributes)
                targets = np.array([attribute_row(u) for u in rows[role]])
                scores.update(heads_of({"id2label": {}, "attribute_names": names})[0].metrics(attributes, targets))
            per_split[f"{splits[role]} (teacher)"] = scores
            metrics.update({f"teacher_{prefix}_{key}": value for key, value in scores.items()})
    return metrics, per_split


__all__ = [
    "STUDENT_INIT",
    "add_teacher_outputs",
    "build_student",
    "check_teacher",
    "copy_from_teacher",
    "layer_map",
    "load_teacher",
    "prepare_student",
    "read_student_preset",
    "student_config",
    "teacher_agreement",
    "teacher_outputs",
]
