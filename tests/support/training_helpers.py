"""Small on-disk corpora for the training tests: class-dependent tones with matching transcripts."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

LABELS = ("angry", "happy", "neutral", "sad")
WORDS = {"angry": "i hate this", "happy": "what a great day", "neutral": "the bus is late", "sad": "i miss her"}
PITCH_HZ = {"angry": 300.0, "happy": 450.0, "neutral": 200.0, "sad": 120.0}
# (arousal, valence, dominance) of each class on the 0-1 scale, the attribute columns of `write_corpus(attributes=True)`
ATTRIBUTES = {"angry": (0.9, 0.2, 0.8), "happy": (0.7, 0.9, 0.6), "neutral": (0.4, 0.5, 0.5), "sad": (0.1, 0.2, 0.2)}


def write_tone(path: Path, hz: float, seconds: float, sampling_rate: int = 16000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    mono = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    data = mono if channels == 1 else np.stack([mono] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sampling_rate)
    return mono


def write_corpus(root: Path, per_class: dict[str, int] | None = None, seed: int = 0, attributes: bool = False) -> Path:
    """`root/manifest.csv` with `per_class[split]` clips per label and split (0.4-1.2 s each); returns the path.
    `attributes`: `arousal`, `valence` and `dominance` columns, each class's `ATTRIBUTES` +- 0.05."""
    per_class = per_class or {"train": 3, "dev": 1}
    rng = np.random.default_rng(seed)
    rows = []
    for split, count in per_class.items():
        for label in LABELS:
            for i in range(count):
                uid = f"{split}_{label}_{i}"
                write_tone(root / "wavs" / f"{uid}.wav", PITCH_HZ[label], rng.uniform(0.4, 1.2))
                rows.append(
                    {"id": uid, "audio": f"wavs/{uid}.wav", "text": WORDS[label], "label": label, "split": split}
                )
                if attributes:
                    values = np.asarray(ATTRIBUTES[label]) + rng.uniform(-0.05, 0.05, 3)
                    rows[-1].update(zip(("arousal", "valence", "dominance"), np.round(values.clip(0, 1), 3).tolist()))
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def train_main(argv: list[str]) -> dict[str, float]:
    """What `python train.py ARGV` does, in this process: parse and check the arguments, then train; the metrics.
    A bad argument exits (status 2) as on the command line; a bad manifest, checkpoint or setting found later raises
    its own error (`train.py` turns those into `train.py: error: ...` lines)."""
    from modeling_crab.training.arguments import parse_arguments
    from modeling_crab.training.run import train

    return train(parse_arguments(argv))


def tiny_datasets(manifest: Path, max_duration_s: float = 12.0):
    """(train, dev) `CrabAudioTextDataset`s of a `write_corpus` manifest, with lengths, and the scan."""
    from modeling_crab.manifest import load_manifest, select_split
    from modeling_crab.training import CrabAudioTextDataset, scan_manifest

    utterances = load_manifest(manifest)
    scan = scan_manifest(utterances, list(LABELS), labelled_splits=["dev"])
    label2id = {name: i for i, name in enumerate(LABELS)}
    return tuple(
        CrabAudioTextDataset(select_split(utterances, split), label2id, max_duration_s, scan.num_samples)
        for split in ("train", "dev")
    ) + (scan,)


def run_argv(manifest, out, *extra) -> list[str]:
    """train.py arguments of a tiny 4-step run that saves a checkpoint at every step."""
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(out), "--max_steps", "4"]
    argv += ["--save_strategy", "steps", "--save_steps", "1", "--eval_strategy", "no"]
    argv += ["--load_best_model_at_end", "False", "--max_duration_s", "0.5", "--disable_tqdm", "True"]
    argv += ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--save_total_limit", "5"]
    return argv + list(extra)


def tiny_training_arguments(output_dir, **overrides):
    """`TrainingArguments` of the CPU training tests: a tiny model's learning rate, no reporting or progress bars,
    every batch column kept; `overrides` set the rest (steps, saving, sampling, workers)."""
    from transformers import TrainingArguments

    settings = dict(learning_rate=2e-3, logging_steps=1, report_to="none", use_cpu=True, dataloader_pin_memory=False)
    settings.update(remove_unused_columns=False, disable_tqdm=True)
    return TrainingArguments(output_dir=str(output_dir), **{**settings, **overrides})


# a run that saves at step 3 of 6: the interrupted and resumed runs of the checkpoint tests
RESUMABLE = dict(max_steps=6, save_strategy="steps", save_steps=3, seed=7)
