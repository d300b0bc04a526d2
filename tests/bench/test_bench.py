"""The benchmark scripts run end to end at tiny size and their fast paths pass the same-function check.

Nothing here is timed: the numbers live in bench/RESULTS.md. These runs only keep the scripts working.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# each run starts the benchmark scripts in subprocesses (1-2 minutes on 2 cores): `bash scripts/test.sh` runs them
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _bench_process(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args, "--results", ""],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
    )


def _run_bench(script: str, *args: str) -> str:
    result = _bench_process(script, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _table_rows(output: str) -> dict[str, list[str]]:
    lines = [line for line in output.splitlines() if line.startswith("| ") and not line.startswith("| setup")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


def test_bench_train_compares_release_fast_and_the_encoder_cache():
    setups = "release,fast,fast+cached,fast+bf16+gru32+cnn32"
    output = _run_bench("bench_train.py", "--size", "tiny", "--utterances", "8", "--warmup", "1", "--setups", setups)
    assert set(_table_rows(output)) == {"release", "fast", "fast+cached", "fast+bf16+gru32+cnn32"}
    checks = [line for line in output.splitlines() if " vs reference: " in line]
    assert len(checks) == 3 and all("-> same function" in line for line in checks), checks


def test_bench_infer_runs_batched_and_one_by_one_and_profiles_each_setup(tmp_path):
    output = _run_bench(
        "bench_infer.py", "--size", "tiny", "--utterances", "8", "--warmup", "1", "--setups", "release@1,fast@4",
        "--profile", str(tmp_path),
    )  # fmt: skip
    rows = _table_rows(output)
    assert set(rows) == {"release@1", "fast@4"}
    assert "-> same function" in output and "OUT OF TOLERANCE" not in output
    profiles = sorted(path.name for path in tmp_path.iterdir())
    assert profiles == ["profile-fast_4.txt", "profile-release_1.txt"]
    summary, _, table = (tmp_path / "profile-fast_4.txt").read_text().partition("\n\n")
    assert summary.startswith("fast@4: ") and " steps in " in summary
    assert "aten::" in table  # the operator table, sorted by self time


def test_bench_models_live_wholly_on_the_requested_device():
    """transformers' WavLM makes `masked_spec_embed` with the legacy `torch.Tensor()`, which ignores
    `with torch.device(...)`: on CUDA the first training step then failed with tensors on two devices."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from common import build_model, parse_setup
    finally:
        sys.path.remove(str(ROOT / "bench"))
    model = build_model("tiny", parse_setup("fast", "cpu", "train", 8), torch.device("meta"))
    elsewhere = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != "meta"]
    assert not elsewhere


@pytest.mark.parametrize("setup", ["release+cached", "release+nosuchlever"])
def test_bench_refuses_impossible_setups(setup):
    result = _bench_process("bench_train.py", "--setups", setup)
    assert result.returncode != 0
    assert ("need the mask lever" if "cached" in setup else "unknown lever") in result.stderr


def test_bench_annotate_compares_annotate_with_predict_one_file_at_a_time(tmp_path):
    output = _run_bench(
        "bench_annotate.py", "--clips", "8", "--repeats", "1", "--no-onnx", "--work-dir", str(tmp_path)
    )  # fmt: skip
    rows = _table_rows(output)
    assert set(rows) == {"command", "crab predict --batch-size 1", "crab annotate"}
    assert rows["crab predict --batch-size 1"][0] == rows["crab annotate"][0] == "8"
    (agreement,) = [line for line in output.splitlines() if line.startswith("- `crab annotate` against")]
    classes = float(agreement.split("within ")[1].split(" ")[0])
    assert classes < 1e-5, agreement
