"""Distilled students against their teacher on CPU serving: every backend, batch 1 and 8, 6 s clips, one run.

    python bench/bench_distill.py                                  # base-size teacher, every student preset, 2 threads
    python bench/bench_distill.py --size tiny --repeats 2 --results ''

The teacher is `common.build_model` at `--size` (random weights; base: WavLM-base-plus + roberta-base shapes) with
the CPU inference fast path's levers; each student is `training.distill.build_student(teacher, preset)`, the model
`crab distill` starts from (the teacher's levers come with its config), without the training-only CSL legs.
Backends, as the pipeline's `backend=` names them: `pytorch` (the fast path), `onnx` and `onnx-int8` (onnxruntime on
the package's export: `onnx_export.export_onnx`, then `quantize_onnx`, served by `OnnxCrabSession`).

- **RTF**: median over `--repeats` calls of seconds of compute per second of audio; every call is one batch of 6 s
  clips with transcripts of typical length (`common.make_utterances`: about 3 tokens a second, padded to a multiple
  of 8). The repeats interleave every model, backend and batch, so load changes on a shared machine hit all alike.
- **vs teacher**: the teacher's RTF over the model's, same backend and batch.
- **GFLOP/audio-s**: `FlopCounterMode` on the PyTorch model (fp32, batch 1; GRUs not counted, ~1%); the ONNX graphs
  compute the same function.
- **peak MB**: growth of the process's peak resident set from just before the backend is loaded (PyTorch: the model
  built; onnxruntime: the session made from the exported file) through its warm-up at that batch (batch 1 first).
- **agreement, max Δscore**: top-1 agreement and the largest probability difference against PyTorch fp32 of the same
  model (eager precision, no autocast) over every timed clip.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see bench_train.py

import argparse  # noqa: E402
import contextlib  # noqa: E402
import ctypes  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import onnxruntime  # noqa: E402
import torch  # noqa: E402
from common import (  # noqa: E402
    PeakMemory,
    Setup,
    batch_indices,
    build_model,
    count_flops,
    crab_config,
    format_table,
    make_batch,
    make_utterances,
    parse_setup,
    record,
    set_precision,
)

from modeling_crab import CrabForEmotionClassification  # noqa: E402
from modeling_crab.onnx_export import OnnxCrabSession, export_onnx, quantize_onnx  # noqa: E402
from modeling_crab.training.arguments import student_preset_names  # noqa: E402
from modeling_crab.training.distill import build_student, inference_parameters, read_student_preset  # noqa: E402

MODEL_INPUTS = ("input_values", "attention_mask", "input_ids", "text_attention_mask")
BACKENDS = ("pytorch", "onnx", "onnx-int8")  # the pipeline's backend= names
BATCHES = (1, 8)
CLIP_S = 6.0
GOAL_RTF, GOAL_SPEEDUP = 0.01, 10.0  # the smallest student, batch 1, onnxruntime; against the teacher
ONNX_BACKENDS = ("onnx", "onnx-int8")
COLUMNS = ["model", "backend", "batch", "params M", "GFLOP/audio-s", "RTF", "vs teacher", "peak MB", "size MB"]
COLUMNS += ["agreement", "max Δscore"]
CPU = torch.device("cpu")


@dataclass
class Served:
    """One model through one backend: `run(inputs) -> logits`, and what was measured of it."""

    model: str
    backend: str
    run: Callable[[dict], torch.Tensor]
    size_bytes: int
    peak_mb: dict[int, float] = field(default_factory=dict)  # batch -> growth of peak RSS
    seconds: dict[int, list[float]] = field(default_factory=dict)  # batch -> wall time of each timed call
    scores: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # batch -> probabilities of each timed call


def release_freed_memory() -> None:
    """Give memory that Python and glibc hold freed back to the system, so the next peak counts new memory only."""
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def inference_model(model: CrabForEmotionClassification) -> CrabForEmotionClassification:
    """The model as `export_for_inference` writes it: no CSL legs, eval mode."""
    model.csl_legs, model.config.use_csl_legs = None, False
    return model.eval()


def warm_up(served: Served, batches: dict[int, list[dict]], warmup: int, memory: PeakMemory) -> None:
    """`warmup` calls at each batch size, batch 1 first; the peak after each size is that size's."""
    for batch_size, inputs in batches.items():
        for i in range(warmup):
            served.run(inputs[i % len(inputs)])
        served.peak_mb[batch_size] = memory.peak_gib() * 1024


def serve_pytorch(name: str, model: CrabForEmotionClassification, setup: Setup) -> Served:
    def run(inputs: dict) -> torch.Tensor:
        with torch.inference_mode(), set_precision(setup, CPU):
            return model(**inputs).logits.float()

    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return Served(name, "pytorch", run, size)


def serve_onnx(name: str, backend: str, path: Path, threads: int) -> Served:
    session = OnnxCrabSession(path, threads=threads)
    return Served(name, backend, lambda inputs: torch.from_numpy(session(**inputs)["logits"]), path.stat().st_size)


def reference_scores(model: CrabForEmotionClassification, batches: dict[int, list[dict]]) -> dict[int, list]:
    """PyTorch fp32 (no autocast, highest matmul precision) probabilities of every timed batch."""
    torch.set_float32_matmul_precision("highest")
    with torch.inference_mode():
        return {b: [model(**inputs).logits.float().softmax(-1) for inputs in batches[b]] for b in batches}


def agreement(scores: list[torch.Tensor], reference: list[torch.Tensor]) -> tuple[float, float]:
    """Top-1 agreement and the largest probability difference over every clip."""
    same = sum(int((s.argmax(-1) == r.argmax(-1)).sum()) for s, r in zip(scores, reference))
    total = sum(len(r) for r in reference)
    return same / total, max((s - r).abs().max().item() for s, r in zip(scores, reference))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "base", "large"], default="base", help="the teacher's size")
    parser.add_argument(
        "--students", default=",".join(student_preset_names()), help="comma-separated presets of presets/students/"
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per model, backend and batch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per model, backend and batch")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads, PyTorch's and onnxruntime's")
    parser.add_argument("--results", default="bench/RESULTS.md", help="append the table here ('' to skip)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    students = [name.strip() for name in args.students.split(",") if name.strip()]
    for name in students:
        read_student_preset(name)  # an unknown name fails here, naming the presets there are
    setup = parse_setup("fast@1", "cpu", "infer", 1)

    # inputs: `repeats` distinct batches of 6 s clips per batch size, the same for every model and backend
    batches: dict[int, list[dict]] = {}
    for batch_size in BATCHES:
        utts = make_utterances(args.repeats * batch_size, CLIP_S, CLIP_S, seed=batch_size, fixed_s=CLIP_S)
        indices = batch_indices(utts, batch_size, grouped=False, seed=0)
        vocab = crab_config(args.size).text_config.vocab_size
        batches[batch_size] = [
            {k: v for k, v in make_batch(utts, idx, setup, CPU, vocab, seed=i).items() if k in MODEL_INPUTS}
            for i, idx in enumerate(indices)
        ]

    memory = PeakMemory(CPU)
    served: list[Served] = []
    sizes: dict[str, tuple[int, float]] = {}  # model -> (parameters, FLOPs per audio-second)
    references: dict[str, dict[int, list]] = {}
    work_dir = tempfile.TemporaryDirectory(prefix="crab-bench-distill-")
    teacher = None
    start = time.perf_counter()
    for name in ["teacher", *students]:
        release_freed_memory()
        memory.reset()
        if teacher is None:
            model = teacher = build_model(args.size, setup, CPU, inference=True)
        else:
            torch.manual_seed(0)
            model = inference_model(build_student(teacher, name, f"{args.size}-size teacher (random weights)"))
        pytorch = serve_pytorch(name, model, setup)
        warm_up(pytorch, batches, args.warmup, memory)
        served.append(pytorch)
        with torch.no_grad():
            flops = count_flops(lambda m=model: m(**batches[1][0]))
        sizes[name] = (inference_parameters(model), flops / CLIP_S)
        if setup.levers & {"bf16"}:  # the fast path is not fp32 here: the reference is its own, untimed pass
            references[name] = reference_scores(model, batches)
        fp32 = export_onnx(model, Path(work_dir.name) / name / "model.onnx")
        int8 = quantize_onnx(fp32, fp32.with_name("model_quantized.onnx"))
        for backend, path in (("onnx", fp32), ("onnx-int8", int8)):
            release_freed_memory()
            memory.reset()
            onnx = serve_onnx(name, backend, path, args.threads)
            warm_up(onnx, batches, args.warmup, memory)
            served.append(onnx)
        print(f"[{name}] built, exported and warmed up ({time.perf_counter() - start:.0f} s)", flush=True)

    for r in range(args.repeats):  # interleaved: every model, backend and batch once per round
        for one in served:
            for batch_size in BATCHES:
                tick = time.perf_counter()
                logits = one.run(batches[batch_size][r])
                one.seconds.setdefault(batch_size, []).append(time.perf_counter() - tick)
                one.scores.setdefault(batch_size, []).append(logits.softmax(-1))
    timed_s = time.perf_counter() - start
    for one in served:
        if one.backend == "pytorch" and one.model not in references:
            references[one.model] = one.scores  # the fast path is fp32 here: it is the reference

    rtf = {
        (one.model, one.backend, b): statistics.median(one.seconds[b]) / (b * CLIP_S)
        for one in served
        for b in BATCHES
    }
    rows, agrees = [], {}
    for one in served:
        parameters, flops = sizes[one.model]
        for b in BATCHES:
            same, largest = agreement(one.scores[b], references[one.model][b])
            agrees[one.model, one.backend, b] = same
            is_reference = one.backend == "pytorch" and references[one.model] is one.scores
            rows.append(
                {
                    "model": f"teacher ({args.size})" if one.model == "teacher" else one.model,
                    "backend": one.backend,
                    "batch": b,
                    "params M": f"{parameters / 1e6:.3g}",
                    "GFLOP/audio-s": f"{flops / 1e9:.3g}",
                    "RTF": f"{rtf[one.model, one.backend, b]:.4f}",
                    "vs teacher": f"{rtf['teacher', one.backend, b] / rtf[one.model, one.backend, b]:.1f}x",
                    "peak MB": f"{one.peak_mb[b]:.0f}",
                    "size MB": f"{one.size_bytes / 1e6:.1f}",
                    "agreement": "reference" if is_reference else f"{same:.1%}",
                    "max Δscore": "-" if is_reference else f"{largest:.1e}",
                }
            )

    notes = [
        f"teacher: {args.size} size, random weights; students: `build_student` presets {', '.join(students)}; "
        f"{args.repeats} timed calls each (median), interleaved, after {args.warmup} warm-up calls per batch; "
        f"{CLIP_S:g} s clips, transcripts of {int(batches[1][0]['text_attention_mask'].sum())}-"
        f"{max(int(x['text_attention_mask'].sum(-1).max()) for x in batches[8])} tokens; onnxruntime "
        f"{onnxruntime.__version__}, {args.threads} threads; whole run {timed_s:.0f} s",
        f"pytorch = the CPU inference fast path: levers {{{', '.join(sorted(setup.levers))}}}; agreement against "
        + ("an untimed fp32 pass of the same model" if "bf16" in setup.levers else "the pytorch row (fp32)"),
        goal_line(students, sizes, rtf, agrees, args.size),
    ]
    title = f"Distilled students vs teacher, {args.size}, cpu"
    record(args.results or None, title, CPU, format_table(rows, COLUMNS), notes)
    work_dir.cleanup()


def goal_line(students: list[str], sizes: dict, rtf: dict, agrees: dict, size: str) -> str:
    """The issue's goal: the smallest student (fewest FLOPs) serves a 6 s clip at batch 1 at RTF <= 0.01 through
    onnxruntime, >= 10x faster than the teacher in the same run. Each is served as a user would serve it: the student
    by its faster onnxruntime backend at batch 1 among those that agree with fp32 on every clip (int8 only where it
    agrees), the teacher by its faster one whatever its agreement (the stricter comparison)."""
    if not students:
        return "goal: no student measured"
    smallest = min(students, key=lambda name: sizes[name][1])
    agreeing = [b for b in ONNX_BACKENDS if b == "onnx" or agrees[smallest, b, 1] == 1.0]
    backend = min(agreeing, key=lambda b: rtf[smallest, b, 1])
    teacher_backend = min(ONNX_BACKENDS, key=lambda b: rtf["teacher", b, 1])
    value = rtf[smallest, backend, 1]
    speedup = rtf["teacher", teacher_backend, 1] / value
    met = value <= GOAL_RTF and speedup >= GOAL_SPEEDUP
    verdict = "MET" if met else "MISSED"
    misses = [f"RTF {value / GOAL_RTF:.1f}x too slow"] if value > GOAL_RTF else []
    misses += [f"speed-up {GOAL_SPEEDUP / speedup:.1f}x short"] if speedup < GOAL_SPEEDUP else []
    why = f" ({'; '.join(misses)})" if misses else ""
    setting = "" if size == "base" else f" [teacher size {size}: the goal is set for base]"
    return (
        f"goal (smallest student `{smallest}`, 6 s clip, batch 1, its faster agreeing onnxruntime backend: {backend}): "
        f"RTF {value:.4f} (<= {GOAL_RTF}), {speedup:.1f}x the teacher's faster one ({teacher_backend}, "
        f"{rtf['teacher', teacher_backend, 1]:.4f}; >= {GOAL_SPEEDUP:g}x) -> {verdict}{why}{setting}"
    )


if __name__ == "__main__":
    main()
