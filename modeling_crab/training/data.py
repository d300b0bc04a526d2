"""Audio loading, the pre-training scan and the training dataset, over the rows of a manifest (`..manifest`).

Audio is read by the one audio file reader, serving's too (`audio.read_audio`; not the `datasets` Audio feature,
which needs torchcodec + FFmpeg): cut to start/end, cropped to the first `max_duration_s`
seconds (only those frames are read), downmixed to mono and resampled to 16 kHz, as in serving.

`scan_manifest` reads every used row once before training: it reports every bad row in one `ManifestError`, and
computes the clip lengths (for length-grouped batching) and the global waveform mean/std of the training audio.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import unicodedata
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio import (
    MIN_AUDIO_S,
    SILENCE_PEAK_TO_PEAK,
    UndecodableAudioError,
    check_amplitude,
    crop_length,
    read_audio,
)
from ..manifest import (
    EMPTY_TRANSCRIPTS,
    ManifestError,
    Utterance,
    check_rows,
    class_label_names,
    report_problems,
    write_atomically,
)
from ..options import TRAINING_CROP_S
from .augment import SAMPLING_RATE, WaveformAugmentation, item_rng

logger = logging.getLogger(__name__)

# How the global waveform statistics are computed: "crops", from every training clip as cropped for training;
# "release", as the released code's `LazyWavSet.compute_norm_stats` (`release_waveform_stats`)
WAVEFORM_STATS = ("crops", "release")
RELEASE_STATS_CLIPS = 5000  # the released train_crab.py's sample of training files for the statistics
RELEASE_STD_EPS = 1e-6  # its dataset divides by std + 1e-6


@dataclass
class ManifestScan:
    """What one pass over the audio learns: clip lengths in 16 kHz samples and the training waveform's statistics."""

    num_samples: dict[str, int] = field(default_factory=dict)
    waveform_mean: float = 0.0
    waveform_std: float = 1.0
    num_training_samples: int = 0
    skipped: dict[int, list[str]] = field(default_factory=dict)  # with skip_bad_rows: row position -> problems


# ---------------------------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------------------------


def load_audio(
    path: str | os.PathLike,
    start: float | None = None,
    end: float | None = None,
    max_duration_s: float | None = None,
    sampling_rate: int = SAMPLING_RATE,
) -> np.ndarray:
    """A (N,) float32 mono waveform at `sampling_rate`: the [start, end) segment in seconds, its first
    `max_duration_s` seconds (the one crop of training: the collator's processor does not crop again). Reads only
    the frames it needs, with the one audio file reader (`audio.read_audio`)."""
    waveform, _ = read_audio(path, f"audio file '{path}'", sampling_rate, start, end, max_duration_s)
    return waveform


@dataclass
class _RunningMoments:
    """Count, mean and sum of squared deviations in float64, merged exactly (Chan et al.) across clips."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @staticmethod
    def of(waveform: np.ndarray) -> _RunningMoments:
        values = waveform.astype(np.float64)
        mean = float(values.mean()) if len(values) else 0.0
        return _RunningMoments(len(values), mean, float(((values - mean) ** 2).sum()))

    def merge(self, clip: _RunningMoments) -> None:
        n, clip_mean, clip_m2 = clip.count, clip.mean, clip.m2
        if n == 0:
            return
        total = self.count + n
        delta = clip_mean - self.mean
        self.mean += delta * n / total
        self.m2 += clip_m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 1.0


@dataclass
class _AudioCheck:
    moments: _RunningMoments | None = None
    problem: str | None = None  # what is wrong with the row's audio and how to fix it
    silent: bool = False


def _check_audio(utterance: Utterance, max_duration_s: float | None, min_samples: int) -> _AudioCheck:
    """Read one row's audio as training will, and say what is wrong with it."""
    if not utterance.audio:
        return _AudioCheck(problem="empty 'audio'; give the audio file's path")
    if os.path.isdir(utterance.audio):
        return _AudioCheck(problem=f"audio '{utterance.audio}' is a folder, not an audio file; fix the path")
    if not os.path.isfile(utterance.audio):
        where = "relative paths start at the manifest's folder, or at --audio_root"
        found = _found_elsewhere(Path(utterance.audio))
        if found is not None:
            where += f"; '{found[0]}' exists: pass --audio_root {found[1]}"
        else:
            where += _spelled_otherwise(utterance.audio)
        return _AudioCheck(problem=f"audio file '{utterance.audio}' not found; fix the path ({where})")
    if not os.access(utterance.audio, os.R_OK):
        return _AudioCheck(
            problem=f"audio file '{utterance.audio}' cannot be read (permission denied); make it readable "
            "(chmod a+r) or run as a user who can read it"
        )
    try:
        waveform = load_audio(utterance.audio, utterance.start, utterance.end, max_duration_s)
    except UndecodableAudioError as error:  # corrupt, or not audio
        return _AudioCheck(
            problem=f"audio file '{utterance.audio}' is unreadable ({error.__cause__}); convert it to WAV/FLAC"
        )
    except ValueError as error:  # an impossible sampling rate, a start past the end: named, with the fix
        return _AudioCheck(problem=str(error))
    except Exception as error:  # anything else a decoder raises on a damaged file
        return _AudioCheck(problem=f"audio file '{utterance.audio}' is unreadable ({error}); convert it to WAV/FLAC")
    if len(waveform) == 0:
        return _AudioCheck(problem=f"audio '{utterance.audio}' is empty; remove the row or fix the file")
    if not np.isfinite(waveform).all():
        return _AudioCheck(problem=f"audio '{utterance.audio}' contains NaN or infinite samples; re-export the file")
    if len(waveform) < min_samples:
        return _AudioCheck(
            problem=f"audio '{utterance.audio}' is {len(waveform) / SAMPLING_RATE * 1000:.0f} ms long, shorter than "
            f"one frame of the speech encoder ({min_samples / SAMPLING_RATE * 1000:.0f} ms); remove the row or fix "
            "the file"
        )
    try:
        check_amplitude(waveform, f"audio '{utterance.audio}'")
    except ValueError as error:
        return _AudioCheck(problem=str(error))
    return _AudioCheck(_RunningMoments.of(waveform), silent=bool(np.ptp(waveform) < SILENCE_PEAK_TO_PEAK))


def release_waveform_stats(
    training: Sequence[Utterance], num_workers: int = 4, whole: dict[str, _RunningMoments] | None = None
) -> tuple[float, float]:
    """The released code's waveform statistics (`LazyWavSet.compute_norm_stats` in its train_crab.py): over at most
    `RELEASE_STATS_CLIPS` training clips, drawn by `np.random.RandomState(42).choice` without replacement from the
    training rows in manifest order, each read whole (not cropped to 12 s); the mean, and the standard deviation plus
    the `RELEASE_STD_EPS` its dataset divides by, so that dividing by it is the release's normalisation. `whole`:
    the moments of clips already read whole (by id, from the scan); only the others are read."""
    whole = whole or {}
    chosen = range(len(training))
    if len(training) > RELEASE_STATS_CLIPS:
        chosen = np.random.RandomState(42).choice(len(training), size=RELEASE_STATS_CLIPS, replace=False)

    def clip_moments(i: int) -> _RunningMoments:
        u = training[i]
        return whole[u.id] if u.id in whole else _RunningMoments.of(load_audio(u.audio, u.start, u.end))

    moments = _RunningMoments()
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for clip in pool.map(clip_moments, chosen):
            moments.merge(clip)
    variance = max(moments.m2 / moments.count, 1e-10) if moments.count else 1.0
    return moments.mean, math.sqrt(variance) + RELEASE_STD_EPS


def _spelled_otherwise(missing: str) -> str:
    """A hint when the missing file exists under another spelling of its path: Windows backslashes, or its name's
    Unicode in the other normal form (macOS writes NFD, most editors NFC)."""
    if "\\" in missing and os.path.isfile(missing.replace("\\", "/")):
        return f"; '{missing.replace(chr(92), '/')}' exists: write the path with '/', not '\\'"
    for form in ("NFC", "NFD"):
        other = unicodedata.normalize(form, missing)
        if other != missing and os.path.isfile(other):
            return f"; the file exists with its name's characters in Unicode {form}: write it as the file system does"
    return ""


def _found_elsewhere(missing: Path, depth: int = 4) -> tuple[Path, Path] | None:
    """A file with the missing path's last parts under one of its ancestor folders or the working folder, and the
    folder that relative paths should have started from (`--audio_root`), for paths relative to the wrong folder.
    Longer tails are tried first: they are the more specific match."""
    parts = missing.parts
    for keep in range(min(depth, len(parts) - 1), 0, -1):
        tail = Path(*parts[-keep:])
        stripped = missing.parents[keep - 1]  # the folder the tail was joined to
        for root in [*list(stripped.parents)[:depth], Path.cwd()]:
            if (root / tail).is_file():
                return root / tail, root
    return None


def _cache_key(utterances: Sequence[Utterance], label_names: Sequence[str], max_duration_s, train_split) -> str:
    """The scan's inputs: the rows, the label set, the crop, the training split, and each audio file's size and
    modification time, so that audio re-recorded or broken under the same name is scanned again."""
    payload = json.dumps(
        [[asdict(u) for u in utterances], [file_stamp(u.audio) for u in utterances]]
        + [list(label_names), max_duration_s, train_split],
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode()).hexdigest()


def file_stamp(path: str) -> list[int] | None:
    """(size, modification time in ns) of a file, None where it cannot be read (the scan reports it)."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _read_scan_cache(cache_path: Path, key: str) -> ManifestScan | None:
    """The cached scan of the same inputs, or None: no cache, another key, or a file cut short or edited (it is then
    scanned again and rewritten)."""
    try:
        cached = json.loads(cache_path.read_text())
        if not isinstance(cached, dict) or cached.get("key") != key:
            return None
        scan = ManifestScan(**cached["scan"])
        scan.skipped = {int(position): problems for position, problems in scan.skipped.items()}  # JSON keys
        return scan
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        logger.warning(f"{cache_path} cannot be read ({type(error).__name__}); scanning the manifest again")
        return None


def _attribute_coverage(utterances: Sequence[Utterance], train_split: str) -> list[str]:
    """Warn, per split, how many rows lack each attribute; the problems of a training split with none of one."""
    names = list(utterances[0].attributes) if utterances else []
    missing: dict[str, Counter] = {name: Counter() for name in names}
    totals = Counter(u.split for u in utterances)
    for u in utterances:
        for name in names:
            if u.attributes.get(name) is None:
                missing[name][u.split] += 1
    gaps = [
        f"{name}: {count} of {totals[split]} row(s) of split '{split}'"
        for name in names
        for split, count in sorted(missing[name].items())
    ]
    if gaps:
        warnings.warn(
            "rows without some attribute are kept; the attribute loss and metrics leave them out:\n  "
            + "\n  ".join(gaps),
            UserWarning,
            stacklevel=3,
        )
    return [
        f"split '{train_split}' has no value of attribute '{name}' in any row, so it cannot be learned; fill the "
        f"'{name}' column or leave '{name}' out of --attributes"
        for name in names
        if totals[train_split] and missing[name][train_split] == totals[train_split]
    ]


def scan_manifest(
    utterances: Sequence[Utterance],
    label_names: Sequence[str],
    train_split: str = "train",
    labelled_splits: Sequence[str] = (),
    max_duration_s: float | None = TRAINING_CROP_S,
    num_workers: int = 4,
    cache_path: str | os.PathLike | None = None,
    name: str = "",
    skip_bad_rows: bool = False,
    needs_labels: bool = True,
    empty_transcripts: str = "error",
    waveform_stats: str = "crops",
    min_samples: int | None = None,
) -> ManifestScan:
    """Check every row of `utterances` and read its audio once; call it before training.

    Raises one `ManifestError` listing every bad row (missing, unreadable, empty or NaN audio; bad start/end;
    fields shifted by an unquoted comma; duplicate ids; empty transcript; empty or unknown label in `train_split` and
    `labelled_splits`; all training audio silent); warns once, naming them, about silent clips. Returns the clip lengths and the global
    waveform mean/std over the training split's audio (as cropped for training, float64 accumulators). With
    `cache_path`, a previous scan of the same rows is reused (the cache is keyed on the rows, not file contents).
    With `skip_bad_rows`, bad rows are left out instead (`ManifestScan.skipped`, by position in `utterances`); only
    problems of the whole split still raise.

    Attributes (`Utterance.attributes`): a row without some attribute is kept (the loss and the metrics leave it
    out) and counted in one warning; a training split without any value of an attribute is an error.
    `needs_labels=False` (an attributes-only model) checks no class labels.

    An empty transcript is a bad row (`empty_transcripts="error"`), or with `"audio_only"` the row is kept, to be
    trained and evaluated on its audio alone with the empty transcript `<s></s>` (what the released code does with a
    missing transcript), and counted in one warning.

    A clip shorter than `min_samples` (16 kHz samples; the speech encoder's one frame, `min_audio_samples` of its
    config; at least `MIN_AUDIO_S`, WavLM's 25 ms) is a bad row.

    `waveform_stats="release"` computes the waveform mean/std as the released code did (`release_waveform_stats`:
    whole files of up to 5000 training clips, std + 1e-6) instead of from every training clip as cropped.
    """
    if waveform_stats not in WAVEFORM_STATS:
        raise ValueError(f"waveform_stats={waveform_stats!r}; use one of {', '.join(WAVEFORM_STATS)}")
    if empty_transcripts not in EMPTY_TRANSCRIPTS:
        raise ValueError(f"empty_transcripts={empty_transcripts!r}; use one of {', '.join(EMPTY_TRANSCRIPTS)}")
    key = _cache_key(utterances, label_names, max_duration_s, train_split) + ("-skip" if skip_bad_rows else "")
    key += "" if empty_transcripts == "error" else f"-{empty_transcripts}"
    key += "" if waveform_stats == "crops" else f"-{waveform_stats}-stats"
    min_samples = max(round(MIN_AUDIO_S * SAMPLING_RATE), min_samples or 0)
    key += f"-min{min_samples}"
    if cache_path is not None:
        cached = _read_scan_cache(Path(cache_path), key)
        if cached is not None:
            return cached

    row_problems, without_text = check_rows(
        utterances, label_names, train_split, labelled_splits, needs_labels, empty_transcripts
    )
    split_problems: list[str] = []

    moments = _RunningMoments()
    whole: dict[str, _RunningMoments] = {}  # training clips shorter than the crop: read whole by the scan
    crop = crop_length(max_duration_s, SAMPLING_RATE)
    scan = ManifestScan()
    silent: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        results = pool.map(lambda u: _check_audio(u, max_duration_s, min_samples), utterances)
        progress = tqdm(results, total=len(utterances), desc="checking the manifest", unit="row", disable=None)
        for i, (utterance, check) in enumerate(zip(utterances, progress)):
            if utterance.problems:
                continue
            if check.problem is not None:
                row_problems.setdefault(i, []).append(check.problem)
                continue
            if i in row_problems:
                continue
            if check.silent:
                silent.append(f"{utterance.where}: audio '{utterance.audio}' is silent")
            scan.num_samples[utterance.id] = check.moments.count
            if utterance.split == train_split:
                moments.merge(check.moments)
                if crop is None or check.moments.count < crop:
                    whole[utterance.id] = check.moments
    split_problems += _attribute_coverage(
        [u for i, u in enumerate(utterances) if i not in row_problems and not u.problems], train_split
    )
    if moments.count and not moments.std > 0:
        split_problems.append(
            f"all the audio of split '{train_split}' is silent (standard deviation 0), so it cannot be normalised or "
            "learned from; check that the files hold speech"
        )
    problems = [f"{utterances[i].where}: {problem}" for i in sorted(row_problems) for problem in row_problems[i]]
    if split_problems or (problems and not skip_bad_rows):
        raise ManifestError(report_problems(name, problems + split_problems))
    scan.skipped = {i: row_problems[i] for i in sorted(row_problems)}
    if silent:
        warnings.warn(
            f"{len(silent)} clip(s) are silent (no variation above one 16-bit step); they carry no acoustic "
            "information. Check them:\n  " + "\n  ".join(silent),
            UserWarning,
            stacklevel=2,
        )

    without_text = [u for u in without_text if u.id in scan.num_samples]  # not the rows left out as bad
    if without_text:
        kept = Counter(u.split for u in utterances if u.id in scan.num_samples)
        per_split = Counter(u.split for u in without_text)
        counts = ", ".join(f"{n} of {kept[split]} in split '{split}'" for split, n in sorted(per_split.items()))
        more = f"\n  ... and {len(without_text) - 20} more" if len(without_text) > 20 else ""
        warnings.warn(
            f"{len(without_text)} row(s) have an empty transcript ({counts}); they are trained and evaluated on "
            "their audio alone (the empty transcript <s></s>), as the released code does with missing transcripts. "
            "Write their transcripts (ASR output is fine) to use their words:\n  "
            + "\n  ".join(u.where for u in without_text[:20])
            + more,
            UserWarning,
            stacklevel=2,
        )

    scan.waveform_mean, scan.waveform_std = moments.mean, moments.std
    if waveform_stats == "release":
        training = [u for u in utterances if u.split == train_split and u.id in scan.num_samples]
        scan.waveform_mean, scan.waveform_std = release_waveform_stats(training, num_workers, whole)
    scan.num_training_samples = moments.count
    if cache_path is not None:  # whole or not at all: a run killed while writing it leaves the previous one
        write_atomically(Path(cache_path), lambda handle: json.dump({"key": key, "scan": asdict(scan)}, handle))
    return scan


# ---------------------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------------------


class CrabAudioTextDataset(torch.utils.data.Dataset):
    """Utterances read on the fly: item i is `{"audio": (N,) float32 at 16 kHz, "text", "label": class id, "id"}`.

    `lengths` (16 kHz samples per clip, from `scan_manifest`) drives length-grouped batching. A row with an empty
    label (hidden test labels) gets `label=None`.

    With `augmentation` (the training split only), item `(epoch, i)` is clip i augmented with the generator
    `augment.item_rng(seed, epoch, i)`: the same triple gives the same waveform, another epoch another draw
    (`CrabTrainer` samples such pairs: `collator.EpochIndexSampler`); a plain index i is epoch 0. Enough of the clip is
    read for the fastest speed factor, and the crop to `max_duration_s` follows the speed perturbation, so no clip
    is longer than the crop. `lengths` stay the unperturbed ones. A `noise_dir` is read once here, so a bad noise
    file stops the run before training.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        label2id: dict[str, int],
        max_duration_s: float | None = TRAINING_CROP_S,
        num_samples: dict[str, int] | None = None,
        augmentation: WaveformAugmentation | None = None,
        seed: int = 42,
    ):
        self.utterances = list(utterances)
        self.label2id = label2id
        self.max_duration_s = max_duration_s
        num_samples = num_samples or {}
        self.lengths = [num_samples.get(u.id, 0) for u in self.utterances]
        self.augmentation = augmentation if augmentation is not None and augmentation.active else None
        self.seed = seed
        if self.augmentation is not None and self.augmentation.noise_prob > 0:
            self.augmentation.load_noise()

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        u = self.utterances[index]
        if self.augmentation is None:
            audio = load_audio(u.audio, u.start, u.end, self.max_duration_s)
        else:
            audio = load_audio(u.audio, u.start, u.end, self.augmentation.input_seconds(self.max_duration_s))
            audio = self.augmentation(audio, item_rng(self.seed, epoch, index), self.max_duration_s)
        label = self.label2id[u.label] if u.label and self.label2id else None
        item = {"audio": audio, "text": u.text, "label": label, "id": u.id}
        if u.attributes:
            item["attributes"] = attribute_row(u)
        return item

    @property
    def label_ids(self) -> list[int]:
        return [self.label2id[u.label] for u in self.utterances if u.label]


def attribute_row(utterance: Utterance) -> list[float]:
    """An utterance's attributes in the run's order, NaN where it has none (the loss and metrics mask NaN)."""
    return [math.nan if value is None else value for value in utterance.attributes.values()]


def label_names_from(utterances: Sequence[Utterance], train_split: str = "train", manifest: Any = None) -> list[str]:
    """The label set: a `datasets` manifest's `ClassLabel` names, in their order (`class_label_names`); otherwise
    the sorted class names of the training split."""
    names = class_label_names(manifest) if manifest is not None else None
    if names:
        return names
    names = sorted({u.label for u in utterances if u.split == train_split and u.label})
    if not names:
        raise ManifestError(
            f"split '{train_split}' has no labelled rows; check the 'split' column or pass --train_split"
        )
    check_label_set(names, f"the labels of split '{train_split}'")
    return names


def check_label_set(names: Sequence[str], source: str) -> None:
    """A label set names each class once, in one spelling, and has at least two classes; else a `ManifestError`
    naming `source` (where the names came from) and the fix."""
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise ManifestError(f"{source} name {repeated} more than once; name each class once")
    spellings: dict[str, list[str]] = {}
    for name in names:
        spellings.setdefault(" ".join(name.casefold().split()), []).append(name)
    clashes = [variants for variants in spellings.values() if len(variants) > 1]
    if clashes:
        listed = "; ".join(" and ".join(repr(name) for name in variants) for variants in clashes)
        raise ManifestError(
            f"{source} spell one class in several ways ({listed}): they would be trained as different classes; "
            "give each class one spelling in the 'label' column"
        )
    if len(names) < 2:
        raise ManifestError(
            f"{source} hold one class ({', '.join(map(repr, names))}); an emotion classifier needs two or more: check "
            "the 'label' column and --train_split, or pass --attributes_only with --attributes to predict attributes"
        )


def check_labels_option(utterances: Sequence[Utterance], label_names: Sequence[str]) -> None:
    """`--labels`: a label set that leaves out classes the run's rows have, or spells one of them otherwise, is the
    option's problem, not each row's: one `ManifestError` naming the option, the classes with their rows, and the
    label set that would take them."""
    outside = Counter(u.label for u in utterances if u.label and u.label not in label_names)
    if not outside:
        return
    folded = {" ".join(name.casefold().split()): name for name in label_names}
    respelled = {label: folded[key] for label in outside if (key := " ".join(label.casefold().split())) in folded}
    parts = [
        f"'{label}' ({outside[label]} row(s)), spelled '{listed}' in --labels" for label, listed in respelled.items()
    ]
    parts += [f"'{label}' ({count} row(s))" for label, count in sorted(outside.items()) if label not in respelled]
    spelled = {listed: label for label, listed in respelled.items()}
    suggested = [spelled.get(name, name) for name in label_names] + sorted(set(outside) - set(respelled))
    raise ManifestError(
        f"--labels {','.join(label_names)} leaves out classes that {sum(outside.values())} row(s) of this run have: "
        f"{', '.join(parts)}; pass --labels {','.join(suggested)} (each class as the 'label' column spells it), or "
        "leave those rows out (--skip_bad_rows, or drop them from the manifest)"
    )


def drop_bad_rows(rows: dict, scanned: list, skipped: dict[int, list[str]], report: Path) -> dict:
    """Drop the rows `scan_manifest` found bad, record them in `report`, and check every split still has rows."""
    report.parent.mkdir(parents=True, exist_ok=True)
    with report.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["where", "id", "audio", "problems"])
        for position, problems in skipped.items():
            u = scanned[position]
            writer.writerow([u.where, u.id, u.audio, "; ".join(problems)])
    logger.warning(f"--skip_bad_rows: left out {len(skipped)} bad row(s); they are listed in {report}")
    bad = {id(scanned[position]) for position in skipped}
    kept = {role: [u for u in part if id(u) not in bad] for role, part in rows.items()}
    empty = [role for role, part in kept.items() if not part]
    if empty:
        raise ManifestError(f"after leaving out the bad rows, {', '.join(empty)} has no rows; see {report}")
    return kept


def note_long_transcripts(processor, rows: dict[str, list], splits: dict[str, str]) -> None:
    """Transcripts longer than --max_text_length tokens are cut to their first ones (the paper's truncation): how
    many in each split (`rows` and `splits` by role), and the longest, once per run."""
    limit, parts = processor.max_text_length, []
    for role, part in rows.items():
        cut = [(n, u.id) for n, u in zip(processor.transcript_lengths([u.text for u in part]), part) if n > limit]
        if cut:
            length, uid = max(cut)
            parts.append(
                f"split '{splits[role]}' {len(cut)} of {len(part)} (the longest: id '{uid}', {length} tokens)"
            )
    if parts:
        logger.warning(
            f"transcripts longer than --max_text_length {limit} tokens are cut to their first {limit}, as in the "
            f"paper's recipe: {'; '.join(parts)}. Raise --max_text_length to keep more of them"
        )


__all__ = [
    "drop_bad_rows",
    "note_long_transcripts",
    "SAMPLING_RATE",
    "ManifestScan",
    "load_audio",
    "scan_manifest",
    "release_waveform_stats",
    "file_stamp",
    "check_labels_option",
    "CrabAudioTextDataset",
    "attribute_row",
    "label_names_from",
    "check_label_set",
]
