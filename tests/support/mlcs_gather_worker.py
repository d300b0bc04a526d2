"""One rank of the two-process MLCS-gather check (tests/test_training_distributed.py runs it under torchrun).

Each rank embeds its own, unevenly sized, slice of a fixed global batch with a DDP-wrapped model, all-gathers the
CSL embeddings with `losses.gather_csl_embeddings` (what `config.mlcs_gather` switches on), and backpropagates the MLCS loss. It writes its loss and its
(DDP-averaged) gradients to OUT_DIR/rank<k>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from modeling_crab.losses import gather_csl_embeddings, mlcs_loss

RANK_SIZES = (3, 5)  # uneven micro-batches, as on a last batch
TAPS, DIM = 3, 4


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(sum(RANK_SIZES), 6, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 1, 2, 0])
    return features, labels


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, TAPS * DIM))


def embed(model: nn.Module, features: torch.Tensor) -> dict[str, torch.Tensor]:
    stacked = model(features).view(len(features), TAPS, DIM)
    return {f"tap{i}": stacked[:, i] for i in range(TAPS)}


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    features, labels = global_batch()
    start = sum(RANK_SIZES[:rank])
    local = slice(start, start + RANK_SIZES[rank])

    model = DistributedDataParallel(make_model())
    csl_embeddings, gathered_labels = gather_csl_embeddings(embed(model, features[local]), labels[local])
    loss = mlcs_loss(csl_embeddings, gathered_labels, temperature=0.1)
    loss.backward()  # DDP averages the gradients over the two ranks

    with torch.no_grad():
        local_loss = mlcs_loss(embed(model.module, features[local]), labels[local], temperature=0.1)
    result = {
        "loss": loss.item(),
        "local_loss": local_loss.item(),
        "gathered_labels": gathered_labels.tolist(),
        "grads": {name: p.grad.flatten().tolist() for name, p in model.module.named_parameters()},
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    del model  # DDP's reducer goes before its process group, not after it at exit (a gloo abort once, under load)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
