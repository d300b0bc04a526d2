"""Manifests, audio loading and the training dataset.

A manifest is a CSV, a JSONL file, a folder written by `datasets.Dataset.save_to_disk`, or an in-memory
`datasets.Dataset` / `DatasetDict`, with one utterance per row:

    audio  path to the audio file, relative to the manifest's folder or absolute     (required)
    text   transcript                                                                (required)
    label  class name                                                                (required)
    id, split, speaker, session, start, end                                          (optional)

`start`/`end` are seconds of a segment to cut from the file (empty: the whole file). A `DatasetDict` gives the
split by its keys. Audio is read by the pipeline's reader (`pipeline_crab.read_audio`, with the processor's resampler;
not the `datasets` Audio feature, which needs torchcodec + FFmpeg): cut to start/end, cropped to the first
`max_duration_s` seconds (only those frames are read), downmixed to mono and resampled to 16 kHz, as in serving.

`scan_manifest` reads every used row once before training: it reports every bad row in one `ManifestError`, and
computes the clip lengths (for length-grouped batching) and the global waveform mean/std of the training audio.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import math
import os
import re
import tempfile
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

from ..pipeline_crab import UndecodableAudioError, read_audio
from ..processing_crab import (
    SILENCE_PEAK_TO_PEAK,
    TRAINING_CROP_S,
    check_amplitude,
    check_sampling_rate,
    transcript_problem,
)

SAMPLING_RATE = 16_000


def _audio_io():
    """soundfile, imported when decoded audio is first written: the rest of `training` (the trainer, the encoder
    cache, the tiny models the benchmarks use) works without it."""
    import soundfile

    return soundfile


REQUIRED_COLUMNS = ("audio", "text", "label")
OPTIONAL_COLUMNS = ("id", "split", "speaker", "session", "start", "end")
COLUMN_ALIASES = {
    "audio": ("path", "file", "filename", "wav", "wav_path", "audio_path", "audio_file", "filepath"),
    "text": ("transcript", "transcription", "sentence", "utterance", "asr", "caption"),
    "label": ("emotion", "labels", "class", "category", "emotion_label", "target"),
}


class ManifestError(ValueError):
    """A manifest that cannot be trained on; the message lists every problem and how to fix it."""


@dataclass
class Utterance:
    """One manifest row, with `audio` resolved to an absolute path and `where` naming the row for error messages."""

    id: str
    audio: str
    text: str
    label: str
    split: str = ""
    speaker: str = ""
    session: str = ""
    start: float | None = None
    end: float | None = None
    where: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass
class ManifestScan:
    """What one pass over the audio learns: clip lengths in 16 kHz samples and the training waveform's statistics."""

    num_samples: dict[str, int] = field(default_factory=dict)
    waveform_mean: float = 0.0
    waveform_std: float = 1.0
    num_training_samples: int = 0
    skipped: dict[int, list[str]] = field(default_factory=dict)  # with skip_bad_rows: row position -> problems


# ---------------------------------------------------------------------------------------------------------------
# Reading a manifest
# ---------------------------------------------------------------------------------------------------------------


def _read_rows(manifest: Any) -> tuple[list[dict[str, Any]], Path, str, str]:
    """(rows, folder that relative audio paths start from, name for messages, how rows are numbered)."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency, but CSV/JSONL work without it
        datasets = None

    if datasets is not None and isinstance(manifest, datasets.DatasetDict):
        rows = [{**row, "split": split} for split, part in manifest.items() for row in _dataset_rows(part)]
        return rows, Path.cwd(), "the DatasetDict", "row"
    if datasets is not None and isinstance(manifest, datasets.Dataset):
        return _dataset_rows(manifest), Path.cwd(), "the Dataset", "row"

    path = Path(manifest)
    if path.is_dir() and datasets is not None:
        loaded = datasets.load_from_disk(str(path))
        rows, _, _, numbering = _read_rows(loaded)
        return rows, path.resolve(), f"'{path}'", numbering
    if not path.is_file():
        raise ManifestError(f"manifest '{path}' does not exist; pass --manifest with a CSV, JSONL or saved dataset")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
        rows, last_line = [], 1
        for row in reader:
            first_line, last_line = last_line + 1, reader.line_num
            extra = row.pop(None, None)  # fields beyond the header: an unquoted comma shifted the row
            if extra is not None:
                row[_EXTRA_FIELDS] = len(reader.fieldnames) + len(extra)
            elif any(value is None for value in row.values()):  # fewer fields than the header
                row[_EXTRA_FIELDS] = sum(value is not None for value in row.values())
            merged = _merged_lines(row)
            if merged:
                row[_MERGED_LINES] = (first_line, last_line, merged)
            row[_LINE] = first_line
            rows.append(row)
        return rows, path.parent.resolve(), f"'{path}'", "line"
    if suffix in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(_read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ManifestError(f"manifest '{path}' line {number} is not JSON ({error}); fix the line") from error
            if not isinstance(record, dict):
                raise ManifestError(
                    f"manifest '{path}' line {number} is a JSON {type(record).__name__}, not an object; write one "
                    'object per line (JSON Lines), e.g. {"audio": "a.wav", "text": "...", "label": "sad"}'
                )
            rows.append({**record, _LINE: number})
        return rows, path.parent.resolve(), f"'{path}'", "line"
    raise ManifestError(f"manifest '{path}' has suffix '{suffix}'; use .csv, .jsonl or a saved datasets folder")


def _dataset_rows(dataset) -> list[dict[str, Any]]:
    """A `datasets.Dataset`'s rows: `Audio` columns undecoded (`{path, bytes}`: decoding needs torchcodec, and the
    scan reads the audio itself), `ClassLabel` columns as their names (an unlabelled -1 as "")."""
    import datasets

    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Audio) and feature.decode:
            dataset = dataset.cast_column(name, datasets.Audio(decode=False))
    rows = dataset.to_list()
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.ClassLabel):
            for row in rows:
                value = row[name]
                row[name] = "" if value is None or value < 0 else feature.int2str(int(value))
    return rows


def class_label_names(manifest: Any) -> list[str] | None:
    """The class names, in class-id order, of a `datasets` manifest whose `label` column is a `ClassLabel`; None
    for any other manifest."""
    try:
        import datasets
    except ImportError:  # pragma: no cover
        return None
    if isinstance(manifest, (str, os.PathLike)) and Path(manifest).is_dir():
        manifest = datasets.load_from_disk(str(manifest))
    if isinstance(manifest, datasets.DatasetDict):
        manifest = next(iter(manifest.values()), None)
    if not isinstance(manifest, datasets.Dataset):
        return None
    feature = manifest.features.get("label")
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


# Keys under which a row records its line in the file, how many fields it had when not the header's number, and
# the lines a quoted field swallowed (an unclosed quote merges the rows that follow into one field).
_LINE = "\0line"
_EXTRA_FIELDS = "\0extra_fields"
_MERGED_LINES = "\0merged_lines"
_PRIVATE_KEYS = (_LINE, _EXTRA_FIELDS, _MERGED_LINES)


def _merged_lines(row: dict[str, Any]) -> int:
    """How many lines that look like rows of their own (they hold a comma) a quoted field of `row` swallowed."""
    return max(
        (sum("," in line for line in value.splitlines()[1:]) for value in row.values() if isinstance(value, str)),
        default=0,
    )


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, with or without the byte-order mark that Excel writes."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ManifestError(
            f"manifest '{path}' line {line} is not valid UTF-8 (byte {data[error.start]:#04x}); re-save the file "
            "as UTF-8"
        ) from error


def _check_columns(rows: list[dict[str, Any]], name: str) -> None:
    if not rows:
        raise ManifestError(f"manifest {name} has no rows; point --manifest at a manifest with utterances")
    columns = set().union(*(row.keys() for row in rows)) - set(_PRIVATE_KEYS)
    problems = []
    for required in REQUIRED_COLUMNS:
        if required in columns:
            continue
        aliases = [column for column in columns if column.lower() in COLUMN_ALIASES[required]]
        close = difflib.get_close_matches(required, list(columns), n=1, cutoff=0.6)
        hint = aliases or close
        if hint:
            problems.append(f"no '{required}' column; rename column '{hint[0]}' to '{required}'")
        else:
            problems.append(f"no '{required}' column; add it ({_describe(required)})")
    if problems:
        found = ", ".join(sorted(columns))
        raise ManifestError(f"manifest {name} (columns: {found}):\n  " + "\n  ".join(problems))


def _describe(column: str) -> str:
    return {
        "audio": "the audio file's path, relative to the manifest's folder or absolute",
        "text": "the transcript",
        "label": "the emotion class name",
    }[column]


def _as_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _as_seconds(value: Any, column: str, problems: list[str]) -> float | None:
    text = _as_text(value)
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        problems.append(f"{column}='{text}' is not a number of seconds; write seconds or leave it empty")
        return None
    if not math.isfinite(seconds) or seconds < 0:
        problems.append(f"{column}={text} is not a non-negative number of seconds; fix it or leave it empty")
        return None
    return seconds


def load_manifest(manifest: Any, audio_root: str | os.PathLike | None = None) -> list[Utterance]:
    """Read a manifest into `Utterance`s. Missing or misnamed columns raise a `ManifestError` at once; problems of
    single rows (bad start/end, duplicate ids) are kept on the rows and reported by `scan_manifest` together with
    every other bad row.

    Relative audio paths start from `audio_root`, else the manifest's folder (the working directory for an
    in-memory dataset). Files are not opened here: `scan_manifest` does that.
    """
    rows, base_dir, name, numbering = _read_rows(manifest)
    _check_columns(rows, name)
    base_dir = Path(audio_root).resolve() if audio_root is not None else base_dir
    utterances = []
    for index, row in enumerate(rows):
        where, problems = _where(index, numbering, row), []
        if _MERGED_LINES in row:
            first, last, merged = row[_MERGED_LINES]
            problems.append(
                f"a quoted field opened on line {first} runs on to line {last}, so {merged} row(s) after it were read "
                'as part of this one; close the quote, or double quotes inside a quoted field ("say ""hi""")'
            )
        elif _EXTRA_FIELDS in row:
            columns = len(row) - sum(key in row for key in _PRIVATE_KEYS)
            fix = (
                'quote fields that contain commas ("well, I never")'
                if row[_EXTRA_FIELDS] > columns
                else "give every column a value (an empty one between two commas is fine)"
            )
            problems.append(f"{row[_EXTRA_FIELDS]} fields but the header has {columns} columns; {fix}")
        audio = _audio_source(row.get("audio"), problems)
        start = _as_seconds(row.get("start"), "start", problems)
        end = _as_seconds(row.get("end"), "end", problems)
        if start is not None and end is not None and end <= start:
            problems.append(f"end={end} is not after start={start}; fix the segment times")
        utterances.append(
            Utterance(
                id=_as_text(row.get("id")) or f"row{index}",
                audio=str(Path(audio) if Path(audio).is_absolute() else (base_dir / audio)) if audio else "",
                text=_as_text(row.get("text")),
                label=_as_text(row.get("label")),
                split=_as_text(row.get("split")),
                speaker=_as_text(row.get("speaker")),
                session=_as_text(row.get("session")),
                start=start,
                end=end,
                where=where,
                problems=problems,
            )
        )
    return utterances


EMBEDDED_AUDIO_FOLDER = Path(tempfile.gettempdir()) / "crab-embedded-audio"


def _audio_source(value: Any, problems: list[str]) -> str:
    """A row's `audio` as a path. `datasets` audio is accepted: `{path, bytes}` (the path when it exists, else the
    bytes written to a file named after their hash) and decoded `{array, sampling_rate}` (written as a WAV file).
    A value is never printed whole: it may hold millions of samples."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return _as_text(value)
    if isinstance(value, dict):
        path, data, array = value.get("path"), value.get("bytes"), value.get("array")
        if data:
            if path and Path(path).is_file():
                return str(path)
            suffix = Path(path).suffix if path else ".audio"
            return str(_embedded_file(bytes(data), suffix))
        if array is not None:
            try:
                rate = check_sampling_rate(value.get("sampling_rate"), "its decoded audio")
            except ValueError as error:
                problems.append(f"{error} (a {{'array', 'sampling_rate'}} dict needs both)")
                return ""
            buffer = io.BytesIO()
            sf = _audio_io()
            sf.write(buffer, np.asarray(array, dtype=np.float32), rate, format="WAV", subtype="FLOAT")
            return str(_embedded_file(buffer.getvalue(), ".wav"))
        if path:
            return _as_text(path)
        problems.append(
            f"'audio' is a dict with keys {sorted(value)}; give a path, {{'path', 'bytes'}} or {{'array', "
            "'sampling_rate'}"
        )
        return ""
    size = f" of {len(value)} values" if hasattr(value, "__len__") else ""
    problems.append(
        f"'audio' is a {type(value).__name__}{size}, not a path; give the audio file's path, or a datasets "
        "{'array', 'sampling_rate'} dict"
    )
    return ""


def _embedded_file(data: bytes, suffix: str) -> Path:
    """`data` in a file named after its hash (the same audio gives the same path, so scans are cached alike)."""
    path = EMBEDDED_AUDIO_FOLDER / f"{hashlib.sha1(data).hexdigest()}{suffix}"
    if not path.is_file():
        EMBEDDED_AUDIO_FOLDER.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_bytes(data)
        os.replace(partial, path)
    return path


def _where(index: int, numbering: str, row: dict[str, Any]) -> str:
    position = f"line {row[_LINE]}" if numbering == "line" else f"row {index}"
    uid, split = _as_text(row.get("id")), _as_text(row.get("split"))
    details = ", ".join(part for part in (f"id '{uid}'" if uid else "", f"split '{split}'" if split else "") if part)
    return f"{position} ({details})" if details else position


def _report(name: str, problems: list[str]) -> str:
    subject = f"manifest {name}" if name else "the manifest"
    return (
        f"{subject} has {len(problems)} problem(s); nothing was trained. Fix or remove these rows:\n  "
        + "\n  ".join(problems)
    )


def select_split(utterances: Sequence[Utterance], split: str) -> list[Utterance]:
    """The utterances of one split; a manifest without a `split` column can only be used whole."""
    if not any(u.split for u in utterances):
        raise ManifestError(
            f"the manifest has no 'split' column, so split '{split}' cannot be selected; add a 'split' column "
            "(train/dev/test) or pass a DatasetDict"
        )
    return [u for u in utterances if u.split == split]


# what people call the usual splits: a near-miss of a split the run uses gets a hint instead of being left out
_SPLIT_SYNONYMS = {
    "train": ("train", "training", "trn"),
    "dev": ("dev", "devel", "development", "validation", "valid", "val", "eval"),
    "test": ("test", "testing", "tst", "eval_test"),
}


def select_splits(
    utterances: Sequence[Utterance], splits: dict[str, str | None], flags: dict[str, str] | None = None
) -> dict[str, list[Utterance]]:
    """`{role: split name}` -> `{role: its utterances}`, accounting for every row.

    A split name that nearly matches one the run uses (another case, a synonym such as `validation` for `dev`, a
    typo) is a `ManifestError` naming its lines and the fix; rows of any other split are left out with a warning
    naming their lines. `flags` names the option that sets each role's split (for the hint), e.g.
    `{"eval": "--eval_split"}`. Roles whose name is None, or whose split has no rows, get no entry except "train".
    """
    flags = flags or {}
    wanted = {role: name for role, name in splits.items() if name}
    selected = {role: select_split(utterances, name) for role, name in wanted.items()}
    others: dict[str, list[Utterance]] = {}
    for u in utterances:
        if u.split not in wanted.values():
            others.setdefault(u.split, []).append(u)
    problems, unused = [], []
    for split, rows in others.items():
        lines = _lines(rows)
        role = _near_miss(split, wanted)
        if split == "":
            problems.append(f"{lines}: empty split; give every row one of {_names(wanted)}")
        elif role is not None and not selected.get(role):
            flag = flags.get(role, f"the {role} split")
            problems.append(
                f"{lines}: split '{split}' is not '{wanted[role]}', which has no rows; rename it to "
                f"'{wanted[role]}' or pass {flag} {split}"
            )
        elif role is not None:
            problems.append(
                f"{lines}: split '{split}' looks like '{wanted[role]}' but is not it, so these rows would be left "
                f"out; rename it to '{wanted[role]}' or drop the rows"
            )
        else:
            unused.append(f"{lines}: split '{split}'")
    if problems:
        raise ManifestError(
            f"the manifest's splits are {_names(set(u.split for u in utterances))}; this run uses "
            f"{_names(wanted)}:\n  " + "\n  ".join(problems)
        )
    if unused:
        warnings.warn(
            f"{sum(len(others[s]) for s in others)} row(s) belong to splits this run does not use ({_names(wanted)}) "
            "and are left out:\n  " + "\n  ".join(unused),
            UserWarning,
            stacklevel=2,
        )
    return {role: rows for role, rows in selected.items() if rows or role == "train"}


def _near_miss(split: str, wanted: dict[str, str]) -> str | None:
    """The role whose split `split` was probably meant to be: the same name in another case, a synonym, or a typo;
    numbered variants (`test2` next to `test1` or `test`) are other splits, not near misses."""
    folded = split.strip().lower()
    for role, name in wanted.items():
        if folded == name.lower() or folded in _SPLIT_SYNONYMS.get(name.lower(), ()):
            return role
    for role, name in wanted.items():
        numbered = re.sub(r"\d+$", "", folded) == re.sub(r"\d+$", "", name.lower())
        if not numbered and difflib.SequenceMatcher(None, folded, name.lower()).ratio() >= 0.75:
            return role
    return None


def _names(names) -> str:
    return ", ".join(f"'{name}'" for name in sorted(set(names.values() if isinstance(names, dict) else names)))


def _lines(rows: Sequence[Utterance], shown: int = 5) -> str:
    places = [u.where.split(" (")[0] for u in rows[:shown]]
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    return f"{len(rows)} row(s) ({', '.join(places)}{more})"


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
    the frames it needs, with the pipeline's reader."""
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


def _check_audio(utterance: Utterance, max_duration_s: float | None) -> _AudioCheck:
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
    try:
        check_amplitude(waveform, f"audio '{utterance.audio}'")
    except ValueError as error:
        return _AudioCheck(problem=str(error))
    return _AudioCheck(_RunningMoments.of(waveform), silent=bool(np.ptp(waveform) < SILENCE_PEAK_TO_PEAK))


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
    payload = json.dumps(
        [[asdict(u) for u in utterances], list(label_names), max_duration_s, train_split], sort_keys=True
    )
    return hashlib.sha1(payload.encode()).hexdigest()


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
) -> ManifestScan:
    """Check every row of `utterances` and read its audio once; call it before training.

    Raises one `ManifestError` listing every bad row (missing, unreadable, empty or NaN audio; bad start/end;
    fields shifted by an unquoted comma; duplicate ids; empty transcript; empty or unknown label in `train_split` and
    `labelled_splits`; all training audio silent); warns once, naming them, about silent clips. Returns the clip lengths and the global
    waveform mean/std over the training split's audio (as cropped for training, float64 accumulators). With
    `cache_path`, a previous scan of the same rows is reused (the cache is keyed on the rows, not file contents).
    With `skip_bad_rows`, bad rows are left out instead (`ManifestScan.skipped`, by position in `utterances`); only
    problems of the whole split still raise.
    """
    key = _cache_key(utterances, label_names, max_duration_s, train_split) + ("-skip" if skip_bad_rows else "")
    if cache_path is not None and Path(cache_path).is_file():
        cached = json.loads(Path(cache_path).read_text())
        if cached.get("key") == key:
            scan = ManifestScan(**cached["scan"])
            scan.skipped = {int(position): problems for position, problems in scan.skipped.items()}  # JSON keys
            return scan

    known_labels = set(label_names)
    needs_label = {train_split, *labelled_splits}
    id_counts = Counter(u.id for u in utterances)
    row_problems: dict[int, list[str]] = {}  # position -> problems
    for i, u in enumerate(utterances):
        found = list(u.problems)
        if id_counts[u.id] > 1:
            found.append(f"id '{u.id}' is used by {id_counts[u.id]} rows; make ids unique")
        if not u.text:
            found.append("empty transcript; write the transcript (ASR output is fine) or drop the row")
        elif transcript_problem(u.text):
            found.append(f"the transcript {transcript_problem(u.text)}")
        if u.split in needs_label and not u.label:
            hint = "" if u.split == train_split else " (a split with no labels at all gets a predictions file)"
            found.append(f"empty label in split '{u.split}'; label the row or drop it{hint}")
        elif u.label and u.label not in known_labels:
            found.append(
                f"unknown label '{u.label}' (label set: {', '.join(label_names)}); fix the spelling, "
                "drop the row, or add the class to the label set"
            )
        if found:
            row_problems[i] = found
    split_problems: list[str] = []

    moments = _RunningMoments()
    scan = ManifestScan()
    silent: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        results = pool.map(lambda u: _check_audio(u, max_duration_s), utterances)
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
    if moments.count and not moments.std > 0:
        split_problems.append(
            f"all the audio of split '{train_split}' is silent (standard deviation 0), so it cannot be normalised or "
            "learned from; check that the files hold speech"
        )
    problems = [f"{utterances[i].where}: {problem}" for i in sorted(row_problems) for problem in row_problems[i]]
    if split_problems or (problems and not skip_bad_rows):
        raise ManifestError(_report(name, problems + split_problems))
    scan.skipped = {i: row_problems[i] for i in sorted(row_problems)}
    if silent:
        warnings.warn(
            f"{len(silent)} clip(s) are silent (no variation above one 16-bit step); they carry no acoustic "
            "information. Check them:\n  " + "\n  ".join(silent),
            UserWarning,
            stacklevel=2,
        )

    scan.waveform_mean, scan.waveform_std = moments.mean, moments.std
    scan.num_training_samples = moments.count
    if cache_path is not None:
        Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
        Path(cache_path).write_text(json.dumps({"key": key, "scan": asdict(scan)}))
    return scan


# ---------------------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------------------


class CrabAudioTextDataset(torch.utils.data.Dataset):
    """Utterances read on the fly: item i is `{"audio": (N,) float32 at 16 kHz, "text", "label": class id, "id"}`.

    `lengths` (16 kHz samples per clip, from `scan_manifest`) drives length-grouped batching. A row with an empty
    label (hidden test labels) gets `label=None`.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        label2id: dict[str, int],
        max_duration_s: float | None = TRAINING_CROP_S,
        num_samples: dict[str, int] | None = None,
    ):
        self.utterances = list(utterances)
        self.label2id = label2id
        self.max_duration_s = max_duration_s
        num_samples = num_samples or {}
        self.lengths = [num_samples.get(u.id, 0) for u in self.utterances]

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> dict[str, Any]:
        u = self.utterances[index]
        audio = load_audio(u.audio, u.start, u.end, self.max_duration_s)
        label = self.label2id[u.label] if u.label else None
        return {"audio": audio, "text": u.text, "label": label, "id": u.id}

    @property
    def label_ids(self) -> list[int]:
        return [self.label2id[u.label] for u in self.utterances if u.label]


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
    return names


__all__ = [
    "SAMPLING_RATE",
    "ManifestError",
    "Utterance",
    "ManifestScan",
    "load_manifest",
    "select_split",
    "select_splits",
    "load_audio",
    "scan_manifest",
    "CrabAudioTextDataset",
    "label_names_from",
    "class_label_names",
]
