"""WAR, UAR, macro-F1, weighted-F1 and per-class recall over the whole label set."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import EvalPrediction

from modeling_crab.training.metrics import build_compute_metrics, classification_metrics, confusion, summary_table

LABELS = ["angry", "happy", "neutral", "sad"]
# "sad" (class 3) never occurs in this split; one "angry" clip is predicted "happy", one "happy" as "angry".
TRUE = [0, 0, 1, 1, 1, 2]
PRED = [0, 1, 1, 1, 0, 2]


def test_metrics_match_a_hand_computed_example_with_an_absent_class():
    metrics = classification_metrics(TRUE, PRED, LABELS)
    # recall: angry 1/2, happy 2/3, neutral 1/1, sad 0 (absent: counts as 0, never dropped)
    assert metrics["recall_angry"] == pytest.approx(1 / 2)
    assert metrics["recall_happy"] == pytest.approx(2 / 3)
    assert metrics["recall_neutral"] == pytest.approx(1.0)
    assert metrics["recall_sad"] == 0.0
    assert metrics["war"] == pytest.approx(4 / 6)
    assert metrics["uar"] == pytest.approx((1 / 2 + 2 / 3 + 1 + 0) / 4)
    # F1: angry (P 1/2, R 1/2) 1/2; happy (P 2/3, R 2/3) 2/3; neutral 1; sad 0
    assert metrics["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 1 + 0) / 4)
    assert metrics["weighted_f1"] == pytest.approx((2 * 1 / 2 + 3 * 2 / 3 + 1 * 1) / 6)


def test_compute_metrics_takes_the_argmax_of_logits():
    logits = np.eye(4)[PRED] * 3.0 - 1.0  # (N, C), peak at the prediction
    metrics = build_compute_metrics(LABELS)(EvalPrediction(predictions=logits, label_ids=np.array(TRUE)))
    assert metrics == classification_metrics(TRUE, PRED, LABELS)


def test_confusion_matrix_keeps_absent_classes():
    matrix = confusion(TRUE, PRED, num_labels=4)
    assert matrix.shape == (4, 4)
    assert matrix[3].sum() == 0 and matrix[:, 3].sum() == 0
    assert matrix[0].tolist() == [1, 1, 0, 0]


def test_summary_table_lists_every_metric_for_every_split():
    table = summary_table({"dev": classification_metrics(TRUE, PRED, LABELS)}, LABELS)
    assert "UAR" in table and "recall sad" in table and "0.5417" in table


def test_training_curves_keep_coinciding_metrics_apart_and_mark_the_best_checkpoint():
    """On balanced data WAR = UAR: the two curves differ in marker and line style; the kept checkpoint is marked on
    both panels; a log without curves draws no legend (no matplotlib warning)."""
    import warnings

    import matplotlib.pyplot as plt

    from modeling_crab.training.plots import training_curves_figure

    log = [{"step": 10, "loss": 1.3}, {"step": 20, "loss": 1.1}]
    log += [{"step": s, "eval_war": w, "eval_uar": w, "eval_macro_f1": w - 0.1} for s, w in ((10, 0.5), (20, 0.7))]
    fig = training_curves_figure(log, best_step=20)
    loss_ax, metric_ax = fig.axes
    lines = {line.get_label(): line for line in metric_ax.get_lines()}
    war, uar = lines["war"], lines["uar"]
    assert list(war.get_ydata()) == list(uar.get_ydata())
    assert war.get_marker() != uar.get_marker() and war.get_linestyle() != uar.get_linestyle()
    for ax in (loss_ax, metric_ax):
        marks = [line for line in ax.get_lines() if line.get_label() == "best checkpoint (step 20)"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [20, 20]
        assert ax.get_legend() is not None
    plt.close(fig)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = training_curves_figure([])
    assert all(ax.get_legend() is None for ax in empty.axes)
    plt.close(empty)


def test_attribute_metrics_are_ccc_pearson_and_mae_over_the_labelled_rows():
    from modeling_crab.training.metrics import attribute_metrics

    targets = np.array([[0.1, 0.2], [0.4, np.nan], [0.6, 0.5], [0.9, 0.9], [0.3, np.nan]])
    predictions = np.array([[0.2, 0.5], [0.3, 0.9], [0.7, 0.5], [0.8, 0.5], [0.3, 0.1]])
    metrics = attribute_metrics(targets, predictions, ["arousal", "valence"])
    x, y = predictions[:, 0], targets[:, 0]
    ccc = 2 * np.mean((x - x.mean()) * (y - y.mean())) / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    assert metrics["ccc_arousal"] == pytest.approx(ccc, abs=1e-6)
    assert metrics["pearson_arousal"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert metrics["mae_arousal"] == pytest.approx(np.abs(x - y).mean())
    # valence: rows 1 and 4 have no label; its prediction is constant on the rest: CCC 0, Pearson reported as 0
    assert metrics["ccc_valence"] == pytest.approx(0.0, abs=1e-6) and metrics["pearson_valence"] == 0.0
    assert metrics["mae_valence"] == pytest.approx(np.mean([0.3, 0.0, 0.4]))
    assert metrics["ccc_mean"] == pytest.approx((metrics["ccc_arousal"] + metrics["ccc_valence"]) / 2)
    assert attribute_metrics(np.full((3, 1), np.nan), np.zeros((3, 1)), ["arousal"]) == {}


def test_compute_metrics_of_a_joint_model_and_an_attributes_only_one():
    logits = np.eye(4)[[0, 1, 1, 2]] * 3.0
    attributes = np.array([[0.9], [0.6], [0.5], [0.1]])
    labels, attribute_labels = np.array([0, 1, 2, 2]), np.array([[0.8], [0.7], [0.4], [0.2]])
    joint = build_compute_metrics(LABELS, ["arousal"])(
        EvalPrediction((logits, attributes), (labels, attribute_labels))
    )
    assert joint["war"] == pytest.approx(0.75) and 0.8 < joint["ccc_arousal"] <= 1.0
    alone = build_compute_metrics([], ["arousal"])(
        EvalPrediction((np.zeros((4, 0)), attributes), (np.full(4, -100), attribute_labels))
    )
    assert set(alone) == {"ccc_arousal", "pearson_arousal", "mae_arousal", "ccc_mean"}
    table = summary_table({"dev": joint}, LABELS, ["arousal"])
    assert "CCC arousal" in table and "MAE arousal" in table and "UAR" in table
    assert "UAR" not in summary_table({"dev": alone}, [], ["arousal"])
