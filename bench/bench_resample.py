"""The two resamplers side by side: the windowed-sinc `audio.resample` (travels with checkpoints) and soxr (what
training used), by speed and by error against an ideal band-limited signal.

    python bench/bench_resample.py                      # 60 s at 44.1, 48 and 8 kHz -> 16 kHz
    python bench/bench_resample.py --seconds 10 --results ''

The reference is a sum of sines below 7 kHz evaluated analytically at the output times, so any error is the
resampler's; the first and last 100 ms (filter edges) are left out.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np
import torch
from common import format_table, record

from modeling_crab.audio import LOWPASS_FILTER_WIDTH, resample

TARGET_SR = 16_000
FREQUENCIES_HZ = (110.0, 440.0, 1234.5, 3000.0, 5500.0, 6900.0)  # all below 7 kHz


def band_limited(num_samples: int, rate: int, below_hz: float) -> np.ndarray:
    """The sines of `FREQUENCIES_HZ` below `below_hz` (an 8 kHz file holds nothing above 4 kHz), peak 1."""
    t = np.arange(num_samples, dtype=np.float64) / rate
    sines = [(i, f) for i, f in enumerate(FREQUENCIES_HZ) if f < below_hz]
    return sum(np.sin(2 * np.pi * f * t + i) for i, f in sines) / len(sines)


def soxr_resample(waveform: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    import soxr  # not a Crab dependency any more: `pip install soxr` to run this row

    return soxr.resample(waveform, orig_sr, target_sr).astype(np.float32)


def best_time(fn, repeats: int) -> float:
    fn()  # plans, kernels and imports outside the timing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rates", default="44100,48000,8000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", default="bench/RESULTS.md", help="append the table here ('' to skip)")
    args = parser.parse_args()

    resamplers = {
        f"processor, {LOWPASS_FILTER_WIDTH} zero crossings (now)": resample,
        "processor, 6 zero crossings (before)": lambda x, a, b: resample(x, a, b, lowpass_filter_width=6),
        "soxr HQ (training, before)": soxr_resample,
    }
    if importlib.util.find_spec("soxr") is None:
        del resamplers["soxr HQ (training, before)"]
    rows = []
    for rate in [int(r) for r in args.rates.split(",")]:
        below_hz = min(7_000.0, 0.45 * rate)
        signal = band_limited(int(args.seconds * rate), rate, below_hz).astype(np.float32)
        reference = band_limited(int(np.ceil(len(signal) * TARGET_SR / rate)), TARGET_SR, below_hz)
        edge = TARGET_SR // 10  # 100 ms
        for name, fn in resamplers.items():
            output = fn(signal, rate, TARGET_SR)
            n = min(len(output), len(reference))
            error = output[edge : n - edge].astype(np.float64) - reference[edge : n - edge]
            seconds = best_time(lambda fn=fn, signal=signal, rate=rate: fn(signal, rate, TARGET_SR), args.repeats)
            rows.append(
                {
                    "rate": f"{rate / 1000:g} kHz -> 16 kHz",
                    "resampler": name,
                    "ms": f"{seconds * 1000:.0f}",
                    "x real time": f"{args.seconds / seconds:.0f}",
                    "max error": f"{np.abs(error).max():.1e}",
                    "RMS error": f"{np.sqrt((error**2).mean()):.1e}",
                    "samples": f"{len(output)} (ideal {len(reference)})",
                }
            )
    table = format_table(rows, ["rate", "resampler", "ms", "x real time", "max error", "RMS error", "samples"])
    notes = [
        f"{args.seconds:g} s of the sines {FREQUENCIES_HZ} Hz below 7 kHz (below 3.6 kHz for 8 kHz input), peak 1, float32 in; error against the "
        "analytic signal at the output times, first/last 100 ms left out; best of "
        f"{args.repeats} runs, torch threads {torch.get_num_threads()}"
    ]
    record(args.results or None, "Resampling: the processor's resampler vs soxr", torch.device("cpu"), table, notes)


if __name__ == "__main__":
    main()
