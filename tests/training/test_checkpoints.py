"""Resuming from a checkpoint continues the run: same global step, same final weights as without interruption."""

from __future__ import annotations

import torch
from training_helpers import LABELS, RESUMABLE, tiny_datasets, tiny_training_arguments, write_corpus
from transformers import TrainerCallback

from modeling_crab import CrabForEmotionClassification
from modeling_crab.training import CrabDataCollator, CrabTrainer, compute_class_weights


class StopAtStep(TrainerCallback):
    """Simulates an interrupted job: training stops right after `step` (once its checkpoint is written)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def _trainer(output_dir, config, processor, train, callbacks=()) -> CrabTrainer:
    torch.manual_seed(0)
    args = tiny_training_arguments(
        output_dir,
        **RESUMABLE,
        per_device_train_batch_size=4,
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        train_sampling_strategy="group_by_length",
    )
    config.class_weights = compute_class_weights(train.label_ids, len(LABELS)).tolist()  # as train.py
    return CrabTrainer(
        model=CrabForEmotionClassification(config),
        args=args,
        train_dataset=train,
        data_collator=CrabDataCollator(processor),
        processing_class=processor,
        encoder_learning_rate=5e-4,
        callbacks=list(callbacks),
    )


def test_resume_matches_an_uninterrupted_run(tmp_path, tiny_config, tiny_processor):
    train, _, _ = tiny_datasets(write_corpus(tmp_path / "corpus", {"train": 2, "dev": 1}), max_duration_s=0.6)

    uninterrupted = _trainer(tmp_path / "full", tiny_config, tiny_processor, train)
    uninterrupted.train()

    interrupted = _trainer(tmp_path / "run", tiny_config, tiny_processor, train, [StopAtStep(3)])
    interrupted.train()
    assert interrupted.state.global_step == 3 and (tmp_path / "run" / "checkpoint-3").is_dir()

    resumed = _trainer(tmp_path / "run", tiny_config, tiny_processor, train)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    assert resumed.state.global_step == 6
    resumed_steps = [entry["step"] for entry in resumed.state.log_history if "loss" in entry]
    assert resumed_steps == [1, 2, 3, 4, 5, 6]  # the history of steps 1-3 comes back from the checkpoint

    full_losses = [entry["loss"] for entry in uninterrupted.state.log_history if "loss" in entry]
    resumed_losses = [entry["loss"] for entry in resumed.state.log_history if "loss" in entry]
    torch.testing.assert_close(torch.tensor(resumed_losses), torch.tensor(full_losses), rtol=1e-4, atol=1e-5)
    full_weights = uninterrupted.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, full_weights[name], rtol=1e-4, atol=1e-5, msg=name)


# A checkpoint saved by a CrabTrainer in a process that imported only the training modules, as train.py does (the
# package's top level, which registers the Auto classes, is never imported there).
SAVE_IN_A_TRAINING_PROCESS = """
import sys
from transformers import TrainingArguments
from modeling_crab.feature_extraction_crab import CrabFeatureExtractor
from modeling_crab.modeling_crab import CrabForEmotionClassification
from modeling_crab.processing_crab import CrabProcessor
from modeling_crab.training.tiny import build_tiny_tokenizer, tiny_crab_config
from modeling_crab.training.trainer import CrabTrainer

tokenizer = build_tiny_tokenizer(["a few words to learn", "and a few more"], vocab_size=60)
model = CrabForEmotionClassification(tiny_crab_config(2, vocab_size=len(tokenizer)))
processor = CrabProcessor(CrabFeatureExtractor(), tokenizer)
args = TrainingArguments(output_dir=sys.argv[1], use_cpu=True, report_to="none")
CrabTrainer(model=model, args=args, processing_class=processor).save_model(sys.argv[1])
"""


def test_a_checkpoint_carries_the_code_that_loads_it(tmp_path):
    """What a CrabTrainer saves (every checkpoint-N) names and holds the Crab code, as an inference export does, so
    `crab predict --model <output_dir>/checkpoint-N` and `trust_remote_code=True` load it."""
    import json
    import subprocess
    import sys

    from modeling_crab.cli import _missing_model_files
    from modeling_crab.export import AUTO_MAP

    folder = tmp_path / "checkpoint"
    done = subprocess.run(
        [sys.executable, "-c", SAVE_IN_A_TRAINING_PROCESS, str(folder)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((folder / "config.json").read_text())
    assert AUTO_MAP.items() <= config["auto_map"].items()
    assert config["custom_pipelines"]["speech-emotion-recognition"]["impl"] == "pipeline_crab.CrabEmotionPipeline"
    processor = json.loads((folder / "processor_config.json").read_text())
    assert processor["auto_map"] == {"AutoProcessor": "processing_crab.CrabProcessor"}
    assert _missing_model_files(folder) == []
