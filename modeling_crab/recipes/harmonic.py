"""A second built-in synthetic corpus, made differently from the demo's (`modeling_crab.recipes.demo`): other
sentences, other voices, another synthesis, another sampling rate. It is there to check that a training recipe
chosen on one synthetic corpus is not tuned to it.

* **Synthesis**: additive harmonics. Each voiced frame is a sum of sinusoids at multiples of F0 whose amplitudes
  sample a four-formant spectral envelope with a spectral tilt (the demo filters a glottal pulse train instead);
  consonants are noise bursts shaped by a single resonance; vocal tremor and creak are modulations of F0 and of the
  harmonic amplitudes. Recorded at 22.05 kHz, so training resamples it.
* **Emotion** changes the voice relative to the speaker as in the acted-speech literature, with other settings and
  ranges than the demo's: angry = higher, louder, faster, bright (flat tilt) with strong accents; happy = higher,
  wide rising contours, bright; neutral = the speaker's baseline; sad = lower, quieter, slower, dark, breathy, with
  tremor and long pauses. Expressiveness varies per utterance, so the classes overlap.
* **Words**: half of the transcripts say the emotion ("I can't stand this noise any more"), half are shared by
  every class ("The bus stops at the corner").

Train, dev and test are spoken by disjoint voices, as in the demo corpus. Twelve voices (two in dev, two in test) are
a small sample: `--seed` draws other voices and sentences, and a tiny model's test UAR moved by as much as 0.25 from
one draw to another (docs/training.md, "Other draws of the harmonic corpus"). Usage::

    python -m modeling_crab.recipes.harmonic data/harmonic
    python train.py --manifest data/harmonic/manifest.csv --tiny --output_dir outputs/harmonic
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np

from .demo import Synthesis, corpus_parser, synthetic_attributes, write_synthetic_corpus

__all__ = ["HARMONIC", "generate_harmonic_corpus", "main"]

SAMPLING_RATE = 22_050
_EMOTION_FRACTION = 0.5

_WORDS = {
    "who": ("my sister", "the neighbour", "our manager", "your cousin", "the driver", "my teacher", "the landlord"),
    "thing": ("the heating", "the printer", "my umbrella", "the kettle", "the ticket", "the radio", "the parcel"),
    "where": ("the station", "the corner shop", "the harbour", "the stadium", "the bakery", "the clinic"),
    "when": ("tomorrow", "this evening", "next week", "on Sunday", "after lunch", "in the morning"),
}

_EMOTION_SENTENCES = {
    "angry": (
        "I can't stand this noise any more!",
        "Who broke {thing} again?",
        "You never listen to a single word I say!",
        "Give it back right now!",
        "That was a stupid thing to do!",
        "I'm furious with {who}!",
        "Don't you dare blame me for this!",
        "This is the third time {thing} has failed, I've had it!",
    ),
    "happy": (
        "We're going on holiday {when}!",
        "I got the job, I can't believe it!",
        "This is the nicest surprise ever!",
        "{who} is getting married, how wonderful!",
        "I'm so glad you came!",
        "Look, {thing} finally arrived, brilliant!",
        "What a fantastic evening!",
        "I passed the test, I'm over the moon!",
    ),
    "neutral": (
        "The bus leaves {when}.",
        "I put {thing} next to the door.",
        "The shop closes at six.",
        "{who} lives near {where}.",
        "Please fill in the second page.",
        "The meeting room is on the left.",
        "We need two more chairs.",
        "The invoice was sent {when}.",
    ),
    "sad": (
        "I really miss the old days.",
        "{who} doesn't call me any more.",
        "I wanted it to work out, but it didn't.",
        "Everyone has left already.",
        "I don't think I can do this.",
        "We lost {thing} in the move.",
        "It has been a very long and lonely year.",
        "I'm sorry it ended like this.",
    ),
}

_SHARED_SENTENCES = (
    "The bus stops at the corner.",
    "{who} said it would happen {when}.",
    "I found {thing} in the car.",
    "We walked past {where}.",
    "That's what they told me.",
    "It was there {when}.",
    "{who} brought {thing} over.",
    "They're opening a new place near {where}.",
    "I heard about it on the radio.",
    "So we will see {when}.",
)

_SLOT = re.compile(r"\{(\w+)\}")


def _make_texts(label: str, n: int, rng: np.random.Generator) -> list[str]:
    """Half emotion sentences of `label` (each used before any repeats), half sentences every class shares."""
    own = _EMOTION_SENTENCES[label]
    order = np.concatenate([rng.permutation(len(own)) for _ in range(n // len(own) + 1)])
    emotional = rng.permutation(n) < round(_EMOTION_FRACTION * n)
    texts, k = [], 0
    for says_it in emotional:
        if says_it:
            template, k = own[order[k]], k + 1
        else:
            template = _SHARED_SENTENCES[rng.integers(len(_SHARED_SENTENCES))]
        text = _SLOT.sub(lambda m: str(rng.choice(_WORDS[m.group(1)])), template)
        texts.append(text[0].upper() + text[1:])
    return texts


def _make_speakers(n_speakers: int, rng: np.random.Generator) -> list[dict]:
    """Voices alternating male and female, from wider ranges than the demo's, each with a tremor and creak habit."""
    voices = []
    for i in range(n_speakers):
        female = i % 2 == 1
        voices.append(
            dict(
                f0=rng.uniform(165.0, 260.0) if female else rng.uniform(80.0, 150.0),
                tract=rng.uniform(1.06, 1.2) if female else rng.uniform(0.9, 1.03),
                tempo=rng.uniform(0.85, 1.15),
                gain_db=rng.uniform(-3.0, 3.0),
                tilt=rng.uniform(-2.0, 2.0),
                breath=rng.uniform(0.02, 0.08) * (1.5 if female else 1.0),
                creak=rng.uniform(0.0, 0.3),
            )
        )
    return voices


# Relative to the speaker: F0 shift (semitones), F0 range (semitones of accent), final rise (semitones), tempo
# factor, loudness (dB), spectral tilt change (dB / octave), breathiness factor, pause probability, tremor depth.
_EMOTION_VOICE = {
    "neutral": dict(
        shift=0.0, accent=1.5, final=-1.5, tempo=1.0, gain=0.0, tilt=0.0, breath=1.0, pause=0.15, tremor=0
    ),
    "angry": dict(shift=3.0, accent=4.0, final=-3.0, tempo=1.2, gain=7.0, tilt=4.5, breath=0.6, pause=0.05, tremor=0),
    "happy": dict(shift=4.0, accent=6.0, final=3.0, tempo=1.1, gain=3.0, tilt=2.5, breath=1.0, pause=0.1, tremor=0),
    "sad": dict(shift=-2.5, accent=0.8, final=-3.5, tempo=0.75, gain=-6.0, tilt=-5.0, breath=3.0, pause=0.4, tremor=1),
}

# (F1, F2, F3, F4) of a few vowels, adult male; bandwidths of the four resonances
_VOWELS = np.array(
    [(710, 1100, 2540, 3400), (280, 2250, 2890, 3700), (310, 870, 2250, 3300), (550, 1770, 2490, 3500)],
    dtype=np.float64,
)
_BANDWIDTHS = np.array((90.0, 120.0, 170.0, 250.0))
_CONTROL_S = 0.005  # control rate of F0, loudness and formants


def _envelope(freqs: np.ndarray, formants: np.ndarray, tilt: float) -> np.ndarray:
    """Spectral envelope at `freqs` (frames, K): four resonances over a tilt of `tilt` dB / octave above 200 Hz."""
    env = np.full(freqs.shape, 0.01)
    for i in range(4):
        env += (0.8**i) / (1.0 + ((freqs - formants[:, i : i + 1]) / (_BANDWIDTHS[i] / 2)) ** 2)
    return env * (np.maximum(freqs, 200.0) / 200.0) ** (tilt / 6.02)


def _synthesize(text: str, label: str, voice: dict, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    emotion = _EMOTION_VOICE[label]
    neutral = _EMOTION_VOICE["neutral"]
    strength = rng.uniform(0.4, 1.2)  # how expressive this utterance is

    def knob(name: str, noise: float = 0.0) -> float:
        value = neutral[name] + strength * (emotion[name] - neutral[name])
        return value + noise * rng.standard_normal()

    attributes = synthetic_attributes(label, strength, knob("shift"), knob("tempo"), knob("gain"))  # no draws

    tempo = voice["tempo"] * knob("tempo", 0.08)
    syllables = [max(1, len(re.findall(r"[aeiouy]+", w.lower()))) for w in re.findall(r"[A-Za-z']+", text)]

    # --- timeline at the control rate: (voicing, noise, formants, accent) per 5 ms frame ------------------------------
    voicing, noise, formants, accent = [], [], [], []
    last = _VOWELS[0] * voice["tract"]

    def hold(frames: int, v: float, z: float, f: np.ndarray, a: float = 0.0) -> None:
        voicing.extend([v] * frames)
        noise.extend([z] * frames)
        formants.extend([f] * frames)
        accent.extend([a] * frames)

    hold(int(rng.uniform(0.1, 0.3) / _CONTROL_S), 0.0, 0.0, last)
    for w, count in enumerate(syllables):
        for _ in range(count):
            length = max(8, int(rng.uniform(0.16, 0.26) / tempo / _CONTROL_S))
            if rng.random() < 0.6:  # a consonant onset: a noise burst
                burst = max(2, length // 4)
                hold(burst, 0.0, rng.uniform(0.2, 0.5), np.full(4, rng.uniform(2000.0, 5000.0)))
                length -= burst
            last = _VOWELS[rng.integers(len(_VOWELS))] * voice["tract"] * rng.uniform(0.95, 1.05)
            stressed = rng.random() < 0.45
            shape = np.sin(np.pi * (np.arange(length) + 0.5) / length) ** 0.5
            voicing.extend(shape)
            noise.extend(0.02 * shape)
            formants.extend([last] * length)
            accent.extend(float(stressed) * np.sin(np.pi * (np.arange(length) + 0.5) / length))
        if w < len(syllables) - 1 and rng.random() < np.clip(knob("pause", 0.05), 0.0, 0.8):
            hold(int(rng.uniform(0.1, 0.35) / tempo / _CONTROL_S), 0.0, 0.0, last)
    hold(int(rng.uniform(0.15, 0.3) / _CONTROL_S), 0.0, 0.0, last)
    frames = min(len(voicing), int(3.9 / _CONTROL_S))
    voicing, noise = np.asarray(voicing[:frames]), np.asarray(noise[:frames])
    formants, accent = np.asarray(formants[:frames]), np.asarray(accent[:frames])
    formants = np.stack([np.convolve(np.pad(f, 6, mode="edge"), np.ones(13) / 13, "valid") for f in formants.T], 1)

    # --- F0 in semitones relative to the speaker: shift, accents, final contour, tremor, slow wander ------------------
    t = np.arange(frames) / frames
    semitones = knob("shift", 1.0) + knob("accent", 0.5) * rng.uniform(0.6, 1.2) * accent
    semitones += knob("final", 1.0) * np.clip((t - 0.7) / 0.3, 0.0, 1.0)
    semitones += (
        emotion["tremor"] * strength * 0.6 * np.sin(2 * np.pi * rng.uniform(4.0, 7.0) * t * frames * _CONTROL_S)
    )
    semitones += np.interp(t, np.linspace(0, 1, 6), 0.5 * rng.standard_normal(6))
    f0 = voice["f0"] * 2.0 ** (semitones / 12.0)
    creak = (t > 0.85) & (rng.random() < voice["creak"] + 0.3 * (label == "sad"))
    f0 = np.where(creak, f0 * 0.55, f0)

    # --- additive synthesis at the sampling rate ----------------------------------------------------------------------
    n = int(frames * _CONTROL_S * sr)
    at = (np.arange(n) / sr) / _CONTROL_S  # position in control frames
    f0_s = np.interp(at, np.arange(frames), f0)
    phase = 2 * np.pi * np.cumsum(f0_s) / sr
    tilt = -12.0 + voice["tilt"] + knob("tilt", 1.0)
    harmonics = min(int(0.45 * sr / f0.min()), 80)
    k = np.arange(1, harmonics + 1)
    amplitudes = _envelope(f0[:, None] * k[None, :], formants, tilt)  # (frames, K)
    amplitudes *= (f0[:, None] * k[None, :] < 0.45 * sr) * voicing[:, None]
    amplitudes *= np.where(creak, 1.0 + 0.6 * rng.standard_normal(frames), 1.0)[:, None]
    y = np.zeros(n)
    for i in range(harmonics):  # one sinusoid per harmonic, its amplitude interpolated between control frames
        y += np.interp(at, np.arange(frames), amplitudes[:, i]) * np.sin((i + 1) * phase + rng.uniform(0, 2 * np.pi))

    # breath (aspiration over voicing) and consonant noise, each through one resonance
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    centre = np.median(formants[noise > 0.1, 0]) if (noise > 0.1).any() else 3500.0
    burst = np.fft.irfft(spectrum / (1.0 + ((freqs - centre) / 1500.0) ** 2), n)
    breath = np.fft.irfft(spectrum / (1.0 + (freqs / 3000.0) ** 2), n)
    voiced_rms = np.sqrt(np.mean(y**2)) + 1e-9
    y += burst / (np.sqrt(np.mean(burst**2)) + 1e-9) * voiced_rms * 3.0 * np.interp(at, np.arange(frames), noise)
    breathiness = voice["breath"] * knob("breath", 0.2)
    y += (
        breath
        / (np.sqrt(np.mean(breath**2)) + 1e-9)
        * voiced_rms
        * breathiness
        * np.interp(at, np.arange(frames), voicing)
    )

    # --- level, room noise ----------------------------------------------------------------------------------------
    active = np.interp(at, np.arange(frames), voicing) > 0.2
    level = np.sqrt(np.mean(y[active] ** 2)) if active.any() else 1.0
    y *= 10.0 ** ((-24.0 + voice["gain_db"] + knob("gain", 1.5)) / 20.0) / level
    y += rng.standard_normal(n) * np.sqrt(np.mean(y**2)) * 10.0 ** (-rng.uniform(20.0, 40.0) / 20.0)
    return 0.95 * np.tanh(y / 0.95), attributes


HARMONIC = Synthesis("harmonic", _make_texts, _make_speakers, _synthesize)


def generate_harmonic_corpus(
    out_dir: str | os.PathLike,
    n_per_class: int = 80,
    seed: int = 42,
    sampling_rate: int = SAMPLING_RATE,
    splits: Sequence[float] = (0.7, 0.15, 0.15),
    n_speakers: int = 12,
) -> pathlib.Path:
    """The second synthetic corpus in `out_dir` (`write_synthetic_corpus` with `HARMONIC`); its parameters are
    recorded in ``out_dir/harmonic_corpus.json``. Labels: `DEMO_LABELS`."""
    return write_synthetic_corpus(out_dir, HARMONIC, n_per_class, seed, sampling_rate, splits, n_speakers)


def main(argv: Sequence[str] | None = None) -> None:
    parser = corpus_parser(
        "Generate the second synthetic emotion corpus (additive harmonic synthesis, 22.05 kHz).", n_speakers=12
    )
    parser.add_argument("--sampling-rate", type=int, default=SAMPLING_RATE)
    args = parser.parse_args(argv)
    print(
        generate_harmonic_corpus(
            args.out_dir, args.n_per_class, args.seed, args.sampling_rate, n_speakers=args.n_speakers
        )
    )


if __name__ == "__main__":
    main()
