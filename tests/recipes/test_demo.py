"""Tests for the built-in synthetic bimodal emotion corpora: the demo's (modeling_crab.recipes.demo, formant
synthesis) and the second one (modeling_crab.recipes.harmonic, additive harmonics at 22.05 kHz)."""

from __future__ import annotations

import collections
import csv
import filecmp
import pathlib
import re

import numpy as np
import pytest
import soundfile as sf
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from modeling_crab.attributes import ATTRIBUTE_NAMES
from modeling_crab.manifest import MANIFEST_COLUMNS
from modeling_crab.recipes import harmonic
from modeling_crab.recipes.demo import DEMO_LABELS, generate_demo_corpus, main

COLUMNS = [*MANIFEST_COLUMNS, *ATTRIBUTE_NAMES]  # the one manifest format, with the corpora's attribute columns
LEARN_N_PER_CLASS = 100  # dev = 15 per class: large enough for stable accuracies, small enough to stay fast
LEARN_SEED = 42


def header_and_rows(path: pathlib.Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
    return generate_demo_corpus(tmp_path_factory.mktemp("demo"), n_per_class=LEARN_N_PER_CLASS, seed=LEARN_SEED)


# ---------------------------------------------------------------------------------------------------------------------
# format
# ---------------------------------------------------------------------------------------------------------------------


def test_manifest_format(corpus):
    assert corpus.name == "manifest.csv"
    columns, rows = header_and_rows(corpus)
    assert columns == COLUMNS
    assert len(rows) == LEARN_N_PER_CLASS * len(DEMO_LABELS)
    assert len({r["id"] for r in rows}) == len(rows)
    assert collections.Counter(r["label"] for r in rows) == {label: LEARN_N_PER_CLASS for label in DEMO_LABELS}
    per_split = collections.Counter((r["split"], r["label"]) for r in rows)
    for split, frac in (("train", 0.7), ("dev", 0.15), ("test", 0.15)):
        for label in DEMO_LABELS:
            assert abs(per_split[split, label] - frac * LEARN_N_PER_CLASS) <= 1, (split, label)
    assert {r["split"] for r in rows} == {"train", "dev", "test"}
    for r in rows:
        assert re.fullmatch(r"spk\d+", r["speaker"])
        assert r["audio"] == f"wavs/{r['id']}.wav"
        assert r["id"].startswith(r["speaker"] + "_")
        assert (corpus.parent / r["audio"]).is_file()
        assert r["text"].strip()
    assert len({r["speaker"] for r in rows}) == 24
    assert_unseen_voices(rows)
    # transcripts vary, and part of them is shared across emotions (ambiguous wording)
    texts = collections.defaultdict(set)
    for r in rows:
        texts[r["text"]].add(r["label"])
    assert len(texts) > 0.6 * len(rows)
    words_per_label = {
        label: {w for r in rows if r["label"] == label for w in re.findall(r"[a-z']+", r["text"].lower())}
        for label in DEMO_LABELS
    }
    shared = set.intersection(*words_per_label.values())
    assert len(shared) >= 20, sorted(shared)  # the ambiguous sentences use the same vocabulary in every class
    assert any("," in t for t in texts)  # commas survive the CSV round trip


def assert_unseen_voices(rows: list[dict]) -> None:
    """Train, dev and test are spoken by disjoint voices, and each split hears a male and a female voice (the
    generators alternate them: even speaker numbers are male)."""
    voices = collections.defaultdict(set)
    for r in rows:
        voices[r["split"]].add(int(r["speaker"].removeprefix("spk")))
    assert not voices["train"] & voices["dev"] and not voices["train"] & voices["test"]
    assert not voices["dev"] & voices["test"]
    for split in ("train", "dev", "test"):
        assert {v % 2 for v in voices[split]} == {0, 1}, split


def test_second_corpus_is_made_differently(tmp_path):
    """The second corpus: other sentences, other sampling rate, disjoint voices per split, every class in every
    split, and prosody that follows the emotion (sad quieter and slower than angry)."""
    manifest = harmonic.generate_harmonic_corpus(tmp_path, n_per_class=12, seed=3)
    columns, rows = header_and_rows(manifest)
    assert columns == COLUMNS and len(rows) == 12 * len(DEMO_LABELS)
    assert_unseen_voices(rows)
    assert collections.Counter((r["split"], r["label"]) for r in rows) == {
        (split, label): count for split, count in (("train", 8), ("dev", 2), ("test", 2)) for label in DEMO_LABELS
    }
    demo_texts = {r["text"] for r in header_and_rows(generate_demo_corpus(tmp_path / "demo", n_per_class=12))[1]}
    assert not demo_texts & {r["text"] for r in rows}
    level, duration = collections.defaultdict(list), collections.defaultdict(list)
    for r in rows:
        y, sr = sf.read(str(manifest.parent / r["audio"]))
        assert sr == harmonic.SAMPLING_RATE and y.ndim == 1 and np.isfinite(y).all()
        assert 0.5 <= len(y) / sr <= 4.0 and np.abs(y).max() < 1.0
        level[r["label"]].append(np.sqrt(np.mean(y**2)))
        duration[r["label"]].append(len(y) / sr / max(1, len(r["text"].split())))
    assert np.mean(level["sad"]) < np.mean(level["neutral"]) < np.mean(level["angry"])
    assert np.mean(duration["sad"]) > np.mean(duration["angry"])
    assert harmonic.generate_harmonic_corpus(tmp_path, n_per_class=12, seed=3) == manifest  # idempotent
    harmonic.main([str(tmp_path / "cli"), "--n-per-class", "3"])
    assert (tmp_path / "cli" / "harmonic_corpus.json").is_file()


def test_audio_files(corpus):
    _, rows = header_and_rows(corpus)
    durations = collections.defaultdict(list)
    for r in rows:
        path = corpus.parent / r["audio"]
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        y, sr = sf.read(str(path), dtype="float64")
        assert y.ndim == 1 and sr == 16000
        assert 1.0 <= len(y) / sr <= 4.0
        assert np.isfinite(y).all()
        assert np.sqrt(np.mean(y**2)) > 1e-3  # not silent
        assert np.abs(y).max() < 1.0
        durations[r["label"]].append(len(y) / sr)
    # tempo: sad speech is slower than angry speech
    assert np.mean(durations["sad"]) > np.mean(durations["angry"])


# ---------------------------------------------------------------------------------------------------------------------
# determinism, idempotence, CLI
# ---------------------------------------------------------------------------------------------------------------------


def test_deterministic(tmp_path):
    a = generate_demo_corpus(tmp_path / "a", n_per_class=4, seed=7)
    b = generate_demo_corpus(tmp_path / "b", n_per_class=4, seed=7)
    c = generate_demo_corpus(tmp_path / "c", n_per_class=4, seed=8)
    assert a.read_bytes() == b.read_bytes()
    _, rows_a = header_and_rows(a)
    _, rows_c = header_and_rows(c)
    for r in rows_a:
        assert filecmp.cmp(a.parent / r["audio"], b.parent / r["audio"], shallow=False)
    audio_a = [sf.read(str(a.parent / r["audio"]))[0] for r in rows_a]
    audio_c = [sf.read(str(c.parent / r["audio"]))[0] for r in rows_c]
    assert not any(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(audio_a, audio_c))
    assert a.read_bytes() != c.read_bytes()


def test_idempotent(tmp_path):
    manifest = generate_demo_corpus(tmp_path, n_per_class=3, seed=1)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert (tmp_path / "demo_corpus.json").is_file()
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    assert generate_demo_corpus(tmp_path, n_per_class=3, seed=1) == manifest
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == files
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes

    # other parameters -> regenerated, no stale files left behind
    before = manifest.read_bytes()
    generate_demo_corpus(tmp_path, n_per_class=4, seed=2)
    _, rows = header_and_rows(manifest)
    assert manifest.read_bytes() != before
    assert len(rows) == 4 * len(DEMO_LABELS)
    assert sorted(p.name for p in (tmp_path / "wavs").iterdir()) == sorted(pathlib.Path(r["audio"]).name for r in rows)

    # an incomplete corpus (missing audio) is regenerated
    (tmp_path / rows[0]["audio"]).unlink()
    generate_demo_corpus(tmp_path, n_per_class=4, seed=2)
    assert (tmp_path / rows[0]["audio"]).is_file()


def test_cli(tmp_path, capsys):
    main([str(tmp_path / "cli"), "--n-per-class", "3", "--seed", "5"])
    out = capsys.readouterr().out.strip()
    assert pathlib.Path(out) == tmp_path / "cli" / "manifest.csv"
    assert pathlib.Path(out).is_file()


@pytest.mark.parametrize(
    "kwargs", [dict(n_per_class=2), dict(n_speakers=0), dict(n_speakers=5), dict(splits=(0.5, 0.5))]
)
def test_invalid_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_demo_corpus(tmp_path, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# learnability: prosody and words each carry part of the label, fusing both is best
# ---------------------------------------------------------------------------------------------------------------------


def prosodic_features(y: np.ndarray, sr: int) -> np.ndarray:
    """Energy, zero-crossing, crude autocorrelation-F0, spectral-balance and duration statistics."""
    frame, hop = int(0.032 * sr), int(0.010 * sr)
    frames = np.lib.stride_tricks.sliding_window_view(y, frame)[::hop]
    db = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-8)
    active = db > db.max() - 30
    zcr = np.mean(np.abs(np.diff(np.sign(frames[active]), axis=1)) > 0, axis=1)
    power = np.abs(np.fft.rfft(frames[active] * np.hanning(frame), n=2 * frame, axis=1)) ** 2
    acf = np.fft.irfft(power, axis=1)[:, :frame]
    lo, hi = int(sr / 400), int(sr / 60)
    lag = lo + np.argmax(acf[:, lo:hi], axis=1)
    periodicity = acf[np.arange(len(acf)), lag] / (acf[:, 0] + 1e-12)
    voiced = periodicity > 0.4
    if voiced.sum() >= 3:
        log_f0, t = np.log2(sr / lag[voiced]), np.nonzero(voiced)[0] / len(voiced)
    else:
        log_f0, t = np.full(3, np.log2(150.0)), np.arange(3) / 3
    slope = np.polyfit(t, log_f0, 1)[0]
    freqs = np.fft.rfftfreq(2 * frame, 1 / sr)
    centroid = (power * freqs).sum(1) / (power.sum(1) + 1e-12)
    high = np.log((power[:, freqs > 2000].sum(1) + 1e-12) / (power.sum(1) + 1e-12))
    return np.array(
        [
            db[active].mean(),
            db[active].std(),
            db.max(),
            zcr.mean(),
            zcr.std(),
            np.median(log_f0),
            log_f0.std(),
            np.ptp(log_f0),
            slope,
            voiced.mean(),
            len(y) / sr,
            active.mean(),
            centroid.mean(),
            high.mean(),
            periodicity.mean(),
        ]
    )


def unimodal_and_fused_accuracies(manifest: pathlib.Path) -> tuple[float, float, float]:
    _, rows = header_and_rows(manifest)
    audio = np.stack([prosodic_features(*sf.read(str(manifest.parent / r["audio"]))) for r in rows])
    texts = [r["text"] for r in rows]
    labels = np.array([r["label"] for r in rows])
    split = np.array([r["split"] for r in rows])
    train, dev = split == "train", split == "dev"

    audio = StandardScaler().fit(audio[train]).transform(audio)
    words = CountVectorizer(binary=True).fit([t for t, m in zip(texts, train) if m]).transform(texts)
    both = sparse.hstack([sparse.csr_matrix(audio), words]).tocsr()

    def accuracy(x):
        clf = LogisticRegression(max_iter=5000).fit(x[train], labels[train])
        return float(clf.score(x[dev], labels[dev]))

    return accuracy(audio), accuracy(words), accuracy(both)


def test_bimodal_learnability(corpus):
    acc_audio, acc_text, acc_fused = unimodal_and_fused_accuracies(corpus)
    print(f"dev accuracy: audio {acc_audio:.3f}  text {acc_text:.3f}  fused {acc_fused:.3f}")
    chance = 1.0 / len(DEMO_LABELS)
    assert acc_audio > 0.5  # prosody alone is informative ...
    assert acc_audio < 0.95  # ... but does not solve the task
    assert acc_text > chance + 0.1  # words are informative ...
    assert acc_text < 0.95  # ... but ambiguous sentences keep text alone from solving it
    # fusing both modalities beats each one alone, or at least matches the best one up to 3 of the 60 dev items.
    # Over seeds 0-39: audio 0.57-0.85 (mean 0.75), text 0.58-0.78 (0.69), fused 0.75-0.93 (0.84); fused minus the
    # best single modality: mean +0.075, worst -0.017.
    assert acc_fused >= max(acc_audio, acc_text) - 0.05


def test_attributes_follow_from_the_synthesis(corpus):
    """Every clip has arousal, valence and dominance on the 0-1 scale; arousal follows the clip's realisation, so it
    orders the classes (angry > happy > neutral > sad) and varies within each; valence and dominance follow the
    class's direction."""
    _, rows = header_and_rows(corpus)
    values = {name: collections.defaultdict(list) for name in ATTRIBUTE_NAMES}
    for row in rows:
        for name in ATTRIBUTE_NAMES:
            value = float(row[name])
            assert 0.0 <= value <= 1.0
            values[name][row["label"]].append(value)
    arousal = {label: np.mean(v) for label, v in values["arousal"].items()}
    assert arousal["angry"] > arousal["happy"] > arousal["neutral"] > arousal["sad"]
    assert all(np.std(v) > 0.02 for v in values["arousal"].values())
    valence = {label: np.mean(v) for label, v in values["valence"].items()}
    assert valence["happy"] > valence["neutral"] > max(valence["angry"], valence["sad"])
    dominance = {label: np.mean(v) for label, v in values["dominance"].items()}
    assert dominance["angry"] > dominance["neutral"] > dominance["sad"]
