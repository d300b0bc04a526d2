"""Signal processing in numpy shared by the synthetic corpora (`recipes.demo`) and the training augmentation
(`training.augment`): the short-time Fourier transform and its weighted overlap-add inverse, and Gaussian noise of
a 1/f^a power spectrum. Not part of the model's remote code."""

from __future__ import annotations

import numpy as np


def stft(x: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """(frames, n_fft // 2 + 1) complex spectrum of `x`'s frames starting at 0, hop, 2 hop, ... and lying wholly
    inside it, each multiplied by `window` (n_fft,). No padding: a caller that wants the edges covered pads first."""
    if len(x) < n_fft:
        raise ValueError(f"a {len(x)}-sample signal is shorter than one {n_fft}-sample frame; pad it first")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * window
    # numpy's float32 FFT is several times slower than its float64 one: transform in float64, return x's precision
    spectrum = np.fft.rfft(frames.astype(np.float64, copy=False), axis=-1)
    return spectrum.astype(np.result_type(frames.dtype, np.complex64), copy=False)


def istft(spec: np.ndarray, n_fft: int, hop: int, window: np.ndarray, length: int) -> np.ndarray:
    """The signal whose `stft` is `spec` (frames, n_fft // 2 + 1), `length` samples: each frame's inverse transform
    multiplied by `window` again, overlap-added, and divided by the sum of the squared windows over each sample (where
    that sum is near 0, the samples are 0). Cut, or padded with zeros, to `length`. `n_fft` must be a multiple of
    `hop`."""
    if n_fft % hop:
        raise ValueError(f"the overlap-add needs n_fft ({n_fft}) to be a multiple of hop ({hop})")
    frames = np.fft.irfft(spec, n=n_fft, axis=-1) * window
    n_frames, overlap = frames.shape[0], n_fft // hop
    out = np.zeros((n_frames + overlap - 1, hop), dtype=frames.dtype)
    norm = np.zeros((n_frames + overlap - 1, hop), dtype=frames.dtype)
    squared = (window**2).reshape(overlap, hop)
    for j in range(overlap):
        out[j : j + n_frames] += frames[:, j * hop : (j + 1) * hop]
        norm[j : j + n_frames] += squared[j]
    out = (out / np.maximum(norm, 1e-8)).reshape(-1)[:length]
    return np.pad(out, (0, length - len(out)))


def shaped_noise(
    num_samples: int, exponent: float, rng: np.random.Generator, sample_rate: int, floor_hz: float = 20.0
) -> np.ndarray:
    """(num_samples,) float64 Gaussian noise of unit RMS whose power falls as 1/f^exponent (0 white, 1 pink, 2
    brown), flat below `floor_hz`. Shaped in frequency over a power-of-two length, then cut: an FFT of a prime length
    is many times slower."""
    if num_samples <= 0:
        return np.zeros(0)
    size = 1 << (max(num_samples, 2) - 1).bit_length()
    spectrum = np.fft.rfft(rng.standard_normal(size))
    spectrum *= np.maximum(np.fft.rfftfreq(size, 1.0 / sample_rate), floor_hz) ** (-exponent / 2)
    noise = np.fft.irfft(spectrum, n=size)[:num_samples]
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)
