"""Bad input to resumed and interrupted training runs: each case is handled as docs/bad_input.md says or stopped by an
error that names the input and the fix. Every test here is a row of that table, under the same name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from training_helpers import run_argv

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # many small forward passes (conftest)


# ---- Training runs (train.py): resuming and interrupted saves
@pytest.mark.parametrize(
    "change, named",
    [
        (
            ["--labels", "sad,neutral,happy,angry"],
            r"labels .*\['angry', 'happy', 'neutral', 'sad'\].*\['sad', 'neutral'",
        ),
        (["--labels", "angry,happy,neutral,sad,calm"], r"labels .*'sad'\], this run has \[.*'calm'\]"),
        (["--mlcs_weight", "0"], r"CSL legs .*checkpoint has True, this run has False"),
        (["--mask_padding", "false"], r"--mask_padding: the checkpoint has True, this run has False"),
        (["--mlcs_taps", "fusion"], r"--mlcs_taps: the checkpoint has \[.*\], this run has \['fusion'\]"),
        (["--freeze_feature_encoder", "true"], r"trainable parameters .*encoders: \d+.*this run has .*encoders: \d+"),
        (["--normalization", "utterance"], r"--normalization: the checkpoint has 'global', this run has 'utterance'"),
        (["--gain_db", "3"], r"waveform augmentation .*: the checkpoint has None, this run has \{.*'gain_db': 3.0"),
        (["--mask_time_prob", "0.2"], r"SpecAugment --mask_time_prob: the checkpoint has 0.05, this run has 0.2"),
    ],
)
def test_resume_of_a_run_that_means_something_else(resumable_run, tmp_path, change, named):
    from training_helpers import train_main

    from modeling_crab.training.checkpoints import CheckpointError

    manifest, run = resumable_run
    checkpoint = run / "checkpoint-2"
    out = tmp_path / "resumed"
    with pytest.raises(CheckpointError, match=named) as error:
        train_main(run_argv(manifest, out, "--resume_from_checkpoint", str(checkpoint), *change))
    assert f"--resume_from_checkpoint '{checkpoint}' was trained for something else" in str(error.value)
    assert not out.exists() or not list(out.glob("checkpoint-*"))  # refused before the first step


def test_resume_after_an_interrupted_save(resumable_run, tmp_path, monkeypatch, caplog):
    """A run killed while writing checkpoint-3 leaves no checkpoint-3; a broken checkpoint-3 as older versions left
    it (weights cut short) is skipped with a warning; `--resume_from_checkpoint last` resumes from checkpoint-2 and
    ends with the uninterrupted run's weights."""
    import shutil

    from safetensors.torch import load_file
    from training_helpers import train_main

    from modeling_crab.training import CrabTrainer

    manifest, uninterrupted = resumable_run
    out = tmp_path / "run"
    save_rng_state = CrabTrainer._save_rng_state

    def killed_at_step_3(self, output_dir):
        if self.state.global_step == 3:
            raise KeyboardInterrupt  # the kill, halfway through writing checkpoint-3
        save_rng_state(self, output_dir)

    monkeypatch.setattr(CrabTrainer, "_save_rng_state", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_main(run_argv(manifest, out))
    monkeypatch.undo()
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]

    shutil.copytree(out / "checkpoint-2", out / "checkpoint-3")  # what a kill left before checkpoints were staged
    weights = out / "checkpoint-3" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with caplog.at_level("WARNING"):
        train_main(run_argv(manifest, out, "--resume_from_checkpoint", "last"))
    assert "skipping the incomplete checkpoint" in caplog.text and "model.safetensors is truncated" in caplog.text
    assert "waveform statistics" not in caplog.text  # the same audio: the checkpoint's statistics are the scan's
    expected, resumed = load_file(uninterrupted / "model.safetensors"), load_file(out / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=0)


def test_best_checkpoint_and_its_metrics_survive_rotation_and_kills(tmp_path, monkeypatch):
    """With save_total_limit=1 the best checkpoint stays next to the newest, its trainer_state.json holding its
    metrics; a kill during a later save touches neither."""
    from training_helpers import train_main, write_corpus

    from modeling_crab.training import CrabTrainer
    from modeling_crab.training.checkpoints import checkpoint_problem

    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    out = tmp_path / "run"
    argv = run_argv(manifest, out, "--save_total_limit", "1", "--eval_strategy", "steps", "--eval_steps", "1")
    argv += ["--metric_for_best_model", "loss", "--greater_is_better", "False"]
    save_rng_state = CrabTrainer._save_rng_state

    def killed_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise KeyboardInterrupt
        save_rng_state(self, output_dir)

    monkeypatch.setattr(CrabTrainer, "_save_rng_state", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train_main(argv)
    kept = sorted(out.glob("checkpoint-*"))
    assert 1 <= len(kept) <= 2 and all(checkpoint_problem(path) is None for path in kept)
    state = json.loads((kept[-1] / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"])
    assert best.parent == out and best.is_dir() and checkpoint_problem(best) is None
    best_state = json.loads((best / "trainer_state.json").read_text())
    assert any("eval_loss" in entry for entry in best_state["log_history"])


def test_a_new_run_into_a_folder_with_an_earlier_runs_checkpoints(resumable_run, tmp_path):
    """A run that does not resume stops before it reads anything when --output_dir holds another run's complete
    checkpoints (their rotation would mix the runs, and its results would overwrite the earlier ones); a file as
    --output_dir stops it too. Incomplete checkpoints alone (nothing to resume) do not, nor does resuming."""
    import shutil

    from training_helpers import train_main

    from modeling_crab.training.checkpoints import CheckpointError

    manifest, finished = resumable_run
    earlier = Path(shutil.copytree(finished, tmp_path / "earlier"))
    before = {path.name: path.stat().st_mtime_ns for path in earlier.rglob("*")}
    with pytest.raises(CheckpointError) as error:
        train_main(run_argv(manifest, earlier))
    assert str(error.value) == (
        f"--output_dir '{earlier}' holds the checkpoints of an earlier run (checkpoint-1, checkpoint-2, checkpoint-3, "
        "checkpoint-4); continue it with --resume_from_checkpoint last, or pass another --output_dir (or delete that "
        "folder to start over there)"
    )
    assert {path.name: path.stat().st_mtime_ns for path in earlier.rglob("*")} == before  # nothing touched
    (tmp_path / "a_file").write_text("")
    with pytest.raises(CheckpointError, match=r"--output_dir '.*a_file' is a file; pass a folder"):
        train_main(run_argv(manifest, tmp_path / "a_file"))
    incomplete = tmp_path / "incomplete" / "checkpoint-7"
    incomplete.mkdir(parents=True)  # no weights, no trainer state: left by a kill, nothing to resume
    train_main(run_argv(manifest, tmp_path / "incomplete", "--max_steps", "1"))
    assert (tmp_path / "incomplete" / "checkpoint-1").is_dir()


def test_a_second_run_into_an_output_folder_in_use(tmp_path):
    """Two runs into one --output_dir: the second stops at once naming the first (its process and command), before
    anything is read or written; a lock left by a run that is no longer alive (killed) is taken over and released."""
    import os
    import socket
    import subprocess
    import sys

    from training_helpers import train_main

    from modeling_crab.training.checkpoints import LOCK_FILE, CheckpointError, RunLock

    out = tmp_path / "out"
    with RunLock(out):  # a run holds the folder: this process
        with pytest.raises(CheckpointError, match=rf"'{out}' is in use by another run \(pid {os.getpid()} on "):
            train_main(["--manifest", str(tmp_path / "missing.csv"), "--tiny", "--output_dir", str(out)])
    assert not (out / LOCK_FILE).exists()  # released at the end of the run that held it

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {"pid": int(ended.stdout), "host": socket.gethostname(), "started": "", "command": "train.py (killed)"}
    (out / LOCK_FILE).write_text(json.dumps(stale))
    with RunLock(out) as lock:  # taken over
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid() and lock.held
    other_host = {**stale, "host": "another-host", "pid": 1}
    (out / LOCK_FILE).write_text(json.dumps(other_host))
    with pytest.raises(CheckpointError, match=r"pid 1 on another-host.*delete .*\.crab_run\.lock"):
        RunLock(out).__enter__()


@pytest.mark.parametrize("how", ["copied", "moved"])
def test_a_run_folder_copied_or_moved_resumes_from_its_own_best_checkpoint(tmp_path, how):
    """trainer_state.json names the best checkpoint by its absolute path: a copied run folder would load its "best"
    from the original, a moved one forget it. Resuming re-points it to the checkpoint of the same name."""
    import shutil

    from modeling_crab.training.checkpoints import relocate_best_checkpoint

    original = tmp_path / "run"
    for step in (2, 4):
        folder = original / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        state = {"best_model_checkpoint": str(original / "checkpoint-2"), "best_metric": 0.5, "global_step": step}
        (folder / "trainer_state.json").write_text(json.dumps(state))
    there = tmp_path / "elsewhere"
    (shutil.copytree if how == "copied" else shutil.move)(original, there)
    relocate_best_checkpoint(there / "checkpoint-4", there)
    state = json.loads((there / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(there / "checkpoint-2") and state["best_metric"] == 0.5
    relocate_best_checkpoint(there / "checkpoint-4", there)  # already its own: unchanged
    assert json.loads((there / "checkpoint-4" / "trainer_state.json").read_text()) == state


def test_a_checkpoint_with_its_optimizer_state_cut_short_is_skipped(resumable_run, tmp_path, caplog):
    """A checkpoint whose optimizer (or scheduler, RNG) state is cut short is incomplete like one with cut weights:
    `--resume_from_checkpoint last` skips it with a warning naming the file and takes the one before, instead of a
    torch unpickling traceback."""
    import shutil

    from modeling_crab.training.checkpoints import checkpoint_problem, find_checkpoint

    _, finished = resumable_run
    out = tmp_path / "run"
    for step in (3, 4):
        shutil.copytree(finished / f"checkpoint-{step}", out / f"checkpoint-{step}")
    optimizer = out / "checkpoint-4" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    assert "optimizer.pt is cut short" in checkpoint_problem(out / "checkpoint-4")
    with caplog.at_level("WARNING"):
        assert Path(find_checkpoint(out)).name == "checkpoint-3"
    assert "optimizer.pt is cut short" in caplog.text


class _Payload:
    """Unpickling this creates `marker`: proof that a checkpoint's pickle was loaded without `weights_only`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.mark.parametrize("planted", ["optimizer.pt", "rng_state.pth", "pytorch_model.bin"])
def test_a_checkpoint_file_that_would_run_code_is_refused(resumable_run, tmp_path, planted):
    """A checkpoint's optimizer or RNG state, or the weights of the model a run starts from (`--model_name_or_path`),
    replaced by a pickle that runs code (a whole torch file, not cut short): refused without running it, in one line
    naming the file and the way out; never torch's advice to load it with `weights_only=False`."""
    import shutil

    from training_helpers import train_main

    from modeling_crab.training.failures import failure_message

    manifest, finished = resumable_run
    out, marker = tmp_path / "run", tmp_path / "unpickled"
    if planted == "pytorch_model.bin":  # a model to fine-tune whose weights are that pickle
        start = Path(shutil.copytree(finished / "inference", tmp_path / "start"))
        (start / "model.safetensors").unlink()
        argv, folder, fix = run_argv(manifest, out, "--model_name_or_path", str(start)), start, "save_pretrained"
    else:
        for step in (3, 4):
            shutil.copytree(finished / f"checkpoint-{step}", out / f"checkpoint-{step}")
        argv = run_argv(manifest, out, "--resume_from_checkpoint", "last", "--max_steps", "5")
        folder = out / "checkpoint-4"
        fix = f"delete '{folder}' and resume from the checkpoint before it"
    torch.save({"state": _Payload(marker)}, folder / planted)
    with pytest.raises(Exception) as stopped:
        train_main(argv)
    line, status = failure_message(stopped.value, str(out))
    assert status == 2 and not marker.exists()
    assert line.startswith(f"error: '{folder / planted}' is a pickle holding Python objects (exec)"), line
    assert fix in line and "weights_only" not in line


def test_resume_after_the_training_audio_changed(resumable_run, tmp_path, caplog):
    """Training audio re-recorded (or edited) between a run and its resume: the resumed run keeps the waveform
    statistics its checkpoint was trained with, in training and in its export, and warns that the audio changed."""
    import shutil

    import soundfile as sf
    from training_helpers import train_main

    manifest, finished = resumable_run
    corpus = Path(shutil.copytree(manifest.parent, tmp_path / "corpus"))
    out = tmp_path / "run"
    shutil.copytree(finished / "checkpoint-4", out / "checkpoint-4")
    saved = json.loads((out / "checkpoint-4" / "processor_config.json").read_text())["feature_extractor"]
    louder = next((corpus / "wavs").glob("train_*.wav"))
    audio, rate = sf.read(louder)
    sf.write(louder, audio * 3, rate)
    with caplog.at_level("WARNING"):
        train_main(run_argv(corpus / "manifest.csv", out, "--resume_from_checkpoint", "last", "--max_steps", "5"))
    assert "differ from those" in caplog.text and "the audio changed since the run began" in caplog.text
    exported = json.loads((out / "inference" / "processor_config.json").read_text())["feature_extractor"]
    assert (exported["waveform_mean"], exported["waveform_std"]) == (saved["waveform_mean"], saved["waveform_std"])
    scanned = json.loads((out / "manifest_scan.json").read_text())["scan"]
    assert scanned["waveform_std"] != pytest.approx(saved["waveform_std"], rel=1e-3)  # the audio's own did change
