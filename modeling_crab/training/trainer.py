"""`CrabTrainer`: `Trainer` with hierarchical learning rates, the released schedule and loss scaling, and the logged
terms of the Crab objective.

The objective is the model's own: `CrabForEmotionClassification.forward(labels=...)` returns class-weighted CE +
alpha * MLCS (`losses.crab_objective`; class weights, alpha, tau, the loss type and the cross-rank gather of the CSL
embeddings are read from `model.config`). Its terms (`ce_loss`, `mlcs_loss`, each output head's) are logged next to
`loss`, averaged over the same window.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, PredictionOutput

from ..export import carry_code
from ..heads import HEADS, heads_of, pack_predictions
from ..losses import TEACHER_PREFIX, distillation_objective, objective_terms
from ..modeling_crab import CrabPreTrainedModel
from .arguments import SettingError
from .checkpoints import STAGING_FOLDER, publish_checkpoint, rotate_checkpoints
from .collator import EpochIndexSampler, EpochSeededLengthGroupedSampler, EpochSeededRandomSampler
from .precision import Bf16Weights, bf16_weights_problems

logger = logging.getLogger(__name__)


def compute_class_weights(label_ids: list[int], num_labels: int) -> torch.Tensor:
    """w_j = N / (C * N_j) from the training labels.

    A class absent from training gets weight 0: no training sample has that target, so the weight never enters the
    loss; the class cannot be learned and counts as recall 0 in UAR. A warning names it.
    """
    counts = torch.bincount(torch.as_tensor(label_ids, dtype=torch.long), minlength=num_labels).double()
    if len(counts) > num_labels:
        raise ValueError(f"label ids go up to {len(counts) - 1} but num_labels={num_labels}; check label2id")
    weights = torch.where(counts > 0, counts.sum() / (num_labels * counts.clamp(min=1)), torch.zeros_like(counts))
    absent = (counts == 0).nonzero().flatten().tolist()
    if absent:
        logger.warning(f"classes {absent} have no training examples: class weight 0, they count as 0 in UAR")
    return weights.float()


class EpochCosine:
    """The factor `LambdaLR` applies to one parameter group: torch's `CosineAnnealingLR(T_max=epochs, eta_min=floor)`
    in closed form, stepped once per epoch (`steps_per_epoch` optimizer steps) instead of once per step."""

    def __init__(self, base_lr: float, floor: float, epochs: float, steps_per_epoch: int):
        self.base_lr, self.floor, self.epochs, self.steps_per_epoch = base_lr, floor, epochs, steps_per_epoch

    def __call__(self, step: int) -> float:
        if self.base_lr == 0:
            return 1.0
        epoch = step // self.steps_per_epoch
        lr = self.floor + (self.base_lr - self.floor) * (1 + math.cos(math.pi * epoch / self.epochs)) / 2
        return lr / self.base_lr


class CrabTrainer(Trainer):
    """`Trainer` with the Crab objective.

    Args (besides `Trainer`'s):
        encoder_learning_rate: learning rate of both encoders; None: `args.learning_rate`, as the head (and CSL
            legs). `train.py` holds the recipes' values.
        freeze_feature_encoder: freeze the speech encoder's CNN (the paper's recipe; the demo's random tiny CNN
            has to learn, so it passes False).
        decay_every_parameter: weight decay on every tensor, biases and LayerNorm weights included (torch AdamW's
            default, the released code); False exempts them (Trainer's convention).
        epoch_cosine_floors: `(head floor, encoder floor)`: the released schedule, torch's
            `CosineAnnealingLR(T_max=num_train_epochs, eta_min=floor)` per parameter group, stepped once per epoch
            (`lr_scheduler_type` and warmup are not used). None: `args.lr_scheduler_type`, stepped every step.
        full_accumulation_divisor: divide each micro-batch's loss by `gradient_accumulation_steps` also in an
            epoch's last, shorter accumulation (the released code); False divides by the micro-batches that step
            has (Trainer's default).
        bf16_weights: keep bf16 copies of the encoders' linear weights between optimizer steps (`precision.Bf16Weights`)
            instead of autocast casting them in every micro-batch; needs `args.bf16`.

    The loss is the model's (`model(**inputs)` with `labels`). Evaluation returns logits only (no CSL embeddings)
    and the class-weighted CE as `eval_loss`.
    """

    accepts_loss_kwargs = False  # the loss is a per-micro-batch mean; Trainer divides it by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args,
        encoder_learning_rate: float | None = None,
        freeze_feature_encoder: bool = True,
        decay_every_parameter: bool = False,
        epoch_cosine_floors: tuple[float, float] | None = None,
        full_accumulation_divisor: bool = False,
        bf16_weights: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if isinstance(self.model, CrabPreTrainedModel):  # each checkpoint-N loads as an export does
            carry_code(self.model)
        self.decay_every_parameter = decay_every_parameter
        self.epoch_cosine_floors = epoch_cosine_floors
        self.full_accumulation_divisor = full_accumulation_divisor
        self._update_steps_per_epoch: int | None = None
        self.model_accepts_loss_kwargs = False  # Crab's forward takes no loss kwargs; explicit for the Trainer
        self.encoder_learning_rate = (
            self.args.learning_rate if encoder_learning_rate is None else encoder_learning_rate
        )
        if freeze_feature_encoder:
            self.model.freeze_feature_encoder()
        self.bf16_weights = self._keep_bf16_weights() if bf16_weights else None
        self._component_sums: dict[str, torch.Tensor] = {}
        self._component_steps = 0

    # ---- loss --------------------------------------------------------------------------------------------------

    def compute_loss(self, model: nn.Module, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        """The model's own objective (`model(**inputs)` with labels); its terms are kept for `log`. A batch with a
        teacher's outputs (`teacher_logits`, ...: distillation, `distill.py`) is the student's forward without labels
        scored by `losses.distillation_objective`, the labels where a row has them included."""
        teacher = {key: inputs.pop(key) for key in list(inputs) if key.startswith(TEACHER_PREFIX)}
        if not teacher and not any(kind.label_key in inputs for kind in HEADS):
            raise ValueError(
                "CrabTrainer needs 'labels' (or, for a model with attributes, 'attribute_labels') in every training "
                "batch; check the manifest's label and attribute columns"
            )
        if teacher:
            labels = {kind.label_key: inputs.pop(kind.label_key, None) for kind in HEADS}
            outputs = model(**inputs)
            objective = distillation_objective(outputs, teacher, labels, getattr(model, "module", model).config)
            loss, terms = objective.loss, objective.terms
        else:
            outputs = model(**inputs)
            loss, terms = outputs.loss, {name: getattr(outputs, name, None) for name in objective_terms()}
        if model.training:
            self._accumulate_components(**terms)
            if self.full_accumulation_divisor:  # Trainer then divides by this step's micro-batches
                loss = loss * (self.current_gradient_accumulation_steps / self.args.gradient_accumulation_steps)
        return (loss, outputs) if return_outputs else loss

    def _accumulate_components(self, **components: torch.Tensor) -> None:
        for name, value in components.items():
            if value is None:  # no such term in this model or batch
                continue
            value = value.detach().float()
            self._component_sums[name] = self._component_sums.get(name, torch.zeros_like(value)) + value
        self._component_steps += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the objective's terms (`ce_loss`, `mlcs_loss`, `attribute_loss`), averaged over the same micro-batches
        (and ranks) as `loss`."""
        if "loss" in logs and self._component_steps:
            for name, total in self._component_sums.items():
                mean = total / self._component_steps
                if self.args.world_size > 1:
                    mean = self.accelerator.reduce(mean, reduction="mean")
                logs[name] = mean.item()
            self._component_sums, self._component_steps = {}, 0
        super().log(logs, start_time)

    # ---- evaluation --------------------------------------------------------------------------------------------

    def prediction_step(self, model: nn.Module, inputs: dict, prediction_loss_only: bool, ignore_keys=None):
        """(loss without MLCS, predictions, labels) in `heads.pack_predictions`' layout: logits (B, C) and labels for
        a model with classes only, else one entry per output head (`metrics.build_compute_metrics` reads both). CSL
        embeddings never reach the predictions."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            outputs = model(**inputs, output_csl_embeddings=False)  # with labels: loss = the weighted CE alone
        loss = None if outputs.loss is None else outputs.loss.detach()
        if prediction_loss_only:
            return loss, None, None
        return (loss, *pack_predictions(heads_of(getattr(model, "module", model).config), outputs, inputs))

    # ---- optimisation ------------------------------------------------------------------------------------------

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """AdamW-style optimiser (`args.optim`) with four groups: {head, encoders} x {decay, no decay}.

        Head: `args.learning_rate`; encoders: `encoder_learning_rate`; weight decay `args.weight_decay`, except on
        biases and LayerNorm weights unless `decay_every_parameter`. Frozen parameters (the CNN feature encoder) are
        left out. The schedule (`create_scheduler`) scales each group's learning rate.
        """
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        if self.decay_every_parameter:
            decay_names = {name for name, _ in opt_model.named_parameters()}
        else:
            decay_names = set(self.get_decay_parameter_names(opt_model))
        encoder_ids = {id(parameter) for parameter in opt_model.encoder_parameters()}
        groups: dict[tuple[str, bool], dict] = {}
        for name, parameter in opt_model.named_parameters():
            if not parameter.requires_grad:
                continue
            part = "encoders" if id(parameter) in encoder_ids else "head"
            decays = name in decay_names
            group = groups.setdefault(
                (part, decays),
                {
                    "params": [],
                    "lr": self.encoder_learning_rate if part == "encoders" else self.args.learning_rate,
                    "weight_decay": self.args.weight_decay if decays else 0.0,
                    "group_name": f"{part}{'' if decays else '_no_decay'}",
                },
            )
            group["params"].append(parameter)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        unsupported = {"params", "model", "optimizer_dict"} & set(optimizer_kwargs)
        if unsupported:
            raise ValueError(f"optim='{self.args.optim}' builds its own parameter groups; use an AdamW optim")
        self.optimizer = optimizer_cls(list(groups.values()), **optimizer_kwargs)
        if self.bf16_weights is not None:
            self.bf16_weights.attach(self.optimizer)  # the copies are recast after each step
        return self.optimizer

    def _keep_bf16_weights(self) -> Bf16Weights:
        problems = bf16_weights_problems(self.args)
        if problems:
            raise SettingError(problems[0])
        crab = getattr(self.model, "crab", self.model)
        weights = Bf16Weights([crab.audio_encoder, crab.text_encoder])
        if self.optimizer is not None:  # given to the Trainer: `create_optimizer` keeps it
            weights.attach(self.optimizer)
        return weights

    def set_initial_training_values(self, args, dataloader, *rest):
        values = super().set_initial_training_values(args, dataloader, *rest)
        self._update_steps_per_epoch = values[1]  # (epochs, update steps per epoch, ...)
        return values

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """`epoch_cosine_floors`: each group follows `CosineAnnealingLR(T_max=num_train_epochs)` with its floor
        (head groups the first, encoder groups the second), constant within an epoch. Else Trainer's schedule."""
        if self.epoch_cosine_floors is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = self.optimizer if optimizer is None else optimizer
        if self._update_steps_per_epoch is None:
            raise RuntimeError("epoch_cosine_floors needs the number of steps per epoch; call train() first")
        head_floor, encoder_floor = self.epoch_cosine_floors
        factors = [
            EpochCosine(
                group["lr"],
                encoder_floor if group.get("group_name", "").startswith("encoders") else head_floor,
                self.args.num_train_epochs,
                self._update_steps_per_epoch,
            )
            for group in optimizer.param_groups
        ]
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    # ---- checkpoints -------------------------------------------------------------------------------------------

    def _save_checkpoint(self, model: nn.Module, trial) -> None:
        """`Trainer`'s checkpoint, written in `output_dir/.saving/` and renamed into place when whole: a kill while
        saving leaves no `checkpoint-N` at all (the previous ones, and the best, are untouched). Rotation renames a
        checkpoint aside before deleting it (`checkpoints.rotate_checkpoints`)."""
        run_dir = Path(self._get_output_dir(trial=trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = run_dir / STAGING_FOLDER
        if self.args.should_save:
            shutil.rmtree(staging / name, ignore_errors=True)  # what a killed save left
        save_total_limit, push_to_hub = self.args.save_total_limit, self.args.push_to_hub
        self._get_output_dir = lambda trial=None: str(staging)  # Trainer writes staging/checkpoint-N
        # rotation and the Hub upload happen here, once the checkpoint is in place (an upload runs in the background)
        self.args.save_total_limit, self.args.push_to_hub = None, False
        try:
            super()._save_checkpoint(model, trial)
        finally:
            del self._get_output_dir
            self.args.save_total_limit, self.args.push_to_hub = save_total_limit, push_to_hub
        best = self.state.best_model_checkpoint
        if best is not None and Path(best).parent == staging:
            self.state.best_model_checkpoint = str(run_dir / Path(best).name)
        if self.args.should_save:
            if best != self.state.best_model_checkpoint:  # the staged trainer_state.json names the staging folder
                self.state.save_to_json(os.path.join(staging / name, "trainer_state.json"))
            publish_checkpoint(staging / name, run_dir / name)
            if not any(staging.iterdir()):
                staging.rmdir()
            rotate_checkpoints(run_dir, save_total_limit, self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()
        if push_to_hub:
            self._push_from_checkpoint(str(run_dir / name))

    # ---- batching ----------------------------------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset=None):
        """`train_sampling_strategy="group_by_length"` uses the clip lengths the dataset already knows (a
        `lengths` attribute, from the manifest scan) instead of reading every clip to measure it. A dataset with
        waveform augmentation (an `augmentation` attribute) gets `(epoch, index)` pairs (`EpochIndexSampler`), in
        the order it would get without augmentation."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        lengths = getattr(dataset, "lengths", None)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        strategy = self.args.train_sampling_strategy
        if strategy == "group_by_length" and lengths:
            batch_size = self.args.train_batch_size * self.args.gradient_accumulation_steps
            sampler = EpochSeededLengthGroupedSampler(batch_size, lengths, seed=seed)
        elif strategy == "random" and getattr(dataset, "augmentation", None) is not None:
            sampler = EpochSeededRandomSampler(len(dataset), seed=seed)  # accelerate's shuffle, which a wrapper hides
        else:
            sampler = super()._get_train_sampler(train_dataset)
        if getattr(dataset, "augmentation", None) is not None:
            return EpochIndexSampler(sampler)
        return sampler

    def _get_eval_sampler(self, eval_dataset):
        lengths = getattr(eval_dataset, "lengths", None)
        if self.args.train_sampling_strategy == "group_by_length" and lengths:
            return EpochSeededLengthGroupedSampler(self.args.eval_batch_size, lengths, seed=self.args.seed)
        return super()._get_eval_sampler(eval_dataset)

    def predict(
        self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test", batch_size: int | None = None
    ) -> PredictionOutput:
        """`Trainer.predict` with the rows of `predictions` and `label_ids` in the dataset's order: evaluation
        batches clips of similar length together, which reorders them. `batch_size` replaces
        `per_device_eval_batch_size` for this call (1: every clip alone, without padding, the released test
        protocol)."""
        if batch_size is not None:
            saved = self.args.per_device_eval_batch_size
            self.args.per_device_eval_batch_size = batch_size
            try:
                return self.predict(test_dataset, ignore_keys, metric_key_prefix)
            finally:
                self.args.per_device_eval_batch_size = saved
        output = super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        sampler = self._get_eval_sampler(test_dataset)
        if not isinstance(sampler, EpochSeededLengthGroupedSampler):
            return output
        order = np.fromiter(iter(sampler), dtype=np.int64)  # the same order again: the seed is fixed
        rows = len(output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions)
        if len(order) != rows:
            raise RuntimeError(f"{rows} predictions for {len(order)} items; cannot restore order")
        restore = np.empty_like(order)
        restore[order] = np.arange(len(order))

        def reordered(arrays):
            if arrays is None or not isinstance(arrays, (tuple, list)):
                return None if arrays is None else arrays[restore]
            return type(arrays)(reordered(array) for array in arrays)

        return PredictionOutput(reordered(output.predictions), reordered(output.label_ids), output.metrics)


__all__ = ["CrabTrainer", "EpochCosine", "compute_class_weights"]
