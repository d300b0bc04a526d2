"""A training run, as named steps that read straight down: prepare the data, build the processor and the model, fit,
then evaluate and export. `run` strings them together, `train` adds the frozen-encoder baseline and the summary:
train.py parses the arguments (`arguments.py`) and calls it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, is_offline_mode, try_to_load_from_cache
from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, httpx, validate_repo_id
from transformers import AutoConfig, EarlyStoppingCallback, RobertaTokenizerFast, Wav2Vec2FeatureExtractor, set_seed
from transformers.utils import CONFIG_NAME

from ..configuration_crab import CrabConfig, min_audio_samples
from ..export import export_for_inference
from ..feature_extraction_crab import CrabFeatureExtractor
from ..heads import OutputHead, heads_of
from ..manifest import (
    ManifestError,
    Utterance,
    load_manifest,
    note_missing_classes,
    note_reused_audio,
    note_unused_attribute_columns,
    select_splits,
    write_atomically,
)
from ..modeling_crab import CrabForEmotionClassification
from ..processing_crab import CrabProcessor
from .arguments import RunArguments, SettingError, check_crop_length, check_text_length
from .checkpoints import (
    RunLock,
    check_output_dir,
    check_resume_config,
    check_resume_weights_and_optimizer,
    clear_checkpoints,
    relocate_best_checkpoint,
    resolve_resume_checkpoint,
)
from .collator import CrabDataCollator, choose_shape_buckets
from .data import (
    CrabAudioTextDataset,
    ManifestScan,
    check_label_set,
    check_labels_option,
    drop_bad_rows,
    label_names_from,
    note_long_transcripts,
    scan_manifest,
)
from .distill import add_teacher_outputs, prepare_student, teacher_agreement
from .evaluation import best_step, evaluate_splits
from .feature_cache import cache_datasets, collate_cached
from .metrics import build_compute_metrics, summary_table
from .plots import plot_training_curves
from .tiny import build_tiny_tokenizer, tiny_crab_config
from .trainer import CrabTrainer, compute_class_weights

logger = logging.getLogger("crab.train")
ROLE_FLAGS = {"train": "--train_split", "eval": "--eval_split", "test": "--test_split"}


@dataclass
class PreparedData:
    """The run's data, checked and scanned: its rows and split names by role (train, eval, test), the classes,
    the attributes, and whether the test split has labels to score."""

    manifest: object
    rows: dict[str, list[Utterance]]
    splits: dict[str, str]
    label_names: list[str]
    attributes: list[str]
    test_has_labels: bool
    scan: ManifestScan


@dataclass
class RunResult:
    """What a run measured: the metrics of eval_results.json, the summary table's metrics per split, and the
    warnings to show under it."""

    metrics: dict[str, float]
    per_split: dict[str, dict[str, float]]
    notes: list[str]
    data: PreparedData
    heads: list[OutputHead]


def train(arguments: RunArguments) -> dict[str, float]:
    """What `python train.py` does with its parsed arguments: the run, its frozen-encoder baseline if asked for,
    and the summary table; the dev and test metrics (eval_results.json's)."""
    import transformers

    from ..wavlm_attention import quiet_eager_mask_warning

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(arguments.training.get_process_log_level())
    quiet_eager_mask_warning()
    training = arguments.training
    with contextlib.ExitStack() as stack:
        if training.disable_tqdm:  # also the bars of each save ("Writing model shards") and the encoders' downloads
            stack.enter_context(_no_progress_bars())
        if training.should_save:
            stack.enter_context(RunLock(training.output_dir))  # one run per folder
        check_output_dir(training.output_dir, training.resume_from_checkpoint)
        result = run(arguments)
        if arguments.model.frozen_baseline and not arguments.data.encoder_cache:
            result = run_frozen_baseline(arguments, result)
    if training.should_save:
        print(summary(arguments, result))
    return result.metrics


@contextlib.contextmanager
def _no_progress_bars():
    """transformers' and huggingface_hub's progress bars off, then as they were."""
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            transformers_logging.enable_progress_bar()


def run(arguments: RunArguments, report: bool = True) -> RunResult:
    """Train, evaluate and export as `arguments` say (`train` first checks and locks the output folder); `report`:
    the run asked for (its notes on the data), not a second run on the same rows such as the frozen-encoder
    baseline."""
    training = arguments.training
    set_seed(training.seed)
    output_dir = Path(training.output_dir)
    if arguments.distillation.teacher:  # the student, built from the teacher, is the checkpoint to train (distill.py)
        arguments = prepare_student(arguments)
    data = prepare_data(arguments, report)
    checkpoint = resolve_resume_checkpoint(training.resume_from_checkpoint, output_dir)
    processor = build_processor(arguments, [u.text for u in data.rows["train"]], checkpoint, data.scan)
    model = build_model(arguments, data.label_names, len(processor.tokenizer))
    if report:
        note_long_transcripts(processor, data.rows, data.splits)
    if checkpoint is not None:  # before anything is encoded or trained
        check_resume_config(checkpoint, model.config, arguments.data.normalization)
    trainer, datasets = fit(arguments, data, processor, model, checkpoint)
    return evaluate_and_export(arguments, data, trainer, datasets, processor)


def prepare_data(arguments: RunArguments, report: bool = True) -> PreparedData:
    """The manifest (the built-in demo corpus without one) read, its splits chosen, every row checked and its audio
    scanned once, the settings that depend on the encoders checked before any audio is read."""
    data_args, training = arguments.data, arguments.training
    output_dir = Path(training.output_dir)
    manifest = data_args.manifest
    if manifest is None:
        from ..recipes.demo import generate_demo_corpus

        with training.main_process_first(desc="generating the demo corpus"):
            manifest = generate_demo_corpus(output_dir / "demo_corpus")
        logger.info(f"no --manifest: training the built-in demo on {manifest}")
    attributes = arguments.attributes
    utterances = load_manifest(manifest, data_args.audio_root, attributes, needs_label=not data_args.attributes_only)
    if not attributes:
        note_unused_attribute_columns(manifest)
    wanted = {"train": data_args.train_split, "eval": data_args.eval_split, "test": data_args.test_split}
    rows = select_splits(utterances, wanted, ROLE_FLAGS)
    if "eval" not in rows:
        raise ManifestError(f"split '{data_args.eval_split}' has no rows; add dev rows or pass --eval_split NAME")
    splits = {role: wanted[role] for role in rows}
    # a test split with no labels at all gets a predictions file; one with some labels is evaluated, and the scan
    # reports each of its unlabelled rows
    test_has_labels = "test" in rows and any(
        (u.label and not data_args.attributes_only) or any(v is not None for v in u.attributes.values())
        for u in rows["test"]
    )
    if data_args.attributes_only:
        label_names = []
    elif data_args.labels:
        label_names = [name.strip() for name in data_args.labels.split(",") if name.strip()]
        check_label_set(label_names, "--labels")
        if not data_args.skip_bad_rows:  # there, rows of other classes are left out one by one
            check_labels_option([u for part in rows.values() for u in part], label_names)
    else:
        label_names = label_names_from(utterances, data_args.train_split, manifest)
    with training.main_process_first(desc="reading the encoders' configs"):
        audio_config, text_config = encoder_configs(arguments)
    check_text_length(data_args.max_text_length, text_config)
    check_crop_length(data_args.max_duration_s, min_audio_samples(audio_config))
    scanned = list({id(u): u for part in rows.values() for u in part}.values())  # a split in two roles: once
    with training.main_process_first(desc="checking the manifest and reading the training audio"):
        scan = scan_manifest(
            scanned,
            label_names,
            train_split=data_args.train_split,
            labelled_splits=[data_args.eval_split] + ([data_args.test_split] if test_has_labels else []),
            max_duration_s=data_args.max_duration_s,
            num_workers=data_args.preprocessing_num_workers,
            cache_path=output_dir / "manifest_scan.json",
            name=str(manifest),
            skip_bad_rows=data_args.skip_bad_rows,
            needs_labels=bool(label_names),
            empty_transcripts=data_args.empty_transcripts,
            waveform_stats="release" if arguments.model.recipe == "release" else "crops",  # the release's own rule
            min_samples=min_audio_samples(audio_config),
        )
    if scan.skipped:
        rows = drop_bad_rows(rows, scanned, scan.skipped, output_dir / "skipped_rows.csv")
    if report:
        note_missing_classes(rows, splits, label_names, test_has_labels)
        note_reused_audio(rows, splits)
    return PreparedData(manifest, rows, splits, label_names, attributes, test_has_labels, scan)


def encoder_configs(arguments: RunArguments) -> tuple:
    """The configs of the speech and text encoders the run will build, read before any audio or weights: the
    speech CNN sets the shortest clip the scan accepts (`min_audio_samples`: 25 ms for WavLM, 40 ms for `--tiny`),
    the text encoder's positions the longest `--max_text_length` (`check_text_length`)."""
    model_args = arguments.model
    if model_args.tiny and not model_args.model_name_or_path:
        config = tiny_crab_config(2)
        return config.audio_config, config.text_config
    flags = (
        [("--model_name_or_path", model_args.model_name_or_path, CrabConfig)]
        if model_args.model_name_or_path
        else [
            ("--audio_encoder", model_args.audio_encoder, AutoConfig),
            ("--text_encoder", model_args.text_encoder, AutoConfig),
        ]
    )
    check_model_sources([(flag, source) for flag, source, _ in flags])
    configs = []
    for flag, source, config_class in flags:
        try:
            configs.append(config_class.from_pretrained(source))
        except (OSError, ValueError) as error:  # no such folder or repo, no network, not a model's config
            reason = " ".join(str(error).split())
            raise SettingError(
                f"{flag} '{source}': no model config could be read from it ({reason[:300]}); pass a local folder "
                "with a config.json or a Hub repo id this machine can reach"
            ) from None
    if model_args.model_name_or_path:
        return configs[0].audio_config, configs[0].text_config
    return tuple(configs)


# what huggingface_hub's HTTP client raises when no connection to the Hub could be made (DNS, refused, a proxy)
_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError)


def check_model_sources(sources: list[tuple[str, str]], fixes: str | None = None) -> None:
    """Each (flag, source) a model config can be read from before it is read: a local folder with a config.json, a
    Hub repo whose config.json is in the Hub cache (read as before, online or off), or a repo the Hub answers for.
    A source that needs the Hub is asked for once, without retries: where the Hub cannot be reached (no network,
    offline mode, a closed HF_ENDPOINT) or has no such repo, one `SettingError` names every source it could not get
    and the fixes, at once rather than after huggingface_hub's retries (half a minute a file). Anything else (a repo
    without a config.json, a gated one, a Hub error) is left to `from_pretrained`, which reports it. `fixes`: what
    the messages offer instead (default: local model folders, or a trial with tiny random encoders)."""
    uncached = []
    for flag, source in sources:
        instead = f"pass a model's folder (what save_pretrained writes: its {CONFIG_NAME} and weights), a Hub repo id"
        instead = f"{instead}, or {_tiny_trial([flag])}" if fixes is None else fixes
        if os.path.isdir(source) and not os.path.isfile(os.path.join(source, CONFIG_NAME)):
            raise SettingError(f"{flag} '{source}': the folder has no {CONFIG_NAME}; {instead}")
        if os.path.exists(source):
            continue
        if not _is_repo_id(source):
            raise SettingError(f"{flag} '{source}': no such folder, and not a Hub repo id; {instead}")
        if not isinstance(try_to_load_from_cache(source, CONFIG_NAME), str):
            uncached.append((flag, source))
    if not uncached:
        return
    named = _named(uncached)
    where = f"{_not_local(uncached)}, not in the Hub cache ({constants.HF_HUB_CACHE})"
    fixes = _source_fixes([flag for flag, _ in uncached]) if fixes is None else fixes
    if is_offline_mode():
        variable = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
        raise SettingError(
            f"{named}: {where}, and {variable}={os.environ[variable]} keeps this run off the Hub; {fixes}, or unset "
            f"{variable} to download them"
        )
    missing = []
    for flag, source in uncached:
        try:
            get_hf_file_metadata(hf_hub_url(source, CONFIG_NAME), retry_on_errors=False)
        except _UNREACHABLE as error:
            reason = " ".join(str(error).split())[:120] or type(error).__name__
            raise SettingError(
                f"{named}: {where}, and the Hub ({constants.ENDPOINT}) cannot be reached from here ({reason}); "
                f"{fixes}, or run once where the Hub can be reached (later runs read the cache, also with "
                "HF_HUB_OFFLINE=1)"
            ) from None
        except GatedRepoError:
            pass
        except RepositoryNotFoundError:
            missing.append((flag, source))
        except Exception:  # a Hub that answers otherwise: from_pretrained meets it again and reports it
            pass
    if missing:
        raise SettingError(
            f"{_named(missing)}: {_not_local(missing)}, and the Hub ({constants.ENDPOINT}) has no such repo (a "
            "private one needs `hf auth login`); pass a Hub repo id or " + fixes.removeprefix("pass ")
        )


def _named(sources: list[tuple[str, str]]) -> str:
    return " and ".join(f"{flag} '{source}'" for flag, source in sources)


def _not_local(sources: list) -> str:
    return "not local folders" if len(sources) > 1 else "not a local folder"


def _is_repo_id(source: str) -> bool:
    """Whether `source` is spelled as a Hub repo id (`name` or `namespace/name`)."""
    try:
        validate_repo_id(source)
    except ValueError:
        return False
    return True


def _source_fixes(flags: list[str]) -> str:
    """What to pass instead of the models behind `flags` where the run cannot get them: local folders, or a trial
    with tiny random encoders."""
    if "--model_name_or_path" in flags:
        checkpoint = "a local checkpoint folder (--model_name_or_path DIR, a train.py output_dir)"
        return f"pass {checkpoint}, or {_tiny_trial(flags)}"
    return f"pass {_tiny_trial(flags)}, or local model folders (--audio_encoder DIR --text_encoder DIR)"


def _tiny_trial(flags: list[str]) -> str:
    """`--tiny`, the run that needs no model from anywhere, as an alternative to the models behind `flags`."""
    without = " without --model_name_or_path" if "--model_name_or_path" in flags else ""
    return f"--tiny{without} for a CPU trial with tiny random encoders"


def build_processor(
    arguments: RunArguments, train_texts: list[str], checkpoint: str | None, scan: ManifestScan
) -> CrabProcessor:
    """The saved processor when resuming or fine-tuning; else a tokenizer + feature extractor for the encoders
    (the tiny model's tokenizer learnt from `train_texts`); with the run's audio and text settings, and global
    normalisation's statistics from the scan of the training audio. A resumed run keeps its checkpoint's statistics
    (its weights were trained on audio normalised with them), with a warning where the training audio's now differ."""
    model_args, data_args = arguments.model, arguments.data
    source = checkpoint or model_args.model_name_or_path
    if source:
        processor = CrabProcessor.from_pretrained(source, trust_remote_code=False)  # our class; no prompt
    else:
        if model_args.tiny:
            tokenizer = build_tiny_tokenizer(train_texts, vocab_size=1000)
            feature_extractor = CrabFeatureExtractor()
        else:  # the speech encoder's sampling rate and padding value, in a CrabFeatureExtractor
            tokenizer = RobertaTokenizerFast.from_pretrained(model_args.text_encoder)
            feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(model_args.audio_encoder)
        processor = CrabProcessor(feature_extractor, tokenizer)
    processor.max_duration_s = data_args.max_duration_s
    processor.max_text_length = data_args.max_text_length
    processor.text_padding = data_args.text_padding
    processor.normalization = data_args.normalization
    if data_args.normalization == "global":
        saved = (processor.waveform_mean, processor.waveform_std) if checkpoint else (None, None)
        if None in saved:
            processor.set_waveform_stats(scan.waveform_mean, scan.waveform_std)
        elif not all(
            math.isclose(old, new, rel_tol=1e-3, abs_tol=1e-6)
            for old, new in zip(saved, (scan.waveform_mean, scan.waveform_std))
        ):
            logger.warning(
                f"the training audio's waveform statistics (mean {scan.waveform_mean:.4g}, std "
                f"{scan.waveform_std:.4g}) differ from those '{checkpoint}' was trained with (mean {saved[0]:.4g}, "
                f"std {saved[1]:.4g}): the audio changed since the run began. The resumed run keeps the "
                "checkpoint's, and its export with them; start a new run (another --output_dir) to train on the "
                "audio as it is now"
            )
    return processor


def build_model(arguments: RunArguments, label_names: list[str], vocab_size: int) -> CrabForEmotionClassification:
    """The Crab model to train: a checkpoint to fine-tune, the tiny random one or pretrained encoders, with the head
    switches set (`HeadArguments`; unset ones keep the checkpoint's or the built-in value); it predicts the
    `label_names` classes and the run's attributes (no classes: an attributes-only model). SpecAugment settings go
    into the speech encoder's config before the encoder is built, so its `masked_spec_embed` exists when a masking
    probability is turned on from 0."""
    model_args, training = arguments.model, arguments.training
    spec_augment = arguments.spec_augment.settings()
    distributed = training.world_size > 1
    id2label = dict(enumerate(label_names))
    head_options = {
        **arguments.head.options(),
        "label_smoothing": training.label_smoothing_factor,  # transformers' flag, applied by the model's loss
        "attribute_names": arguments.attributes,
    }
    if "mlcs_weight" in head_options:
        head_options["use_csl_legs"] = head_options["mlcs_weight"] > 0
    if model_args.model_name_or_path:
        config = CrabConfig.from_pretrained(model_args.model_name_or_path, **head_options)
        config.audio_config.update(spec_augment)
        model = CrabForEmotionClassification.from_pretrained(model_args.model_name_or_path, config=config)
        if list(model.config.id2label.values()) != list(label_names):
            raise ManifestError(
                f"checkpoint '{model_args.model_name_or_path}' predicts {list(model.config.id2label.values())} but the "
                f"label set is {label_names}; pass --labels with the checkpoint's classes in its order"
            )
    elif model_args.tiny:
        config = tiny_crab_config(len(label_names), id2label, vocab_size, **head_options)
        config.audio_config.update(spec_augment)
        model = CrabForEmotionClassification(config)
    else:
        model = CrabForEmotionClassification.from_pretrained_encoders(
            model_args.audio_encoder,
            model_args.text_encoder,
            audio_config_overrides={**spec_augment, **({"layerdrop": 0.0} if distributed else {})},
            id2label=id2label,
            label2id={name: i for i, name in id2label.items()},
            **head_options,
        )
    if distributed:  # ranks that skip different WavLM layers would desynchronise DDP's gradient buckets
        model.config.audio_config.layerdrop = 0.0
        model.crab.audio_encoder.config.layerdrop = 0.0
    augmentation = arguments.augmentation
    model.config.augmentation = augmentation.to_dict() if augmentation.active else None  # for the model card
    if model_args.compile_regions:
        model.compile_regions(backend=model_args.compile_regions)
    return model


def fit(
    arguments: RunArguments, data: PreparedData, processor: CrabProcessor, model, checkpoint: str | None
) -> tuple[CrabTrainer, dict]:
    """The datasets (the training split augmented; cached encoder outputs with `--encoder_cache`), the class
    weights of the objective (saved in config.json), the Trainer, and training; the trained model saved. Returns
    the trainer and the datasets by role."""
    data_args, optimization, training = arguments.data, arguments.optimization, arguments.training
    label2id = {name: i for i, name in enumerate(data.label_names)}
    augmentation = arguments.augmentation if arguments.augmentation.active else None
    data_seed = training.data_seed if training.data_seed is not None else training.seed
    datasets = {
        role: CrabAudioTextDataset(
            part,
            label2id,
            data_args.max_duration_s,
            data.scan.num_samples,
            augmentation=augmentation if role == "train" else None,
            seed=data_seed,
        )
        for role, part in data.rows.items()
    }
    collator = CrabDataCollator(processor)
    if data_args.encoder_cache:
        datasets = cache_datasets(model, processor, datasets, data.splits, data_args.encoder_cache, training)
        collator = collate_cached
    if arguments.distillation.teacher:  # the teacher's outputs beside each training clip, computed once
        datasets, collator = add_teacher_outputs(arguments, datasets, data.splits, collator)
    model.config.class_weights = (
        compute_class_weights(datasets["train"].label_ids, len(data.label_names)).tolist()
        if optimization.class_weighted and data.label_names
        else None
    )
    patience = optimization.early_stopping_patience
    trainer = CrabTrainer(
        model=model,
        args=training,
        train_dataset=datasets["train"],
        eval_dataset=datasets["eval"],
        data_collator=collator,
        processing_class=processor,
        compute_metrics=build_compute_metrics(heads=heads_of(model.config)),
        encoder_learning_rate=optimization.encoder_learning_rate,
        freeze_feature_encoder=arguments.model.freeze_feature_encoder,
        decay_every_parameter=optimization.decay_every_parameter,
        epoch_cosine_floors=(
            (optimization.learning_rate_floor, optimization.encoder_learning_rate_floor)
            if optimization.epoch_cosine
            else None
        ),
        full_accumulation_divisor=optimization.full_accumulation_divisor,
        bf16_weights=arguments.model.bf16_weights,
        callbacks=[EarlyStoppingCallback(patience)] if patience else None,
    )
    if data_args.shape_buckets and not data_args.encoder_cache:  # costed on the trainer's batches of the train split
        sampler, batch_size = trainer._get_train_sampler(), training.train_batch_size
        evaluated = [dataset for role, dataset in datasets.items() if role != "train"]  # their longest fit too
        buckets, report = choose_shape_buckets(
            datasets["train"], processor, data_args.shape_buckets, sampler, batch_size, evaluated
        )
        collator.shape_buckets = processor.shape_buckets = buckets  # saved: the pipeline's shape_buckets=True
        logger.info(report)
    if checkpoint is not None:
        check_resume_weights_and_optimizer(checkpoint, trainer)
        relocate_best_checkpoint(checkpoint, training.output_dir)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    trainer.save_state()
    trainer.log_metrics("train", train_result.metrics)
    return trainer, datasets


def evaluate_and_export(
    arguments: RunArguments, data: PreparedData, trainer: CrabTrainer, datasets: dict, processor: CrabProcessor
) -> RunResult:
    """The dev and test splits predicted and scored (`evaluation.evaluate_splits`), the training curves, the
    inference export and eval_results.json (with how the model was trained, for a reader of the results and the
    model card)."""
    output_dir = Path(arguments.training.output_dir)
    heads = heads_of(trainer.model.config)
    metrics, per_split, notes = evaluate_splits(
        trainer,
        {role: dataset for role, dataset in datasets.items() if role != "train"},
        data.splits,
        heads,
        output_dir,
        test_batch_size=arguments.data.test_batch_size,
        test_has_labels=data.test_has_labels,
    )
    if arguments.distillation.teacher:  # the student's agreement with the teacher, and the teacher's own results
        agreement, teacher_results = teacher_agreement(arguments, data.rows, data.splits, data.label_names)
        metrics.update(agreement)
        per_split.update(teacher_results)
        notes.append(
            "top-1 agreement with the teacher: "
            + ", ".join(
                f"{data.splits[role]} {agreement[f'{role}_teacher_agreement']:.3f}"
                for role in ("eval", "test")
                if f"{role}_teacher_agreement" in agreement
            )
        )
    metrics.update(
        recipe=arguments.model.recipe,
        text_padding=processor.text_padding,
        mask_padding=trainer.model.config.mask_padding,
    )
    if trainer.is_world_process_zero():
        plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png", best_step(trainer.state))
        export_for_inference(trainer.model, processor, output_dir / "inference")
        write_eval_results(output_dir, metrics)
    return RunResult(metrics, per_split, notes, data, heads)


def run_frozen_baseline(arguments: RunArguments, result: RunResult) -> RunResult:
    """The frozen-encoder baseline (`--frozen_baseline`) as a second run, in `output_dir/frozen_baseline`; its
    metrics join `result`'s (`frozen_baseline_*` in eval_results.json, `<split> (frozen)` rows in the summary), with
    a warning when it beats fine-tuning."""
    baseline_arguments = arguments.frozen_baseline(result.data.manifest)
    out = Path(baseline_arguments.training.output_dir)
    logger.info(f"--frozen_baseline: training the head alone on frozen encoders into {out}")
    if baseline_arguments.training.should_save:  # it starts over each time: an earlier baseline's checkpoints go
        clear_checkpoints(out)
    baseline = run(baseline_arguments, report=False)
    metrics = {**result.metrics}
    metrics.update(
        {f"frozen_baseline_{k}": v for k, v in baseline.metrics.items() if k.startswith(("eval_", "test_"))}
    )
    per_split = {**result.per_split, **{f"{split} (frozen)": m for split, m in baseline.per_split.items()}}
    notes = list(result.notes)
    metric, title = result.heads[0].headline  # the first head's (the classes' where the model has them)
    headline = f"eval_{metric}"
    if baseline.metrics.get(headline, -math.inf) > result.metrics.get(headline, -math.inf):
        notes.append(
            f"warning: the frozen-encoder baseline beats fine-tuning on the dev split ({title} "
            f"{baseline.metrics[headline]:.4f} vs {result.metrics.get(headline, math.nan):.4f}): fine-tuning overfits "
            "the training data. Fewer epochs (--early_stopping_patience), augmentation or a lower "
            f"--encoder_learning_rate may help; {out} holds the baseline's model (docs/training.md)"
        )
    if arguments.training.should_save:
        write_eval_results(Path(arguments.training.output_dir), metrics)
    return RunResult(metrics, per_split, notes, result.data, result.heads)


def write_eval_results(output_dir: Path, metrics: dict) -> None:
    """`output_dir/eval_results.json`, written whole or not at all (push_to_hub.py reads it into the model card)."""
    write_atomically(
        output_dir / "eval_results.json", lambda handle: handle.write(json.dumps(metrics, indent=2) + "\n")
    )


def summary(arguments: RunArguments, result: RunResult) -> str:
    """The results table with its warnings, and where the model went."""
    output_dir = Path(arguments.training.output_dir)
    table = summary_table(result.per_split, heads=result.heads)
    return (
        f"\nCrab results ({output_dir}, recipe '{arguments.model.recipe}'):\n"
        + "\n".join([table, *result.notes])
        + f"\ninference model: {output_dir / 'inference'}  (eval_results.json, *.png next to it)\n"
    )
