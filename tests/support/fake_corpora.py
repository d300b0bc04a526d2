"""Small fake trees that mirror the official corpus releases (IEMOCAP, MELD, MSP-Podcast), for the recipe tests and
the documented-command tests."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from modeling_crab.recipes import meld

HAS_FFMPEG = shutil.which("ffmpeg") is not None


def write_wav(path: Path, seconds: float = 0.1, sample_rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = (0.1 * np.sin(np.arange(int(seconds * sample_rate)) / 10.0)).astype(np.float32)
    sf.write(str(path), samples, sample_rate)
    return path


# (utterance suffix, code, [V, A, D]) for every session's one fake dialog; the real files use these formats.
IEMOCAP_UTTERANCES = [
    ("F000", "neu", "2.5000, 3.5000, 4.0000"),
    ("F001", "exc", "4.0000, 3.5000, 3.0000"),
    ("M002", "fru", "2.0000, 3.5000, 3.5000"),
    ("M003", "ang", "2.0000, 4.0000, 3.0000"),
    ("M004", "hap", "4.5000, 3.0000, 2.5000"),
    ("F005", "sad", "1.5000, 2.0000, 5.5000"),  # dominance outside 1-5
    ("M006", "xxx", "3.0000, 3.0000, 3.0000"),
    ("F007", "neu", "3.0000, 2.5000, 2.5000"),
    ("M008", "sad", "2.0000, 1.5000"),  # dominance missing
]


def make_iemocap(root: Path) -> Path:
    for session in range(1, 6):
        lead = "F" if session % 2 else "M"
        dialog = f"Ses{session:02d}{lead}_impro01"
        session_dir = root / f"Session{session}"
        label_lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        transcript_lines = []
        for index, (suffix, code, ratings) in enumerate(IEMOCAP_UTTERANCES):
            utt = f"{dialog}_{suffix}"
            start, end = 2.0 * index + 0.5, 2.0 * index + 1.7
            label_lines += [
                f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[{ratings}]",
                "C-E2:\tNeutral;\t()",
                "A-E3:\tval 3; act 2; dom  2;\t()",
                "",
            ]
            text = 'Well, I said "no".' if suffix == "F000" else f"Utterance {suffix} of session {session}."
            transcript_lines.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {text}")
            if not (session == 2 and suffix == "F007"):  # one labelled utterance without audio
                write_wav(session_dir / "sentences" / "wav" / dialog / f"{utt}.wav")
        label_lines.append(f"[9.9 - ]\t{dialog}_F099\tneu\t[2.5, 2.5]")  # malformed summary line
        transcript_lines.append("this line has no utterance id or time stamps")  # malformed transcript line
        evaluation = session_dir / "dialog" / "EmoEvaluation"
        (evaluation / "Categorical").mkdir(parents=True)
        (evaluation / f"{dialog}.txt").write_text("\n".join(label_lines) + "\n", encoding="utf-8")
        (evaluation / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
        (evaluation / "Categorical" / f"{dialog}_e1_cat.txt").write_text(f"{dialog}_F000 :Neutral; ()\n")
        transcriptions = session_dir / "dialog" / "transcriptions"
        transcriptions.mkdir(parents=True)
        (transcriptions / f"{dialog}.txt").write_text("\n".join(transcript_lines) + "\n", encoding="utf-8")
    return root


MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"


def meld_csv_bytes(lines: list[str]) -> bytes:
    """The raw release's CSVs: cp1252 bytes (\\x92 apostrophes) mixed with UTF-8 read as cp1252."""
    return ("\r\n".join([MELD_HEADER, *lines]) + "\r\n").encode("cp1252")


MELD_ROWS = {
    "train": [
        '1,"Oh my God, he\x92s lost it. He\x92s totally lost it.",Phoebe,sadness,negative,0,0,4,7,"00:20:57,256","00:21:00,049"',
        '2,What?,Monica,surprise,negative,0,1,4,7,"00:21:01,927","00:21:03,261"',
        '3,"You\xe2\x80\x99re a genius!",Chandler,joy,positive,1,0,4,4,"00:12:32,334","00:12:33,960"',
        '4,"It\x92s a \x93test\x94\x85 really",Joey,anger,negative,125,3,4,4,"00:12:34,211","00:12:37,505"',
        '5,Wait,Ross,Neutral ,neutral,309,0,4,4,"00:12:34,211","00:12:37,505"',
        '6,Bad row,Ross,happiness,positive,2,0,4,4,"00:00:01,000","00:00:02,000"',
        '7,Bad id,Ross,neutral,neutral,x,0,4,4,"00:00:01,000","00:00:02,000"',
        '8,Too long,Ross,fear,negative,3,0,4,4,"00:00:01,000","00:00:02,000"',
    ],
    "dev": [
        '1,Hey.,Phoebe,neutral,neutral,0,0,4,4,"0:12:43,012","0:12:44,074"',
        '2,Did they tell you anything?,Phoebe,neutral,neutral,110,7,6,11,"00:07:11,764","00:07:13,890"',
    ],
    "test": ['1,"Ugh, disgusting!",Monica,disgust,negative,0,0,1,1,"00:00:01,000","00:00:02,000"'],
}


def make_meld_csvs(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, lines in MELD_ROWS.items():
        csv_name = meld.SPLITS[split][0]
        (root / csv_name).write_bytes(meld_csv_bytes([line.encode("latin-1").decode("cp1252") for line in lines]))
    return root


def make_clip(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"color=c=black:s=32x32:d={seconds}",
    ]
    command += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-shortest"]
    command += ["-c:v", "mpeg4", "-c:a", "aac", str(path)]
    subprocess.run(command, check=True)


MSP_LABELS = [
    # FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set
    ("MSP-PODCAST_0001_0001.wav", "A", "5.2", "2.0", "5.0", "127", "Male", "Train"),
    ("MSP-PODCAST_0001_0002.wav", "S", "2.0", "2.4", "3.0", "127", "Male", "Train"),
    ("MSP-PODCAST_0001_0003.wav", "H", "4.6", "5.8", "", "Unknown", "Unknown", "Train"),  # EmoDom missing
    ("MSP-PODCAST_0001_0004.wav", "O", "4.0", "4.0", "4.0", "127", "Male", "Train"),
    ("MSP-PODCAST_0001_0005.wav", "X", "3.4", "4.2", "3.8", "127", "Male", "Train"),
    ("MSP-PODCAST_0002_0001.wav", "U", "4.2", "2.8", "5.0", "11", "Female", "Development"),
    ("MSP-PODCAST_0002_0002.wav", "F", "7.5", "2.2", "3.4", "11", "Female", "Development"),  # EmoAct above 7
    ("MSP-PODCAST_0003_0001.wav", "D", "4.0", "n/a", "4.4", "12", "Female", "Test1"),  # EmoVal not a number
    ("MSP-PODCAST_0003_0002.wav", "C", "3.6", "3.2", "4.6", "12", "Female", "Test1"),
    ("MSP-PODCAST_0004_0001.wav", "N", "4.0", "4.0", "4.0", "13", "Male", "Test2"),
    ("MSP-PODCAST_0004_0002.wav", "N", "4.0", "4.0", "4.0", "13", "Male", "Test2"),  # no audio file
    ("MSP-PODCAST_0005_0001.wav", "X", "", "", "", "14", "Male", "Test3"),  # hidden, as in the challenge release
    ("MSP-PODCAST_0006_0001.wav", "N", "4.0", "4.0", "4.0", "15", "Male", "Validation"),  # unknown split
]
MSP_UNLISTED_TEST3 = "MSP-PODCAST_test3_0002.wav"


def make_msp(root: Path) -> Path:
    (root / "Labels").mkdir(parents=True)
    with (root / "Labels" / "labels_consensus.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"])
        writer.writerows(MSP_LABELS)
    for name, *_ in MSP_LABELS:
        if name != "MSP-PODCAST_0004_0002.wav":
            write_wav(root / "Audios" / name)
    write_wav(root / "Audios" / MSP_UNLISTED_TEST3)
    (root / "Transcripts").mkdir()
    for name, *_ in MSP_LABELS:
        if name != "MSP-PODCAST_0001_0002.wav":  # one transcript missing
            (root / "Transcripts" / name.replace(".wav", ".txt")).write_text(f"words of {name[:-4]}, said\n")
    return root
