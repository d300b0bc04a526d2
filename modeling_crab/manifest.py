"""The manifest: one utterance per row, the format every corpus recipe (`recipes/`, the demo corpus included) writes
and training reads. The one place that defines, reads, writes and checks it; no torch here, so recipes start fast.

A manifest is a CSV or JSON Lines file, a folder written by `datasets.Dataset.save_to_disk`, or an in-memory
`datasets.Dataset` / `DatasetDict` (its keys are the splits). Columns, in the order `write_manifest` writes them:

    id       unique utterance id                                                     (written by every recipe)
    audio    the audio file, relative to the manifest's folder or absolute           (required)
    text     transcript                                                              (required)
    label    class name; empty where the corpus hides it (MSP-Podcast Test3)         (required)
    split    train, dev, test or a corpus's own (test1, test2, ...)                  (written by every recipe)
    speaker, session, gender                                                         (optional)
    start, end   seconds of a segment to cut from the file; empty: the whole file    (optional)

Optional attribute columns follow where a corpus has them (`arousal`, `valence`, `dominance`: empty where a row has
none). Attribute columns (`attributes.ATTRIBUTE_NAMES`, or any other name a run asks for with `--attributes`) hold numbers on one
scale for every corpus, `attributes.ATTRIBUTE_RANGE` (0 = lowest, 1 = highest): a corpus's own scale maps linearly onto it
(`to_attribute_scale`: MSP-Podcast's 1-7 and IEMOCAP's 1-5). Recipes may add columns after these (MELD's
`dialogue_id`); readers ignore what they do not know. Training needs
only `audio`, `text` and `label`: a manifest a user writes by hand may leave out the rest (misnamed columns get a
hint, `COLUMN_ALIASES`). `load_manifest` reads any of the forms into `Utterance`s, keeping each row's problems for
one report; `select_splits` takes the run's splits and accounts for every other row.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import logging
import math
import os
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .attributes import ATTRIBUTE_NAMES, ATTRIBUTE_RANGE
from .text import clean_transcript, transcript_problem

logger = logging.getLogger(__name__)

RECIPE_COLUMNS: tuple[str, ...] = ("id", "audio", "text", "label", "split")  # in every recipe's manifest
MANIFEST_COLUMNS: tuple[str, ...] = (
    *RECIPE_COLUMNS,
    "speaker",
    "session",
    "gender",
    "start",
    "end",
)
WRITTEN_COLUMNS: tuple[str, ...] = ("id", "audio", "split")  # what a recipe must fill in every row


REQUIRED_COLUMNS: tuple[str, ...] = ("audio", "text", "label")  # what training needs
# What the scan before training does with a row whose transcript is empty: stop the run (a bad row), or keep the row
# for its audio alone, with the empty transcript `<s></s>` (the released code's `fillna("")`).
EMPTY_TRANSCRIPTS: tuple[str, ...] = ("error", "audio_only")
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
    attributes: dict[str, float | None] = field(default_factory=dict)  # the run's attributes; None: missing
    where: str = ""
    problems: list[str] = field(default_factory=list)


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


def manifest_columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The fixed manifest columns followed by any extra keys, in first-seen order."""
    columns = list(MANIFEST_COLUMNS)
    seen = set(columns)
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    return columns


def _check_rows(rows: Sequence[Mapping[str, Any]]) -> None:
    seen: set[str] = set()
    for index, row in enumerate(rows):
        for key in WRITTEN_COLUMNS:
            if format_value(row.get(key)) == "":
                raise ValueError(f"manifest row {index} has an empty {key!r}: {dict(row)!r}")
        uid = format_value(row["id"])
        if uid in seen:
            raise ValueError(f"duplicate manifest id {uid!r}")
        seen.add(uid)


def write_atomically(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """`write(handle)` into a hidden temporary file beside `path`, renamed to `path` once whole: a reader (or a run
    that was killed and starts again) sees the earlier file or the new one, never a part. `binary`: a bytes handle
    (Parquet), else UTF-8 text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            write(handle)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def write_manifest(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write ``rows`` as a manifest: CSV for ``.csv``, JSON Lines for ``.jsonl``/``.json``.

    Columns come in the fixed order of :data:`MANIFEST_COLUMNS`, then any extra keys. Missing values
    and ``None`` are written as empty strings. Raises ``ValueError`` on duplicate ids or rows without
    ``id``/``audio``/``split``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise ValueError(f"manifest path {str(path)!r} must end in .csv or .jsonl")
    _check_rows(rows)
    columns = manifest_columns(rows)

    if suffix == ".csv":

        def write(handle: Any) -> None:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow([format_value(row.get(column)) for column in columns])

    else:

        def write(handle: Any) -> None:
            for row in rows:
                record = {}
                for column in columns:
                    value = row.get(column)
                    record[column] = "" if value is None else value
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    write_atomically(path, write)
    return path


def resolve_audio_path(audio: str, manifest_dir: str | os.PathLike) -> Path:
    """Absolute path of a manifest ``audio`` entry (relative entries are relative to the manifest's folder)."""
    candidate = _expand_audio_path(audio)
    if candidate.is_absolute():
        return candidate
    return (Path(manifest_dir) / candidate).resolve()


def _expand_audio_path(audio: str) -> Path:
    """A manifest ``audio`` entry as a path: ``~`` is the home folder, a ``file://`` URL its path."""
    if audio.startswith("file://"):
        from urllib.parse import unquote, urlparse

        audio = unquote(urlparse(audio).path)
    return Path(audio).expanduser()


def relative_audio_path(audio: str | os.PathLike, manifest_dir: str | os.PathLike) -> str:
    """``audio`` relative to ``manifest_dir`` when it lies below it, else absolute; always with ``/``."""
    audio = Path(audio).resolve()
    try:
        return audio.relative_to(Path(manifest_dir).resolve()).as_posix()
    except ValueError:
        return audio.as_posix()


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
        loaded = _load_saved_dataset(path)
        rows, _, _, numbering = _read_rows(loaded)
        return rows, path.resolve(), f"'{path}'", numbering
    if not path.is_file():
        raise ManifestError(f"manifest '{path}' does not exist; pass --manifest with a CSV, JSONL or saved dataset")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
        header = reader.fieldnames or []
        for separator, name in ((";", "semicolons"), ("\t", "tabs")):
            if len(header) == 1 and header[0].count(separator) >= 2:  # one column: the commas are not separators
                raise ManifestError(
                    f"manifest '{path}' separates its columns with {name}, not commas (its header reads "
                    f"{header[0]!r}); save it as comma-separated CSV (a spreadsheet's 'CSV UTF-8 (comma delimited)'), "
                    "or as JSONL"
                )
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


def is_saved_dataset(path: Path) -> bool:
    """A folder `datasets`' `save_to_disk` wrote (a `Dataset`'s or a `DatasetDict`'s)."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _load_saved_dataset(path: Path):
    """A folder written by `datasets`' `save_to_disk`; any other folder is a `ManifestError` naming the fix."""
    import datasets

    if not is_saved_dataset(path):
        inside = next((name for name in ("manifest.csv", "manifest.jsonl") if (path / name).is_file()), None)
        hint = f"; it holds {inside}: pass --manifest {path / inside}" if inside else ""
        raise ManifestError(
            f"manifest '{path}' is a folder that datasets' save_to_disk did not write (no dataset_dict.json or "
            "state.json); pass --manifest with a CSV or JSONL file listing each clip's audio, text and label (a "
            f"folder of audio files is not a manifest: docs/training.md, 'Data'){hint}"
        )
    return datasets.load_from_disk(str(path))


def class_label_names(manifest: Any) -> list[str] | None:
    """The class names, in class-id order, of a `datasets` manifest whose `label` column is a `ClassLabel`; None
    for any other manifest."""
    try:
        import datasets
    except ImportError:  # pragma: no cover
        return None
    if isinstance(manifest, (str, os.PathLike)) and Path(manifest).is_dir():
        manifest = _load_saved_dataset(Path(manifest))
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


def _check_columns(
    rows: list[dict[str, Any]],
    name: str,
    attribute_names: Sequence[str] = (),
    needs_label: bool = True,
    needs_text: bool = True,
) -> None:
    if not rows:
        raise ManifestError(f"manifest {name} has no rows; point --manifest at a manifest with utterances")
    columns = set().union(*(row.keys() for row in rows)) - set(_PRIVATE_KEYS)
    problems = []
    for attribute in attribute_names:
        if attribute in columns:
            continue
        close = [c for c in columns if c.lower() == attribute.lower()] or difflib.get_close_matches(
            attribute, list(columns), n=1, cutoff=0.6
        )
        problems.append(
            f"no '{attribute}' column; rename column '{close[0]}' to '{attribute}'"
            if close
            else f"no '{attribute}' column; add it ({attribute} on the 0-1 scale, empty where a row has none) or "
            f"leave '{attribute}' out of --attributes"
        )
    needed = {"label": needs_label, "text": needs_text}
    for required in [column for column in REQUIRED_COLUMNS if needed.get(column, True)]:
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


def _as_attribute(value: Any, column: str, problems: list[str]) -> float | None:
    """A row's attribute: a number on `ATTRIBUTE_RANGE`, or None where the cell is empty (or NaN)."""
    text = _as_text(value)
    if not text or text.lower() == "nan":
        return None
    try:
        number = float(text)
    except ValueError:
        problems.append(f"{column}='{text}' is not a number; write a number on the 0-1 scale or leave it empty")
        return None
    low, high = ATTRIBUTE_RANGE
    if not math.isfinite(number) or not low <= number <= high:
        problems.append(
            f"{column}={text} is outside the attribute scale {low:g}-{high:g}; map the corpus's own scale onto it "
            "((x - 1) / 6 for 1-7 ratings, (x - 1) / 4 for 1-5) or leave it empty"
        )
        return None
    return number


def load_manifest(
    manifest: Any,
    audio_root: str | os.PathLike | None = None,
    attribute_names: Sequence[str] = (),
    needs_label: bool = True,
    needs_text: bool = True,
) -> list[Utterance]:
    """Read a manifest into `Utterance`s. Missing or misnamed columns raise a `ManifestError` at once; problems of
    single rows (bad start/end, duplicate ids) are kept on the rows and reported by `scan_manifest` together with
    every other bad row.

    Relative audio paths start from `audio_root`, else the manifest's folder (the working directory for an
    in-memory dataset). Files are not opened here: `scan_manifest` does that. `attribute_names` are the attribute
    columns to read (`Utterance.attributes`; an empty cell is a missing attribute, a non-number or a value off the
    0-1 scale a row problem); `needs_label=False` (an attributes-only model) makes the `label` column optional,
    `needs_text=False` (annotating: transcripts made where there are none) the `text` column.
    """

    rows, manifest_dir, name, numbering = _read_rows(manifest)
    _check_columns(rows, name, attribute_names, needs_label, needs_text)
    base_dir = Path(audio_root).resolve() if audio_root is not None else manifest_dir
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
                audio=str(base_dir / _expand_audio_path(audio)) if audio else "",  # an absolute one stays
                text=clean_transcript(_as_text(row.get("text"))),  # nothing visible: the empty transcript
                label=_as_text(row.get("label")),
                split=_as_text(row.get("split")),
                speaker=_as_text(row.get("speaker")),
                session=_as_text(row.get("session")),
                start=start,
                end=end,
                attributes={a: _as_attribute(row.get(a), a, problems) for a in attribute_names},
                where=where,
                problems=problems,
            )
        )
    if audio_root is not None:
        _check_audio_root(utterances, [_as_text(row.get("audio")) for row in rows], base_dir, Path(manifest_dir))
    return utterances


def _check_audio_root(utterances: Sequence[Utterance], entries: list[str], root: Path, manifest_dir: Path) -> None:
    """`--audio_root`, where relative audio paths start: when none of the files they name is under it, the option is
    wrong, not every row; one error naming it (and the manifest's folder, where they are, if they are there)."""
    relative = [
        (u, entry) for u, entry in zip(utterances, entries) if u.audio and not _expand_audio_path(entry).is_absolute()
    ]
    if not relative or any(os.path.isfile(u.audio) for u, _ in relative):
        return
    first, entry = relative[0]
    under_manifest = sum((manifest_dir / _expand_audio_path(e)).is_file() for _, e in relative)
    if under_manifest:
        fix = (
            f"{under_manifest} of them are under the manifest's folder '{manifest_dir}', where relative paths start "
            "without --audio_root; leave --audio_root out"
        )
    else:
        fix = "pass the folder the manifest's relative paths start from"
    raise ManifestError(
        f"--audio_root '{root}': none of the {len(relative)} relative audio paths names a file under it ({first.where}: "
        f"'{entry}' would be '{first.audio}', which does not exist); {fix}"
    )


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
            import soundfile as sf

            from .audio import check_sampling_rate  # here: audio.py needs torch, a manifest does not

            try:
                rate = check_sampling_rate(value.get("sampling_rate"), "its decoded audio")
            except ValueError as error:
                problems.append(f"{error} (a {{'array', 'sampling_rate'}} dict needs both)")
                return ""
            buffer = io.BytesIO()
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


def check_rows(
    utterances: Sequence[Utterance],
    label_names: Sequence[str],
    train_split: str = "train",
    labelled_splits: Sequence[str] = (),
    needs_labels: bool = True,
    empty_transcripts: str = "error",
) -> tuple[dict[int, list[str]], list[Utterance]]:
    """Every row's problems that its fields show, by position in `utterances`: those `load_manifest` found, an id
    used twice, an empty transcript (unless `empty_transcripts="audio_only"`) or one that is not text, an empty label
    in `train_split` or `labelled_splits`, a label outside `label_names` (`needs_labels=False`: an attributes-only
    run checks no labels). Also the rows kept with the empty transcript. The audio is the scan's
    (`training.data.scan_manifest`)."""
    known_labels = set(label_names)
    needs_label = {train_split, *labelled_splits} if needs_labels else set()
    id_counts = Counter(u.id for u in utterances)
    row_problems: dict[int, list[str]] = {}  # position -> problems
    without_text: list[Utterance] = []  # kept with the empty transcript (audio_only)
    for i, u in enumerate(utterances):
        found = list(u.problems)
        if id_counts[u.id] > 1:
            found.append(f"id '{u.id}' is used by {id_counts[u.id]} rows; make ids unique")
        if not u.text and empty_transcripts == "audio_only":
            without_text.append(u)
        elif not u.text:
            found.append(
                "empty transcript; write the transcript (ASR output is fine), drop the row, or pass "
                "--empty_transcripts audio_only to use its audio alone"
            )
        elif transcript_problem(u.text):
            found.append(f"the transcript {transcript_problem(u.text)}")
        if u.split in needs_label and not u.label:
            hint = "" if u.split == train_split else " (a split with no labels at all gets a predictions file)"
            found.append(f"empty label in split '{u.split}'; label the row or drop it{hint}")
        elif needs_labels and u.label and u.label not in known_labels:
            found.append(
                f"unknown label '{u.label}' (label set: {', '.join(label_names)}); fix the spelling, "
                "drop the row, or add the class to the label set"
            )
        if found:
            row_problems[i] = found
    return row_problems, without_text


def report_problems(name: str, problems: list[str]) -> str:
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
    naming their lines, and a row that has problems of its own is reported with them wherever its split. A role that
    names the training split is warned about. `flags` names the option that sets each role's split (for the hints),
    e.g. `{"eval": "--eval_split"}`. Roles whose name is None, or whose split has no rows, get no entry except
    "train"; a split in two roles gives both the same rows.
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
        # a row with problems of its own (a quote never closed, shifted fields) is reported, not left out unread
        problems += [f"{u.where}: {problem}" for u in rows for problem in u.problems]
        rows = [u for u in rows if not u.problems]
        if not rows:
            continue
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
    shared = [role for role in wanted if role != "train" and wanted[role] == wanted.get("train")]
    for role in shared:
        flag = flags.get(role, f"the {role} split")
        warnings.warn(
            f"{flag} '{wanted[role]}' is also the training split: its scores (and a checkpoint chosen on them) measure "
            "how well the model fits rows it was trained on, not unseen ones; pass a held-out split",
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


def column_names(manifest: Any) -> set[str]:
    """The columns of a manifest (any form `load_manifest` reads)."""
    rows = _read_rows(manifest)[0]
    return set().union(*(row.keys() for row in rows)) - set(_PRIVATE_KEYS)


def read_manifest(path: str | os.PathLike) -> list[dict[str, str]]:
    """A manifest file's rows as dicts of strings, as a recipe wrote them (no training checks). Raises
    `ManifestError` on a missing file or a missing column of `RECIPE_COLUMNS`."""
    rows, _, name, _ = _read_rows(path)
    records = [{key: format_value(value) for key, value in row.items() if key not in _PRIVATE_KEYS} for row in rows]
    for index, record in enumerate(records):
        missing = [column for column in RECIPE_COLUMNS if column not in record]
        if missing:
            raise ManifestError(f"manifest {name} row {index} lacks the column(s) {', '.join(missing)}")
    return records


# ---- notes on a run's splits: said once, nothing dropped ---------------------------------------------------------


def note_missing_classes(rows: dict[str, list], splits: dict[str, str], label_names: list[str], test: bool) -> None:
    """A class without a clip in the dev (or labelled test) split: its recall counts as 0 in UAR and macro-F1,
    which average over every class, so the scores there cannot reach 1; said once, with the ceiling."""
    for role in ("eval", "test") if test else ("eval",):
        present = {u.label for u in rows.get(role, [])}
        missing = [name for name in label_names if name not in present]
        if missing and len(missing) < len(label_names):
            ceiling = 1 - len(missing) / len(label_names)
            logger.warning(
                f"split '{splits[role]}' has no clip of {missing}: their recall counts as 0 in its UAR and macro-F1, "
                f"which average over all {len(label_names)} classes, so its UAR is at most {ceiling:.2f}; add clips "
                "of them to compare models on every class"
            )


def note_reused_audio(rows: dict[str, list], splits: dict[str, str], shown: int = 5) -> None:
    """One clip (the same audio file and segment) in several rows is said once per kind, with the rows; nothing is
    dropped: in training and in dev or test, in dev and test, under different labels, or twice in one split."""
    clips: dict[tuple, dict[str, object]] = {}
    for part in rows.values():
        for u in part:  # keyed by row: a split in two roles (--eval_split = --train_split) counts each row once
            clips.setdefault((os.path.realpath(u.audio), u.start, u.end), {})[u.where] = u
    train = splits["train"]
    held_out = {splits[role] for role in ("eval", "test") if role in splits} - {train}
    kinds = {
        f"in split '{train}' and in {' or '.join(map(repr, sorted(held_out)))}": "scores there count clips the model "
        "was trained on, not unseen ones",
        "in both evaluation splits": "the test scores count clips the best checkpoint was chosen on",
        "under different labels": "the model is trained or scored on contradictory answers",
        "twice in one split": "it counts twice in training or in the scores",
    }
    found: dict[str, list[str]] = {kind: [] for kind in kinds}
    for same in clips.values():
        if len(same) < 2:
            continue
        names = [u.split for u in same.values()]
        listed = " = ".join(same)
        flags = (
            train in names and bool(held_out & set(names)),
            len(held_out & set(names)) > 1,
            len({u.label for u in same.values() if u.label}) > 1,
            len(names) > len(set(names)),
        )
        for what, flagged in zip(kinds, flags):
            if flagged:
                found[what].append(listed)
    for what, listed in found.items():
        if listed:
            more = f"\n  ... and {len(listed) - shown} more" if len(listed) > shown else ""
            logger.warning(
                f"{len(listed)} clip(s) (the same audio file and segment) are {what}: {kinds[what]}. Keep each clip "
                "in one row, or fix the path:\n  " + "\n  ".join(listed[:shown]) + more
            )


def note_unused_attribute_columns(manifest) -> None:
    """Say so when the manifest has attribute columns the run leaves unused (no --attributes)."""
    present = [name for name in ATTRIBUTE_NAMES if name in column_names(manifest)]
    if present:
        logger.info(
            f"the manifest has the attribute column(s) {', '.join(present)}; this run predicts the classes only. "
            f"Pass --attributes {','.join(present)} to predict them too"
        )
