"""`train.py`: argument layering (defaults, presets, config file, CLI), validation before training, and the outputs."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from training_helpers import LABELS, WORDS, train_main, write_corpus

from modeling_crab.cli import main as crab
from modeling_crab.manifest import ManifestError, load_manifest, select_split
from modeling_crab.training.arguments import (
    ARGUMENT_GROUPS,
    build_parser,
    machine_defaults,
    parse_arguments,
    preset_defaults,
)


def test_without_a_manifest_the_demo_defaults_apply():
    arguments = parse_arguments([])
    small_model = preset_defaults(["tiny"])
    assert arguments.data.manifest is None and arguments.model.tiny
    assert arguments.training.learning_rate == small_model["learning_rate"]
    assert arguments.optimization.encoder_learning_rate == small_model["encoder_learning_rate"]
    assert arguments.training.output_dir == "outputs/demo"  # as scripts/demo.sh and the docs
    assert arguments.model.frozen_baseline and arguments.attributes == ["arousal", "valence", "dominance"]


@pytest.mark.parametrize("recipe", ["crab", "release"])
def test_tiny_on_a_manifest_gets_small_model_settings(recipe):
    """A tiny random model trained at the paper's 1e-5/1e-6 predicts one class for every clip: --tiny on a user's
    manifest gets the small-model settings of presets/tiny.yaml under either recipe (flags still override them)."""
    arguments = parse_arguments(["--manifest", "m.csv", "--tiny", "--recipe", recipe])
    assert arguments.training.output_dir == "outputs/crab"  # a manifest: not the demo's folder
    small_model = preset_defaults(["tiny"])
    assert {"learning_rate", "encoder_learning_rate", "mlcs_weight", "tiny"} <= set(small_model)
    for name, value in small_model.items():
        group = next(group for group in arguments if hasattr(group, name))
        assert getattr(group, name) == value, name
    overridden = parse_arguments(["--manifest", "m.csv", "--tiny", "--learning_rate", "1e-4"])
    assert overridden.training.learning_rate == 1e-4


def test_help_shows_the_values_the_run_uses(tmp_path, capsys):
    """`--help` after a config file and flags prints the defaults of that run: the recipe's, the file's, the flags'."""
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"recipe": "release", "manifest": "m.csv", "num_train_epochs": 7}))
    with pytest.raises(SystemExit):
        parse_arguments([str(path), "--seed", "3", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, value in [
        ("--text_padding", "max_length"),
        ("--max_grad_norm", "0.0"),
        ("--train_sampling_strategy", "random"),
        ("--num_train_epochs", "7"),
        ("--seed", "3"),
        ("--max_duration_s", "12.0"),
        ("--learning_rate", "1e-05"),
        ("--test_batch_size", "1"),
    ]:
        section = text[text.index(f" {flag} ") :]
        assert f"(default: {value})" in section[: section.index("(default:") + len(value) + 12], flag


def test_help_is_grouped_short_and_says_what_every_flag_does(capsys):
    """Seven groups as docs/training.md promises, transformers' last; the CONFIG positional in the usage, one help
    line per flag with its default once, transformers' own flags cut to their first sentence."""
    with pytest.raises(SystemExit):
        parse_arguments(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python train.py [CONFIG]")
    groups = [
        "ModelArguments (",
        "HeadArguments (",
        "DataArguments (",
        "OptimizationArguments (",
        "WaveformAugmentation (",
        "SpecAugment (",
        "TrainingArguments (",
    ]
    positions = [out.index(f"\n{group}") for group in groups]
    assert positions == sorted(positions)
    assert (
        "--output-dir" not in out and "--no_freeze_feature_encoder" not in out
    )  # aliases parse, but are not listed twice
    assert len(out.splitlines()) < 550
    parser = build_parser()
    for dataclass_type in ARGUMENT_GROUPS:
        for name in (spec.name for spec in fields(dataclass_type) if spec.init):  # flags, not internal state
            action = next(a for a in parser._actions if a.dest == name and not a.option_strings[0].startswith("--no_"))
            assert action.help and "default" not in action.help.lower(), name  # the formatter adds the default once
    assert parse_arguments(["--output-dir", "x", "--no_freeze_feature_encoder"]).training.output_dir == "x"


def test_help_prints_before_the_training_stack_is_imported():
    """`python train.py --help` stops before the model, trainer and metrics modules load (seconds instead of ten); of
    the training package it reads only the arguments, the augmentation defaults (`training/augment.py`, numpy
    alone) and how a stopped run says so (`training/failures.py`, the standard library)."""
    import subprocess
    import sys

    probe = (
        "import runpy, sys; sys.argv = ['train.py', '--help']\n"
        "try:\n    runpy.run_path('train.py', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('modeling_crab.training', 'modeling_crab.modeling_crab',"
        " 'sklearn', 'matplotlib'))))"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == (
        "['modeling_crab.training', 'modeling_crab.training.arguments', 'modeling_crab.training.augment', "
        "'modeling_crab.training.failures']"
    )


def test_the_arguments_module_imports_no_torch():
    """Parsing and checking arguments (train.py --help, a bad flag) needs no torch: `TrainingArguments`, which
    imports it, is imported when the parser is built."""
    import subprocess
    import sys

    probe = "import sys\nimport modeling_crab.training.arguments\nprint('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_with_a_manifest_the_paper_recipe_applies():
    from modeling_crab import CrabConfig

    arguments = parse_arguments(["--manifest", "m.csv"])
    model_args, data_args, training_args = arguments.model, arguments.data, arguments.training
    assert not model_args.tiny and model_args.audio_encoder == "microsoft/wavlm-large"
    assert (training_args.learning_rate, arguments.optimization.encoder_learning_rate) == (1e-5, 1e-6)
    assert training_args.weight_decay == 0.01 and training_args.lr_scheduler_type == "cosine"
    assert training_args.seed == 42 and training_args.metric_for_best_model == "macro_f1"
    assert training_args.remove_unused_columns is False and training_args.load_best_model_at_end
    # the head's switches are left as the config builds them: the paper's MLCS
    assert arguments.head.options() == {}
    built_in = CrabConfig()
    assert (built_in.mlcs_weight, built_in.mlcs_temperature, built_in.mlcs_loss) == (2.0, 0.1, "mpcl")
    assert (data_args.max_duration_s, data_args.max_text_length, data_args.normalization) == (12.0, 128, "global")


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_config_file_then_cli_overrides(tmp_path, suffix):
    values = {"manifest": "data/meld.csv", "num_train_epochs": 3, "mlcs_weight": 1.0, "mlcs_taps": ["fusion"]}
    path = tmp_path / f"meld{suffix}"
    path.write_text(json.dumps(values))  # JSON is valid YAML
    arguments = parse_arguments([str(path), "--num_train_epochs", "1"])
    assert arguments.data.manifest == "data/meld.csv" and arguments.training.num_train_epochs == 1
    assert arguments.head.options() == {"mlcs_weight": 1.0, "mlcs_taps": ["fusion"]}
    assert arguments.training.learning_rate == 1e-5  # a manifest in the file: the paper's defaults, not the demo's


def test_a_config_file_with_an_unknown_key_is_refused(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"manifest": "m.csv", "epochs": 3}))
    with pytest.raises(SystemExit) as stop:
        parse_arguments([str(path)])
    assert stop.value.code == 2
    assert f"train.py: error: config file '{path}': unknown key(s) ['epochs']" in capsys.readouterr().err


@pytest.mark.parametrize(
    "written, named",
    [
        ({"mlcs_loss": "infonce"}, "--mlcs_loss 'infonce': pass one of mpcl, supcon"),  # a head switch
        ({"classifier_dropout": 1.5}, "--classifier_dropout 1.5: pass a probability in [0, 1)"),
        ({"text_padding": "max"}, "--text_padding 'max': pass one of longest, max_length"),  # a data option
        ({"max_text_length": 1}, "--max_text_length 1: pass a whole number of tokens >= 2 (<s> and </s>)"),
        ({"noise_prob": 1.5}, "--noise_prob 1.5: pass a probability in [0, 1]"),  # an augmentation option
        ({"mask_time_prob": 2}, "--mask_time_prob 2: pass a probability in [0, 1]"),  # SpecAugment
    ],
)
def test_a_bad_value_in_a_config_file_is_refused_before_any_audio_is_read(tmp_path, capsys, written, named):
    """A config file meets no argparse `choices`: its values get the same checks as flags, one line naming the
    flag, exit status 2, before the manifest (here a file that does not exist) is opened."""
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"manifest": str(tmp_path / "no_such_manifest.csv"), "tiny": True, **written}))
    with pytest.raises(SystemExit) as stop:
        train_main([str(path), "--output_dir", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"train.py: error: {named}"], err
    assert not (tmp_path / "out").exists()


def test_max_text_length_beyond_the_text_encoder_is_one_error_line(tmp_path):
    """`python train.py` turns the check of a setting against the text encoder into `train.py: error: ...`, status
    2, without a traceback."""
    import subprocess
    import sys

    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    root = Path(__file__).resolve().parents[1]
    argv = ["--max_text_length", "100000", "--tiny", "--manifest", str(manifest), "--output_dir", str(tmp_path / "o")]
    done = subprocess.run([sys.executable, "train.py", *argv], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("train.py: error:")]
    assert len(errors) == 1 and errors[0].startswith("train.py: error: --max_text_length 100000:"), done.stderr
    assert "--max_text_length 158 or less" in errors[0]


def test_an_unset_head_switch_keeps_the_checkpoints_own_value(tmp_path, tiny_config):
    """Fine-tuning a checkpoint: a head switch the run does not set keeps the checkpoint's value (not the built-in
    one); one it sets replaces it."""
    from modeling_crab import CrabConfig, CrabForEmotionClassification
    from modeling_crab.training.run import build_model

    config = CrabConfig.from_dict({**tiny_config.to_dict(), "mlcs_temperature": 0.3, "classifier_dropout": 0.2})
    CrabForEmotionClassification(config).save_pretrained(tmp_path / "checkpoint")
    labels = list(config.id2label.values())
    vocab_size = config.text_config.vocab_size
    argv = ["--manifest", "m.csv", "--model_name_or_path", str(tmp_path / "checkpoint")]
    kept = build_model(parse_arguments(argv), labels, vocab_size)
    assert kept.config.mlcs_temperature == 0.3 and kept.config.classifier_dropout == 0.2
    changed = build_model(parse_arguments([*argv, "--mlcs_temperature", "0.5"]), labels, vocab_size)
    assert changed.config.mlcs_temperature == 0.5 and changed.config.classifier_dropout == 0.2


def test_a_run_whose_predictions_collapse_to_one_class_says_so(tmp_path, monkeypatch, capsys):
    """A model that predicts one class for every dev clip (it learned the prior only) is named in the summary."""
    from modeling_crab.training import CrabTrainer

    original = CrabTrainer.prediction_step

    def always_sad(self, *args, **kwargs):
        loss, logits, labels = original(self, *args, **kwargs)
        return loss, torch.nn.functional.one_hot(torch.full((len(logits),), 3), len(LABELS)).float(), labels

    monkeypatch.setattr(CrabTrainer, "prediction_step", always_sad)
    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(tmp_path / "out"), "--max_steps", "1"]
    train_main([*argv, "--disable_tqdm", "True"])
    summary = capsys.readouterr().out.split("Crab results")[-1]
    assert "every dev clip is predicted 'sad'" in summary and "learned the class prior only" in summary


def test_modality_dropout_is_a_flag_that_reaches_the_model(tmp_path):
    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(out), "--max_steps", "1"]
    train_main([*argv, "--modality_dropout", "0.3", "--disable_tqdm", "True"])
    assert json.loads((out / "inference" / "config.json").read_text())["modality_dropout"] == 0.3


def test_bad_rows_stop_the_run_before_the_first_step(tmp_path):
    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    lines = manifest.read_text().splitlines()
    lines[1] = lines[1].replace("wavs/", "missing/")
    lines[2] = lines[2].replace("what a great day", "")
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with pytest.raises(ManifestError) as error:
        train_main(["--manifest", str(manifest), "--tiny", "--output_dir", str(out)])
    assert "line 2" in str(error.value) and "line 3" in str(error.value)
    assert not list(out.glob("checkpoint-*")) and not (out / "trainer_state.json").exists()


def test_a_tiny_run_writes_results_figures_and_an_inference_model(tmp_path, capfd):
    from transformers.utils import logging as transformers_logging

    manifest = write_corpus(tmp_path / "corpus", {"train": 2, "dev": 1, "test": 1})
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(out), "--num_train_epochs", "2"]
    argv += ["--learning_rate", "1e-3", "--encoder_learning_rate", "1e-3", "--max_duration_s", "0.6"]
    argv += ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--disable_tqdm", "True"]
    assert transformers_logging.is_progress_bar_enabled()
    results = train_main(argv)
    # --disable_tqdm: no bar at all, not even the checkpoints' "Writing model shards"; the bars are back afterwards
    assert "it/s]" not in capfd.readouterr().err and transformers_logging.is_progress_bar_enabled()

    saved = json.loads((out / "eval_results.json").read_text())
    assert saved == results
    for key in ("war", "uar", "macro_f1", "weighted_f1"):
        assert 0.0 <= saved[f"eval_{key}"] <= 1.0 and 0.0 <= saved[f"test_{key}"] <= 1.0
    for figure in ("confusion_matrix_dev.png", "confusion_matrix_test.png", "training_curves.png"):
        assert (out / figure).stat().st_size > 1000
    from transformers import pipeline

    pipe = pipeline("speech-emotion-recognition", model=str(out / "inference"), trust_remote_code=True, device="cpu")
    wav = next((tmp_path / "corpus" / "wavs").glob("*.wav"))
    ranked = pipe(str(wav), text="i hate this")
    assert sorted(row["label"] for row in ranked) == sorted(LABELS)
    assert sum(row["score"] for row in ranked) == pytest.approx(1.0)

    # the export classifies every clip of a split, with its transcript, through the pipeline
    test_split = select_split(load_manifest(manifest), "test")
    answers = pipe([u.audio for u in test_split], text=[u.text for u in test_split])
    assert len(answers) == len(test_split)
    assert all(answer[0]["label"] in LABELS and 0.0 < answer[0]["score"] <= 1.0 for answer in answers)
    with pytest.raises(SystemExit):  # a local path, never tried as a Hub repo
        crab(["predict", str(wav), "--text", "i hate this", "--model", str(out / "no-such-folder")])
    assert "is not a folder here" in capfd.readouterr().err


def test_pretrained_encoders_load_from_local_folders(tmp_path, tiny_tokenizer):
    """The non-tiny path (`from_pretrained_encoders`, tokenizer and feature extractor of the encoders), offline:
    the "pretrained" encoders are tiny random ones saved to folders."""
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    from modeling_crab.training import tiny_crab_config

    config = tiny_crab_config(4, dict(enumerate(LABELS)), vocab_size=len(tiny_tokenizer))
    audio_dir, text_dir = tmp_path / "wavlm", tmp_path / "roberta"
    AutoModel.from_config(config.audio_config).save_pretrained(audio_dir)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(audio_dir)
    AutoModel.from_config(config.text_config).save_pretrained(text_dir)
    tiny_tokenizer.save_pretrained(text_dir)

    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--audio_encoder", str(audio_dir), "--text_encoder", str(text_dir)]
    argv += ["--output_dir", str(out), "--max_steps", "1", "--max_duration_s", "0.6", "--disable_tqdm", "True"]
    results = train_main(argv)
    assert "eval_uar" in results
    saved = json.loads((out / "inference" / "config.json").read_text())
    assert saved["audio_encoder_name"] == str(audio_dir) and saved["use_csl_legs"] is False


def _hide_test_labels(manifest) -> None:
    import csv

    with manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row["split"] == "test":
            row["label"] = ""
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _assert_predictions_match_the_export(out, corpus, max_duration_s, atol=1e-5) -> list[dict]:
    """Every row of predictions_test.csv names its utterance: its scores are the inference export's on that file."""
    import csv

    import numpy as np
    import torch

    from modeling_crab import CrabForEmotionClassification, CrabProcessor
    from modeling_crab.training import load_audio

    model = CrabForEmotionClassification.from_pretrained(out / "inference").eval()
    processor = CrabProcessor.from_pretrained(out / "inference", trust_remote_code=False)
    with (out / "predictions_test.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        audio = load_audio(corpus / "wavs" / f"{row['id']}.wav", max_duration_s=max_duration_s)
        text = next(words for label, words in WORDS.items() if f"_{label}_" in row["id"])
        inputs = processor(audio=[audio], text=[text], sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            expected = model(**inputs).logits.softmax(-1)[0].numpy()
        np.testing.assert_allclose([float(row[label]) for label in LABELS], expected, atol=atol)
    return rows


def test_predictions_for_hidden_labels_follow_the_manifest(tmp_path):
    """The eval loop batches by length (shuffled order); the predictions file still pairs each id with its scores."""
    corpus = tmp_path / "corpus"
    manifest = write_corpus(corpus, {"train": 1, "dev": 1, "test": 3})
    _hide_test_labels(manifest)
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(out), "--max_steps", "1"]
    argv += ["--max_duration_s", "1.0", "--per_device_eval_batch_size", "3", "--disable_tqdm", "True"]
    train_main(argv)
    rows = _assert_predictions_match_the_export(out, corpus, 1.0)
    assert sorted(row["id"] for row in rows) == sorted(f"test_{label}_{i}" for label in LABELS for i in range(3))


def test_encoder_cache_trains_the_head_on_cached_features_and_keeps_the_encoders(tmp_path):
    """`--encoder_cache`: every split is encoded once; training reads the cache; the export is a whole model whose
    predictions on audio match the cached run's; a second run from the first's checkpoint finds the same encoders
    (they were frozen) and reuses the cache; other encoders are refused."""
    from modeling_crab.training.feature_cache import FeatureCacheError

    corpus = tmp_path / "corpus"
    manifest = write_corpus(corpus, {"train": 2, "dev": 1, "test": 2})
    _hide_test_labels(manifest)
    cache = tmp_path / "cache"
    common = ["--manifest", str(manifest), "--encoder_cache", str(cache), "--max_duration_s", "1.0"]
    common += ["--disable_tqdm", "True", "--learning_rate", "1e-2", "--mlcs_weight", "0.2"]
    first = tmp_path / "first"
    results = train_main([*common, "--tiny", "--output_dir", str(first), "--max_steps", "3"])
    assert 0.0 <= results["eval_uar"] <= 1.0
    for split, count in (("train", 8), ("dev", 4), ("test", 8)):
        index = json.loads((cache / split / "index.json").read_text())
        assert len(index["utterances"]) == count and not (cache / split / "index.partial.json").exists()
    _assert_predictions_match_the_export(first, corpus, 1.0, atol=5e-3)  # fp16 features vs the fp32 encoders

    stamps = {path: path.stat().st_mtime_ns for path in cache.rglob("*.safetensors")}
    second = tmp_path / "second"
    train_main([*common, "--model_name_or_path", str(first), "--output_dir", str(second), "--max_steps", "1"])
    assert {path: path.stat().st_mtime_ns for path in cache.rglob("*.safetensors")} == stamps  # reused

    with pytest.raises(FeatureCacheError, match="other encoders"):  # fresh random encoders (another seed)
        train_main([*common, "--tiny", "--output_dir", str(tmp_path / "third"), "--seed", "7"])


@pytest.mark.parametrize(
    "capability, gpus, cores, expected",
    [
        (
            (9, 0),
            1,
            16,
            {"dataloader_num_workers": 4, "dataloader_persistent_workers": True, "bf16": True, "tf32": True},
        ),
        ((7, 0), 2, 4, {"dataloader_num_workers": 2, "dataloader_persistent_workers": True}),  # no bf16 before Ampere
        (
            (8, 0),
            8,
            4,
            {"dataloader_num_workers": 1, "dataloader_persistent_workers": True, "bf16": True, "tf32": True},
        ),
    ],
)
def test_machine_defaults_follow_the_machine(monkeypatch, capability, gpus, cores, expected):
    import os

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: capability)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert machine_defaults() == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    # without an accelerator, use_cpu: transformers goes data-parallel on a CPU machine only when told so
    assert machine_defaults() == {"use_cpu": True}


def test_encoder_cache_needs_the_masked_head(tmp_path, capsys):
    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(tmp_path / "out"), "--max_steps", "1"]
    with pytest.raises(SystemExit) as stop:
        train_main([*argv, "--encoder_cache", str(tmp_path / "cache"), "--mask_padding", "false"])
    assert stop.value.code == 2 and "--encoder_cache needs --mask_padding true" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # refused before anything was encoded


@pytest.mark.slow  # torch.compile of the encoders: half a minute on 2 cores
def test_compile_regions_trains_and_exports(tmp_path, monkeypatch):
    """`--compile_regions aot_eager` (dynamo + AOTAutograd without code generation: quick on CPU) compiles the
    encoder layers and head blocks in place; training runs and the export loads as a plain model."""
    from modeling_crab import CrabForEmotionClassification
    from modeling_crab.modeling_crab import CrabPreTrainedModel

    compiled = []
    original = CrabPreTrainedModel.compile_regions

    def recording(model, **kwargs):
        compiled.append(kwargs)
        original(model, **kwargs)

    monkeypatch.setattr(CrabPreTrainedModel, "compile_regions", recording)

    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(out), "--max_steps", "2", "--disable_tqdm"]
    results = train_main([*argv, "True", "--max_duration_s", "1.0", "--compile_regions", "aot_eager"])
    assert 0.0 <= results["eval_uar"] <= 1.0
    assert compiled == [{"backend": "aot_eager"}]
    exported = CrabForEmotionClassification.from_pretrained(out / "inference")
    assert not any("_orig_mod" in key for key in exported.state_dict())


def test_early_stopping_ends_the_run_when_the_dev_metric_stops_improving(tmp_path, monkeypatch):
    """`--early_stopping_patience 1`: a dev metric that never improves after the first epoch stops the run at the
    second of six epochs; `--label_smoothing_factor` reaches the model's loss through config.json."""
    from modeling_crab.training import CrabTrainer

    original = CrabTrainer.prediction_step

    def always_sad(self, *args, **kwargs):  # the same dev metrics every epoch
        loss, logits, labels = original(self, *args, **kwargs)
        return loss, torch.nn.functional.one_hot(torch.full((len(logits),), 3), len(LABELS)).float(), labels

    monkeypatch.setattr(CrabTrainer, "prediction_step", always_sad)
    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(out), "--num_train_epochs", "6"]
    argv += ["--early_stopping_patience", "1", "--label_smoothing_factor", "0.1", "--disable_tqdm", "True"]
    train_main(argv)
    assert json.loads((out / "trainer_state.json").read_text())["epoch"] == 2
    assert json.loads((out / "inference" / "config.json").read_text())["label_smoothing"] == 0.1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--early_stopping_patience", "2", "--load_best_model_at_end", "false"], "needs evaluation"),
        (["--early_stopping_patience", "0"], "--early_stopping_patience 0"),
        (["--label_smoothing_factor", "1.5"], "--label_smoothing_factor 1.5"),
    ],
)
def test_early_stopping_and_label_smoothing_flags_are_checked(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_arguments(["--manifest", "m.csv", *flags])
    assert message in capsys.readouterr().err


def test_the_frozen_baseline_is_trained_beside_and_shown_in_the_summary(tmp_path, capsys):
    """`--frozen_baseline`: the head alone on frozen encoders, in output_dir/frozen_baseline, with its dev and test
    columns in the summary and its metrics in eval_results.json; the demo turns it on."""
    assert preset_defaults(["demo"])["frozen_baseline"]
    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1, "test": 1})
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(out), "--max_steps", "2"]
    stale = out / "frozen_baseline" / "checkpoint-99"  # an earlier baseline's: the baseline starts over each time
    stale.mkdir(parents=True)
    results = train_main([*argv, "--frozen_baseline", "true", "--disable_tqdm", "True"])
    assert not stale.exists() and list((out / "frozen_baseline").glob("checkpoint-*"))
    printed = capsys.readouterr().out
    summary = printed.split("Crab results")[-1]
    assert printed.count("Crab results") == 1  # the baseline's run prints no table of its own
    assert "dev (frozen)" in summary and "test (frozen)" in summary
    baseline = json.loads((out / "frozen_baseline" / "eval_results.json").read_text())
    assert results["frozen_baseline_eval_uar"] == baseline["eval_uar"]
    assert results["frozen_baseline_test_uar"] == baseline["test_uar"]
    assert (out / "frozen_baseline" / "inference" / "config.json").is_file()
    assert json.loads((out / "eval_results.json").read_text()) == results


def test_a_joint_run_reports_attributes_beside_the_classes(tmp_path, capsys):
    """`--attributes`: CCC, Pearson and MAE per attribute in eval_results.json and the summary, the attribute
    columns in the predictions, the valence-arousal figure, and a config that predicts both."""
    manifest = write_corpus(tmp_path / "corpus", {"train": 2, "dev": 1, "test": 1}, attributes=True)
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(out), "--max_steps", "2"]
    results = train_main([*argv, "--attributes", "arousal,valence,dominance", "--disable_tqdm", "True"])
    for split in ("eval", "test"):
        assert 0.0 <= results[f"{split}_uar"] <= 1.0
        for name in ("arousal", "valence", "dominance"):
            assert -1.0 <= results[f"{split}_ccc_{name}"] <= 1.0 and results[f"{split}_mae_{name}"] >= 0.0
    summary = capsys.readouterr().out.split("Crab results")[-1]
    assert "CCC arousal" in summary and "CCC mean" in summary and "UAR" in summary
    header = (out / "predictions_dev.csv").read_text().splitlines()[0].split(",")
    assert header == ["id", "prediction", *LABELS, "arousal", "valence", "dominance"]
    assert (out / "attributes_dev.png").stat().st_size > 1000
    config = json.loads((out / "inference" / "config.json").read_text())
    assert config["attribute_names"] == ["arousal", "valence", "dominance"] and len(config["id2label"]) == 4


def test_an_attributes_only_run_needs_no_labels_and_keeps_the_best_ccc(tmp_path, capsys):
    manifest = write_corpus(tmp_path / "corpus", {"train": 2, "dev": 1}, attributes=True)
    text = manifest.read_text().replace(",label,", ",emotion,")  # no label column at all
    manifest.write_text(text)
    with pytest.raises(SystemExit):
        parse_arguments(["--manifest", str(manifest), "--attributes_only"])
    assert "--attributes_only needs the attributes to predict" in capsys.readouterr().err
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(out), "--num_train_epochs", "1"]
    argv += ["--attributes", "arousal", "--attributes_only", "--disable_tqdm", "True"]
    assert parse_arguments(argv).training.metric_for_best_model == "ccc_mean"
    results = train_main(argv)
    assert "eval_ccc_arousal" in results and "eval_uar" not in results
    assert (out / "predictions_dev.csv").read_text().splitlines()[0] == "id,arousal"
    config = json.loads((out / "inference" / "config.json").read_text())
    assert config["attribute_names"] == ["arousal"] and config["id2label"] == {}


def test_attribute_columns_left_unused_are_named(tmp_path, caplog):
    """A manifest with attribute columns trains the classes only unless --attributes asks: the paper's recipes are
    unchanged, and the log says how to use them."""
    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1}, attributes=True)
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(tmp_path / "out"), "--max_steps", "1"]
    with caplog.at_level("INFO"):  # the manifest module's note (modeling_crab.manifest's logger)
        results = train_main([*argv, "--disable_tqdm", "True"])
    assert "eval_ccc_arousal" not in results
    assert "Pass --attributes arousal,valence,dominance to predict them too" in caplog.text
