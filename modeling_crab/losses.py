"""Multi Layer Contrastive Supervision (MLCS): a multi-positive contrastive loss (MPCL) at every active CSL tap.

MPCL (SPEC §2), per CSL output e (B, d) with labels y (B,):
    z_i = e_i / |e_i|,  s_ij = z_i . z_j / tau,  self-similarity excluded,
    q_i = softmax_{j != i}(s_ij),  c_ij = 1[y_j = y_i] / |P(i)| over the other same-label samples P(i),
    L_i = -sum_j c_ij log q_ij,  loss = mean over all B anchors.
An anchor without a positive in the batch adds 0 but still counts in the mean. For one view this is SupCon's
L_out; `loss_type="supcon"` instead follows Khosla et al.'s reference: anchors without a positive are left out of
the mean and the loss is scaled by tau / base_tau.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Stands in for -inf on the excluded self-similarity; finite so a batch of one gives a zero loss, not NaN.
_EXCLUDED = -1e4


def _log_q_and_positives(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float):
    z = F.normalize(embeddings.float(), dim=-1)  # (B, d)
    similarity = z @ z.T / temperature  # (B, B)
    is_self = torch.eye(len(labels), dtype=torch.bool, device=embeddings.device)
    log_q = similarity.masked_fill(is_self, _EXCLUDED).log_softmax(dim=1)  # row i: softmax over j != i
    positives = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~is_self  # (B, B)
    return log_q, positives


def multi_positive_contrastive_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """MPCL of (B, d) embeddings with (B,) integer labels; a scalar, computed in float32."""
    log_q, positives = _log_q_and_positives(embeddings, labels, temperature)
    num_positives = positives.sum(dim=1)  # |P(i)|
    per_anchor = -(log_q * positives).sum(dim=1) / num_positives.clamp(min=1)
    return per_anchor.mean()


def supcon_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1, base_temperature: float = 0.07
) -> torch.Tensor:
    """SupCon L_out for one view (Khosla et al. 2020): mean over the anchors that have a positive."""
    log_q, positives = _log_q_and_positives(embeddings, labels, temperature)
    num_positives = positives.sum(dim=1)
    per_anchor = -(log_q * positives).sum(dim=1) / num_positives.clamp(min=1)
    has_positive = num_positives > 0
    scale = temperature / base_temperature
    return scale * (per_anchor * has_positive).sum() / has_positive.sum().clamp(min=1)


def mlcs_loss(
    csl_embeddings: dict[str, torch.Tensor],
    labels: torch.Tensor,
    temperature: float = 0.1,
    loss_type: str = "mpcl",
    taps: list[str] | None = None,
) -> torch.Tensor:
    """The MLCS term: the mean over the active taps (all of `csl_embeddings` unless `taps` names a subset)."""
    if loss_type not in ("mpcl", "supcon"):
        raise ValueError(f"loss_type='{loss_type}'; use 'mpcl' or 'supcon'")
    loss_fn = multi_positive_contrastive_loss if loss_type == "mpcl" else supcon_loss
    names = list(csl_embeddings) if taps is None else list(taps)
    if not names:
        raise ValueError("mlcs_loss needs at least one CSL embedding")
    missing = [name for name in names if name not in csl_embeddings]
    if missing:
        raise KeyError(f"no CSL embeddings for taps {missing}; the model produced {list(csl_embeddings)}")
    return torch.stack([loss_fn(csl_embeddings[name], labels, temperature) for name in names]).mean()


__all__ = ["multi_positive_contrastive_loss", "supcon_loss", "mlcs_loss"]
