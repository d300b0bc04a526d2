"""Inference export: a checkpoint without the training-only CSL legs, with the code that loads it anywhere."""

from __future__ import annotations

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


def save_with_code(model: CrabModel | CrabForEmotionClassification, out_dir: str | os.PathLike, **kwargs) -> None:
    """`save_pretrained` with both model Auto keys in `auto_map` (one class keeps only one registration); the
    model's own `save_pretrained` adds the `speech-emotion-recognition` pipeline code."""
    register_auto_classes()
    model.config.auto_map = {**(getattr(model.config, "auto_map", None) or {}), **AUTO_MAP}
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
