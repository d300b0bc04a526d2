"""The benchmark scripts run end to end at tiny size and their fast paths pass the same-function check.

Nothing here is timed: the numbers live in bench/RESULTS.md. These runs only keep the scripts working.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# each run starts the benchmark scripts in subprocesses (1-2 minutes on 2 cores): `bash scripts/test.sh` runs them
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


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


def test_bench_infer_runs_batched_and_one_by_one():
    output = _run_bench(
        "bench_infer.py", "--size", "tiny", "--utterances", "8", "--warmup", "1", "--setups", "release@1,fast@4"
    )
    rows = _table_rows(output)
    assert set(rows) == {"release@1", "fast@4"}
    assert "-> same function" in output and "OUT OF TOLERANCE" not in output


@pytest.mark.parametrize("setup", ["release+cached", "release+nosuchlever"])
def test_bench_refuses_impossible_setups(setup):
    result = _bench_process("bench_train.py", "--setups", setup)
    assert result.returncode != 0
    assert ("need the mask lever" if "cached" in setup else "unknown lever") in result.stderr
