"""Every command in the fenced `bash` blocks of README.md, docs/ and configs/README.md runs as written, with the
corpora replaced by small fake ones (the recipe tests' release trees, `write_corpus` manifests) and, for training,
tiny encoders and one step. A command added to the docs without a way to run it here fails `test_every_command_is_run`.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from training_helpers import train_main, write_corpus, write_tone

from modeling_crab.training.arguments import parse_arguments, preset_defaults

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")), "configs/README.md"]
# appended to every train.py command: tiny random encoders (nothing from the Hub), one optimizer step
FAST = ["--tiny", "--max_steps", "1", "--disable_tqdm", "True", "--dataloader_num_workers", "0"]
# where the docs point at the corpora as released
RELEASE_TREES = {"/data/IEMOCAP_full_release": "iemocap", "/data/MELD.Raw": "meld", "/data/MSP-PODCAST": "msp"}
NOT_RUN_HERE = {  # what these set up is the test environment itself
    "bash scripts/demo.sh": "creates .venv and installs from PyPI; its steps (python train.py, crab predict) run here",
    "bash scripts/test.sh": "creates .venv and runs this suite: CI's entry point",
    "source .venv/bin/activate": "activates the environment this suite runs in",
}


def documented_commands() -> list[tuple[str, str]]:
    """(document, command) for every line of every fenced bash block, continuation lines joined, comments cut."""
    commands = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = shlex.join(shlex.split(line, comments=True))
                if command and command not in {known for _, known in commands}:  # once, where it first appears
                    commands.append((doc, command))
    return commands


COMMANDS = documented_commands()


def _argv(command: str, prefix: str) -> list[str]:
    return shlex.split(command)[len(shlex.split(prefix)) :]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A clone-like folder: configs/ and train.py, and fake corpora where the configs expect the real ones."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copy(ROOT / "train.py", tmp_path / "train.py")
    for name in ("iemocap", "meld", "msp_podcast"):  # the IEMOCAP and MSP-Podcast recipes write attribute columns
        write_corpus(
            tmp_path / "data" / name, {"train": 2, "dev": 1, "test": 1, "test1": 1}, attributes=name != "meld"
        )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _release_tree(kind: str, root: Path) -> Path:
    import fake_corpora

    from modeling_crab.recipes import meld

    if kind == "iemocap":
        tree = fake_corpora.make_iemocap(root / "IEMOCAP_full_release")
        for clip in tree.rglob("*.wav"):  # 1 s instead of 0.1 s: enough frames for WavLM's time masking in training
            write_tone(clip, 200.0, 1.0)
        return tree
    if kind == "msp":
        return fake_corpora.make_msp(root / "MSP-PODCAST")
    if not fake_corpora.HAS_FFMPEG:
        pytest.skip("the MELD converter needs ffmpeg")
    meld_root = fake_corpora.make_meld_csvs(root / "MELD.Raw")
    clips = {"train": ["dia0_utt0", "dia0_utt1", "dia1_utt0"], "dev": ["dia0_utt0"], "test": ["dia0_utt0"]}
    for split, names in clips.items():
        for name in names:
            fake_corpora.make_clip(meld_root / meld.SPLITS[split][1] / f"{name}.mp4", 0.5)
    return meld_root


def run_train(argv: list[str], workdir: Path):
    if "--help" in argv:
        with pytest.raises(SystemExit) as exit_info:
            parse_arguments(argv)
        assert exit_info.value.code in (0, None)
        return None
    if "--resume_from_checkpoint" in argv:  # a first run leaves the checkpoint to resume from
        first = argv[: argv.index("--resume_from_checkpoint")]
        train_main([*first, *FAST])
        return train_main([*argv, *FAST[:1], "--max_steps", "2", *FAST[3:]])
    if "--manifest" in argv and not Path(argv[argv.index("--manifest") + 1]).exists():  # "your own recordings"
        write_corpus(Path(argv[argv.index("--manifest") + 1]).parent, {"train": 2, "dev": 1})
    results = train_main([*argv, *FAST])
    headline = "eval_ccc_mean" if "--attributes_only" in argv else "eval_uar"  # no classes: the attributes' score
    assert -1.0 <= results[headline] <= 1.0
    return results


def run_module(command: str, workdir: Path) -> None:
    module = shlex.split(command)[2]
    argv = _argv(command, f"python -m {module}")
    for placeholder, kind in RELEASE_TREES.items():
        if placeholder in argv:
            argv[argv.index(placeholder)] = str(_release_tree(kind, workdir / "releases"))
    if module == "modeling_crab.recipes.msp_podcast" and "submission" in argv:
        from modeling_crab.recipes import msp_podcast

        out = Path(argv[argv.index("--manifest") + 1]).parent
        assert msp_podcast.main(["--root", str(_release_tree("msp", workdir / "releases")), "--out", str(out)]) == 0
        Path(argv[argv.index("--predictions") + 1]).write_text(
            "id,prediction\nMSP-PODCAST_0005_0001,fear\nMSP-PODCAST_test3_0002,disgust\n"
        )
    if "--asr-dir" in argv:
        asr_dir = Path(argv[argv.index("--asr-dir") + 1])
        asr_dir.mkdir(parents=True, exist_ok=True)
        (asr_dir / "MSP-PODCAST_0001_0001.txt").write_text("an automatic transcript")
    if module == "modeling_crab.recipes.iemocap_loso":
        from modeling_crab.recipes import iemocap

        release = str(_release_tree("iemocap", workdir / "releases"))
        assert iemocap.main(["--root", release, "--out", str(Path(argv[argv.index("--manifest") + 1]).parent)]) == 0
        argv += ["--folds", "1,2", "--", *FAST]  # two of the five trainings: the driver, its runs and the aggregation
    import importlib

    code = importlib.import_module(module).main(argv)
    assert code in (0, None), command


# how the docs launch `crab` on every GPU of every node; run here as the one process they start on each
LAUNCHERS = ("torchrun ", "accelerate launch ")


def run_crab(command: str, workdir: Path) -> None:
    """`crab predict FILE --text ... --model DIR`: tiny export at DIR (with its ONNX graphs for `--backend onnx*`),
    tones at the FILEs. `crab export-onnx DIR ...`: tiny export at DIR. `crab annotate INPUT --model DIR ...` (or a
    launcher's `-m modeling_crab.cli annotate ...`): tiny export at DIR, a `write_corpus` manifest or a folder of
    tones at INPUT, recordings without a transcript transcribed by a stand-in speech recognizer."""
    from modeling_crab.cli import main

    if command.startswith(LAUNCHERS):
        words = shlex.split(command)
        argv = words[words.index("modeling_crab.cli") + 1 :]
    else:
        argv = _argv(command, "crab")
    if argv[0] == "annotate":
        run_annotate(argv, workdir)
        return
    if argv[0] == "export-onnx":
        _tiny_export(workdir / argv[1])
        assert main(argv) == 0, command
        return
    model_dir = workdir / argv[argv.index("--model") + 1]
    _tiny_export(model_dir)
    if "--backend" in argv and argv[argv.index("--backend") + 1].startswith("onnx"):
        assert main(["export-onnx", str(model_dir)]) == 0
    for arg in argv:
        if arg.endswith(".wav"):
            write_tone(workdir / arg, 200.0, 1.0)
    assert main([*argv, "--device", "cpu"]) == 0, command


def _stand_in_recognizer(patch: pytest.MonkeyPatch) -> None:
    """transformers' speech recognition pipeline replaced by a stand-in that needs no download."""
    import transformers

    real = transformers.pipeline

    def pipeline(task, *args, **kwargs):
        if task == "automatic-speech-recognition":
            return lambda audio, **options: {"text": "i can't believe you did that"}
        return real(task, *args, **kwargs)

    patch.setattr(transformers, "pipeline", pipeline)


def run_annotate(argv: list[str], workdir: Path) -> None:
    from modeling_crab.cli import main

    _tiny_export(workdir / argv[argv.index("--model") + 1])
    source = workdir / argv[1]
    if source.suffix == ".csv":
        write_corpus(source.parent, {"train": 2, "dev": 1})
    else:
        for i in range(3):
            write_tone(source / f"clip{i}.wav", 200.0 + 50 * i, 0.5 + i)
    with pytest.MonkeyPatch.context() as patch:
        _stand_in_recognizer(patch)
        assert main([*argv, "--device", "cpu"]) == 0, argv
    assert (workdir / argv[argv.index("--output") + 1]).is_file()


def _tiny_export(folder: Path) -> None:
    import torch
    from transformers import Wav2Vec2FeatureExtractor

    from modeling_crab import CrabForEmotionClassification, CrabProcessor, export_for_inference
    from modeling_crab.training import build_tiny_tokenizer, tiny_crab_config

    tokenizer = build_tiny_tokenizer(["i can't believe you did that"], vocab_size=400)
    torch.manual_seed(0)  # one model for every command: its ONNX graphs are made once (conftest.py)
    model = CrabForEmotionClassification(tiny_crab_config(4, vocab_size=len(tokenizer))).eval()
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    export_for_inference(model, CrabProcessor(extractor, tokenizer), folder)


def run_distill(command: str, workdir: Path) -> None:
    """`crab distill TEACHER ...`: a tiny teacher of `write_corpus`' classes and attributes at TEACHER, small corpora at
    the manifests, one step (`FAST`)."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor

    from modeling_crab import CrabForEmotionClassification, CrabProcessor, export_for_inference
    from modeling_crab.cli import main
    from modeling_crab.training import build_tiny_tokenizer, tiny_crab_config

    argv = _argv(command, "crab")
    tokenizer = build_tiny_tokenizer(["i can't believe you did that"], vocab_size=400)
    labels = dict(enumerate(("angry", "happy", "neutral", "sad")))
    attributes = ["arousal", "valence", "dominance"]
    config = tiny_crab_config(4, labels, vocab_size=len(tokenizer), attribute_names=attributes)
    torch.manual_seed(0)
    export_for_inference(
        CrabForEmotionClassification(config).eval(),
        CrabProcessor(Wav2Vec2FeatureExtractor(return_attention_mask=True), tokenizer),
        workdir / argv[1],
    )
    folders = []  # of recordings without transcripts
    for flag in ("--manifest", "--unlabelled_manifest"):
        for source in argv[argv.index(flag) + 1 :] if flag in argv else []:
            if source.startswith("--"):
                break
            if source.endswith(".csv"):
                write_corpus(Path(source).parent, {"train": 2, "dev": 1}, attributes=True)
            else:
                folders += [source] * 3
                for i in range(3):
                    write_tone(Path(source) / f"call{i}.wav", 200.0 + 50 * i, 0.5 + i)
    from modeling_crab.recipes import demo

    generate = demo.generate_demo_corpus
    from modeling_crab.training import run

    check = run.check_model_sources
    with pytest.MonkeyPatch.context() as patch:  # without --manifest: a demo corpus of 12 clips per class, not 80
        patch.setattr(demo, "generate_demo_corpus", lambda out_dir: generate(out_dir, n_per_class=12))
        _stand_in_recognizer(patch)  # the default Whisper, which the Hub check would look for, stood in for
        patch.setattr(run, "check_model_sources", lambda sources, fixes=None: check(
            [(flag, source) for flag, source in sources if flag != "--asr_model"], fixes
        ))  # fmt: skip
        assert main([*argv, *FAST]) == 0, command
    if folders:  # each recording transcribed once
        transcripts = Path(argv[argv.index("--output_dir") + 1]) / "unlabelled_transcripts.jsonl"
        assert len(transcripts.read_text().splitlines()) == len(folders)


def _kind(command: str) -> str:
    if command in NOT_RUN_HERE:
        return "not run here"
    if command.startswith("crab distill "):
        return "distill"
    if command.startswith(("python train.py", "accelerate launch train.py")):
        return "train"
    if command.startswith("python -m modeling_crab."):
        return "module"
    if command.startswith(("crab predict ", "crab export-onnx ", "crab annotate ")):
        return "crab"
    if command.startswith(LAUNCHERS) and "-m modeling_crab.cli " in command:
        return "crab"
    return "unknown"


def _is_slow(command: str) -> bool:
    """Training commands (10-60 s each on 2 cores: corpus, tiny model, a step, export), ONNX exports (40 s) and the
    LOSO driver run in the full suite (`bash scripts/test.sh`); `--help` and the other modules in the fast one."""
    exports_onnx = _kind(command) == "crab" and ("export-onnx" in command or "--backend onnx" in command)
    trains = _kind(command) == "distill" or (_kind(command) == "train" and "--help" not in command)
    return trains or "iemocap_loso" in command or exports_onnx


def test_every_command_is_run():
    assert COMMANDS, "no fenced bash blocks found"
    assert [command for _, command in COMMANDS if _kind(command) == "unknown"] == []


@pytest.mark.parametrize(
    "doc, command",
    [
        pytest.param(doc, command, marks=[pytest.mark.slow] if _is_slow(command) else [])
        for doc, command in COMMANDS
        if _kind(command) != "not run here"
    ],
    ids=[f"{doc}:{command[:70]}" for doc, command in COMMANDS if _kind(command) != "not run here"],
)
def test_documented_command_runs(doc, command, workdir):
    if _kind(command) == "distill":
        run_distill(command, workdir)
        return
    if _kind(command) == "module":
        run_module(command, workdir)
        return
    if _kind(command) == "crab":
        run_crab(command, workdir)
        return
    prefix = "accelerate launch train.py" if command.startswith("accelerate") else "python train.py"
    run_train(_argv(command, prefix), workdir)


def test_commands_after_the_demo_use_its_output_folder():
    """One demo folder: scripts/demo.sh's default, a bare `python train.py`'s (and so `--help`'s), and every path
    the docs give into a trained model (an inference export, the demo corpus) is the demo's or that of a run the docs
    train themselves (`--output_dir` of a documented train.py command)."""
    demo_dir = preset_defaults(["demo"])["output_dir"]
    assert f"out=${{1:-{demo_dir}}}" in (ROOT / "scripts" / "demo.sh").read_text()
    trained = {demo_dir}
    for _, command in COMMANDS:
        words = shlex.split(command)
        if _kind(command) in ("train", "distill") and "--output_dir" in words:
            trained.add(words[words.index("--output_dir") + 1])
    paths = [
        arg for _, command in COMMANDS for arg in shlex.split(command) if "/inference" in arg or "demo_corpus" in arg
    ]
    assert any(path.startswith(f"{demo_dir}/") for path in paths), paths
    assert [path for path in paths if not any(path.startswith(f"{run}/") for run in trained)] == []
    assert all(path.startswith(f"{demo_dir}/") for path in paths if "demo_corpus" in path), paths


def test_the_readme_checkpoint_snippet_runs_quietly(tmp_path):
    """README "Using a Crab checkpoint" runs as written on an export, with what it says it needs, and prints only its
    result: no warning (gradients outside no_grad), no LOAD REPORT (nor from `AutoModel`, the embedder it names)."""
    import os
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"## Using a Crab checkpoint.*?```python\n(.*?)```", readme, flags=re.S).group(1)
    checkpoint, wav = tmp_path / "export", tmp_path / "utterance.wav"
    _tiny_export(checkpoint)
    write_tone(wav, 200.0, 1.0)
    code = f"CHECKPOINT = {str(checkpoint)!r}\n" + snippet.replace('"utterance.wav"', repr(str(wav)))
    code += "from transformers import AutoModel\nAutoModel.from_pretrained(CHECKPOINT, trust_remote_code=True)\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "warning"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines() if "Loading weights" not in line and line.strip()]
    assert noise == [], noise
    assert done.stdout.startswith("{'") and done.stdout.count("\n") == 1


def test_every_row_of_the_bad_input_table_is_a_test():
    """docs/bad_input.md names one test per row; the tests of bad input live beside each module's tests, in
    `*_bad_input.py`, and each of them is a row of the table."""
    table = (ROOT / "docs" / "bad_input.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| input")]
    named = [re.findall(r"`(test_\w+)`", row) for row in rows]
    assert all(len(names) == 1 for names in named), [row for row, names in zip(rows, named) if len(names) != 1]
    documented = {names[0] for names in named}
    files = sorted((ROOT / "tests").rglob("*_bad_input.py"))
    defined = {name for path in files for name in re.findall(r"^def (test_\w+)", path.read_text(), re.M)}
    assert len(files) >= 8 and documented == defined, (documented - defined, defined - documented)
