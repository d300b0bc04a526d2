"""Shared manifest format and helpers for the corpus recipes.

A manifest is a CSV (or JSONL) file with one utterance per row and the columns

``id``
    unique utterance id
``audio``
    path to the audio file, relative to the manifest's folder or absolute
``text``
    transcript
``label``
    class name (empty where the corpus hides the label, e.g. MSP-Podcast Test3)
``split``
    ``train``, ``dev``, ``test`` or a corpus-specific split such as ``test1``/``test2``/``test3``
``speaker``, ``session``, ``gender``, ``start``, ``end`` (optional)
    ``start``/``end`` are seconds (floats) of a segment to cut from the audio file; empty means the
    whole file. ``gender`` is ``female``/``male`` or empty.

Converters may add further columns after these (e.g. MELD's ``dialogue_id``); readers ignore what they
do not know. :func:`write_manifest` picks CSV or JSONL by the file suffix and always writes the columns
in the order above.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MANIFEST_COLUMNS: tuple[str, ...] = (
    "id",
    "audio",
    "text",
    "label",
    "split",
    "speaker",
    "session",
    "gender",
    "start",
    "end",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "audio", "text", "label", "split")
PROBLEM_COLUMNS: tuple[str, ...] = ("id", "split", "kind", "detail")


class RecipeError(Exception):
    """A user-facing error (wrong folder, missing file, missing tool); the CLIs print it without a traceback."""


@dataclass
class Problem:
    """One utterance (or input line) a converter could not use, written to ``problems.csv``."""

    id: str
    split: str
    kind: str
    detail: str = ""


def _format_value(value: Any) -> str:
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
        for key in ("id", "audio", "split"):
            if _format_value(row.get(key)) == "":
                raise ValueError(f"manifest row {index} has an empty {key!r}: {dict(row)!r}")
        uid = _format_value(row["id"])
        if uid in seen:
            raise ValueError(f"duplicate manifest id {uid!r}")
        seen.add(uid)


def _atomic_write_text(path: Path, write: Callable[[Any], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
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
                writer.writerow([_format_value(row.get(column)) for column in columns])

    else:

        def write(handle: Any) -> None:
            for row in rows:
                record = {}
                for column in columns:
                    value = row.get(column)
                    record[column] = "" if value is None else value
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    _atomic_write_text(path, write)
    return path


def read_manifest(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a CSV or JSONL manifest into a list of dicts (all values as strings)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"manifest '{path}' does not exist")
    rows: list[dict[str, str]] = []
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
            if missing:
                raise RecipeError(f"manifest '{path}' lacks the column(s) {', '.join(missing)}")
            for row in reader:
                rows.append({key: (value if value is not None else "") for key, value in row.items()})
    else:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise RecipeError(f"manifest '{path}' line {number} is not valid JSON: {error}") from error
                rows.append({key: _format_value(value) for key, value in record.items()})
        for index, row in enumerate(rows):
            missing = [column for column in REQUIRED_COLUMNS if column not in row]
            if missing:
                raise RecipeError(f"manifest '{path}' row {index} lacks the key(s) {', '.join(missing)}")
    return rows


def resolve_audio_path(audio: str, manifest_dir: str | os.PathLike) -> Path:
    """Absolute path of a manifest ``audio`` entry (relative entries are relative to the manifest's folder)."""
    candidate = Path(audio)
    if candidate.is_absolute():
        return candidate
    return (Path(manifest_dir) / candidate).resolve()


def relative_audio_path(audio: str | os.PathLike, manifest_dir: str | os.PathLike) -> str:
    """``audio`` relative to ``manifest_dir`` when it lies below it, else absolute; always with ``/``."""
    audio = Path(audio).resolve()
    try:
        return audio.relative_to(Path(manifest_dir).resolve()).as_posix()
    except ValueError:
        return audio.as_posix()


def require_dir(path: str | os.PathLike, message: str) -> Path:
    """Return ``path`` if it is a folder, else raise :class:`RecipeError` with ``message``."""
    path = Path(path)
    if not path.is_dir():
        raise RecipeError(message)
    return path


def require_file(path: str | os.PathLike, message: str) -> Path:
    """Return ``path`` if it is a file, else raise :class:`RecipeError` with ``message``."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(message)
    return path


def normalize_gender(value: str | None) -> str:
    """``female``/``male`` from the spellings the corpora use (F, M, Female, male, ...); else empty."""
    value = (value or "").strip().lower()
    if value in ("f", "female", "woman"):
        return "female"
    if value in ("m", "male", "man"):
        return "male"
    return ""


def write_problems(problems: Iterable[Problem], path: str | os.PathLike) -> Path:
    """Write problems as CSV with the columns ``id,split,kind,detail`` (a header only if there are none)."""
    path = Path(path)
    records = [asdict(problem) for problem in problems]

    def write(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=list(PROBLEM_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({key: _format_value(value) for key, value in record.items()})

    _atomic_write_text(path, write)
    return path


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)

    def write(handle: Any) -> None:
        json.dump(obj, handle, indent=2, ensure_ascii=False, sort_keys=False)
        handle.write("\n")

    _atomic_write_text(path, write)
    return path


def label_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """``{split: {label: count}}`` over ``rows`` (empty labels are counted as ``""``)."""
    counts: dict[str, Counter] = {}
    for row in rows:
        counts.setdefault(str(row["split"]), Counter())[str(row.get("label") or "")] += 1
    return {split: dict(sorted(counter.items())) for split, counter in counts.items()}


def format_counts(
    rows: Sequence[Mapping[str, Any]], labels: Sequence[str], splits: Sequence[str] | None = None
) -> str:
    """A plain-text table of utterance counts per label (rows) and split (columns)."""
    counts = label_counts(rows)
    if splits is None:
        splits = list(counts)
    names = list(labels)
    if any("" in counts.get(split, {}) for split in splits):
        names.append("")
    header = ["label", *splits, "total"]
    table = []
    for name in names:
        values = [counts.get(split, {}).get(name, 0) for split in splits]
        table.append([name or "(hidden)", *map(str, values), str(sum(values))])
    totals = [sum(counts.get(split, {}).values()) for split in splits]
    table.append(["total", *map(str, totals), str(sum(totals))])
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *table]]
    return "\n".join(lines)


def write_outputs(
    corpus: str,
    root: str | os.PathLike,
    rows: list[dict],
    problems: Sequence[Problem],
    out_dir: Path,
    manifest_name: str,
    **summary: Any,
) -> tuple[Path, Counter]:
    """One conversion's `manifest`, `problems.csv` and `summary.json` (`summary` adds corpus-specific fields);
    refuses a conversion that found nothing usable. Returns the manifest path and the problem counts by kind."""
    if not rows:
        raise RecipeError(f"no usable {corpus} utterances found under '{root}' (see {out_dir / 'problems.csv'})")
    manifest = write_manifest(rows, out_dir / manifest_name)
    write_problems(problems, out_dir / "problems.csv")
    problem_kinds = Counter(problem.kind for problem in problems)
    header = {
        "corpus": corpus,
        "root": str(Path(root).resolve()),
        "manifest": str(manifest),
        "num_utterances": len(rows),
    }
    write_json({**header, **summary, "problems": dict(sorted(problem_kinds.items()))}, out_dir / "summary.json")
    print(f"wrote {manifest} ({len(rows)} utterances)")
    return manifest, problem_kinds


def print_problems(problem_kinds: Counter, out_dir: Path) -> None:
    if problem_kinds:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(problem_kinds.items()))
        print(f"problems ({sum(problem_kinds.values())}, see {out_dir / 'problems.csv'}): {kinds}")


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a recipe ``main``; print :class:`RecipeError` as ``error: ...`` and return exit code 2."""
    try:
        return int(main(argv) or 0)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
