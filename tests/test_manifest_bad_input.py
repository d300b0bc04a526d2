"""Bad input to manifests and the scan before training: each case is handled as docs/bad_input.md says or stopped by an
error that names the input and the fix. Every test here is a row of that table, under the same name."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from bad_input import SR, manifest, noise, scan_problems, truncate, write

from modeling_crab.configuration_crab import min_audio_samples
from modeling_crab.manifest import ManifestError, load_manifest
from modeling_crab.training.data import load_audio, scan_manifest
from modeling_crab.training.tiny import tiny_crab_config

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # many small forward passes (conftest)


# ---- Manifests (modeling_crab.training.data)
def test_manifest_missing_file(tmp_path):
    write(tmp_path / "ok.wav", noise(0.5))
    message = scan_problems(manifest(tmp_path, ["a,ok.wav,hi,sad,train", "b,gone.wav,hi,sad,train"]))
    assert "line 3 (id 'b', split 'train'): audio file '" in message and "gone.wav' not found; fix the path" in message


def test_manifest_corrupt_file(tmp_path):
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
    message = scan_problems(manifest(tmp_path, ["a,zero.wav,hi,sad,train", "b,junk.wav,hi,sad,train"]))
    assert "id 'a'" in message and "zero.wav' is unreadable" in message and "junk.wav' is unreadable" in message


def test_manifest_truncated_wav_is_read_up_to_its_last_frame(tmp_path):
    cut = truncate(Path(write(tmp_path / "whole.wav", noise(1))), tmp_path / "cut.wav")
    scan = scan_manifest(load_manifest(manifest(tmp_path, ["a,cut.wav,hi,sad,train"])), ["sad"], num_workers=1)
    assert 0 < scan.num_samples["a"] < SR and len(load_audio(cut)) == scan.num_samples["a"]


def test_manifest_zero_length_audio(tmp_path):
    write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    assert "line 2 (id 'a', split 'train'): audio '" in (
        message := scan_problems(manifest(tmp_path, ["a,empty.wav,hi,sad,train"]))
    )
    assert "empty.wav' is empty" in message


def test_manifest_warns_on_a_silent_clip(tmp_path):
    write(tmp_path / "ok.wav", noise(0.5))
    write(tmp_path / "silent.wav", np.zeros(SR, np.float32))
    path = manifest(tmp_path, ["a,ok.wav,hi,sad,train", "b,silent.wav,hi,sad,train"])
    with pytest.warns(UserWarning, match="id 'b'.*silent"):
        scan_manifest(load_manifest(path), ["sad"], num_workers=1)


def test_manifest_rejects_all_silent_training_audio(tmp_path):
    write(tmp_path / "silent.wav", np.zeros(SR, np.float32))
    assert "silent" in scan_problems(manifest(tmp_path, ["a,silent.wav,hi,sad,train"]), labels=["sad"])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_manifest_nan_and_inf_audio(tmp_path, bad):
    audio = noise(0.5)
    audio[7] = bad
    write(tmp_path / "bad.wav", audio, subtype="FLOAT")
    assert "bad.wav' contains NaN or infinite samples" in scan_problems(manifest(tmp_path, ["a,bad.wav,hi,sad,train"]))


@pytest.mark.parametrize("rate", [8000, 44100])
def test_manifest_audio_at_8k_and_44k_is_resampled(tmp_path, rate):
    write(tmp_path / "a.wav", noise(1.5, rate), rate)
    scan = scan_manifest(load_manifest(manifest(tmp_path, ["a,a.wav,hi,sad,train"])), ["sad"], num_workers=1)
    assert abs(scan.num_samples["a"] - int(1.5 * SR)) <= 1


@pytest.mark.parametrize("channels", [2, 6])
def test_manifest_stereo_and_6_channel_audio_is_downmixed(tmp_path, channels):
    multi = noise(1, channels=channels)
    write(tmp_path / "a.wav", multi, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "a.wav"), multi.mean(axis=1), atol=1e-6)
    assert scan_manifest(load_manifest(manifest(tmp_path, ["a,a.wav,hi,sad,train"])), ["sad"]).num_samples["a"] == SR


def test_manifest_20_minute_clip_reads_only_the_crop(tmp_path):
    """A 20 min file (38 MB) is read only up to `max_duration_s`: allocations stay near 12 s of audio."""
    pcm = np.random.default_rng(0).integers(-3000, 3000, 20 * 60 * SR, dtype=np.int16)
    write(tmp_path / "long.wav", pcm)
    del pcm
    tracemalloc.start()
    try:
        waveform = load_audio(tmp_path / "long.wav", max_duration_s=12.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(waveform) == 12 * SR and peak < 16e6
    scan = scan_manifest(load_manifest(manifest(tmp_path, ["a,long.wav,hi,sad,train"])), ["sad"], max_duration_s=12.0)
    assert scan.num_samples["a"] == 12 * SR


@pytest.mark.parametrize("transcript", ['""', '"   "', '"\u200b"', '"\ufeff \u200b\u00ad"'])  # invisible: no words
def test_manifest_empty_or_whitespace_transcript(tmp_path, transcript):
    write(tmp_path / "a.wav", noise(0.5))
    write(tmp_path / "b.wav", noise(0.5))
    rows = [f"a,a.wav,{transcript},sad,train", "b,b.wav,hello,sad,train", f"c,b.wav,{transcript},sad,dev"]
    message = scan_problems(manifest(tmp_path, rows))
    assert (
        "line 2 (id 'a', split 'train'): empty transcript; write the transcript (ASR output is fine), drop the row, "
        "or pass --empty_transcripts audio_only to use its audio alone" in message
    )
    assert "line 4 (id 'c', split 'dev'): empty transcript" in message
    # audio_only (the release recipe's): kept, counted per split and named in one warning
    utterances = load_manifest(manifest(tmp_path, rows))
    with pytest.warns(UserWarning) as caught:
        scan = scan_manifest(utterances, ["sad"], labelled_splits=["dev"], empty_transcripts="audio_only")
    assert set(scan.num_samples) == {"a", "b", "c"}
    (warned,) = [str(w.message) for w in caught if "empty transcript" in str(w.message)]
    assert warned.startswith(
        "2 row(s) have an empty transcript (1 of 1 in split 'dev', 1 of 2 in split 'train'); they are trained and "
        "evaluated on their audio alone (the empty transcript <s></s>)"
    )
    assert "line 2 (id 'a', split 'train')" in warned and "line 4 (id 'c', split 'dev')" in warned
    with pytest.raises(ValueError, match="empty_transcripts='keep'; use one of error, audio_only"):
        scan_manifest(utterances, ["sad"], empty_transcripts="keep")


def test_manifest_long_transcript_is_truncated_in_batches(tmp_path, tiny_processor):
    from modeling_crab.training import CrabAudioTextDataset, CrabDataCollator

    write(tmp_path / "a.wav", noise(0.5))
    long = "that is wonderful news " * 200
    utterances = load_manifest(manifest(tmp_path, [f"a,a.wav,{long},sad,train"]))
    scan_manifest(utterances, ["sad"], num_workers=1)  # accepted
    batch = CrabDataCollator(tiny_processor)([CrabAudioTextDataset(utterances, {"sad": 0})[0]])
    assert batch["input_ids"].shape == (1, tiny_processor.max_text_length)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_manifest_with_invalid_utf8(tmp_path, suffix):
    write(tmp_path / "a.wav", noise(0.5))
    path = tmp_path / f"manifest.{suffix}"
    if suffix == "csv":
        path.write_bytes(b"audio,text,label\na.wav,caf\xe9,sad\n")
    else:
        path.write_bytes(b'{"audio": "a.wav", "text": "caf\xe9", "label": "sad"}\n')
    with pytest.raises(ManifestError, match=rf"manifest.{suffix}.*(line|record) [12].*UTF-8"):
        load_manifest(path)


def test_manifest_csv_with_byte_order_mark(tmp_path):
    write(tmp_path / "a.wav", noise(0.5))
    path = tmp_path / "manifest.csv"
    path.write_text("audio,text,label\na.wav,hi,sad\n", encoding="utf-8-sig")  # as Excel saves CSV
    assert Path(load_manifest(path)[0].audio).name == "a.wav"


def test_manifest_unknown_and_missing_labels(tmp_path):
    write(tmp_path / "a.wav", noise(0.5))
    rows = ["a,a.wav,hi,furious,train", "b,a.wav,hi,,train", "c,a.wav,hi,,test", "d,a.wav,hi,Sad,dev"]
    message = scan_problems(manifest(tmp_path, rows), labelled_splits=["dev"])
    assert "id 'a', split 'train'): unknown label 'furious' (label set: sad, happy); fix the spelling" in message
    assert "id 'b', split 'train'): empty label in split 'train'; label the row or drop it" in message
    assert "id 'd', split 'dev'): unknown label 'Sad'" in message
    assert "id 'c'" not in message  # an unlabelled split (hidden test labels) may leave labels empty


def test_manifest_duplicate_ids(tmp_path):
    write(tmp_path / "a.wav", noise(0.5))
    message = scan_problems(manifest(tmp_path, ["x,a.wav,hi,sad,train", "x,a.wav,yo,sad,train"]))
    assert "line 2 (id 'x', split 'train'): id 'x' is used by 2 rows; make ids unique" in message
    assert "line 3 (id 'x', split 'train')" in message


def test_manifest_missing_and_misnamed_columns(tmp_path):
    path = manifest(tmp_path, ["a.wav,hi,sad"], header="wav_path,transcript,emotion")
    with pytest.raises(ManifestError) as error:
        load_manifest(path)
    for fix in ("rename column 'wav_path' to 'audio'", "'transcript' to 'text'", "'emotion' to 'label'"):
        assert fix in str(error.value)
    with pytest.raises(ManifestError, match=r"no 'label' column; add it \(the emotion class name\)"):
        load_manifest(manifest(tmp_path, ["a.wav,hi"], header="audio,text"))


def test_manifest_row_with_an_unquoted_comma(tmp_path):
    write(tmp_path / "a.wav", noise(0.5))
    path = manifest(tmp_path, ["a,a.wav,well, i never,sad,train"])  # the transcript's comma is not quoted
    with pytest.raises(ManifestError, match="line 2.*(fields|columns).*quote"):
        scan_manifest(load_manifest(path), ["sad"], num_workers=1)


def test_manifest_quote_that_swallows_the_rows_after_it(tmp_path):
    """An unclosed quote merges the following rows into one field: that row is reported with the lines it
    swallowed, and the rows after a (legitimately) multi-line transcript keep their own line numbers."""
    write(tmp_path / "a.wav", noise(0.5))
    rows = ['a,a.wav,"two lines,\nof transcript",sad,train', "b,gone.wav,hi,sad,train"]
    rows += ['c,a.wav,"i said no,sad,train', "d,a.wav,hi,sad,train", "e,a.wav,yo,happy,train"]
    message = scan_problems(manifest(tmp_path, rows))
    assert "line 4 (id 'b', split 'train'): audio file" in message  # after the two-line row
    assert "line 5 (id 'c'): a quoted field opened on line 5 runs on to line 7" in message
    assert "2 row(s) after it were read as part of this one; close the quote" in message
    assert "line 2" not in message


def test_manifest_row_with_too_few_fields(tmp_path):
    write(tmp_path / "a.wav", noise(0.5))
    message = scan_problems(manifest(tmp_path, ["a,a.wav,hi,sad,train", "b,a.wav,hi"]))
    assert "line 3 (id 'b'): 3 fields but the header has 5 columns; give every column a value" in message


@pytest.mark.parametrize(
    "split, hint",
    [
        ("Train", "split 'Train' looks like 'train' but is not it, so these rows would be left out; rename it"),
        ("validation", "split 'validation' is not 'dev', which has no rows; rename it to 'dev' or pass --eval_split"),
        ("", "empty split; give every row one of"),
    ],
)
def test_manifest_split_names_are_checked(tmp_path, split, hint):
    from modeling_crab.manifest import select_splits

    rows = ["a,a.wav,hi,sad,train", f"b,a.wav,hi,sad,{split}", "c,a.wav,hi,sad,test2", "d,a.wav,hi,sad,test"]
    rows += ["e,a.wav,hi,sad,dev"] if split != "validation" else []
    utterances = load_manifest(manifest(tmp_path, rows))
    flags = {"train": "--train_split", "eval": "--eval_split", "test": "--test_split"}
    with pytest.raises(ManifestError) as error:
        select_splits(utterances, {"train": "train", "eval": "dev", "test": "test"}, flags)
    assert f"1 row(s) (line 3): {hint}" in str(error.value)

    # another split (test2 next to test) is left out with a warning that names its rows
    utterances = [u for u in utterances if u.id not in ("b", "e")]
    utterances += load_manifest(manifest(tmp_path, ["e,a.wav,hi,sad,dev"]))
    with pytest.warns(
        UserWarning, match=r"belong to splits this run does not use.*\n  1 row\(s\) \(line 4\): split 'test2'"
    ):
        rows = select_splits(utterances, {"train": "train", "eval": "dev", "test": "test"}, flags)
    assert {role: [u.id for u in part] for role, part in rows.items()} == {
        "train": ["a"],
        "eval": ["e"],
        "test": ["d"],
    }


@pytest.mark.parametrize(
    "row, problem",
    [
        ("c,a.wav,well, I never,happy,train", "6 fields but the header has 5 columns"),  # split shifted to 'happy'
        ("c,a.wav,hi,sad,", "empty split"),
        ('c,a.wav,"hi,sad,train', "a quoted field opened on line 4"),  # swallows the rows after it
    ],
)
def test_manifest_row_with_its_own_problem_is_reported_whatever_its_split(tmp_path, row, problem):
    """A row whose fields are broken (an unquoted comma, a quote never closed) carries a split that is not the one
    written: it is reported with its own problem, not left out as a row of a split the run does not use."""
    from modeling_crab.manifest import select_splits

    rows = ["a,a.wav,hi,sad,train", "b,a.wav,hi,sad,dev", row, "d,a.wav,hi,sad,test", "e,a.wav,hi,sad,dev"]
    utterances = load_manifest(manifest(tmp_path, rows))
    with pytest.raises(ManifestError) as error:
        select_splits(utterances, {"train": "train", "eval": "dev", "test": "test"})
    assert "line 4" in str(error.value) and problem in str(error.value)


def test_manifest_split_in_two_roles_is_warned_about_and_scanned_once(tmp_path):
    """--eval_split naming the training split: a warning naming the flag (dev scores then measure fit), and its rows
    are checked once, not reported as duplicate ids."""
    from training_helpers import write_corpus

    from modeling_crab.training.arguments import parse_arguments
    from modeling_crab.training.run import prepare_data

    path = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    argv = ["--manifest", str(path), "--tiny", "--eval_split", "train", "--output_dir", str(tmp_path / "out")]
    with pytest.warns(UserWarning, match="--eval_split 'train' is also the training split"):
        data = prepare_data(parse_arguments(argv))
    assert [u.id for u in data.rows["eval"]] == [u.id for u in data.rows["train"]]
    assert len(data.scan.num_samples) == len(data.rows["train"])


def test_manifest_scan_cache_outlived_by_its_audio_or_cut_short(tmp_path, caplog):
    """The scan's cache (`manifest_scan.json`) is keyed on each audio file's size and modification time too: audio
    re-recorded under the same name is scanned again (new statistics), and a cache cut short is scanned again with
    one warning, never a traceback."""
    import logging
    import os

    import soundfile as sf
    from training_helpers import LABELS, write_corpus, write_tone

    path = write_corpus(tmp_path / "corpus", {"train": 2, "dev": 1})
    utterances = load_manifest(path)
    cache = tmp_path / "out" / "manifest_scan.json"
    first = scan_manifest(utterances, list(LABELS), labelled_splits=["dev"], num_workers=1, cache_path=cache)
    clip = next(u for u in utterances if u.split == "train")
    loud = write_tone(Path(clip.audio), 220.0, 1.0) * 3  # re-recorded, louder and longer, under the same name
    sf.write(clip.audio, loud, 16000)
    os.utime(clip.audio, ns=(os.stat(clip.audio).st_atime_ns, os.stat(clip.audio).st_mtime_ns + 10**9))
    second = scan_manifest(utterances, list(LABELS), labelled_splits=["dev"], num_workers=1, cache_path=cache)
    assert second.num_samples[clip.id] == 16000 != first.num_samples[clip.id]
    assert second.waveform_std != first.waveform_std

    cache.write_text(cache.read_text()[: len(cache.read_text()) // 2])  # cut short
    with caplog.at_level(logging.WARNING):
        third = scan_manifest(utterances, list(LABELS), labelled_splits=["dev"], num_workers=1, cache_path=cache)
    assert "cannot be read" in caplog.text and "scanning the manifest again" in caplog.text
    assert third.num_samples == second.num_samples
    assert json.loads(cache.read_text())["scan"]["num_samples"] == third.num_samples  # rewritten whole


def test_manifest_one_unlabelled_test_row_is_reported(tmp_path):
    """A test split with some labels is evaluated: an unlabelled row among them is a bad row, not a reason to turn
    the whole split into a predictions file."""
    from training_helpers import train_main, write_corpus

    path = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1, "test": 1})
    lines = path.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("test_sad_0,"))
    lines[row] = lines[row].replace(",sad,test", ",,test")
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with pytest.raises(
        ManifestError, match=rf"line {row + 1} \(id 'test_sad_0', split 'test'\): empty label in split"
    ):
        train_main(["--manifest", str(path), "--tiny", "--output_dir", str(out), "--max_steps", "1"])
    assert not list(out.glob("predictions_*.csv")) and not list(out.glob("checkpoint-*"))


@pytest.mark.parametrize("content", ['["a.wav", "hi", "sad"]\n', '[{"audio": "a.wav", "text": "hi", "label": "sad"}]'])
def test_manifest_jsonl_line_that_is_not_an_object(tmp_path, content):
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(ManifestError, match="manifest.json.*(line|record) 1.*object"):
        load_manifest(path)


def test_manifest_attribute_values_are_numbers_on_the_0_1_scale(tmp_path):
    write(tmp_path / "ok.wav", noise(0.5))
    rows = ["a,ok.wav,hi,sad,train,high,0.5", "b,ok.wav,hi,sad,train,0.5,5.0", "c,ok.wav,hi,sad,train,0.25,nan"]
    path = manifest(tmp_path, rows, header="id,audio,text,label,split,arousal,valence")
    utterances = load_manifest(path, attribute_names=["arousal", "valence"])
    assert utterances[2].attributes == {"arousal": 0.25, "valence": None} and not utterances[2].problems
    with pytest.raises(ManifestError) as error:
        scan_manifest(utterances, ["sad"], num_workers=1)
    message = str(error.value)
    assert "line 2 (id 'a', split 'train'): arousal='high' is not a number; write a number on the 0-1 scale" in message
    assert (
        "line 3 (id 'b', split 'train'): valence=5.0 is outside the attribute scale 0-1; map the corpus's own"
        in message
    )
    assert "(x - 1) / 6 for 1-7 ratings" in message and "id 'c'" not in message


def test_manifest_attribute_columns_and_missing_values(tmp_path):
    write(tmp_path / "ok.wav", noise(0.5))
    header = "id,audio,text,label,split,Arousal,valence"
    path = manifest(tmp_path, ["a,ok.wav,hi,sad,train,0.1,0.2"], header=header)
    with pytest.raises(ManifestError, match="no 'arousal' column; rename column 'Arousal' to 'arousal'"):
        load_manifest(path, attribute_names=["arousal", "valence"])
    with pytest.raises(ManifestError, match="no 'dominance' column; add it"):
        load_manifest(path, attribute_names=["valence", "dominance"])
    rows = [f"{i},ok.wav,hi,sad,train,{'' if i == 'a' else 0.5},{0.3}" for i in "abcd"]
    path = manifest(tmp_path, rows, header="id,audio,text,label,split,arousal,valence")
    with pytest.warns(UserWarning, match=r"arousal: 1 of 4 row\(s\) of split 'train'"):
        scan = scan_manifest(load_manifest(path, attribute_names=["arousal", "valence"]), ["sad"], num_workers=1)
    assert len(scan.num_samples) == 4  # kept
    rows = [f"{i},ok.wav,hi,sad,train,0.5," for i in "ab"]
    path = manifest(tmp_path, rows, header="id,audio,text,label,split,arousal,dominance")
    with pytest.raises(ManifestError, match="split 'train' has no value of attribute 'dominance' in any row"):
        scan_manifest(load_manifest(path, attribute_names=["arousal", "dominance"]), ["sad"], num_workers=1)


def test_manifest_clip_shorter_than_one_encoder_frame(tmp_path):
    """10-24 ms clips (or start/end segments) are bad rows, by the pipeline's rule (MIN_AUDIO_S): the speech encoder
    cannot make one frame of them. 8 kHz audio is measured after resampling; 25 ms passes."""
    write(tmp_path / "short.wav", noise(0.012))
    write(tmp_path / "short_8k.wav", noise(0.02, rate=8000), rate=8000)
    write(tmp_path / "long.wav", noise(1.0))
    write(tmp_path / "edge.wav", noise(0.025))
    rows = [
        "a,short.wav,hi,sad,train",
        "b,short_8k.wav,hi,sad,train",
        "c,long.wav,hi,sad,train,0.5,0.51",
        "d,edge.wav,hi,sad,train",
        "e,long.wav,hi,happy,train",
    ]
    path = tmp_path / "manifest.csv"
    path.write_text(
        "id,audio,text,label,split,start,end\n" + "\n".join(row + ",," * (row.count(",") == 4) for row in rows)
    )
    message = scan_problems(path)
    assert (
        "line 2 (id 'a', split 'train'): audio '" in message
        and "short.wav' is 12 ms long, shorter than one frame of the speech encoder (25 ms); remove the row or fix "
        "the file"
        in message
    )
    assert "line 3 (id 'b', split 'train'): audio '" in message and "short_8k.wav' is 20 ms long" in message
    assert "line 4 (id 'c', split 'train'): audio '" in message and "long.wav' is 10 ms long" in message
    assert "id 'd'" not in message and "id 'e'" not in message and message.count("ms long") == 3
    # a speech encoder whose CNN needs more: --tiny's, 645 samples (40 ms); train.py passes the model's own
    tiny = min_audio_samples(tiny_crab_config(2).audio_config)
    message = scan_problems(path, min_samples=tiny)
    assert tiny == 645 and "edge.wav' is 25 ms long, shorter than one frame of the speech encoder (40 ms)" in message
    assert "id 'e'" not in message


def test_manifest_segment_end_past_the_end_of_its_file(tmp_path):
    """An `end` more than 0.1 s past its file's end (times in milliseconds, or the wrong file) is a bad row; one
    within 0.1 s (rounded annotation times) is read to the file's end."""
    write(tmp_path / "one_second.wav", noise(1.0))
    rows = [
        "a,one_second.wav,hi,sad,train,0.2,1.05",
        "b,one_second.wav,hi,happy,train,0.2,2.5",
        "c,one_second.wav,hi,sad,train,200,900",
        "d,one_second.wav,hi,happy,train,0.1,0.9",
    ]
    message = scan_problems(manifest(tmp_path, rows, header="id,audio,text,label,split,start,end"))
    assert (
        "line 3 (id 'b', split 'train'): end=2.5s is past the end of audio file '" in message
        and "one_second.wav' (1.00s); segment times are seconds from the file's start: check their unit "
        "(milliseconds?) and that the row names the right file"
        in message
    )
    assert "line 4 (id 'c', split 'train'): start=200.0s is past the end" in message
    assert "id 'a'" not in message and "id 'd'" not in message
    rows = [rows[0], rows[3]]
    scan = scan_manifest(
        load_manifest(manifest(tmp_path, rows, "id,audio,text,label,split,start,end")), ["sad", "happy"], num_workers=1
    )
    assert scan.num_samples == {"a": 0.8 * SR, "d": 0.8 * SR}


@pytest.mark.parametrize("separator, name", [(";", "semicolons"), ("\t", "tabs")])
def test_manifest_csv_with_another_separator(tmp_path, separator, name):
    """A spreadsheet's 'CSV' in a locale that separates with semicolons, or a TSV named .csv."""
    write(tmp_path / "a.wav", noise(0.5))
    path = tmp_path / "manifest.csv"
    path.write_text(
        separator.join(["id", "audio", "text", "label", "split"])
        + "\n"
        + separator.join(["a", "a.wav", "hello, there", "sad", "train"])
        + "\n"
    )
    with pytest.raises(ManifestError) as error:
        load_manifest(path)
    assert str(error.value) == (
        f"manifest '{path}' separates its columns with {name}, not commas (its header reads "
        f"{separator.join(['id', 'audio', 'text', 'label', 'split'])!r}); save it as comma-separated CSV (a "
        "spreadsheet's 'CSV UTF-8 (comma delimited)'), or as JSONL"
    )


def test_manifest_folder_that_is_not_a_saved_dataset(tmp_path):
    """A folder of audio files (or one holding a manifest) passed as --manifest: not a datasets folder."""
    (tmp_path / "wavs").mkdir()
    write(tmp_path / "wavs" / "a.wav", noise(0.5))
    with pytest.raises(
        ManifestError,
        match=r"'.*wavs' is a folder that datasets' save_to_disk did not write .*a "
        r"folder of audio files is not a manifest: docs/training.md, 'Data'\)$",
    ):
        load_manifest(tmp_path / "wavs")
    (tmp_path / "manifest.csv").write_text("audio,text,label\nwavs/a.wav,hi,sad\n")
    with pytest.raises(ManifestError, match=rf"; it holds manifest.csv: pass --manifest {tmp_path / 'manifest.csv'}$"):
        load_manifest(tmp_path)


def test_manifest_audio_paths_written_another_way(tmp_path, monkeypatch):
    """`~/...` and `file://` URLs are read as the paths they name; a Windows path with backslashes, and a name whose
    Unicode is in the other normal form than on disk (macOS writes NFD), are not found, with the spelling that is."""
    import unicodedata
    from urllib.parse import quote

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "clips").mkdir(parents=True)
    (tmp_path / "wavs").mkdir()
    write(tmp_path / "home" / "clips" / "a.wav", noise(0.5))
    write(tmp_path / "wavs" / "b c.wav", noise(0.5))
    write(tmp_path / "wavs" / "d.wav", noise(0.5))
    nfd = unicodedata.normalize("NFD", "é.wav")
    write(tmp_path / "wavs" / nfd, noise(0.5))
    rows = [
        "a,~/clips/a.wav,hi,sad,train",
        f"b,file://{quote(str(tmp_path / 'wavs' / 'b c.wav'))},hi,happy,train",
        "d,wavs\\d.wav,hi,sad,train",
        f"e,wavs/{unicodedata.normalize('NFC', 'é.wav')},hi,sad,train",
    ]
    utterances = load_manifest(manifest(tmp_path, rows))
    assert utterances[0].audio == str(tmp_path / "home" / "clips" / "a.wav")
    assert utterances[1].audio == str(tmp_path / "wavs" / "b c.wav")
    message = scan_problems(manifest(tmp_path, rows))
    assert "id 'a'" not in message and "id 'b'" not in message
    assert f"'{tmp_path / 'wavs' / 'd.wav'}' exists: write the path with '/', not '\\'" in message
    assert "id 'e', split 'train'): audio file" in message
    assert "the file exists with its name's characters in Unicode NFD: write it as the file system does" in message
