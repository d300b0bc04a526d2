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
    set_wavlm_attention(model, "eager")  # back to eager (attn_implementation="eager" for `output_attentions`)

The swap changes the class of each `WavLMAttention` module to `WavLMSdpaAttention` (a subclass with the same
parameters), so state dicts, checkpoints and `isinstance` checks are unaffected. It replaces transformers' private
`WavLMAttention.forward` and relies on how WavLM's encoder layers call it, so it is used only where the installed
transformers' code is the code it reproduces: `upstream_fingerprint()` hashes that code (the attention's `forward`
and `torch_multi_head_self_attention`, the two encoder layers' `forward`; syntax only: annotations, docstrings,
comments and formatting do not count), and `REPRODUCED_UPSTREAM` lists the fingerprints whose eager and SDPA
outputs and gradients tests/test_fast_path.py compared. Any transformers release with that code keeps the fast path;
a changed one gets a one-line warning and WavLM keeps transformers' own (eager) attention.
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import inspect
import logging
import warnings

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers.models.wavlm import modeling_wavlm
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

from .options import AUDIO_ATTENTIONS

logger = logging.getLogger(__name__)

# Fingerprints of the upstream WavLM attention code (`upstream_fingerprint`) this file reproduces, each with the
# transformers releases it was read from. A new one is added after tests/test_fast_path.py passes on that release.
REPRODUCED_UPSTREAM = {
    "1e00b3504c7f335c": "transformers 5.16-5.25",
}
# The upstream functions the fingerprint covers: the one the fused path replaces and its callers.
_UPSTREAM_FUNCTIONS = (
    ("WavLMAttention", "forward"),
    ("WavLMAttention", "torch_multi_head_self_attention"),
    ("WavLMEncoderLayer", "forward"),
    ("WavLMEncoderLayerStableLayerNorm", "forward"),
)


class _Normalised(ast.NodeTransformer):
    """Drops what does not change the computation: annotations and docstrings (comments and formatting are not in
    the syntax tree)."""

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.returns = None
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
            if isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        self.generic_visit(node)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is None:
            return ast.Pass()
        return ast.Assign(targets=[node.target], value=node.value)


def upstream_fingerprint(source: str | None = None) -> str:
    """16 hex digits identifying the WavLM attention code of `source` (the text of a `modeling_wavlm.py`; the
    installed transformers' by default): `_UPSTREAM_FUNCTIONS`, their syntax trees without annotations or
    docstrings. A function missing from the source counts as changed."""
    if source is None:
        return _installed_fingerprint()
    classes = {node.name: node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}
    digest = hashlib.sha256()
    for class_name, function_name in _UPSTREAM_FUNCTIONS:
        methods = {
            node.name: node
            for node in getattr(classes.get(class_name), "body", [])
            if isinstance(node, ast.FunctionDef)
        }
        function = methods.get(function_name)
        text = "missing" if function is None else ast.dump(_Normalised().visit(copy.deepcopy(function)))
        digest.update(f"{class_name}.{function_name}:{text}\n".encode())
    return digest.hexdigest()[:16]


@functools.cache
def _installed_fingerprint() -> str:
    return upstream_fingerprint(inspect.getsource(modeling_wavlm))


def sdpa_reproduces_upstream() -> bool:
    """Whether the installed transformers' WavLM attention is code the SDPA attention was checked to reproduce."""
    return upstream_fingerprint() in REPRODUCED_UPSTREAM


@functools.cache
def _warn_changed(version: str, fingerprint: str) -> None:
    logger.warning(
        f"transformers {version}'s WavLM attention code (fingerprint {fingerprint}) is not the code Crab's SDPA "
        f"attention reproduces ({', '.join(REPRODUCED_UPSTREAM.values())}): WavLM uses transformers' own (eager) "
        "attention, the same function, more slowly"
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

        # Gate per (b, h, i): gru_rel_pos_linear's 8 outputs summed in two groups of 4, as eager. The Linear is called
        # as a module (not its weight read directly), so accelerate's offload hooks can serve it under `device_map`.
        per_head = hidden_states.view(batch_size, length, heads, head_dim).transpose(1, 2)  # (B, H, T, hd)
        gates = self.gru_rel_pos_linear(per_head).view(batch_size, heads, length, 2, 4).sum(dim=-1)  # (B, H, T, 2)
        gate_a, gate_b = torch.sigmoid(gates).chunk(2, dim=-1)  # (B, H, T, 1) each
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
    transformers release whose WavLM attention code is not one it reproduces (`REPRODUCED_UPSTREAM`), `"sdpa"` warns
    once and keeps (or restores) eager.

    Works on any module (a `WavLMModel`, a Crab model, a training wrapper) and needs no config. With `strict`, raises
    if `model` holds no WavLM attention, so a misdirected call on a wav2vec 2.0 / HuBERT encoder does not pass
    silently; `strict=False` leaves such models unchanged (for a config switch that applies to any speech encoder).
    """
    if implementation not in AUDIO_ATTENTIONS:
        raise ValueError(f"WavLM attention implementation '{implementation}'; use 'sdpa' or 'eager'")
    modules = _wavlm_attention_modules(model)
    if not modules and strict:
        raise ValueError(f"{type(model).__name__} holds no WavLMAttention module; is the speech encoder WavLM?")
    if implementation == "sdpa" and modules and not sdpa_reproduces_upstream():
        _warn_changed(transformers.__version__, upstream_fingerprint())
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
    "REPRODUCED_UPSTREAM",
    "upstream_fingerprint",
    "sdpa_reproduces_upstream",
    "WavLMSdpaAttention",
    "set_wavlm_attention",
    "wavlm_attention_implementation",
    "quiet_eager_mask_warning",
]
