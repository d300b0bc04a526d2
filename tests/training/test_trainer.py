"""CrabTrainer: the objective, class weights, learning-rate groups, evaluation outputs and a short run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from training_helpers import LABELS, tiny_datasets, write_corpus
from transformers import TrainingArguments

from modeling_crab import CrabForEmotionClassification
from modeling_crab.losses import mlcs_loss
from modeling_crab.training import CrabDataCollator, CrabTrainer, build_compute_metrics, compute_class_weights


def _trainer(tmp_path, config, processor, train, dev=None, **overrides) -> CrabTrainer:
    torch.manual_seed(0)
    args = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-3,
        weight_decay=0.01,
        lr_scheduler_type="cosine",
        max_steps=4,
        logging_steps=2,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        remove_unused_columns=False,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        train_sampling_strategy="group_by_length",
    )
    args.update(overrides)
    config.class_weights = compute_class_weights(train.label_ids, len(LABELS)).tolist()  # as train.py
    return CrabTrainer(
        model=CrabForEmotionClassification(config),
        args=TrainingArguments(**args),
        train_dataset=train,
        eval_dataset=dev,
        data_collator=CrabDataCollator(processor),
        processing_class=processor,
        compute_metrics=build_compute_metrics(LABELS),
        encoder_learning_rate=1e-4,
    )


@pytest.fixture
def corpus(tmp_path):
    return tiny_datasets(write_corpus(tmp_path / "corpus", {"train": 2, "dev": 1}), max_duration_s=0.6)


def test_class_weights_are_inverse_frequencies_and_zero_for_absent_classes():
    weights = compute_class_weights([0, 0, 0, 1], num_labels=3)  # N = 4, C = 3
    assert weights.tolist() == pytest.approx([4 / (3 * 3), 4 / (3 * 1), 0.0])


def test_optimizer_has_head_and_encoder_groups_with_their_learning_rates(
    tmp_path, tiny_config, tiny_processor, corpus
):
    trainer = _trainer(tmp_path, tiny_config, tiny_processor, corpus[0])
    optimizer = trainer.create_optimizer()
    groups = {group["group_name"]: group for group in optimizer.param_groups}
    assert {name: (g["lr"], g["weight_decay"]) for name, g in groups.items()} == {
        "head": (1e-3, 0.01),
        "head_no_decay": (1e-3, 0.0),
        "encoders": (1e-4, 0.01),
        "encoders_no_decay": (1e-4, 0.0),
    }
    model = trainer.model
    in_group = {id(p): name for name, g in groups.items() for p in g["params"]}
    names = dict(model.named_parameters())
    assert all(id(p) not in in_group for p in model.crab.audio_encoder.feature_extractor.parameters())  # frozen CNN
    trainable = [n for n, p in names.items() if p.requires_grad]
    assert sorted(in_group) == sorted(id(names[n]) for n in trainable)  # every trainable parameter, once
    encoder_ids = {id(p) for p in model.encoder_parameters()}
    for name in trainable:
        group = in_group[id(names[name])]
        assert group.startswith("encoders") == (id(names[name]) in encoder_ids), name
        no_decay = "bias" in name.rsplit(".", 1)[-1] or "layer_norm" in name or "LayerNorm" in name
        assert group.endswith("_no_decay") == no_decay, name


def test_loss_is_weighted_ce_plus_alpha_times_mlcs(tmp_path, tiny_config, tiny_processor, corpus):
    trainer = _trainer(tmp_path, tiny_config, tiny_processor, corpus[0])
    batch = CrabDataCollator(tiny_processor)([corpus[0][i] for i in range(6)])
    trainer.model.train()
    loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    labels = batch["labels"]
    weights = compute_class_weights(corpus[0].label_ids, len(LABELS))
    expected = F.cross_entropy(outputs.logits, labels, weight=weights) + 2.0 * mlcs_loss(
        outputs.csl_embeddings, labels, temperature=0.1
    )
    assert set(outputs.csl_embeddings) == set(tiny_config.mlcs_taps)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    trainer.compute_loss(trainer.model, batch)
    trainer.log({"loss": 1.0})
    logged = trainer.state.log_history[-1]
    assert {"ce_loss", "mlcs_loss"} <= set(logged)  # averaged over the two micro-batches since the last log


def test_predictions_are_logits_only(tmp_path, tiny_config, tiny_processor, corpus):
    train, dev, _ = corpus
    trainer = _trainer(tmp_path, tiny_config, tiny_processor, train, dev)
    prediction = trainer.predict(dev)
    assert prediction.predictions.shape == (len(dev), len(LABELS))  # no CSL embeddings riding along
    assert {"test_loss", "test_war", "test_uar", "test_macro_f1", "test_weighted_f1"} <= set(prediction.metrics)


def test_a_short_run_lowers_the_loss(tmp_path, tiny_config, tiny_processor, corpus):
    train = corpus[0]
    trainer = _trainer(tmp_path, tiny_config, tiny_processor, train, max_steps=12, learning_rate=3e-3)
    before = trainer.evaluate(train)["eval_loss"]
    trainer.train()
    after = trainer.evaluate(train)["eval_loss"]
    assert after < 0.9 * before
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all({"ce_loss", "mlcs_loss"} <= set(entry) for entry in logged)
