"""`--skip_bad_rows`: bad rows are left out and recorded in the output folder; training goes on without them."""

from __future__ import annotations

import csv
import json

from training_helpers import train_main, write_corpus


def test_skip_bad_rows_records_what_it_left_out_and_trains(tmp_path):
    manifest = write_corpus(tmp_path / "corpus", {"train": 2, "dev": 1})
    lines = manifest.read_text().splitlines()
    lines[1] = lines[1].replace("wavs/", "missing/")  # a train row whose audio is gone
    header = lines[0].split(",")
    fields = lines[3].split(",")
    fields[header.index("text")] = ""  # a train row without a transcript
    lines[3] = ",".join(fields)
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(out), "--skip_bad_rows", "True"]
    argv += ["--max_steps", "2", "--max_duration_s", "0.6", "--per_device_train_batch_size", "4"]
    argv += ["--disable_tqdm", "True", "--eval_strategy", "no", "--save_strategy", "no"]
    argv += ["--load_best_model_at_end", "False"]
    train_main(argv)

    with (out / "skipped_rows.csv").open(newline="") as handle:
        skipped = list(csv.DictReader(handle))
    assert len(skipped) == 2
    assert "not found" in skipped[0]["problems"] and "missing/" in skipped[0]["audio"]
    assert "empty transcript" in skipped[1]["problems"]
    results = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= results["eval_uar"] <= 1.0
