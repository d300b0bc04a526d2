"""Audio: everything between a recording (a file, or an array at some rate) and a mono float32 waveform at the
model's rate. The one home of audio for training and serving alike, and it travels with checkpoints (the processor
and the pipeline import it).

- checks: `check_sampling_rate` (every rate, given or read from a header), `check_amplitude`, and the constants
  they and their callers use (`MIN_AUDIO_S`, `SILENCE_PEAK_TO_PEAK`, `MIN_SAMPLING_RATE` / `MAX_SAMPLING_RATE`,
  `MAX_ABS_SAMPLE`);
- PCM and channels: `pcm_to_float32`, `mono_float32` (downmix), `as_waveform_list` (a 2-D array is a batch);
- the crop: `crop_length` turns a crop in seconds into samples, wherever audio is cropped or windowed;
- resampling: `resample` (one windowed-sinc resampler), `BlockResampler` (the same, block by block),
  `resample_input_length` (the input a crop of the output depends on);
- files: `read_audio`, the one audio file reader (decoded, downmixed and resampled block by block; a segment or crop
  reads only its frames), and `UndecodableAudioError`.

Only torch, numpy and the standard library are imported at module level: transformers refuses remote code whose
imports are not installed (`soundfile`, for non-WAV files, is imported by name when needed).
"""

from __future__ import annotations

import importlib
import io
import math
import os
import warnings
import wave
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# `resample` is the one resampler, for training and serving alike (it travels with checkpoints; soxr, which training
# used before, does not): 32 zero crossings of the Hann-windowed sinc measured as close to a band-limited reference
# as soxr HQ (max error 1.3e-4 at 44.1 -> 16 kHz; 6 crossings: 2.7e-2) and, at 270-1250x real time on one CPU thread
# (soxr: 5000x and more), fast enough: a 12 s crop takes under 50 ms (bench/bench_resample.py).
LOWPASS_FILTER_WIDTH = 32
# A recording whose peak-to-peak amplitude is below one 16-bit step carries no signal: it gets a warning.
SILENCE_PEAK_TO_PEAK = 2.0**-15
# The shortest clip classified or trained on: one frame of WavLM's (and wav2vec 2.0's) CNN, 400 samples at 16 kHz.
MIN_AUDIO_S = 0.025
# The audio files a folder of recordings is searched for (`read_audio` decodes them: WAV itself, the rest through
# soundfile): `crab annotate`'s input folders, train.py's --noise_dir and --unlabelled_manifest folders.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")
# Sampling rates audio can have; outside them a rate is a mistake (kHz given for Hz, a broken header).
MIN_SAMPLING_RATE = 1_000
MAX_SAMPLING_RATE = 1_000_000
# Largest |sample| accepted, 48 dB above float audio's full scale [-1, 1]: room for hot recordings and the
# augmentation's gain (up to +40 dB), far below integer PCM stored as float (16-bit speech peaks in the thousands),
# which would set the normalisation statistics of a whole corpus and be heard as near silence next to the rest.
MAX_ABS_SAMPLE = 256.0
# Rate pairs with a large reduced ratio (44101 -> 16000 Hz) would need a polyphase table of gigabytes; above this many
# entries `resample` evaluates the same windowed sinc at each output sample instead.
_MAX_POLYPHASE_TABLE = 1 << 20
# an `end` up to this far past a file's end is read to the end (annotation times rounded, or timed on another decode
# of the file); further, it is an error: times in another unit, or the wrong file
SEGMENT_END_SLACK_S = 0.1
BLOCK_FRAMES = 1 << 18  # frames decoded at a time (5.5 s at 48 kHz): decoding, downmixing and resampling go by block


def audio_files(folder: str | os.PathLike) -> list[Path]:
    """The audio files (`AUDIO_SUFFIXES`) in `folder` and its subfolders, in the order of their paths relative to it
    (a stable order: the same folder lists the same way on every machine)."""
    root = Path(folder)
    files = (path for path in root.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file())
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def check_sampling_rate(sampling_rate, name: str = "audio") -> int:
    """A whole number of Hz that audio can have (`MIN_SAMPLING_RATE` to `MAX_SAMPLING_RATE`), as an int; anything
    else (0, negative, fractional, a rate in kHz, a header claiming 1 Hz) is an error that names the input. Every
    rate, given or read from a file's header, goes through here."""
    try:
        rate = float(sampling_rate)
    except (TypeError, ValueError):
        rate = float("nan")
    if not (math.isfinite(rate) and rate > 0 and rate.is_integer()):
        raise ValueError(f"{name} has sampling_rate={sampling_rate!r}; pass the audio's rate in Hz (e.g. 16000)")
    if not MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE:
        hint = f" (in Hz: {int(rate * 1000)}, not {int(rate)})" if 8 <= rate <= 384 else ""  # given in kHz
        raise ValueError(
            f"{name} has sampling_rate={sampling_rate!r}, which no audio has ({MIN_SAMPLING_RATE} Hz to "
            f"{MAX_SAMPLING_RATE // 1000} kHz); pass the audio's rate in Hz{hint}, or fix the file's header"
        )
    return int(rate)


def check_amplitude(waveform: np.ndarray, name: str = "audio") -> None:
    """Finite samples within any audio scale: float audio lies in [-1, 1] and integer PCM, once converted, too; a
    waveform beyond `MAX_ABS_SAMPLE` (values that were never audio, or far out of scale) would overflow the
    encoders into NaN scores."""
    if not np.isfinite(waveform).all():
        raise ValueError(f"{name} contains NaN or infinite samples; clean or drop this audio")
    peak = float(np.abs(waveform).max()) if waveform.size else 0.0
    if peak > MAX_ABS_SAMPLE:
        pcm = next((bits for bits in (16, 24, 32) if peak < 2.0 ** (bits - 1) * 1.01), None)
        hint = f"integer PCM stored as float? divide by {2 ** (pcm - 1)} ({pcm}-bit), or " if pcm else ""
        raise ValueError(
            f"{name} has samples up to {peak:.6g}, beyond any audio scale (float audio lies in [-1, 1]); {hint}"
            "rescale it (e.g. audio / abs(audio).max())"
        )


def mono_float32(audio, name: str = "audio", max_samples: int | None = None) -> np.ndarray:
    """An array or tensor of float or integer PCM samples, 1-D or (samples, channels) as soundfile reads it or
    (channels, samples) as torchaudio does (the shorter axis is channels) -> mono float32, integer PCM scaled to
    [-1, 1). With `max_samples`, only the first `max_samples` samples are converted. A dtype or shape that is not
    audio is an error naming `name`; the processor and the pipeline both check arrays here."""
    if isinstance(audio, (bytes, bytearray, memoryview)) or hasattr(audio, "read"):
        raise TypeError(
            f"{name} is {type(audio).__name__}, the bytes of an audio file, not samples; read it with "
            "modeling_crab.audio.read_audio(...) or pass it to the pipeline, which reads files"
        )
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu()
        waveform = (audio.float() if audio.dtype == torch.bfloat16 else audio).numpy()
    else:
        waveform = np.asarray(audio)
    if waveform.dtype.kind not in "iuf":
        raise TypeError(f"{name} has dtype {waveform.dtype}; pass float or integer PCM samples")
    if waveform.dtype.kind in "iu" and waveform.dtype.itemsize > 4:  # a list of Python ints arrives as int64
        raise TypeError(
            f"{name} has dtype {waveform.dtype}, a sample width no audio format has, so its scale is unknown; pass "
            "float samples in [-1, 1], or integer PCM as int16 or int32 (np.asarray(audio, dtype=np.int16) for "
            "16-bit values)"
        )
    if waveform.ndim not in (1, 2):
        raise ValueError(f"{name} has shape {waveform.shape}; pass a 1-D waveform or a (samples, channels) array")
    if waveform.size == 0:
        return np.zeros(0, np.float32)
    channel_axis = None if waveform.ndim == 1 else (1 if waveform.shape[1] <= waveform.shape[0] else 0)
    if max_samples is not None:
        waveform = waveform[:, :max_samples] if channel_axis == 0 else waveform[:max_samples]
    waveform = pcm_to_float32(waveform)
    if channel_axis is not None:
        waveform = waveform.mean(axis=channel_axis, dtype=np.float32)
    return waveform


def as_waveform_list(audio: np.ndarray | torch.Tensor) -> list:
    """A bare 2-D array or tensor is a batch (B, N) of B waveforms, in the processor and the pipeline alike (one
    multichannel recording goes in a list: `[audio]`). A shape that cannot be a batch, (16000, 2), is an error."""
    if 1 < audio.shape[1] <= 8 < audio.shape[0]:
        raise ValueError(
            f"audio has shape {tuple(audio.shape)}: a 2-D array is read as {audio.shape[0]} waveforms of "
            f"{audio.shape[1]} samples; for one (samples, channels) recording pass [audio]"
        )
    return list(audio)


def pcm_to_float32(samples: np.ndarray) -> np.ndarray:
    """Float samples as float32; integer PCM scaled to [-1, 1) (unsigned PCM, as in 8-bit WAV, is centred on its
    midpoint), in one copy."""
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    info = np.iinfo(samples.dtype)
    half_range = (float(info.max) - float(info.min) + 1.0) / 2.0  # 2 ** (bits - 1)
    converted = samples.astype(np.float32)
    if info.min == 0:
        converted -= np.float32(half_range)
    converted /= np.float32(half_range)
    return converted


def crop_length(max_duration_s: float | None, sampling_rate: int) -> int | None:
    """A crop in seconds -> the number of samples it keeps at `sampling_rate` (None: no crop). Every crop (the
    processor's, the reader's, training's, the augmentation's) and the pipeline's windows are counted here."""
    if max_duration_s is None:
        return None
    return int(round(max_duration_s * sampling_rate))


def resample(
    waveform: np.ndarray, orig_sr: int, target_sr: int, lowpass_filter_width: int = LOWPASS_FILTER_WIDTH
) -> np.ndarray:
    """Band-limited (Hann-windowed sinc) polyphase resampling of a 1-D float32 waveform."""
    if orig_sr == target_sr:
        return waveform
    g = math.gcd(int(orig_sr), int(target_sr))
    orig, new = int(orig_sr) // g, int(target_sr) // g
    if _polyphase_too_large(orig, new, lowpass_filter_width):
        return _resample_direct(waveform, orig, new, lowpass_filter_width)
    kernels, width = _polyphase_kernels(orig, new, lowpass_filter_width)

    x = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    x = F.pad(x[None, None], (width, width + orig))  # (1, 1, N + K - 1 + ...)
    y = F.conv1d(x, kernels[:, None, :], stride=orig)  # (1, new, frames)
    y = y.transpose(1, 2).reshape(-1)
    return y[: math.ceil(new * len(waveform) / orig)].numpy()


def _polyphase_too_large(orig: int, new: int, lowpass_filter_width: int) -> bool:
    return new * (2 * math.ceil(lowpass_filter_width * orig / (min(orig, new) * 0.99)) + orig) > _MAX_POLYPHASE_TABLE


def _polyphase_kernels(orig: int, new: int, lowpass_filter_width: int) -> tuple[torch.Tensor, int]:
    """(new, K) float32 kernels, one per output phase, and the filter's half-width in input samples."""
    cutoff = min(orig, new) * 0.99  # just below the lower Nyquist rate
    width = math.ceil(lowpass_filter_width * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig  # (K,)
    phase = -torch.arange(new, dtype=torch.float64)[:, None] / new  # (new, 1)
    t = ((phase + taps[None, :]) * cutoff).clamp(-lowpass_filter_width, lowpass_filter_width)  # (new, K)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    return (sinc * window * cutoff / orig).float(), width


class BlockResampler:
    """`resample` fed one block of a long recording at a time: the same filter and (up to float rounding) the same
    output, holding only the output, one block and the filter's reach of input; never the whole input.

        resampler = BlockResampler(48_000, 16_000)
        for block in blocks:            # mono float32 blocks, in order
            resampler.push(block)
        waveform = resampler.finish()   # == resample(np.concatenate(blocks), 48_000, 16_000)
    """

    def __init__(
        self,
        orig_sr: int,
        target_sr: int,
        lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
        num_input: int | None = None,
    ):
        self.orig_sr, self.target_sr, self.lowpass_filter_width = int(orig_sr), int(target_sr), lowpass_filter_width
        g = math.gcd(self.orig_sr, self.target_sr)
        self.orig, self.new = self.orig_sr // g, self.target_sr // g
        self.identity = self.orig_sr == self.target_sr
        # a rate pair whose table would be huge (rare rates): the blocks are kept and resampled at the end
        self.direct = not self.identity and _polyphase_too_large(self.orig, self.new, lowpass_filter_width)
        self.kernels, self.width = (None, 0)
        if not (self.identity or self.direct):
            self.kernels, self.width = _polyphase_kernels(self.orig, self.new, lowpass_filter_width)
        self.pending = np.zeros(self.width, dtype=np.float32)  # the left zero padding of `resample`
        self.num_input = 0
        # the output, allocated once when the input length is known (a file's header), else gathered in pieces
        expected = None if num_input is None or self.direct else math.ceil(self.new * num_input / self.orig) + self.new
        self.output = np.empty(expected, np.float32) if expected else None
        self.filled = 0
        self.pieces: list[np.ndarray] = []

    def push(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=np.float32)
        self.num_input += len(block)
        if self.identity or self.direct:
            self._emit(block)
            return
        self.pending = np.concatenate([self.pending, block])
        self._convolve()

    def _emit(self, samples: np.ndarray) -> None:
        if self.output is not None and self.filled + len(samples) <= len(self.output):
            self.output[self.filled : self.filled + len(samples)] = samples
        else:
            if self.output is not None:  # more input than announced: gather in pieces from here on
                self.pieces.append(self.output[: self.filled])
                self.output = None
            self.pieces.append(samples.copy())
        self.filled += len(samples)

    def _convolve(self) -> None:
        size = 2 * self.width + self.orig  # K: the input one output frame (of `new` samples) reads
        if len(self.pending) < size:
            return
        frames = (len(self.pending) - size) // self.orig + 1
        x = torch.from_numpy(self.pending[: (frames - 1) * self.orig + size])
        y = F.conv1d(x[None, None], self.kernels[:, None, :], stride=self.orig)  # (1, new, frames)
        self._emit(y.transpose(1, 2).reshape(-1).numpy())
        self.pending = self.pending[frames * self.orig :].copy()

    def _joined(self) -> np.ndarray:
        if self.output is not None:
            return self.output[: self.filled]
        return np.concatenate(self.pieces) if self.pieces else np.zeros(0, np.float32)

    def finish(self) -> np.ndarray:
        if self.identity:
            return self._joined()
        if self.direct:
            return resample(self._joined(), self.orig_sr, self.target_sr, self.lowpass_filter_width)
        self.pending = np.concatenate([self.pending, np.zeros(self.width + self.orig, np.float32)])
        self._convolve()
        return self._joined()[: math.ceil(self.new * self.num_input / self.orig)]


def _resample_direct(waveform: np.ndarray, orig: int, new: int, lowpass_filter_width: int) -> np.ndarray:
    """`resample`'s kernel evaluated at each output time (reduced rates `orig` -> `new`), in chunks of outputs."""
    scale = min(orig, new) * 0.99 / orig  # the cutoff, per input sample
    reach = math.ceil(lowpass_filter_width / scale) + 1  # kernel half-width in input samples, rounded up
    x = F.pad(torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)), (reach, reach + 1))
    offsets = torch.arange(1 - reach, reach + 1)  # (taps,) around floor(output time)
    num_output = -(-len(waveform) * new // orig)
    output = torch.empty(num_output, dtype=torch.float32)
    for start in range(0, num_output, 1 << 14):
        times = torch.arange(start, min(start + (1 << 14), num_output), dtype=torch.float64) * orig / new  # (c,)
        positions = times.floor().long()[:, None] + offsets  # (c, taps) input samples
        t = ((positions - times[:, None]) * scale).clamp(-lowpass_filter_width, lowpass_filter_width)
        kernels = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2 * torch.special.sinc(t) * scale
        output[start : start + len(times)] = (x[positions + reach] * kernels.float()).sum(dim=1)
    return output.numpy()


def resample_input_length(num_output: int, orig_sr: int, target_sr: int) -> int:
    """How many input samples the first `num_output` samples of `resample(..., orig_sr, target_sr)` depend on."""
    if orig_sr == target_sr:
        return num_output
    reach = LOWPASS_FILTER_WIDTH / (0.99 * min(1.0, target_sr / orig_sr))
    return math.ceil(num_output * orig_sr / target_sr + reach) + 1


class UndecodableAudioError(ValueError):
    """A file no decoder reads (corrupt, or not audio); the decoder's reason is its `__cause__`."""


def read_audio(
    source: str | os.PathLike | bytes,
    name: str | None = None,
    target_rate: int | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    max_duration_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """A file path or the bytes of an audio file -> (mono float32 waveform, sampling rate); with `target_rate`,
    resampled to it. The one audio file reader: the pipeline's, and training's (`training.data.load_audio`).

    `start_s`/`end_s` cut a segment (seconds); `max_duration_s` keeps its first seconds (at `target_rate`). Only the
    frames they keep are read (with the resampling filter's reach), so a 20-minute file cropped to 12 s costs 12 s.
    PCM WAV is read with the standard library; other formats (FLAC, OGG, MP3, float WAV) need `soundfile`. The file
    is decoded, downmixed and resampled in blocks of `BLOCK_FRAMES`, so memory holds the result, not the file's
    samples (a 30-minute 48 kHz stereo file costs about what its 16 kHz mono waveform does). A WAV file cut short
    (fewer frames than its header says) is read up to its last whole frame, with a warning.
    """
    name = name or (f"audio file '{source}'" if isinstance(source, (str, os.PathLike)) else "audio bytes")
    if isinstance(source, (str, os.PathLike)):
        if os.path.isdir(source):
            raise IsADirectoryError(f"{name} is a folder, not an audio file; pass the path of a WAV/FLAC file")
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{name} does not exist; pass the path of a WAV/FLAC file, bytes or a waveform")
        if not os.access(source, os.R_OK):
            raise PermissionError(f"{name} cannot be read (permission denied); make it readable (chmod a+r)")
    cut = (start_s, end_s, max_duration_s)
    try:
        with wave.open(io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            rate = check_sampling_rate(rate, name)  # a broken header (0 or 1 Hz) is refused before reading
            total = wav.getnframes()
            first, last, num_output = _frame_range(total, rate, target_rate or rate, name, *cut)
            wav.setpos(first)
            resampler = BlockResampler(rate, target_rate or rate, num_input=last - first)
            frames_read = 0
            while frames_read < last - first:
                frames = wav.readframes(min(BLOCK_FRAMES, last - first - frames_read))
                whole = len(frames) // (width * channels) * width * channels  # a cut file ends mid-frame
                if not whole:
                    break
                resampler.push(_pcm_block(frames[:whole], width, channels))
                frames_read += whole // (width * channels)
    except (wave.Error, EOFError):  # not RIFF/PCM (e.g. FLAC, MP3, float WAV)
        return _read_with_soundfile(source, name, target_rate, *cut)
    if frames_read < last - first:
        warnings.warn(
            f"{name} is truncated: its header promises {total} frames but it holds "
            f"{first + frames_read}; classifying the frames present (re-export the file to silence this)",
            stacklevel=3,
        )
    return resampler.finish()[:num_output], target_rate or rate


def _frame_range(
    total: int, rate: int, target_rate: int, name: str, start_s=None, end_s=None, max_duration_s=None
) -> tuple[int, int, int | None]:
    """(first frame, frame after the last, output samples kept or None) of a file of `total` frames at `rate`: the
    [start_s, end_s) segment, cut to the input its first `max_duration_s` seconds at `target_rate` depend on."""
    first = round((start_s or 0.0) * rate)
    if first > 0 and first >= total:
        raise ValueError(f"start={start_s}s is past the end of {name} ({total / rate:.2f}s)")
    if end_s is not None and end_s * rate > total + SEGMENT_END_SLACK_S * rate:
        raise ValueError(
            f"end={end_s}s is past the end of {name} ({total / rate:.2f}s); segment times are seconds from the file's "
            "start: check their unit (milliseconds?) and that the row names the right file"
        )
    last = total if end_s is None else min(total, round(end_s * rate))
    num_output = crop_length(max_duration_s, target_rate)
    if num_output is not None:
        last = min(last, first + resample_input_length(num_output, rate, target_rate))
    return first, max(first, last), num_output


def _pcm_block(frames: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved PCM bytes -> mono float32 (the channel mean)."""
    if width == 1:
        samples = pcm_to_float32(np.frombuffer(frames, np.uint8))  # 8-bit WAV is unsigned, centred on 128
    elif width == 3:  # 24-bit little-endian: the three bytes become the top of an int32
        widened = np.zeros((len(frames) // 3, 4), np.uint8)
        widened[:, 1:] = np.frombuffer(frames, np.uint8).reshape(-1, 3)
        samples = pcm_to_float32(widened.view("<i4").reshape(-1))
    else:
        samples = pcm_to_float32(np.frombuffer(frames, {2: "<i2", 4: "<i4"}[width]))
    if channels == 1:
        return samples
    return samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)


def _read_with_soundfile(source, name: str, target_rate: int | None = None, *cut) -> tuple[np.ndarray, int]:
    try:  # optional, so imported by name: a checkpoint's code may import only torch, transformers and numpy
        soundfile = importlib.import_module("soundfile")
    except ImportError:
        raise ValueError(
            f"{name} is not a PCM WAV file, and reading other formats needs `soundfile`: `pip install soundfile`, "
            "or convert it to 16-bit WAV (ffmpeg -i in.mp3 -ar 16000 -ac 1 out.wav)"
        ) from None
    try:
        with soundfile.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source) as audio:
            rate = check_sampling_rate(audio.samplerate, name)
            first, last, num_output = _frame_range(audio.frames, rate, target_rate or rate, name, *cut)
            if first:
                audio.seek(first)
            resampler = BlockResampler(rate, target_rate or rate, num_input=last - first if audio.seekable() else None)
            for block in audio.blocks(blocksize=BLOCK_FRAMES, frames=last - first, dtype="float32", always_2d=True):
                resampler.push(block.mean(axis=1, dtype=np.float32))
    except ValueError as error:
        if "sampling_rate" in str(error) or "past the end" in str(error):
            raise
        raise UndecodableAudioError(f"{name} could not be decoded ({error}); pass WAV, FLAC or OGG audio") from error
    except Exception as error:
        raise UndecodableAudioError(f"{name} could not be decoded ({error}); pass WAV, FLAC or OGG audio") from error
    return resampler.finish()[:num_output], target_rate or rate
