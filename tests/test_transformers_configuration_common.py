"""transformers' own `ConfigTester` (tests/test_configuration_common.py of the installed release) on `CrabConfig`,
as transformers runs it on each of its configs, with the tiny config of test_transformers_modeling_common.py's kind.
"""

from __future__ import annotations

import copy
import unittest

import torch
from transformers import RobertaConfig, WavLMConfig
from transformers_common import common_module

from modeling_crab import CrabConfig

_configuration_common = common_module("test_configuration_common")
ConfigTester = _configuration_common.ConfigTester
config_common_kwargs = _configuration_common.config_common_kwargs


def tiny_config() -> CrabConfig:
    """A Crab config whose sub-configs differ from their classes' defaults (2-layer, 32-wide encoders)."""
    audio_config = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    text_config = RobertaConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    return CrabConfig(
        audio_config=audio_config,
        text_config=text_config,
        fusion_hidden_size=16,
        num_labels=3,
        audio_encoder_name=None,
        text_encoder_name=None,
    )


class _TinyConfigs:
    """What `ConfigTester` reads from its test's model tester: `get_config()`."""

    @staticmethod
    def get_config() -> CrabConfig:
        return tiny_config()


class CrabConfigTest(unittest.TestCase):
    def setUp(self):
        self.model_tester = _TinyConfigs()
        # The scalar head settings (their JSON values are checked one by one); `vocab_size` is the text
        # sub-config's, so the config has no text modality of its own, as in transformers' composite configs.
        self.config_tester = ConfigTester(
            self,
            config_class=CrabConfig,
            has_text_modality=False,
            common_properties=["fusion_hidden_size", "contrastive_dim", "audio_config", "text_config"],
            fusion_hidden_size=16,
            contrastive_dim=8,
            mask_padding=False,
            unimodal_tap="post_gru",
            mlcs_weight=1.5,
            audio_attention="eager",
            head_init="pytorch",
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_config_arguments_init(self):
        """`ConfigTester.check_config_arguments_init` returns early for configs with sub-configs; its check on Crab's:
        every common `PreTrainedConfig` argument is taken."""
        expected = copy.deepcopy(config_common_kwargs)
        config = CrabConfig(**copy.deepcopy(config_common_kwargs))
        self.assertEqual(config.dtype, torch.float16)
        expected.pop("dtype")
        self.assertEqual({key: getattr(config, key) for key in expected}, expected)
