"""The built-in corpus recipe: a synthetic emotional-speech corpus for demos, smoke tests and CI, written as a
manifest like every other recipe's (`modeling_crab.manifest`).

The corpus is generated in pure Python + numpy (no TTS, no downloads). Each utterance is a formant-synthesised
"speech-like" signal (band-limited glottal pulse train with a time-varying F0 contour, per-syllable vowel formants,
fricative/stop/nasal consonants, pauses, aspiration noise, background noise) paired with an English transcript.

The emotion label is carried by *both* modalities, on purpose only partially by each:

* prosody / voice quality (relative to the speaker's baseline): angry = raised F0, loud, fast, tense and harsh
  (flat spectral tilt, jitter, shimmer); happy = raised F0 with wide, rising, varied contour, fast-ish, bright;
  neutral = baseline F0, flat contour, medium energy and tempo; sad = lowered, falling F0, quiet, slow, breathy.
  A per-utterance expressiveness factor and per-parameter noise make the classes overlap.
* words: ~60 % of the transcripts come from emotion-specific templates, ~40 % from ambiguous templates shared by all
  classes, so text alone cannot solve the task and a bimodal model has to fuse both.

Every clip also has emotional attributes on the manifests' 0-1 scale (`synthetic_attributes`): arousal follows from
how the clip was realised (its pitch shift, speaking rate and loudness against the neutral voice), valence and
dominance from its class and expressiveness.

Usage::

    from modeling_crab.recipes.demo import generate_demo_corpus
    manifest = generate_demo_corpus("data/demo")   # -> data/demo/manifest.csv

or ``python -m modeling_crab.recipes.demo OUT_DIR [--n-per-class N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import re
import wave
from collections.abc import Callable, Sequence

import numpy as np

from ..dsp import istft, shaped_noise, stft
from ..manifest import read_manifest, write_manifest

__all__ = [
    "DEMO_LABELS",
    "Synthesis",
    "synthetic_attributes",
    "write_synthetic_corpus",
    "generate_demo_corpus",
    "generate_unlabelled_demo_clips",
    "corpus_parser",
    "main",
]

DEMO_LABELS = ("angry", "happy", "neutral", "sad")
SPLIT_NAMES = ("train", "dev", "test")

_FORMAT_VERSION = 3  # 2: train, dev and test have disjoint voices; 3: arousal, valence and dominance columns
_MIN_DURATION_S = 1.0
_MAX_DURATION_S = 4.0
_AMBIGUOUS_FRACTION = 0.4
_INTENSITY = (0.6, 1.2)  # range of the per-utterance expressiveness (0: neutral prosody, 1: the class target)

# ---------------------------------------------------------------------------------------------------------------------
# Transcripts
# ---------------------------------------------------------------------------------------------------------------------

_SLOTS = {
    "name": ("Alice", "Bob", "Maria", "James", "Sofia", "David", "Emma", "Lucas", "Nina", "Omar", "Grace", "Tom"),
    "object": ("car", "phone", "laptop", "keys", "bike", "camera", "jacket", "book", "guitar", "watch", "bag"),
    "place": ("office", "park", "beach", "market", "library", "airport", "museum", "garden", "hospital", "cafe"),
    "time": ("five", "half past six", "noon", "nine", "seven thirty", "midnight", "a quarter to eight", "ten"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "number": ("two", "three", "four", "seven", "nine", "eleven"),
}

_EMOTION_TEMPLATES = {
    "angry": (
        "This is absolutely unacceptable!",
        "I told you, {name}, never to touch my {object}!",
        "Get out of my {place} right now!",
        "I am sick and tired of waiting for {name}!",
        "How dare you lie to me again!",
        "You ruined my {object}, you idiot!",
        "Stop wasting my time, I hate this!",
        "Why is the {object} broken again? This is ridiculous!",
        "I am furious about what happened at the {place}!",
        "Do not ever talk to me like that again!",
        "Enough! I am done with your stupid excuses!",
        "Who the hell took my {object}?",
    ),
    "happy": (
        "That is wonderful news!",
        "I am so happy for you, {name}!",
        "We won the game, this is amazing!",
        "I love the new {object}, thank you so much!",
        "What a beautiful day at the {place}!",
        "{name} is finally coming home tonight, I am thrilled!",
        "This is the best {object} ever!",
        "Congratulations, you really deserve it!",
        "I am so excited about our trip to the {place}!",
        "Yes! We got the tickets, how fantastic!",
        "You made my day, {name}, I am delighted!",
        "Hooray, the {object} works perfectly!",
    ),
    "neutral": (
        "The meeting has been moved to {time}.",
        "Please put the {object} on the shelf.",
        "The report is due on {day}.",
        "{name} works at the {place} on the second floor.",
        "The train leaves from platform {number}.",
        "The forecast says it will be cloudy on {day}.",
        "The form needs to be signed by {name}.",
        "The {place} opens at {time} on weekdays.",
        "Turn left at the corner and continue straight.",
        "The package contains {number} items.",
        "Your appointment is scheduled for {day}.",
        "The document is in the second folder.",
    ),
    "sad": (
        "I miss {name} so much.",
        "Nobody came to the party.",
        "I lost my {object} and I cannot find it anywhere.",
        "I feel so lonely without you.",
        "It is over, there is nothing left.",
        "{name} passed away last {day}.",
        "I wish things were different.",
        "I am so tired of everything.",
        "I failed the exam again.",
        "We had to say goodbye at the {place}.",
        "Nothing I do ever seems to matter.",
        "I cried all night, I feel empty.",
    ),
}

_AMBIGUOUS_TEMPLATES = (
    "I am going to the station at {time}.",
    "We talked about it yesterday.",
    "{name} called me this morning.",
    "The {object} is on the kitchen table.",
    "I will see you on {day}.",
    "She said it would be ready by {time}.",
    "We are meeting {name} at the {place}.",
    "It was the last one they had.",
    "The letter arrived this afternoon.",
    "He bought a new {object}.",
    "They moved to a house near the {place}.",
    "I just saw {name} at the {place}.",
    "So that is what {name} decided.",
    "You brought the {object} back on {day}.",
    "Dinner will be at {time} tonight.",
    "There are {number} people waiting outside.",
)

# short class-typical openers, prepended to some of the emotion-bearing sentences (recurring lexical cues)
_EMOTION_OPENERS = {
    "angry": ("Seriously,", "Damn it,", "Listen,", "Unbelievable,", "For heaven's sake,"),
    "happy": ("Oh wow,", "Yay,", "Great,", "Wonderful,", "How lovely,"),
    "neutral": ("Okay,", "For the record,", "Just to confirm,", "As planned,", "Note that"),
    "sad": ("Sadly,", "Oh no,", "Unfortunately,", "Alas,", "Honestly, sigh,"),
}
_OPENER_PROB = 0.8

_SLOT_RE = re.compile(r"\{(\w+)\}")


def _fill(template: str, rng: np.random.Generator, opener: str | None = None) -> str:
    text = _SLOT_RE.sub(lambda m: str(rng.choice(_SLOTS[m.group(1)])), template)
    if opener is None:
        return text[0].upper() + text[1:]
    if not (text.startswith("I ") or template.startswith("{")):  # keep "I" and proper names capitalised
        text = text[0].lower() + text[1:]
    return f"{opener} {text}"


def _make_texts(label: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` transcripts for ``label``: ~40 % ambiguous (shared by all classes), the rest emotion-bearing."""
    n_amb = int(round(_AMBIGUOUS_FRACTION * n))
    is_amb = np.zeros(n, dtype=bool)
    is_amb[rng.permutation(n)[:n_amb]] = True
    emo, amb = _EMOTION_TEMPLATES[label], _AMBIGUOUS_TEMPLATES
    # cycle through the shuffled emotion templates so each gets used before any repeats; ambiguous templates are drawn
    # i.i.d. (cycling them too would balance them exactly per class, making them anti-informative across splits)
    emo_order = np.concatenate([rng.permutation(len(emo)) for _ in range(n // len(emo) + 1)])
    texts, i_emo = [], 0
    for ambiguous in is_amb:
        if ambiguous:
            template = amb[rng.integers(len(amb))]
        else:
            template, i_emo = emo[emo_order[i_emo]], i_emo + 1
            if rng.random() < _OPENER_PROB:
                texts.append(_fill(template, rng, str(rng.choice(_EMOTION_OPENERS[label]))))
                continue
        texts.append(_fill(template, rng))
    return texts


def _syllables(word: str) -> int:
    word = word.lower()
    n = len(re.findall(r"[aeiouy]+", word))
    if word.endswith("e") and not word.endswith(("le", "ee")) and n > 1:
        n -= 1
    return max(1, n)


# ---------------------------------------------------------------------------------------------------------------------
# Prosody: class targets relative to the speaker baseline
# ---------------------------------------------------------------------------------------------------------------------
# f0_st: F0 shift (semitones); accent_st / accent_p: pitch-accent height and probability per syllable;
# decl_st: F0 change over the utterance (negative = falling); drift_st: slow random F0 wander; rate: syllables / s;
# gain_db: loudness; tilt: spectral tilt of the voiced source (dB / octave); jitter, shimmer: cycle-to-cycle F0 /
# amplitude perturbation; breath: aspiration noise relative to voicing; pause_p: pause probability between words;
# bw: formant bandwidth scale; fshift: formant frequency scale.
_NEUTRAL = dict(
    f0_st=0.0,
    accent_st=1.2,
    accent_p=0.3,
    decl_st=-1.5,
    drift_st=0.5,
    rate=4.3,
    gain_db=0.0,
    tilt=-8.0,
    jitter=0.006,
    shimmer=0.05,
    breath=0.06,
    pause_p=0.25,
    bw=1.0,
    fshift=1.0,
)
_CLASS_PROSODY = {
    "angry": dict(
        _NEUTRAL,
        f0_st=4.0,
        accent_st=3.0,
        accent_p=0.55,
        decl_st=-2.5,
        drift_st=0.9,
        rate=5.4,
        gain_db=7.0,
        tilt=-3.5,
        jitter=0.03,
        shimmer=0.18,
        breath=0.12,
        pause_p=0.12,
        bw=0.85,
        fshift=1.05,
    ),
    "happy": dict(
        _NEUTRAL,
        f0_st=3.5,
        accent_st=5.0,
        accent_p=0.55,
        decl_st=2.5,
        drift_st=1.5,
        rate=5.0,
        gain_db=3.0,
        tilt=-5.5,
        jitter=0.008,
        shimmer=0.06,
        breath=0.05,
        pause_p=0.18,
        bw=0.95,
        fshift=1.06,
    ),
    "neutral": dict(_NEUTRAL),
    "sad": dict(
        _NEUTRAL,
        f0_st=-2.5,
        accent_st=0.7,
        accent_p=0.2,
        decl_st=-4.5,
        drift_st=0.4,
        rate=3.3,
        gain_db=-7.0,
        tilt=-12.0,
        jitter=0.012,
        shimmer=0.09,
        breath=0.3,
        pause_p=0.45,
        bw=1.3,
        fshift=0.97,
    ),
}
# additive noise (std) for additive parameters, multiplicative log-normal noise (sigma) for the others
_ADD_NOISE = dict(f0_st=1.5, accent_st=0.8, decl_st=1.2, gain_db=2.5, tilt=1.5, pause_p=0.08)
_LOG_NOISE = dict(rate=0.1, jitter=0.3, shimmer=0.3, breath=0.3, drift_st=0.3, bw=0.1)

# (F1, F2, F3) in Hz for an adult male-ish vocal tract
_VOWELS = np.array(
    [
        (730, 1090, 2440),  # a
        (270, 2290, 3010),  # i
        (300, 870, 2240),  # u
        (530, 1840, 2480),  # e
        (570, 840, 2410),  # o
        (660, 1720, 2410),  # ae
        (520, 1190, 2390),  # uh
        (390, 1990, 2550),  # ih
    ],
    dtype=np.float64,
)
_NASAL = np.array((280.0, 1300.0, 2300.0))
_ONSET_CDF = np.cumsum((0.3, 0.3, 0.2))  # syllable onset: fricative, stop, nasal, (rest: none)
_BANDWIDTHS = np.array((80.0, 110.0, 160.0))
_FORMANT_GAINS = np.array((1.0, 0.55, 0.28))


# Emotional attributes of a synthetic clip: the direction of each class on valence and dominance (-1 to 1), and the
# arousal cues' values at full expressiveness (angry's pitch shift, speaking-rate ratio and loudness)
_VALENCE = {"angry": -0.6, "happy": 0.8, "neutral": 0.0, "sad": -0.7}
_DOMINANCE = {"angry": 0.7, "happy": 0.3, "neutral": 0.0, "sad": -0.6}
_AROUSAL_SCALE = dict(pitch_st=4.0, rate_ratio=1.25, loudness_db=7.0)


def synthetic_attributes(
    label: str, expressiveness: float, pitch_st: float, rate_ratio: float, loudness_db: float
) -> dict[str, float]:
    """Arousal, valence and dominance (0-1) of a synthetic clip of class `label`: arousal from how it was realised
    against the neutral voice (pitch shift in semitones, speaking-rate ratio, loudness in dB; each cue scaled so that
    angry's full value is 1, and averaged), valence and dominance from the class's direction times the clip's
    expressiveness. 0.5 is neutral; 0.4 per unit of cue."""
    cue = (
        pitch_st / _AROUSAL_SCALE["pitch_st"]
        + math.log(rate_ratio) / math.log(_AROUSAL_SCALE["rate_ratio"])
        + loudness_db / _AROUSAL_SCALE["loudness_db"]
    ) / 3
    values = {
        "arousal": 0.5 + 0.4 * cue,
        "valence": 0.5 + 0.4 * expressiveness * _VALENCE[label],
        "dominance": 0.5 + 0.4 * expressiveness * _DOMINANCE[label],
    }
    return {name: round(min(1.0, max(0.0, value)), 4) for name, value in values.items()}


def _utterance_prosody(label: str, speaker: dict, rng: np.random.Generator) -> dict:
    target = _CLASS_PROSODY[label]
    intensity = rng.uniform(*_INTENSITY)  # how expressive this utterance is
    p = {}
    for key, neutral_value in _NEUTRAL.items():
        value = neutral_value + intensity * (target[key] - neutral_value)
        if key in _ADD_NOISE:
            value += _ADD_NOISE[key] * rng.standard_normal()
        elif key in _LOG_NOISE:
            value *= float(np.exp(_LOG_NOISE[key] * rng.standard_normal()))
        p[key] = value
    # before the voice's own tempo and level: the emotion's realisation, not the speaker's
    p["attributes"] = synthetic_attributes(label, intensity, p["f0_st"], p["rate"] / _NEUTRAL["rate"], p["gain_db"])
    p["accent_p"] = float(np.clip(p["accent_p"], 0.05, 0.9))
    p["pause_p"] = float(np.clip(p["pause_p"], 0.0, 0.8))
    p["rate"] *= speaker["tempo"]
    p["gain_db"] += speaker["gain_db"]
    p["tilt"] += speaker["tilt"]
    p["breath"] *= speaker["breath"]
    return p


def _make_speakers(n_speakers: int, rng: np.random.Generator) -> list[dict]:
    speakers = []
    for i in range(n_speakers):
        female = i % 2 == 1
        speakers.append(
            dict(
                f0=rng.uniform(175.0, 240.0) if female else rng.uniform(90.0, 135.0),
                formant=rng.uniform(1.08, 1.18) if female else rng.uniform(0.92, 1.02),
                tempo=rng.uniform(0.9, 1.1),
                gain_db=rng.uniform(-2.0, 2.0),
                tilt=rng.uniform(-1.5, 1.5),
                breath=float(np.exp(rng.normal(0.0, 0.25))) * (1.3 if female else 1.0),
            )
        )
    return speakers


# ---------------------------------------------------------------------------------------------------------------------
# Signal synthesis
# ---------------------------------------------------------------------------------------------------------------------


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along the last axis (edge-padded), O(T)."""
    if width <= 1:
        return x
    pad = width // 2
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, width - 1 - pad)], mode="edge")
    c = np.cumsum(xp, axis=-1)
    c = np.concatenate([np.zeros(c.shape[:-1] + (1,)), c], axis=-1)
    return (c[..., width:] - c[..., :-width]) / width


def _build_timeline(text: str, p: dict, speaker: dict, sr: int, rng: np.random.Generator) -> dict:
    """Control tracks for one utterance: per-sample voicing/frication envelopes, per-segment formants, accents."""
    words = re.findall(r"[A-Za-z']+", text)
    syl_dur = 1.0 / p["rate"]
    # segments: (kind, duration_s, formants or fricative centre, amplitude)
    segments: list[tuple[str, float, np.ndarray | float, float]] = [("sil", rng.uniform(0.08, 0.25), 0.0, 0.0)]
    n_syl_total = sum(_syllables(w) for w in words)
    stress = rng.uniform(0.5, 0.8, size=n_syl_total)
    stress[rng.random(n_syl_total) < 0.4] = 1.0
    k = 0
    for w_i, word in enumerate(words):
        for _ in range(_syllables(word)):
            d = syl_dur * rng.uniform(0.75, 1.3)
            vowel = _VOWELS[rng.integers(len(_VOWELS))] * speaker["formant"] * p["fshift"]
            vowel = vowel * rng.uniform(0.95, 1.05, size=3)
            onset = int(np.searchsorted(_ONSET_CDF, rng.random(), side="right"))  # fricative, stop, nasal, none
            if onset == 0:
                segments.append(("fric", 0.3 * d, rng.uniform(2500.0, 6000.0), rng.uniform(0.15, 0.35)))
                d *= 0.7
            elif onset == 1:
                segments.append(("sil", 0.12 * d, 0.0, 0.0))
                segments.append(("burst", 0.015, rng.uniform(1500.0, 4500.0), rng.uniform(0.3, 0.6)))
                d = 0.88 * d - 0.015
            elif onset == 2:
                segments.append(("nasal", 0.25 * d, _NASAL * speaker["formant"], 0.35))
                d *= 0.75
            segments.append(("vowel", d, vowel, stress[k]))
            k += 1
        if w_i < len(words) - 1 and rng.random() < p["pause_p"]:
            segments.append(("sil", rng.uniform(0.05, 0.25) * 4.3 / p["rate"], 0.0, 0.0))
    segments.append(("sil", rng.uniform(0.1, 0.3), 0.0, 0.0))

    durs = np.array([s[1] for s in segments])
    total = durs.sum()
    if total > _MAX_DURATION_S - 0.02:  # compress (speak faster) to fit the maximum duration
        durs *= (_MAX_DURATION_S - 0.02) / total
    elif total < _MIN_DURATION_S + 0.02:  # pad the trailing silence
        durs[-1] += _MIN_DURATION_S + 0.02 - total
    lengths = np.maximum(1, np.round(durs * sr).astype(int))
    n = int(lengths.sum())

    voiced = np.zeros(n)
    fric = np.zeros(n)
    seg_formants = np.zeros((len(segments), 3))  # vocal-tract shape per segment (held through consonants/pauses)
    seg_fc = np.full(len(segments), 4000.0)  # fricative / burst noise centre frequency per segment
    accents = []  # (centre sample, width in samples, stress) of candidate pitch accents
    pos = 0
    last_formants = _VOWELS[6] * speaker["formant"]
    for i, ((kind, _, spec, amp), length) in enumerate(zip(segments, lengths)):
        sl = slice(pos, pos + length)
        seg_formants[i] = last_formants
        if kind == "vowel":
            x = (np.arange(length) + 0.5) / length
            voiced[sl] = amp * np.sin(np.pi * x) ** 0.35
            seg_formants[i] = last_formants = spec
            accents.append((pos + length / 2, length / 2.5, amp))
        elif kind == "nasal":
            voiced[sl] = amp
            seg_formants[i] = spec
        elif kind in ("fric", "burst"):
            x = (np.arange(length) + 0.5) / length
            fric[sl] = amp * (np.sin(np.pi * x) if kind == "fric" else np.exp(-4 * x))
            seg_fc[i] = spec
        pos += length
    ms = sr // 1000
    return dict(
        n=n,
        voiced=_smooth(voiced, 4 * ms),
        fric=_smooth(fric, 2 * ms),
        seg_index=np.repeat(np.arange(len(segments)), lengths),
        seg_formants=seg_formants,
        seg_fc=seg_fc,
        accents=accents,
    )


def _synthesize(text: str, label: str, speaker: dict, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    p = _utterance_prosody(label, speaker, rng)
    tl = _build_timeline(text, p, speaker, sr, rng)
    n = tl["n"]
    t = np.arange(n) / sr
    duration = n / sr

    # --- F0 contour (semitones relative to the speaker's base F0) ---------------------------------------------------
    st = np.full(n, p["f0_st"]) + p["decl_st"] * (t / duration - 0.5)
    knots = np.arange(0.0, duration + 0.3, 0.3)
    st += np.interp(t, knots, p["drift_st"] * rng.standard_normal(len(knots)))
    for centre, width, stress in tl["accents"]:
        if rng.random() < p["accent_p"] * (0.6 + 0.6 * stress):
            height = p["accent_st"] * rng.uniform(0.5, 1.2)
            if label == "happy" and rng.random() < 0.25:
                height = -height
            lo, hi = int(max(0, centre - 4 * width)), int(min(n, centre + 4 * width))
            st[lo:hi] += height * np.exp(-0.5 * ((np.arange(lo, hi) - centre) / width) ** 2)
    f0 = speaker["f0"] * 2.0 ** (st / 12.0)
    f0 = np.clip(f0, 60.0, min(500.0, sr / 8))
    # jitter: a new random perturbation every ~5 ms (about one glottal cycle)
    block = max(1, 5 * sr // 1000)
    jit = np.repeat(rng.standard_normal(n // block + 1), block)[:n]
    f0 = f0 * (1.0 + p["jitter"] * jit)

    # --- band-limited glottal pulse train ---------------------------------------------------------------------------
    phase = np.cumsum(f0 / sr)
    idx = np.nonzero(np.diff(np.floor(phase)) > 0)[0] + 1
    frac = (phase[idx] - np.floor(phase[idx])) / (f0[idx] / sr)  # how far past the pulse instant sample idx is
    pulse_t = idx - frac
    amp = tl["voiced"][idx] * np.sqrt(sr / f0[idx])  # ~unit power regardless of F0
    amp *= np.clip(1.0 + p["shimmer"] * rng.standard_normal(len(idx)), 0.2, 2.0)
    keep = amp > 1e-3
    pulse_t, amp = pulse_t[keep], amp[keep]
    half = 8
    offsets = np.arange(-half, half + 1)
    base = np.floor(pulse_t).astype(int)
    taps = base[:, None] + offsets[None, :]
    d = taps - pulse_t[:, None]
    kernel = 0.9 * np.sinc(0.9 * d) * (0.5 + 0.5 * np.cos(np.pi * d / (half + 1)))
    source = np.bincount((taps + half).ravel(), (kernel * amp[:, None]).ravel(), minlength=n + 2 * half + 2)
    source = source[half : half + n]

    # aspiration (breathiness / harshness) noise, modulated by the glottal cycle
    aspiration = rng.standard_normal(n) * tl["voiced"] * (0.6 + 0.4 * np.cos(2 * np.pi * phase))
    frication = rng.standard_normal(n) * tl["fric"]

    # --- time-varying spectral shaping in the STFT domain -----------------------------------------------------------
    n_fft = int(2 ** round(np.log2(0.032 * sr)))
    hop = n_fft // 2
    window = np.sqrt(np.hanning(n_fft + 1)[:-1])  # sqrt-Hann analysis + synthesis, 50 % overlap
    pad = n_fft // 2
    n_frames = int(np.ceil(n / hop)) + 1
    total = (n_frames - 1) * hop + n_fft

    def framed(x):
        xp = np.zeros(total)
        xp[pad : pad + n] = x
        return stft(xp, n_fft, hop, window)

    centres = np.clip(np.arange(n_frames) * hop, 0, n - 1)
    f = np.fft.rfftfreq(n_fft, 1.0 / sr)[None, :]
    seg = tl["seg_index"][centres]
    fm = _smooth(tl["seg_formants"][seg].T, max(1, round(0.03 * sr / hop)))  # (3, frames), smooth transitions
    bw = _BANDWIDTHS * p["bw"]
    tract = np.full((n_frames, f.shape[1]), 0.02)
    for i in range(3):
        tract += _FORMANT_GAINS[i] / np.sqrt(1.0 + ((f - fm[i][:, None]) / (bw[i] / 2)) ** 2)
    nyq_roll = 1.0 / (1.0 + (f / (0.45 * sr)) ** 8)
    tilt_v = (np.maximum(f, 100.0) / 100.0) ** (p["tilt"] / 6.02) * nyq_roll
    tilt_a = (np.maximum(f, 500.0) / 500.0) ** (-3.0 / 6.02) * nyq_roll

    def level(spec, mask):  # RMS-like level of a shaped component over the frames in ``mask``
        return float(np.sqrt(np.mean(np.abs(spec[mask]) ** 2))) + 1e-12 if mask.any() else 1.0

    # mix the components at controlled levels: aspiration at ``breath`` relative to the voiced part over the vowels,
    # frication at the level given by its envelope
    active_f = tl["voiced"][centres] > 0.1
    if not active_f.any():
        active_f = np.ones(n_frames, dtype=bool)
    s_voiced = framed(source) * (tract * tilt_v)
    s_breath = framed(aspiration) * (tract * tilt_a)
    ref = level(s_voiced, active_f)
    spec = s_voiced + s_breath * (p["breath"] * ref / level(s_breath, active_f))
    # frame k covers samples [(k - 1) * hop, (k + 1) * hop): peak consonant envelope per frame
    block_max = np.zeros(n_frames + 1)
    block_max[1 : 1 + -(-n // hop)] = np.pad(tl["fric"], (0, -n % hop)).reshape(-1, hop).max(axis=1)
    fric_env = np.maximum(block_max[:-1], block_max[1:])
    fric_f = np.nonzero(fric_env > 1e-3)[0]
    if len(fric_f):
        fc = tl["seg_fc"][seg[fric_f]][:, None]
        fric_shape = np.exp(-0.5 * (np.log2(np.maximum(f, 50.0) / fc) / 0.6) ** 2) * nyq_roll
        s_fric = framed(frication)[fric_f] * fric_shape
        strong = fric_env[fric_f] > 0.05
        if strong.any():
            spec[fric_f] += s_fric * (fric_env[fric_f][strong].mean() * ref / level(s_fric, strong))
    y = istft(spec, n_fft, hop, window, total)[pad : pad + n]

    # --- loudness, random channel colouring, background noise -------------------------------------------------------
    active = tl["voiced"] > 0.1
    y *= 10.0 ** ((-26.0 + p["gain_db"]) / 20.0) / (np.sqrt(np.mean(y[active] ** 2)) if active.any() else 1.0)
    if rng.random() < 0.5:  # mild one-pole pre-emphasis / de-emphasis "microphone"
        a = rng.uniform(-0.3, 0.3)
        y[1:] = y[1:] - a * y[:-1]
    speech_rms = np.sqrt(np.mean(y**2))
    snr_db = rng.uniform(15.0, 35.0)
    y += shaped_noise(n, rng.uniform(0.0, 1.5), rng, sr) * speech_rms * 10.0 ** (-snr_db / 20.0)
    peak = np.max(np.abs(y))
    if peak > 0.9:  # soft limiter
        y = 0.9 * np.tanh(y / 0.9)
    return y, p["attributes"]


def _write_wav(path: pathlib.Path, y: np.ndarray, sr: int) -> None:
    pcm = np.round(np.clip(y, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(sr)
        wf.writeframes(pcm.tobytes())


# ---------------------------------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------------------------------


def _split_counts(n: int, splits: Sequence[float]) -> tuple[int, int, int]:
    w = np.asarray(splits, dtype=np.float64)
    w = w / w.sum()
    n_dev, n_test = int(round(w[1] * n)), int(round(w[2] * n))
    if n >= 3:
        n_dev, n_test = max(1, n_dev), max(1, n_test)
    n_train = n - n_dev - n_test
    if n_train < 1:
        raise ValueError(f"{n} is too few to split as {tuple(splits)}")
    return n_train, n_dev, n_test


def _speaker_splits(n_speakers: int, splits: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    """The voices of train, dev and test: disjoint, as in speaker-independent evaluation (IEMOCAP's sessions,
    MSP-Podcast's partitions). Voices come in (male, female) pairs (`_make_speakers` alternates), and whole pairs are
    dealt to the splits in the proportions of `splits`, so each split hears both."""
    n_pairs = n_speakers // 2
    if n_pairs < 3:
        raise ValueError(f"n_speakers={n_speakers} is too few: train, dev and test need 2 voices each (6 or more)")
    pairs = rng.permutation(n_pairs)
    counts = _split_counts(n_pairs, splits)
    bounds = np.cumsum((0,) + counts)
    voices = [np.sort(np.concatenate([(2 * p, 2 * p + 1) for p in pairs[a:b]])) for a, b in zip(bounds, bounds[1:])]
    voices[0] = np.concatenate([voices[0], np.arange(2 * n_pairs, n_speakers)])  # an odd last voice trains
    return voices


def _params(kind, n_per_class, seed, sampling_rate, splits, n_speakers) -> dict:
    return dict(
        version=_FORMAT_VERSION,
        corpus=kind,
        labels=list(DEMO_LABELS),
        n_per_class=int(n_per_class),
        seed=int(seed),
        sampling_rate=int(sampling_rate),
        splits=[float(s) for s in splits],
        n_speakers=int(n_speakers),
    )


def _is_complete(out_dir: pathlib.Path, manifest: pathlib.Path, meta: pathlib.Path, params: dict) -> bool:
    if not (manifest.is_file() and meta.is_file()):
        return False
    try:
        if json.loads(meta.read_text()) != params:
            return False
        rows = read_manifest(manifest)
    except (OSError, ValueError):
        return False
    return len(rows) == params["n_per_class"] * len(DEMO_LABELS) and all(
        (out_dir / r["audio"]).is_file() for r in rows
    )


@dataclasses.dataclass(frozen=True)
class Synthesis:
    """How a synthetic corpus is made: its name, its transcripts, its voices and its signal synthesis.

    `make_texts(label, n, rng)` gives `n` transcripts of a class, `make_speakers(n, rng)` `n` voices (alternating
    male and female: `_speaker_splits` deals them out in pairs), `synthesize(text, label, voice, sampling_rate, rng)`
    one utterance as a float waveform in [-1, 1] and its attributes (`synthetic_attributes`).
    """

    name: str
    make_texts: Callable[[str, int, np.random.Generator], list[str]]
    make_speakers: Callable[[int, np.random.Generator], list[dict]]
    synthesize: Callable[[str, str, dict, int, np.random.Generator], tuple[np.ndarray, dict[str, float]]]


def write_synthetic_corpus(
    out_dir: str | os.PathLike,
    synthesis: Synthesis,
    n_per_class: int,
    seed: int,
    sampling_rate: int,
    splits: Sequence[float],
    n_speakers: int,
) -> pathlib.Path:
    """Generate a synthetic corpus made by `synthesis` and return the path of its manifest.

    Writes ``n_per_class`` utterances for each label in :data:`DEMO_LABELS` as 16-bit PCM mono WAV files under
    ``out_dir/wavs/`` and a manifest ``out_dir/manifest.csv`` (`write_manifest`: ``id,audio,text,label,split,speaker``
    and the attribute columns ``arousal,valence,dominance``)
    (``audio`` is relative to the manifest's folder; ``split`` is stratified by label, and train, dev and test are
    spoken by disjoint voices: `_speaker_splits`). Everything is deterministic given ``seed``. Idempotent: when
    ``out_dir`` already holds a complete corpus generated with the same parameters (recorded in
    ``out_dir/<name>_corpus.json``) nothing is rewritten.
    """
    if n_per_class < 3:
        raise ValueError("n_per_class must be >= 3 (every split needs every label)")
    if sampling_rate < 8000:
        raise ValueError("sampling_rate must be >= 8000")
    if len(splits) != 3 or min(splits) < 0 or sum(splits) <= 0:
        raise ValueError("splits must be three non-negative fractions (train, dev, test)")

    out_dir = pathlib.Path(out_dir)
    manifest = out_dir / "manifest.csv"
    meta = out_dir / f"{synthesis.name}_corpus.json"
    params = _params(synthesis.name, n_per_class, seed, sampling_rate, splits, n_speakers)
    if _is_complete(out_dir, manifest, meta, params):
        return manifest

    wav_dir = out_dir / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    for stale in wav_dir.glob("spk*_*.wav"):  # leftovers of a corpus generated with other parameters
        stale.unlink()
    manifest.unlink(missing_ok=True)

    rng = np.random.default_rng(seed)
    speakers = synthesis.make_speakers(n_speakers, rng)
    voices = _speaker_splits(n_speakers, splits, rng)
    counts = _split_counts(n_per_class, splits)
    items = []
    for label in DEMO_LABELS:
        texts = synthesis.make_texts(label, n_per_class, rng)
        split = np.repeat(np.arange(3), counts)[rng.permutation(n_per_class)]
        spk = np.empty(n_per_class, dtype=int)
        for s in range(3):  # round-robin over the split's own voices, from a random start
            where = np.flatnonzero(split == s)
            spk[where] = np.roll(voices[s], -int(rng.integers(len(voices[s]))))[np.arange(len(where)) % len(voices[s])]
        items += [(label, texts[i], int(spk[i]), SPLIT_NAMES[split[i]]) for i in range(n_per_class)]
    order = rng.permutation(len(items))

    rows = []
    for uid, j in enumerate(order):
        label, text, spk, split = items[j]
        utt_id = f"spk{spk}_{uid:04d}"
        y, attributes = synthesis.synthesize(
            text, label, speakers[spk], sampling_rate, np.random.default_rng((seed, uid))
        )
        _write_wav(wav_dir / f"{utt_id}.wav", y, sampling_rate)
        rows.append(
            dict(
                id=utt_id,
                audio=f"wavs/{utt_id}.wav",
                text=text,
                label=label,
                split=split,
                speaker=f"spk{spk}",
                **attributes,
            )
        )

    meta.write_text(json.dumps(params, indent=2) + "\n")
    return write_manifest(rows, manifest)


FORMANT = Synthesis("demo", _make_texts, _make_speakers, _synthesize)


def generate_demo_corpus(
    out_dir: str | os.PathLike,
    n_per_class: int = 80,
    seed: int = 42,
    sampling_rate: int = 16000,
    splits: Sequence[float] = (0.7, 0.15, 0.15),
    n_speakers: int = 24,
) -> pathlib.Path:
    """The built-in demo corpus (formant synthesis, the sentences above) in `out_dir`: `write_synthetic_corpus`;
    its parameters are recorded in ``out_dir/demo_corpus.json``."""
    return write_synthetic_corpus(out_dir, FORMANT, n_per_class, seed, sampling_rate, splits, n_speakers)


def generate_unlabelled_demo_clips(
    out_dir: str | os.PathLike, n_per_class: int = 80, seed: int = 1, n_speakers: int = 48
) -> pathlib.Path:
    """Further clips of the demo corpus's kind for a teacher to label (`crab distill` without `--manifest`): its
    synthesis and sentences, spoken by `n_speakers` other voices (`seed` must differ from the corpus's 42: the voices
    are drawn from it, so the same seed would repeat the dev and test voices). Their labels are left unused."""
    return write_synthetic_corpus(out_dir, FORMANT, n_per_class, seed, 16000, (0.7, 0.15, 0.15), n_speakers)


def corpus_parser(description: str, n_speakers: int) -> argparse.ArgumentParser:
    """The command line of a synthetic corpus module: OUT_DIR and the generation parameters."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out_dir", help="output folder (wavs/, manifest.csv, <corpus>_corpus.json)")
    parser.add_argument("--n-per-class", type=int, default=80)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--n-speakers", type=int, default=n_speakers)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = corpus_parser("Generate the built-in synthetic bimodal emotion demo corpus.", n_speakers=24)
    parser.add_argument("--sampling-rate", type=int, default=16000)
    args = parser.parse_args(argv)
    print(
        generate_demo_corpus(args.out_dir, args.n_per_class, args.seed, args.sampling_rate, n_speakers=args.n_speakers)
    )


if __name__ == "__main__":
    main()
