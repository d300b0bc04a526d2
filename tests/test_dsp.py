"""The shared signal processing (`modeling_crab.dsp`): the STFT and its overlap-add inverse give the signal back, in
its precision; shaped noise has the spectral slope it is asked for; the augmentation's noise colours are those
slopes."""

from __future__ import annotations

import numpy as np
import pytest

from modeling_crab.dsp import istft, shaped_noise, stft
from modeling_crab.training.augment import colored_noise


def _periodic_hann(n: int, power: float = 1.0) -> np.ndarray:
    return np.hanning(n + 1)[:-1] ** power


@pytest.mark.parametrize(
    "n_fft, hop, power",
    [(512, 128, 1.0), (512, 256, 0.5), (256, 64, 1.0)],  # the phase vocoder's Hann; the demo's sqrt-Hann at 50 %
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_inverse_gives_the_signal_back_in_its_precision(n_fft, hop, power, dtype):
    x = np.random.default_rng(0).standard_normal(5000).astype(dtype)
    window = _periodic_hann(n_fft, power).astype(dtype)
    padded = np.pad(x, n_fft)  # every kept sample lies under full frames
    spectrum = stft(padded, n_fft, hop, window)
    assert spectrum.shape == (1 + (len(padded) - n_fft) // hop, n_fft // 2 + 1)
    assert spectrum.dtype == (np.complex64 if dtype == np.float32 else np.complex128)
    back = istft(spectrum, n_fft, hop, window, len(padded))
    assert back.dtype == dtype and len(back) == len(padded)
    np.testing.assert_allclose(back[n_fft:-n_fft], x, atol=1e-5 if dtype == np.float32 else 1e-12)


def test_a_frame_is_the_windowed_fft_of_its_samples():
    x = np.random.default_rng(1).standard_normal(1000)
    window = _periodic_hann(256)
    spectrum = stft(x, 256, 100, window)
    assert len(spectrum) == 8  # frames at 0, 100, ..., 700: the last that fits starts at 744
    np.testing.assert_allclose(spectrum[3], np.fft.rfft(x[300:556] * window), atol=1e-10)


def test_lengths_and_the_shapes_it_refuses():
    window = _periodic_hann(64)
    spectrum = stft(np.ones(640), 64, 16, window)
    assert len(istft(spectrum, 64, 16, window, 1000)) == 1000  # padded with zeros past the last frame
    assert not istft(spectrum, 64, 16, window, 1000)[700:].any()
    assert len(istft(spectrum, 64, 16, window, 100)) == 100
    with pytest.raises(ValueError, match="shorter than one 64-sample frame"):
        stft(np.ones(63), 64, 16, window)
    with pytest.raises(ValueError, match="multiple of hop"):
        istft(spectrum, 64, 24, window, 640)


def _slope(noise: np.ndarray, sample_rate: int, low_hz: float, high_hz: float) -> float:
    """The power spectrum's slope in log-log between the two frequencies (Welch-averaged over 4096-sample frames)."""
    frames = noise[: len(noise) // 4096 * 4096].reshape(-1, 4096) * np.hanning(4096)
    power = np.mean(np.abs(np.fft.rfft(frames, axis=-1)) ** 2, axis=0)
    frequency = np.fft.rfftfreq(4096, 1 / sample_rate)
    band = (frequency >= low_hz) & (frequency <= high_hz)
    return float(np.polyfit(np.log(frequency[band]), np.log(power[band]), 1)[0])


@pytest.mark.parametrize("exponent", [0.0, 1.0, 1.5, 2.0])
def test_shaped_noise_falls_as_one_over_f_to_the_exponent(exponent):
    noise = shaped_noise(16000 * 20, exponent, np.random.default_rng(2), 16000)
    assert len(noise) == 16000 * 20 and noise.dtype == np.float64
    assert abs(np.sqrt(np.mean(noise**2)) - 1) < 1e-9
    assert abs(_slope(noise, 16000, 100, 6000) + exponent) < 0.1
    assert abs(_slope(noise, 16000, 0.5, 15)) < 0.5  # flat below the 20 Hz floor
    np.testing.assert_array_equal(noise, shaped_noise(16000 * 20, exponent, np.random.default_rng(2), 16000))


def test_short_and_empty_noise():
    assert shaped_noise(0, 1.0, np.random.default_rng(0), 16000).shape == (0,)
    one = shaped_noise(1, 1.0, np.random.default_rng(0), 16000)
    assert one.shape == (1,) and np.isfinite(one).all()
    odd = shaped_noise(1001, 2.0, np.random.default_rng(0), 22050)
    assert odd.shape == (1001,) and abs(np.sqrt(np.mean(odd**2)) - 1) < 1e-9


def test_the_augmentation_noise_colours_are_those_exponents():
    for kind, exponent in (("white", 0.0), ("pink", 1.0), ("brown", 2.0)):
        noise = colored_noise(kind, 16000 * 10, np.random.default_rng(3))
        assert noise.dtype == np.float32
        expected = shaped_noise(16000 * 10, exponent, np.random.default_rng(3), 16000)
        np.testing.assert_allclose(noise, expected, rtol=1e-6, atol=1e-6)
