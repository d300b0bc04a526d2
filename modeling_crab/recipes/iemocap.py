"""Convert the official IEMOCAP release to a Crab manifest (4 classes).

Usage::

    python -m modeling_crab.recipes.iemocap --root /data/IEMOCAP_full_release --out data/iemocap

``--root`` is the folder that holds ``Session1`` .. ``Session5``. Per session the converter reads

- labels from ``SessionN/dialog/EmoEvaluation/*.txt``, whose utterance summary lines look like
  ``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]``, the category and then
  the ratings ``[V, A, D]`` (valence, activation, dominance) on a 1-5 scale (the evaluator lines
  ``C-E1: ...``/``A-E3: ...`` and the ``% [START_TIME - END_TIME] ...`` header are skipped);
- transcripts from ``SessionN/dialog/transcriptions/*.txt``, lines like
  ``Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.`` (kept verbatim, including markers such as
  ``[LAUGHTER]``);
- audio ``SessionN/sentences/wav/<dialog>/<utterance>.wav`` (one file per utterance, so ``start``/``end``
  stay empty).

Classes: ``angry`` (ang), ``happy`` (hap + exc merged), ``neutral`` (neu), ``sad`` (sad). Every other
category (fru, sur, fea, dis, oth, xxx) is dropped and counted. The full corpus gives angry 1103,
happy 1636, neutral 1708, sad 1084 (5531 utterances); the converter prints how its counts compare.

The speaker is the session plus the gender letter of the *utterance* (the letter after the last
underscore): in ``Ses01F_impro01_M003`` the speaker is ``Ses01M``. Columns ``session`` (1..5),
``speaker`` and ``gender`` (female/male) are filled; the attribute columns ``valence`` (V), ``arousal``
(A, activation) and ``dominance`` (D) map the ratings onto 0-1 as (x - 1) / 4. A rating that is missing, not a
number or outside 1-5 leaves its cell empty and is listed in ``problems.csv`` (the row is kept). Extra columns
``dialog`` and ``emotion_code`` keep the dialog name and the original IEMOCAP code.

The ``split`` column follows one leave-one-session-out fold (``--holdout-session``, default 5): the
held-out session's female speaker is ``dev`` and its male speaker is ``test`` (``--dev-gender M`` swaps
them), all other sessions are ``train``. Use :mod:`modeling_crab.recipes.iemocap_loso` for all 5 folds.

Outputs in ``--out``: ``manifest.csv`` (or ``--manifest-name x.jsonl``), ``problems.csv`` (malformed
lines, missing audio/transcripts, duplicates, bad ratings) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..attributes import ATTRIBUTE_NAMES
from ..manifest import relative_audio_path
from .common import (
    BAD_ATTRIBUTE,
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
from .iemocap_loso import split_for_fold

LABEL_MAP: dict[str, str] = {"ang": "angry", "hap": "happy", "exc": "happy", "neu": "neutral", "sad": "sad"}
CLASSES: tuple[str, ...] = ("angry", "happy", "neutral", "sad")
EXPECTED_COUNTS: dict[str, int] = {"angry": 1103, "happy": 1636, "neutral": 1708, "sad": 1084}
SESSIONS: tuple[int, ...] = (1, 2, 3, 4, 5)
RATINGS: tuple[tuple[str, str], ...] = (("valence", "V"), ("arousal", "A"), ("dominance", "D"))  # [V, A, D] order
ATTRIBUTE_SCALE: tuple[float, float] = (1.0, 5.0)  # the evaluators' mean ratings' scale

_LABEL_LINE_RE = re.compile(
    r"^\[\s*(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)\s*\]\s+"
    r"(?P<utt>Ses\d{2}[FM]_\S+)\s+(?P<code>[A-Za-z]+)\s+\[(?P<vad>[^\]]*)\]\s*$"
)
_TRANSCRIPT_LINE_RE = re.compile(
    r"^(?P<utt>\S+)\s+\[(?P<start>\d+(?:\.\d+)?)-(?P<end>\d+(?:\.\d+)?)\]:\s?(?P<text>.*)$"
)
_UTTERANCE_RE = re.compile(
    r"^Ses(?P<session>\d{2})(?P<lead>[FM])_(?P<rest>.+)_(?P<gender>[FM])(?P<number>[0-9A-Za-z]+)$"
)


@dataclass
class LabelEntry:
    utterance: str
    code: str
    start: float
    end: float
    source: str
    ratings: str  # the text inside the line's [V, A, D]


@dataclass
class ConversionResult:
    rows: list[dict]
    problems: list[Problem]
    dropped: Counter = field(default_factory=Counter)


def _visible_txt_files(folder: Path) -> list[Path]:
    """``*.txt`` files of a folder, skipping hidden/AppleDouble files (``._x.txt``)."""
    return sorted(path for path in folder.glob("*.txt") if path.is_file() and not path.name.startswith("."))


def parse_label_file(path: Path) -> tuple[list[LabelEntry], list[Problem]]:
    """Utterance summary lines of one ``EmoEvaluation/*.txt`` file; malformed ``[...`` lines become problems."""
    entries: list[LabelEntry] = []
    problems: list[Problem] = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line.startswith("["):
            continue
        match = _LABEL_LINE_RE.match(line)
        if match is None:
            problems.append(Problem("", "", "malformed_label_line", f"{path}:{number}: {line[:120]}"))
            continue
        entries.append(
            LabelEntry(
                utterance=match["utt"],
                code=match["code"].lower(),
                start=float(match["start"]),
                end=float(match["end"]),
                source=f"{path}:{number}",
                ratings=match["vad"],
            )
        )
    return entries, problems


def attributes_of(entry: LabelEntry, uid: str, split: str) -> tuple[dict[str, float | None], list[Problem]]:
    """The attribute columns of a labelled utterance from its ``[V, A, D]`` (see :func:`attribute_cells`)."""
    values = [value.strip() for value in entry.ratings.split(",")]
    if len(values) != len(RATINGS):
        attributes = [attribute for attribute, _ in RATINGS]
        detail = (
            f"{entry.source}: [{entry.ratings}] holds {len(values)} ratings, not [V, A, D], so {', '.join(attributes)} "
            f"are left empty (the row is kept); give three ratings from {ATTRIBUTE_SCALE[0]:g} to {ATTRIBUTE_SCALE[1]:g}"
        )
        return dict.fromkeys(attributes), [Problem(uid, split, BAD_ATTRIBUTE, detail)]
    ratings = {attribute: (name, value) for (attribute, name), value in zip(RATINGS, values)}
    return attribute_cells(ratings, ATTRIBUTE_SCALE, uid=uid, split=split, where=entry.source)


def parse_transcription_file(path: Path) -> tuple[dict[str, str], list[Problem]]:
    """``{utterance: text}`` from one ``transcriptions/*.txt`` file; unparsable non-empty lines become problems."""
    texts: dict[str, str] = {}
    problems: list[Problem] = []
    content = path.read_text(encoding="utf-8", errors="replace")
    for number, raw in enumerate(content.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _TRANSCRIPT_LINE_RE.match(line)
        if match is None:
            problems.append(Problem("", "", "malformed_transcript_line", f"{path}:{number}: {line[:120]}"))
            continue
        texts[match["utt"]] = " ".join(match["text"].split())
    return texts, problems


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise RecipeError(
            f"IEMOCAP root '{root}' does not exist; point --root at the folder that holds Session1..Session5"
        )
    first = root / "Session1" / "dialog" / "EmoEvaluation"
    if not first.is_dir():
        hint = ""
        for child in sorted(root.iterdir()) if root.is_dir() else []:
            if (child / "Session1" / "dialog" / "EmoEvaluation").is_dir():
                hint = f" (did you mean --root '{child}'?)"
                break
        raise RecipeError(
            f"IEMOCAP root '{root}' has no Session1/dialog/EmoEvaluation; "
            f"point --root at the folder that holds Session1..Session5{hint}"
        )
    missing = []
    for session in SESSIONS:
        session_dir = root / f"Session{session}"
        for relative in ("dialog/EmoEvaluation", "dialog/transcriptions", "sentences/wav"):
            if not (session_dir / relative).is_dir():
                missing.append(str(session_dir / relative))
    if missing:
        raise RecipeError(f"IEMOCAP root '{root}' is incomplete; missing folder(s): {', '.join(missing)}")


def convert_iemocap(
    root: str | Path,
    out_dir: str | Path,
    *,
    holdout_session: int = 5,
    dev_gender: str = "F",
) -> ConversionResult:
    """Parse an IEMOCAP release into manifest rows (audio paths relative to ``out_dir`` where possible)."""
    root = Path(root)
    out_dir = Path(out_dir)
    _check_root(root)
    if holdout_session not in SESSIONS:
        raise RecipeError(f"--holdout-session must be one of {SESSIONS}, not {holdout_session}")

    rows: list[dict] = []
    problems: list[Problem] = []
    dropped: Counter = Counter()
    seen: set[str] = set()
    for session in SESSIONS:
        session_dir = root / f"Session{session}"
        label_files = _visible_txt_files(session_dir / "dialog" / "EmoEvaluation")
        if not label_files:
            raise RecipeError(f"IEMOCAP folder '{session_dir / 'dialog' / 'EmoEvaluation'}' has no *.txt label files")
        transcripts: dict[str, str] = {}
        for path in _visible_txt_files(session_dir / "dialog" / "transcriptions"):
            texts, transcript_problems = parse_transcription_file(path)
            transcripts.update(texts)
            problems.extend(transcript_problems)
        wav_root = session_dir / "sentences" / "wav"

        for label_file in label_files:
            entries, label_problems = parse_label_file(label_file)
            problems.extend(label_problems)
            for entry in entries:
                utt = entry.utterance
                match = _UTTERANCE_RE.match(utt)
                if match is None:
                    problems.append(Problem(utt, "", "malformed_utterance_id", entry.source))
                    continue
                if int(match["session"]) != session:
                    problems.append(Problem(utt, "", "wrong_session", f"listed in Session{session}: {entry.source}"))
                    continue
                if utt in seen:
                    problems.append(Problem(utt, "", "duplicate", entry.source))
                    continue
                seen.add(utt)
                label = LABEL_MAP.get(entry.code)
                if label is None:
                    dropped[entry.code] += 1
                    continue
                speaker = f"Ses{match['session']}{match['gender']}"
                split = split_for_fold(session, speaker, holdout_session, dev_gender=dev_gender)
                dialog = utt.rsplit("_", 1)[0]
                wav = wav_root / dialog / f"{utt}.wav"
                if not wav.is_file():
                    problems.append(Problem(utt, split, "missing_audio", str(wav)))
                    continue
                text = transcripts.get(utt)
                if text is None:
                    problems.append(Problem(utt, split, "missing_transcript", "kept with empty text"))
                    text = ""
                attributes, attribute_problems = attributes_of(entry, utt, split)
                problems.extend(attribute_problems)
                rows.append(
                    {
                        "id": utt,
                        "audio": relative_audio_path(wav, out_dir),
                        "text": text,
                        "label": label,
                        "split": split,
                        "speaker": speaker,
                        "session": session,
                        "gender": normalize_gender(match["gender"]),
                        "start": "",
                        "end": "",
                        **{attribute: attributes[attribute] for attribute in ATTRIBUTE_NAMES},
                        "dialog": dialog,
                        "emotion_code": entry.code,
                    }
                )
    return ConversionResult(rows=rows, problems=problems, dropped=dropped)


def compare_with_expected(rows: Sequence[dict]) -> dict[str, dict[str, int]]:
    counts = Counter(row["label"] for row in rows)
    return {
        label: {"found": counts.get(label, 0), "expected": expected, "difference": counts.get(label, 0) - expected}
        for label, expected in EXPECTED_COUNTS.items()
    }


def build_parser() -> argparse.ArgumentParser:
    parser = converter_parser(
        "iemocap",
        "Convert the official IEMOCAP release (Session1..Session5) to a 4-class Crab manifest.",
        "folder that holds Session1..Session5 (IEMOCAP_full_release)",
    )
    parser.add_argument("--holdout-session", type=int, default=5, help="session held out in the split column")
    parser.add_argument("--dev-gender", choices=("F", "M"), default="F", help="held-out speaker used as dev")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out)
    result = convert_iemocap(args.root, out_dir, holdout_session=args.holdout_session, dev_gender=args.dev_gender)
    expected = compare_with_expected(result.rows)
    manifest, problem_kinds = write_outputs(
        "IEMOCAP",
        args,
        result,
        classes=list(CLASSES),
        label_counts=label_counts(result.rows),
        dropped_labels=dict(sorted(result.dropped.items())),
        expected_full_corpus=expected,
        holdout_session=args.holdout_session,
        dev_gender=args.dev_gender,
    )
    print(format_counts(result.rows, CLASSES, ["train", "dev", "test"]))
    dropped_total = sum(result.dropped.values())
    dropped_text = ", ".join(f"{code} {count}" for code, count in sorted(result.dropped.items()))
    print(f"dropped {dropped_total} utterances of other classes: {dropped_text or 'none'}")
    print_problems(problem_kinds, out_dir)
    if all(entry["difference"] == 0 for entry in expected.values()):
        print("label counts match the full-corpus reference (angry 1103, happy 1636, neutral 1708, sad 1084)")
    else:
        details = ", ".join(f"{label} {entry['found']}/{entry['expected']}" for label, entry in expected.items())
        print(f"note: label counts differ from the full-corpus reference (found/expected): {details}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
