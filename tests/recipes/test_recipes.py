"""Corpus recipes on small fake trees that mirror the official release layouts (offline, fast)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fake_corpora import (  # noqa: E402
    HAS_FFMPEG,
    make_clip,
    make_iemocap,
    make_meld_csvs,
    make_msp,
)

from modeling_crab.attributes import ATTRIBUTE_NAMES  # noqa: E402
from modeling_crab.manifest import (  # noqa: E402
    MANIFEST_COLUMNS,
    ManifestError,
    read_manifest,
    resolve_audio_path,
    write_manifest,
)
from modeling_crab.recipes import iemocap, iemocap_loso, meld, msp_podcast  # noqa: E402
from modeling_crab.recipes.common import RecipeError, attribute_cells  # noqa: E402

needs_ffmpeg = pytest.mark.skipif(not HAS_FFMPEG, reason="ffmpeg not installed")


def read_problems(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------- common


def test_write_manifest_csv_and_jsonl_round_trip(tmp_path):
    rows = [
        {"id": "a", "audio": "x.wav", "text": 'Well, "fine"\nthen', "label": "joy", "split": "train", "extra": 1},
        {"id": "b", "audio": "/abs/y.wav", "text": "", "label": "", "split": "test3", "start": 1.5, "end": 2.25},
    ]
    csv_path = write_manifest(rows, tmp_path / "m.csv")
    with csv_path.open(encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == [*MANIFEST_COLUMNS, "extra"]
    back = read_manifest(csv_path)
    assert back[0]["text"] == 'Well, "fine"\nthen'
    assert back[1]["start"] == "1.5" and back[1]["end"] == "2.25" and back[0]["start"] == ""
    jsonl = read_manifest(write_manifest(rows, tmp_path / "m.jsonl"))
    assert [row["id"] for row in jsonl] == ["a", "b"] and jsonl[0]["text"] == rows[0]["text"]
    assert resolve_audio_path("x.wav", tmp_path) == (tmp_path / "x.wav").resolve()
    with pytest.raises(ValueError, match="duplicate"):
        write_manifest([rows[0], rows[0]], tmp_path / "dup.csv")


@pytest.mark.parametrize(
    "text, cell, reason",
    [
        ("1", 0.0, None),
        ("7", 1.0, None),
        (" 4.0 ", 0.5, None),
        ("5.2", 0.7, None),
        ("", None, "EmoAct is empty"),
        ("n/a", None, "EmoAct 'n/a' is not a number"),
        ("nan", None, "EmoAct 'nan' is not a number"),
        ("7.5", None, "EmoAct 7.5 is outside 1-7"),
        ("0", None, "EmoAct 0 is outside 1-7"),
    ],
)
def test_attribute_cells_map_a_rating_or_report_it(text, cell, reason):
    cells, problems = attribute_cells(
        {"arousal": ("EmoAct", text)}, (1.0, 7.0), uid="u", split="dev", where="f line 2"
    )
    assert cells == {"arousal": cell}
    if reason is None:
        assert problems == []
    else:
        [problem] = problems
        assert (problem.id, problem.split, problem.kind) == ("u", "dev", "bad_attribute")
        assert problem.detail == (
            f"f line 2: {reason}, so arousal is left empty (the row is kept); give a rating from 1 to 7 there"
        )


# --------------------------------------------------------------------------------------------- IEMOCAP


@pytest.fixture
def iemocap_root(tmp_path):
    return make_iemocap(tmp_path / "IEMOCAP_full_release")


def test_iemocap_labels_speakers_and_drops(iemocap_root, tmp_path):
    result = iemocap.convert_iemocap(iemocap_root, tmp_path / "out")
    rows = {row["id"]: row for row in result.rows}
    assert result.dropped == {"fru": 5, "xxx": 5}
    assert len(rows) == 5 * 7 - 1  # 7 kept per session, one without audio
    assert rows["Ses01F_impro01_F001"]["label"] == "happy" and rows["Ses01F_impro01_F001"]["emotion_code"] == "exc"
    assert rows["Ses01F_impro01_M004"]["label"] == "happy"
    assert rows["Ses01F_impro01_M003"]["label"] == "angry"
    assert rows["Ses01F_impro01_F000"]["label"] == "neutral"
    assert rows["Ses01F_impro01_F005"]["label"] == "sad"
    assert {row["label"] for row in result.rows} == set(iemocap.CLASSES)
    # the speaker is the utterance's own gender letter, not the dialog's lead speaker
    assert rows["Ses01F_impro01_M003"]["speaker"] == "Ses01M" and rows["Ses01F_impro01_M003"]["gender"] == "male"
    assert rows["Ses02M_impro01_F000"]["speaker"] == "Ses02F" and rows["Ses02M_impro01_F000"]["session"] == 2
    assert rows["Ses01F_impro01_F000"]["text"] == 'Well, I said "no".'
    assert Path(rows["Ses01F_impro01_F000"]["audio"]).is_file()
    # default split: session 5 held out, female speaker dev, male speaker test
    assert {row["split"] for row in result.rows if row["session"] != 5} == {"train"}
    assert {row["split"] for row in result.rows if row["speaker"] == "Ses05F"} == {"dev"}
    assert {row["split"] for row in result.rows if row["speaker"] == "Ses05M"} == {"test"}
    kinds = [problem.kind for problem in result.problems]
    assert kinds.count("malformed_label_line") == 5 and kinds.count("malformed_transcript_line") == 5
    missing = [problem for problem in result.problems if problem.kind == "missing_audio"]
    assert [problem.id for problem in missing] == ["Ses02M_impro01_F007"]


def test_iemocap_attributes_follow_the_v_a_d_order_on_0_to_1(iemocap_root, tmp_path):
    """The summary line's [V, A, D] is valence, activation (arousal), dominance on 1-5: (x - 1) / 4."""
    result = iemocap.convert_iemocap(iemocap_root, tmp_path / "out")
    rows = {row["id"]: row for row in result.rows}

    def attributes(uid):
        return tuple(rows[uid][name] for name in ("valence", "arousal", "dominance"))

    assert attributes("Ses01F_impro01_M003") == (0.25, 0.75, 0.5)  # [2.0, 4.0, 3.0]
    assert attributes("Ses01F_impro01_F000") == (0.375, 0.625, 0.75)  # [2.5, 3.5, 4.0]
    # bad ratings empty their cells; the rows stay, with their categories
    assert attributes("Ses01F_impro01_F005") == (0.125, 0.25, None)  # [1.5, 2.0, 5.5]
    assert attributes("Ses01F_impro01_M008") == (None, None, None)  # [2.0, 1.5]
    assert rows["Ses01F_impro01_F005"]["label"] == rows["Ses01F_impro01_M008"]["label"] == "sad"
    bad = {problem.id: problem for problem in result.problems if problem.kind == "bad_attribute"}
    assert len(bad) == 10 and {uid.split("_", 1)[1] for uid in bad} == {"impro01_F005", "impro01_M008"}
    label_file = iemocap_root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    assert bad["Ses01F_impro01_F005"].detail == (
        f"{label_file}:23: D 5.5000 is outside 1-5, so dominance is left empty (the row is kept); "
        "give a rating from 1 to 5 there"
    )
    assert bad["Ses01F_impro01_M008"].detail == (
        f"{label_file}:35: [2.0000, 1.5000] holds 2 ratings, not [V, A, D], so valence, arousal, dominance are left "
        "empty (the row is kept); give three ratings from 1 to 5"
    )
    assert bad["Ses05F_impro01_F005"].split == "dev"


def test_iemocap_cli_writes_manifest_problems_and_summary(iemocap_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert iemocap.main(["--root", str(iemocap_root), "--out", str(out)]) == 0
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == 34 and rows[0]["text"] == 'Well, I said "no".'
    assert list(rows[0]) == [*MANIFEST_COLUMNS, *ATTRIBUTE_NAMES, "dialog", "emotion_code"]
    assert [rows[0][name] for name in ATTRIBUTE_NAMES] == ["0.625", "0.375", "0.75"]
    assert {row["dominance"] for row in rows if row["id"].endswith(("F005", "M008"))} == {""}
    assert all(resolve_audio_path(row["audio"], out).is_file() for row in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dropped_labels"] == {"fru": 5, "xxx": 5}
    assert summary["expected_full_corpus"]["angry"] == {"found": 5, "expected": 1103, "difference": -1098}
    assert {row["kind"] for row in read_problems(out / "problems.csv")} == {
        "malformed_label_line",
        "malformed_transcript_line",
        "missing_audio",
        "bad_attribute",
    }
    printed = capsys.readouterr().out
    assert "dropped 10 utterances of other classes: fru 5, xxx 5" in printed


def test_iemocap_wrong_root_names_missing_path(iemocap_root, tmp_path, capsys):
    with pytest.raises(RecipeError, match=r"has no Session1/dialog/EmoEvaluation; point --root at the folder"):
        iemocap.convert_iemocap(tmp_path, tmp_path / "out")  # the parent of the release
    with pytest.raises(RecipeError, match="did you mean --root"):
        iemocap.convert_iemocap(tmp_path, tmp_path / "out")
    from modeling_crab.recipes.common import run_cli

    assert run_cli(iemocap.main, ["--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "error: IEMOCAP root" in capsys.readouterr().err
    shutil.rmtree(iemocap_root / "Session3" / "dialog" / "transcriptions")
    with pytest.raises(RecipeError, match=r"Session3/dialog/transcriptions"):
        iemocap.convert_iemocap(iemocap_root, tmp_path / "out")


# ------------------------------------------------------------------------------------------------ LOSO


@pytest.fixture
def iemocap_manifest(iemocap_root, tmp_path):
    out = tmp_path / "iemocap"
    iemocap.main(["--root", str(iemocap_root), "--out", str(out)])
    return out / "manifest.csv"


@pytest.mark.parametrize("dev_from_train", [False, True])
def test_loso_folds_are_speaker_disjoint_and_cover_all_sessions(iemocap_manifest, dev_from_train):
    rows = read_manifest(iemocap_manifest)
    folds = iemocap_loso.loso_folds(rows, dev_from_train=dev_from_train)
    assert [fold.index for fold in folds] == [1, 2, 3, 4, 5]
    held_out = set()
    for fold in folds:
        assert len(fold.rows) == len(rows)
        speakers = {
            split: {r["speaker"] for r in fold.rows if r["split"] == split} for split in ("train", "dev", "test")
        }
        assert speakers["dev"] and speakers["test"] and speakers["train"]
        assert not speakers["train"] & (speakers["dev"] | speakers["test"])
        assert not speakers["dev"] & speakers["test"]
        test_sessions = {int(r["session"]) for r in fold.rows if r["split"] == "test"}
        assert test_sessions == {fold.held_out_session}
        held_out |= test_sessions
        if dev_from_train:
            assert speakers["test"] == {f"Ses0{fold.index}F", f"Ses0{fold.index}M"}
            assert speakers["dev"] == {f"Ses0{fold.index % 5 + 1}F"}
        else:
            assert speakers["dev"] == {f"Ses0{fold.index}F"} and speakers["test"] == {f"Ses0{fold.index}M"}
            assert {int(r["session"]) for r in fold.rows if r["split"] == "train"} == {1, 2, 3, 4, 5} - {fold.index}
    assert held_out == {1, 2, 3, 4, 5}


def test_loso_dry_run_writes_five_fold_manifests(iemocap_manifest, tmp_path, capsys):
    config = tmp_path / "iemocap.json"
    config.write_text("{}")
    out = tmp_path / "loso"
    code = iemocap_loso.main(
        [
            "--manifest",
            str(iemocap_manifest),
            "--out",
            str(out),
            "--config",
            str(config),
            "--dry-run",
            "--",
            "--seed",
            "7",
        ]
    )
    assert code == 0
    manifests = sorted((out / "manifests").glob("fold*.csv"))
    assert [path.name for path in manifests] == [f"fold{k}.csv" for k in range(1, 6)]
    source = {row["id"]: row for row in read_manifest(iemocap_manifest)}
    for k, path in enumerate(manifests, start=1):
        rows = read_manifest(path)
        assert all(resolve_audio_path(row["audio"], path.parent).is_file() for row in rows)
        assert {row["speaker"] for row in rows if row["split"] == "test"} == {f"Ses0{k}M"}
        # the attribute columns travel with every row, empty cells included
        assert all(row[name] == source[row["id"]][name] for row in rows for name in ATTRIBUTE_NAMES)
        assert rows[0]["valence"] == "0.375" and any(row["dominance"] == "" for row in rows)
    printed = capsys.readouterr().out
    assert printed.count("--output_dir") == 5 and "--seed 7" in printed and str(config) in printed
    assert not (out / "loso_results.json").exists()


def write_eval_results(out: Path, fold: int, results: dict) -> None:
    (out / f"fold{fold}").mkdir(parents=True, exist_ok=True)
    (out / f"fold{fold}" / "eval_results.json").write_text(json.dumps(results))


def test_loso_aggregation_of_fake_results(tmp_path, capsys):
    out = tmp_path / "loso"
    wars = [0.70, 0.72, 0.74, 0.76, 0.78]
    uars = [0.71, 0.73, 0.75, 0.77, 0.79]
    for k in range(1, 5):
        write_eval_results(
            out, k, {"test_war": wars[k - 1], "test_uar": uars[k - 1], "eval_war": 0.0, "eval_uar": 0.0}
        )
    write_eval_results(out, 5, {"eval_war": wars[4], "eval_uar": uars[4], "epoch": 20})  # fallback keys
    results = iemocap_loso.write_loso_results(out)
    assert results["num_folds"] == 5 and not results["missing"]
    assert results["mean"]["war"] == pytest.approx(0.74) and results["mean"]["uar"] == pytest.approx(0.75)
    assert results["folds"][4]["keys"] == ["eval_war", "eval_uar"]
    on_disk = json.loads((out / "loso_results.json").read_text())
    assert on_disk["mean"]["war"] == pytest.approx(0.74)
    table = (out / "loso_results.md").read_text()
    assert "| **mean** (5 folds) | | **0.7400** | **0.7500** |" in table
    (out / "fold3" / "eval_results.json").unlink()
    partial = iemocap_loso.aggregate_loso(out)
    assert partial["num_folds"] == 4 and [m["fold"] for m in partial["missing"]] == [3]
    assert partial["mean"]["war"] == pytest.approx(np.mean([0.70, 0.72, 0.76, 0.78]))
    assert iemocap_loso.main(["--out", str(out), "--aggregate-only"]) == 0
    assert "missing" in capsys.readouterr().out


def test_loso_driver_runs_train_script_per_fold(iemocap_manifest, tmp_path):
    script = tmp_path / "fake_train.py"
    script.write_text(
        "import json, sys, pathlib\n"
        "args = sys.argv[1:]\n"
        "manifest = args[args.index('--manifest') + 1]\n"
        "out = pathlib.Path(args[args.index('--output_dir') + 1])\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "fold = int(out.name[-1])\n"
        "assert pathlib.Path(manifest).is_file()\n"
        "json.dump({'test_war': 0.5 + fold / 100, 'test_uar': 0.4 + fold / 100}, open(out / 'eval_results.json', 'w'))\n"
    )
    out = tmp_path / "loso"
    code = iemocap_loso.main(["--manifest", str(iemocap_manifest), "--out", str(out), "--train-script", str(script)])
    assert code == 0
    results = json.loads((out / "loso_results.json").read_text())
    assert results["mean"]["war"] == pytest.approx(0.53) and results["mean"]["uar"] == pytest.approx(0.43)


# ------------------------------------------------------------------------------------------------ MELD


def test_meld_normalize_text():
    assert meld.normalize_text("he\x92s") == "he's"
    assert meld.normalize_text("heâ€™s  gone\u00a0now") == "he's gone now"
    assert meld.normalize_text("\x93Hi\x94\x85") == '"Hi"...'
    assert meld.normalize_text("What—You’re “right”…") == 'What—You\'re "right"...'
    assert meld.normalize_text("café Ã©") == "café é"
    assert meld.decode_bytes(b"caf\xc3\xa9 it\x92s") == "café it’s"


def test_meld_csv_parsing(tmp_path):
    root = make_meld_csvs(tmp_path / "MELD.Raw")
    utterances, problems = meld.read_meld_csv(root / "train_sent_emo.csv", "train")
    by_id = {utt.id: utt for utt in utterances}
    assert by_id["train_dia0_utt0"].text == "Oh my God, he's lost it. He's totally lost it."
    assert by_id["train_dia0_utt0"].label == "sadness" and by_id["train_dia0_utt0"].speaker == "Phoebe"
    assert by_id["train_dia1_utt0"].text == "You're a genius!"
    assert by_id["train_dia125_utt3"].text == 'It\'s a "test"... really'
    assert by_id["train_dia309_utt0"].label == "neutral"  # "Neutral " normalised
    assert by_id["train_dia0_utt1"].start_time == "00:21:01,927"
    assert {problem.kind for problem in problems} == {"bad_label", "malformed_row"}
    assert len(utterances) == 6


def test_meld_missing_ffmpeg_error(tmp_path, monkeypatch, capsys):
    root = make_meld_csvs(tmp_path / "MELD.Raw")
    for _, clip_dir in meld.SPLITS.values():
        (root / clip_dir).mkdir()
    empty_bin = tmp_path / "empty_bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    with pytest.raises(RecipeError) as error:
        meld.convert_meld(root, tmp_path / "out")
    assert str(error.value) == meld.FFMPEG_MISSING
    from modeling_crab.recipes.common import run_cli

    assert run_cli(meld.main, ["--root", str(root), "--out", str(tmp_path / "out")]) == 2
    assert (
        "ffmpeg not found on PATH; install it (apt-get install ffmpeg / conda install ffmpeg)"
        in capsys.readouterr().err
    )


def test_meld_skip_audio_excludes_known_problem_clips(tmp_path, monkeypatch):
    root = make_meld_csvs(tmp_path / "MELD.Raw")
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg needed with --skip-audio
    out = tmp_path / "out"
    assert meld.main(["--root", str(root), "--out", str(out), "--skip-audio"]) == 0
    rows = {row["id"]: row for row in read_manifest(out / "manifest.csv")}
    assert set(rows) == {
        "train_dia0_utt0",
        "train_dia0_utt1",
        "train_dia1_utt0",
        "train_dia3_utt0",
        "dev_dia0_utt0",
        "test_dia0_utt0",
    }
    assert rows["train_dia0_utt0"]["audio"] == "audio/train/dia0_utt0.wav"
    assert rows["test_dia0_utt0"]["dialogue_id"] == "0" and rows["test_dia0_utt0"]["sentiment"] == "negative"
    problems = {row["id"]: row["kind"] for row in read_problems(out / "problems.csv") if row["id"]}
    assert problems["dev_dia110_utt7"] == "missing_clip" and problems["train_dia125_utt3"] == "ffmpeg_failed"
    assert problems["train_dia309_utt0"] == "overlong"


def test_meld_wrong_root_names_missing_files(tmp_path):
    with pytest.raises(RecipeError, match=r"has no train_sent_emo\.csv, train_splits/"):
        meld.locate_release(tmp_path)
    root = make_meld_csvs(tmp_path / "MELD.Raw")
    with pytest.raises(RecipeError, match=r"output_repeated_splits_test/ \(extract test\.tar\.gz\)"):
        meld.locate_release(root)
    nested = meld.locate_release(tmp_path, need_clips=False)  # CSVs one folder down are found
    assert nested["dev"][0] == root / "dev_sent_emo.csv"


@needs_ffmpeg
def test_meld_extracts_audio_and_reports_problem_clips(tmp_path):
    root = make_meld_csvs(tmp_path / "MELD.Raw")
    train, dev, test = (root / meld.SPLITS[split][1] for split in ("train", "dev", "test"))
    for clip in ("dia0_utt0", "dia0_utt1", "dia1_utt0", "dia309_utt0"):
        make_clip(train / f"{clip}.mp4", 0.5)
    make_clip(train / "dia3_utt0.mp4", 2.0)  # longer than --max-duration 1.0
    (train / "dia125_utt3.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really an mp4")  # corrupted
    make_clip(dev / "dia0_utt0.mp4", 0.5)  # dev dia110_utt7 is missing, as in the release
    make_clip(test / "dia0_utt0.mp4", 0.5)
    make_clip(test / "dia9_utt9.mp4", 0.5)  # unannotated extra clip: ignored
    out = tmp_path / "out"
    code = meld.main(["--root", str(root), "--out", str(out), "--workers", "2", "--max-duration", "1.0"])
    assert code == 0
    rows = {row["id"]: row for row in read_manifest(out / "manifest.csv")}
    assert set(rows) == {
        "train_dia0_utt0",
        "train_dia0_utt1",
        "train_dia1_utt0",
        "train_dia309_utt0",
        "dev_dia0_utt0",
        "test_dia0_utt0",
    }
    info = sf.info(str(resolve_audio_path(rows["train_dia0_utt0"]["audio"], out)))
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
    assert abs(info.duration - 0.5) < 0.1
    problems = {row["id"]: row for row in read_problems(out / "problems.csv") if row["id"]}
    assert problems["train_dia3_utt0"]["kind"] == "overlong"
    assert (
        problems["train_dia125_utt3"]["kind"] == "ffmpeg_failed"
        and "known:" in problems["train_dia125_utt3"]["detail"]
    )
    assert problems["dev_dia110_utt7"]["kind"] == "missing_clip"
    assert not list((out / "audio").rglob("*.part"))
    again = meld.convert_meld(root, out, workers=2, max_duration=1.0, log=lambda *_: None)
    assert again.extracted == 0 and again.reused == 7


# ----------------------------------------------------------------------------------------- MSP-Podcast


def test_msp_podcast_labels_splits_and_drops(tmp_path):
    root = make_msp(tmp_path / "MSP-PODCAST")
    result = msp_podcast.convert_msp_podcast(root, tmp_path / "out")
    rows = {row["id"]: row for row in result.rows}
    assert result.dropped == {"O": 1, "X": 1}
    expected = {
        "MSP-PODCAST_0001_0001": ("anger", "train"),
        "MSP-PODCAST_0001_0002": ("sadness", "train"),
        "MSP-PODCAST_0001_0003": ("happiness", "train"),
        "MSP-PODCAST_0002_0001": ("surprise", "dev"),
        "MSP-PODCAST_0002_0002": ("fear", "dev"),
        "MSP-PODCAST_0003_0001": ("disgust", "test1"),
        "MSP-PODCAST_0003_0002": ("contempt", "test1"),
        "MSP-PODCAST_0004_0001": ("neutral", "test2"),
        "MSP-PODCAST_0005_0001": ("", "test3"),
        "MSP-PODCAST_test3_0002": ("", "test3"),
    }
    assert {uid: (row["label"], row["split"]) for uid, row in rows.items()} == expected
    assert result.unlisted_test3 == 1
    assert rows["MSP-PODCAST_0001_0001"]["text"] == "words of MSP-PODCAST_0001_0001, said"
    assert rows["MSP-PODCAST_0001_0002"]["text"] == ""  # missing transcript kept, reported
    assert rows["MSP-PODCAST_0001_0001"]["speaker"] == "127" and rows["MSP-PODCAST_0001_0001"]["gender"] == "male"
    assert rows["MSP-PODCAST_0001_0003"]["speaker"] == "" and rows["MSP-PODCAST_0001_0003"]["gender"] == ""
    assert Path(rows["MSP-PODCAST_0001_0001"]["audio"]).name == "MSP-PODCAST_0001_0001.wav"
    kinds = {problem.id: problem.kind for problem in result.problems}
    assert kinds == {
        "MSP-PODCAST_0001_0002": "missing_transcript",
        "MSP-PODCAST_0001_0003": "bad_attribute",
        "MSP-PODCAST_0002_0002": "bad_attribute",
        "MSP-PODCAST_0003_0001": "bad_attribute",
        "MSP-PODCAST_0004_0002": "missing_audio",
        "MSP-PODCAST_0006_0001": "unknown_split",
        "MSP-PODCAST_test3_0002": "missing_transcript",
    }
    dropped = msp_podcast.convert_msp_podcast(root, tmp_path / "out", drop_missing_text=True)
    assert "MSP-PODCAST_0001_0002" not in {row["id"] for row in dropped.rows}


def test_msp_podcast_attributes_map_1_to_7_onto_0_to_1(tmp_path, capsys):
    """EmoAct, EmoVal, EmoDom become arousal, valence, dominance as (x - 1) / 6; a bad rating empties its cell and
    is reported, and the row stays."""
    root = make_msp(tmp_path / "MSP-PODCAST")
    out = tmp_path / "out"
    assert msp_podcast.main(["--root", str(root), "--out", str(out)]) == 0
    rows = {row["id"]: row for row in read_manifest(out / "manifest.csv")}

    def attributes(uid):
        return tuple(rows[uid][name] for name in ("arousal", "valence", "dominance"))

    assert list(rows["MSP-PODCAST_0001_0001"])[len(MANIFEST_COLUMNS) :][:4] == [*ATTRIBUTE_NAMES, "emo_class"]
    assert attributes("MSP-PODCAST_0004_0001") == ("0.5", "0.5", "0.5")  # 4.0, 4.0, 4.0
    assert attributes("MSP-PODCAST_0002_0001") == ("0.533333", "0.3", "0.666667")  # 4.2, 2.8, 5.0
    assert attributes("MSP-PODCAST_0001_0003") == ("0.6", "0.8", "")  # EmoDom empty
    assert attributes("MSP-PODCAST_0002_0002") == ("", "0.2", "0.4")  # EmoAct 7.5
    assert attributes("MSP-PODCAST_0003_0001") == ("0.5", "", "0.566667")  # EmoVal n/a
    assert rows["MSP-PODCAST_0002_0002"]["label"] == "fear" and rows["MSP-PODCAST_0002_0002"]["emo_act"] == "7.5"
    # Test3's ratings are hidden like its labels: empty cells, no problem
    assert attributes("MSP-PODCAST_0005_0001") == attributes("MSP-PODCAST_test3_0002") == ("", "", "")
    bad = {row["id"]: row for row in read_problems(out / "problems.csv") if row["kind"] == "bad_attribute"}
    assert {uid: row["detail"] for uid, row in bad.items()} == {
        "MSP-PODCAST_0001_0003": "labels_consensus.csv line 4: EmoDom is empty, so dominance is left empty "
        "(the row is kept); give a rating from 1 to 7 there",
        "MSP-PODCAST_0002_0002": "labels_consensus.csv line 8: EmoAct 7.5 is outside 1-7, so arousal is left empty "
        "(the row is kept); give a rating from 1 to 7 there",
        "MSP-PODCAST_0003_0001": "labels_consensus.csv line 9: EmoVal 'n/a' is not a number, so valence is left "
        "empty (the row is kept); give a rating from 1 to 7 there",
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attributes"] == {"arousal": "EmoAct", "valence": "EmoVal", "dominance": "EmoDom"}
    assert summary["absent_attribute_columns"] == [] and summary["problems"]["bad_attribute"] == 3
    assert "note: the labels file has no" not in capsys.readouterr().out


def test_msp_podcast_labels_without_attribute_columns(tmp_path, capsys):
    """A trimmed labels file (no EmoAct, EmoVal, EmoDom) converts as before, without attribute columns."""
    root = make_msp(tmp_path / "MSP-PODCAST")
    labels = root / "Labels" / "labels_consensus.csv"
    with labels.open(encoding="utf-8", newline="") as handle:
        records = list(csv.DictReader(handle))
    kept = ["FileName", "EmoClass", "SpkrID", "Gender", "Split_Set"]
    with labels.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, kept, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    out = tmp_path / "out"
    assert msp_podcast.main(["--root", str(root), "--out", str(out)]) == 0
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == 10 and not set(ATTRIBUTE_NAMES) & set(rows[0])
    assert "bad_attribute" not in {row["kind"] for row in read_problems(out / "problems.csv")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attributes"] == {} and summary["absent_attribute_columns"] == ["EmoAct", "EmoVal", "EmoDom"]
    printed = capsys.readouterr().out
    assert printed.count("note: the labels file has no EmoAct, EmoVal, EmoDom column(s)") == 1


def test_msp_podcast_asr_transcripts(tmp_path):
    root = make_msp(tmp_path / "MSP-PODCAST")
    asr_csv = tmp_path / "asr.csv"
    asr_csv.write_text('FileName,text\nMSP-PODCAST_0001_0001.wav,"hello, asr"\nMSP-PODCAST_0001_0002,second\n')
    out = tmp_path / "out"
    argv = ["--root", str(root), "--out", str(out), "--transcripts", "asr", "--asr-dir", str(asr_csv)]
    assert msp_podcast.main(argv) == 0
    rows = {row["id"]: row for row in read_manifest(out / "manifest.csv")}
    assert rows["MSP-PODCAST_0001_0001"]["text"] == "hello, asr" and rows["MSP-PODCAST_0001_0002"]["text"] == "second"
    assert rows["MSP-PODCAST_0002_0001"]["text"] == ""
    asr_dir = tmp_path / "asr_txt"
    asr_dir.mkdir()
    (asr_dir / "MSP-PODCAST_0002_0001.txt").write_text("  from a\nfolder ")
    result = msp_podcast.convert_msp_podcast(root, out, transcripts="asr", asr_dir=asr_dir)
    assert {row["id"]: row["text"] for row in result.rows}["MSP-PODCAST_0002_0001"] == "from a folder"
    with pytest.raises(RecipeError, match="--transcripts asr needs --asr-dir"):
        msp_podcast.convert_msp_podcast(root, out, transcripts="asr")


def test_msp_podcast_wrong_root(tmp_path):
    with pytest.raises(
        RecipeError, match=r"has no Labels/labels_consensus\.csv; point --root at the MSP-Podcast folder"
    ):
        msp_podcast.convert_msp_podcast(tmp_path, tmp_path / "out")
    root = make_msp(tmp_path / "MSP-PODCAST")
    shutil.rmtree(root / "Transcripts")
    with pytest.raises(RecipeError, match=r"has no Transcripts/ folder"):
        msp_podcast.convert_msp_podcast(root, tmp_path / "out")


def test_msp_podcast_submission_format(tmp_path):
    path = msp_podcast.write_submission(
        ["MSP-PODCAST_test3_0002", "Audios/MSP-PODCAST_0005_0001.wav", "MSP-PODCAST_test3_0001.wav"],
        ["anger", "N", "contempt"],
        tmp_path / "submission.csv",
    )
    assert path.read_bytes() == (
        b"FileName,EmoClass\nMSP-PODCAST_0005_0001.wav,N\nMSP-PODCAST_test3_0001.wav,C\nMSP-PODCAST_test3_0002.wav,A\n"
    )
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["EmoClass"] in msp_podcast.EMO_CODES for row in rows)
    assert msp_podcast.label_to_code("happiness") == "H" and msp_podcast.label_to_code("sad") == "S"
    with pytest.raises(ValueError, match="cannot map"):
        msp_podcast.write_submission(["a"], ["other"], tmp_path / "x.csv")
    with pytest.raises(ValueError, match="duplicate"):
        msp_podcast.write_submission(["a", "a.wav"], ["A", "S"], tmp_path / "x.csv")


def test_msp_podcast_submission_cli_checks_manifest(tmp_path, capsys):
    root = make_msp(tmp_path / "MSP-PODCAST")
    out = tmp_path / "out"
    msp_podcast.main(["--root", str(root), "--out", str(out)])
    predictions = tmp_path / "preds.csv"
    predictions.write_text("id,label,prediction\nMSP-PODCAST_0005_0001,,fear\nMSP-PODCAST_test3_0002,,disgust\n")
    submission = tmp_path / "submission.csv"
    argv = [
        "submission",
        "--predictions",
        str(predictions),
        "--out",
        str(submission),
        "--manifest",
        str(out / "manifest.csv"),
    ]
    assert msp_podcast.main(argv) == 0
    assert submission.read_text() == "FileName,EmoClass\nMSP-PODCAST_0005_0001.wav,F\nMSP-PODCAST_test3_0002.wav,D\n"
    predictions.write_text("id,prediction\nMSP-PODCAST_0005_0001,fear\n")
    from modeling_crab.recipes.common import run_cli

    assert run_cli(msp_podcast.main, argv) == 2
    assert "1 missing" in capsys.readouterr().err


def test_msp_podcast_manifest_with_missing_transcripts_trains_under_the_release_recipe(tmp_path, caplog):
    """The converter keeps a clip without a transcript with empty text; the release recipe trains on it with the
    empty transcript (the released code's fillna("")), the default recipe stops with the row and the fix."""
    from training_helpers import train_main

    assert msp_podcast.main(["--root", str(make_msp(tmp_path / "MSP-PODCAST")), "--out", str(tmp_path / "out")]) == 0
    manifest_path = tmp_path / "out" / "manifest.csv"
    labels = ",".join(msp_podcast.CLASSES)
    argv = [
        "--manifest",
        str(manifest_path),
        "--tiny",
        "--labels",
        labels,
        "--test_split",
        "test1",
        "--max_steps",
        "1",
    ]
    argv += ["--disable_tqdm", "true", "--mask_time_prob", "0"]  # the fake clips are shorter than a time mask
    with pytest.raises(
        ManifestError,
        match=r"id 'MSP-PODCAST_0001_0002', split 'train'\): empty transcript; .*"
        "--empty_transcripts audio_only",
    ):
        train_main([*argv, "--output_dir", str(tmp_path / "crab")])
    with pytest.warns(UserWarning, match=r"1 row\(s\) have an empty transcript \(1 of 3 in split 'train'\)"):
        results = train_main([*argv, "--recipe", "release", "--output_dir", str(tmp_path / "release")])
    assert 0 <= results["eval_uar"] <= 1
    predictions = (tmp_path / "release" / "predictions_test1.csv").read_text()
    assert "MSP-PODCAST_0003_0001" in predictions


# --------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("name", "batch", "test_split"), [("iemocap", 8, "test"), ("meld", 8, "test"), ("msp_podcast", 16, "test1")]
)
def test_reproduction_configs(name, batch, test_split):
    """Each config names the release recipe and only what differs from it; the run gets the paper's settings."""
    from modeling_crab import CrabConfig
    from modeling_crab.training.arguments import parse_arguments

    path = ROOT / "configs" / f"{name}.json"
    written = json.loads(path.read_text())
    assert written["recipe"] == "release" and "mask_padding" not in written and "max_duration_s" not in written
    arguments = parse_arguments([str(path)])
    model, head, data, optimizer, training = (
        arguments.model,
        arguments.head,
        arguments.data,
        arguments.optimization,
        arguments.training,
    )
    assert training.per_device_train_batch_size == batch
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps == 32
    assert training.per_device_eval_batch_size == 4 * batch  # the release evaluates dev at 4 micro-batches
    assert data.test_split == test_split and data.eval_split == "dev" and data.test_batch_size == 1
    assert model.audio_encoder == "microsoft/wavlm-large" and model.text_encoder == "roberta-large"
    assert (
        training.learning_rate == 1e-5 and optimizer.encoder_learning_rate == 1e-6 and training.num_train_epochs == 20
    )
    assert head.mask_padding is False and data.text_padding == "max_length" and data.max_text_length == 128
    assert data.max_duration_s == 12.0 and training.metric_for_best_model == "macro_f1_present" and training.seed == 42
    assert data.empty_transcripts == "audio_only"  # the release's fillna(""): clips without a transcript stay
    assert head.mlcs_weight is None and head.mlcs_temperature is None  # the model's own: the paper's
    built_in = CrabConfig()
    assert (built_in.mlcs_weight, built_in.mlcs_temperature) == (2.0, 0.1)
