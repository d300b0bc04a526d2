"""Crab: bimodal speech emotion recognition with Multi Layer Contrastive Supervision (arXiv 2603.23673)."""

from .configuration_crab import MLCS_TAPS, CrabConfig
from .export import export_for_inference, register_auto_classes, save_with_code
from .modeling_crab import CrabClassifierOutput, CrabForEmotionClassification, CrabModel, CrabModelOutput
from .processing_crab import CrabProcessor

register_auto_classes()

__all__ = [
    "MLCS_TAPS",
    "CrabConfig",
    "CrabModel",
    "CrabForEmotionClassification",
    "CrabModelOutput",
    "CrabClassifierOutput",
    "CrabProcessor",
    "export_for_inference",
    "register_auto_classes",
    "save_with_code",
]
