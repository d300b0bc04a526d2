"""Convert the official MELD release (MELD.Raw) to a Crab manifest (7 classes), extracting 16 kHz audio.

Usage::

    python -m modeling_crab.recipes.meld --root /data/MELD.Raw --out data/meld [--workers 8] [--max-duration 30]

``--root`` is the extracted ``MELD.Raw`` folder (``MELD.Raw.tar.gz``, then its ``train.tar.gz``,
``dev.tar.gz`` and ``test.tar.gz``). It must hold (directly, or one or two folders down):

=========  =======================  ================================
split      annotations              clips
=========  =======================  ================================
train      ``train_sent_emo.csv``   ``train_splits/dia{D}_utt{U}.mp4``
dev        ``dev_sent_emo.csv``     ``dev_splits_complete/dia{D}_utt{U}.mp4``
test       ``test_sent_emo.csv``    ``output_repeated_splits_test/dia{D}_utt{U}.mp4``
=========  =======================  ================================

The CSVs have the columns ``Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,
Episode,StartTime,EndTime``. Their text is UTF-8 in the GitHub copy but carries cp1252 bytes / C1 control
characters (``\\x92`` for an apostrophe) and UTF-8-read-as-cp1252 mojibake (``â€™``) in the raw release;
:func:`normalize_text` repairs both and maps curly quotes/apostrophes, ellipses and odd spaces to ASCII.

Classes: neutral, surprise, fear, sadness, joy, anger, disgust. The official CSVs have 9,989 / 1,109 /
2,610 utterances (train/dev/test).

Audio is extracted from each MP4 with ``ffmpeg`` (16 kHz, mono, 16-bit PCM WAV) into
``OUT/audio/{split}/dia{D}_utt{U}.wav`` by a pool of ``--workers`` threads; existing valid WAVs are
skipped. Clips that are missing, that ffmpeg cannot decode, that are empty or longer than
``--max-duration`` seconds (default 30) are excluded and listed in ``OUT/problems.csv``. Known release
problems (see :data:`KNOWN_CLIP_ISSUES`): dev ``dia110_utt7`` is missing from the release
(declare-lab/MELD#22, #27), train ``dia125_utt3`` is corrupted (#39), and test ``dia220_utt0``,
``dia38_utt4`` and train ``dia309_utt0`` are mis-cut, minutes long (#20). ``--skip-audio`` writes the
manifest without ffmpeg (audio paths point where the WAVs would go) and excludes the known problem clips.

Ids are ``{split}_dia{D}_utt{U}`` (dialogue ids restart in every split). Extra columns:
``dialogue_id``, ``utterance_id``, ``sentiment``, ``season``, ``episode``, ``episode_start``,
``episode_end`` (the clip's position in the episode, *not* a segment of the WAV).
"""

from __future__ import annotations

import argparse
import codecs
import csv
import io
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..manifest import relative_audio_path
from .common import Problem, RecipeError, converter_parser, format_counts, label_counts, run_cli, write_outputs

CLASSES: tuple[str, ...] = ("neutral", "surprise", "fear", "sadness", "joy", "anger", "disgust")
SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train_sent_emo.csv", "train_splits"),
    "dev": ("dev_sent_emo.csv", "dev_splits_complete"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test"),
}
EXPECTED_ROWS: dict[str, int] = {"train": 9989, "dev": 1109, "test": 2610}
REQUIRED_CSV_COLUMNS: tuple[str, ...] = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
FFMPEG_MISSING = (
    "ffmpeg not found on PATH; install it (apt-get install ffmpeg / conda install ffmpeg) or pass --skip-audio"
)

#: Clips of the official release known to be unusable: (split, dialogue, utterance) -> (kind, note).
KNOWN_CLIP_ISSUES: dict[tuple[str, int, int], tuple[str, str]] = {
    ("dev", 110, 7): ("missing_clip", "absent from dev_splits_complete in the official release (declare-lab/MELD#22)"),
    ("train", 125, 3): ("ffmpeg_failed", "corrupted MP4 in the official release (declare-lab/MELD#39)"),
    ("test", 220, 0): ("overlong", "wrongly cut, about 4 minutes long (declare-lab/MELD#20)"),
    ("test", 38, 4): ("overlong", "wrongly cut, about 5 minutes long (declare-lab/MELD#20)"),
    ("train", 309, 0): ("overlong", "wrongly cut clip (declare-lab/MELD#20)"),
}

_QUOTE_MAP = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u00b4": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00a0": " ",
        "\u2002": " ",
        "\u2003": " ",
        "\u2009": " ",
        "\u202f": " ",
        "\u00ad": "",
        "\u200b": "",
        "\ufeff": "",
    }
)
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]{2,}")
_C1_CONTROL = re.compile(r"[\x80-\x9f]")


def _cp1252_fallback(error: UnicodeDecodeError) -> tuple[str, int]:
    """Decode bytes that are not valid UTF-8 as cp1252 (latin-1 for the five bytes cp1252 leaves undefined)."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    chunk = error.object[error.start : error.end]
    return chunk.decode("cp1252", errors="ignore") or chunk.decode("latin-1"), error.end


codecs.register_error("crab_cp1252_fallback", _cp1252_fallback)


def decode_bytes(data: bytes) -> str:
    """UTF-8 (with or without BOM), falling back to cp1252 byte by byte where the UTF-8 is invalid."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    return data.decode("utf-8", errors="crab_cp1252_fallback")


def _repair_mojibake_run(match: re.Match) -> str:
    run = match.group(0)
    try:
        repaired = run.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return run
    return repaired


def _c1_to_cp1252(match: re.Match) -> str:
    return match.group(0).encode("latin-1").decode("cp1252", errors="ignore")


def normalize_text(text: str) -> str:
    """Repair MELD's encoding damage and normalise punctuation and spaces.

    - UTF-8 read as cp1252 (``heâ€™s``) is re-decoded (``he’s``);
    - C1 control characters that stand for cp1252 bytes (``\\x92``, ``\\x85``, ``\\x97``) become the
      characters they meant (``’``, ``…``, ``—``);
    - NFC, then curly quotes/apostrophes to ASCII ``'``/``"``, ``…`` to ``...``, non-breaking and thin
      spaces to spaces; zero-width characters and soft hyphens are removed;
    - runs of whitespace collapse to one space; the result is stripped.
    """
    text = _NON_ASCII_RUN.sub(_repair_mojibake_run, text)
    text = _C1_CONTROL.sub(_c1_to_cp1252, text)
    text = unicodedata.normalize("NFC", text)
    text = text.translate(_QUOTE_MAP).replace("\u2026", "...")
    return " ".join(text.split())


@dataclass
class MeldUtterance:
    split: str
    dialogue: int
    utterance: int
    text: str
    speaker: str
    label: str
    sentiment: str = ""
    season: str = ""
    episode: str = ""
    start_time: str = ""
    end_time: str = ""

    @property
    def id(self) -> str:
        return f"{self.split}_dia{self.dialogue}_utt{self.utterance}"

    @property
    def clip_name(self) -> str:
        return f"dia{self.dialogue}_utt{self.utterance}"


def read_meld_csv(path: str | Path, split: str) -> tuple[list[MeldUtterance], list[Problem]]:
    """Parse one official ``*_sent_emo.csv``; unusable rows become problems instead of errors."""
    path = Path(path)
    reader = csv.reader(io.StringIO(decode_bytes(path.read_bytes()), newline=""))
    try:
        header = [normalize_text(name) for name in next(reader)]
    except StopIteration as error:
        raise RecipeError(f"MELD annotation file '{path}' is empty") from error
    missing = [column for column in REQUIRED_CSV_COLUMNS if column not in header]
    if missing:
        raise RecipeError(
            f"MELD annotation file '{path}' lacks the column(s) {', '.join(missing)}; expected the official header "
            "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
        )
    utterances: list[MeldUtterance] = []
    problems: list[Problem] = []
    seen: set[tuple[int, int]] = set()
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            problems.append(
                Problem(
                    "", split, "malformed_row", f"{path.name} line {line}: {len(cells)} fields, expected {len(header)}"
                )
            )
            continue
        record = dict(zip(header, cells))
        try:
            dialogue = int(record["Dialogue_ID"].strip())
            utterance = int(record["Utterance_ID"].strip())
        except ValueError:
            problems.append(
                Problem("", split, "malformed_row", f"{path.name} line {line}: non-integer Dialogue_ID/Utterance_ID")
            )
            continue
        uid = f"{split}_dia{dialogue}_utt{utterance}"
        label = normalize_text(record["Emotion"]).lower()
        if label not in CLASSES:
            problems.append(
                Problem(uid, split, "bad_label", f"{path.name} line {line}: emotion {record['Emotion']!r}")
            )
            continue
        if (dialogue, utterance) in seen:
            problems.append(Problem(uid, split, "duplicate", f"{path.name} line {line}"))
            continue
        seen.add((dialogue, utterance))
        utterances.append(
            MeldUtterance(
                split=split,
                dialogue=dialogue,
                utterance=utterance,
                text=normalize_text(record["Utterance"]),
                speaker=normalize_text(record["Speaker"]),
                label=label,
                sentiment=normalize_text(record.get("Sentiment", "")).lower(),
                season=record.get("Season", "").strip(),
                episode=record.get("Episode", "").strip(),
                start_time=record.get("StartTime", "").strip(),
                end_time=record.get("EndTime", "").strip(),
            )
        )
    return utterances, problems


def _find(root: Path, name: str, *, want_dir: bool) -> Path | None:
    """``root/name``, else the first match one or two folders down (tarballs nest differently)."""
    for pattern in (name, f"*/{name}", f"*/*/{name}"):
        for candidate in sorted(root.glob(pattern)):
            if candidate.name.startswith("."):
                continue
            if (want_dir and candidate.is_dir()) or (not want_dir and candidate.is_file()):
                return candidate
    return None


def locate_release(root: str | Path, *, need_clips: bool = True) -> dict[str, tuple[Path, Path | None]]:
    """Find each split's CSV and clip folder under ``root``; raise :class:`RecipeError` naming what is missing."""
    root = Path(root)
    layout = (
        "point --root at the extracted MELD.Raw folder that holds train_sent_emo.csv, dev_sent_emo.csv, "
        "test_sent_emo.csv and the clip folders train_splits/, dev_splits_complete/, output_repeated_splits_test/"
    )
    if not root.is_dir():
        raise RecipeError(f"MELD root '{root}' does not exist; {layout}")
    found: dict[str, tuple[Path, Path | None]] = {}
    missing = []
    for split, (csv_name, clip_dir_name) in SPLITS.items():
        csv_path = _find(root, csv_name, want_dir=False)
        clip_dir = _find(root, clip_dir_name, want_dir=True)
        if csv_path is None:
            missing.append(csv_name)
        if clip_dir is None and need_clips:
            missing.append(f"{clip_dir_name}/ (extract {split}.tar.gz)")
        if csv_path is not None:
            found[split] = (csv_path, clip_dir)
    if missing:
        raise RecipeError(f"MELD root '{root}' has no {', '.join(missing)}; {layout}")
    return found


def find_ffmpeg(ffmpeg: str | None = None) -> str:
    """Path of the ffmpeg executable, or :class:`RecipeError` with install instructions."""
    path = shutil.which(ffmpeg or "ffmpeg")
    if path is None:
        raise RecipeError(FFMPEG_MISSING)
    return path


def _wav_duration(path: Path) -> float | None:
    """Duration in seconds of a readable WAV, else ``None``."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError, ValueError):
        return None
    if info.frames <= 0 or info.samplerate <= 0:
        return 0.0
    return info.frames / info.samplerate


def extract_audio(
    ffmpeg: str, source: Path, target: Path, *, sample_rate: int = 16000, overwrite: bool = False, timeout: float = 300
) -> tuple[bool, str]:
    """Extract ``source``'s audio to a mono ``sample_rate`` 16-bit WAV at ``target``; returns (ok, message).

    An existing readable WAV is kept unless ``overwrite``. Writes to a temporary file and renames it,
    so an interrupted run never leaves a truncated WAV behind.
    """
    if not overwrite and target.is_file() and (_wav_duration(target) or 0) > 0:
        return True, "exists"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    command = [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(source),
        "-vn",
        "-ac",
        "1",
        "-ar",
        str(sample_rate),
        "-c:a",
        "pcm_s16le",
        "-f",
        "wav",
        str(partial),
    ]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        return False, f"ffmpeg timed out after {timeout:.0f}s"
    if completed.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        message = " ".join((completed.stderr or "").split())[-300:]
        return False, f"ffmpeg exit code {completed.returncode}: {message}"
    os.replace(partial, target)
    return True, "extracted"


@dataclass
class ConversionResult:
    rows: list[dict]
    problems: list[Problem]
    csv_counts: dict[str, int] = field(default_factory=dict)
    extracted: int = 0
    reused: int = 0


def _known_note(utt: MeldUtterance) -> str:
    issue = KNOWN_CLIP_ISSUES.get((utt.split, utt.dialogue, utt.utterance))
    return f" [known: {issue[1]}]" if issue else ""


def _row(utt: MeldUtterance, wav: Path, out_dir: Path) -> dict:
    return {
        "id": utt.id,
        "audio": relative_audio_path(wav, out_dir),
        "text": utt.text,
        "label": utt.label,
        "split": utt.split,
        "speaker": utt.speaker,
        "session": "",
        "gender": "",
        "start": "",
        "end": "",
        "dialogue_id": utt.dialogue,
        "utterance_id": utt.utterance,
        "sentiment": utt.sentiment,
        "season": utt.season,
        "episode": utt.episode,
        "episode_start": utt.start_time,
        "episode_end": utt.end_time,
    }


def convert_meld(
    root: str | Path,
    out_dir: str | Path,
    *,
    audio_dir: str | Path | None = None,
    skip_audio: bool = False,
    max_duration: float = 30.0,
    workers: int | None = None,
    ffmpeg: str | None = None,
    overwrite: bool = False,
    log=print,
) -> ConversionResult:
    """Read the MELD release, extract audio (unless ``skip_audio``) and return manifest rows and problems."""
    out_dir = Path(out_dir)
    audio_dir = Path(audio_dir) if audio_dir is not None else out_dir / "audio"
    ffmpeg_path = None if skip_audio else find_ffmpeg(ffmpeg)
    release = locate_release(root, need_clips=not skip_audio)

    problems: list[Problem] = []
    utterances: list[MeldUtterance] = []
    csv_counts: dict[str, int] = {}
    for split, (csv_path, _) in release.items():
        split_utterances, split_problems = read_meld_csv(csv_path, split)
        csv_counts[split] = len(split_utterances)
        utterances.extend(split_utterances)
        problems.extend(split_problems)

    def wav_path(utt: MeldUtterance) -> Path:
        return audio_dir / utt.split / f"{utt.clip_name}.wav"

    rows: list[dict] = []
    if skip_audio:
        for utt in utterances:
            issue = KNOWN_CLIP_ISSUES.get((utt.split, utt.dialogue, utt.utterance))
            if issue is not None:
                problems.append(
                    Problem(utt.id, utt.split, issue[0], f"excluded without checking (--skip-audio): {issue[1]}")
                )
                continue
            rows.append(_row(utt, wav_path(utt), out_dir))
        return ConversionResult(rows=rows, problems=problems, csv_counts=csv_counts)

    jobs = []
    for utt in utterances:
        clip_dir = release[utt.split][1]
        assert clip_dir is not None
        clip = clip_dir / f"{utt.clip_name}.mp4"
        if not clip.is_file():
            problems.append(Problem(utt.id, utt.split, "missing_clip", f"{clip} not found{_known_note(utt)}"))
            continue
        jobs.append((utt, clip, wav_path(utt)))

    workers = max(1, workers or os.cpu_count() or 1)
    log(f"extracting audio of {len(jobs)} clips with {workers} workers to {audio_dir}")
    extracted = reused = 0

    def work(job: tuple[MeldUtterance, Path, Path]) -> tuple[bool, str]:
        _, clip, wav = job
        return extract_audio(ffmpeg_path, clip, wav, overwrite=overwrite)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, (job, (ok, message)) in enumerate(zip(jobs, pool.map(work, jobs)), start=1):
            utt, clip, wav = job
            if done % 1000 == 0 or done == len(jobs):
                log(f"  {done}/{len(jobs)} clips")
            if not ok:
                problems.append(Problem(utt.id, utt.split, "ffmpeg_failed", f"{clip}: {message}{_known_note(utt)}"))
                continue
            if message == "exists":
                reused += 1
            else:
                extracted += 1
            duration = _wav_duration(wav)
            if duration is None or duration <= 0:
                problems.append(
                    Problem(utt.id, utt.split, "empty_audio", f"{clip}: no audio samples{_known_note(utt)}")
                )
                continue
            if duration > max_duration:
                problems.append(
                    Problem(
                        utt.id,
                        utt.split,
                        "overlong",
                        f"{duration:.1f}s > --max-duration {max_duration:g}s{_known_note(utt)}",
                    )
                )
                continue
            rows.append(_row(utt, wav, out_dir))
    return ConversionResult(rows=rows, problems=problems, csv_counts=csv_counts, extracted=extracted, reused=reused)


def build_parser() -> argparse.ArgumentParser:
    parser = converter_parser(
        "meld",
        "Convert the official MELD release to a 7-class Crab manifest, extracting 16 kHz mono WAVs.",
        "extracted MELD.Raw folder (CSVs and clip folders)",
        "manifest.csv, problems.csv, audio/",
    )
    parser.add_argument("--audio-dir", default=None, help="where to write the WAVs (default: OUT/audio)")
    parser.add_argument("--skip-audio", action="store_true", help="do not run ffmpeg; write the manifest only")
    parser.add_argument("--max-duration", type=float, default=30.0, help="exclude clips longer than this (seconds)")
    parser.add_argument("--workers", type=int, default=None, help="parallel ffmpeg processes (default: CPU count)")
    parser.add_argument("--ffmpeg", default=None, help="ffmpeg executable (default: ffmpeg on PATH)")
    parser.add_argument("--overwrite", action="store_true", help="re-extract WAVs that already exist")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out)
    result = convert_meld(
        args.root,
        out_dir,
        audio_dir=args.audio_dir,
        skip_audio=args.skip_audio,
        max_duration=args.max_duration,
        workers=args.workers,
        ffmpeg=args.ffmpeg,
        overwrite=args.overwrite,
    )
    manifest, problem_kinds = write_outputs(
        "MELD",
        args,
        result,
        classes=list(CLASSES),
        csv_rows=result.csv_counts,
        expected_csv_rows=EXPECTED_ROWS,
        label_counts=label_counts(result.rows),
        skip_audio=args.skip_audio,
        max_duration=args.max_duration,
        extracted=result.extracted,
        reused=result.reused,
    )
    print(format_counts(result.rows, CLASSES, [split for split in SPLITS if split in result.csv_counts]))
    rows_text = ", ".join(
        f"{split} {count}/{EXPECTED_ROWS[split]}"
        for split, count in result.csv_counts.items()
        if split in EXPECTED_ROWS
    )
    print(f"annotation rows read (found/official): {rows_text}")
    if problem_kinds:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(problem_kinds.items()))
        print(f"excluded/problems ({sum(problem_kinds.values())}, see {out_dir / 'problems.csv'}): {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
