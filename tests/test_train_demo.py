"""The built-in demo: `python train.py` alone trains a tiny Crab on the synthetic corpus, on the CPU, to dev UAR >= 0.6
and dev arousal CCC >= 0.6 (it predicts the classes and the attributes jointly)."""

from __future__ import annotations

import json

import pytest
from training_helpers import train_main
from transformers import pipeline


@pytest.mark.slow
def test_the_demo_learns_the_synthetic_corpus(tmp_path):
    out = tmp_path / "crab_demo"
    results = train_main(["--output_dir", str(out), "--disable_tqdm", "True"])
    assert results["eval_uar"] >= 0.6  # chance: 0.25
    assert results["eval_ccc_arousal"] >= 0.6  # a constant prediction: 0
    assert json.loads((out / "eval_results.json").read_text())["eval_uar"] == results["eval_uar"]
    wav = sorted((out / "demo_corpus" / "wavs").glob("*.wav"))[0]
    pipe = pipeline("speech-emotion-recognition", model=str(out / "inference"), trust_remote_code=True, device="cpu")
    answer = pipe(str(wav), text="I am so happy for you!")
    ranked, attributes = answer["labels"], answer["attributes"]
    assert len(ranked) == 4 and ranked[0]["score"] >= ranked[-1]["score"]
    assert list(attributes) == ["arousal", "valence", "dominance"]


@pytest.mark.slow
def test_the_documented_demo_clips_exist_with_their_transcripts(tmp_path):
    """The clips the docs name after the demo (crab predict) are in the demo corpus, with the transcripts the
    docs pass for them."""
    import csv
    import re
    import shlex
    from pathlib import Path

    from modeling_crab.recipes.demo import generate_demo_corpus
    from modeling_crab.training.arguments import preset_defaults

    demo_dir = preset_defaults(["demo"])["output_dir"]
    manifest = generate_demo_corpus(tmp_path / "demo_corpus")
    texts = {row["audio"]: row["text"] for row in csv.DictReader(manifest.open(newline=""))}
    root = Path(__file__).resolve().parents[1]
    documented = {}
    for doc in ("README.md", "docs/training.md"):
        for block in re.findall(r"```bash\n(.*?)```", (root / doc).read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                for i, word in enumerate(words):
                    if word.startswith(f"{demo_dir}/demo_corpus/wavs/"):
                        following = words[i + 1 : i + 3]
                        text = following[1] if following[:1] == ["--text"] else following[0]
                        documented[word.removeprefix(f"{demo_dir}/demo_corpus/")] = text
    assert documented
    assert {audio: texts.get(audio) for audio in documented} == documented
