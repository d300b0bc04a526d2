"""bench_distill.py runs end to end at tiny size: the teacher and every student preset through PyTorch, onnxruntime
fp32 and int8, at batch 1 and 8, appended to the results file with the goal line. Nothing here is timed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="the ONNX backends need the `onnx` extra: pip install -e '.[onnx]'")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow(reason="exports three tiny models to ONNX in a subprocess: about 2 minutes on 2 cores")
def test_bench_distill_compares_every_student_with_the_teacher_on_every_backend(tmp_path):
    results = tmp_path / "RESULTS.md"
    command = [sys.executable, str(ROOT / "bench" / "bench_distill.py"), "--size", "tiny", "--repeats", "2"]
    result = subprocess.run(
        [*command, "--warmup", "1", "--results", str(results)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = results.read_text()
    assert written in result.stdout  # the printed entry is the appended one
    header, *lines = [line for line in written.splitlines() if line.startswith("| ")]
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    rows = [dict(zip(columns, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines]
    models = {"teacher (tiny)", "small", "tiny"}  # every preset of presets/students/
    assert {(r["model"], r["backend"], r["batch"]) for r in rows} == {
        (m, backend, batch) for m in models for backend in ("pytorch", "onnx", "onnx-int8") for batch in ("1", "8")
    }
    flops = {r["model"]: float(r["GFLOP/audio-s"]) for r in rows}
    assert flops["tiny"] < flops["small"] < flops["teacher (tiny)"]
    assert all(r["vs teacher"] == "1.0x" for r in rows if r["model"] == "teacher (tiny)")
    assert all(float(r["RTF"]) > 0 and float(r["peak MB"]) >= 0 for r in rows)
    for row in rows:  # onnxruntime fp32 computes the model's function
        if row["backend"] == "onnx":
            assert row["agreement"] == "100.0%" and float(row["max Δscore"]) < 1e-4, row
    (goal,) = [line for line in written.splitlines() if line.startswith("- goal (smallest student `tiny`")]
    assert "onnxruntime backend: onnx" in goal and (" -> MET" in goal or " -> MISSED" in goal)
