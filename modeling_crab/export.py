"""Inference export: a checkpoint without the training-only CSL legs, with the code that loads it anywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .configuration_crab import CrabConfig
from .feature_extraction_crab import CrabFeatureExtractor
from .modeling_crab import CrabForEmotionClassification, CrabModel
from .pipeline_crab import PIPELINE_TASK
from .processing_crab import CrabProcessor

AUTO_MAP = {
    "AutoConfig": "configuration_crab.CrabConfig",
    "AutoModel": "modeling_crab.CrabModel",
    "AutoModelForAudioClassification": "modeling_crab.CrabForEmotionClassification",
}


# The files of a model folder or repo that name code to run: `auto_map` (config, processor, feature extractor,
# tokenizer) and `custom_pipelines` (config).
CODE_NAMING_FILES = ("config.json", "processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def code_references(settings) -> list[str]:
    """Every class reference in a config file's `auto_map`s and `custom_pipelines` (`"module.Class"`, or
    `"owner/repo--module.Class"` for another repo's code), nested ones included (processor_config.json holds the
    feature extractor's)."""
    found = []
    if isinstance(settings, dict):
        for key, value in settings.items():
            if key == "auto_map" and isinstance(value, dict):
                for reference in value.values():
                    references = reference if isinstance(reference, (list, tuple)) else [reference]
                    found += [str(item) for item in references if item]
            elif key == "custom_pipelines" and isinstance(value, dict):
                found += [str(task["impl"]) for task in value.values() if isinstance(task, dict) and task.get("impl")]
            else:
                found += code_references(value)
    elif isinstance(settings, list):
        for item in settings:
            found += code_references(item)
    return found


def foreign_code(model: str | os.PathLike, revision: str | None = None) -> list[str]:
    """The class references in `model`'s config files (`CODE_NAMING_FILES`), as `"file: reference"`, that name
    code from somewhere else: for a local folder, every `owner/repo--module.Class` (a folder runs only its own `.py`
    files); for a Hub repo, those of another repo. Loading with `trust_remote_code=True` would fetch and run that
    code. A Hub repo's config.json that cannot be had (offline and not in the cache, no such repo) raises
    transformers' `OSError`, as loading it would."""
    folder = Path(model).expanduser()
    own = None if folder.is_dir() else str(model)
    foreign = []
    for name in CODE_NAMING_FILES:
        path = folder / name if folder.is_dir() else _hub_file(str(model), name, revision)
        if path is None:
            continue
        try:
            settings = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # missing or unreadable: reported by whatever loads it
        for reference in code_references(settings):
            entry = f"{name}: {reference}"
            if (reference.split("--")[0] if "--" in reference else own) != own and entry not in foreign:
                foreign.append(entry)
    return foreign


def _hub_file(repo_id: str, name: str, revision: str | None) -> str | None:
    """A Hub repo's file (downloaded into, or read from, the Hub cache); None where the repo has no such file.
    config.json must be had: without it the repo cannot be loaded at all."""
    from transformers.utils import cached_file

    required = name == "config.json"
    return cached_file(
        repo_id,
        name,
        revision=revision,
        _raise_exceptions_for_missing_entries=required,
        _raise_exceptions_for_connection_errors=required,
    )


def register_auto_classes() -> None:
    """Have `save_pretrained` write the Crab code next to every checkpoint, with `auto_map` entries for
    `AutoConfig`, `AutoModel`, `AutoModelForAudioClassification`, `AutoProcessor` and `AutoFeatureExtractor` (the
    processor's `feature_extraction_crab.py` travels with it); and register, in this process, the feature extractor
    under its name (so `AutoFeatureExtractor` finds it without remote code) and the `speech-emotion-recognition`
    pipeline."""
    from transformers import AutoFeatureExtractor

    CrabConfig.register_for_auto_class()
    CrabModel.register_for_auto_class("AutoModel")
    CrabForEmotionClassification.register_for_auto_class("AutoModelForAudioClassification")
    CrabProcessor.register_for_auto_class("AutoProcessor")
    CrabFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
    AutoFeatureExtractor.register(CrabConfig, CrabFeatureExtractor, exist_ok=True)
    register_pipeline()


def register_pipeline() -> None:
    """Register `CrabEmotionPipeline` under `"speech-emotion-recognition"` in this process, so that
    `pipeline(PIPELINE_TASK, model=<a CrabForEmotionClassification object>, processor=...)` works too."""
    from transformers import AutoModelForAudioClassification
    from transformers.pipelines import PIPELINE_REGISTRY

    from .pipeline_crab import CrabEmotionPipeline

    if PIPELINE_REGISTRY.supported_tasks.get(PIPELINE_TASK, {}).get("impl") is not CrabEmotionPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK,
            pipeline_class=CrabEmotionPipeline,
            pt_model=AutoModelForAudioClassification,
            type="multimodal",
        )


def carry_code(model: CrabModel | CrabForEmotionClassification) -> None:
    """Have every later `save_pretrained` of `model` (a training checkpoint's too) and of Crab processors write the
    Crab code with `auto_map` entries, both model Auto keys included (one class keeps only one registration): a
    folder saved from it loads with `trust_remote_code=True` and `crab predict` where this package is absent."""
    register_auto_classes()
    model.config.auto_map = {**(getattr(model.config, "auto_map", None) or {}), **AUTO_MAP}


def save_with_code(model: CrabModel | CrabForEmotionClassification, out_dir: str | os.PathLike, **kwargs) -> None:
    """`save_pretrained` with the Crab code (`carry_code`); the model's own `save_pretrained` adds the
    `speech-emotion-recognition` pipeline code."""
    carry_code(model)
    model.save_pretrained(out_dir, **kwargs)  # writes custom_pipelines and pipeline_crab.py too


def inference_folder(path: str | os.PathLike) -> Path:
    """train.py's `--output_dir` -> the inference export it holds (`inference/`); any other folder as it is."""
    path = Path(path)
    return path / "inference" if (path / "inference" / "config.json").is_file() else path


def export_for_inference(
    model: CrabForEmotionClassification, processor: CrabProcessor | None, out_dir: str | os.PathLike
) -> Path:
    """Write `out_dir` with safetensors weights minus the CSL legs, a config with `use_csl_legs=False`, the
    processor, and the remote-code files, loadable with `AutoModel`, `AutoModelForAudioClassification` and
    `AutoProcessor` `.from_pretrained(out_dir, trust_remote_code=True)` where this package is not installed."""
    out_dir = Path(out_dir)
    model = getattr(model, "module", model)  # unwrap DDP
    legs, use_legs = getattr(model, "csl_legs", None), model.config.use_csl_legs
    model.csl_legs, model.config.use_csl_legs = None, False
    try:
        save_with_code(model, out_dir)
    finally:
        model.csl_legs, model.config.use_csl_legs = legs, use_legs
    if processor is not None:
        register_auto_classes()
        processor.save_pretrained(out_dir)
    return out_dir
