"""Waveform augmentation of the training audio and the speech encoder's SpecAugment: what each step does to a clip,
that an item's draw depends only on (seed, epoch, index) whatever the DataLoader workers, that only the training
split is augmented, and that the settings travel with the model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from training_helpers import (
    LABELS,
    RESUMABLE,
    tiny_datasets,
    tiny_training_arguments,
    train_main,
    write_corpus,
    write_tone,
)
from transformers import TrainingArguments

import modeling_crab.training.run as training_run
from modeling_crab.training import CrabAudioTextDataset, CrabDataCollator, CrabTrainer, load_audio
from modeling_crab.training.arguments import parse_arguments
from modeling_crab.training.augment import (
    WaveformAugmentation,
    add_noise,
    colored_noise,
    item_rng,
    pitch_shift,
    reverberate,
    speed_perturb,
    time_stretch,
)

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

EVERYTHING = WaveformAugmentation(
    pitch_prob=0.5, speed_factors=(0.9, 1.0, 1.1), gain_db=6.0, noise_prob=0.5, reverb_prob=0.5
)


def _speech_like(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.2 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def _power_db(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(x.astype(np.float64) ** 2)))


def _peak_hz(x: np.ndarray) -> float:
    return np.argmax(np.abs(np.fft.rfft(x * np.hanning(len(x))))) * 16000 / len(x)


# ---- one clip ------------------------------------------------------------------------------------------------------


def test_speed_perturbation_resamples_tempo_and_pitch_together():
    tone = _speech_like(1.0)
    for factor in (0.9, 1.1):
        out = speed_perturb(tone, factor)
        assert len(out) == math.ceil(16000 / factor)  # factor f: N / f samples
        assert abs(_peak_hz(out) - 220 * factor) < 3  # the pitch moves with the tempo


def _burst_s(x: np.ndarray) -> float:
    """Where the energy above `x`'s median level is centred, in seconds (10 ms frames)."""
    energy = np.square(x[: len(x) // 160 * 160].astype(np.float64)).reshape(-1, 160).sum(axis=1)
    excess = np.maximum(energy - np.median(energy), 0)
    return float(np.sum(excess * (np.arange(len(excess)) + 0.5)) / np.sum(excess) * 0.01)


def test_pitch_shift_moves_the_pitch_and_keeps_tempo_length_and_level():
    clip = _speech_like(1.5)
    clip[8000:12000] *= 4  # a louder stretch at 0.5-0.75 s: where it stays shows the tempo
    for semitones in (-4.0, -1.0, 2.5, 7.0):
        out = pitch_shift(clip, semitones)
        factor = round(2 ** (semitones / 12), 2)
        assert len(out) == len(clip) and np.isfinite(out).all()
        assert abs(_peak_hz(out) - 220 * factor) < 3, semitones
        assert abs(_power_db(out) - _power_db(clip)) < 0.01
        assert abs(_burst_s(out) - _burst_s(clip)) < 0.02  # a vocoder hop is 8 ms
    assert abs(_burst_s(speed_perturb(clip, 0.8)) - _burst_s(clip) / 0.8) < 0.02  # 0.16 s later: speed moves it
    np.testing.assert_array_equal(pitch_shift(clip, 0.05), clip)  # under half a percent: no shift
    assert not pitch_shift(np.zeros(4000, np.float32), 3.0).any()
    assert len(pitch_shift(clip[:100], 3.0)) == 100  # shorter than a vocoder frame


def test_time_stretch_changes_the_tempo_only():
    clip = _speech_like(1.0)
    for rate in (0.8, 1.25):
        out = time_stretch(clip, rate)
        assert len(out) == round(16000 / rate)
        assert abs(_peak_hz(out) - 220) < 3


def test_the_pitch_shift_is_the_drawn_one_and_leaves_the_other_draws_alone():
    clip = _speech_like(1.0)
    augmentation = WaveformAugmentation(pitch_prob=1.0, pitch_semitones=(-5.0, 5.0))
    shifts = []
    for index in range(6):
        pitch_rng = item_rng(3, 0, index).spawn(5)[4]
        pitch_rng.random()  # the shift-or-not draw
        shifts.append(pitch_rng.uniform(-5.0, 5.0))
        out = augmentation(clip, item_rng(3, 0, index))
        assert abs(_peak_hz(out) - 220 * round(2 ** (shifts[-1] / 12), 2)) < 3
    assert max(shifts) - min(shifts) > 3
    # turning the pitch shift on changes no other step's draw: the same gain, whatever the shift
    gain_only, both = WaveformAugmentation(gain_db=6.0), WaveformAugmentation(gain_db=6.0, pitch_prob=1.0)
    for index in range(4):
        plain = gain_only(clip, item_rng(3, 0, index))
        shifted = both(clip, item_rng(3, 0, index))
        assert abs(_power_db(plain) - _power_db(shifted)) < 0.01
        assert not np.allclose(plain, shifted)


def test_added_noise_has_the_drawn_snr():
    clip = _speech_like(2.0)
    for kind in ("white", "pink", "brown"):
        for snr_db in (5.0, 12.5, 20.0):
            noisy = add_noise(clip, colored_noise(kind, len(clip), np.random.default_rng(1)), snr_db)
            assert abs(_power_db(clip) - _power_db(noisy - clip) - snr_db) < 0.5, (kind, snr_db)
    # through WaveformAugmentation: the SNR it draws (from the noise step's own generator) is the one measured
    augmentation = WaveformAugmentation(noise_prob=1.0, noise_snr_db=(5.0, 20.0))
    for index in range(5):
        noise_rng = item_rng(7, 0, index).spawn(4)[2]
        noise_rng.random()  # the noise-or-not draw
        drawn = noise_rng.uniform(5.0, 20.0)
        noisy = augmentation(clip, item_rng(7, 0, index))
        assert abs(_power_db(clip) - _power_db(noisy - clip) - drawn) < 0.5


def test_gain_scales_the_whole_clip_within_its_range_unclipped():
    clip = 0.9 * _speech_like(0.5) / 0.22  # peaks near 0.9: +6 dB goes past 1
    gains = []
    for index in range(20):
        out = WaveformAugmentation(gain_db=6.0)(clip, item_rng(0, 0, index))
        ratio = out / clip
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
        gains.append(20 * math.log10(ratio[0]))
    assert all(-6.0 <= g <= 6.0 for g in gains) and max(gains) - min(gains) > 3
    assert max(np.abs(WaveformAugmentation(gain_db=6.0)(clip, item_rng(0, 0, i))).max() for i in range(20)) > 1


def test_reverberation_keeps_length_and_level():
    clip = _speech_like(1.0)
    wet = reverberate(clip, 0.6, np.random.default_rng(0))
    assert len(wet) == len(clip) and np.isfinite(wet).all()
    assert abs(_power_db(wet) - _power_db(clip)) < 0.01
    assert np.corrcoef(wet, clip)[0, 1] < 0.99  # it did something


def test_silence_stays_finite_and_gets_no_noise():
    for index in range(8):
        out = EVERYTHING(np.zeros(8000, np.float32), item_rng(0, 0, index))
        assert np.isfinite(out).all() and not out.any()  # no SNR is defined on silence: no noise is added
        assert np.isfinite(EVERYTHING(np.full(8000, 0.25, np.float32), item_rng(0, 0, index))).all()  # DC offset
    assert len(EVERYTHING(np.zeros(0, np.float32), item_rng(0, 0, 0))) == 0


def test_noise_from_a_folder_is_a_segment_of_its_files(tmp_path):
    write_tone(tmp_path / "noise" / "hum.wav", 50.0, 0.3)  # shorter than the clip: looped
    augmentation = WaveformAugmentation(noise_prob=1.0, noise_snr_db=(0.0, 0.0), noise_dir=str(tmp_path / "noise"))
    clip = _speech_like(1.0)
    added = augmentation(clip, item_rng(0, 0, 0)) - clip
    spectrum = np.abs(np.fft.rfft(added))
    assert abs(np.argmax(spectrum) * 16000 / len(added) - 50.0) < 2
    assert abs(_power_db(added) - _power_db(clip)) < 0.5


# ---- items: determinism, crop, training split only ---------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("augment") / "corpus", {"train": 2, "dev": 1})


def _augmented(corpus, augmentation=EVERYTHING, max_duration_s=12.0, seed=42):
    train, dev, scan = tiny_datasets(corpus, max_duration_s)
    return CrabAudioTextDataset(train.utterances, train.label2id, max_duration_s, scan.num_samples, augmentation, seed)


def test_an_item_depends_only_on_seed_epoch_and_index(corpus):
    dataset = _augmented(corpus)
    again = _augmented(corpus)
    for index in range(len(dataset)):
        np.testing.assert_array_equal(dataset[(3, index)]["audio"], again[(3, index)]["audio"])
    np.testing.assert_array_equal(dataset[2]["audio"], dataset[(0, 2)]["audio"])  # a plain index is epoch 0
    differs = [not np.array_equal(dataset[(0, i)]["audio"], dataset[(1, i)]["audio"]) for i in range(len(dataset))]
    assert all(differs)  # another epoch, another draw
    other_seed = _augmented(corpus, seed=43)
    assert not np.array_equal(dataset[(0, 0)]["audio"], other_seed[(0, 0)]["audio"])


def test_the_crop_holds_after_speed_perturbation_and_masks_follow_the_lengths(corpus, tiny_processor):
    crop_s = 0.5  # the corpus clips are 0.4-1.2 s
    dataset = _augmented(corpus, WaveformAugmentation(speed_factors=(0.9, 1.1)), max_duration_s=crop_s)
    items = [dataset[(epoch, i)] for epoch in range(3) for i in range(len(dataset))]
    lengths = [len(item["audio"]) for item in items]
    assert max(lengths) == int(crop_s * 16000) and all(n <= int(crop_s * 16000) for n in lengths)
    for item in items:  # a clip shorter than the crop has about N / f samples
        plain = len(load_audio(next(u.audio for u in dataset.utterances if u.id == item["id"]), max_duration_s=2.0))
        if plain < 0.85 * crop_s * 16000:
            assert min(abs(len(item["audio"]) - math.ceil(plain / f)) for f in (0.9, 1.1)) <= 1
    batch = CrabDataCollator(tiny_processor)(items[:8])
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths[:8]


def test_dev_and_test_items_are_the_plain_read(corpus, monkeypatch, tmp_path):
    """train.py gives the augmentation to the training split alone; the other splits read the audio as serving."""
    built = {}
    original = training_run.CrabAudioTextDataset

    def recording(utterances, *args, augmentation=None, **kwargs):
        dataset = original(utterances, *args, augmentation=augmentation, **kwargs)
        built[utterances[0].split] = dataset
        return dataset

    monkeypatch.setattr(training_run, "CrabAudioTextDataset", recording)
    argv = ["--manifest", str(corpus), "--tiny", "--output_dir", str(tmp_path / "run"), "--max_steps", "1"]
    argv += ["--disable_tqdm", "True", "--dataloader_num_workers", "0", "--speed_factors", "0.9", "1.1"]
    argv += ["--gain_db", "6", "--noise_prob", "1", "--reverb_prob", "1", "--mask_time_prob", "0.3"]
    argv += ["--pitch_prob", "0.5", "--pitch_semitones", "-2", "3"]
    train_main(argv)
    assert built["train"].augmentation is not None and built["dev"].augmentation is None
    for index, utterance in enumerate(built["dev"].utterances):
        np.testing.assert_array_equal(built["dev"][index]["audio"], load_audio(utterance.audio, max_duration_s=12.0))
    # the settings travel with the model: config.json of the checkpoint and of the inference export, and the card
    for folder in (tmp_path / "run", tmp_path / "run" / "inference"):
        config = json.loads((folder / "config.json").read_text())
        assert config["augmentation"]["speed_factors"] == [0.9, 1.1] and config["augmentation"]["noise_prob"] == 1
        assert config["augmentation"]["pitch_prob"] == 0.5 and config["augmentation"]["pitch_semitones"] == [-2, 3]
        assert config["audio_config"]["mask_time_prob"] == 0.3
    from modeling_crab.publish import render_model_card

    text = " ".join(render_model_card(config, {}, "me/crab").text.split())
    assert "augmented with a pitch shift on 50% of clips (-2 to 3 semitones), speed perturbation" in text
    assert "probability 0.3" in text


def test_without_augmentation_flags_nothing_changes():
    for recipe in ("crab", "release"):
        arguments = parse_arguments(["--manifest", "m.csv", "--recipe", recipe])
        assert not arguments.augmentation.active and arguments.augmentation == WaveformAugmentation()
        assert arguments.spec_augment.settings() == {}


# ---- the training loader: workers, epochs, resuming ----------------------------------------------------------------


def _epoch_batches(dataset, processor, strategy, workers, epochs, skip=0, output_dir=None):
    """The padded audio of every training batch `CrabTrainer` would feed, epoch by epoch, as `Trainer` iterates."""
    from accelerate import skip_first_batches

    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=2,
        seed=5,
        use_cpu=True,
        report_to="none",
        remove_unused_columns=False,
        train_sampling_strategy=strategy,
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,
    )
    trainer = CrabTrainer(
        model=torch.nn.Linear(1, 1),  # never called: only the loader is used
        args=args,
        train_dataset=dataset,
        data_collator=CrabDataCollator(processor),
        freeze_feature_encoder=False,
    )
    loader = trainer.get_train_dataloader()
    batches = []
    for epoch in epochs:
        epoch_loader = skip_first_batches(loader, skip) if skip and epoch == epochs[0] else loader
        epoch_loader.set_epoch(epoch)
        batches.append([batch["input_values"].clone() for batch in epoch_loader])
    return batches


@pytest.mark.parametrize("strategy", ["group_by_length", "random"])
def test_workers_and_resuming_see_the_same_augmented_batches(corpus, tiny_processor, tmp_path, strategy):
    """The same batches with 0 workers and 2 persistent ones (which never see attributes set after they start), every
    epoch different, and a run resumed in the middle of epoch 1 gets the rest of that epoch unchanged."""
    dataset = _augmented(corpus, WaveformAugmentation(speed_factors=(0.9, 1.1), noise_prob=1.0))
    in_process = _epoch_batches(dataset, tiny_processor, strategy, 0, [0, 1, 2], output_dir=tmp_path)
    persistent = _epoch_batches(dataset, tiny_processor, strategy, 2, [0, 1, 2], output_dir=tmp_path)
    for first, second in zip(in_process, persistent):
        assert len(first) == len(second) == 4
        for a, b in zip(first, second):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(in_process[0][0], in_process[1][0])
    resumed = _epoch_batches(dataset, tiny_processor, strategy, 2, [1, 2], skip=2, output_dir=tmp_path)
    for a, b in zip(resumed[0] + resumed[1], in_process[1][2:] + in_process[2]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_augmentation_keeps_the_batch_order(corpus, tiny_processor, tmp_path):
    """Turning augmentation on changes the clips, not which clips are batched together (both strategies)."""
    train, _, scan = tiny_datasets(corpus)
    for strategy in ("group_by_length", "random"):
        plain = _epoch_batches(train, tiny_processor, strategy, 0, [0, 1], output_dir=tmp_path)
        louder = _augmented(corpus, WaveformAugmentation(gain_db=0.001))  # a gain that changes no length
        augmented = _epoch_batches(louder, tiny_processor, strategy, 0, [0, 1], output_dir=tmp_path)
        for a, b in zip(sum(plain, []), sum(augmented, [])):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


# ---- SpecAugment: the speech encoder's masking -----------------------------------------------------------------------


def _transformer_input(model, batch) -> torch.Tensor:
    """What reaches the speech encoder's transformer (B, T, D) in one forward pass: SpecAugment has masked it."""
    seen = {}
    hook = model.crab.audio_encoder.encoder.register_forward_pre_hook(
        lambda module, args: seen.setdefault("x", args[0])
    )
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        hook.remove()
    return seen["x"]


def _masked_frames(model, batch) -> int:
    """How many frames reach the speech encoder's transformer as `masked_spec_embed` in one forward pass."""
    frames = _transformer_input(model, batch)
    return int((frames == model.crab.audio_encoder.masked_spec_embed).all(dim=-1).sum())


def test_spec_augment_masks_in_training_only_and_its_embedding_exists(tiny_tokenizer, tiny_batch, tmp_path):
    labels = list(LABELS)
    off = training_run.build_model(
        parse_arguments(["--manifest", "m.csv", "--tiny", "--mask_time_prob", "0"]), labels, len(tiny_tokenizer)
    )
    assert off.config.audio_config.mask_time_prob == 0 and not hasattr(off.crab.audio_encoder, "masked_spec_embed")
    off.save_pretrained(tmp_path / "unmasked")

    # turned on from 0 when fine-tuning: the embedding is created and initialised, not left empty
    argv = ["--manifest", "m.csv", "--model_name_or_path", str(tmp_path / "unmasked"), "--mask_time_prob", "0.5"]
    model = training_run.build_model(parse_arguments([*argv, "--mask_time_length", "2"]), labels, len(tiny_tokenizer))
    embed = model.crab.audio_encoder.masked_spec_embed
    assert model.config.audio_config.mask_time_prob == 0.5 and model.config.audio_config.mask_time_length == 2
    assert torch.isfinite(embed).all() and embed.abs().sum() > 0
    batch = {key: value for key, value in tiny_batch.items() if key != "labels"}
    assert _masked_frames(model.eval(), batch) == 0
    assert _masked_frames(model.train(), batch) > 0
    model.save_pretrained(tmp_path / "masked")
    assert "crab.audio_encoder.masked_spec_embed" in __import__("safetensors.torch").torch.load_file(
        str(tmp_path / "masked" / "model.safetensors")
    )


def test_spec_augment_masks_feature_channels_in_training_only(tiny_tokenizer, tiny_batch):
    """`--mask_feature_prob` on WavLM, whose config has no `mask_feature_min_masks` of its own for SpecAugment."""
    argv = ["--manifest", "m.csv", "--tiny", "--mask_time_prob", "0", "--mask_feature_prob", "0.5"]
    arguments = parse_arguments([*argv, "--mask_feature_length", "8"])
    model = training_run.build_model(arguments, list(LABELS), len(tiny_tokenizer))
    batch = {key: value for key, value in tiny_batch.items() if key != "labels"}
    seen = [_transformer_input(model.eval(), batch), _transformer_input(model.train(), batch)]
    silent = [int((x == 0).all(dim=1).sum()) for x in seen]  # channels zero over every frame, summed over clips
    assert silent[0] == 0 and silent[1] >= 8


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_run_trains_on_the_uninterrupted_runs_audio(corpus, tiny_config, tiny_processor, tmp_path, workers):
    """Training end to end with augmentation and random batches (the release recipe's): stopped after step 3 (in
    the middle of the first epoch) and resumed, the run logs the uninterrupted run's losses and ends with its weights. Persistent workers get the same
    clips (`test_workers_and_resuming_see_the_same_augmented_batches`), but the resumed run's first worker start
    draws one more number from torch's generator, so its dropout masks differ, with or without augmentation."""
    from transformers import TrainerCallback

    from modeling_crab import CrabForEmotionClassification

    class StopAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = control.should_training_stop or state.global_step == 3

    dataset = _augmented(corpus, EVERYTHING, max_duration_s=0.6)

    def trainer(output_dir, callbacks=()):
        torch.manual_seed(0)
        args = tiny_training_arguments(
            output_dir,
            **RESUMABLE,
            per_device_train_batch_size=2,  # 4 steps an epoch: step 3 is mid-epoch
            dataloader_pin_memory=True,
            train_sampling_strategy="random",
            dataloader_num_workers=workers,
        )
        return CrabTrainer(
            model=CrabForEmotionClassification(tiny_config),
            args=args,
            train_dataset=dataset,
            data_collator=CrabDataCollator(tiny_processor),
            callbacks=list(callbacks),
        )

    full = trainer(tmp_path / "full")
    full.train()
    trainer(tmp_path / "run", [StopAtStep()]).train()
    resumed = trainer(tmp_path / "run")
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    losses = [[entry["loss"] for entry in run.state.log_history if "loss" in entry] for run in (full, resumed)]
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-4, atol=1e-5)
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, full.model.state_dict()[name], rtol=1e-4, atol=1e-5, msg=name)
