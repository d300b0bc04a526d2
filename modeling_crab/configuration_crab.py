"""Configuration of Crab (Ueda, Lima & Costa, arXiv 2603.23673): a speech encoder, a text encoder and the Crab head."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .options import (  # each allowed value written once, without torch (train.py --help reads them there)
    AUDIO_ENCODER,
    FP32_UNDER_AUTOCAST,
    MAX_TEXT_TOKENS,
    MLCS_TAPS,
    NORMALIZATIONS,
    TEXT_ENCODER,
    TEXT_PADDINGS,
    TRAINING_CROP_S,
    HeadOptions,
    option_problems,
)

__all__ = [
    "CrabConfig",
    "FP32_UNDER_AUTOCAST",
    "MAX_TEXT_TOKENS",
    "MLCS_TAPS",
    "NORMALIZATIONS",
    "TEXT_PADDINGS",
    "TRAINING_CROP_S",
    "min_audio_samples",
]

# Sub-config defaults shaped like the paper's encoders; `from_pretrained_encoders` replaces them with the real ones.
WAVLM_LARGE = {
    "model_type": "wavlm",
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "conv_bias": True,
    "feat_proj_dropout": 0.1,
    "layerdrop": 0.1,
    "mask_time_prob": 0.075,
}
ROBERTA_LARGE = {
    "model_type": "roberta",
    "vocab_size": 50265,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "layer_norm_eps": 1e-5,
}


def _as_sub_config(value: dict | PreTrainedConfig | None, default: dict) -> PreTrainedConfig:
    if isinstance(value, PreTrainedConfig):
        return value
    kwargs = dict(default if value is None else value)
    model_type = kwargs.pop("model_type", default["model_type"])
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"sub-config model_type '{model_type}' is not a transformers model type")
    return CONFIG_MAPPING[model_type](**kwargs)


def min_audio_samples(audio_config: PreTrainedConfig) -> int:
    """The fewest samples that give a speech encoder's CNN (`conv_kernel`, `conv_stride`) one frame: 400 for WavLM."""
    samples = 1
    kernels, strides = getattr(audio_config, "conv_kernel", ()), getattr(audio_config, "conv_stride", ())
    for kernel, stride in reversed(list(zip(kernels, strides))):
        samples = (samples - 1) * stride + kernel
    return samples


class CrabConfig(PreTrainedConfig, HeadOptions):
    r"""
    Configuration of a Crab model: `audio_config` (WavLM, or any `AutoModel` speech encoder with a CNN feature
    encoder such as wav2vec 2.0 or HuBERT), `text_config` (RoBERTa or another `AutoModel` text encoder), and the head.

    Args:
        fusion_hidden_size: h of SPEC §1; the GRUs are bidirectional, so cross-attention runs at 2h.
        contrastive_dim: output width of every Contrastive Supervision Leg (CSL).
        mask_padding: mask padded frames and tokens in the head. `False` reproduces the released head, which masks
            nothing (GRUs, attention, pooling and the unimodal means all see padding).
        unimodal_tap: where the unimodal CSLs read from. `"pre_gru"` (released code): time-mean of the projected,
            normalised encoder features; `"post_gru"` (paper text): time-mean of the bi-GRU output.
        mlcs_taps: the CSLs that contribute to the MLCS term (any subset of `MLCS_TAPS`).
        mlcs_temperature / mlcs_weight: tau and alpha of the MLCS term (0.1 and 2.0 in the paper).
        mlcs_loss: `"mpcl"` (the paper's multi-positive contrastive loss) or `"supcon"` (SupCon L_out).
        mlcs_gather: in training under data parallelism, all-gather the CSL embeddings of every rank so that MLCS
            contrasts the global micro-batch (exact: the same loss and gradients as one process on the whole batch).
        class_weights: the weight of each class in the cross-entropy term, `w_j = N / (C N_j)` from the training
            labels (`training.compute_class_weights`; `train.py` sets them); `None` for plain cross-entropy.
        label_smoothing: epsilon of label smoothing in the cross-entropy term (`torch`'s `label_smoothing`; train.py's
            `--label_smoothing_factor`); 0 (the paper's) by default.
        attribute_names: the emotional attributes the model predicts beside (or instead of) the classes, e.g.
            `["arousal", "valence", "dominance"]`, on the 0-1 scale of the manifests (`manifest.ATTRIBUTE_RANGE`); a
            regression head beside the classifier reads the pooled bimodal embedding. Empty (the default and every
            checkpoint saved without it): categories only. A model with no classes (`id2label={}`) predicts
            attributes only.
        attribute_loss_weight: beta, the weight of the attribute term `mean_a (1 - CCC_a)` in the objective.
        attribute_contrast_bins: MLCS of an attributes-only model: each attribute is cut into this many equal bins
            of the 0-1 scale and utterances in the same bin of every attribute are positives; 0 turns MLCS off for
            such a model. Models with classes contrast their classes.
        use_csl_legs: build the training-only CSL legs; the inference export sets this to `False`.
        modality_dropout: in training, the probability that an utterance's transcript is replaced by the empty one
            (`<s></s>`), so that the model also works on audio alone (the pipeline's audio-only mode). Not in the
            paper; 0 by default.
        pass_audio_attention_mask: whether the speech encoder gets the waveform padding mask. `None` (default):
            only encoders with a layer-normalised CNN (WavLM/wav2vec 2.0 large); group-norm base checkpoints were
            pretrained on zero padding without one. `True`: always, as the released code did.
        audio_attention: WavLM self-attention, `"sdpa"` (`wavlm_attention.py`: transformers' function through
            `scaled_dot_product_attention`, fused kernels, no (B, H, T, T) weights kept for backward) or `"eager"`
            (transformers' own); no effect on other speech encoders. A model loaded with `attn_implementation="eager"`
            (what `output_attentions` needs: fused attention returns no weights) runs eager WavLM attention whatever
            this says.
        fp32_under_autocast: parts that run in fp32 when the model is called under bf16/fp16 autocast:
            `"feature_encoder"` (the speech encoder's CNN: in bf16 it alone moves base-size logits by more than
            1e-2) and `"gru"` (the unimodal GRUs: a recurrence over hundreds of frames compounds rounding). No
            effect without autocast.
        augmentation: how the training audio was augmented (`training.augment.WaveformAugmentation.to_dict()`:
            speed factors, gain, noise, reverberation), recorded by `train.py` for the model card; `None`: not
            augmented. Not used at inference. SpecAugment is the speech encoder's own setting: `audio_config`'s
            `mask_time_prob`, `mask_time_length`, `mask_feature_prob`, `mask_feature_length`.
        head_init: how the head's linear and attention layers start (the encoders keep their own initialisation).
            `"normal"` (default): transformers' convention, weights from N(0, `initializer_range`) and zero biases;
            `"pytorch"`: PyTorch's own defaults (Kaiming-uniform weights and biases within 1/sqrt(fan_in)), which the
            released head, a plain `nn.Module`, started from. In both, the cross-attention starts as
            `nn.MultiheadAttention` does: Xavier-uniform input projection, zero biases. Only a model built from
            scratch is affected; loaded weights are never re-initialised.
        audio_encoder_name / text_encoder_name: where `from_pretrained_encoders` loads encoder weights from; `None`
            for randomly initialised encoders (the tiny demo model), so that no card names a checkpoint it never saw.
    """

    model_type = "crab"
    sub_configs = {"audio_config": AutoConfig, "text_config": AutoConfig}

    audio_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    fusion_hidden_size: int = 512
    contrastive_dim: int = 512
    class_weights: list[float] | None = None
    label_smoothing: float = 0.0
    attribute_names: list[str] | None = None
    use_csl_legs: bool = True
    fp32_under_autocast: list[str] | None = None
    augmentation: dict | None = None
    audio_encoder_name: str | None = AUDIO_ENCODER
    text_encoder_name: str | None = TEXT_ENCODER
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self.audio_config = _as_sub_config(self.audio_config, WAVLM_LARGE)
        self.text_config = _as_sub_config(self.text_config, ROBERTA_LARGE)
        self.mlcs_taps = list(MLCS_TAPS if self.mlcs_taps is None else self.mlcs_taps)
        problems = option_problems(self, prefix="")  # HeadOptions' fields, as train.py checks its flags
        if problems:
            raise ValueError("CrabConfig: " + "; ".join(problems))
        self.fp32_under_autocast = list(
            FP32_UNDER_AUTOCAST if self.fp32_under_autocast is None else self.fp32_under_autocast
        )
        unknown = [part for part in self.fp32_under_autocast if part not in FP32_UNDER_AUTOCAST]
        if unknown:
            raise ValueError(f"fp32_under_autocast {unknown}: choose from {list(FP32_UNDER_AUTOCAST)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.fusion_hidden_size % 2:
            raise ValueError(
                f"fusion_hidden_size must be even (the unimodal legs use h/2), got {self.fusion_hidden_size}"
            )
        self.attribute_names = [str(name) for name in (self.attribute_names or [])]
        if len(set(self.attribute_names)) != len(self.attribute_names) or not all(self.attribute_names):
            raise ValueError(f"attribute_names {self.attribute_names} must be distinct, non-empty names")
        super().__post_init__(**kwargs)
        if self.num_labels == 0 and not self.attribute_names:
            raise ValueError("a Crab model needs classes (id2label), attributes (attribute_names) or both")
        if self.class_weights is not None:
            self.class_weights = [float(w) for w in self.class_weights]
            if len(self.class_weights) != self.num_labels:
                raise ValueError(
                    f"class_weights has {len(self.class_weights)} entries for {self.num_labels} labels; give one per class"
                )

    @property
    def num_attributes(self) -> int:
        return len(self.attribute_names or [])

    @property
    def audio_feeds_attention_mask(self) -> bool:
        """Speech encoders with a layer-normalised CNN (WavLM/wav2vec 2.0 large) take an attention mask; group-norm
        ones (base checkpoints) were trained on zero padding without one. `pass_audio_attention_mask` overrides."""
        if self.pass_audio_attention_mask is not None:
            return bool(self.pass_audio_attention_mask)
        return getattr(self.audio_config, "feat_extract_norm", "layer") == "layer"
