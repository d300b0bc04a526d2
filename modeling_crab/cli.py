"""`crab predict`: emotion scores for audio files, from a Hub repo or a local export.

    crab predict a.wav --text "first transcript" b.wav --text "second one" --model user/crab-iemocap
    crab predict --transcripts clips.tsv --model outputs/iemocap/inference --json
    crab predict call.wav --model user/crab-iemocap            # no transcript: Whisper transcribes it

`--transcripts` is a tab-separated file of `path<TAB>transcript` lines (an optional `path	text` header; relative
paths are relative to the file). Without FILE arguments every file it lists is classified. Files and `--text` may
alternate or come in two lists (`a.wav b.wav --text ... --text ...`): the n-th `--text` is the n-th file's.
Without `--model`, the model is the CRAB_MODEL environment variable's.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import warnings
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crab", description="Crab speech emotion recognition.")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict",
        help="classify audio files",
        description=__doc__.split("\n\n")[0],
        epilog="The n-th --text is the n-th FILE's; files and --text may alternate. CRAB_MODEL sets the default "
        "--model.",
    )
    predict.add_argument("files", nargs="*", metavar="FILE", help="audio files (WAV; FLAC/OGG with soundfile)")
    predict.add_argument(
        "--model",
        default=os.environ.get("CRAB_MODEL"),
        help="Hub repo id or local export dir (default: the CRAB_MODEL environment variable)",
    )
    predict.add_argument("--revision", help="Hub revision (a commit hash pins the code you run)")
    predict.add_argument("--text", action="append", help="the transcript; once per FILE, in order")
    predict.add_argument("--transcripts", type=Path, help="TSV of path<TAB>transcript")
    predict.add_argument("--audio-only", action="store_true", help="no transcript (modality-dropout models)")
    predict.add_argument("--asr-model", help="speech recognizer for files without a transcript")
    predict.add_argument("--top-k", type=int, help="labels to show per file (default: all)")
    predict.add_argument("--chunk-length-s", type=float, help="window length for long audio (default: training crop)")
    predict.add_argument("--windows", action="store_true", help="also print per-window scores")
    predict.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    predict.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the first GPU, else CPU)")
    predict.add_argument("--bf16", action="store_true", help="bf16 autocast: faster on GPUs, scores within ~1e-2")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like `parse_args`, but a command's FILEs and options may be interleaved (`a.wav --text x b.wav --text y`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = parser._subparsers._group_actions[0].choices
    if argv and argv[0] in commands:
        args = commands[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def read_transcripts(path: Path) -> dict[str, str]:
    """`path<TAB>transcript` lines (UTF-8, with or without a byte-order mark) -> {resolved path: transcript}."""
    if not path.is_file():
        raise FileNotFoundError(f"--transcripts file '{path}' does not exist")
    data = path.read_bytes()
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line} is not valid UTF-8 ({error.reason} at byte {error.start}); save the file as UTF-8"
        ) from None
    transcripts = {}
    lines = io.StringIO(content, newline="")
    for line_number, row in enumerate(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
        if not row or (line_number == 1 and row[0].strip().lower() in ("path", "file", "audio")):
            continue
        if len(row) != 2:
            raise ValueError(f"{path}:{line_number} has {len(row)} columns; write path<TAB>transcript")
        audio = Path(row[0].strip())
        transcripts[str((path.parent / audio).resolve())] = row[1].strip()
    return transcripts


def pair_inputs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[list[str], list[str | None]]:
    """The files to classify and their transcripts (`None`: transcribe, `""`: audio only)."""
    sources = [bool(args.text), args.transcripts is not None, args.audio_only]
    if sum(sources) > 1:
        parser.error("use only one of --text, --transcripts and --audio-only")
    if args.transcripts is not None:
        table = read_transcripts(args.transcripts)
        files = args.files or list(table)
        missing = [f for f in files if str(Path(f).resolve()) not in table]
        if missing:
            parser.error(f"{missing[0]} has no line in {args.transcripts}; add one or pass --text")
        return files, [table[str(Path(f).resolve())] for f in files]
    if not args.files:
        parser.error("pass audio FILEs, or --transcripts with a TSV of path<TAB>transcript")
    if args.text and len(args.text) != len(args.files):
        parser.error(f"got {len(args.files)} files but {len(args.text)} --text; pass --text once per file")
    if args.text:
        return args.files, args.text
    return args.files, ["" if args.audio_only else None] * len(args.files)


def format_table(results: list[dict], show_windows: bool) -> str:
    width = max(len("file"), *(len(r["file"]) for r in results))
    lines = [f"{'file'.ljust(width)}  {'emotion':<10}  score  others"]
    for result in results:
        best, *others = result["scores"]
        rest = "  ".join(f"{s['label']} {s['score']:.3f}" for s in others)
        lines.append(f"{result['file'].ljust(width)}  {best['label']:<10}  {best['score']:.3f}  {rest}".rstrip())
        if result.get("text") and result.get("transcribed"):
            lines.append(f"{'':{width}}  transcript: {result['text']}")
        for window in result.get("windows", []) if show_windows else []:
            top = window["scores"][0]
            span = f"{window['start']:7.2f}-{window['end']:.2f}s"
            lines.append(f"{'':{width}}  {span}  {top['label']} {top['score']:.3f}")
    return "\n".join(lines)


def predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.model:
        parser.error("pass --model (a Hub repo id or an export directory), or set CRAB_MODEL")
    files, texts = pair_inputs(args, parser)
    for path in files:
        if not Path(path).is_file():
            parser.error(f"audio file '{path}' does not exist")

    from transformers import pipeline

    from .export import PIPELINE_TASK, register_pipeline

    register_pipeline()  # exports that predate `custom_pipelines` in config.json fall back to this package's pipeline
    options = {"asr_model": args.asr_model} if args.asr_model else {}
    classifier = pipeline(
        PIPELINE_TASK, model=args.model, revision=args.revision, device=args.device, trust_remote_code=True, **options
    )
    outputs = classifier(
        files,
        text=texts,
        top_k=args.top_k,
        chunk_length_s=args.chunk_length_s,
        return_windows=True,
        batch_size=args.batch_size,
        precision="bf16" if args.bf16 else "fp32",
    )
    results = []
    for path, text, output in zip(files, texts, outputs):
        result = {"file": path, "text": output["text"], "transcribed": text is None, "scores": output["aggregate"]}
        if args.windows:
            result["windows"] = output["windows"]
        results.append(result)
    print(json.dumps(results, indent=2) if args.json else format_table(results, args.windows))
    return 0


def quiet_known_warnings() -> None:
    """transformers' WavLM attention mixes a float position bias with a boolean padding mask, which torch warns
    about on every forward; the numbers are right."""
    warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask", category=UserWarning)


def main(argv: list[str] | None = None) -> int:
    quiet_known_warnings()
    parser = build_parser()
    args = parse_args(parser, argv)
    try:
        return predict(args, parser)
    except (OSError, ValueError, TypeError, RuntimeError) as error:
        print(f"crab: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
