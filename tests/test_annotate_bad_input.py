"""Bad input to `crab annotate`: a bad input, output or manifest stops the run before the model loads (a setting that
needs the model's files: right after) with one line naming it and the fix; a bad recording becomes a row with its
error. Every test here is a row of docs/bad_input.md, under the same name."""

from __future__ import annotations

import pytest
from training_helpers import write_tone

from modeling_crab.annotate import read_table
from modeling_crab.cli import main

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def annotate(crab, *args) -> list[str]:
    return ["annotate", *map(str, args), "--model", str(crab[3]), "--device", "cpu", "--num-workers", "0"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("crab: error: "), err
    return err


def test_annotate_no_such_input(crab, tmp_path, capsys):
    assert main(annotate(crab, tmp_path / "no_such_folder", "--output", tmp_path / "out.parquet")) == 1
    assert "no_such_folder' does not exist; pass a manifest (CSV or JSONL with an audio column)" in one_error_line(
        capsys
    )


def test_annotate_folder_without_audio(crab, tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no audio here")
    (tmp_path / "notes" / "manifest.csv").write_text("audio,text\na.wav,hi\n")
    assert main(annotate(crab, tmp_path / "notes", "--output", tmp_path / "out.parquet")) == 1
    err = one_error_line(capsys)
    assert "notes' holds no audio files (.wav, .flac, .ogg, .opus, .mp3, in it or its subfolders)" in err
    assert "it holds manifest.csv: pass" in err


def test_annotate_manifest_without_audio_column(crab, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,wav_path,text\na,a.wav,hello\n")
    assert main(annotate(crab, manifest, "--output", tmp_path / "out.csv")) == 1
    assert "no 'audio' column; rename column 'wav_path' to 'audio'" in one_error_line(capsys)


def test_annotate_existing_output_without_resume_or_overwrite(crab, tmp_path, capsys):
    write_tone(tmp_path / "clips" / "a.wav", 200.0, 0.5)
    out = tmp_path / "out.parquet"
    out.write_bytes(b"an earlier run")
    assert main(annotate(crab, tmp_path / "clips", "--output", out, "--audio-only")) == 1
    assert "out.parquet' exists; pass --resume to continue it (what is done is skipped) or --overwrite" in (
        one_error_line(capsys)
    )
    (tmp_path / "out.parquet.parts").mkdir()
    out.unlink()
    assert main(annotate(crab, tmp_path / "clips", "--output", out, "--audio-only")) == 1
    assert "holds the parts of an unfinished run; pass --resume" in one_error_line(capsys)
    assert main(annotate(crab, tmp_path / "clips", "--output", out, "--resume", "--overwrite")) == 1
    assert "pass --resume (continue) or --overwrite (start again), not both" in one_error_line(capsys)


def test_annotate_output_that_is_not_parquet_or_csv(crab, tmp_path, capsys):
    write_tone(tmp_path / "clips" / "a.wav", 200.0, 0.5)
    assert main(annotate(crab, tmp_path / "clips", "--output", tmp_path / "out.xlsx")) == 1
    assert "out.xlsx' has suffix '.xlsx'; name it .parquet or .csv" in one_error_line(capsys)


def test_annotate_duplicate_ids(crab, tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"id": "x", "audio": "a.wav"}\n{"id": "y", "audio": "b.wav"}\n{"id": "x", "audio": "c.wav"}\n'
    )
    assert main(annotate(crab, manifest, "--output", tmp_path / "out.csv")) == 1
    assert "has the id 'x' twice (rows 0 and 2); ids name the output's rows" in one_error_line(capsys)


def test_annotate_unreadable_or_too_short_recordings_are_rows_with_their_error(crab, tmp_path, capsys):
    clips = tmp_path / "clips"
    write_tone(clips / "a_good.wav", 200.0, 0.8)
    (clips / "b_corrupt.wav").write_bytes(b"not audio at all" * 10)
    write_tone(clips / "c_short.wav", 200.0, 0.01)
    write_tone(clips / "d_good.flac", 300.0, 0.6)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "id,audio,text,start,end\n"
        "good,clips/a_good.wav,hello,,\n"
        "missing,clips/missing.wav,hello,,\n"
        "segment,clips/a_good.wav,hello,0.5,0.2\n"
    )
    out = tmp_path / "out.parquet"
    with pytest.warns(UserWarning, match="without modality dropout"):
        assert main(annotate(crab, clips, "--output", out, "--audio-only")) == 0
    assert "4 recordings in" in capsys.readouterr().out
    rows = {row["id"]: row for row in read_table(out)}
    assert rows["a_good.wav"]["error"] is None and rows["d_good.flac"]["prediction"] is not None
    assert "could not be decoded" in rows["b_corrupt.wav"]["error"] and rows["b_corrupt.wav"]["prediction"] is None
    assert "is 10 ms long; pass at least 25 ms" in rows["c_short.wav"]["error"]
    assert rows["b_corrupt.wav"]["angry"] is None and rows["b_corrupt.wav"]["duration"] is None

    out = tmp_path / "manifest.csv"
    assert main(annotate(crab, manifest, "--output", out)) == 0
    assert "1 done, 2 failed (their error column says why), 0 skipped" in capsys.readouterr().out
    rows = {row["id"]: row for row in read_table(out)}
    assert "missing.wav' does not exist" in rows["missing"]["error"]
    assert "line 4 (id 'segment'): end=0.2 is not after start=0.5" in rows["segment"]["error"]


def loaded_then_one_error_line(capsys) -> str:
    """The one error line of a check that needs the loaded model: before it, only the weights' progress bar."""
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    said = [line for line in lines if line.strip() and "it/s]" not in line]
    assert len(said) == 1 and said[0] == lines[-1] and said[0].startswith("crab: error: "), lines
    return said[0]


def test_annotate_pad_to_buckets_without_buckets_or_masked_padding(crab, tmp_path, capsys):
    import json
    import shutil

    write_tone(tmp_path / "clips" / "a.wav", 200.0, 0.5)
    args = [tmp_path / "clips", "--output", tmp_path / "out.csv", "--audio-only", "--pad-to-buckets"]
    assert main(annotate(crab, *args)) == 1
    assert loaded_then_one_error_line(capsys) == (
        "crab: error: --pad-to-buckets pads to the shape buckets saved with the model, and it has none (it was "
        "trained without train.py --shape_buckets); drop --pad-to-buckets"
    )
    unmasked = tmp_path / "unmasked"
    shutil.copytree(crab[3], unmasked)
    for name, key, value in (("processor_config.json", "shape_buckets", {"audio": [16000], "text": [16]}),
                             ("config.json", "mask_padding", False)):  # fmt: skip
        saved = json.loads((unmasked / name).read_text())
        (unmasked / name).write_text(json.dumps({**saved, key: value}))
    assert main(annotate((None, None, None, unmasked), *args)) == 1
    assert "this model's head does not mask padding (config.mask_padding=False, the release recipe)" in (
        loaded_then_one_error_line(capsys)
    )
    assert not (tmp_path / "out.csv").exists()
