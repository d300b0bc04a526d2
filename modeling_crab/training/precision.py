"""bf16 copies of the encoders' weights kept between optimizer steps (`train.py --bf16_weights`).

Under bf16 autocast every linear layer casts its fp32 weight and bias to bf16 in every call, so with gradient
accumulation the same weights are cast again in every micro-batch (bench/RESULTS.md: at micro-batch 32, 19% of the
kernel time is `aten::copy_`, these casts and the fp32 parts' casts back). `Bf16Weights` casts each encoder weight once
per optimizer step instead and hands the copies to the forward pass; autocast finds them in bf16 already and casts
nothing. It computes autocast's function exactly: the copies are the casts autocast would make, made earlier. The
backward pass is autocast's: each weight's bf16 gradient is cast to fp32 and added to the parameter's.

The fp32 parameters stay the model's own: the state dict, checkpoints, the optimizer (fp32 master weights), gradient
clipping and DDP see only them. The copies enter the forward through one autograd function per encoder layer
(`_AsCopies`), whose backward returns each copy's gradient in fp32 to its parameter, where it accumulates across
micro-batches and DDP's hooks all-reduce it, as under plain autocast.

What is covered: every `nn.Linear` of both encoders (weight and bias), in the forward passes that run under bf16
autocast. Not covered, as today: the speech CNN (no linear layers; it runs in fp32, `CrabConfig.fp32_under_autocast`),
WavLM's positional convolution (its weight is recomputed from a weight norm in every call), the head, and the
recomputation of checkpointed layers (`--gradient_checkpointing`), which casts as autocast does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize


class _AsCopies(torch.autograd.Function):
    """(copies, *masters) -> the bf16 copies, as the masters' stand-ins in the autograd graph; backward: each copy's
    gradient cast to its master's dtype (fp32), for the master's own gradient accumulation."""

    @staticmethod
    def forward(ctx, copies: list[torch.Tensor], *masters: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.set_materialize_grads(False)  # a copy the forward did not use (a dropped layer) gets None
        ctx.dtypes = [master.dtype for master in masters]
        return tuple(copy.view_as(copy) for copy in copies)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        return (None, *(None if grad is None else grad.to(dtype) for grad, dtype in zip(grads, ctx.dtypes)))


@dataclass(eq=False)
class _Slot:
    """One covered parameter (`module.<name>`) and its bf16 copy, with what the copy was made from: the parameter
    object, its storage, its version counter and the optimizer step."""

    module: nn.Module
    name: str
    copy: torch.Tensor | None = None
    source: nn.Parameter | None = None
    data_ptr: int = 0
    version: int = -1
    step: int = -1

    def master(self) -> nn.Parameter:
        return self.module._parameters[self.name]


class Bf16Weights:
    """bf16 copies of the `nn.Linear` weights and biases of `encoders`, refreshed once per optimizer step.

    Each encoder gets a forward pre-hook and a forward hook. Under bf16 autocast, the pre-hook refreshes the stale
    copies and shadows each covered parameter with its copy (an instance attribute, which `module.weight` finds before
    the registered parameter; `parameters()` and `state_dict()` still return the fp32 parameter); the hook removes
    the shadows. Outside bf16 autocast the encoders run on their fp32 parameters, untouched.

    A copy is stale after an optimizer step (`attach(optimizer)`: fused optimizers do not bump a parameter's version
    counter), or when its parameter was written in place (`load_state_dict`, a resumed checkpoint), replaced or moved.
    `casts` counts the copies made: one per covered tensor and optimizer step, however many micro-batches it has.
    """

    def __init__(self, encoders: Iterable[nn.Module]):
        self.casts = 0
        self.optimizer_steps = 0
        self.encoders: dict[nn.Module, list[list[_Slot]]] = {}
        self._handles: list = []
        for encoder in encoders:
            self.encoders[encoder] = _layer_groups(encoder)
            self._handles.append(encoder.register_forward_pre_hook(self._shadow))
            self._handles.append(encoder.register_forward_hook(self._unshadow, always_call=True))

    @property
    def slots(self) -> list[_Slot]:
        return [slot for groups in self.encoders.values() for group in groups for slot in group]

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Mark every copy stale after each step of `optimizer`."""
        self._handles.append(optimizer.register_step_post_hook(self._stepped))

    def remove(self) -> None:
        """Detach from the encoders and the optimizer; the encoders then run as before (autocast casts)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _stepped(self, optimizer, args, kwargs) -> None:
        self.optimizer_steps += 1

    def _shadow(self, encoder: nn.Module, args) -> None:
        groups = self.encoders.get(encoder)
        if groups is None:  # a replica made by nn.DataParallel: its parameters are not the ones covered here
            raise RuntimeError(
                "--bf16_weights does not work under nn.DataParallel (several GPUs in one process); launch one "
                "process per GPU (accelerate launch train.py, or torchrun), or drop --bf16_weights"
            )
        slots = [slot for group in groups for slot in group]
        if not slots or not _bf16_autocast(slots[0].master().device):
            return
        self._refresh(slots)
        for group in groups:
            copies = _AsCopies.apply([slot.copy for slot in group], *(slot.source for slot in group))
            for slot, copy in zip(group, copies):
                slot.module.__dict__[slot.name] = copy

    def _unshadow(self, encoder: nn.Module, args, output) -> None:
        for group in self.encoders.get(encoder, ()):
            for slot in group:
                slot.module.__dict__.pop(slot.name, None)

    def _refresh(self, slots: list[_Slot]) -> None:
        """Recast the copies whose parameter changed since they were made; reuses each copy's storage."""
        stale = []
        for slot in slots:
            master = slot.master()
            if (
                slot.step != self.optimizer_steps
                or slot.source is not master
                or slot.version != master._version
                or slot.data_ptr != master.data_ptr()
            ):
                stale.append((slot, master))
        if not stale:
            return
        with torch.inference_mode(False), torch.no_grad():  # copies usable by later forward passes with gradients
            for slot, master in stale:
                if slot.copy is None or slot.copy.shape != master.shape or slot.copy.device != master.device:
                    slot.copy = torch.empty_like(master, dtype=torch.bfloat16, memory_format=torch.preserve_format)
                slot.copy.copy_(master)
                slot.source, slot.data_ptr, slot.version = master, master.data_ptr(), master._version
                slot.step = self.optimizer_steps
        self.casts += len(stale)


def _bf16_autocast(device: torch.device) -> bool:
    return torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.bfloat16


def _layer_groups(encoder: nn.Module) -> list[list[_Slot]]:
    """The encoder's covered parameters, one group per repeated layer (an element of an `nn.ModuleList`) and one for
    the rest: a group's copies enter the graph together, and its gradients leave it together when the backward pass
    is done with that layer (so DDP can all-reduce layer by layer, as without copies)."""
    layer_of: dict[nn.Module, nn.Module] = {}
    for stack in encoder.modules():
        if isinstance(stack, nn.ModuleList):
            for layer in stack:
                for module in layer.modules():
                    layer_of.setdefault(module, layer)
    groups: dict[nn.Module | None, list[_Slot]] = {}
    for module in encoder.modules():
        if not isinstance(module, nn.Linear) or parametrize.is_parametrized(module):
            continue
        for name, parameter in module.named_parameters(recurse=False):
            if parameter.is_floating_point():
                groups.setdefault(layer_of.get(module), []).append(_Slot(module, name))
    return list(groups.values())


def bf16_weights_problems(args) -> list[str]:
    """Why `--bf16_weights` cannot work with these `TrainingArguments`, one line each with the fix; none when it can."""
    problems = []
    if not args.bf16:
        problems.append(
            "--bf16_weights keeps bf16 copies of the encoder weights for bf16 autocast; add --bf16 true (fp16 and "
            "fp32 training cast nothing it could keep), or drop --bf16_weights"
        )
    if args.deepspeed or args.fsdp:
        problems.append(
            "--bf16_weights works on one device and under DDP; DeepSpeed and FSDP manage their own bf16 weights: drop "
            "--bf16_weights"
        )
    if args.torch_compile:
        problems.append(
            "--bf16_weights swaps weights in hooks that --torch_compile would trace; compile layer by layer instead "
            "(--compile_regions inductor), or drop --bf16_weights"
        )
    return problems


__all__ = ["Bf16Weights", "bf16_weights_problems"]
