"""Crab: bimodal speech emotion recognition with Multi Layer Contrastive Supervision (arXiv 2603.23673).

Names are imported on first use, so `python -m modeling_crab.recipes...` starts without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "MLCS_TAPS": "configuration_crab",
    "CrabConfig": "configuration_crab",
    "CrabModel": "modeling_crab",
    "CrabForEmotionClassification": "modeling_crab",
    "CrabModelOutput": "modeling_crab",
    "CrabClassifierOutput": "modeling_crab",
    "CrabFeatureExtractor": "feature_extraction_crab",
    "CrabProcessor": "processing_crab",
    "export_for_inference": "export",
    "register_auto_classes": "export",
    "save_with_code": "export",
}

__all__ = [
    "MLCS_TAPS",
    "CrabConfig",
    "CrabModel",
    "CrabForEmotionClassification",
    "CrabModelOutput",
    "CrabClassifierOutput",
    "CrabFeatureExtractor",
    "CrabProcessor",
    "export_for_inference",
    "register_auto_classes",
    "save_with_code",
]

if TYPE_CHECKING:
    from .configuration_crab import MLCS_TAPS, CrabConfig
    from .export import export_for_inference, register_auto_classes, save_with_code
    from .feature_extraction_crab import CrabFeatureExtractor
    from .modeling_crab import CrabClassifierOutput, CrabForEmotionClassification, CrabModel, CrabModelOutput
    from .processing_crab import CrabProcessor


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'modeling_crab' has no attribute '{name}'")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    # every checkpoint saved from here on carries the Crab code and auto_map entries
    importlib.import_module(".export", __name__).register_auto_classes()
    value = getattr(module, name)
    globals()[name] = value
    return value
