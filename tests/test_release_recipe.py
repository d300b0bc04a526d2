"""`--recipe release` against the released training loop (SPEC §3), row by row, on one tiny `train.py` run; the
default recipe where it stays as it was; and the exported model computing what the trainer evaluated."""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict

import numpy as np
import pytest
import torch
from torch import nn
from training_helpers import LABELS, WORDS, train_main, write_corpus

import modeling_crab.training.arguments as arguments_module
from modeling_crab import CrabConfig, CrabForEmotionClassification, CrabProcessor
from modeling_crab.training import CrabTrainer
from modeling_crab.training.arguments import DERIVED, machine_defaults, parse_arguments, preset_defaults
from modeling_crab.training.run import build_model

EPOCHS, HEAD_LR, ENCODER_LR = 3, 1e-3, 1e-4
MICRO_BATCH, ACCUMULATION = 3, 2  # 8 training clips: micro-batches of 3, 3, 2, so an epoch ends on a short step


@pytest.fixture(scope="module")
def release_run(tmp_path_factory):
    """One release-recipe run of train.py (tiny encoders, fake corpus) with every optimizer step, training batch,
    evaluation batch, clipping call and sampler recorded."""
    tmp = tmp_path_factory.mktemp("release")
    corpus = tmp / "corpus"
    manifest = write_corpus(corpus, {"train": 2, "dev": 1, "test": 1})
    record = defaultdict(list)
    patch = pytest.MonkeyPatch()

    def wrap(name, before):
        original = getattr(CrabTrainer, name)

        def wrapper(self, *args, **kwargs):
            before(self, *args, **kwargs)
            return original(self, *args, **kwargs)

        patch.setattr(CrabTrainer, name, wrapper)

    def training_step(trainer, model, inputs, *rest, **kwargs):
        record["trainer"] = [trainer]
        record["train_text_lengths"].append(inputs["input_ids"].shape[1])
        record["train_batch_sizes"].append(inputs["input_ids"].shape[0])
        groups = {group["group_name"]: group["lr"] for group in trainer.optimizer.param_groups}
        record["lrs"].append((trainer.state.global_step, groups))

    def prediction_step(trainer, model, inputs, *rest, **kwargs):
        record["eval_batches"].append((trainer.args.per_device_eval_batch_size, tuple(inputs["input_ids"].shape)))

    wrap("training_step", training_step)
    wrap("prediction_step", prediction_step)
    wrap("_clip_grad_norm", lambda trainer, model: record["clipped"].append(True))
    original_sampler = CrabTrainer._get_train_sampler

    def sampler(self, *args, **kwargs):
        chosen = original_sampler(self, *args, **kwargs)
        record["samplers"].append(type(chosen).__name__)
        return chosen

    patch.setattr(CrabTrainer, "_get_train_sampler", sampler)
    out = tmp / "out"
    argv = ["--manifest", str(manifest), "--tiny", "--recipe", "release", "--output_dir", str(out)]
    argv += ["--num_train_epochs", str(EPOCHS), "--learning_rate", str(HEAD_LR), "--encoder_learning_rate"]
    argv += [str(ENCODER_LR), "--per_device_train_batch_size", str(MICRO_BATCH), "--gradient_accumulation_steps"]
    argv += [str(ACCUMULATION), "--per_device_eval_batch_size", "1", "--disable_tqdm", "True", "--seed", "3"]
    argv += ["--weight_decay", "0.01"]  # the release's (torch AdamW's default), which --tiny's settings raise
    try:
        results = train_main(argv)
    finally:
        patch.undo()
    return {"results": results, "out": out, "corpus": corpus, "clipped": [], **record}


def test_learning_rates_follow_cosine_annealing_per_epoch_with_the_floors(release_run):
    """Each group's lr in every step of epoch e is torch's CosineAnnealingLR(T_max=epochs, eta_min) after e
    scheduler steps: 1e-6 for the head, 1e-7 for both encoders."""
    steps_per_epoch = 2  # ceil(3 micro-batches / 2)
    for name, base, floor in (("head", HEAD_LR, 1e-6), ("encoders", ENCODER_LR, 1e-7)):
        reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=EPOCHS, eta_min=floor)
        expected = []
        for _ in range(EPOCHS):
            expected.append(reference.param_groups[0]["lr"])
            reference.step()
            schedule.step()
        seen = {step: groups[name] for step, groups in release_run["lrs"]}
        assert sorted(seen) == list(range(EPOCHS * steps_per_epoch))
        for step, lr in seen.items():
            assert lr == pytest.approx(expected[step // steps_per_epoch], rel=1e-6, abs=0), (name, step)
    assert expected[-1] > floor  # T_max = epochs: the last epoch is not yet at the floor


def test_every_parameter_is_decayed(release_run):
    trainer = release_run["trainer"][0]
    groups = trainer.optimizer.param_groups
    assert {group["group_name"] for group in groups} == {"head", "encoders"}
    assert all(group["weight_decay"] == 0.01 for group in groups)
    optimised = {id(p) for group in groups for p in group["params"]}
    trainable = [(name, p) for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert [name for name, p in trainable if id(p) not in optimised] == []
    assert any(name.endswith("bias") for name, _ in trainable)  # biases and norms are among them


def test_no_gradient_clipping(release_run):
    assert release_run["trainer"][0].args.max_grad_norm == 0.0
    assert release_run["clipped"] == [] and len(release_run["lrs"]) == EPOCHS * 3  # 3 micro-batches


def test_random_batches(release_run):
    assert set(release_run["samplers"]) == {"RandomSampler"}
    assert release_run["train_batch_sizes"] == [3, 3, 2] * EPOCHS


def test_text_is_padded_to_128_in_training_dev_and_test(release_run):
    assert set(release_run["train_text_lengths"]) == {128}
    assert {shape[1] for _, shape in release_run["eval_batches"]} == {128}
    processor = CrabProcessor.from_pretrained(release_run["out"] / "inference")
    assert processor.text_padding == "max_length" and processor.max_text_length == 128


def test_the_waveform_is_normalised_by_the_release_statistics(release_run):
    """The release's statistics (`release_waveform_stats`: whole training files, std + 1e-6) travel with the
    exported processor."""
    from modeling_crab.manifest import load_manifest
    from modeling_crab.training.data import release_waveform_stats

    training = [u for u in load_manifest(release_run["corpus"] / "manifest.csv") if u.split == "train"]
    processor = CrabProcessor.from_pretrained(release_run["out"] / "inference")
    mean, std = release_waveform_stats(training)
    assert (processor.normalization, processor.waveform_mean, processor.waveform_std) == ("global", mean, std)


def test_the_test_split_is_evaluated_one_clip_at_a_time(release_run):
    """The test protocol is batch size 1 (no audio padding), whatever the dev batch size."""
    test_batches = release_run["eval_batches"][-len(LABELS) :]
    assert [size for size, _ in test_batches] == [1] * len(LABELS)
    assert all(shape[0] == 1 for _, shape in test_batches)
    results = release_run["results"]
    assert (results["recipe"], results["text_padding"], results["mask_padding"]) == ("release", "max_length", False)
    saved = json.loads((release_run["out"] / "eval_results.json").read_text())
    assert saved["recipe"] == "release" and saved["text_padding"] == "max_length"


def test_the_export_is_unmasked_and_feeds_the_audio_mask(release_run):
    config = json.loads((release_run["out"] / "inference" / "config.json").read_text())
    assert config["mask_padding"] is False and config["pass_audio_attention_mask"] is True


def _rows(path) -> dict[str, list[float]]:
    with path.open() as handle:
        return {row["id"]: [float(row[label]) for label in LABELS] for row in csv.DictReader(handle)}


@pytest.mark.parametrize("split", ["dev", "test"])
def test_the_pipeline_scores_equal_the_trainers_predictions(release_run, split):
    """Export -> pipeline (batched call, as a user would) gives each file the scores the trainer evaluated: the
    text padding, crop, normalisation and the unmasked head travel with the checkpoint, and the pipeline does not
    pad the audio of an unmasked model."""
    from transformers import pipeline

    from modeling_crab.export import PIPELINE_TASK, register_pipeline

    register_pipeline()
    classify = pipeline(PIPELINE_TASK, model=str(release_run["out"] / "inference"), trust_remote_code=True)
    lengths = []
    classify.model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    expected = _rows(release_run["out"] / f"predictions_{split}.csv")
    ids = sorted(expected)
    files = [str(release_run["corpus"] / "wavs" / f"{uid}.wav") for uid in ids]
    texts = [WORDS[uid.split("_")[1]] for uid in ids]
    outputs = classify(files, text=texts, batch_size=4)
    for uid, output in zip(ids, outputs):
        scores = {row["label"]: row["score"] for row in output}
        np.testing.assert_allclose([scores[label] for label in LABELS], expected[uid], atol=1e-5)
    assert lengths == [(1, 128)] * len(ids)


def test_the_speech_encoder_gets_the_mask_whatever_its_cnn_norm(tiny_config, tiny_batch):
    """Group-norm (base) speech encoders get no attention mask by default; the release recipe passes it always."""
    tiny_config.audio_config.feat_extract_norm = "group"
    tiny_config.audio_config.do_stable_layer_norm = False
    for passed, expected in ((None, False), (True, True)):
        tiny_config.pass_audio_attention_mask = passed
        model = CrabForEmotionClassification(tiny_config).eval()
        seen = []

        def record(module, args, kwargs, seen=seen):
            seen.append(kwargs.get("attention_mask") is not None)

        model.crab.audio_encoder.register_forward_pre_hook(record, with_kwargs=True)
        inputs = {key: value for key, value in tiny_batch.items() if key != "labels"}
        with torch.no_grad():
            model(**inputs)
        assert seen == [expected]


def test_the_default_recipe_keeps_our_training_loop():
    """Without --recipe: masked head, per-batch text padding, length-grouped batches, Trainer's cosine per step with
    clipping at 1.0, biases and norms exempt from decay, batched test, bf16 where the GPU has it."""
    arguments = parse_arguments(["--manifest", "m.csv"])
    model, head, data = arguments.model, arguments.head, arguments.data
    optimizer, training = arguments.optimization, arguments.training
    assert model.recipe == "crab" and head.mask_padding is None and head.pass_audio_attention_mask is None
    built_in = CrabConfig()  # the head switches left unset: the config's own
    assert built_in.mask_padding is True and built_in.pass_audio_attention_mask is None
    assert data.text_padding == "longest" and data.test_batch_size is None and data.empty_transcripts == "error"
    assert training.train_sampling_strategy == "group_by_length" and training.max_grad_norm == 1.0
    assert training.lr_scheduler_type == "cosine" and training.per_device_eval_batch_size == 8
    assert not (optimizer.decay_every_parameter or optimizer.epoch_cosine or optimizer.full_accumulation_divisor)


def test_the_release_recipe_trains_in_fp32_on_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: (9, 0))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert machine_defaults()["bf16"] is True  # the crab recipe's bf16 autocast on this GPU
    defaults = {**machine_defaults(), **preset_defaults(["crab", "release"])}  # presets over the machine's
    assert defaults["bf16"] is False and defaults["tf32"] is False
    gpu = machine_defaults()
    monkeypatch.undo()  # TrainingArguments would set up the faked GPU
    monkeypatch.setattr(arguments_module, "machine_defaults", lambda: gpu)
    training = parse_arguments(["--manifest", "m.csv", "--recipe", "release"]).training
    assert training.bf16 is False and training.tf32 is False


def test_an_epochs_short_last_step_divides_by_the_full_accumulation(release_run, tiny_batch):
    """The release divides every micro-batch's loss by the accumulation steps, also in an epoch's last step with
    fewer micro-batches; Trainer then divides by the micro-batches that step has, so the loss is scaled to match."""
    trainer = release_run["trainer"][0]
    model = trainer.model.train()
    inputs = {key: value for key, value in tiny_batch.items() if key != "input_ids"}
    inputs["input_ids"] = tiny_batch["input_ids"].clamp(max=model.config.text_config.vocab_size - 1)
    losses = {}
    for divisor in (True, False):
        trainer.full_accumulation_divisor, trainer.current_gradient_accumulation_steps = divisor, 1
        torch.manual_seed(0)
        np.random.seed(0)  # WavLM's time masking draws from numpy
        losses[divisor] = trainer.compute_loss(model, dict(inputs)).item()
    trainer.full_accumulation_divisor = True
    assert losses[True] == pytest.approx(losses[False] / ACCUMULATION, rel=1e-5)


def test_crab_predict_scores_equal_the_trainers_test_predictions(release_run, capsys):
    """`crab predict` (batch size 8 by default) serves the release model as the trainer evaluated the test split."""
    from modeling_crab import cli

    expected = _rows(release_run["out"] / "predictions_test.csv")
    ids = sorted(expected)
    argv = ["predict", *(str(release_run["corpus"] / "wavs" / f"{uid}.wav") for uid in ids)]
    for uid in ids:
        argv += ["--text", WORDS[uid.split("_")[1]]]
    assert cli.main([*argv, "--model", str(release_run["out"] / "inference"), "--json"]) == 0
    for uid, result in zip(ids, json.loads(capsys.readouterr().out)):
        scores = {row["label"]: row["score"] for row in result["scores"]}
        np.testing.assert_allclose([scores[label] for label in LABELS], expected[uid], atol=1e-5)


def test_the_release_head_starts_from_pytorch_defaults(release_run, tiny_config, tmp_path):
    """The release's head is a plain nn.Module: its Linear layers start Kaiming-uniform (weights and biases within
    1/sqrt(fan_in)) and its attention Xavier-uniform with zero biases. `head_init="pytorch"` (the release recipe's)
    gives that; the encoders start as with the default, and loaded weights are never re-initialised."""
    assert release_run["trainer"][0].model.config.head_init == "pytorch"
    for recipe, expected in (("crab", "normal"), ("release", "pytorch")):
        arguments = parse_arguments(["--manifest", "m.csv", "--tiny", "--recipe", recipe])
        built = build_model(arguments, list(LABELS), 100)
        assert built.config.head_init == expected
    models = {}
    for kind in ("normal", "pytorch"):
        torch.manual_seed(0)
        models[kind] = CrabForEmotionClassification(replace_config(tiny_config, head_init=kind))
    normal, pytorch = (dict(models[kind].named_modules()) for kind in ("normal", "pytorch"))
    head = [name for name in pytorch if name and "encoder" not in name]
    linears = [name for name in head if isinstance(pytorch[name], nn.Linear)]
    assert len(linears) >= 15
    for name in linears:
        layer, bound = pytorch[name], pytorch[name].weight.shape[1] ** -0.5
        assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound, name
        if layer.weight.numel() >= 4096:  # uniform on +-bound: std bound / sqrt(3)
            assert abs(layer.weight.std().item() * 3**0.5 / bound - 1) < 0.1, name
        assert abs(normal[name].weight.std().item() - 0.02) < 0.01 or layer.weight.numel() < 4096, name
        if name.endswith("attention.out_proj"):
            assert not layer.bias.any(), name  # zeroed by the attention layer, as in PyTorch
        else:
            assert layer.bias.any() and not normal[name].bias.any(), name
            if layer.bias.numel() >= 16:
                assert layer.bias.abs().max() > bound / 2, name
    # torch's nn.MultiheadAttention or a module with its parameters (in_proj_weight rows q | k | v, out_proj)
    attentions = [name for name in head if isinstance(getattr(pytorch[name], "in_proj_weight", None), nn.Parameter)]
    assert len(attentions) == 2
    for name in attentions:
        weight = pytorch[name].in_proj_weight
        xavier = (6 / sum(weight.shape)) ** 0.5
        assert weight.abs().max() <= xavier and abs(weight.std().item() * 3**0.5 / xavier - 1) < 0.1
        assert not pytorch[name].in_proj_bias.any()
    states = {kind: model.state_dict() for kind, model in models.items()}
    encoders = [key for key in states["normal"] if "_encoder." in key]
    assert encoders and all(torch.equal(states["normal"][key], states["pytorch"][key]) for key in encoders)
    models["pytorch"].save_pretrained(tmp_path / "saved")
    loaded = CrabForEmotionClassification.from_pretrained(tmp_path / "saved").state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in states["pytorch"].items())
    with pytest.raises(ValueError, match="head_init 'xavier': pass one of normal, pytorch"):
        replace_config(tiny_config, head_init="xavier")


def replace_config(config, **changes):
    return type(config).from_dict({**config.to_dict(), **changes})


# ---- what the release derives unless it is set: the encoders' lr (--learning_rate / 10) and the dev batch (4 x the
# training micro-batch). A source the user sets (config file or flag) carries its target; a target set wins.


def _parsed(argv: list[str]) -> tuple[float, float, int, int]:
    """(head lr, encoders' lr, training micro-batch, dev batch) of a run with these arguments."""
    arguments = parse_arguments(argv)
    training = arguments.training
    lrs = (training.learning_rate, arguments.optimization.encoder_learning_rate)
    return (*lrs, training.per_device_train_batch_size, training.per_device_eval_batch_size)


def _config(tmp_path, **values) -> str:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"recipe": "release", "manifest": "m.csv", **values}))
    return str(path)


def test_the_release_presets_agree_with_its_derived_settings():
    """Nothing set: the release's 1e-5 / 1e-6 and 8 / 32, which are its rules applied to the presets."""
    head, encoders, train, dev = _parsed(["--manifest", "m.csv", "--recipe", "release"])
    assert (head, encoders, train, dev) == (1e-5, 1e-6, 8, 32)
    release = argparse.Namespace(recipe="release", attributes_only=False)
    derived = {target: (source, rule) for target, (source, rule, applies) in DERIVED.items() if applies(release)}
    assert set(derived) == {"encoder_learning_rate", "per_device_eval_batch_size"}
    for target, (source, rule) in derived.items():
        assert rule({"learning_rate": head, "per_device_train_batch_size": train}[source]) == pytest.approx(
            {"encoder_learning_rate": encoders, "per_device_eval_batch_size": dev}[target]
        )


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--learning_rate", "3e-5"], (3e-5, 3e-5 / 10, 8, 32)),
        (["--learning_rate=3e-5", "--encoder_learning_rate", "2e-7"], (3e-5, 2e-7, 8, 32)),
        (["--per_device_train_batch_size", "2"], (1e-5, 1e-6, 2, 8)),
        (["--per_device_train_b", "2", "--per_device_eval_batch_size", "3"], (1e-5, 1e-6, 2, 3)),  # abbreviated
        (["--per_device_eval_batch_size", "5"], (1e-5, 1e-6, 8, 5)),
        (["--tiny", "--learning_rate", "1e-3"], (1e-3, 1e-4, 8, 32)),  # above tiny.yaml's one lr
    ],
)
def test_release_flags_carry_their_derived_settings(flags, expected):
    assert _parsed(["--manifest", "m.csv", "--recipe", "release", *flags]) == pytest.approx(expected)


@pytest.mark.parametrize(
    "written, flags, expected",
    [
        ({"per_device_train_batch_size": 4}, [], (1e-5, 1e-6, 4, 16)),  # the file's micro-batch: dev follows it
        ({"per_device_train_batch_size": 4}, ["--per_device_eval_batch_size", "6"], (1e-5, 1e-6, 4, 6)),
        ({"per_device_eval_batch_size": 6}, [], (1e-5, 1e-6, 8, 6)),  # the file's dev batch wins
        ({"per_device_eval_batch_size": 6}, ["--per_device_train_batch_size", "2"], (1e-5, 1e-6, 2, 6)),
        ({"learning_rate": 4e-5}, [], (4e-5, 4e-6, 8, 32)),
        ({"encoder_learning_rate": 5e-7}, ["--learning_rate", "4e-5"], (4e-5, 5e-7, 8, 32)),
        ({"learning_rate": 4e-5, "encoder_learning_rate": 5e-7}, [], (4e-5, 5e-7, 8, 32)),
    ],
)
def test_a_config_files_values_carry_their_derived_settings_and_win_over_them(tmp_path, written, flags, expected):
    assert _parsed([_config(tmp_path, **written), *flags]) == pytest.approx(expected)


def test_help_shows_the_derived_settings(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_arguments([_config(tmp_path, per_device_train_batch_size=4), "--learning_rate", "3e-5", "-h"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, value in (("--per_device_eval_batch_size", "16"), ("--encoder_learning_rate", str(3e-5 / 10))):
        section = text[text.index(f" {flag} ") :]
        assert f"(default: {value})" in section[: section.index("(default:") + len(value) + 12], flag


def test_the_default_recipe_derives_nothing():
    """crab: the encoders keep 1e-6 and dev its batch of 8, whatever the head's lr and the micro-batch."""
    flags = ["--learning_rate", "3e-5", "--per_device_train_batch_size", "2"]
    assert _parsed(["--manifest", "m.csv", *flags]) == pytest.approx((3e-5, 1e-6, 2, 8))
