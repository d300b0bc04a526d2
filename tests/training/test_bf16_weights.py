"""`--bf16_weights` (`training.precision.Bf16Weights`): bf16 copies of the encoders' linear weights, made once per
optimizer step, compute what bf16 autocast computes, with the fp32 parameters as the master weights.

The copies are the very casts autocast makes in every micro-batch, made earlier, and the backward pass returns each
copy's gradient to its fp32 parameter exactly as autocast's cast does; so training with them is compared with plain
autocast for equality, not within a bf16 tolerance: a difference would mean a stale copy or a lost gradient.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch.utils._python_dispatch import TorchDispatchMode
from training_helpers import LABELS, tiny_datasets, tiny_training_arguments, write_corpus

from modeling_crab import CrabForEmotionClassification
from modeling_crab.training import CrabDataCollator, CrabTrainer, compute_class_weights
from modeling_crab.training.arguments import SettingError, parse_arguments
from modeling_crab.training.precision import Bf16Weights

ROOT = Path(__file__).resolve().parents[2]


class BF16Casts(TorchDispatchMode):
    """Counts the casts to bf16 whose source is one of `parameters` (autocast's `_to_copy`, the copies' `copy_`)."""

    def __init__(self, parameters):
        super().__init__()
        self.sources = {parameter.data_ptr() for parameter in parameters}
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and kwargs.get("dtype") == torch.bfloat16:
            self.count += args[0].data_ptr() in self.sources
        elif func is torch.ops.aten.copy_.default and args[0].dtype == torch.bfloat16:
            self.count += args[1].data_ptr() in self.sources
        return func(*args, **kwargs)


def covered_parameters(model) -> list[torch.nn.Parameter]:
    """What `Bf16Weights` covers: every weight and bias of the encoders' linear layers."""
    encoders = (model.crab.audio_encoder, model.crab.text_encoder)
    modules = [module for encoder in encoders for module in encoder.modules() if isinstance(module, torch.nn.Linear)]
    return [parameter for module in modules for parameter in module.parameters(recurse=False)]


def fp32_state(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


# ---- one model, forward and backward ---------------------------------------------------------------------------


def micro_batches(model, batch, count: int, seed: int = 0) -> torch.Tensor:
    """`count` forward + backward passes under CPU bf16 autocast, gradients accumulated, each pass's dropout drawn
    from `seed`, `seed + 1`, ...; the losses."""
    losses = []
    for i in range(count):
        torch.manual_seed(seed + i)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        losses.append(loss.detach())
    return torch.stack(losses)


@pytest.fixture
def twin_models(tiny_config):
    """The same tiny model twice, the second with copies of its encoder weights."""
    torch.manual_seed(0)
    plain = CrabForEmotionClassification(tiny_config).train()
    kept = copy.deepcopy(plain)
    return plain, kept, Bf16Weights([kept.crab.audio_encoder, kept.crab.text_encoder])


def assert_same_gradients(model, reference) -> None:
    """Every parameter's gradient equal to `reference`'s, and in fp32 (None where the reference's is None)."""
    expected = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():
        assert parameter.dtype == torch.float32, name
        if expected[name].grad is None:
            assert parameter.grad is None, name
        else:
            assert parameter.grad.dtype == torch.float32, name
            torch.testing.assert_close(parameter.grad, expected[name].grad, rtol=0, atol=0, msg=name)


def test_gradients_accumulate_in_fp32_on_the_master_parameters(twin_models, tiny_batch):
    plain, kept, weights = twin_models
    reference = micro_batches(plain, tiny_batch, 2)
    losses = micro_batches(kept, tiny_batch, 2)

    torch.testing.assert_close(losses, reference, rtol=0, atol=0)
    assert_same_gradients(kept, plain)
    assert weights.casts == len(weights.slots) == len(covered_parameters(kept)) > 0  # once, not per micro-batch
    assert list(kept.state_dict()) == list(plain.state_dict())  # keys unchanged, every tensor fp32
    assert all(tensor.dtype == torch.float32 for tensor in kept.state_dict().values())
    assert not any(slot.name in slot.module.__dict__ for slot in weights.slots)  # no copy left behind


def test_autocast_casts_no_covered_weight_and_copies_follow_each_step(twin_models, tiny_batch):
    plain, kept, weights = twin_models
    counts, losses = [], []
    for model in (plain, kept):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
        if model is kept:
            weights.attach(optimizer)  # a fused step does not bump the parameters' version counters
        with BF16Casts(covered_parameters(model)) as casts:
            for step in range(2):  # 2 optimizer steps x 2 micro-batches, then one more micro-batch
                micro_batches(model, tiny_batch, 2, seed=2 * step)
                optimizer.step()
                optimizer.zero_grad()
            losses.append(micro_batches(model, tiny_batch, 1, seed=4))
        counts.append(casts.count)
    n = len(covered_parameters(kept))
    assert counts == [5 * n, 3 * n]  # autocast: every micro-batch; copies: after each optimizer step
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=0)  # the copies followed the weights
    assert_same_gradients(kept, plain)


def test_copies_follow_weights_loaded_in_place_and_stay_out_of_fp32_passes(twin_models, tiny_batch):
    plain, kept, weights = twin_models
    micro_batches(kept, tiny_batch, 1)
    with torch.no_grad():
        for parameter in plain.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    kept.load_state_dict(plain.state_dict())  # as a resumed checkpoint or load_best_model_at_end do
    torch.testing.assert_close(micro_batches(kept, tiny_batch, 1), micro_batches(plain, tiny_batch, 1))
    assert weights.casts == 2 * len(weights.slots)
    fp32_logits = []
    for model in (kept, plain):
        torch.manual_seed(0)
        with torch.no_grad():  # without autocast: the fp32 weights, no copy
            fp32_logits.append(model(**tiny_batch).logits)
    torch.testing.assert_close(*fp32_logits, rtol=0, atol=0)
    assert weights.casts == 2 * len(weights.slots)


def test_gradient_checkpointing_and_cached_encoder_outputs(twin_models, tiny_batch):
    plain, kept, weights = twin_models
    for model in (plain, kept):  # the recomputed layers cast as autocast does
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()  # transformers 5.24+
    torch.testing.assert_close(micro_batches(kept, tiny_batch, 2), micro_batches(plain, tiny_batch, 2))
    assert_same_gradients(kept, plain)

    inputs = {name: value for name, value in tiny_batch.items() if name != "labels"}
    with torch.no_grad():
        encoded = kept.crab.encode(**inputs)
    casts = weights.casts
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the frozen-encoder mode: the encoders do not run
        kept(encoder_outputs=encoded, labels=tiny_batch["labels"]).loss.backward()
    assert weights.casts == casts


@pytest.mark.slow  # compiles the tiny model's regions twice: about a minute on 2 cores
def test_compiled_regions_read_the_copies_without_recompiling(twin_models, tiny_batch):
    """`--compile_regions` (aot_eager: dynamo and AOTAutograd without code generation) with copies computes what the
    compiled model computes under autocast, and a refresh of the copies compiles nothing new."""
    from torch._dynamo.utils import counters

    plain, kept, weights = twin_models
    losses = []
    for model in (plain, kept):
        model.compile_regions(backend="aot_eager")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
        if model is kept:
            weights.attach(optimizer)
        graphs = []
        for step in range(2):
            losses.append(micro_batches(model, tiny_batch, 2, seed=2 * step))
            optimizer.step()
            optimizer.zero_grad()
            graphs.append(counters["stats"]["unique_graphs"])
        assert graphs[1] == graphs[0]  # the second step, on refreshed copies, reused the first one's graphs
    torch.testing.assert_close(torch.stack(losses[2:]), torch.stack(losses[:2]), rtol=0, atol=0)
    assert weights.casts == 2 * len(weights.slots)


# ---- CrabTrainer: 2 optimizer steps of 3 micro-batches, saved, resumed --------------------------------------------


def _trainer(output_dir, config, processor, train, bf16_weights: bool, **overrides) -> CrabTrainer:
    torch.manual_seed(0)
    args = tiny_training_arguments(
        output_dir,
        **{
            "max_steps": 2,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 3,
            "bf16": True,
            "save_strategy": "steps",
            "save_steps": 1,
            "seed": 7,
            **overrides,
        },
    )
    config.class_weights = compute_class_weights(train.label_ids, len(LABELS)).tolist()
    return CrabTrainer(
        model=CrabForEmotionClassification(config),
        args=args,
        train_dataset=train,
        data_collator=CrabDataCollator(processor),
        processing_class=processor,
        encoder_learning_rate=1e-3,
        bf16_weights=bf16_weights,
    )


def test_training_equals_bf16_autocast_and_saves_fp32_master_weights(tmp_path, tiny_config, tiny_processor):
    train, _, _ = tiny_datasets(write_corpus(tmp_path / "corpus", {"train": 3}), max_duration_s=0.6)  # 12 clips
    runs = {}
    for kept in (False, True):
        trainer = _trainer(tmp_path / f"kept-{kept}", tiny_config, tiny_processor, train, kept)
        with BF16Casts(covered_parameters(trainer.model)) as casts:
            trainer.train()
        runs[kept] = trainer, casts.count
    (plain, plain_casts), (kept, kept_casts) = runs[False], runs[True]

    n = len(kept.bf16_weights.slots)
    assert plain_casts == 6 * n and kept_casts == kept.bf16_weights.casts == 2 * n  # per micro-batch / per step
    losses = [[entry["loss"] for entry in run.state.log_history if "loss" in entry] for run in (plain, kept)]
    assert len(losses[1]) == 2 and losses[1] == losses[0]
    reference = plain.model.state_dict()
    for name, value in kept.model.state_dict().items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=0, msg=name)

    checkpoint = tmp_path / "kept-True" / "checkpoint-1"
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as saved:
        assert {saved.get_slice(key).get_dtype() for key in saved.keys()} == {"F32"}
    resumed = _trainer(tmp_path / "kept-True", tiny_config, tiny_processor, train, True)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 2
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=0, msg=name)


# ---- settings it cannot work with ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, fix",
    [
        (["--bf16", "false"], "add --bf16 true"),
        (["--bf16", "true", "--torch_compile", "true"], "--compile_regions"),
    ],
)
def test_train_py_refuses_settings_it_cannot_keep_copies_for(flags, fix, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        parse_arguments(
            ["--tiny", "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16_weights", "true", *flags]
        )
    assert exit.value.code == 2
    problems = capsys.readouterr().err.removeprefix("train.py: error: ").splitlines()
    ours = [line.strip() for line in problems if "--bf16_weights" in line]
    assert len(ours) == 1 and ours[0].startswith("--bf16_weights") and fix in ours[0]


def test_trainer_refuses_bf16_weights_without_bf16(tmp_path, tiny_config, tiny_processor):
    train, _, _ = tiny_datasets(write_corpus(tmp_path / "corpus", {"train": 1}), max_duration_s=0.6)
    with pytest.raises(SettingError, match="add --bf16 true"):
        _trainer(tmp_path / "out", tiny_config, tiny_processor, train, True, bf16=False)


# ---- DDP: two CPU processes (gloo) ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


DDP_SENTENCES = ["i hate this", "what a great day", "the bus is late", "i miss her"]


def ddp_batches(rank: int) -> tuple[list[dict], int]:
    """Rank `rank`'s two micro-batches of two utterances each, and the tokenizer's vocabulary size."""
    from transformers import Wav2Vec2FeatureExtractor

    from modeling_crab import CrabProcessor
    from modeling_crab.training.tiny import build_tiny_tokenizer

    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, return_attention_mask=True)
    tokenizer = build_tiny_tokenizer(DDP_SENTENCES, vocab_size=400)
    processor = CrabProcessor(extractor, tokenizer, max_text_length=32)
    generator = torch.Generator().manual_seed(rank)
    batches = []
    for step in range(2):
        audio = [0.1 * torch.randn(n, generator=generator).numpy() for n in (9000 + 2000 * step, 4000)]
        text = DDP_SENTENCES[step : step + 2]
        batch = processor(audio=audio, text=text, sampling_rate=16000, return_tensors="pt")
        batch["labels"] = torch.tensor([rank, 3 - rank])
        batches.append(dict(batch))
    return batches, len(tokenizer)


def ddp_model(vocab_size: int) -> CrabForEmotionClassification:
    from modeling_crab.training.tiny import tiny_crab_config

    config = tiny_crab_config(len(LABELS), vocab_size=vocab_size)
    config.audio_config.update({"mask_time_prob": 0.0, "layerdrop": 0.0})  # layerdrop 0 under DDP, as train.py
    torch.manual_seed(0)
    return CrabForEmotionClassification(config).train()


def ddp_worker(out_dir: str) -> None:
    """One rank: the DDP-wrapped tiny model with copies, two micro-batches (the first under `no_sync`); its master
    parameters' gradients go to `out_dir/rank<k>.json`."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    batches, vocab_size = ddp_batches(rank)
    model = ddp_model(vocab_size)
    weights = Bf16Weights([model.crab.audio_encoder, model.crab.text_encoder])
    wrapped = torch.nn.parallel.DistributedDataParallel(model)
    for step, batch in enumerate(batches):
        torch.manual_seed(10 * rank + step)  # the reference's dropout
        with wrapped.no_sync() if step == 0 else contextlib.nullcontext():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = wrapped(**batch).loss
            loss.backward()
    grads = {name: p.grad.flatten().tolist() for name, p in model.named_parameters() if p.grad is not None}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"grads": grads, "casts": weights.casts}))
    del wrapped  # DDP's reducer goes before its process group, not after it at exit
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow  # two processes joined by gloo
def test_ddp_all_reduces_the_master_gradients(tmp_path, alone_among_process_groups):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), __file__, str(tmp_path),
    ]  # fmt: skip
    support = ROOT / "tests" / "support"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(support)]))
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"))
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]

    # the reference: each rank's micro-batches under plain autocast in this process, on one thread as each rank (bf16
    # matrix products round differently when split over threads), gradients averaged over the ranks
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = {}
        for rank in range(2):
            batches, vocab_size = ddp_batches(rank)
            model = ddp_model(vocab_size)
            for step, batch in enumerate(batches):
                micro_batches(model, batch, 1, seed=10 * rank + step)
            for name, parameter in model.named_parameters():
                if parameter.grad is not None:
                    expected[name] = expected.get(name, 0) + parameter.grad.flatten() / 2
    finally:
        torch.set_num_threads(threads)
    for rank in ranks:
        assert rank["casts"] > 0 and set(rank["grads"]) == set(expected)
        for name, grad in rank["grads"].items():
            torch.testing.assert_close(torch.tensor(grad), expected[name], rtol=1e-6, atol=1e-9, msg=name)


if __name__ == "__main__":  # a rank of `test_ddp_all_reduces_the_master_gradients`, started by torchrun
    ddp_worker(sys.argv[1])
