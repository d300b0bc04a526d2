"""`crab annotate` against `crab predict` at batch 1, on the same files, in one process: audio-seconds per second.

    python bench/bench_annotate.py --clips 200                                    # the demo's clips, a demo-like model
    python bench/bench_annotate.py --clips 1000 --model outputs/demo/inference    # the demo's trained model

The clips are the demo corpus's (formant synthesis, `recipes.demo.generate_demo_corpus`, 16 kHz WAV with their
transcripts in its manifest). The model is `--model` or, without it, a tiny random Crab with the demo's classes and
attributes (the demo trains this architecture, `training/presets/tiny.yaml`; speed does not depend on the weights).
Each command runs as the CLI runs it (`cli.main`, the model loaded by each run), timed from its start to its end,
in turn, `--repeats` times; the median is reported. Python's imports are paid once, before any timing. `crab
annotate` runs with the PyTorch backend and, unless `--no-onnx`, with onnxruntime on the fp32 graph (`crab
export-onnx`, made once before the timing); the largest score difference of each from `crab predict` is reported.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see bench_train.py

import argparse  # noqa: E402
import contextlib  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from common import format_table, record  # noqa: E402

from modeling_crab.annotate import read_table  # noqa: E402
from modeling_crab.cli import main as crab  # noqa: E402

COLUMNS = ["command", "recordings", "audio s", "wall s", "audio-s/s", "vs predict"]


def demo_clips(folder: Path, clips: int) -> Path:
    """The demo corpus with about `clips` clips (a multiple of its 4 classes); its manifest, cut to `clips` rows."""
    from modeling_crab.recipes.demo import generate_demo_corpus

    manifest = generate_demo_corpus(folder / "demo_corpus", n_per_class=max(3, -(-clips // 4)))
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:clips]
    cut = folder / "demo_corpus" / f"annotate_{clips}.csv"
    with cut.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "audio", "text"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return cut


def demo_like_model(folder: Path, texts: list[str]) -> Path:
    from transformers import Wav2Vec2FeatureExtractor

    from modeling_crab import CrabForEmotionClassification, CrabProcessor, export_for_inference
    from modeling_crab.recipes.demo import DEMO_LABELS
    from modeling_crab.training.tiny import build_tiny_tokenizer, tiny_crab_config

    tokenizer = build_tiny_tokenizer(texts, vocab_size=400)
    labels = dict(enumerate(DEMO_LABELS))
    config = tiny_crab_config(
        len(labels), labels, vocab_size=len(tokenizer), attribute_names=["arousal", "valence", "dominance"]
    )
    torch.manual_seed(0)
    model = CrabForEmotionClassification(config).eval()
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, return_attention_mask=True)
    return export_for_inference(model, CrabProcessor(extractor, tokenizer), folder / "model")


def timed(argv: list[str]) -> tuple[float, str]:
    stdout = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(stdout):
        code = crab([*argv, "--device", "cpu"])
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"crab {argv[0]} exited with {code}")
    return elapsed, stdout.getvalue()


def largest_differences(predicted: list[dict], annotated: list[dict]) -> tuple[float, float]:
    """The largest difference of a class probability and of an attribute between `crab predict --json`'s answers and
    `crab annotate`'s rows of the same files."""
    classes = max(
        (
            abs(entry["score"] - row[entry["label"]])
            for result, row in zip(predicted, annotated)
            for entry in result["scores"]
        ),
        default=0.0,
    )
    attributes = max(
        (
            abs(value - row[name])
            for result, row in zip(predicted, annotated)
            for name, value in result.get("attributes", {}).items()
        ),
        default=0.0,
    )
    return classes, attributes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=200, help="recordings (the demo corpus's, generated once)")
    parser.add_argument("--model", help="an export (default: a tiny random model with the demo's heads)")
    parser.add_argument("--work-dir", help="where the corpus, model and outputs go (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, help="crab annotate's windows per forward pass (default: its own)")
    parser.add_argument("--num-workers", type=int, help="crab annotate's DataLoader workers (default: its own)")
    parser.add_argument(
        "--no-onnx", dest="onnx", action="store_false", help="skip crab annotate --backend onnx (needs onnxruntime)"
    )
    parser.add_argument("--results", default="bench/RESULTS.md", help="append the table here ('' to skip)")
    args = parser.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="crab-annotate-bench-"))
    manifest = demo_clips(work, args.clips)
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    files = [str(manifest.parent / row["audio"]) for row in rows]
    lengths = np.array([sf.info(path).duration for path in files])
    audio_s = float(lengths.sum())
    model = args.model or str(demo_like_model(work, [row["text"] for row in rows]))

    predict = ["predict", *files, "--model", model, "--batch-size", "1", "--json"]
    for row in rows:
        predict += ["--text", row["text"]]
    options = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    options += ["--num-workers", str(args.num_workers)] if args.num_workers is not None else []
    commands = {"crab predict --batch-size 1": (predict, None)}
    for backend in ("pytorch", "onnx") if args.onnx else ("pytorch",):
        out = work / f"annotations_{backend}.parquet"
        annotate = ["annotate", str(manifest), "--model", model, "--output", str(out), "--overwrite", *options]
        label = f"crab annotate{' --backend onnx' if backend == 'onnx' else ''} {' '.join(options)}".strip()
        commands[label] = ([*annotate, "--backend", backend], out)
    if args.onnx and not (Path(model) / "onnx" / "model.onnx").is_file():
        with contextlib.redirect_stdout(io.StringIO()):  # the graph, once, before any timing
            if crab(["export-onnx", model, "--no-int8"]) != 0:
                raise SystemExit("crab export-onnx failed")

    times: dict[str, list[float]] = {label: [] for label in commands}
    timed(["predict", files[0], "--text", rows[0]["text"], "--model", model])  # warm: first-call costs, once
    for _ in range(args.repeats):
        for label, (argv, _) in commands.items():
            elapsed, printed = timed(argv)
            times[label].append(elapsed)
            if argv[0] == "predict":
                predicted = json.loads(printed)

    predict_rate = audio_s / statistics.median(times["crab predict --batch-size 1"])
    table, notes = [], []
    for label, (_, out) in commands.items():
        wall = statistics.median(times[label])
        table.append(
            {
                "command": label,
                "recordings": len(files),
                "audio s": f"{audio_s:.0f}",
                "wall s": f"{wall:.1f}",
                "audio-s/s": f"{audio_s / wall:.1f}",
                "vs predict": f"{audio_s / wall / predict_rate:.2f}x",
            }
        )
        if out is not None:
            classes, attributes = largest_differences(predicted, read_table(out))
            notes.append(
                f"`{label}` against `crab predict`: scores within {classes:.1e} (classes), {attributes:.1e} "
                "(attributes)"
            )
    notes[:0] = [
        f"{len(files)} clips of the demo corpus (16 kHz WAV, {lengths.min():.1f}-{lengths.max():.1f} s, mean "
        f"{lengths.mean():.1f} s) with their transcripts; model: {args.model or 'tiny random Crab with the demo heads'}",
        f"median of {args.repeats} runs of each, in turn; each run loads the model and reads every file",
    ]
    record(
        args.results or None,
        "crab annotate vs crab predict at batch 1, cpu",
        torch.device("cpu"),
        format_table(table, COLUMNS),
        notes,
    )


if __name__ == "__main__":
    main()
