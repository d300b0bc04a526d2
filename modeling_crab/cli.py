"""`crab predict`: emotion scores for audio files, from a Hub repo or a local export; `crab annotate`: a whole corpus
(a manifest, a folder, a dataset) into one Parquet or CSV file, resumable, on every process of a launch
(`modeling_crab/annotate.py`); `crab export-onnx`: the same model as ONNX (fp32 and int8) for onnxruntime; `crab
distill`: a small student trained on a model's outputs (`python train.py --teacher`, `training/distill.py`).

    crab predict a.wav --text "first transcript" b.wav --text "second one" --model user/crab-iemocap
    crab predict --transcripts clips.tsv --model outputs/iemocap/inference --json
    crab predict call.wav --model user/crab-iemocap            # no transcript: Whisper transcribes it

`--transcripts` is a tab-separated file of `path<TAB>transcript` lines (an optional `path	text` header; relative
paths are relative to the file). Without FILE arguments every file it lists is classified. Files and `--text` may
alternate or come in two lists (`a.wav b.wav --text ... --text ...`): the n-th `--text` is the n-th file's.
Without `--model`, the model is the CRAB_MODEL environment variable's.

A model with emotional attributes (`config.attribute_names`) also prints them after the labels, on the 0-1 scale
(`arousal 0.710  valence 0.330  dominance 0.580`); in `--json` each file's object then has `"attributes": {name:
value}` beside `"scores"` (the ranked labels; `[]` for an attributes-only model), and each window (`--windows`) too.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import pickle
import re
import sys
from pathlib import Path

from .heads import HEADS, answer_parts


class CliError(Exception):
    """A failure `crab predict` reports on one line, naming the input and the fix."""


def _whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: pass a whole number >= 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: pass seconds >= 0 (0: the whole file in one pass)")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .annotate import FLUSH_EVERY  # the standard library only: the parser stays quick to build

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
    predict.add_argument("--top-k", type=_whole_number, help="labels to show per file (default: all)")
    predict.add_argument(
        "--chunk-length-s", type=_seconds, help="window length for long audio (default: training crop)"
    )
    predict.add_argument("--windows", action="store_true", help="also print per-window scores")
    predict.add_argument("--batch-size", type=_whole_number, default=8, help="windows per forward pass")
    predict.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the first GPU, else CPU)")
    predict.add_argument(
        "--bf16", action="store_true", help="bf16 autocast: faster for batches on GPUs, scores within ~1.5e-2"
    )
    predict.add_argument(
        "--backend",
        choices=["pytorch", "onnx", "onnx-int8"],
        default="pytorch",
        help="onnx / onnx-int8: onnxruntime on the graphs crab export-onnx wrote beside the model (CPU)",
    )
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")

    annotate = commands.add_parser(
        "annotate",
        help="annotate a corpus (manifest, folder or dataset) into a Parquet or CSV file",
        description="One row per recording of INPUT (a manifest, a folder of audio files, a saved datasets folder or "
        "a dataset name) in OUT: id, audio, duration, the classes' scores, the attributes, the transcript and an "
        "error column. Resumable; on every process of torchrun / accelerate launch.",
        epilog="Many GPUs or nodes: torchrun --nproc_per_node 8 -m modeling_crab.cli annotate ... (or accelerate "
        "launch -m modeling_crab.cli annotate ...): each process annotates its share, one OUT at the end.",
    )
    annotate.add_argument("input", metavar="INPUT", help="manifest (CSV/JSONL), folder of audio files or dataset")
    annotate.add_argument(
        "--model",
        default=os.environ.get("CRAB_MODEL"),
        help="Hub repo id or local export dir (default: the CRAB_MODEL environment variable)",
    )
    annotate.add_argument("--revision", help="Hub revision (a commit hash pins the code you run)")
    annotate.add_argument("--output", "-o", type=Path, required=True, help="OUT: a .parquet or .csv file")
    annotate.add_argument(
        "--resume",
        action="store_true",
        help="continue OUT: skip the recordings it or its parts hold (failed ones are tried again)",
    )
    annotate.add_argument("--overwrite", action="store_true", help="start OUT again")
    annotate.add_argument("--audio-only", action="store_true", help="no transcripts (modality-dropout models)")
    annotate.add_argument("--asr-model", help="speech recognizer for recordings without a transcript")
    annotate.add_argument("--split", help="a manifest's or dataset's split to annotate (default: every row)")
    annotate.add_argument("--windows", action="store_true", help="also a windows column: each window's scores")
    annotate.add_argument(
        "--chunk-length-s", type=_seconds, help="window length for long audio (default: training crop)"
    )
    annotate.add_argument(
        "--batch-size", type=_whole_number, help="windows per forward pass (default: 64 on a GPU, 16 on the CPU)"
    )
    annotate.add_argument(
        "--num-workers",
        type=int,
        help="DataLoader workers reading audio per process (default: from the cores; 0: in the main process)",
    )
    annotate.add_argument(
        "--flush-every",
        type=_whole_number,
        default=FLUSH_EVERY,
        help=f"recordings per part file written (default: {FLUSH_EVERY})",
    )
    annotate.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: each process's own GPU, else CPU)")
    annotate.add_argument("--bf16", action="store_true", help="bf16 autocast: for GPUs, scores within ~1.5e-2")
    annotate.add_argument(
        "--pad-to-buckets",
        action="store_true",
        help="pad each batch to the model's shape buckets (train.py --shape_buckets): static shapes for a compiled model",
    )
    annotate.add_argument(
        "--no-tf32", dest="tf32", action="store_false", help="on GPUs, fp32 matmuls in full fp32 instead of TF32"
    )
    annotate.add_argument(
        "--backend",
        choices=["pytorch", "onnx", "onnx-int8"],
        default="pytorch",
        help="onnx / onnx-int8: onnxruntime on the graphs crab export-onnx wrote beside the model (CPU)",
    )

    export = commands.add_parser(
        "export-onnx",
        help="export a model to ONNX (fp32 and int8) for onnxruntime",
        description="Write CHECKPOINT's inference model as OUT_DIR/onnx/model.onnx and, unless --no-int8, the int8 "
        "OUT_DIR/onnx/model_quantized.onnx (needs the onnx extra: pip install 'crab-ser[onnx]').",
    )
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="export folder, train.py --output_dir or Hub repo id")
    export.add_argument(
        "out_dir", metavar="OUT_DIR", nargs="?", help="default: CHECKPOINT itself; another folder also gets the model"
    )
    export.add_argument("--revision", help="Hub revision")
    export.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 (quantized) graph")

    distill = commands.add_parser(
        "distill",
        help="distil a model into a small student (train.py --teacher)",
        description="Train a small student Crab on TEACHER's outputs (its class probabilities and attributes) and the "
        "labels the manifest has, with train.py's run; without --manifest, on the demo corpus. Any further train.py "
        "flag passes through (python train.py --help). docs/distillation.md.",
    )
    distill.add_argument(
        "teacher",
        metavar="TEACHER",
        help="a trained Crab model: its folder (train.py writes <output_dir>/inference) or Hub repo id",
    )
    distill.add_argument("--manifest", help="the training manifest (train.py's format); default: the demo corpus")
    distill.add_argument("--output_dir", help="where the student's run goes (default: outputs/student)")
    distill.add_argument("--student", default="small", help="the student's size, a preset: small or tiny")
    distill.add_argument(
        "--unlabelled_manifest",
        nargs="+",
        help="manifests, folders or files of further audio for the teacher to label (no transcript: --asr_model)",
    )
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like `parse_args`, but a command's FILEs and options may be interleaved (`a.wav --text x b.wav --text y`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = parser._subparsers._group_actions[0].choices
    if argv and argv[0] == "distill":  # train.py's flags pass through
        args, args.train_flags = commands["distill"].parse_known_args(argv[1:])
        args.command = argv[0]
        return args
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
    """One line per file: each output head's part (`OutputHead.cli_text`: the best label, its score and the others';
    the attributes), each part starting in one column on every line."""
    width = max(len("file"), *(len(r["file"]) for r in results))
    columns = [_score_parts(r) for r in results]  # each file's text per head, None where it has none
    header = [
        kind.cli_header if any(parts[i] is not None for parts in columns) else None for i, kind in enumerate(HEADS)
    ]
    widths = [max(len(parts[i] or "") for parts in [header, *columns]) for i in range(len(HEADS))]

    def row(first: str, parts: list[str | None]) -> str:
        """The parts padded to the widest of their column, but the last on the line."""
        present = [i for i, part in enumerate(parts) if part is not None]
        cells = [parts[i] if i == present[-1] else parts[i].ljust(widths[i]) for i in present]
        return f"{first.ljust(width)}  {'  |  '.join(cells)}".rstrip()

    lines = [row("file", header)]
    for result, parts in zip(results, columns):
        lines.append(row(result["file"], parts))
        if result.get("text") and result.get("transcribed"):
            lines.append(f"{'':{width}}  transcript: {result['text']}")
        for window in result.get("windows", []) if show_windows else []:
            span = f"{window['start']:7.2f}-{window['end']:.2f}s"
            lines.append(f"{'':{width}}  {span}  {_scores_text(window, top_only=True)}".rstrip())
    return "\n".join(lines)


def _score_parts(result: dict, top_only: bool = False) -> list[str | None]:
    """Each output head's text of one file or window, in `HEADS` order (`angry 0.412  happy 0.300 ...` (the best
    alone with `top_only`), `arousal 0.710  valence 0.330`), None where the model has none."""
    return [kind.cli_text(result.get(kind.window_key), top_only) for kind in HEADS]


def _scores_text(result: dict, top_only: bool = False) -> str:
    """`angry 0.412  happy 0.300 ...  |  arousal 0.710  valence 0.330`: `_score_parts` on one line."""
    return "  |  ".join(part for part in _score_parts(result, top_only) if part is not None)


def predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.model:
        parser.error("pass --model (a Hub repo id or an export directory), or set CRAB_MODEL")
    files, texts = pair_inputs(args, parser)
    for path in files:
        if Path(path).is_dir():
            parser.error(f"audio file '{path}' is a folder, not an audio file; pass the files in it")
        if not Path(path).is_file():
            parser.error(f"audio file '{path}' does not exist")

    check_device(args.device, parser)
    check_model(args.model, parser)
    check_own_code(args.model, args.revision)
    classifier = load_classifier(args.model, args.revision, args.device, args.asr_model)
    outputs = classifier(
        files,
        text=texts,
        top_k=args.top_k,
        chunk_length_s=args.chunk_length_s,
        return_windows=True,
        batch_size=args.batch_size,
        precision="bf16" if args.bf16 else "fp32",
        backend=args.backend,
    )
    results = []
    for path, text, output in zip(files, texts, outputs):
        parts = answer_parts(output["aggregate"])  # ranked labels, and attributes for a model with them
        result = {"file": path, "text": output["text"], "transcribed": text is None}
        result.update({kind.window_key: parts[kind.answer_key] for kind in HEADS if kind.answer_key in parts})
        if args.windows:
            result["windows"] = output["windows"]
        results.append(result)
    print(json.dumps(results, indent=2) if args.json else format_table(results, args.windows))
    return 0


def load_classifier(model: str, revision: str | None, device: str | None, asr_model: str | None):
    """The `speech-emotion-recognition` pipeline of `--model` (checked by `check_model` and `check_own_code`); a
    model that cannot load is a `CliError` naming why and the fix."""
    from transformers import pipeline

    from .export import PIPELINE_TASK, register_pipeline
    from .wavlm_attention import quiet_eager_mask_warning

    quiet_eager_mask_warning()

    register_pipeline()  # exports that predate `custom_pipelines` in config.json fall back to this package's pipeline
    options = {"asr_model": asr_model} if asr_model else {}
    try:
        return pipeline(
            PIPELINE_TASK, model=model, revision=revision, device=device, trust_remote_code=True, **options
        )
    except pickle.UnpicklingError as error:  # weights that would run code: the refusal says why and what to do
        from .modeling_crab import UnsafeWeightsError

        raise CliError(str(UnsafeWeightsError.from_refusal(error, model))) from None
    except Exception as error:
        fix = _LOAD_FIX["folder" if Path(model).is_dir() else "hub"]
        raise CliError(f"cannot load --model '{model}' ({_load_failure(error)}); {fix}") from error


def annotate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`crab annotate`: the model and the output are checked, and the inputs listed, before the model loads; then
    `annotate.annotate` runs this process's share (`annotate.Ranks`: torchrun's and accelerate's environment)."""
    from . import annotate as corpus

    if not args.model:
        parser.error("pass --model (a Hub repo id or an export directory), or set CRAB_MODEL")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num-workers {args.num_workers}: pass 0 (read audio in the main process) or more")
    check_device(args.device, parser)
    check_model(args.model, parser)
    corpus.check_output(args.output, args.resume, args.overwrite)
    recordings = corpus.read_inputs(args.input, audio_only=args.audio_only, split=args.split)
    check_own_code(args.model, args.revision)

    with corpus.launched(args.device) as (ranks, device):
        classifier = load_classifier(args.model, args.revision, device, args.asr_model)
        summary = corpus.annotate(
            classifier,
            recordings,
            args.output,
            ranks,
            overwrite=args.overwrite,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            flush_every=args.flush_every,
            chunk_length_s=args.chunk_length_s,
            precision="bf16" if args.bf16 else "fp32",
            backend=args.backend,
            asr_model=args.asr_model,
            with_windows=args.windows,
            tf32=args.tf32,
            pad_to_buckets=True if args.pad_to_buckets else None,
        )
    if summary is not None:
        print(summary.line(args.output))
    return 0


def export_onnx(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`crab export-onnx`: the onnx extra is checked before anything is written; then the graphs written, with their
    sizes, and the `crab predict` line that serves them. The libraries' own notes are not printed
    (`onnx_export.quiet_libraries`)."""
    from .export import inference_folder

    checkpoint = str(inference_folder(args.checkpoint))  # train.py's --output_dir: its inference/ export
    check_model(checkpoint, parser, flag="CHECKPOINT")
    from .onnx_export import check_onnx_extra, export_checkpoint

    try:
        check_onnx_extra()
    except ImportError as error:
        raise CliError(str(error)) from None
    written = export_checkpoint(checkpoint, args.out_dir, quantize=args.int8, revision=args.revision)
    for path in written:
        print(f"{path}  ({path.stat().st_size / 1e6:.1f} MB)")
    print(_onnx_usage(args.out_dir or checkpoint, args.int8))
    return 0


def _onnx_usage(model: str, int8: bool) -> str:
    """The `crab predict` line that serves the graphs `crab export-onnx` wrote into `model`."""
    import shlex

    command = f'crab predict FILE --text "..." --model {shlex.quote(model)} --backend'
    if int8:
        return f"use them: {command} onnx-int8 (or --backend onnx, fp32)"
    return f"use it: {command} onnx"


def distill(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`crab distill TEACHER ...`: `python train.py --teacher TEACHER ...`, the same run (`training/distill.py`)."""
    from .training.arguments import parse_arguments
    from .training.distill import check_teacher, read_student_preset
    from .training.failures import failure_message

    read_student_preset(args.student)  # the two mistakes worth one line before train.py's checks
    check_teacher(args.teacher)
    argv = ["--teacher", args.teacher, "--student", args.student]
    for flag in ("manifest", "output_dir"):
        if getattr(args, flag):
            argv += [f"--{flag}", getattr(args, flag)]
    if args.unlabelled_manifest:
        argv += ["--unlabelled_manifest", *args.unlabelled_manifest]
    arguments = parse_arguments(argv + args.train_flags)
    from .training.run import train

    try:
        train(arguments)
    except Exception as error:
        stopped = failure_message(error, arguments.training.output_dir)
        if stopped is None:
            raise
        raise CliError(stopped[0].removeprefix("error: ")) from None
    return 0


def check_device(device: str | None, parser: argparse.ArgumentParser) -> None:
    """`--device`: a device torch knows and this machine has."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        parser.error(f"--device '{device}' is not a device; pass cpu, cuda, cuda:1, mps, ...")
    if parsed.type == "cpu":
        return
    backend = getattr(torch, parsed.type, None)
    available = backend is not None and hasattr(backend, "is_available") and backend.is_available()
    count = backend.device_count() if available and hasattr(backend, "device_count") else int(available)
    if not available or (parsed.index is not None and parsed.index >= count):
        have = f"{count} {parsed.type} device(s)" if available else f"no usable {parsed.type} device"
        parser.error(f"--device '{device}': this machine has {have}; pass --device cpu (or leave --device out)")


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _missing_model_files(path: Path) -> list[str]:
    """What a Crab export folder with a config.json lacks to load: weights, the processor's settings, the tokenizer's
    vocabulary, and the code files its config.json names (`auto_map`)."""
    missing = []
    if not (list(path.glob("*.safetensors")) or (path / "pytorch_model.bin").is_file()):
        missing.append("model.safetensors")
    if not ((path / "processor_config.json").is_file() or (path / "preprocessor_config.json").is_file()):
        missing.append("processor_config.json")
    if not ((path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()):
        missing.append("tokenizer.json")
    try:
        auto_map = json.loads((path / "config.json").read_text()).get("auto_map") or {}
    except (OSError, ValueError):
        auto_map = {}
    for reference in auto_map.values():
        module = str(reference).split("--")[-1].rsplit(".", 1)[0]  # "repo--module.Class" or "module.Class"
        if module and not (path / f"{module}.py").is_file() and f"{module}.py" not in missing:
            missing.append(f"{module}.py")
    return missing


def check_model(model: str, parser: argparse.ArgumentParser, flag: str = "--model") -> None:
    """`--model` (or `flag`): an export folder that holds a whole model, or something that can only be a Hub repo id. A path
    that does not exist is reported here instead of being looked up on the Hub."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            parser.error(
                f"{flag} '{model}' has no config.json, so it is not a Crab export; pass the folder train.py writes "
                "as <output_dir>/inference (or a checkpoint-N folder)"
            )
        missing = _missing_model_files(path)
        if missing:
            parser.error(
                f"{flag} '{model}' lacks {', '.join(missing)}; copy the whole folder, or export the model again "
                "(train.py writes <output_dir>/inference)"
            )
        from .training.checkpoints import safetensors_problem

        for weights in sorted(path.glob("*.safetensors")):
            problem = safetensors_problem(weights)
            if problem:
                parser.error(f"{flag} '{model}': {problem}; copy or export the model again")
        return
    first = model.split("/")[0]
    looks_local = (
        path.exists()
        or not _REPO_ID.match(model)
        or model.startswith((".", "~"))
        or (("/" in model) and Path(first).is_dir())
    )
    if looks_local:
        parser.error(
            f"{flag} '{model}' is not a folder here (nor a Hub repo id); pass the export folder (train.py writes "
            "<output_dir>/inference) or a Hub repo id such as user/crab-iemocap"
        )


def check_own_code(model: str, revision: str | None) -> None:
    """`crab predict` loads with `trust_remote_code=True`: the model's own code files only. A local folder or Hub repo
    whose config files name another repo's code (`owner/repo--module.Class`) is refused before anything is fetched
    or run."""
    from .export import foreign_code

    try:
        foreign = foreign_code(model, revision)
    except OSError as error:
        raise CliError(f"cannot load --model '{model}' ({_first_line(error)}); {_LOAD_FIX['hub']}") from None
    if not foreign:
        return
    names = "; ".join(foreign)
    if Path(model).expanduser().is_dir():
        fix = (
            "a local model folder runs only its own .py files: put that code in the folder and drop the "
            "'owner/repo--' prefix, or export the model again (train.py writes <output_dir>/inference)"
        )
    else:
        fix = (
            "crab predict runs only the code of the repo it is given; if you trust the other repo's code, load the "
            "model in Python with pipeline(..., trust_remote_code=True)"
        )
    raise CliError(f"--model '{model}' names code from another repo ({names}); {fix}")


# Python keyword arguments in pipeline messages, and the flags that set them here
_FLAGS = {
    "text=": "--text",
    "asr_model=": "--asr-model",
    "top_k=": "--top-k ",
    "chunk_length_s=": "--chunk-length-s ",
    "batch_size=": "--batch-size ",
}


def as_cli_message(error: BaseException) -> str:
    """One line for the terminal, with the pipeline's keyword arguments named as this command's flags."""
    message = " ".join(str(error).split()) or type(error).__name__
    message = (
        message.replace("text=None", "no --text").replace("text=...", "--text").replace("text=''", "--audio-only")
    )
    for keyword, flag in _FLAGS.items():
        message = re.sub(rf"(?<![\w-]){re.escape(keyword)}", flag, message)
    return message


_LOAD_FIX = {
    "folder": "export it again (train.py writes <output_dir>/inference; save_pretrained writes safetensors)",
    "hub": "check the repo id and --revision, and that you are online (or that the model is in the Hub cache)",
}


def _load_failure(error: BaseException) -> str:
    """What stopped a model from loading. transformers' `pipeline` reports each class it tried as a traceback in one
    "Could not load model ... See the original errors" message; the cause is the last line of the first."""
    text = str(error)
    if text.startswith("Could not load model") and "Traceback" in text:
        trace = text.split("Traceback", 2)[1]
        causes = [line.strip() for line in trace.splitlines() if re.match(r"^[\w.]+(Error|Exception)\b", line)]
        if causes:
            return causes[-1][:300]
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    try:
        commands = {"predict": predict, "annotate": annotate, "export-onnx": export_onnx, "distill": distill}
        return commands[args.command](args, parser)
    except KeyboardInterrupt:
        print("crab: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # every failure: one line naming the input and the fix
        print(f"crab: error: {as_cli_message(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
