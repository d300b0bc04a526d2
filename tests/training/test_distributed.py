"""Cross-device MLCS: two CPU processes (torchrun, gloo) with `mlcs_gather` equal one process on the whole batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlcs_gather_worker import embed, global_batch, make_model

from modeling_crab.losses import mlcs_loss

SUPPORT = Path(__file__).resolve().parents[1] / "support"
ROOT = SUPPORT.parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(SUPPORT), os.environ.get("PYTHONPATH", "")]))
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"))
    return env


@pytest.mark.slow  # two processes joined by gloo
def test_gathered_mlcs_loss_and_gradients_equal_one_process_on_the_concatenated_batch(
    tmp_path, alone_among_process_groups
):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(SUPPORT / "mlcs_gather_worker.py"), str(tmp_path),
    ]  # fmt: skip
    completed = subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]

    model = make_model()
    features, labels = global_batch()
    reference = mlcs_loss(embed(model, features), labels, temperature=0.1)
    reference.backward()

    for rank in ranks:
        assert rank["gathered_labels"] == labels.tolist()
        assert rank["loss"] == pytest.approx(reference.item(), rel=1e-6)
        for name, parameter in model.named_parameters():
            torch.testing.assert_close(
                torch.tensor(rank["grads"][name]), parameter.grad.flatten(), rtol=1e-4, atol=1e-6
            )
    # without the gather each rank would contrast only its own slice: a different loss
    assert all(abs(rank["local_loss"] - reference.item()) > 1e-3 for rank in ranks)


@pytest.mark.slow
def test_train_py_runs_data_parallel_with_mlcs_gather(tmp_path, alone_among_process_groups):
    from training_helpers import write_corpus

    manifest = write_corpus(tmp_path / "corpus", {"train": 2, "dev": 1})
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(ROOT / "train.py"), "--manifest", str(manifest), "--tiny",
        "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1", "--max_duration_s", "0.6", "--mlcs_gather", "True",
        "--learning_rate", "1e-3", "--encoder_learning_rate", "1e-3", "--logging_steps", "1",
        "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
        "--disable_tqdm", "True",
    ]  # fmt: skip
    completed = subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["epoch"] == 1.0  # 8 clips, 2 ranks x 2 per step: one epoch
    assert {"ce_loss", "mlcs_loss"} <= set(state["log_history"][0])
    assert "eval_uar" in json.loads((out / "eval_results.json").read_text())
    assert (out / "inference" / "config.json").is_file()
