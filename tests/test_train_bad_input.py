"""Bad input to `train.py`'s arguments: each case is handled as docs/bad_input.md says or stopped by an error that
names the input and the fix. Every test here is a row of that table, under the same name."""

from __future__ import annotations

import json

import pytest
from training_helpers import LABELS

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # many small forward passes (conftest)


# ---- train.py arguments
@pytest.mark.parametrize(
    "argv, named",
    [
        (["--normalization", "globl"], "--normalization: invalid choice: 'globl'"),  # argparse's choices
        (["--unimodal_tap", "post"], "--unimodal_tap: invalid choice: 'post'"),
        ({"unimodal_tap": "post"}, "--unimodal_tap 'post': pass one of pre_gru, post_gru"),  # a file meets no choices
        ({"text_padding": "max"}, "--text_padding 'max': pass one of longest, max_length"),
        (["--mlcs_taps", "fusion", "fuson"], "--mlcs_taps: invalid choice: 'fuson'"),
        ({"mlcs_taps": ["fusion", "fuson"]}, "--mlcs_taps ['fusion', 'fuson']: pass one or more of"),
        (["--max_duration_s", "0"], "--max_duration_s 0.0: pass a positive number"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0: pass a whole number >= 1"),
        (["--mlcs_temperature", "-1"], "--mlcs_temperature -1.0: pass a positive number"),
        ({"normalization": "Global"}, "--normalization 'Global': pass one of global, utterance, none"),
    ],
)
def test_train_arguments_are_checked_where_parsed(tmp_path, capsys, argv, named):
    from modeling_crab.training.arguments import parse_arguments

    if isinstance(argv, dict):
        config = tmp_path / "run.json"
        config.write_text(json.dumps({"manifest": "m.csv", **argv}))
        argv = [str(config)]
    else:
        argv = ["--manifest", "m.csv", *argv]
    with pytest.raises(SystemExit) as stop:
        parse_arguments(argv)
    assert stop.value.code == 2 and named in capsys.readouterr().err


# ---- transcripts and the text encoder
def _edit_rows(manifest, edit):
    """Rewrite `manifest` (a CSV) with `edit(rows)`, the list of its rows as dicts."""
    import csv

    with manifest.open() as handle:
        rows = edit(list(csv.DictReader(handle)))
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _with_long_transcripts(manifest, ids: set[str], words: int = 240):
    def lengthen(rows):
        for row in rows:
            if row["id"] in ids:
                row["text"] = " ".join(["that is wonderful news"] * (words // 4))
        return rows

    return _edit_rows(manifest, lengthen)


def test_train_counts_the_transcripts_it_cuts(tmp_path, caplog):
    import re

    from training_helpers import run_argv, train_main, write_corpus

    manifest = _with_long_transcripts(write_corpus(tmp_path), {"train_sad_0", "train_happy_2", "dev_angry_0"})
    with caplog.at_level("WARNING", logger="crab.train"):
        train_main(run_argv(manifest, tmp_path / "run", "--max_steps", "1"))
    warned = [r.getMessage() for r in caplog.records if "are cut to their first" in r.getMessage()]
    assert len(warned) == 1, warned  # once per run
    assert warned[0].startswith(
        "transcripts longer than --max_text_length 128 tokens are cut to their first 128, as in the paper's recipe"
    )
    longest = re.search(r"split 'train' 2 of 12 \(the longest: id '(\w+)', (\d+) tokens\)", warned[0])
    assert longest and longest[1] in {"train_sad_0", "train_happy_2"} and int(longest[2]) > 128
    assert re.search(r"split 'dev' 1 of 4 \(the longest: id 'dev_angry_0', \d+ tokens\)", warned[0])
    assert "Raise --max_text_length to keep more of them" in warned[0]
    assert (tmp_path / "run" / "inference" / "model.safetensors").is_file()  # a warning: the run goes on


def test_train_max_text_length_beyond_the_text_encoder(tmp_path):
    from training_helpers import run_argv, train_main, write_corpus

    from modeling_crab.training.arguments import SettingError

    manifest = write_corpus(tmp_path)
    with pytest.raises(SettingError) as stop:  # `python train.py` prints it as `train.py: error: ...`, status 2
        train_main(run_argv(manifest, tmp_path / "run", "--max_text_length", "300"))
    assert str(stop.value) == (
        "--max_text_length 300: the text encoder (roberta) reads at most 158 tokens; pass --max_text_length 158 or less"
    )
    assert not (tmp_path / "run" / "manifest_scan.json").exists()  # stopped before any audio is read
    train_main(run_argv(manifest, tmp_path / "longest", "--max_text_length", "158", "--max_steps", "1"))  # the limit


# ---- the label set
@pytest.mark.parametrize(
    "change, extra, named",
    [
        (
            {"train_angry_1": "Angry"},
            [],
            "the labels of split 'train' spell one class in several ways ('Angry' and 'angry'): they would be trained "
            "as different classes; give each class one spelling in the 'label' column",
        ),
        (
            {"train_sad_0": "Sad ", "train_sad_1": "SAD"},  # a trailing space is stripped: 'Sad' and 'SAD' clash
            [],
            "spell one class in several ways ('SAD' and 'Sad' and 'sad')",
        ),
        (
            {},
            ["--labels", "angry,happy,neutral,sad,sad"],
            "--labels name ['sad'] more than once; name each class once",
        ),
        ({}, ["--labels", "sad"], "--labels hold one class ('sad'); an emotion classifier needs two or more"),
        (
            {f"{split}_{label}_{i}": "sad" for split in ("train", "dev") for label in LABELS for i in range(3)},
            [],
            "the labels of split 'train' hold one class ('sad'); an emotion classifier needs two or more",
        ),
    ],
)
def test_train_label_set_is_checked(tmp_path, change, extra, named):
    from training_helpers import run_argv, train_main, write_corpus

    from modeling_crab.manifest import ManifestError

    manifest = _edit_rows(
        write_corpus(tmp_path), lambda rows: [{**row, "label": change.get(row["id"], row["label"])} for row in rows]
    )
    with pytest.raises(ManifestError) as stop:
        train_main(run_argv(manifest, tmp_path / "run", *extra))
    assert named in str(stop.value)
    assert not (tmp_path / "run" / "manifest_scan.json").exists()  # before any audio is read


def test_train_dev_split_without_a_class(tmp_path, caplog):
    from training_helpers import run_argv, train_main, write_corpus

    manifest = _edit_rows(write_corpus(tmp_path), lambda rows: [row for row in rows if row["id"] != "dev_sad_0"])
    with caplog.at_level("WARNING", logger="crab.train"):
        train_main(run_argv(manifest, tmp_path / "run", "--max_steps", "1"))
    assert (
        "split 'dev' has no clip of ['sad']: their recall counts as 0 in its UAR and macro-F1, which average over all "
        "4 classes, so its UAR is at most 0.75; add clips of them to compare models on every class" in caplog.text
    )
    assert (tmp_path / "run" / "eval_results.json").is_file()  # a note: the run goes on


def test_train_the_same_clip_in_several_rows(tmp_path, caplog):
    from training_helpers import run_argv, train_main, write_corpus

    def reuse(rows):
        audio = {row["id"]: row["audio"] for row in rows}
        for row in rows:
            if row["id"] in ("dev_sad_0", "dev_happy_0"):  # dev clips the model trains on
                row["audio"] = audio[row["id"].replace("dev", "train")]
            if row["id"] == "test_angry_0":  # a test clip that is also a dev clip
                row["audio"] = audio["dev_angry_0"]
        return [*rows, {**rows[0], "id": "again", "label": "happy"}]  # train_angry_0 twice, under two labels

    manifest = _edit_rows(write_corpus(tmp_path, {"train": 3, "dev": 1, "test": 1}), reuse)
    with caplog.at_level("WARNING", logger="crab.train"):
        train_main(run_argv(manifest, tmp_path / "run", "--max_steps", "1"))
    warned = {
        r.getMessage().split(":")[0]: r.getMessage()
        for r in caplog.records
        if "audio file and segment" in r.getMessage()
    }
    assert set(warned) == {
        "2 clip(s) (the same audio file and segment) are in split 'train' and in 'dev' or 'test'",
        "1 clip(s) (the same audio file and segment) are in both evaluation splits",
        "1 clip(s) (the same audio file and segment) are under different labels",
        "1 clip(s) (the same audio file and segment) are twice in one split",
    }, warned
    leaked = warned["2 clip(s) (the same audio file and segment) are in split 'train' and in 'dev' or 'test'"]
    assert "scores there count clips the model was trained on, not unseen ones. Keep each clip in one row" in leaked
    assert "(id 'train_sad_0', split 'train') = line 17 (id 'dev_sad_0', split 'dev')" in leaked
    assert (
        "(id 'again', split 'train')" in warned["1 clip(s) (the same audio file and segment) are twice in one split"]
    )
    assert (tmp_path / "run" / "eval_results.json").is_file()  # a note: the run goes on


def test_train_clip_shorter_than_the_models_encoder_frame(tmp_path):
    """The scan's shortest clip is the speech encoder's own frame: 40 ms for --tiny's CNN (WavLM's: 25 ms)."""
    import numpy as np
    import soundfile as sf
    from training_helpers import run_argv, train_main, write_corpus

    from modeling_crab.manifest import ManifestError

    manifest = write_corpus(tmp_path)
    sf.write(tmp_path / "wavs" / "train_sad_0.wav", np.full(480, 0.1) * np.sin(np.arange(480)), 16000)  # 30 ms
    with pytest.raises(ManifestError) as stop:
        train_main(run_argv(manifest, tmp_path / "run"))
    assert "train_sad_0.wav' is 30 ms long, shorter than one frame of the speech encoder (40 ms)" in str(stop.value)


def test_train_crop_shorter_than_the_encoders_frame_names_the_option(tmp_path):
    """--max_duration_s below the speech encoder's one frame is the option's fault: one error naming it, before any
    audio is read, not every clip reported as too short."""
    from training_helpers import train_main, write_corpus

    from modeling_crab.training.arguments import SettingError

    path = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    out = tmp_path / "out"
    with pytest.raises(SettingError, match=r"--max_duration_s 0.01: .*one frame .* pass --max_duration_s 0.041"):
        train_main(["--manifest", str(path), "--tiny", "--max_duration_s", "0.01", "--output_dir", str(out)])
    assert not (out / "manifest_scan.json").exists()


def test_train_stopped_by_the_environment_says_what_is_intact(tmp_path, monkeypatch, capsys):
    """Ctrl-C, a full disk (also as torch's zip-writer error, which never says "space"), a folder that cannot be
    written, no memory: one line saying what happened, that the saved checkpoints are complete and how to continue;
    an error without such a line keeps its traceback."""
    import errno
    import importlib.util
    from pathlib import Path
    from types import SimpleNamespace

    import torch

    from modeling_crab.training import failures, run
    from modeling_crab.training.failures import failure_message

    out = str(tmp_path / "out")
    cases = [
        (KeyboardInterrupt(), 130, "interrupted; the checkpoints saved so far are complete"),
        (OSError(errno.ENOSPC, "No space left on device"), 1, f"the disk holding '{out}' is full"),
        (OSError(errno.EACCES, "Permission denied", out), 1, f"'{out}' cannot be written (permission denied)"),
        (OSError(errno.EROFS, "Read-only file system", out), 1, f"'{out}' is read-only"),
        (torch.OutOfMemoryError("CUDA out of memory"), 1, "the GPU ran out of memory; lower --per_device_train"),
        (MemoryError(), 1, "the machine ran out of memory"),
    ]
    for error, status, said in cases:
        message, code = failure_message(error, out)
        assert said in message and code == status, (error, message)
        assert "\n" not in message
    zip_writer = RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file")
    with monkeypatch.context() as full:
        full.setattr(failures.shutil, "disk_usage", lambda path: SimpleNamespace(free=1024))
        assert "is full" in failure_message(zip_writer, out)[0]
    assert failure_message(zip_writer, out) is None  # room left: another failure, its traceback kept
    assert failure_message(RuntimeError("a defect"), out) is None and failure_message(ValueError("x"), out) is None

    # train.py itself: the line on stderr, the status, no traceback
    spec = importlib.util.spec_from_file_location("crab_train_entry", Path(__file__).parents[1] / "train.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)

    def interrupted(arguments):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "train", interrupted)
    assert entry.main(["--manifest", "m.csv", "--output_dir", out]) == 130
    assert capsys.readouterr().err.strip().startswith("train.py: interrupted; the checkpoints saved so far")


@pytest.mark.parametrize(
    "case, named",
    [
        ("labels subset", r"--labels angry,happy leaves out classes that 4 row\(s\) of this run have: 'neutral' \(2 "),
        ("labels misspelled", r"leaves out .*'sad' \(2 row\(s\)\); pass --labels angry,happy,neutral,sadd,sad \("),
        ("labels in another case", r"'angry' \(2 row\(s\)\), spelled 'Angry' in --labels; pass --labels angry,hap"),
        ("audio_root above", r"--audio_root '.*': none of the 8 relative audio paths .* under the manifest's folder"),
        ("audio_root below", r"none of the 8 relative .*'wavs/.*' would be '.*/wavs/wavs/.*', which does not exist"),
        ("audio_root elsewhere", r"none of the 8 .*; pass the folder the manifest's relative paths start from$"),
    ],
)
def test_train_options_whose_consequences_every_row_shows_are_named(tmp_path, case, named):
    """A label set (--labels) that leaves out classes of the rows, or an --audio_root under which none of the relative
    audio paths exists, is the option's problem: one error naming it, before any audio is read, not a problem per
    row. With --skip_bad_rows the rows of other classes are left out one by one, as asked."""
    import shutil

    from training_helpers import run_argv, train_main, write_corpus

    from modeling_crab.manifest import ManifestError

    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    options = {
        "labels subset": ["--labels", "angry,happy"],
        "labels misspelled": ["--labels", "angry,happy,neutral,sadd"],
        "labels in another case": ["--labels", "Angry,happy,neutral,sad"],
        "audio_root above": ["--audio_root", str(tmp_path)],
        "audio_root below": ["--audio_root", str(manifest.parent / "wavs")],
        "audio_root elsewhere": ["--audio_root", str(tmp_path / "nowhere")],
    }[case]
    if case == "audio_root elsewhere":
        shutil.rmtree(manifest.parent / "wavs")  # the files are neither under the root nor the manifest's folder
    out = tmp_path / "run"
    with pytest.raises(ManifestError, match=named) as stop:
        train_main(run_argv(manifest, out, *options))
    assert "\n" not in str(stop.value) and not (out / "manifest_scan.json").exists()
    if case == "labels subset":
        train_main(run_argv(manifest, out, *options, "--skip_bad_rows", "true", "--max_steps", "1"))
        skipped = (out / "skipped_rows.csv").read_text()
        assert skipped.count("unknown label") == 4
