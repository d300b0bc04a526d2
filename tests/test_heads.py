"""The output-head registry: a model's heads come from its config, and a head registered in `heads.HEADS` flows
through the objective, the trainer's predictions, the metrics, the predictions file, the summary table, the
pipeline's answer and `crab predict`'s table without edits elsewhere."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from modeling_crab.cli import format_table
from modeling_crab.heads import (
    HEADS,
    AttributeHead,
    ClassHead,
    answer,
    heads_named,
    heads_of,
    pack_predictions,
    unpack_predictions,
    window_answer,
)
from modeling_crab.losses import crab_objective, objective_terms
from modeling_crab.training.evaluation import write_predictions
from modeling_crab.training.metrics import build_compute_metrics, head_predictions, summary_table
from modeling_crab.training.tiny import tiny_crab_config

LABELS = {0: "angry", 1: "happy", 2: "sad"}
ATTRIBUTES = ["arousal", "valence"]


class SentimentHead(AttributeHead):
    """A third head for these tests: a regressor of `config.sentiment_names`."""

    name = "sentiment"
    output = "sentiment"
    layer = "sentiment_regressor"
    label_key = "sentiment_labels"
    loss_name = "sentiment_loss"
    answer_key = window_key = scores_key = "sentiment"
    card_task = ("sentiment-regression", "Sentiment regression")
    cli_header = "sentiment"

    @classmethod
    def names_in(cls, config) -> list[str]:
        names = config.get("sentiment_names") if isinstance(config, dict) else getattr(config, "sentiment_names", None)
        return list(names or [])

    @staticmethod
    def loss_weight(config) -> float:
        return 2.0


@pytest.fixture
def sentiment_head():
    """`SentimentHead` registered after the classes and the attributes, for one test."""
    HEADS.append(SentimentHead)
    try:
        yield SentimentHead
    finally:
        HEADS.remove(SentimentHead)


def test_a_configs_heads_are_its_classes_and_its_attributes_in_registry_order():
    joint = tiny_crab_config(3, LABELS, vocab_size=100, attribute_names=ATTRIBUTES)
    assert [type(h) for h in heads_of(joint)] == [ClassHead, AttributeHead]
    assert [h.names for h in heads_of(joint)] == [list(LABELS.values()), ATTRIBUTES]
    assert heads_of(joint.to_dict())[0].names == list(LABELS.values())  # config.json: string keys
    assert [type(h) for h in heads_of(tiny_crab_config(3, LABELS, vocab_size=100))] == [ClassHead]
    alone = tiny_crab_config(0, {}, vocab_size=100, attribute_names=ATTRIBUTES)
    assert [type(h) for h in heads_of(alone)] == [AttributeHead]
    assert [h.names for h in heads_named(classes=["a"], attributes=[])] == [["a"]]
    with pytest.raises(ValueError, match="no output head named"):
        heads_named(sentiment=["x"])


def test_a_model_with_classes_only_predicts_bare_logits_others_one_entry_per_registered_head():
    outputs = SimpleNamespace(logits=torch.randn(4, 3), attributes=torch.rand(4, 2))
    inputs = {"labels": torch.tensor([0, 1, 2, 0])}
    logits, labels = pack_predictions(heads_named(classes=list(LABELS.values())), outputs, inputs)
    assert torch.equal(logits, outputs.logits) and torch.equal(labels, inputs["labels"])
    predictions, labels = pack_predictions(heads_named(attributes=ATTRIBUTES), outputs, {})
    assert predictions[0].shape == (4, 0) and (labels[0] == -100).all()  # the classes the model lacks
    assert torch.equal(predictions[1], outputs.attributes) and labels[1].isnan().all()


def _sentiment_model_outputs():
    torch.manual_seed(0)
    outputs = SimpleNamespace(logits=torch.randn(6, 3), attributes=torch.rand(6, 2), sentiment=torch.rand(6, 1))
    inputs = {
        "labels": torch.tensor([0, 1, 2, 0, 1, 2]),
        "attribute_labels": torch.rand(6, 2),
        "sentiment_labels": torch.rand(6, 1),
    }
    return outputs, inputs


def test_a_registered_head_adds_its_weighted_term_to_the_objective(sentiment_head):
    outputs, inputs = _sentiment_model_outputs()
    config = SimpleNamespace(
        class_weights=None, label_smoothing=0.0, mlcs_weight=0.0, attribute_loss_weight=0.5, attribute_contrast_bins=3
    )
    objective = crab_objective(**vars(outputs), **inputs, config=config)
    assert objective_terms() == ["ce_loss", "mlcs_loss", "attribute_loss", "sentiment_loss"]
    assert list(objective.terms) == objective_terms() and objective.sentiment_loss is not None
    expected = objective.ce_loss + 0.5 * objective.attribute_loss + 2.0 * objective.sentiment_loss
    torch.testing.assert_close(objective.loss, expected)


def test_a_registered_head_flows_through_metrics_the_predictions_file_and_the_summary(sentiment_head, tmp_path):
    config = {"id2label": {str(k): v for k, v in LABELS.items()}, "attribute_names": ATTRIBUTES}
    heads = heads_of({**config, "sentiment_names": ["sentiment"]})
    assert [h.name for h in heads] == ["classes", "attributes", "sentiment"]
    outputs, inputs = _sentiment_model_outputs()
    predictions, labels = pack_predictions(heads, outputs, inputs)
    gathered = EvalPrediction(tuple(p.numpy() for p in predictions), tuple(x.numpy() for x in labels))

    metrics = build_compute_metrics(heads=heads)(gathered)
    assert {"war", "ccc_arousal", "ccc_sentiment", "mae_sentiment"} <= set(metrics)
    table = summary_table({"dev": metrics}, heads=heads)
    assert "CCC sentiment" in table and "WAR" in table and "CCC arousal" in table

    split = head_predictions(heads, gathered.predictions, gathered.label_ids)
    trainer = SimpleNamespace(is_world_process_zero=lambda: True)
    dataset = SimpleNamespace(utterances=[SimpleNamespace(id=f"u{i}") for i in range(6)])
    write_predictions(trainer, split, dataset, tmp_path / "predictions.csv")
    with (tmp_path / "predictions.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id", "prediction", *LABELS.values(), *ATTRIBUTES, "sentiment"]
    assert len(rows) == 7 and float(rows[1][-1]) == pytest.approx(float(outputs.sentiment[0, 0]))


def test_a_registered_head_has_its_part_in_the_pipelines_answer_and_the_cli_table(sentiment_head):
    heads = heads_of(
        {"id2label": {"0": "angry", "1": "sad"}, "attribute_names": ["arousal"], "sentiment_names": ["s"]}
    )
    scores = {"probabilities": np.array([0.25, 0.75]), "attributes": np.array([0.6]), "sentiment": np.array([0.2])}
    result = answer(heads, scores, top_k=1)
    assert result == {
        "labels": [{"label": "sad", "score": 0.75}],
        "attributes": {"arousal": pytest.approx(0.6)},
        "sentiment": {"s": pytest.approx(0.2)},
    }
    assert list(window_answer(heads, scores)) == ["scores", "attributes", "sentiment"]
    table = format_table(
        [{"file": "a.wav", "scores": result["labels"], "attributes": {"arousal": 0.6}, "sentiment": {"s": 0.2}}], False
    )
    header, line = table.splitlines()
    assert header.split("|")[-1].strip() == "sentiment" and line.endswith("s 0.200")


def test_answers_keep_their_shape_per_model():
    """Classes only: the ranked labels alone; with attributes: `{"labels", "attributes"}`, `"labels": []` without
    classes; a window always has `"scores"`."""
    classes = heads_named(classes=["angry", "sad"])
    assert answer(classes, {"probabilities": np.array([0.9, 0.1])}) == [
        {"label": "angry", "score": 0.9},
        {"label": "sad", "score": pytest.approx(0.1)},
    ]
    attributes = heads_named(attributes=["arousal"])
    assert answer(attributes, {"attributes": np.array([0.3])}) == {"labels": [], "attributes": {"arousal": 0.3}}
    assert window_answer(attributes, {"attributes": np.array([0.3])}) == {"scores": [], "attributes": {"arousal": 0.3}}
    assert unpack_predictions(classes, np.zeros((2, 2)), np.zeros(2))[0][0] is classes[0]
