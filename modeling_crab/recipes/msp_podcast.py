"""Convert MSP-Podcast (2.0; also 1.x) to a Crab manifest (8 classes) and write Test3 challenge submissions.

Usage::

    python -m modeling_crab.recipes.msp_podcast --root /data/MSP-PODCAST --out data/msp_podcast \\
        [--transcripts human|asr] [--asr-dir DIR_OR_CSV]
    python -m modeling_crab.recipes.msp_podcast submission --predictions preds.csv --out submission.csv \\
        [--manifest data/msp_podcast/manifest.csv]

``--root`` is the corpus folder holding

- ``Labels/labels_consensus.csv`` (older releases: ``labels_concensus.csv``) with the columns
  ``FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set``; ``FileName`` includes ``.wav``;
- ``Audios/<FileName>``;
- ``Transcripts/<name>.txt`` -- the human transcript of ``<name>.wav``.

``EmoClass`` codes: A anger, S sadness, H happiness, U surprise, F fear, D disgust, C contempt,
N neutral; O (other) and X (no agreement) are dropped and counted. ``Split_Set``: Train -> ``train``,
Development -> ``dev``, Test1 -> ``test1``, Test2 -> ``test2``, Test3 -> ``test3``. Test3 labels are
hidden in the challenge release, so ``test3`` rows keep an empty ``label`` unless the file gives one of
the 8 codes; Test3 audio files (``*test3*`` names in ``Audios/``) that ``labels_consensus.csv`` does not
list are added as ``test3`` rows too.

Text: ``--transcripts human`` (default) reads ``Transcripts/``; ``--transcripts asr --asr-dir X`` reads
ASR output, either a folder with one ``<name>.txt`` per file or a CSV with the columns ``FileName,text``.
Utterances without a transcript are kept with empty text and listed in ``problems.csv``
(``--drop-missing-text`` excludes them instead).

Columns: ``id`` is the file name without ``.wav``; ``speaker`` is ``SpkrID`` (empty when ``Unknown``);
``gender`` is female/male; the attribute columns ``arousal`` (``EmoAct``), ``valence`` (``EmoVal``) and
``dominance`` (``EmoDom``) map the 1-7 ratings onto 0-1 as (x - 1) / 6; extra columns ``emo_class``, ``emo_act``,
``emo_val``, ``emo_dom`` keep the file's own values. A rating that is empty, not a number or outside 1-7 leaves its
cell empty and is listed in ``problems.csv`` (the row is kept); ``test3`` rows may leave them empty (hidden, like
the label). A labels file without ``EmoAct``/``EmoVal``/``EmoDom`` gives a manifest without those attribute
columns, noted in ``summary.json``.

The ``submission`` subcommand (and :func:`write_submission`) writes the categorical-track file of the
MSP-Podcast challenges (Odyssey 2024 / Interspeech 2025): a CSV with the header ``FileName,EmoClass``, one
row per Test3 file, ``FileName`` with its ``.wav`` and ``EmoClass`` as the single-letter code
(A, S, H, U, F, D, C, N), sorted by ``FileName``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..manifest import read_manifest, relative_audio_path
from .common import (
    Problem,
    RecipeError,
    attribute_cells,
    converter_parser,
    format_counts,
    label_counts,
    normalize_gender,
    print_problems,
    run_cli,
    write_outputs,
)

EMO_CODES: dict[str, str] = {
    "A": "anger",
    "S": "sadness",
    "H": "happiness",
    "U": "surprise",
    "F": "fear",
    "D": "disgust",
    "C": "contempt",
    "N": "neutral",
}
DROPPED_CODES: dict[str, str] = {"O": "other", "X": "no agreement"}
CLASSES: tuple[str, ...] = tuple(EMO_CODES.values())
SPLIT_MAP: dict[str, str] = {
    "Train": "train",
    "Development": "dev",
    "Test1": "test1",
    "Test2": "test2",
    "Test3": "test3",
}
SPLIT_ORDER: tuple[str, ...] = ("train", "dev", "test1", "test2", "test3")
LABEL_FILES: tuple[str, ...] = ("Labels/labels_consensus.csv", "Labels/labels_concensus.csv")
REQUIRED_LABEL_COLUMNS: tuple[str, ...] = ("FileName", "EmoClass", "Split_Set")
ATTRIBUTE_COLUMNS: dict[str, str] = {"arousal": "EmoAct", "valence": "EmoVal", "dominance": "EmoDom"}
ATTRIBUTE_SCALE: tuple[float, float] = (1.0, 7.0)  # the consensus ratings' scale
SUBMISSION_HEADER: tuple[str, str] = ("FileName", "EmoClass")

_CODE_BY_NAME: dict[str, str] = {name: code for code, name in EMO_CODES.items()}
_CODE_BY_NAME.update(
    {
        "angry": "A",
        "sad": "S",
        "happy": "H",
        "surprised": "U",
        "fearful": "F",
        "disgusted": "D",
        "contemptuous": "C",
    }
)


def _stem(file_name: str) -> str:
    name = Path(str(file_name).strip()).name
    return name[:-4] if name.lower().endswith(".wav") else name


def _clean_text(text: str) -> str:
    return " ".join(text.replace("\ufeff", "").split())


def label_to_code(label: str) -> str:
    """Single-letter challenge code for a class name (``anger``) or code (``A``); ``ValueError`` otherwise."""
    value = str(label).strip()
    if value.upper() in EMO_CODES:
        return value.upper()
    code = _CODE_BY_NAME.get(value.lower())
    if code is None:
        raise ValueError(f"cannot map predicted label {label!r} to an MSP-Podcast class ({', '.join(CLASSES)})")
    return code


def write_submission(file_names: Sequence[str], predicted_labels: Sequence[str], path: str | os.PathLike) -> Path:
    """Write the categorical-track submission CSV: header ``FileName,EmoClass``, single-letter codes.

    ``file_names`` may be ids (``MSP-PODCAST_0001_0001``) or file names/paths; ``.wav`` is added where
    missing. ``predicted_labels`` are class names (``anger``) or codes (``A``). Rows are sorted by
    ``FileName``. Raises ``ValueError`` on length mismatch, duplicate files, or unknown labels.
    """
    file_names = list(file_names)
    predicted_labels = list(predicted_labels)
    if len(file_names) != len(predicted_labels):
        raise ValueError(f"{len(file_names)} file names but {len(predicted_labels)} predicted labels")
    if not file_names:
        raise ValueError("no predictions to write")
    rows: dict[str, str] = {}
    for file_name, label in zip(file_names, predicted_labels):
        name = f"{_stem(file_name)}.wav"
        if name in rows:
            raise ValueError(f"duplicate file {name!r} in the predictions")
        rows[name] = label_to_code(label)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SUBMISSION_HEADER)
        for name in sorted(rows):
            writer.writerow([name, rows[name]])
    return path


@dataclass
class ConversionResult:
    rows: list[dict]
    problems: list[Problem]
    dropped: Counter = field(default_factory=Counter)
    unlisted_test3: int = 0
    absent_attribute_columns: list[str] = field(default_factory=list)  # of ATTRIBUTE_COLUMNS' label columns


def _find_label_file(root: Path) -> Path:
    layout = "point --root at the MSP-Podcast folder that holds Labels/, Audios/ and Transcripts/"
    if not root.is_dir():
        raise RecipeError(f"MSP-Podcast root '{root}' does not exist; {layout}")
    for relative in LABEL_FILES:
        if (root / relative).is_file():
            return root / relative
    raise RecipeError(f"MSP-Podcast root '{root}' has no {LABEL_FILES[0]}; {layout}")


def _read_csv_text(path: Path) -> list[dict[str, str]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    reader.fieldnames = [name.strip() for name in (reader.fieldnames or [])]
    return [{key: (value or "").strip() for key, value in row.items() if key is not None} for row in reader]


def read_asr_transcripts(asr: str | Path) -> dict[str, str] | Path:
    """ASR text: a CSV ``FileName,text`` (returns ``{stem: text}``) or a folder of ``<name>.txt`` (returned as is)."""
    asr = Path(asr)
    if asr.is_dir():
        return asr
    if not asr.is_file():
        raise RecipeError(
            f"--asr-dir '{asr}' does not exist; give a folder of <name>.txt files or a FileName,text CSV"
        )
    rows = _read_csv_text(asr)
    if not rows:
        return {}
    columns = list(rows[0])
    name_column = next((c for c in ("FileName", "file_name", "filename", "id") if c in columns), None)
    text_column = next(
        (c for c in ("text", "Text", "transcript", "Transcript", "transcription") if c in columns), None
    )
    if name_column is None or text_column is None:
        raise RecipeError(f"ASR CSV '{asr}' needs the columns FileName,text; it has {', '.join(columns)}")
    return {_stem(row[name_column]): _clean_text(row[text_column]) for row in rows}


def convert_msp_podcast(
    root: str | Path,
    out_dir: str | Path,
    *,
    transcripts: str = "human",
    asr_dir: str | Path | None = None,
    drop_missing_text: bool = False,
    include_unlisted_test3: bool = True,
) -> ConversionResult:
    """Parse an MSP-Podcast release into manifest rows."""
    root = Path(root)
    out_dir = Path(out_dir)
    label_file = _find_label_file(root)
    audio_dir = root / "Audios"
    if not audio_dir.is_dir():
        raise RecipeError(f"MSP-Podcast root '{root}' has no Audios/ folder (expected {audio_dir})")
    if transcripts == "human":
        text_dir = root / "Transcripts"
        if not text_dir.is_dir():
            raise RecipeError(
                f"MSP-Podcast root '{root}' has no Transcripts/ folder (expected {text_dir}); "
                "use --transcripts asr --asr-dir DIR for ASR text"
            )
        text_source: dict[str, str] | Path = text_dir
    elif transcripts == "asr":
        if asr_dir is None:
            raise RecipeError(
                "--transcripts asr needs --asr-dir (a folder of <name>.txt files or a FileName,text CSV)"
            )
        text_source = read_asr_transcripts(asr_dir)
    else:
        raise RecipeError(f"--transcripts must be 'human' or 'asr', not {transcripts!r}")

    records = _read_csv_text(label_file)
    columns = list(records[0]) if records else [*REQUIRED_LABEL_COLUMNS, *ATTRIBUTE_COLUMNS.values()]  # none to miss
    missing = [column for column in REQUIRED_LABEL_COLUMNS if column not in columns]
    if missing:
        raise RecipeError(
            f"'{label_file}' lacks the column(s) {', '.join(missing)}; expected "
            "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"
        )
    attributes = {attribute: column for attribute, column in ATTRIBUTE_COLUMNS.items() if column in columns}
    audio_names = {entry.name for entry in os.scandir(audio_dir) if entry.is_file()}
    text_names: set[str] = set()
    if isinstance(text_source, Path):
        text_names = {entry.name for entry in os.scandir(text_source) if entry.is_file()}

    def text_for(stem: str) -> str | None:
        if isinstance(text_source, dict):
            return text_source.get(stem)
        name = f"{stem}.txt"
        if name not in text_names:
            return None
        return _clean_text((text_source / name).read_text(encoding="utf-8", errors="replace"))

    rows: list[dict] = []
    problems: list[Problem] = []
    dropped: Counter = Counter()
    seen: set[str] = set()

    def add(stem: str, file_name: str, split: str, label: str, record: dict[str, str], where: str) -> None:
        if file_name not in audio_names:
            problems.append(Problem(stem, split, "missing_audio", str(audio_dir / file_name)))
            return
        text = text_for(stem)
        if text is None:
            if drop_missing_text:
                problems.append(Problem(stem, split, "missing_transcript", f"excluded ({transcripts} transcripts)"))
                return
            problems.append(Problem(stem, split, "missing_transcript", f"kept with empty text ({transcripts})"))
            text = ""
        ratings = {attribute: (column, record.get(column, "")) for attribute, column in attributes.items()}
        if split == "test3":  # hidden in the challenge release, like the label
            ratings = {attribute: rating for attribute, rating in ratings.items() if rating[1]}
        cells, attribute_problems = attribute_cells(ratings, ATTRIBUTE_SCALE, uid=stem, split=split, where=where)
        problems.extend(attribute_problems)
        speaker = record.get("SpkrID", "")
        rows.append(
            {
                "id": stem,
                "audio": relative_audio_path(audio_dir / file_name, out_dir),
                "text": text,
                "label": label,
                "split": split,
                "speaker": "" if speaker.lower() in ("", "unknown", "nan") else speaker,
                "session": "",
                "gender": normalize_gender(record.get("Gender")),
                "start": "",
                "end": "",
                **{attribute: cells.get(attribute) for attribute in attributes},
                "emo_class": record.get("EmoClass", ""),
                "emo_act": record.get("EmoAct", ""),
                "emo_val": record.get("EmoVal", ""),
                "emo_dom": record.get("EmoDom", ""),
            }
        )

    for number, record in enumerate(records, start=2):
        file_name = Path(record.get("FileName", "")).name
        if not file_name:
            problems.append(Problem("", "", "malformed_row", f"{label_file.name} line {number}: empty FileName"))
            continue
        if not file_name.lower().endswith(".wav"):
            file_name += ".wav"
        stem = _stem(file_name)
        split = SPLIT_MAP.get(record.get("Split_Set", ""))
        if split is None:
            problems.append(Problem(stem, "", "unknown_split", f"Split_Set {record.get('Split_Set', '')!r}"))
            continue
        if stem in seen:
            problems.append(Problem(stem, split, "duplicate", f"{label_file.name} line {number}"))
            continue
        seen.add(stem)
        where = f"{label_file.name} line {number}"
        code = record.get("EmoClass", "").strip().upper()
        if split == "test3":
            add(stem, file_name, split, EMO_CODES.get(code, ""), record, where)
            continue
        if code in DROPPED_CODES:
            dropped[code] += 1
            continue
        if code not in EMO_CODES:
            problems.append(Problem(stem, split, "bad_label", f"EmoClass {record.get('EmoClass', '')!r}"))
            continue
        add(stem, file_name, split, EMO_CODES[code], record, where)

    unlisted = 0
    if include_unlisted_test3:
        for file_name in sorted(audio_names):
            stem = _stem(file_name)
            if file_name.lower().endswith(".wav") and "test3" in file_name.lower() and stem not in seen:
                seen.add(stem)
                unlisted += 1
                add(stem, file_name, "test3", "", {}, f"{audio_dir.name}/{file_name} (not in {label_file.name})")
    absent = [column for column in ATTRIBUTE_COLUMNS.values() if column not in columns]
    return ConversionResult(
        rows=rows, problems=problems, dropped=dropped, unlisted_test3=unlisted, absent_attribute_columns=absent
    )


def _read_predictions(path: Path) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise RecipeError(f"predictions file '{path}' does not exist")
    if path.suffix.lower() in (".jsonl", ".json"):
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        records = [{key: "" if value is None else str(value) for key, value in record.items()} for record in records]
    else:
        records = _read_csv_text(path)
    if not records:
        raise RecipeError(f"predictions file '{path}' is empty")
    columns = list(records[0])
    name_column = next((c for c in ("FileName", "file_name", "filename", "id") if c in columns), None)
    label_column = next(
        (c for c in ("EmoClass", "prediction", "predicted_label", "pred", "predicted", "label") if c in columns), None
    )
    if name_column is None or label_column is None:
        raise RecipeError(
            f"predictions file '{path}' needs an id column (FileName or id) and a label column "
            f"(EmoClass, prediction, predicted_label or label); it has {', '.join(columns)}"
        )
    return [record[name_column] for record in records], [record[label_column] for record in records]


def submission_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_crab.recipes.msp_podcast submission",
        description="Write the MSP-Podcast categorical challenge submission (FileName,EmoClass with A/S/H/U/F/D/C/N).",
    )
    parser.add_argument(
        "--predictions", required=True, help="CSV/JSONL with FileName|id and EmoClass|prediction|label"
    )
    parser.add_argument("--out", required=True, help="submission CSV to write")
    parser.add_argument("--manifest", default=None, help="manifest to check that every --split file is predicted")
    parser.add_argument("--split", default="test3", help="manifest split the submission must cover (default test3)")
    args = parser.parse_args(argv)
    names, labels = _read_predictions(Path(args.predictions))
    if args.manifest:
        expected = {row["id"] for row in read_manifest(args.manifest) if row["split"] == args.split}
        if not expected:
            raise RecipeError(f"manifest '{args.manifest}' has no rows in split {args.split!r}")
        given = {_stem(name) for name in names}
        missing = sorted(expected - given)
        extra = sorted(given - expected)
        if missing or extra:
            raise RecipeError(
                f"predictions do not match the {args.split} files of '{args.manifest}': "
                f"{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} not in the split (e.g. {extra[:3]})"
            )
    try:
        path = write_submission(names, labels, args.out)
    except ValueError as error:
        raise RecipeError(str(error)) from error
    counts = Counter(label_to_code(label) for label in labels)
    print(f"wrote {path} ({len(names)} files): " + ", ".join(f"{code} {counts.get(code, 0)}" for code in EMO_CODES))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = converter_parser(
        "msp_podcast",
        (
            "Convert MSP-Podcast to an 8-class Crab manifest. "
            "Subcommand 'submission' writes the Test3 challenge file (see 'submission --help')."
        ),
        "MSP-Podcast folder holding Labels/, Audios/, Transcripts/",
    )
    parser.add_argument("--transcripts", choices=("human", "asr"), default="human", help="text source")
    parser.add_argument("--asr-dir", default=None, help="ASR text: folder of <name>.txt, or a FileName,text CSV")
    parser.add_argument("--drop-missing-text", action="store_true", help="exclude utterances without a transcript")
    parser.add_argument(
        "--no-unlisted-test3", action="store_true", help="do not add Audios/*test3* files missing from the labels"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "submission":
        return submission_main(argv[1:])
    if argv and argv[0] == "convert":
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out)
    result = convert_msp_podcast(
        args.root,
        out_dir,
        transcripts=args.transcripts,
        asr_dir=args.asr_dir,
        drop_missing_text=args.drop_missing_text,
        include_unlisted_test3=not args.no_unlisted_test3,
    )
    manifest, problem_kinds = write_outputs(
        "MSP-Podcast",
        args,
        result,
        classes=list(CLASSES),
        transcripts=args.transcripts,
        label_counts=label_counts(result.rows),
        dropped_labels={f"{code} ({DROPPED_CODES[code]})": n for code, n in sorted(result.dropped.items())},
        unlisted_test3_files_added=result.unlisted_test3,
        attributes={a: c for a, c in ATTRIBUTE_COLUMNS.items() if c not in result.absent_attribute_columns},
        absent_attribute_columns=result.absent_attribute_columns,
    )
    splits = [split for split in SPLIT_ORDER if any(row["split"] == split for row in result.rows)]
    print(format_counts(result.rows, CLASSES, splits))
    dropped_text = ", ".join(f"{code} ({DROPPED_CODES[code]}) {n}" for code, n in sorted(result.dropped.items()))
    print(f"dropped {sum(result.dropped.values())} utterances: {dropped_text or 'none'}")
    if result.unlisted_test3:
        print(f"added {result.unlisted_test3} Test3 audio files not listed in the labels file (label hidden)")
    if result.absent_attribute_columns:
        absent = ", ".join(result.absent_attribute_columns)
        print(f"note: the labels file has no {absent} column(s), so the manifest has no attribute column for them")
    print_problems(problem_kinds, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
