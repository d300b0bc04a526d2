"""Model selection: `--recipe release` keeps the dev epoch with the best macro-F1 as the released code computes it
(sklearn's default `f1_score(average="macro")`, over the classes present in the labels or the predictions); the
default recipe keeps the macro-F1 over the whole label set (SPEC §4: an absent class counts 0). On a dev split that
lacks a class the two differ, and so can the epoch kept."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from training_helpers import LABELS, train_main, write_corpus

from modeling_crab.training.arguments import parse_arguments
from modeling_crab.training.metrics import classification_metrics, summary_table

# a dev split without "sad" (class 3), one clip of each other class; the "neutral" clip (class 2) is predicted "sad"
# after the first epoch and "happy" after the second, the others right
DEV_TRUE = [0, 1, 2]
PREDICTED = {1: [0, 1, 3], 2: [0, 1, 1]}
# all classes: epoch 1 (1 + 1 + 0 + 0) / 4 = 0.5 > epoch 2 (1 + 2/3 + 0 + 0) / 4; present classes: epoch 1 has all
# four (0.5), epoch 2 only three, (1 + 2/3 + 0) / 3 = 0.556: the recipes keep different epochs


def test_the_present_classes_macro_f1_is_sklearns_default():
    for predicted in PREDICTED.values():
        metrics = classification_metrics(DEV_TRUE, predicted, LABELS)
        assert metrics["macro_f1_present"] == pytest.approx(f1_score(DEV_TRUE, predicted, average="macro"))
        everything = f1_score(DEV_TRUE, predicted, labels=range(len(LABELS)), average="macro", zero_division=0)
        assert metrics["macro_f1"] == pytest.approx(everything)
    first, second = (classification_metrics(DEV_TRUE, PREDICTED[epoch], LABELS) for epoch in (1, 2))
    assert first["macro_f1"] > second["macro_f1"] and first["macro_f1_present"] < second["macro_f1_present"]
    assert second["macro_f1"] == pytest.approx((1 + 2 / 3) / 4)
    assert second["macro_f1_present"] == pytest.approx((1 + 2 / 3) / 3)


def test_the_summary_shows_the_present_classes_macro_f1_only_where_it_differs():
    every_class = classification_metrics([0, 1, 2, 3], [0, 1, 2, 2], LABELS)
    assert every_class["macro_f1_present"] == every_class["macro_f1"]
    assert "present classes" not in summary_table({"dev": every_class}, LABELS)
    lacking = classification_metrics(DEV_TRUE, PREDICTED[2], LABELS)
    table = summary_table({"dev": lacking, "test": every_class}, LABELS)
    assert "macro-F1, present classes" in table and f"{lacking['macro_f1_present']:.4f}" in table


@pytest.mark.parametrize("recipe, metric", [("crab", "macro_f1"), ("release", "macro_f1_present")])
def test_each_recipe_names_its_selection_metric(recipe, metric):
    training_args = parse_arguments(["--manifest", "m.csv", "--recipe", recipe]).training
    assert training_args.metric_for_best_model == metric and training_args.greater_is_better
    argv = ["--manifest", "m.csv", "--recipe", recipe, "--metric_for_best_model", "uar"]
    assert parse_arguments(argv).training.metric_for_best_model == "uar"  # a flag still chooses another


@pytest.mark.parametrize("recipe, kept_epoch", [("crab", 1), ("release", 2)])
def test_the_kept_epoch_follows_the_recipes_macro_f1(tmp_path, monkeypatch, recipe, kept_epoch):
    """Two epochs of one step each, with scripted dev predictions: the default recipe keeps epoch 1 (better over all
    classes), the release epoch 2 (better over the present ones), with sklearn's default macro-F1 as its best metric.
    eval_results.json reports both macro-F1s, each under its own name."""
    from modeling_crab.training import CrabTrainer

    original = CrabTrainer.prediction_step

    def scripted(self, *args, **kwargs):
        loss, logits, labels = original(self, *args, **kwargs)
        predicted = labels.clone()
        predicted[labels == 2] = PREDICTED[min(2, max(1, round(self.state.epoch)))][2]
        return loss, torch.nn.functional.one_hot(predicted, len(LABELS)).float(), labels

    monkeypatch.setattr(CrabTrainer, "prediction_step", scripted)
    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    with manifest.open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["id"] != "dev_sad_0"]
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--tiny", "--recipe", recipe, "--output_dir", str(out)]
    argv += ["--num_train_epochs", "2", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1"]
    argv += ["--max_duration_s", "0.6", "--disable_tqdm", "True"]
    train_main(argv)

    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["best_global_step"] == kept_epoch  # one step per epoch
    expected = classification_metrics(DEV_TRUE, PREDICTED[kept_epoch], LABELS)
    key = "macro_f1" if recipe == "crab" else "macro_f1_present"
    assert state["best_metric"] == pytest.approx(expected[key])
    if recipe == "release":
        assert state["best_metric"] == pytest.approx(f1_score(DEV_TRUE, PREDICTED[2], average="macro"))
    evaluations = [entry for entry in state["log_history"] if "eval_macro_f1" in entry]
    assert [entry["epoch"] for entry in evaluations] == [1, 2]
    for entry in evaluations:
        predicted = PREDICTED[round(entry["epoch"])]
        assert entry["eval_macro_f1_present"] == pytest.approx(f1_score(DEV_TRUE, predicted, average="macro"))
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_macro_f1"] != pytest.approx(results["eval_macro_f1_present"])
    assert np.isfinite([results["eval_macro_f1"], results["eval_macro_f1_present"]]).all()
