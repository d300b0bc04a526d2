"""Crab: WavLM + RoBERTa features fused by a cross-modal head, trained with Multi Layer Contrastive Supervision.

The head follows SPEC §1 block by block, in the order data flows:

    speech frames (B, T, Da) --UnimodalBlock--> (B, T, 2h) --CrossModalBlock(q=speech, kv=text)--> (B, T, 2h) --Pool--> (B, 2h)
    text tokens   (B, L, Dt) --UnimodalBlock--> (B, L, 2h) --CrossModalBlock(q=text, kv=speech)--> (B, L, 2h) --Pool--> (B, 2h)
    concat (B, 4h) --Classifier--> logits (B, C)

Five Contrastive Supervision Legs (CSLs) read the head at five taps during training only; the inference export
carries none of their weights.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_crab import CrabConfig
from .losses import mlcs_loss
from .wavlm_attention import set_wavlm_attention


@dataclass
class CrabModelOutput(ModelOutput):
    """
    pooled_output: (B, 4h) bimodal embedding, `[audio_pooled, text_pooled]`.
    audio_pooled / text_pooled: (B, 2h) attention-pooled cross-modal features.
    audio_hidden_states / text_hidden_states: (B, T, 2h) / (B, L, 2h) cross-modal block outputs.
    audio_frame_mask / text_token_mask: (B, T) / (B, L) booleans, True on real frames and tokens.
    audio_unimodal / text_unimodal: (B, h) pre-GRU or (B, 2h) post-GRU time-means feeding the unimodal CSLs.
    """

    pooled_output: torch.FloatTensor | None = None
    audio_pooled: torch.FloatTensor | None = None
    text_pooled: torch.FloatTensor | None = None
    audio_hidden_states: torch.FloatTensor | None = None
    text_hidden_states: torch.FloatTensor | None = None
    audio_frame_mask: torch.BoolTensor | None = None
    text_token_mask: torch.BoolTensor | None = None
    audio_unimodal: torch.FloatTensor | None = None
    text_unimodal: torch.FloatTensor | None = None


@dataclass
class CrabClassifierOutput(ModelOutput):
    """
    loss: plain cross-entropy when `labels` are given (the MLCS objective lives in `CrabTrainer` / `losses.py`).
    logits: (B, C).
    csl_embeddings: tap name -> (B, contrastive_dim), present in training or when asked for.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    csl_embeddings: dict[str, torch.FloatTensor] | None = None


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, D), (B, T) bool -> (B, D); a mean over all positions when `mask` is None."""
    if mask is None:
        return x.mean(dim=1)
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _fp32_forward(self: nn.Module, inputs: torch.Tensor, *args, **kwargs):
    """`forward` of a module that `run_in_fp32_under_autocast` marked: under autocast, autocast is switched off and
    the input upcast, so the module computes in its fp32 weights' precision."""
    device_type = inputs.device.type
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            return type(self).forward(self, inputs.float(), *args, **kwargs)
    return type(self).forward(self, inputs, *args, **kwargs)


def run_in_fp32_under_autocast(module: nn.Module) -> nn.Module:
    """Make `module` compute in fp32 even when called under bf16/fp16 autocast. The override is a method bound to
    this instance: state dicts, `deepcopy` and hooks are unaffected."""
    module.forward = types.MethodType(_fp32_forward, module)
    return module


GRU_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # nn.GRU's per-direction parameters, in its order


class CrabUnimodalBlock(nn.Module):
    """Linear(D -> h) -> LayerNorm(h) -> 1-layer bidirectional GRU(h -> h): (B, T, D) -> (B, T, h), (B, T, 2h).

    With a mask each direction reads only its utterance's own frames (outputs on padding are 0), so batching
    changes nothing. `fp32_gru`: the GRU runs in fp32 under autocast (`config.fp32_under_autocast`)."""

    def __init__(self, input_size: int, hidden_size: int, fp32_gru: bool = True):
        super().__init__()
        self.projection = nn.Linear(input_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, num_layers=1, batch_first=True, bidirectional=True)
        self.fp32_gru = fp32_gru

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        projected = self.layer_norm(self.projection(features))  # (B, T, h)
        device_type = projected.device.type
        if self.fp32_gru and torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type, enabled=False):
                return projected, self.recurrence(projected.float(), mask)
        return projected, self.recurrence(projected, mask)  # (B, T, h), (B, T, 2h)

    def recurrence(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The bidirectional GRU over (B, T, h) -> (B, T, 2h). Without a mask it runs over padding (the released
        numerics). With one, the same function two ways: packed sequences on CUDA (cuDNN) and without gradients
        (packing skips the padding); for CPU training each direction runs as a one-direction GRU over the padded
        batch, the backward one on each utterance reversed within its length (2x faster than packing there in a
        forward + backward: bench/RESULTS.md, `bench_levers.py gru`)."""
        if mask is None:
            return self.gru(x)[0]
        lengths = mask.sum(dim=1)
        if x.is_cuda or not torch.is_grad_enabled():
            packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
            recurrent, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=x.shape[1])
            return recurrent
        positions = torch.arange(x.shape[1], device=x.device).expand_as(mask)
        reverse = torch.where(mask, lengths[:, None] - 1 - positions, positions)  # (B, T); its own inverse
        reverse = reverse.unsqueeze(-1).expand_as(x)
        gru = self.gru
        h0 = x.new_zeros(1, x.shape[0], gru.hidden_size)
        forward_weights = [getattr(gru, f"{name}_l0") for name in GRU_WEIGHTS]
        backward_weights = [getattr(gru, f"{name}_l0_reverse") for name in GRU_WEIGHTS]
        # torch.gru(input, h0, weights, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        forward, _ = torch.gru(x, h0, forward_weights, True, 1, 0.0, self.training, False, True)
        backward, _ = torch.gru(x.gather(1, reverse), h0, backward_weights, True, 1, 0.0, self.training, False, True)
        return torch.cat([forward, backward.gather(1, reverse)], dim=-1) * mask.unsqueeze(-1).to(x.dtype)


class CrabCrossModalBlock(nn.Module):
    """Single-head attention, query = own modality, key/value = the other, plus a residual; no FFN, no norm."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(width, num_heads=1, dropout=dropout, batch_first=True)

    def forward(self, own: torch.Tensor, other: torch.Tensor, other_mask: torch.Tensor | None) -> torch.Tensor:
        key_padding_mask = None if other_mask is None else ~other_mask
        attended, _ = self.attention(own, other, other, key_padding_mask=key_padding_mask, need_weights=False)
        return own + attended  # (B, T_own, 2h)


class CrabAttentionPooling(nn.Module):
    """score_t = Linear(2h -> 1)(x_t); softmax over time; weighted sum: (B, T, 2h) -> (B, 2h)."""

    def __init__(self, width: int):
        super().__init__()
        self.score = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        scores = self.score(x).squeeze(-1)  # (B, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
        return torch.einsum("bt,btd->bd", weights, x)


class CrabClassifier(nn.Module):
    """LayerNorm(4h) -> Linear(4h -> h) -> ReLU -> Dropout -> Linear(h -> C). Also returns the `fusion` tap, the
    first Linear's output before the ReLU."""

    def __init__(self, width: int, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(width)
        self.dense = nn.Linear(width, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fusion = self.dense(self.layer_norm(pooled))  # (B, h)
        logits = self.out_proj(self.dropout(F.relu(fusion)))  # (B, C)
        return logits, fusion


class CrabContrastiveLeg(nn.Module):
    """A Contrastive Supervision Leg (CSL): Linear -> ReLU -> Linear to `contrastive_dim`. Training only."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.dense = nn.Linear(input_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(F.relu(self.dense(x)))


def _encoder_layers(encoder: nn.Module) -> list[nn.Module]:
    """The repeated layers of a transformer encoder (`encoder.layers` in WavLM/wav2vec 2.0, `encoder.layer` in
    RoBERTa/BERT); none for other layouts."""
    stack = getattr(encoder, "encoder", None)
    layers = getattr(stack, "layers", None) or getattr(stack, "layer", None)
    return list(layers) if isinstance(layers, nn.ModuleList) else []


def _build_text_encoder(text_config) -> nn.Module:
    try:
        return AutoModel.from_config(text_config, add_pooling_layer=False)
    except TypeError:  # encoders without a pooler argument
        return AutoModel.from_config(text_config)


class CrabPreTrainedModel(PreTrainedModel):
    config_class = CrabConfig
    config: CrabConfig
    base_model_prefix = "crab"
    main_input_name = "input_values"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True  # the head; WavLM has no SDPA path in transformers: see `config.audio_attention`
    accepts_loss_kwargs = False  # `forward(**kwargs)` takes no loss kwargs; the Trainer must not scale for them

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.GRU):  # PyTorch's own GRU initialisation
            bound = module.hidden_size**-0.5
            for parameter in module.parameters():
                init.uniform_(parameter, -bound, bound)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus what `pipeline("speech-emotion-recognition", ...)` and
        `crab predict` need from the folder: `custom_pipelines` in `config.json` and `pipeline_crab.py` (with the
        processor code it imports). So a checkpoint loaded with `trust_remote_code` and saved (or pushed with
        `push_to_hub`, which saves) again keeps working."""
        from transformers.dynamic_module_utils import custom_object_save

        from .pipeline_crab import CUSTOM_PIPELINES, CrabEmotionPipeline  # here, not at import: nothing at import

        self.config.custom_pipelines = {**(getattr(self.config, "custom_pipelines", None) or {}), **CUSTOM_PIPELINES}
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            custom_object_save(CrabEmotionPipeline, save_directory)

    def encoder_parameters(self):
        """Parameters of both encoders (the low-learning-rate group of the hierarchical schedule)."""
        crab = self.crab if hasattr(self, "crab") else self
        yield from crab.audio_encoder.parameters()
        yield from crab.text_encoder.parameters()

    def head_parameters(self):
        """Every parameter that is not in an encoder: the Crab head and, in training, the CSL legs."""
        encoder_ids = {id(p) for p in self.encoder_parameters()}
        yield from (p for p in self.parameters() if id(p) not in encoder_ids)

    def compile_regions(self, **compile_kwargs) -> None:
        """`torch.compile` in place, region by region: every encoder layer (identical layers share one compiled
        graph) and the cross-modal, pooling and classifier blocks; LayerDrop, SpecAugment and the GRUs stay
        eager, so they cause no graph breaks. State dict keys do not change. `compile_kwargs` go to
        `torch.compile` (default `dynamic=True`: utterance lengths vary)."""
        compile_kwargs.setdefault("dynamic", True)
        crab = self.crab if hasattr(self, "crab") else self
        regions = [*_encoder_layers(crab.audio_encoder), *_encoder_layers(crab.text_encoder)]
        regions += [crab.audio_cross, crab.text_cross, crab.audio_pooling, crab.text_pooling]
        regions += [getattr(self, "classifier", None)]
        for region in regions:
            if region is not None:
                region.compile(**compile_kwargs)

    def freeze_feature_encoder(self):
        """Freeze the speech encoder's CNN feature encoder (SPEC §1)."""
        crab = self.crab if hasattr(self, "crab") else self
        crab.audio_encoder.freeze_feature_encoder()

    @classmethod
    def from_pretrained_encoders(
        cls,
        audio_encoder: str | None = None,
        text_encoder: str | None = None,
        audio_config_overrides: dict | None = None,
        **config_kwargs,
    ):
        """Build a Crab model around pretrained encoders (training only; this downloads their weights).

        `audio_encoder` / `text_encoder` default to the paper's `microsoft/wavlm-large` and `roberta-large`; any
        `AutoModel` speech encoder with a CNN feature encoder (wav2vec 2.0, HuBERT) and text encoder also works.
        `audio_config_overrides` changes the speech encoder's config, e.g. `{"layerdrop": 0.0}` under DDP.
        """
        audio_encoder = audio_encoder or CrabConfig.audio_encoder_name
        text_encoder = text_encoder or CrabConfig.text_encoder_name
        audio_config = AutoConfig.from_pretrained(audio_encoder, **(audio_config_overrides or {}))
        text_config = AutoConfig.from_pretrained(text_encoder)
        config = CrabConfig(
            audio_config=audio_config,
            text_config=text_config,
            audio_encoder_name=audio_encoder,
            text_encoder_name=text_encoder,
            **config_kwargs,
        )
        model = cls(config)
        crab = model.crab if hasattr(model, "crab") else model
        crab.audio_encoder = AutoModel.from_pretrained(audio_encoder, config=config.audio_config)
        crab.configure_audio_encoder()
        try:
            crab.text_encoder = AutoModel.from_pretrained(
                text_encoder, config=config.text_config, add_pooling_layer=False
            )
        except TypeError:
            crab.text_encoder = AutoModel.from_pretrained(text_encoder, config=config.text_config)
        return model


class CrabModel(CrabPreTrainedModel):
    """Encoders + unimodal, cross-modal and pooling blocks: the pooled bimodal embedding, without a classifier."""

    # `AutoModel` on a classification checkpoint: its classifier is left out on purpose, not reported as unexpected
    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: CrabConfig):
        super().__init__(config)
        h = config.fusion_hidden_size
        self.audio_encoder = AutoModel.from_config(config.audio_config)
        self.configure_audio_encoder()
        self.text_encoder = _build_text_encoder(config.text_config)
        fp32_gru = "gru" in config.fp32_under_autocast
        self.audio_unimodal = CrabUnimodalBlock(config.audio_config.hidden_size, h, fp32_gru)
        self.text_unimodal = CrabUnimodalBlock(config.text_config.hidden_size, h, fp32_gru)
        self.audio_cross = CrabCrossModalBlock(2 * h, config.cross_attention_dropout)
        self.text_cross = CrabCrossModalBlock(2 * h, config.cross_attention_dropout)
        self.audio_pooling = CrabAttentionPooling(2 * h)
        self.text_pooling = CrabAttentionPooling(2 * h)
        self.post_init()

    def configure_audio_encoder(self) -> None:
        """Apply `config.audio_attention` and `config.fp32_under_autocast` to the speech encoder in place (after
        building or replacing it)."""
        set_wavlm_attention(self.audio_encoder, self.config.audio_attention, strict=False)
        cnn = getattr(self.audio_encoder, "feature_extractor", None)
        if cnn is not None and "feature_encoder" in self.config.fp32_under_autocast:
            run_in_fp32_under_autocast(cnn)

    def audio_frame_mask(self, attention_mask: torch.Tensor | None, num_frames: int) -> torch.Tensor | None:
        """Sample-level (B, N) mask -> frame-level (B, T) bool mask, by the encoder's own output-length rule."""
        if attention_mask is None:
            return None
        return self.audio_encoder._get_feature_vector_attention_mask(num_frames, attention_mask).bool()

    def encode(
        self,
        input_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_features_mask: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """Both encoders: `(speech_frames (B, T, Da), frame_mask (B, T) bool | None, text_tokens (B, L, Dt),
        token_mask (B, L) bool | None)`. Precomputed encoder outputs (`audio_features` with `audio_features_mask`,
        `text_features` with `text_attention_mask`, e.g. from `training.feature_cache`) replace an encoder's run."""
        if (input_values is None) == (audio_features is None):
            raise ValueError("pass exactly one of input_values (waveforms) and audio_features (speech encoder output)")
        if input_ids is None and text_features is None:
            raise ValueError(
                "pass exactly one of input_ids (token ids) and text_features; neither was given, and Crab classifies "
                "speech with its transcript. Use "
                "pipeline('speech-emotion-recognition', model=..., trust_remote_code=True) and pass text= the "
                "transcript (text='' for audio only, text=None to transcribe), or pass input_ids from the processor's "
                "text= (the generic 'audio-classification' pipeline passes audio alone)"
            )
        if input_ids is not None and text_features is not None:
            raise ValueError("pass exactly one of input_ids (token ids) and text_features (text encoder output)")
        if audio_features is None:
            too_short = self.audio_encoder._get_feat_extract_output_lengths(input_values.shape[-1]) < 1
            if not torch.compiler.is_exporting() and too_short:  # an exported graph states its minimum instead
                raise ValueError(
                    f"input_values hold {input_values.shape[-1]} samples, fewer than the speech encoder's CNN needs "
                    "for one frame; pad or drop clips this short"
                )
            audio_kwargs = {"attention_mask": attention_mask} if self.config.audio_feeds_attention_mask else {}
            audio_features = self.audio_encoder(input_values, **audio_kwargs).last_hidden_state  # (B, T, Da)
            frame_mask = self.audio_frame_mask(attention_mask, audio_features.shape[1])
        else:
            frame_mask = None if audio_features_mask is None else audio_features_mask.bool()
        if text_features is None:
            text_features = self.text_encoder(input_ids, attention_mask=text_attention_mask).last_hidden_state
        token_mask = None if text_attention_mask is None else text_attention_mask.bool()
        return audio_features, frame_mask, text_features, token_mask

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_features_mask: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        **kwargs,
    ) -> CrabModelOutput:
        """Waveforms (`input_values`, `attention_mask`) and token ids (`input_ids`, `text_attention_mask`), or either
        encoder's precomputed output in their place (see `encode`)."""
        speech_frames, frame_mask, text_tokens, token_mask = self.encode(
            input_values,
            input_ids,
            attention_mask,
            text_attention_mask,
            audio_features,
            audio_features_mask,
            text_features,
        )
        if not self.config.mask_padding:  # the released head masks nothing
            head_frame_mask = head_token_mask = None
        else:
            head_frame_mask, head_token_mask = frame_mask, token_mask

        audio_projected, audio_recurrent = self.audio_unimodal(speech_frames, head_frame_mask)  # (B,T,h), (B,T,2h)
        text_projected, text_recurrent = self.text_unimodal(text_tokens, head_token_mask)  # (B,L,h), (B,L,2h)

        audio_cross = self.audio_cross(audio_recurrent, text_recurrent, head_token_mask)  # (B, T, 2h)
        text_cross = self.text_cross(text_recurrent, audio_recurrent, head_frame_mask)  # (B, L, 2h)
        audio_pooled = self.audio_pooling(audio_cross, head_frame_mask)  # (B, 2h)
        text_pooled = self.text_pooling(text_cross, head_token_mask)  # (B, 2h)

        if self.config.unimodal_tap == "pre_gru":  # released code
            audio_unimodal = masked_mean(audio_projected, head_frame_mask)
            text_unimodal = masked_mean(text_projected, head_token_mask)
        else:  # paper text
            audio_unimodal = masked_mean(audio_recurrent, head_frame_mask)
            text_unimodal = masked_mean(text_recurrent, head_token_mask)

        return CrabModelOutput(
            pooled_output=torch.cat([audio_pooled, text_pooled], dim=-1),  # (B, 4h)
            audio_pooled=audio_pooled,
            text_pooled=text_pooled,
            audio_hidden_states=audio_cross,
            text_hidden_states=text_cross,
            audio_frame_mask=frame_mask,
            text_token_mask=token_mask,
            audio_unimodal=audio_unimodal,
            text_unimodal=text_unimodal,
        )


class CrabForEmotionClassification(CrabPreTrainedModel):
    """Crab with its classifier and, while `config.use_csl_legs`, the training-only CSL legs."""

    def __init__(self, config: CrabConfig):
        super().__init__(config)
        h = config.fusion_hidden_size
        self.crab = CrabModel(config)
        self.classifier = CrabClassifier(4 * h, h, config.num_labels, config.classifier_dropout)
        self.csl_legs = None
        if config.use_csl_legs:
            unimodal_width = h if config.unimodal_tap == "pre_gru" else 2 * h
            leg_shapes = {
                "audio_unimodal": (unimodal_width, h // 2),
                "text_unimodal": (unimodal_width, h // 2),
                "audio_pooled": (2 * h, h),
                "text_pooled": (2 * h, h),
                "fusion": (h, h),
            }
            self.csl_legs = nn.ModuleDict(
                {
                    tap: CrabContrastiveLeg(*leg_shapes[tap], config.contrastive_dim)
                    for tap in leg_shapes
                    if tap in config.mlcs_taps
                }
            )
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_csl_embeddings: bool | None = None,
        audio_features: torch.Tensor | None = None,
        audio_features_mask: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        **kwargs,
    ) -> CrabClassifierOutput:
        """Logits (and CSL embeddings in training). Inputs as `CrabModel.forward`: waveforms and token ids, or an
        encoder's precomputed output (`audio_features` + `audio_features_mask`, `text_features`) in their place."""
        if self.training and self.config.modality_dropout > 0:
            if text_features is None:
                input_ids, text_attention_mask = self.drop_transcripts(input_ids, text_attention_mask)
            else:
                text_features, text_attention_mask = self.drop_transcript_features(text_features, text_attention_mask)
        features = self.crab(
            input_values,
            input_ids,
            attention_mask,
            text_attention_mask,
            audio_features=audio_features,
            audio_features_mask=audio_features_mask,
            text_features=text_features,
        )
        logits, fusion = self.classifier(features.pooled_output)  # (B, C), (B, h)

        if output_csl_embeddings is None:
            output_csl_embeddings = self.training and self.csl_legs is not None
        csl_embeddings = None
        if output_csl_embeddings:
            if self.csl_legs is None:
                raise ValueError(
                    "this Crab model has no CSL legs (an inference export); load the training checkpoint, or call "
                    "with output_csl_embeddings=False"
                )
            taps = {
                "audio_unimodal": features.audio_unimodal,
                "text_unimodal": features.text_unimodal,
                "audio_pooled": features.audio_pooled,
                "text_pooled": features.text_pooled,
                "fusion": fusion,
            }
            csl_embeddings = {tap: leg(taps[tap]) for tap, leg in self.csl_legs.items()}  # (B, contrastive_dim)

        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels)
        return CrabClassifierOutput(loss=loss, logits=logits, csl_embeddings=csl_embeddings)

    def drop_transcripts(
        self, input_ids: torch.Tensor, text_attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Modality dropout: each transcript is replaced by the empty one (`<s></s>`, what the tokenizer gives for
        "") with probability `config.modality_dropout`."""
        text_config = self.config.text_config
        if text_attention_mask is None:
            text_attention_mask = torch.ones_like(input_ids)
        dropped = torch.rand(input_ids.shape[0], device=input_ids.device) < self.config.modality_dropout  # (B,)
        empty_ids = torch.full_like(input_ids, text_config.pad_token_id)
        empty_ids[:, 0], empty_ids[:, 1] = text_config.bos_token_id, text_config.eos_token_id
        empty_mask = torch.zeros_like(text_attention_mask)
        empty_mask[:, :2] = 1
        keep = ~dropped[:, None]
        return torch.where(keep, input_ids, empty_ids), torch.where(keep, text_attention_mask, empty_mask)

    def drop_transcript_features(
        self, text_features: torch.Tensor, text_attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Modality dropout on precomputed text-encoder outputs (frozen text encoder): a dropped row becomes the
        encoder's output for the empty transcript `<s></s>`, as `drop_transcripts` gives on token ids."""
        batch_size, length, _ = text_features.shape
        if text_attention_mask is None:
            text_attention_mask = text_features.new_ones((batch_size, length), dtype=torch.long)
        if length < 2:  # room for <s></s>
            text_features = F.pad(text_features, (0, 0, 0, 2 - length))
            text_attention_mask = F.pad(text_attention_mask, (0, 2 - length))
            length = 2
        dropped = torch.rand(batch_size, device=text_features.device) < self.config.modality_dropout  # (B,)
        if not dropped.any():
            return text_features, text_attention_mask
        text_encoder, text_config = self.crab.text_encoder, self.config.text_config
        empty_ids = torch.tensor([[text_config.bos_token_id, text_config.eos_token_id]], device=text_features.device)
        was_training = text_encoder.training
        with torch.no_grad():  # as the cached features were computed: frozen encoder, eval mode
            text_encoder.eval()
            empty = text_encoder(empty_ids).last_hidden_state  # (1, 2, Dt)
            text_encoder.train(was_training)
        empty_features = F.pad(empty.to(text_features.dtype), (0, 0, 0, length - 2)).expand_as(text_features)
        empty_mask = torch.zeros_like(text_attention_mask)
        empty_mask[:, :2] = 1
        keep = ~dropped[:, None]
        return (
            torch.where(keep[..., None], text_features, empty_features),
            torch.where(keep, text_attention_mask, empty_mask),
        )

    def mlcs_objective(self, logits, csl_embeddings, labels, class_weights=None) -> dict[str, torch.Tensor]:
        """The paper's training loss: weighted CE + alpha * mean MPCL over the active taps, by component."""
        ce = F.cross_entropy(logits.float(), labels, weight=class_weights)
        contrastive = mlcs_loss(
            csl_embeddings, labels, temperature=self.config.mlcs_temperature, loss_type=self.config.mlcs_loss
        )
        return {"loss": ce + self.config.mlcs_weight * contrastive, "ce_loss": ce, "mlcs_loss": contrastive}


__all__ = [
    "CrabPreTrainedModel",
    "CrabModel",
    "CrabForEmotionClassification",
    "CrabModelOutput",
    "CrabClassifierOutput",
]
