"""The built-in demo: `python train.py` alone trains a tiny Crab on the synthetic corpus, on the CPU, to the results
README.md documents (it predicts the classes and the attributes jointly)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from training_helpers import train_main
from transformers import pipeline

ROOT = Path(__file__).resolve().parents[1]
# README's names of the demo's results, and their keys in eval_results.json
DOCUMENTED = {"dev UAR": "eval_uar", "test UAR": "test_uar", "dev arousal CCC": "eval_ccc_arousal"}
MARGIN = 0.05  # README: a run falls within this of the seeds' range (one dev or test clip is 0.02 of UAR)


def documented_ranges() -> dict[str, tuple[float, float]]:
    """{eval_results key: (low, high)}: the ranges README's demo section gives over seeds (`dev UAR 0.77-0.85`)."""
    section = re.search(r"### The demo\n(.*?)\n## ", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    ranges = {}
    for name, key in DOCUMENTED.items():
        low, high = re.search(rf"{name} (\d\.\d+)-(\d\.\d+)", section.replace("\n", " ")).groups()
        ranges[key] = (float(low), float(high))
    return ranges


def test_the_readme_gives_each_result_as_a_range():
    ranges = documented_ranges()
    assert ranges.keys() == set(DOCUMENTED.values())
    assert all(0.25 < low <= high <= 1.0 for low, high in ranges.values())  # above chance (UAR) and a constant (CCC)


@pytest.mark.slow  # the demo's whole training: 10 epochs of 320 clips, some 80 s on 2 cores
def test_the_demo_learns_the_synthetic_corpus(tmp_path):
    """The demo's results fall in README's documented ranges (the seeds' spread, widened by `MARGIN`)."""
    out = tmp_path / "crab_demo"
    results = train_main(["--output_dir", str(out), "--disable_tqdm", "True"])
    saved = json.loads((out / "eval_results.json").read_text())
    for key, (low, high) in documented_ranges().items():
        assert low - MARGIN <= saved[key] <= high + MARGIN, (key, saved[key], (low, high))
    assert saved["eval_uar"] == results["eval_uar"]
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
    import shlex

    from modeling_crab.recipes.demo import generate_demo_corpus
    from modeling_crab.training.arguments import preset_defaults

    demo_dir = preset_defaults(["demo"])["output_dir"]
    manifest = generate_demo_corpus(tmp_path / "demo_corpus")
    texts = {row["audio"]: row["text"] for row in csv.DictReader(manifest.open(newline=""))}
    documented = {}
    for doc in ("README.md", "docs/training.md"):
        for block in re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                for i, word in enumerate(words):
                    if word.startswith(f"{demo_dir}/demo_corpus/wavs/"):
                        following = words[i + 1 : i + 3]
                        text = following[1] if following[:1] == ["--text"] else following[0]
                        documented[word.removeprefix(f"{demo_dir}/demo_corpus/")] = text
    assert documented
    assert {audio: texts.get(audio) for audio in documented} == documented
