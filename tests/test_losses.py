"""MPCL against the formula of SPEC §2 written out with loops, the SupCon variant, and MLCS over taps."""

from __future__ import annotations

import math

import pytest
import torch

from modeling_crab.losses import mlcs_loss, multi_positive_contrastive_loss, supcon_loss


def _mpcl_by_the_formula(embeddings: torch.Tensor, labels: list[int], tau: float) -> float:
    z = [e / e.norm() for e in embeddings.double()]
    total = 0.0
    for i, yi in enumerate(labels):
        others = [j for j in range(len(labels)) if j != i]
        denominator = sum(math.exp(float(z[i] @ z[j]) / tau) for j in others)
        positives = [j for j in others if labels[j] == yi]
        for j in positives:  # c_ij = 1/|P(i)|
            total += -math.log(math.exp(float(z[i] @ z[j]) / tau) / denominator) / len(positives)
    return total / len(labels)  # anchors without a positive add 0 but count


@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 3, 3, 3], [0, 0, 0, 0], [0, 1, 2, 3]])
def test_mpcl_matches_the_formula(labels):
    torch.manual_seed(len(labels))
    embeddings = torch.randn(len(labels), 8)
    got = multi_positive_contrastive_loss(embeddings, torch.tensor(labels), temperature=0.1)
    assert got.item() == pytest.approx(_mpcl_by_the_formula(embeddings, labels, 0.1), rel=1e-5, abs=1e-6)


def test_anchors_without_positive_count_in_the_mean():
    torch.manual_seed(0)
    embeddings = torch.randn(5, 8)
    labels = torch.tensor([0, 0, 1, 2, 3])  # only anchors 0 and 1 have a positive
    full = multi_positive_contrastive_loss(embeddings, labels)
    pair_only = multi_positive_contrastive_loss(embeddings[:2], labels[:2])
    # on the pair alone each anchor's softmax runs over one candidate, so the loss there is 0;
    # in the batch of 5 the two anchors carry the loss and it is divided by 5, not 2
    assert pair_only.item() == pytest.approx(0.0, abs=1e-6)
    assert full.item() == pytest.approx(_mpcl_by_the_formula(embeddings, labels.tolist(), 0.1), rel=1e-5)
    assert multi_positive_contrastive_loss(embeddings[2:], labels[2:]).item() == 0.0


def test_batch_of_one_and_no_positive_have_zero_loss_and_finite_gradient():
    for n in (1, 4):
        embeddings = torch.randn(n, 8, requires_grad=True)
        loss = multi_positive_contrastive_loss(embeddings, torch.arange(n))
        loss.backward()
        assert loss.item() == 0.0 and torch.isfinite(embeddings.grad).all()


def test_supcon_averages_over_anchors_with_positives_and_rescales():
    torch.manual_seed(0)
    embeddings = torch.randn(5, 8)
    labels = torch.tensor([0, 0, 1, 1, 2])
    mpcl = multi_positive_contrastive_loss(embeddings, labels, temperature=0.1)
    supcon = supcon_loss(embeddings, labels, temperature=0.1, base_temperature=0.07)
    assert supcon.item() == pytest.approx(mpcl.item() * 5 / 4 * 0.1 / 0.07, rel=1e-5)


def test_loss_is_permutation_invariant_and_scale_invariant():
    torch.manual_seed(0)
    embeddings, labels = torch.randn(8, 16), torch.tensor([0, 1, 0, 2, 1, 2, 0, 3])
    permutation = torch.randperm(8)
    loss = multi_positive_contrastive_loss(embeddings, labels)
    assert multi_positive_contrastive_loss(embeddings[permutation], labels[permutation]).item() == pytest.approx(
        loss.item(), rel=1e-5
    )
    assert multi_positive_contrastive_loss(embeddings * 7.0, labels).item() == pytest.approx(loss.item(), rel=1e-5)


def test_mlcs_is_the_mean_over_taps_and_checks_names():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1])
    taps = {"fusion": torch.randn(4, 8), "audio_pooled": torch.randn(4, 8)}
    expected = (
        multi_positive_contrastive_loss(taps["fusion"], labels)
        + multi_positive_contrastive_loss(taps["audio_pooled"], labels)
    ) / 2
    assert mlcs_loss(taps, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    assert mlcs_loss(taps, labels, taps=["fusion"]).item() == pytest.approx(
        multi_positive_contrastive_loss(taps["fusion"], labels).item()
    )
    with pytest.raises(KeyError, match="text_pooled"):
        mlcs_loss(taps, labels, taps=["text_pooled"])
    with pytest.raises(ValueError, match="loss_type"):
        mlcs_loss(taps, labels, loss_type="triplet")


def test_pulling_positives_together_lowers_the_loss():
    labels = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
    together = torch.tensor([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0], [0.05, 1.0]])
    assert multi_positive_contrastive_loss(together, labels) < multi_positive_contrastive_loss(apart, labels)


def test_label_smoothing_of_the_cross_entropy_term():
    """`config.label_smoothing` is torch's label smoothing in the (class-weighted) CE term; 0 leaves it plain."""
    from types import SimpleNamespace

    from modeling_crab.losses import crab_objective

    torch.manual_seed(0)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    weights = [1.0, 2.0, 0.5, 1.5]
    common = {"class_weights": weights, "mlcs_weight": 0.0, "attribute_loss_weight": 1.0, "attribute_contrast_bins": 0}
    smoothed = SimpleNamespace(label_smoothing=0.1, **common)
    plain = SimpleNamespace(label_smoothing=0.0, **common)
    loss, ce, mlcs, _ = crab_objective(logits, labels, None, smoothed)
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor(weights), label_smoothing=0.1)
    assert mlcs is None and torch.equal(loss, ce) and torch.allclose(ce, expected)
    assert not torch.allclose(crab_objective(logits, labels, None, plain)[1], ce)
    # confident, correct logits: smoothing keeps a floor under the loss, plain CE goes to 0
    confident = torch.nn.functional.one_hot(labels, 4).float() * 50
    assert (
        crab_objective(confident, labels, None, smoothed)[1] > 0.1 > crab_objective(confident, labels, None, plain)[1]
    )
