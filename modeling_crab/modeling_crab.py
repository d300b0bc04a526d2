"""Crab: WavLM + RoBERTa features fused by a cross-modal head, trained with Multi Layer Contrastive Supervision.

The head follows SPEC §1 block by block, in the order data flows:

    speech frames (B, T, Da) --UnimodalBlock--> (B, T, 2h) --CrossModalBlock(q=speech, kv=text)--> (B, T, 2h) --Pool--> (B, 2h)
    text tokens   (B, L, Dt) --UnimodalBlock--> (B, L, 2h) --CrossModalBlock(q=text, kv=speech)--> (B, L, 2h) --Pool--> (B, 2h)
    concat (B, 4h) --Classifier--> logits (B, C)
                   --Regressor---> attributes (B, A)   (a model with emotional attributes: `config.attribute_names`)

Five Contrastive Supervision Legs (CSLs) read the head at five taps during training only; the inference export
carries none of their weights.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import re
import types
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_crab import CrabConfig
from .heads import HEADS, heads_of
from .losses import crab_objective
from .wavlm_attention import set_wavlm_attention, wavlm_attention_implementation


@dataclass
class CrabModelOutput(ModelOutput):
    """
    pooled_output: (B, 4h) bimodal embedding, `[audio_pooled, text_pooled]`.
    audio_pooled / text_pooled: (B, 2h) attention-pooled cross-modal features.
    audio_hidden_states / text_hidden_states: (B, T, 2h) / (B, L, 2h) cross-modal block outputs (always returned: the
        pooling's input).
    audio_frame_mask / text_token_mask: (B, T) / (B, L) booleans, True on real frames and tokens.
    audio_unimodal / text_unimodal: (B, h) pre-GRU or (B, 2h) post-GRU time-means feeding the unimodal CSLs.

    With `output_hidden_states` (argument or config), each stream's per-frame states, one tuple per stream:
    audio_encoder_hidden_states / text_encoder_hidden_states: the encoders' own `hidden_states`, as `WavLMModel` /
        `RobertaModel` return them: the input of the first layer, then each layer's output, (B, T, Da) / (B, L, Dt)
        each. None when precomputed `encoder_outputs` replace the encoders.
    audio_head_hidden_states / text_head_hidden_states: the head's blocks in forward order: the unimodal projection
        (B, T, h), the bi-GRU (B, T, 2h), the cross-modal block (B, T, 2h) (text: L for T).

    With `output_attentions` (needs `attn_implementation="eager"`; fused attention returns no weights):
    audio_encoder_attentions / text_encoder_attentions: the encoders' own `attentions`, one (B, heads, T, T) /
        (B, heads, L, L) per layer. None when precomputed `encoder_outputs` replace the encoders.
    cross_attentions: the two cross-modal blocks' single-head attention weights, after dropout as transformers'
        eager attention returns them: (speech queries over text keys (B, 1, T, L), text queries over speech keys
        (B, 1, L, T)).
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
    audio_encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    audio_head_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_head_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    audio_encoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_encoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class CrabClassifierOutput(ModelOutput):
    """
    loss: the Crab objective when `labels` or `attribute_labels` are given (`losses.crab_objective`): class-weighted
        CE + beta * (1 - CCC) over the attributes + alpha * MLCS over the CSL embeddings when there are any
        (training).
    logits: (B, C); None for an attributes-only model.
    attributes: (B, A) predicted attributes on the 0-1 scale, in `config.attribute_names` order; None for a
        categories-only model.
    csl_embeddings: tap name -> (B, contrastive_dim), present in training or when asked for.
    ce_loss / mlcs_loss / attribute_loss: the objective's terms (None where the model or the batch has none).
    pooled_output: (B, 4h) the bimodal embedding the output heads read (`CrabModelOutput.pooled_output`).
    audio_encoder_hidden_states ... cross_attentions: with `output_hidden_states` / `output_attentions`, as in
        `CrabModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    attributes: torch.FloatTensor | None = None
    csl_embeddings: dict[str, torch.FloatTensor] | None = None
    ce_loss: torch.FloatTensor | None = None
    mlcs_loss: torch.FloatTensor | None = None
    attribute_loss: torch.FloatTensor | None = None
    pooled_output: torch.FloatTensor | None = None
    audio_encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    audio_head_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_head_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    audio_encoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_encoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


# What `output_hidden_states` / `output_attentions` add to an output: the fields `CrabModelOutput` and
# `CrabClassifierOutput` both end with (each output keeps its own field order: `return_dict=False` tuples follow it)
HIDDEN_STATES_FIELDS = tuple(f.name for f in fields(CrabClassifierOutput) if f.name.endswith("_hidden_states"))
ATTENTIONS_FIELDS = tuple(f.name for f in fields(CrabClassifierOutput) if f.name.endswith("_attentions"))
# The encoders' part of them, which `CrabModel.encode` returns beside the head's inputs
ENCODER_STATES = tuple(name for name in HIDDEN_STATES_FIELDS + ATTENTIONS_FIELDS if "_encoder_" in name)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, D), (B, T) bool -> (B, D); a mean over all positions when `mask` is None."""
    if mask is None:
        return x.mean(dim=1)
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _in_fp32_under_autocast(method: str):
    """The method `run_in_fp32_under_autocast` binds: under autocast, autocast is switched off and the first input
    upcast, so the class's `method` computes in its fp32 weights' precision."""

    def call(self: nn.Module, inputs: torch.Tensor, *args, **kwargs):
        device_type = inputs.device.type
        if torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type, enabled=False):
                return getattr(type(self), method)(self, inputs.float(), *args, **kwargs)
        return getattr(type(self), method)(self, inputs, *args, **kwargs)

    return call


def run_in_fp32_under_autocast(module: nn.Module, method: str = "forward") -> nn.Module:
    """Make `module.<method>` (its `forward` by default) compute in fp32 even when called under bf16/fp16 autocast:
    the one mechanism behind `config.fp32_under_autocast`. The override is a method bound to this instance: state
    dicts, `deepcopy` and hooks are unaffected."""
    setattr(module, method, types.MethodType(_in_fp32_under_autocast(method), module))
    return module


GRU_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # nn.GRU's per-direction parameters, in its order


def gru_over_padding(gru: nn.GRU, x: torch.Tensor, mask: None) -> torch.Tensor:
    """No mask: the GRU runs over padding (the released numerics)."""
    return gru(x)[0]


def gru_packed(gru: nn.GRU, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Packed sequences: packing skips the padding (cuDNN on CUDA; the fastest way without gradients)."""
    lengths = mask.sum(dim=1).clamp(min=1).cpu()
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    recurrent, _ = pad_packed_sequence(gru(packed)[0], batch_first=True, total_length=x.shape[1])
    return recurrent


def gru_by_direction(gru: nn.GRU, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each direction as a one-direction GRU over the padded batch, the backward one on each utterance reversed
    within its length; outputs on padding are 0. In CPU training 2x faster than packing in a forward + backward
    (bench/RESULTS.md, `bench_levers.py gru`), with the same outputs and gradients."""
    lengths = mask.sum(dim=1)
    positions = torch.arange(x.shape[1], device=x.device).expand_as(mask)
    reverse = torch.where(mask, lengths[:, None] - 1 - positions, positions)  # (B, T); its own inverse
    reverse = reverse.unsqueeze(-1).expand_as(x)
    h0 = x.new_zeros(1, x.shape[0], gru.hidden_size)
    forward_weights = [getattr(gru, f"{name}_l0") for name in GRU_WEIGHTS]
    backward_weights = [getattr(gru, f"{name}_l0_reverse") for name in GRU_WEIGHTS]
    # torch.gru(input, h0, weights, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    forward, _ = torch.gru(x, h0, forward_weights, True, 1, 0.0, gru.training, False, True)
    backward, _ = torch.gru(x.gather(1, reverse), h0, backward_weights, True, 1, 0.0, gru.training, False, True)
    return torch.cat([forward, backward.gather(1, reverse)], dim=-1) * mask.unsqueeze(-1).to(x.dtype)


def gru_path(x: torch.Tensor, mask: torch.Tensor | None):
    """The one place a GRU path is chosen, each the same function of the real frames: over padding without a mask;
    with one, packed on CUDA and without gradients, direction by direction in CPU training."""
    if mask is None:
        return gru_over_padding
    return gru_packed if x.is_cuda or not torch.is_grad_enabled() else gru_by_direction


class CrabUnimodalBlock(nn.Module):
    """Linear(D -> h) -> LayerNorm(h) -> 1-layer bidirectional GRU(h -> h): (B, T, D) -> (B, T, h), (B, T, 2h).

    With a mask each direction reads only its utterance's own frames (outputs on padding are 0), so batching
    changes nothing. `config.fp32_under_autocast` ("gru") makes `recurrence` run in fp32 under autocast."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.projection = nn.Linear(input_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, num_layers=1, batch_first=True, bidirectional=True)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        projected = self.layer_norm(self.projection(features))  # (B, T, h)
        return projected, self.recurrence(projected, mask)  # (B, T, h), (B, T, 2h)

    def recurrence(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The bidirectional GRU over (B, T, h) -> (B, T, 2h), by the path `gru_path` chooses."""
        return gru_path(x, mask)(self.gru, x, mask)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out, for `attn_implementation="eager"`: (B, H, Tq, D), (B, H, Tk, D) x2 and a boolean mask
    (True: attend) broadcastable to (B, H, Tq, Tk) -> the output (B, Tq, H, D) and the weights (B, H, Tq, Tk)."""
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (B, H, Tq, Tk)
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)  # fp32 softmax under autocast too
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class CrabCrossAttention(nn.Module):
    """Single-head attention of one modality's frames (queries) over the other's (keys and values): the function and
    the parameters of the released head's `nn.MultiheadAttention(2h, num_heads=1, batch_first=True)` (`in_proj_weight`
    (3W, W), rows q | k | v, `in_proj_bias` (3W,), `out_proj`), so its checkpoints load unchanged. Unlike
    `nn.MultiheadAttention`, which hands `out_proj.weight` to `F.multi_head_attention_forward`, every weight is used
    by the module that owns it, which is what accelerate's offload hooks (`device_map` with "cpu" or "disk") need.
    The attention itself is `config._attn_implementation`'s: "sdpa" (fused) or "eager" (returns the weights)."""

    def __init__(self, config: CrabConfig, width: int):
        super().__init__()
        self.config = config
        self.width = width
        self.scaling = width**-0.5  # one head: head_dim = width
        self.attention_dropout = config.cross_attention_dropout
        self.is_causal = False
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(
        self, hidden_states: torch.Tensor, key_value_states: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, Tq, W) queries, (B, Tk, W) keys/values, (B, Tk) bool key mask (True: real; None: attend to all) ->
        (B, Tq, W) and the weights (B, 1, Tq, Tk) where the attention function returns them (eager), else None."""
        batch_size, query_length, width = hidden_states.shape
        query_weight, key_value_weight = self.in_proj_weight.split([width, 2 * width])
        query_bias, key_value_bias = self.in_proj_bias.split([width, 2 * width])
        query = F.linear(hidden_states, query_weight, query_bias)[:, None]  # (B, 1, Tq, W)
        key, value = F.linear(key_value_states, key_value_weight, key_value_bias)[:, None].chunk(2, dim=-1)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, Tk)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        attended, weights = attention(
            self,
            query,
            key,
            value,
            mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )  # (B, Tq, 1, W), (B, 1, Tq, Tk) or None
        return self.out_proj(attended.reshape(batch_size, query_length, width)), weights


class CrabCrossModalBlock(nn.Module):
    """Single-head attention, query = own modality, key/value = the other, plus a residual; no FFN, no norm."""

    def __init__(self, config: CrabConfig, width: int):
        super().__init__()
        self.attention = CrabCrossAttention(config, width)

    def forward(
        self, own: torch.Tensor, other: torch.Tensor, other_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attention(own, other, other_mask)
        return own + attended, weights  # (B, T_own, 2h), (B, 1, T_own, T_other) or None


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
    first Linear's output before the ReLU. The attribute regressor has the same shape, with A outputs."""

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


def _region_function(kind: str):
    """`module.forward(*args, **kwargs)` as a function whose code object is this kind's own: torch.compile caches
    graphs (and counts recompilations) per code object, so each kind of region gets its own cache."""

    def region(module, *args, **kwargs):
        return type(module).forward(module, *args, **kwargs)

    code = region.__code__.replace(co_name=f"crab_{kind}", co_qualname=f"crab_{kind}")
    return types.FunctionType(code, region.__globals__, f"crab_{kind}", region.__defaults__, region.__closure__)


def _build_text_encoder(text_config) -> nn.Module:
    try:
        return AutoModel.from_config(text_config, add_pooling_layer=False)
    except TypeError:  # encoders without a pooler argument
        return AutoModel.from_config(text_config)


def _pytorch_default_init(module: nn.Module) -> None:
    """What `reset_parameters` gives a freshly built `nn.Linear`, and `nn.MultiheadAttention` a `CrabCrossAttention`
    (through transformers' init functions, which leave loaded weights alone). An attention layer's `out_proj`, a
    Linear initialised before it, keeps its weights and gets a zero bias, as in PyTorch."""
    if isinstance(module, nn.Linear):
        init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if module.bias is not None:
            fan_in = module.weight.shape[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(module.bias, -bound, bound)
        return
    _attention_init(module)


def _attention_init(module: CrabCrossAttention) -> None:
    """`nn.MultiheadAttention._reset_parameters`: Xavier-uniform input projection, zero biases (its `out_proj`
    weight is the Linear's own)."""
    init.xavier_uniform_(module.in_proj_weight)
    init.zeros_(module.in_proj_bias)
    init.zeros_(module.out_proj.bias)


class UnsafeWeightsError(pickle.UnpicklingError):
    """A weights file that is a pickle holding more than tensors: loading it would run the code it names, so it is
    refused (torch's `weights_only` loading). The message names the file, what it holds and the way out."""

    @classmethod
    def from_refusal(cls, error: pickle.UnpicklingError, source: str | os.PathLike | None = None):
        """The refusal of `torch.load(..., weights_only=True)` (`error`), said in Crab's words. The file is read from
        the traceback (the path `torch.load` was given), else `source` (the folder or repo being loaded) is named."""
        if type(error).__name__ == cls.__name__:
            return error  # already said (by this class, or its copy in a model folder's code)
        path = _torch_load_path(error) or source
        what = re.findall(r"GLOBAL ([\w.]+)", str(error))
        holds = f"Python objects ({', '.join(dict.fromkeys(what))})" if what else "Python objects"
        checkpoint = re.fullmatch(r"checkpoint-\d+", os.path.basename(os.path.dirname(str(path or ""))))
        if checkpoint:
            fix = (
                f"delete '{os.path.dirname(str(path))}' and resume from the checkpoint before it (train.py writes "
                "only tensors there)"
            )
        else:
            fix = (
                "use safetensors weights instead: save the model again with save_pretrained where it was made "
                "(it writes safetensors), or ask whoever made the file for a safetensors copy"
            )
        return cls(
            f"'{path}' is a pickle holding {holds}, not only tensors; Crab does not load it, since unpickling it "
            f"would run code from the file; {fix}"
        )


def _torch_load_path(error: BaseException) -> str | None:
    """The file `torch.load` was reading when it raised `error` (its `f` argument), where that was a path."""
    traceback = error.__traceback__
    found = None
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code.co_name == "load" and frame.f_code.co_filename.endswith(
            os.path.join("torch", "serialization.py")
        ):
            candidate = frame.f_locals.get("f")
            if isinstance(candidate, (str, os.PathLike)):
                found = os.fspath(candidate)
        traceback = traceback.tb_next
    return found


@contextlib.contextmanager
def refusing_unsafe_weights(source: str | os.PathLike | None):
    """Loading weights from `source`: a pickle that would run code is refused with `UnsafeWeightsError`."""
    try:
        yield
    except pickle.UnpicklingError as error:
        raise UnsafeWeightsError.from_refusal(error, source) from None


class CrabPreTrainedModel(PreTrainedModel):
    config_class = CrabConfig
    config: CrabConfig
    base_model_prefix = "crab"
    main_input_name = "input_values"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    # The head's cross-attention runs `config._attn_implementation` ("sdpa" by default, or "eager"); the text encoder
    # its own; WavLM, which has no SDPA path in transformers, runs Crab's (`config.audio_attention`) unless "eager".
    _supports_sdpa = True
    accepts_loss_kwargs = False  # `forward` takes no loss kwargs; the Trainer must not scale for them
    # Blocks kept whole on one device under `device_map`: the head's, and WavLM's layers (their attention hands its
    # projections' weights to functions directly); RoBERTa's come from its own `_no_split_modules`.
    _no_split_modules = [
        "CrabUnimodalBlock",
        "CrabCrossModalBlock",
        "CrabAttentionPooling",
        "CrabClassifier",
        "CrabContrastiveLeg",
        "WavLMEncoderLayer",
        "WavLMEncoderLayerStableLayerNorm",
    ]

    def _init_weights(self, module):
        """The head's layers (the encoders, themselves `PreTrainedModel`s, are initialised by their own classes):
        `config.head_init` "normal" as transformers' models, or "pytorch" as the released `nn.Module` head. The
        cross-attention starts as `nn.MultiheadAttention` does in both."""
        if isinstance(module, CrabCrossAttention):
            _attention_init(module)
        elif self.config.head_init == "pytorch" and isinstance(module, nn.Linear):
            _pytorch_default_init(module)
        else:
            super()._init_weights(module)
        for kind in HEADS:  # a head's own starting bias (the attributes': the scale's middle)
            if kind.initial_bias is not None and module is getattr(getattr(self, kind.layer, None), "out_proj", None):
                init.constant_(module.bias, kind.initial_bias)
        if isinstance(module, nn.GRU):  # PyTorch's own GRU initialisation
            bound = module.hidden_size**-0.5
            for parameter in module.parameters():
                init.uniform_(parameter, -bound, bound)

    def set_attn_implementation(self, attn_implementation: str | dict, *args, **kwargs) -> None:
        """`PreTrainedModel.set_attn_implementation`, which sets the head's and the text encoder's attention; WavLM's
        follows (see `CrabModel.set_audio_attention`)."""
        super().set_attn_implementation(attn_implementation, *args, **kwargs)
        for module in self.modules():
            if isinstance(module, CrabModel):
                module.set_audio_attention()

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

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; weights in a pickle that would run code are refused with
        `UnsafeWeightsError` (an `UnpicklingError`, as torch's refusal is), which names the file and the fix."""
        with refusing_unsafe_weights(pretrained_model_name_or_path):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

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
        graph) and the cross-modal, pooling and classifier blocks; LayerDrop, SpecAugment, gradient checkpointing
        and the GRUs stay eager, so they cause no graph breaks. State dict keys do not change. `compile_kwargs` go to
        `torch.compile` (default `dynamic=True`: utterance lengths vary).

        Compiled graphs are reused across batches, not recompiled (`test_compiled_regions_do_not_recompile`):
        - each kind of region (the first speech layer, which computes WavLM's relative position bias, the other
          speech layers, the text layers, each head block) is compiled as a function of its own, so that its
          variants (training and evaluation; a batch of one clip, of several padded ones, of several of equal
          length, whose all-ones masks transformers drops) are counted and cached apart from the other kinds'
          (`compiled_region_kinds`): 6 variants at most, warmed up at the first batch of each;
        - every size of a region's inputs gets a symbol of its own while the model runs (`__call__`; no duck
          sizing, which gives sizes that happen to be equal in the first batch, such as two clips and WavLM's two
          heads, one symbol, so that the next batch where they differ recompiles)."""
        compile_kwargs.setdefault("dynamic", True)
        crab = self.crab if hasattr(self, "crab") else self
        audio_layers, text_layers = _encoder_layers(crab.audio_encoder), _encoder_layers(crab.text_encoder)
        regions = {"audio_layer": audio_layers, "text_layer": text_layers}
        if audio_layers and hasattr(getattr(audio_layers[0], "attention", None), "rel_attn_embed"):
            regions["audio_layer"], regions["audio_first_layer"] = audio_layers[1:], audio_layers[:1]  # WavLM's bias
        regions["cross"] = [crab.audio_cross, crab.text_cross]
        regions["pooling"] = [crab.audio_pooling, crab.text_pooling]
        for kind in HEADS:
            regions[kind.layer] = [getattr(self, kind.layer, None)]
        self.compiled_region_kinds = {}
        for kind, modules in regions.items():
            modules = [module for module in modules if module is not None]
            if modules:
                compiled = torch.compile(_region_function(kind), **compile_kwargs)
                for module in modules:  # an instance attribute: `nn.Module.__call__` (and its hooks) stay eager
                    module.forward = types.MethodType(compiled, module)
                self.compiled_region_kinds[kind] = len(modules)
        self._regions_compiled = True

    def __call__(self, *args, **kwargs):
        if not getattr(self, "_regions_compiled", False):
            return super().__call__(*args, **kwargs)
        import torch.fx.experimental._config as shapes

        # read where the compiled regions trace, inside this call; room for each kind of region's variants (6)
        limit = max(torch._dynamo.config.recompile_limit, 16)
        with shapes.patch(use_duck_shape=False), torch._dynamo.config.patch(recompile_limit=limit):
            return super().__call__(*args, **kwargs)

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
        with refusing_unsafe_weights(audio_encoder):
            crab.audio_encoder = AutoModel.from_pretrained(audio_encoder, config=config.audio_config)
        crab.configure_audio_encoder()
        with refusing_unsafe_weights(text_encoder):
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
    _keys_to_ignore_on_load_unexpected = [rf"^{kind.layer}\." for kind in HEADS]

    def __init__(self, config: CrabConfig):
        super().__init__(config)
        h = config.fusion_hidden_size
        self.audio_encoder = AutoModel.from_config(config.audio_config)
        self.configure_audio_encoder()
        self.text_encoder = _build_text_encoder(config.text_config)
        self.audio_unimodal = CrabUnimodalBlock(config.audio_config.hidden_size, h)
        self.text_unimodal = CrabUnimodalBlock(config.text_config.hidden_size, h)
        if "gru" in config.fp32_under_autocast:
            run_in_fp32_under_autocast(self.audio_unimodal, "recurrence")
            run_in_fp32_under_autocast(self.text_unimodal, "recurrence")
        self.audio_cross = CrabCrossModalBlock(config, 2 * h)
        self.text_cross = CrabCrossModalBlock(config, 2 * h)
        self.audio_pooling = CrabAttentionPooling(2 * h)
        self.text_pooling = CrabAttentionPooling(2 * h)
        self.post_init()

    def configure_audio_encoder(self) -> None:
        """Apply `config.audio_attention` and `config.fp32_under_autocast` to the speech encoder in place (after
        building or replacing it)."""
        self.set_audio_attention()
        # WavLM's SpecAugment reads `mask_feature_min_masks` when `mask_feature_prob` > 0, but WavLMConfig (through
        # transformers 5.x) has no such field; wav2vec 2.0's default (0) keeps feature masking from crashing.
        audio_config = self.audio_encoder.config
        if hasattr(audio_config, "mask_feature_prob") and not hasattr(audio_config, "mask_feature_min_masks"):
            audio_config.mask_feature_min_masks = 0
        cnn = getattr(self.audio_encoder, "feature_extractor", None)
        if cnn is not None and "feature_encoder" in self.config.fp32_under_autocast:
            run_in_fp32_under_autocast(cnn)

    def set_audio_attention(self) -> None:
        """WavLM's self-attention: `config.audio_attention` ("sdpa": Crab's fused one), except in a model that runs
        eager attention (`attn_implementation="eager"`, what `output_attentions` needs), where it is transformers'
        own. No effect on other speech encoders."""
        eager = self.config._attn_implementation == "eager"
        set_wavlm_attention(self.audio_encoder, "eager" if eager else self.config.audio_attention, strict=False)

    def get_input_embeddings(self) -> nn.Module:
        """The text encoder's token embeddings (the model's only ones), for `resize_token_embeddings`."""
        return self.text_encoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_encoder.set_input_embeddings(value)

    def audio_frame_mask(self, attention_mask: torch.Tensor | None, num_frames: int) -> torch.Tensor | None:
        """Sample-level (B, N) mask -> frame-level (B, T) bool mask, by the encoder's own output-length rule."""
        if attention_mask is None:
            return None
        return self.audio_encoder._get_feature_vector_attention_mask(num_frames, attention_mask).bool()

    def _refuse_fused_attention(self, encoders: bool = True) -> None:
        """What transformers does when `output_attentions` meets attention that returns no weights (SDPA): a
        ValueError naming the fix. `encoders`: whether the encoders run (not with precomputed `encoder_outputs`)."""
        kinds = {"the cross-modal blocks": self.config._attn_implementation}
        if encoders:
            wavlm = wavlm_attention_implementation(self.audio_encoder)  # None: not WavLM
            kinds["the speech encoder"] = self.audio_encoder.config._attn_implementation if wavlm is None else wavlm
            kinds["the text encoder"] = self.text_encoder.config._attn_implementation
        fused = [f"{part} ({kind})" for part, kind in kinds.items() if kind != "eager"]
        if fused:
            raise ValueError(
                f"output_attentions=True is not supported when {', '.join(fused)} run fused attention, which returns "
                "no attention weights. Set the attention implementation to 'eager': "
                '`from_pretrained(..., attn_implementation="eager")` or `model.set_attn_implementation("eager")`'
            )

    def encode(
        self,
        input_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        *,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> dict[str, torch.Tensor | None]:
        """Both encoders: waveforms (B, N) and token ids (B, L), with their padding masks, as the processor returns
        them -> the encoder outputs `forward_head` takes: `{"speech_frames": (B, T, Da), "frame_mask": (B, T) bool,
        "text_tokens": (B, L, Dt), "token_mask": (B, L) bool}` (a mask is None when its input had none). With
        `output_hidden_states` / `output_attentions` also the encoders' own (`ENCODER_STATES`, see
        `CrabModelOutput`), which `forward` passes on to its output."""
        if input_values is None:
            raise ValueError(
                "no input_values (waveforms) were given; pass the processor's audio= output (precomputed encoder "
                "outputs go in as encoder_outputs=)"
            )
        if input_ids is None:
            raise ValueError(
                "no input_ids (token ids) were given, and Crab classifies speech with its transcript. Use "
                "pipeline('speech-emotion-recognition', model=..., trust_remote_code=True) and pass text= the "
                "transcript (text='' for audio only, text=None to transcribe), or pass input_ids from the processor's "
                "text= (the generic 'audio-classification' pipeline passes audio alone)"
            )
        too_short = self.audio_encoder._get_feat_extract_output_lengths(input_values.shape[-1]) < 1
        if not torch.compiler.is_exporting() and too_short:  # an exported graph states its minimum instead
            raise ValueError(
                f"input_values hold {input_values.shape[-1]} samples, fewer than the speech encoder's CNN needs "
                "for one frame; pad or drop clips this short"
            )
        flags = {"output_hidden_states": output_hidden_states, "output_attentions": output_attentions}
        audio_kwargs = {"attention_mask": attention_mask} if self.config.audio_feeds_attention_mask else {}
        speech = self.audio_encoder(input_values, **audio_kwargs, **flags, return_dict=True)
        text = self.text_encoder(input_ids, attention_mask=text_attention_mask, **flags, return_dict=True)
        speech_frames, text_tokens = speech.last_hidden_state, text.last_hidden_state  # (B, T, Da), (B, L, Dt)
        encoded = {
            "speech_frames": speech_frames,
            "frame_mask": self.audio_frame_mask(attention_mask, speech_frames.shape[1]),
            "text_tokens": text_tokens,
            "token_mask": None if text_attention_mask is None else text_attention_mask.bool(),
        }
        if output_hidden_states:
            encoded.update(
                audio_encoder_hidden_states=speech.hidden_states, text_encoder_hidden_states=text.hidden_states
            )
        if output_attentions:
            encoded.update(audio_encoder_attentions=speech.attentions, text_encoder_attentions=text.attentions)
        return encoded

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        encoder_outputs: dict[str, torch.Tensor | None] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> CrabModelOutput | tuple:
        """Waveforms (`input_values`, `attention_mask`) and token ids (`input_ids`, `text_attention_mask`), as the
        processor returns them: `encode`, then `forward_head`. `encoder_outputs` (precomputed, e.g. the frozen-encoder
        mode's cache) replaces `encode` and the processor's inputs, as in transformers' encoder-decoder models.
        `output_attentions` / `output_hidden_states` (None: the config's) add the fields `CrabModelOutput` lists;
        `return_dict=False` (or `config.return_dict=False`) returns `CrabModelOutput.to_tuple()`."""
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        if output_attentions:
            self._refuse_fused_attention(encoders=encoder_outputs is None)
        if encoder_outputs is None:
            encoder_outputs = self.encode(
                input_values,
                input_ids,
                attention_mask,
                text_attention_mask,
                output_hidden_states=output_hidden_states,
                output_attentions=output_attentions,
            )
        head_inputs = dict(encoder_outputs)
        encoder_states = {key: head_inputs.pop(key) for key in ENCODER_STATES if key in head_inputs}
        output = self.forward_head(
            **head_inputs, output_hidden_states=output_hidden_states, output_attentions=output_attentions
        )
        return replace(output, **encoder_states) if encoder_states else output

    def forward_head(
        self,
        speech_frames: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        text_tokens: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> CrabModelOutput:
        """The Crab head on both encoders' outputs (`encode`'s, or precomputed: `training.feature_cache`): speech
        frames (B, T, Da) and text tokens (B, L, Dt), their masks True or 1 on real frames and tokens (None: no
        padding). The one way precomputed encoder outputs enter the model. With `output_hidden_states` /
        `output_attentions`, the head's blocks' outputs and cross-attention weights (see `CrabModelOutput`)."""
        frame_mask = None if frame_mask is None else frame_mask.bool()
        token_mask = None if token_mask is None else token_mask.bool()
        if not self.config.mask_padding:  # the released head masks nothing
            head_frame_mask = head_token_mask = None
        else:
            head_frame_mask, head_token_mask = frame_mask, token_mask

        audio_projected, audio_recurrent = self.audio_unimodal(speech_frames, head_frame_mask)  # (B,T,h), (B,T,2h)
        text_projected, text_recurrent = self.text_unimodal(text_tokens, head_token_mask)  # (B,L,h), (B,L,2h)

        audio_cross, audio_weights = self.audio_cross(audio_recurrent, text_recurrent, head_token_mask)  # (B, T, 2h)
        text_cross, text_weights = self.text_cross(text_recurrent, audio_recurrent, head_frame_mask)  # (B, L, 2h)
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
            audio_head_hidden_states=(audio_projected, audio_recurrent, audio_cross) if output_hidden_states else None,
            text_head_hidden_states=(text_projected, text_recurrent, text_cross) if output_hidden_states else None,
            cross_attentions=(audio_weights, text_weights) if output_attentions else None,
        )


class CrabForEmotionClassification(CrabPreTrainedModel):
    """Crab with a layer per output head (`heads.heads_of(config)`: the `classifier` of a model with classes, the
    attribute `regressor` of a model with `config.attribute_names`) and, while `config.use_csl_legs`, the
    training-only CSL legs. The `fusion` CSL tap is the first head's: the classifier's, or the regressor's in an
    attributes-only model."""

    def __init__(self, config: CrabConfig):
        super().__init__(config)
        h = config.fusion_hidden_size
        self.crab = CrabModel(config)
        heads = {type(head): head for head in heads_of(config)}
        for kind in HEADS:  # each head's layer (`classifier`, `regressor`), None where the model lacks the head
            head = heads.get(kind)
            layer = None if head is None else CrabClassifier(4 * h, h, head.width, config.classifier_dropout)
            setattr(self, kind.layer, layer)
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

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_csl_embeddings: bool | None = None,
        encoder_outputs: dict[str, torch.Tensor | None] | None = None,
        attribute_labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> CrabClassifierOutput | tuple:
        """Logits and attributes from waveforms and token ids, as the processor returns them (or from
        `encoder_outputs`, see `CrabModel.forward`); CSL embeddings in training (`output_csl_embeddings` None: in
        training when the model has CSL legs and `config.mlcs_weight > 0`); with `labels` (B,) and/or
        `attribute_labels` (B, A; NaN where a row lacks an attribute), the Crab objective as `loss` and its terms
        (`losses.crab_objective`). `output_attentions` / `output_hidden_states` and `return_dict` as in
        `CrabModel.forward`."""
        if self.training and self.config.modality_dropout > 0:
            if encoder_outputs is None:
                input_ids, text_attention_mask = self.drop_transcripts(input_ids, text_attention_mask)
            else:
                text_tokens, token_mask = self.drop_transcripts(
                    encoder_outputs["text_tokens"], encoder_outputs.get("token_mask")
                )
                encoder_outputs = {**encoder_outputs, "text_tokens": text_tokens, "token_mask": token_mask}
        features = self.crab(
            input_values,
            input_ids,
            attention_mask,
            text_attention_mask,
            encoder_outputs=encoder_outputs,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        heads = heads_of(self.config)
        predictions = {}  # output field -> (B, K): logits (B, C), attributes (B, A)
        for head in reversed(heads):  # last to first: the fusion tap is the first head's
            predictions[head.output], fusion = getattr(self, head.layer)(features.pooled_output)  # (B, K), (B, h)

        if output_csl_embeddings is None:
            output_csl_embeddings = self.training and self.csl_legs is not None and self.config.mlcs_weight > 0
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

        head_labels = {"labels": labels, "attribute_labels": attribute_labels}  # each head's `label_key`
        objective = {}
        if any(head_labels[head.label_key] is not None for head in heads):
            objective = crab_objective(**predictions, **head_labels, csl_embeddings=csl_embeddings, config=self.config)
            objective = {"loss": objective.loss, **objective.terms}
        return CrabClassifierOutput(
            **objective,
            **predictions,
            csl_embeddings=csl_embeddings,
            pooled_output=features.pooled_output,
            **{name: getattr(features, name) for name in HIDDEN_STATES_FIELDS + ATTENTIONS_FIELDS},
        )

    def drop_transcripts(
        self, text: torch.Tensor, text_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Modality dropout: each transcript is replaced by the empty one (`<s></s>`, what the tokenizer gives for
        "") with probability `config.modality_dropout`. `text` is token ids (B, L) or, in the frozen-encoder mode,
        the text encoder's outputs (B, L, Dt): then the empty transcript is the encoder's output for `<s></s>` (eval
        mode, no gradients: as the cached features were computed)."""
        batch_size, length = text.shape[:2]
        if text_mask is None:
            text_mask = torch.ones((batch_size, length), dtype=torch.long, device=text.device)
        is_ids = text.dim() == 2
        text_config = self.config.text_config
        if length < 2:  # room for <s></s>
            pad_value = text_config.pad_token_id if is_ids else 0.0
            text = F.pad(text, (0, 0) * (text.dim() - 2) + (0, 2 - length), value=pad_value)
            text_mask = F.pad(text_mask, (0, 2 - length))
        dropped = torch.rand(batch_size, device=text.device) < self.config.modality_dropout  # (B,)
        if not is_ids and not dropped.any():  # spares the text encoder's run (token ids: no host sync)
            return text, text_mask
        ids_dtype = text.dtype if is_ids else torch.long
        empty = torch.full((1, text.shape[1]), text_config.pad_token_id, dtype=ids_dtype, device=text.device)
        empty[:, 0], empty[:, 1] = text_config.bos_token_id, text_config.eos_token_id
        if not is_ids:
            text_encoder = self.crab.text_encoder
            was_training = text_encoder.training
            with torch.no_grad():
                text_encoder.eval()
                empty = text_encoder(empty[:, :2]).last_hidden_state  # (1, 2, Dt)
                text_encoder.train(was_training)
            empty = F.pad(empty.to(text.dtype), (0, 0, 0, text.shape[1] - 2))  # (1, L, Dt)
        empty_mask = torch.zeros_like(text_mask)
        empty_mask[:, :2] = 1
        keep = ~dropped[:, None]
        keep_text = keep if is_ids else keep[..., None]
        return torch.where(keep_text, text, empty), torch.where(keep, text_mask, empty_mask)


__all__ = [
    "CrabPreTrainedModel",
    "CrabModel",
    "CrabForEmotionClassification",
    "CrabModelOutput",
    "CrabClassifierOutput",
]
