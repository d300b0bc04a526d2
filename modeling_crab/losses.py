"""The Crab training objective, computed by the model itself: `CrabForEmotionClassification.forward(labels=...)` calls
`crab_objective`, so the trainer, the benchmarks and the tests share one loss (this file travels with checkpoints).

Objective (SPEC §2): L = WCE(logits, y) + alpha * MLCS, class weights `config.class_weights`, alpha
`config.mlcs_weight`. A model with emotional attributes (`config.attribute_names`) adds beta * mean_a (1 - CCC_a),
beta `config.attribute_loss_weight`, the concordance correlation coefficient of each attribute over the batch's rows
that have it (`concordance_loss`). Each output head's term and weight are the head's own (`heads.OutputHead.loss`,
`loss_weight`); `crab_objective` sums them and MLCS. Multi Layer Contrastive Supervision (MLCS): a multi-positive contrastive loss (MPCL) at every
active CSL tap.

MPCL (SPEC §2), per CSL output e (B, d) with labels y (B,):
    z_i = e_i / |e_i|,  s_ij = z_i . z_j / tau,  self-similarity excluded,
    q_i = softmax_{j != i}(s_ij),  c_ij = 1[y_j = y_i] / |P(i)| over the other same-label samples P(i),
    L_i = -sum_j c_ij log q_ij,  loss = mean over all B anchors.
An anchor without a positive in the batch adds 0 but still counts in the mean. For one view this is SupCon's
L_out; `loss_type="supcon"` instead follows Khosla et al.'s reference: anchors without a positive are left out of
the mean and the loss is scaled by tau / base_tau.

A distilled student (`training/distill.py`) is trained on `distillation_objective`: the teacher's temperature-softened
class probabilities (Hinton et al.'s KL, `soft_label_loss`), its attributes (1 - CCC), and this objective over the rows
that have labels.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .heads import HEADS
from .options import MLCS_LOSSES

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
    if loss_type not in MLCS_LOSSES:
        raise ValueError(f"loss_type='{loss_type}'; use 'mpcl' or 'supcon'")
    loss_fn = multi_positive_contrastive_loss if loss_type == "mpcl" else supcon_loss
    names = list(csl_embeddings) if taps is None else list(taps)
    if not names:
        raise ValueError("mlcs_loss needs at least one CSL embedding")
    missing = [name for name in names if name not in csl_embeddings]
    if missing:
        raise KeyError(f"no CSL embeddings for taps {missing}; the model produced {list(csl_embeddings)}")
    return torch.stack([loss_fn(csl_embeddings[name], labels, temperature) for name in names]).mean()


class _AllGatherWithGrad(torch.autograd.Function):
    """(b_r, ...) on each rank -> (sum_r b_r, ...) on every rank, in rank order; the backward sums the gradients of
    all ranks and returns this rank's slice. Ranks may hold different batch sizes."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        sizes = _gather_sizes(local)
        ctx.rank, ctx.sizes = dist.get_rank(), sizes
        return _all_gather_padded(local, sizes)

    @staticmethod
    def backward(ctx, grad_gathered: torch.Tensor) -> torch.Tensor:
        grad_gathered = grad_gathered.contiguous().clone()
        dist.all_reduce(grad_gathered, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad_gathered[start : start + ctx.sizes[ctx.rank]]


def _gather_sizes(local: torch.Tensor) -> list[int]:
    size = torch.tensor([local.shape[0]], device=local.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _all_gather_padded(local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: local.shape[0]] = local
    chunks = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(chunks, padded.contiguous())
    return torch.cat([chunk[:n] for chunk, n in zip(chunks, sizes)])


def gather_csl_embeddings(
    csl_embeddings: dict[str, torch.Tensor], labels: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """All-gather the CSL embeddings (with gradients) and labels over the data-parallel ranks; a no-op without
    `torch.distributed`. Taps are stacked into one (b, taps, d) tensor so there is one collective per step.

    Every rank then computes the same MLCS value, the single-process loss on the concatenated batch. The backward
    sums the W ranks' (identical) gradients into each rank's own slice, i.e. W times the single-process gradient;
    DDP/FSDP then average over the W ranks, which gives exactly the single-process gradient: no rescaling."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return csl_embeddings, labels
    taps = list(csl_embeddings)
    stacked = torch.stack([csl_embeddings[tap] for tap in taps], dim=1)  # (b, taps, d)
    gathered = _AllGatherWithGrad.apply(stacked)  # (B_global, taps, d)
    gathered_labels = _all_gather_padded(labels, _gather_sizes(labels))  # (B_global,)
    return {tap: gathered[:, i] for i, tap in enumerate(taps)}, gathered_labels


def concordance_correlation(predictions: torch.Tensor, targets: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Lin's concordance correlation coefficient of two (N,) tensors, with population (1/N) moments:
    `2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)`. 1 for perfect agreement, 0 for a constant prediction
    (of a target that varies, or differs from it); `eps` keeps two equal constants finite (CCC 0)."""
    x, y = predictions.float(), targets.float()
    x_mean, y_mean = x.mean(), y.mean()
    covariance = ((x - x_mean) * (y - y_mean)).mean()
    denominator = x.var(unbiased=False) + y.var(unbiased=False) + (x_mean - y_mean) ** 2
    return 2 * covariance / (denominator + eps)


def concordance_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
    """`mean_a (1 - CCC_a)` of (B, A) predictions against (B, A) targets, where NaN marks a row without that
    attribute. Each attribute is scored over its labelled rows; attributes with fewer than two are left out of the
    mean, and None means no attribute had two (nothing to learn from this batch)."""
    terms = []
    for a in range(targets.shape[1]):
        labelled = ~torch.isnan(targets[:, a])
        if int(labelled.sum()) >= 2:
            terms.append(1 - concordance_correlation(predictions[labelled, a], targets[labelled, a]))
    return torch.stack(terms).mean() if terms else None


def attribute_bins(attribute_labels: torch.Tensor, bins: int) -> torch.Tensor:
    """(B, A) attributes on the 0-1 scale -> (B,) contrastive labels: the joint bin of the A attributes, each cut
    into `bins` equal bins. A row with any attribute missing gets a label of its own (it has no positives)."""
    index = (attribute_labels.nan_to_num(0.0).clamp(0, 1) * bins).long().clamp(max=bins - 1)  # (B, A)
    joint = (index * bins ** torch.arange(index.shape[1], device=index.device)).sum(dim=1)
    missing = torch.isnan(attribute_labels).any(dim=1)
    own = -1 - torch.arange(len(joint), device=joint.device)  # negative: never a bin
    return torch.where(missing, own, joint)


class CrabObjective(tuple):
    """The objective and its terms, a term None where the model or the batch has none: `loss`, then the terms by name
    (`ce_loss`, `mlcs_loss`, `attribute_loss`, ...: `CrabClassifierOutput`'s fields), as attributes or, in that order,
    as a tuple (`loss, ce_loss, mlcs_loss, attribute_loss = objective`)."""

    def __new__(cls, loss: torch.Tensor, terms: dict[str, torch.Tensor | None]):
        objective = super().__new__(cls, (loss, *terms.values()))
        objective.terms = dict(terms)
        return objective

    @property
    def loss(self) -> torch.Tensor:
        return self[0]

    def __getattr__(self, name: str):
        terms = self.__dict__.get("terms", {})
        if name in terms:
            return terms[name]
        raise AttributeError(f"the objective has no term '{name}'; it has {list(terms)}")


MLCS_TERM = "mlcs_loss"


def objective_terms() -> list[str]:
    """The objective's terms, in `CrabObjective`'s order: the first output head's (`ce_loss`), MLCS, the other
    heads' (`attribute_loss`, ...)."""
    first, *others = (kind.loss_name for kind in HEADS)
    return [first, MLCS_TERM, *others]


def crab_objective(
    logits: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    csl_embeddings: dict[str, torch.Tensor] | None = None,
    config=None,
    attributes: torch.Tensor | None = None,
    attribute_labels: torch.Tensor | None = None,
    **other_heads: torch.Tensor | None,
) -> CrabObjective:
    """The Crab objective over the heads whose outputs are given, each output and its labels under the head's names
    (`heads.HEADS`: `logits` and `labels` (B,) for the classes, `attributes` and `attribute_labels` (B, A; NaN: a row
    without that attribute) for the attributes, `other_heads` for any further head):

    - each head's term (`OutputHead.loss`) times its weight (`OutputHead.loss_weight`): the class-weighted CE
      (`config.class_weights`, None for plain CE; label smoothing `config.label_smoothing`) with weight 1;
      `config.attribute_loss_weight` times `concordance_loss`;
    - `config.mlcs_weight` times the MLCS term (`config.mlcs_loss`, tau `config.mlcs_temperature`) when there are
      CSL embeddings and the weight is positive. Its positives are the first given head's `contrast_labels`: they
      share a class; in an attributes-only model they share the bins of every attribute (`attribute_bins`,
      `config.attribute_contrast_bins`; 0: no MLCS term). The embeddings and contrastive labels are first
      all-gathered across data-parallel ranks when `config.mlcs_gather` (see `gather_csl_embeddings`).

    Returns `CrabObjective(loss, terms)`, a term for every head of `HEADS` (None where not given), in order: the
    first head's, MLCS, the other heads'. Computed in
    fp32, also when the model runs under bf16/fp16 autocast."""
    given = {"logits": logits, "labels": labels, "attributes": attributes, "attribute_labels": attribute_labels}
    given.update(other_heads)
    heads = [kind([]) for kind in HEADS if given.get(kind.output) is not None]
    reference = given[heads[0].output]
    with torch.autocast(reference.device.type, enabled=False):
        terms, weighted = dict.fromkeys(objective_terms()), []
        for head in heads:
            head_labels = given.get(head.label_key)
            if head_labels is not None:
                terms[head.loss_name] = term = head.loss(given[head.output], head_labels, config)
                if term is not None:
                    weighted.append(term * head.loss_weight(config))
        contrastive = None
        contrast_labels = heads[0].contrast_labels(given.get(heads[0].label_key), config)
        if csl_embeddings and config.mlcs_weight > 0 and contrast_labels is not None:
            if config.mlcs_gather:
                csl_embeddings, contrast_labels = gather_csl_embeddings(csl_embeddings, contrast_labels)
            contrastive = mlcs_loss(
                csl_embeddings, contrast_labels, temperature=config.mlcs_temperature, loss_type=config.mlcs_loss
            )
            weighted.append(contrastive * config.mlcs_weight)
        terms[MLCS_TERM] = contrastive
        if not weighted:  # an attributes-only batch whose rows lack every attribute: a zero that keeps the graph
            weighted = [reference.float().sum() * 0.0]
        return CrabObjective(sum(weighted[1:], weighted[0]), terms)


# ---- Distillation (`training/distill.py`): a student Crab trained on a teacher's outputs -------------------------------

# the batch keys of the teacher's outputs, each a head's `output` with this prefix: (B, C) logits, (B, A) attributes
TEACHER_PREFIX = "teacher_"
# the weights and temperature of `distillation_objective`, as `config.distillation` holds them (`train.py
# --distill_*`); a student saved without one of them gets this value
DISTILLATION_DEFAULTS = {
    "temperature": 2.0,
    "soft_weight": 1.0,
    "attribute_weight": 1.0,
    "label_weight": 1.0,
    "embedding_weight": 0.0,
}


def soft_label_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target term: `T^2 KL(softmax(t / T) || softmax(s / T))`, the batch mean of (B, C) logits,
    in fp32. The T^2 keeps its gradients on the hard-label term's scale whatever T; 0 when the logits are equal."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def similarity_preserving_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Tung and Mori's similarity-preserving distillation (ICCV 2019) of a batch's embeddings, student (B, Ds) and
    teacher (B, Dt): `||G_s - G_t||_F^2 / B^2`, each `G` the (B, B) matrix of the embeddings' dot products with its
    rows L2-normalised, in fp32. The student learns which clips the teacher finds alike, not its coordinates: the
    widths may differ and no projection is trained, and it is 0 for the teacher's embeddings rotated or scaled."""

    def similarities(embeddings: torch.Tensor) -> torch.Tensor:
        flat = embeddings.float().flatten(1)
        return F.normalize(flat @ flat.T, dim=1)  # (B, B)

    return (similarities(student) - similarities(teacher)).pow(2).sum() / len(student) ** 2


DISTILLATION_TERMS = ("soft_loss", "soft_attribute_loss", "embedding_loss")  # logged beside `objective_terms()`


def distillation_objective(
    outputs, teacher: dict[str, torch.Tensor], labels: dict[str, torch.Tensor | None], config
) -> CrabObjective:
    """A student's objective (`config.distillation`: `DISTILLATION_DEFAULTS`' keys): `soft_weight` times the
    soft-target term against the teacher's logits (`soft_label_loss` at `temperature`), `attribute_weight` times
    `mean_a (1 - CCC_a)` of the student's attributes against the teacher's, `embedding_weight` times the
    similarity-preserving term of the pooled bimodal embeddings (`similarity_preserving_loss`; 0: off), and
    `label_weight` times the Crab objective (`crab_objective`: CE, MLCS, the attribute labels) over the rows that have
    labels. `outputs` is the student's forward without labels (`logits`, `attributes`, `csl_embeddings`,
    `pooled_output`); `teacher` the teacher's outputs by batch key (`teacher_logits`, `teacher_attributes`,
    `teacher_embedding`); `labels` the batch's labels by head (`labels` (B,), -100 on a
    row without a class; `attribute_labels` (B, A), NaN where missing). Returns `CrabObjective(loss, terms)`: the
    terms of `objective_terms()` (over the labelled rows; None without any) then `DISTILLATION_TERMS`."""
    settings = {**DISTILLATION_DEFAULTS, **(getattr(config, "distillation", None) or {})}
    class_labels, attribute_labels = labels.get("labels"), labels.get("attribute_labels")
    reference = outputs.logits if outputs.logits is not None else outputs.attributes
    with torch.autocast(reference.device.type, enabled=False):
        weighted, terms = [], dict.fromkeys([*objective_terms(), *DISTILLATION_TERMS])
        labelled = torch.ones(len(reference), dtype=torch.bool, device=reference.device)
        if class_labels is not None:
            labelled = class_labels >= 0
        if attribute_labels is not None or class_labels is not None:
            if bool(labelled.any()):  # a host sync, as the objective's own checks make
                hard = crab_objective(
                    logits=None if outputs.logits is None else outputs.logits[labelled],
                    labels=None if class_labels is None else class_labels[labelled],
                    csl_embeddings={tap: e[labelled] for tap, e in (outputs.csl_embeddings or {}).items()},
                    config=config,
                    attributes=None if outputs.attributes is None else outputs.attributes[labelled],
                    attribute_labels=None if attribute_labels is None else attribute_labels[labelled],
                )
                terms.update(hard.terms)
                weighted.append(hard.loss * settings["label_weight"])
        if outputs.logits is not None and teacher.get(TEACHER_PREFIX + "logits") is not None:
            terms["soft_loss"] = soft = soft_label_loss(
                outputs.logits, teacher[TEACHER_PREFIX + "logits"], settings["temperature"]
            )
            weighted.append(soft * settings["soft_weight"])
        if outputs.attributes is not None and teacher.get(TEACHER_PREFIX + "attributes") is not None:
            terms["soft_attribute_loss"] = matched = concordance_loss(
                outputs.attributes.float(), teacher[TEACHER_PREFIX + "attributes"].float()
            )
            if matched is not None:
                weighted.append(matched * settings["attribute_weight"])
        embedding, teacher_embedding = (
            getattr(outputs, "pooled_output", None),
            teacher.get(TEACHER_PREFIX + "embedding"),
        )
        if settings["embedding_weight"] > 0 and embedding is not None and teacher_embedding is not None:
            terms["embedding_loss"] = alike = similarity_preserving_loss(embedding, teacher_embedding)
            weighted.append(alike * settings["embedding_weight"])
        if not weighted:
            weighted = [reference.float().sum() * 0.0]
        return CrabObjective(sum(weighted[1:], weighted[0]), terms)


__all__ = [
    "multi_positive_contrastive_loss",
    "supcon_loss",
    "mlcs_loss",
    "gather_csl_embeddings",
    "concordance_correlation",
    "concordance_loss",
    "attribute_bins",
    "CrabObjective",
    "objective_terms",
    "crab_objective",
    "TEACHER_PREFIX",
    "DISTILLATION_DEFAULTS",
    "DISTILLATION_TERMS",
    "soft_label_loss",
    "similarity_preserving_loss",
    "distillation_objective",
]
