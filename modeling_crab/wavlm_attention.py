"""A fused SDPA path for WavLM's self-attention (transformers ships WavLM with eager attention only).

WavLM adds a gated relative-position bias to every head's attention logits (Chen et al. 2022, §2.2):

    bias[b, h, i, j] = gate[b, h, i] * d[h, bucket(j - i)]
    gate = sigmoid(a) * (sigmoid(b) * gru_rel_pos_const[h] - 1) + 2,  (a, b) = gru_rel_pos_linear(x[b, i, head h])

where `d` is the bucketed embedding `rel_attn_embed` that only layer 0 owns and every later layer reuses. Eager
WavLM builds this (B·H, T, T) bias and calls `F.multi_head_attention_forward`, which materialises the attention
weights as well. Here the same bias, plus the key-padding mask, goes to `F.scaled_dot_product_attention` as one
additive float mask, so PyTorch picks a fused kernel (memory-efficient / flash-CPU) and the (B, H, T, T) weights are
never stored for backward. Same function: fp32 outputs and gradients match eager to float tolerance.

    from modeling_crab.wavlm_attention import set_wavlm_attention
    set_wavlm_attention(model, "sdpa")   # any module holding WavLM layers: a WavLMModel, a Crab model, ...
    set_wavlm_attention(model, "eager")  # back to eager (needed for `output_attentions`)

The swap changes the class of each `WavLMAttention` module to `WavLMSdpaAttention` (a subclass with the same
parameters), so state dicts, checkpoints and `isinstance` checks are unaffected. It relies on transformers' private
`WavLMAttention` (its `forward` signature and outputs, `compute_bias`, `gru_rel_pos_*`), so it is used only with the
transformers versions it was checked against (`CHECKED_TRANSFORMERS`); with any other, a one-line warning names the
version and WavLM keeps transformers' own (eager) attention, which computes the same function, more slowly.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

logger = logging.getLogger(__name__)

# (major, minor) range of the transformers releases whose WavLMAttention this file was checked against (tests run
# eager vs SDPA outputs and gradients): pyproject's lower bound through the newest tested. Widen it after running
# tests/test_fast_path.py on a newer release.
CHECKED_TRANSFORMERS = ((5, 17), (5, 24))


def sdpa_is_checked(version: str | None = None) -> bool:
    """Whether this transformers release (`transformers.__version__` unless given) is one the SDPA attention was
    checked against."""
    version = transformers.__version__ if version is None else version
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        return False
    major_minor = (int(match.group(1)), int(match.group(2)))
    return CHECKED_TRANSFORMERS[0] <= major_minor <= CHECKED_TRANSFORMERS[1]


@functools.cache
def _warn_unchecked(version: str) -> None:
    low, high = (".".join(map(str, v)) for v in CHECKED_TRANSFORMERS)
    logger.warning(
        f"transformers {version} is outside {low}-{high}, the versions Crab's SDPA WavLM attention was checked "
        "against: WavLM uses transformers' own (eager) attention"
    )


class WavLMSdpaAttention(WavLMAttention):
    """`WavLMAttention` computed with `scaled_dot_product_attention`; returns no attention weights."""

    align_mask_rows: bool | None = None  # None: on CUDA only

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        index: int = 0,
        **kwargs,
    ) -> tuple[torch.Tensor, None, torch.Tensor]:
        batch_size, length, _ = hidden_states.shape  # (B, T, D)
        heads, head_dim = self.num_heads, self.head_dim

        # Layer 0 builds the bucketed bias d once, as (1, H, T, T); later layers receive it back. (Eager repeats it to
        # (B·H, T, T); that shape is accepted too.)
        if position_bias is None:
            position_bias = self.compute_bias(length, length).unsqueeze(0)  # (1, H, T, T)
        elif position_bias.dim() == 3:
            position_bias = position_bias.view(-1, heads, length, length)[:1]

        # Gate per (b, h, i). gru_rel_pos_linear's 8 outputs are summed in two groups of 4; summing its weight rows
        # first gives the same two numbers with a (hd -> 2) projection.
        per_head = hidden_states.view(batch_size, length, heads, head_dim).transpose(1, 2)  # (B, H, T, hd)
        weight = self.gru_rel_pos_linear.weight.view(2, 4, head_dim).sum(dim=1)  # (2, hd)
        bias = self.gru_rel_pos_linear.bias.view(2, 4).sum(dim=1)  # (2,)
        gate_a, gate_b = torch.sigmoid(F.linear(per_head, weight, bias)).chunk(2, dim=-1)  # (B, H, T, 1) each
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0  # (B, H, T, 1)

        query = self.q_proj(hidden_states).view(batch_size, length, heads, head_dim).transpose(1, 2)  # (B, H, T, hd)
        key = self.k_proj(hidden_states).view(batch_size, length, heads, head_dim).transpose(1, 2)
        value = self.v_proj(hidden_states).view(batch_size, length, heads, head_dim).transpose(1, 2)

        # The mask's rows are allocated 16-aligned (then sliced back to T): CUDA's memory-efficient kernel copies a
        # mask whose row stride is not a multiple of 16.
        align = hidden_states.is_cuda if self.align_mask_rows is None else self.align_mask_rows
        extra = (-length) % 16 if align else 0
        bias = F.pad(position_bias, (0, extra))  # (1, H, T, T + extra)
        if attention_mask is None:
            mask = gate * bias  # (B, H, T, T + extra)
        else:  # (B, T), True/1 on real frames; one fused pass: -inf on padded keys + gated bias
            padded_keys = F.pad(attention_mask.ne(1), (0, extra)).view(batch_size, 1, 1, length + extra)
            key_bias = torch.zeros(padded_keys.shape, dtype=gate.dtype, device=gate.device)
            mask = torch.addcmul(key_bias.masked_fill(padded_keys, float("-inf")), gate, bias)
        attended = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=mask.to(query.dtype)[..., :length],  # (B, H, T, T)
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, T, hd)
        attended = attended.transpose(1, 2).reshape(batch_size, length, heads * head_dim)
        return self.out_proj(attended), None, position_bias


def _wavlm_attention_modules(model: nn.Module) -> list[WavLMAttention]:
    return [module for module in model.modules() if isinstance(module, WavLMAttention)]


def set_wavlm_attention(model: nn.Module, implementation: str, strict: bool = True) -> nn.Module:
    """Switch every WavLM self-attention inside `model` to `"sdpa"` or back to `"eager"`; returns `model`. On a
    transformers release outside `CHECKED_TRANSFORMERS`, `"sdpa"` warns once and keeps (or restores) eager.

    Works on any module (a `WavLMModel`, a Crab model, a training wrapper) and needs no config. With `strict`, raises
    if `model` holds no WavLM attention, so a misdirected call on a wav2vec 2.0 / HuBERT encoder does not pass
    silently; `strict=False` leaves such models unchanged (for a config switch that applies to any speech encoder).
    """
    if implementation not in ("sdpa", "eager"):
        raise ValueError(f"WavLM attention implementation '{implementation}'; use 'sdpa' or 'eager'")
    modules = _wavlm_attention_modules(model)
    if not modules and strict:
        raise ValueError(f"{type(model).__name__} holds no WavLMAttention module; is the speech encoder WavLM?")
    if implementation == "sdpa" and modules and not sdpa_is_checked():
        _warn_unchecked(transformers.__version__)
        implementation = "eager"
    target = WavLMSdpaAttention if implementation == "sdpa" else WavLMAttention
    for module in modules:
        module.__class__ = target
    return model


def wavlm_attention_implementation(model: nn.Module) -> str | None:
    """`"sdpa"`, `"eager"`, `"mixed"`, or None when `model` holds no WavLM attention."""
    kinds = {"sdpa" if isinstance(m, WavLMSdpaAttention) else "eager" for m in _wavlm_attention_modules(model)}
    return None if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"


def quiet_eager_mask_warning() -> None:
    """Eager WavLM attention passes a float position bias with a boolean padding mask to
    `F.multi_head_attention_forward`, which torch warns about on every forward; the numbers are right. For entry
    points (`train.py`, `crab`): a process-wide warnings filter."""
    warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask", category=UserWarning)


__all__ = [
    "CHECKED_TRANSFORMERS",
    "sdpa_is_checked",
    "WavLMSdpaAttention",
    "set_wavlm_attention",
    "wavlm_attention_implementation",
    "quiet_eager_mask_warning",
]
