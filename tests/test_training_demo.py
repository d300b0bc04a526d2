"""The built-in demo: `python train.py` alone trains a tiny Crab on the synthetic corpus, on the CPU, to dev UAR >= 0.6."""

from __future__ import annotations

import json

import pytest
from training_helpers import load_train_script

from modeling_crab.training import classify_file


@pytest.mark.slow
def test_the_demo_learns_the_synthetic_corpus(tmp_path):
    out = tmp_path / "crab_demo"
    results = load_train_script().main(["--output_dir", str(out), "--disable_tqdm", "True"])
    assert results["eval_uar"] >= 0.6  # chance: 0.25
    assert json.loads((out / "eval_results.json").read_text())["eval_uar"] == results["eval_uar"]
    wav = sorted((out / "demo_corpus" / "wavs").glob("*.wav"))[0]
    ranked = classify_file(out / "inference", wav, "I am so happy for you!")
    assert len(ranked) == 4 and ranked[0]["score"] >= ranked[-1]["score"]
