"""Waveform augmentation of the training audio: pitch shift, speed perturbation, reverberation, additive noise and
gain.

`WaveformAugmentation` says what to do; calling it on one (N,) float32 16 kHz mono waveform with a
`numpy.random.Generator` does it. `CrabAudioTextDataset(..., augmentation=...)` applies it to the training split only
(dev, test and serving read the plain audio), with the generator of `item_rng(seed, epoch, index)`: an item's
augmentation depends on nothing else, so a resumed run sees the uninterrupted run's audio, whatever the DataLoader
workers (the epoch reaches them inside the sampled indices: `collator.EpochIndexSampler`).

SpecAugment is not here: it is the speech encoder's own masking of its hidden states in training mode
(`mask_time_prob`, `mask_time_length`, `mask_feature_prob`, `mask_feature_length` of `CrabConfig.audio_config`),
which `train.py`'s flags of the same names set.

Order, per clip: pitch shift -> speed perturbation (then the crop to `max_duration_s`) -> reverberation -> noise at the
drawn SNR (relative to the reverberant clip) -> gain. Each step draws from its own child of the item's generator, so
turning one step on or off leaves the other steps' draws unchanged.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..dsp import istft, shaped_noise, stft
from ..options import CLOSED_PROBABILITY, option

SAMPLING_RATE = 16_000  # of training audio (`data.load_audio`), which these functions take and return
NOISE_TYPES = ("white", "pink", "brown")
_NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power ~ 1/f^exponent
# Speed factors are resampling ratios round(16000 f) -> 16000 Hz; outside this range speech stops sounding like speech.
SPEED_RANGE = (0.5, 2.0)
# RIR length: the time the synthetic tail takes to decay by 60 dB, capped here.
MAX_RIR_S = 2.0
# Pitch shifts, in semitones, that `--pitch_semitones` accepts (an octave either way).
PITCH_RANGE = (-12.0, 12.0)
# Phase vocoder frames: 32 ms (periodic) Hann windows, 8 ms apart.
_VOCODER_FFT, _VOCODER_HOP = 512, 128
_VOCODER_WINDOW = np.hanning(_VOCODER_FFT + 1)[:-1].astype(np.float32)


def _whole(value) -> bool:
    return isinstance(value, int) and value >= 1


class AugmentationError(ValueError):
    """Augmentation settings that cannot work (out-of-range values, a noise folder without usable clips)."""


@dataclass
class WaveformAugmentation:
    """What to do to each training clip. The defaults do nothing; the field names are `train.py`'s flags.

    Args:
        pitch_prob: the probability that a clip is pitch-shifted, by a number of semitones drawn uniformly in
            `pitch_semitones`, keeping its tempo and length (`pitch_shift`). Voices differ in pitch by more than
            emotions move it (an octave between speakers, a few semitones between emotions), so a model trained on a
            few voices learns each voice's pitch; shifting them makes it rely on how the pitch moves instead.
        pitch_semitones: LOW HIGH, the range of pitch shifts.
        speed_factors: speed perturbation (Kaldi/SpeechBrain style): a factor drawn uniformly from these per clip;
            factor f resamples the clip from round(16000 f) Hz to 16000 Hz with the one resampler
            (`audio.resample`), so it has about N / f samples and its tempo and pitch change together. Empty: none.
        gain_db: a gain drawn uniformly in [-gain_db, +gain_db] dB. Not clipped: the waveform is float and the
            processor normalises it next; clipping would add a distortion the gain is not meant to model.
        noise_prob: the probability that a clip gets additive noise, at an SNR (signal power over noise power, both
            the mean square over the clip) drawn uniformly in `noise_snr_db`. A silent clip (peak-to-peak below one
            16-bit step) gets none: its SNR is undefined.
        noise_types: generated noise colours, one drawn per clip: white, pink (1/f power) or brown (1/f^2).
        noise_dir: a folder of noise recordings (WAV, FLAC, OGG, MP3, searched recursively) used instead of generated
            noise: a file drawn uniformly, a random segment of it (looped if shorter than the clip).
        reverb_prob: the probability that a clip is convolved with a synthetic room impulse response: a direct path
            and an exponentially decaying noise tail of equal energy, whose RT60 is drawn uniformly in
            `reverb_rt60_s`. The output keeps the clip's length and RMS level.
    """

    _argument_group_name = "WaveformAugmentation (the training audio only)"  # train.py's group of these flags

    pitch_prob: float = option(0.0, "pitch shift probability per clip")
    pitch_semitones: list[float] = option(help="LOW HIGH, in semitones", default_factory=lambda: [-4.0, 4.0])
    speed_factors: list[float] = option(
        help="speed perturbation: a factor drawn per clip from these (0.9 1.0 1.1); none: off", default_factory=list
    )
    gain_db: float = option(0.0, "a gain drawn in +-N dB, not clipped")
    noise_prob: float = option(0.0, "noise probability per clip")
    noise_snr_db: list[float] = option(help="LOW HIGH: SNR in dB", default_factory=lambda: [5.0, 20.0])
    noise_types: list[str] = option(
        help=f"generated noise colours to draw from ({', '.join(NOISE_TYPES)})", default_factory=lambda: [*NOISE_TYPES]
    )
    noise_dir: str | None = option(None, "a folder of noise recordings (WAV/FLAC) to add instead of generated noise")
    reverb_prob: float = option(0.0, "reverberation probability per clip")
    reverb_rt60_s: list[float] = option(help="LOW HIGH: RT60 in s", default_factory=lambda: [0.2, 0.8])
    # 16 kHz lengths of the noise folder's files, filled by `load_noise` (not a setting)
    _noise_lengths: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("pitch_semitones", "speed_factors", "noise_snr_db", "noise_types", "reverb_rt60_s"):
            setattr(self, name, tuple(getattr(self, name) or ()))
        self.speed_factors = tuple(float(f) for f in self.speed_factors)
        problems = self.problems()
        if problems:
            raise AugmentationError("\n".join(problems))

    def problems(self) -> list[str]:
        """Every setting out of range, each naming its flag and what to pass (checked at construction)."""
        problems = []
        low, high = SPEED_RANGE
        if not all(math.isfinite(f) and low <= f <= high for f in self.speed_factors):
            problems.append(f"--speed_factors {list(self.speed_factors)}: pass factors in [{low}, {high}]")
        if not (math.isfinite(self.gain_db) and 0 <= self.gain_db <= 40):
            problems.append(f"--gain_db {self.gain_db!r}: pass a number of dB in [0, 40]")
        for name in ("pitch_prob", "noise_prob", "reverb_prob"):
            value = getattr(self, name)
            if not (0 <= value <= 1):
                problems.append(f"--{name} {value!r}: pass a probability in [0, 1]")
        ranges = (
            ("pitch_semitones", PITCH_RANGE),
            ("noise_snr_db", (-20.0, 60.0)),
            ("reverb_rt60_s", (0.05, MAX_RIR_S)),
        )
        for name, bounds in ranges:
            value = getattr(self, name)
            if len(value) != 2 or not all(bounds[0] <= v <= bounds[1] for v in value) or value[0] > value[1]:
                problems.append(
                    f"--{name} {list(value)}: pass LOW HIGH with {bounds[0]} <= LOW <= HIGH <= {bounds[1]}"
                )
        unknown = [kind for kind in self.noise_types if kind not in NOISE_TYPES]
        if unknown or not self.noise_types:
            problems.append(f"--noise_types {list(self.noise_types)}: pass one or more of {', '.join(NOISE_TYPES)}")
        if self.noise_dir is not None:
            try:
                noise_files(self.noise_dir)
            except AugmentationError as error:
                problems.append(str(error))
        return problems

    @property
    def active(self) -> bool:
        """Whether it changes any clip."""
        speed = any(f != 1.0 for f in self.speed_factors)
        pitch = self.pitch_prob > 0 and any(s != 0 for s in self.pitch_semitones)
        return pitch or speed or self.gain_db > 0 or self.noise_prob > 0 or self.reverb_prob > 0

    def to_dict(self) -> dict:
        """The settings, as saved in `config.json` (`CrabConfig.augmentation`) and shown on the model card."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.init}

    def input_seconds(self, max_duration_s: float | None) -> float | None:
        """How many seconds of a clip to read so that, after the fastest speed factor, `max_duration_s` remain."""
        if max_duration_s is None or not self.speed_factors:
            return max_duration_s
        from ..audio import crop_length, resample_input_length  # on use: train.py --help imports this module

        fastest = max(self.speed_factors)
        kept = crop_length(max_duration_s, SAMPLING_RATE)
        return resample_input_length(kept, round(SAMPLING_RATE * fastest), SAMPLING_RATE) / SAMPLING_RATE

    def load_noise(self) -> None:
        """Read every file of `noise_dir` once (with `audio.read_audio`), keeping their lengths: an unreadable,
        empty or silent file raises `AugmentationError` naming it, before training. No-op without `noise_dir`."""
        if self.noise_dir is None or self._noise_lengths is not None:
            return
        lengths = {}
        for path in noise_files(self.noise_dir):
            noise = _read_noise(path)
            if len(noise) == 0 or not np.isfinite(noise).all() or not np.any(noise):
                what = "empty" if len(noise) == 0 else "silent" if np.isfinite(noise).all() else "NaN or infinite"
                raise AugmentationError(
                    f"noise file '{path}' is {what}; remove it from --noise_dir '{self.noise_dir}' or re-export it"
                )
            lengths[str(path)] = len(noise)
        self._noise_lengths = lengths

    def __call__(self, waveform: np.ndarray, rng: np.random.Generator, max_duration_s: float | None = None):
        """One clip, augmented: (N,) float32 at 16 kHz -> (M,) float32 at 16 kHz, M about N / speed factor, cut to
        `max_duration_s` after the speed perturbation. Finite for finite input (silence included)."""
        speed_rng, reverb_rng, noise_rng, gain_rng, pitch_rng = rng.spawn(5)  # pitch last: the others as spawn(4)
        out = np.asarray(waveform, dtype=np.float32)
        if self.pitch_prob > 0 and pitch_rng.random() < self.pitch_prob:
            out = pitch_shift(out, float(pitch_rng.uniform(*self.pitch_semitones)))
        if self.speed_factors:
            out = speed_perturb(out, float(speed_rng.choice(self.speed_factors)))
        if max_duration_s is not None:
            from ..audio import crop_length  # on use: train.py --help imports this module

            out = out[: crop_length(max_duration_s, SAMPLING_RATE)]
        if self.reverb_prob > 0 and reverb_rng.random() < self.reverb_prob:
            out = reverberate(out, float(reverb_rng.uniform(*self.reverb_rt60_s)), reverb_rng)
        if self.noise_prob > 0 and noise_rng.random() < self.noise_prob:
            snr_db = float(noise_rng.uniform(*self.noise_snr_db))
            out = add_noise(out, self.noise(len(out), noise_rng), snr_db)
        if self.gain_db > 0:
            out = out * np.float32(10 ** (gain_rng.uniform(-self.gain_db, self.gain_db) / 20))
        return out.astype(np.float32, copy=False)

    def noise(self, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """(num_samples,) float32 noise: a random segment of a `noise_dir` file, or generated noise of a colour
        drawn from `noise_types`."""
        if self.noise_dir is None:
            return colored_noise(str(rng.choice(self.noise_types)), num_samples, rng)
        self.load_noise()
        paths = list(self._noise_lengths)
        path = paths[int(rng.integers(len(paths)))]
        length = self._noise_lengths[path]
        if length >= num_samples:
            start = int(rng.integers(length - num_samples + 1))
            segment = _read_noise(path, start / SAMPLING_RATE, (start + num_samples) / SAMPLING_RATE)
        else:  # shorter than the clip: looped, from a random point
            segment = np.roll(_read_noise(path), -int(rng.integers(length)))
        return np.resize(segment, num_samples).astype(np.float32)


@dataclass
class SpecAugment:
    """The speech encoder's own masking of its hidden states in training (its config's `mask_time_prob`,
    `mask_time_length`, `mask_feature_prob`, `mask_feature_length`); None keeps the encoder's value."""

    _argument_group_name = "SpecAugment (the speech encoder's masking in training)"  # train.py's group

    mask_time_prob: float | None = option(
        None, "SpecAugment: the time-masking probability; none: the encoder's own", check=CLOSED_PROBABILITY
    )
    mask_time_length: int | None = option(
        None,
        "SpecAugment: frames per time mask; none: the encoder's own",
        check=(_whole, "a whole number of frames >= 1"),
    )
    mask_feature_prob: float | None = option(
        None, "SpecAugment: the feature-masking probability; none: the encoder's own", check=CLOSED_PROBABILITY
    )
    mask_feature_length: int | None = option(
        None,
        "SpecAugment: channels per feature mask; none: the encoder's own",
        check=(_whole, "a whole number of channels >= 1"),
    )

    def settings(self) -> dict:
        """The values set, for the speech encoder's config (the others keep the encoder's)."""
        return {name: value for name, value in vars(self).items() if value is not None}


# the speech encoder config's SpecAugment settings (`audio_config`), set by train.py's flags of the same names
SPEC_AUGMENT_KEYS = tuple(spec.name for spec in fields(SpecAugment))


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of item `index` in `epoch` of a run seeded with `seed`: the same triple, the same draws."""
    return np.random.default_rng([seed % 2**63, epoch, index])


def noise_files(folder: str | os.PathLike) -> list[Path]:
    """The audio files under `folder` (recursively, sorted); `AugmentationError` naming the folder and the fix when
    it is missing, not a folder or holds none."""
    from ..audio import AUDIO_SUFFIXES, audio_files  # here: the arguments' checks import this; audio imports torch

    root = Path(folder)
    if not root.exists():
        raise AugmentationError(
            f"--noise_dir '{folder}' does not exist; pass a folder of noise recordings (WAV/FLAC), or leave "
            "--noise_dir out for generated noise"
        )
    if not root.is_dir():
        raise AugmentationError(f"--noise_dir '{folder}' is a file, not a folder; pass the folder that holds it")
    files = audio_files(root)
    if not files:
        raise AugmentationError(
            f"--noise_dir '{folder}' holds no audio files ({', '.join(AUDIO_SUFFIXES)}); put noise recordings in "
            "it, or leave --noise_dir out for generated noise"
        )
    return files


def _read_noise(path, start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
    from ..audio import read_audio  # on use: train.py --help imports this module

    try:
        waveform, _ = read_audio(path, f"noise file '{path}'", SAMPLING_RATE, start_s, end_s)
    except Exception as error:  # a decoder's own exception on a damaged file
        raise AugmentationError(
            f"noise file '{path}' is unreadable ({error}); convert it to WAV/FLAC or remove it from --noise_dir"
        ) from None
    return waveform


def speed_perturb(waveform: np.ndarray, factor: float) -> np.ndarray:
    """Play `waveform` (16 kHz) `factor` times faster: resampled from round(16000 factor) Hz to 16000 Hz by the
    one resampler (`audio.resample`), so tempo and pitch change together and the output has ceil(N / factor)
    samples."""
    from ..audio import resample  # on use: train.py --help imports this module

    return resample(waveform, round(SAMPLING_RATE * factor), SAMPLING_RATE)


def pitch_shift(waveform: np.ndarray, semitones: float) -> np.ndarray:
    """`waveform` (16 kHz) `semitones` higher (lower when negative), with the same tempo, length and RMS level: the
    phase vocoder (`time_stretch`) makes it f times longer, then `speed_perturb` plays it f times faster, f being
    2^(semitones / 12) rounded to a multiple of 0.01 (at most 0.09 semitone off; it keeps the resampling ratio
    small). As librosa's and torchaudio's `pitch_shift`, the formants move with the pitch."""
    factor = round(2.0 ** (semitones / 12.0), 2)
    if factor == 1.0 or len(waveform) == 0:
        return np.asarray(waveform, dtype=np.float32)
    shifted = speed_perturb(time_stretch(waveform, 1.0 / factor), factor)
    shifted = np.pad(shifted[: len(waveform)], (0, max(0, len(waveform) - len(shifted))))
    return _with_rms_of(shifted, waveform)


def time_stretch(waveform: np.ndarray, rate: float) -> np.ndarray:
    """`waveform` played `rate` times faster at the same pitch, round(N / rate) samples: a phase vocoder (as
    librosa's) over 32 ms frames 8 ms apart, the magnitudes interpolated between frames and each bin's phase advanced
    by its measured frequency."""
    x = np.ascontiguousarray(waveform, dtype=np.float32)
    length = int(round(len(x) / rate))
    if rate == 1.0 or len(x) == 0:
        return x
    # frames centred on 0, hop, 2 hop, ...: half a frame reflected at each end (zeros past a clip shorter than that)
    half = _VOCODER_FFT // 2
    reflected = min(half, len(x) - 1)
    padded = np.pad(np.pad(x, reflected, mode="reflect"), half - reflected)
    spectrum = stft(padded, _VOCODER_FFT, _VOCODER_HOP, _VOCODER_WINDOW)
    # the per-bin arithmetic frames first (gathering whole frames is faster than gathering columns); two silent
    # frames follow the last
    magnitude = np.concatenate([np.abs(spectrum), np.zeros((2, spectrum.shape[1]), np.float32)])
    angle = np.concatenate([np.angle(spectrum), np.zeros((2, spectrum.shape[1]), np.float32)])
    # each bin's phase advance from one frame to the next: the advance of its centre frequency, plus the measured
    # deviation from it (wrapped to +-pi), then wrapped to [0, 2 pi) so that a float32 sum of them stays exact enough
    two_pi = np.float32(2 * np.pi)
    expected = np.linspace(0, np.pi * _VOCODER_HOP, spectrum.shape[1], dtype=np.float32)
    deviation = angle[1:] - angle[:-1] - expected
    advance = expected + deviation - two_pi * np.round(deviation / two_pi)
    advance -= two_pi * np.floor(advance / two_pi)  # np.remainder's float32 path is ten times slower
    steps = np.arange(0, len(spectrum), rate)
    frame = steps.astype(np.int64)
    fraction = (steps - frame).astype(np.float32)[:, None]
    magnitude = (1 - fraction) * magnitude[frame] + fraction * magnitude[frame + 1]
    phase = np.empty_like(magnitude)
    phase[0] = angle[0]
    np.cumsum(advance[frame[:-1]], axis=0, out=phase[1:])
    phase[1:] += angle[0]
    stretched = magnitude * np.cos(phase) + 1j * (magnitude * np.sin(phase))
    return istft(stretched, _VOCODER_FFT, _VOCODER_HOP, _VOCODER_WINDOW, half + length)[half:].astype(np.float32)


def _with_rms_of(waveform: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`waveform` scaled to `reference`'s RMS level (unchanged when either is silent), as float32."""
    rms = math.sqrt(float(np.mean(np.square(waveform, dtype=np.float64)))) if len(waveform) else 0.0
    target = math.sqrt(float(np.mean(np.square(reference, dtype=np.float64)))) if len(reference) else 0.0
    return (waveform * (target / rms) if rms > 0 else waveform).astype(np.float32)


def colored_noise(kind: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """(num_samples,) float32 noise of unit RMS: white, pink (power 1/f) or brown (1/f^2), flat below 20 Hz."""
    return shaped_noise(num_samples, _NOISE_EXPONENTS[kind], rng, SAMPLING_RATE).astype(np.float32)


def add_noise(waveform: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`waveform` + `noise` scaled so that mean(waveform^2) / mean(scaled noise^2) is `snr_db`; unchanged when the
    waveform is silent (peak-to-peak below one 16-bit step: no SNR is defined) or the noise is all zeros."""
    from ..audio import SILENCE_PEAK_TO_PEAK  # on use: train.py --help imports this module

    if len(waveform) == 0 or np.ptp(waveform) < SILENCE_PEAK_TO_PEAK:
        return waveform
    signal_power = float(np.mean(waveform.astype(np.float64) ** 2))
    noise_power = float(np.mean(noise.astype(np.float64) ** 2))
    if noise_power == 0:
        return waveform
    scale = math.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return (waveform + scale * noise).astype(np.float32)


def reverberate(waveform: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """`waveform` convolved with a synthetic room impulse response (a direct path, then Gaussian noise decaying by
    60 dB in `rt60_s`, of the same energy as the direct path), cut to the input's length and scaled back to its RMS."""
    if len(waveform) == 0:
        return waveform
    length = max(2, int(min(rt60_s, MAX_RIR_S) * SAMPLING_RATE))
    t = np.arange(length) / SAMPLING_RATE
    rir = rng.standard_normal(length) * np.exp(-3 * math.log(10) * t / rt60_s)  # amplitude: -60 dB at rt60
    rir[0] = 0.0
    rir /= math.sqrt(float(np.sum(rir**2)))  # tail energy 1
    rir[0] = 1.0  # direct path energy 1
    size = 1 << (len(waveform) + length - 2).bit_length()  # a power of two: the FFT's fast case
    dry = np.asarray(waveform, dtype=np.float32)
    wet = np.fft.irfft(np.fft.rfft(dry, size) * np.fft.rfft(rir.astype(np.float32), size), size)[: len(dry)]
    return _with_rms_of(wet, dry)


__all__ = [
    "AugmentationError",
    "NOISE_TYPES",
    "SAMPLING_RATE",
    "SPEC_AUGMENT_KEYS",
    "SpecAugment",
    "WaveformAugmentation",
    "add_noise",
    "colored_noise",
    "item_rng",
    "noise_files",
    "pitch_shift",
    "reverberate",
    "speed_perturb",
    "time_stretch",
]
