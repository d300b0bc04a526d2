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
