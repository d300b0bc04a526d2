"""MPCL against the formula of SPEC §2 written out with loops, the SupCon variant, and MLCS over taps."""

from __future__ import annotations

import math

import numpy as np
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


def _ccc_by_formula(x: np.ndarray, y: np.ndarray) -> float:
    covariance = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * covariance / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_concordance_correlation_is_lins_formula():
    from modeling_crab.losses import concordance_correlation

    rng = np.random.default_rng(0)
    y = rng.uniform(0, 1, 50)
    for x in (y + rng.normal(0, 0.1, 50), 0.5 * y + 0.3, 1 - y, rng.uniform(0, 1, 50)):
        got = concordance_correlation(torch.tensor(x), torch.tensor(y))
        assert float(got) == pytest.approx(_ccc_by_formula(x, y), abs=1e-5)
    assert float(concordance_correlation(torch.tensor(y), torch.tensor(y))) == pytest.approx(1.0, abs=1e-5)
    # a constant prediction scores 0, whatever constant; two equal constants stay finite
    for constant in (0.0, 0.5, float(y.mean())):
        assert float(concordance_correlation(torch.full((50,), constant), torch.tensor(y))) == pytest.approx(0.0)
    same = concordance_correlation(torch.full((4,), 0.5), torch.full((4,), 0.5))
    assert torch.isfinite(same) and float(same) == 0.0
    # a shift of the mean lowers CCC where Pearson's r would stay 1
    assert float(concordance_correlation(torch.tensor(y + 0.3), torch.tensor(y))) < 0.7


def test_concordance_loss_scores_each_attribute_over_its_labelled_rows():
    from modeling_crab.losses import concordance_correlation, concordance_loss

    torch.manual_seed(0)
    predictions = torch.rand(8, 3, requires_grad=True)
    targets = torch.rand(8, 3)
    targets[[1, 4], 0] = float("nan")  # rows 1 and 4 lack the first attribute
    targets[:7, 2] = float("nan")  # one labelled row: the third attribute is left out
    loss = concordance_loss(predictions, targets)
    rows = [0, 2, 3, 5, 6, 7]
    expected = (
        1
        - concordance_correlation(predictions[rows, 0], targets[rows, 0])
        + 1
        - concordance_correlation(predictions[:, 1], targets[:, 1])
    ) / 2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert predictions.grad[[1, 4], 0].abs().sum() == 0  # a missing attribute sends no gradient
    assert predictions.grad[:, 2].abs().sum() == 0
    assert predictions.grad[[0, 2], 0].abs().sum() > 0
    assert concordance_loss(predictions, torch.full((8, 3), float("nan"))) is None


def test_attribute_bins_make_the_positives_of_an_attributes_only_model():
    from modeling_crab.losses import attribute_bins

    attributes = torch.tensor(
        [[0.1, 0.9], [0.2, 0.8], [0.1, 0.1], [0.9, 0.9], [1.0, 0.95], [float("nan"), 0.9], [float("nan"), 0.9]]
    )
    bins = attribute_bins(attributes, 3).tolist()
    assert bins[0] == bins[1]  # low arousal, high valence
    assert len({bins[0], bins[2], bins[3]}) == 3
    assert bins[3] == bins[4]  # 1.0 falls in the top bin
    assert bins[5] != bins[6] and min(bins[5], bins[6]) < 0  # rows missing an attribute have no positives


def test_the_objective_adds_the_weighted_attribute_term():
    from types import SimpleNamespace

    from modeling_crab.losses import concordance_loss, crab_objective

    torch.manual_seed(0)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    attributes, targets = torch.rand(6, 2), torch.rand(6, 2)
    config = SimpleNamespace(
        class_weights=None, label_smoothing=0.0, mlcs_weight=0.0, attribute_loss_weight=0.5, attribute_contrast_bins=3
    )
    objective = crab_objective(logits, labels, None, config, attributes, targets)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(objective.attribute_loss, concordance_loss(attributes, targets))
    torch.testing.assert_close(objective.loss, ce + 0.5 * objective.attribute_loss)
    # attributes only (no logits): the attribute term alone, and MLCS positives from the bins
    embeddings = {"fusion": torch.randn(6, 8)}
    alone = crab_objective(
        None,
        None,
        embeddings,
        SimpleNamespace(
            **{**vars(config), "mlcs_weight": 1.0, "mlcs_gather": False, "mlcs_temperature": 0.1, "mlcs_loss": "mpcl"}
        ),
        attributes,
        targets,
    )
    assert alone.ce_loss is None and alone.mlcs_loss is not None
    torch.testing.assert_close(alone.loss, 0.5 * alone.attribute_loss + alone.mlcs_loss)
