"""How fast the training input pipeline turns files into padded batches: the ceiling it puts on a GPU step.

    python bench/bench_data.py                          # 16 kHz WAV and 44.1 kHz FLAC, 0/1/2 DataLoader workers
    python bench/bench_data.py --clips 200 --workers 0,2,4,8
    python bench/bench_data.py --tables augment         # one worker's throughput with each waveform augmentation

Last rows: the inference processor alone on 64 in-memory 6 s arrays (what the pipeline does before the model).

The pipeline is `train.py`'s: `CrabAudioTextDataset` (the pipeline's block-wise reader: crop to 12 s, downmix, resample) and
`CrabDataCollator` (global normalisation, padding, tokenisation) in a `DataLoader`, over clips written to a
temporary folder (uniform 1-12 s, noise). audio-s/s here is what the loader delivers with the model doing nothing:
a GPU that trains at R audio-s/s needs enough workers for this to stay above R.

`--tables augment`: the training dataset with waveform augmentation (`training/augment.py`: none, each step alone,
all together), 16 kHz WAV, sampled as `CrabTrainer` samples it (`(epoch, index)` pairs), in one process with one
torch thread: what one DataLoader worker (one thread, one core) delivers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import format_table, record
from transformers import Wav2Vec2FeatureExtractor

from modeling_crab import CrabProcessor
from modeling_crab.manifest import Utterance
from modeling_crab.training import CrabAudioTextDataset, CrabDataCollator, EpochIndexSampler
from modeling_crab.training.augment import WaveformAugmentation
from modeling_crab.training.tiny import build_tiny_tokenizer

FORMATS = {"wav16k": ("WAV", "PCM_16", 16000), "flac44k": ("FLAC", "PCM_16", 44100)}
WORDS = "well i really did not expect that to happen today but here we are again".split()


def write_clips(folder: Path, fmt: str, count: int, seed: int) -> tuple[list[Utterance], dict[str, int]]:
    """`count` clips of `fmt` (uniform 1-12 s), their utterances and 16 kHz lengths."""
    container, subtype, rate = FORMATS[fmt]
    rng = np.random.default_rng(seed)
    utterances, num_samples = [], {}
    for i in range(count):
        seconds = rng.uniform(1.0, 12.0)
        path = folder / f"{fmt}_{i}.{container.lower()}"
        sf.write(str(path), (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate, subtype=subtype)
        text = " ".join(rng.choice(WORDS, size=int(3 * seconds)))
        utterances.append(Utterance(id=f"{fmt}_{i}", audio=str(path), text=text, label="a", split="train"))
        num_samples[f"{fmt}_{i}"] = int(seconds * 16000)
    return utterances, num_samples


# one step at a time, then all together, at the settings a small-data run would try
AUGMENTATIONS = {
    "none": WaveformAugmentation(),
    "pitch p=1 (+-4 semitones)": WaveformAugmentation(pitch_prob=1.0, pitch_semitones=(-4.0, 4.0)),
    "speed 0.9/1.0/1.1": WaveformAugmentation(speed_factors=(0.9, 1.0, 1.1)),
    "gain +-6 dB": WaveformAugmentation(gain_db=6.0),
    "noise p=1 (white/pink/brown)": WaveformAugmentation(noise_prob=1.0),
    "reverb p=1 (RT60 0.2-0.8 s)": WaveformAugmentation(reverb_prob=1.0),
    "all (pitch p=1, speed, reverb p=1, noise p=1, gain)": WaveformAugmentation(
        pitch_prob=1.0, speed_factors=(0.9, 1.0, 1.1), gain_db=6.0, noise_prob=1.0, reverb_prob=1.0
    ),
}


def time_loader(dataset, collator, workers: int, batch_size: int, sampler=None) -> tuple[float, int]:
    """(seconds, batches) to iterate the whole dataset once, workers started inside the timing."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, collate_fn=collator, num_workers=workers, shuffle=False, sampler=sampler
    )
    start = time.perf_counter()
    batches = sum(1 for _ in loader)
    return time.perf_counter() - start, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=48, help="clips per format")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--results", default="bench/RESULTS.md", help="append the table here ('' to skip)")
    parser.add_argument("--tables", default="formats", help="comma-separated: formats (files, workers), augment")
    args = parser.parse_args()
    tables = args.tables.split(",")

    tokenizer = build_tiny_tokenizer(WORDS, vocab_size=400)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, return_attention_mask=True)
    processor = CrabProcessor(extractor, tokenizer, max_duration_s=12.0, max_text_length=128)
    processor.set_waveform_stats(0.0, 0.1)
    collator = CrabDataCollator(processor)
    if "augment" in tables:
        bench_augmentation(args, collator)
    if "formats" not in tables:
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed, fmt in enumerate(FORMATS):
            utterances, num_samples = write_clips(Path(folder), fmt, args.clips, seed)
            dataset = CrabAudioTextDataset(utterances, {"a": 0}, 12.0, num_samples)
            audio_s = sum(num_samples.values()) / 16000
            dataset[0]  # first-read costs (imports, resampling kernels) outside the timing
            for workers in (int(w) for w in args.workers.split(",")):
                seconds, batches = time_loader(dataset, collator, workers, args.batch_size)
                rows.append(
                    {
                        "files": f"{fmt} ({FORMATS[fmt][2] // 1000} kHz {FORMATS[fmt][0]})",
                        "workers": workers,
                        "batches": batches,
                        "audio-s/s": f"{audio_s / seconds:.0f}",
                        "ms/batch": f"{1000 * seconds / batches:.0f}",
                    }
                )
                print(rows[-1], flush=True)
        rng = np.random.default_rng(0)  # the inference processor alone, on in-memory arrays (the pipeline's input)
        texts = [" ".join(rng.choice(WORDS, size=18)) for _ in range(64)]
        for rate in (16000, 44100):
            waveforms = [(0.1 * rng.standard_normal(6 * rate)).astype(np.float32) for _ in range(64)]
            times = []
            for _ in range(6):  # the median of 5 after one warm-up call (first-touch page faults)
                start = time.perf_counter()
                processor(audio=waveforms, text=texts, sampling_rate=rate)
                times.append(time.perf_counter() - start)
            seconds = sorted(times[1:])[2]
            rows.append(
                {
                    "files": f"arrays at {rate / 1000:g} kHz -> CrabProcessor (inference)",
                    "workers": 0,
                    "batches": 1,
                    "audio-s/s": f"{64 * 6 / seconds:.0f}",
                    "ms/batch": f"{1000 * seconds:.0f}",
                }
            )
            print(rows[-1], flush=True)
    notes = [
        f"{args.clips} clips per format, uniform 1-12 s, batch {args.batch_size}; worker start-up included",
        "a GPU step at R audio-s/s needs the loader above R: e.g. 1500 audio-s/s needs 1500 / (per-worker rate) workers",
    ]
    table = format_table(rows, ["files", "workers", "batches", "audio-s/s", "ms/batch"])
    record(args.results, "Input pipeline (files -> padded batches), cpu", torch.device("cpu"), table, notes)


def bench_augmentation(args, collator) -> None:
    """One worker's audio-s/s (one process, one torch thread) with each waveform augmentation, 16 kHz WAV."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        utterances, num_samples = write_clips(Path(folder), "wav16k", args.clips, 0)
        audio_s = sum(num_samples.values()) / 16000
        baseline = None
        for name, augmentation in AUGMENTATIONS.items():
            dataset = CrabAudioTextDataset(utterances, {"a": 0}, 12.0, num_samples, augmentation, seed=0)
            sampler = EpochIndexSampler(range(len(dataset)))
            dataset[(0, 0)]  # first-use costs (resampling kernels) outside the timing
            times = []
            for epoch in range(3):  # the median of 3 epochs (different draws)
                sampler.set_epoch(epoch)
                seconds, batches = time_loader(dataset, collator, 0, args.batch_size, sampler)
                times.append(seconds)
            seconds = sorted(times)[1]
            baseline = baseline or seconds
            rows.append(
                {
                    "augmentation": name,
                    "audio-s/s per worker": f"{audio_s / seconds:.0f}",
                    "ms/batch": f"{1000 * seconds / batches:.0f}",
                    "vs none": f"{baseline / seconds:.2f}x",
                }
            )
            print(rows[-1], flush=True)
    torch.set_num_threads(threads)
    notes = [
        f"{args.clips} clips of 16 kHz WAV, uniform 1-12 s, crop 12 s, batch {args.batch_size}, the median of 3 epochs",
        "one process, one torch thread: what one DataLoader worker delivers (train.py: up to 4 workers per GPU)",
    ]
    table = format_table(rows, ["augmentation", "audio-s/s per worker", "ms/batch", "vs none"])
    record(
        args.results, "Input pipeline with waveform augmentation (one worker), cpu", torch.device("cpu"), table, notes
    )


if __name__ == "__main__":
    main()
