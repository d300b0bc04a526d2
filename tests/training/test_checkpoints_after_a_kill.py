"""Crash safety: `train.py` killed with SIGKILL mid-epoch and resumed ends with the weights and metrics of a run
that was never interrupted (model, optimizer, scheduler, RNG and data order all restored from the checkpoint)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import write_corpus

REPO = Path(__file__).resolve().parents[2]
STEPS, SAVE_EVERY = 24, 8  # 4 labels x 5 clips / batch 4 = 5 steps an epoch: checkpoint-8 is mid-epoch


def _train(manifest: Path, out: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, str(REPO / "train.py"), "--manifest", str(manifest), "--tiny", "--output_dir", str(out)]
    argv += ["--max_steps", str(STEPS), "--save_strategy", "steps", "--save_steps", str(SAVE_EVERY)]
    argv += ["--eval_strategy", "steps", "--eval_steps", str(SAVE_EVERY), "--load_best_model_at_end", "False"]
    argv += ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--max_duration_s", "0.6"]
    argv += ["--learning_rate", "2e-3", "--encoder_learning_rate", "1e-3", "--disable_tqdm", "True", "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*argv, *extra], cwd=out.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output.decode()[-3000:]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    manifest = write_corpus(tmp_path / "corpus", {"train": 5, "dev": 1})

    _finish(_train(manifest, tmp_path / "uninterrupted"))

    crashed = tmp_path / "crashed"
    process = _train(manifest, crashed)
    first = crashed / f"checkpoint-{SAVE_EVERY}"
    deadline = time.monotonic() + 600
    while not (first / "trainer_state.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (crashed / "eval_results.json").exists()

    _finish(_train(manifest, crashed, "--resume_from_checkpoint", "last"))

    expected = load_file(tmp_path / "uninterrupted" / "model.safetensors")
    resumed = load_file(crashed / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    metrics = [json.loads((run / "eval_results.json").read_text()) for run in (tmp_path / "uninterrupted", crashed)]
    for key in ("eval_war", "eval_uar", "eval_macro_f1"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], abs=1e-6)
