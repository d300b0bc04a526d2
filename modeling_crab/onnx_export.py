"""ONNX export of the inference model and onnxruntime inference (the `onnx` extra: `pip install "crab-ser[onnx]"`).

The graph is the inference model (no CSL legs) from the processor's four tensors to its outputs, named as the
model's: `logits` (B, C) for a model with classes, `attributes` (B, A) for one with emotional attributes (both for a
joint model; `graph_outputs`), with dynamic batch, audio length and token length; padding masks are inputs, so a padded batch scores as one-by-one calls do. The
processor stays in Python and is shared with the PyTorch path.

Exporter: torch's `torch.export`-based ONNX exporter (opset 18). Its generic GRU decomposition fails on the head's
recurrences, and packed sequences are data-dependent; so for export each unimodal block's GRU becomes one marker op,
`crab::masked_bigru`, translated to ONNX's own bidirectional `GRU` with `sequence_lens`, which reads each utterance
to its own length in both directions: the function the head computes in PyTorch.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import secrets
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .configuration_crab import min_audio_samples
from .heads import heads_of
from .pipeline_crab import BACKENDS, ONNX_SOURCE, WEIGHTS_FILE, OnnxCrabSession, weights_fingerprint

OPSET = 18
# beside the safetensors in an export or a Hub repo, as repos that serve several runtimes do; the pipeline's
# `backend=` names read them
ONNX_FOLDER, MODEL_FILE = BACKENDS["onnx"].split("/")
QUANTIZED_FILE = BACKENDS["onnx-int8"].split("/")[1]
ONNX_SOURCE_NAME = ONNX_SOURCE.split("/")[1]
INPUT_NAMES = ("input_values", "attention_mask", "input_ids", "text_attention_mask")
# the `onnx` extra: the exporter (onnx, onnxscript) and the runtime and quantizer (onnxruntime)
ONNX_EXTRA = ("onnx", "onnxscript", "onnxruntime")
INSTALL_ONNX_EXTRA = "pip install 'crab-ser[onnx]'"


def check_onnx_extra() -> None:
    """Import the `onnx` extra's packages (`ONNX_EXTRA`); an `ImportError` naming the first one that is missing (or
    fails to import) and the line that installs them, before anything is written."""
    for name in ONNX_EXTRA:
        try:
            importlib.import_module(name)
        except ImportError as error:
            missing = error.name or name
            if isinstance(error, ModuleNotFoundError):
                why = "is not installed"
            else:
                why = f"cannot be imported ({' '.join(str(error).split())[:300]})"
            raise ImportError(
                f"the ONNX export needs {missing}, which {why}; install the onnx extra: {INSTALL_ONNX_EXTRA}",
                name=missing,
            ) from error


# loggers of the exporter, its optimizer and the quantizer: progress notes at WARNING (an optional op set it skips,
# a constant it does not fold, an attribute type it infers), none of them about the graph written
_NOTE_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir", "onnxruntime")


class _QuantizerNotes(logging.Filter):
    """onnxruntime's quantizer logs its advice (run its pre-processing first) on the root logger; below ERROR, those
    records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_quantizer = f"{os.sep}onnxruntime{os.sep}" in record.pathname
        return record.levelno >= logging.ERROR or not from_quantizer


def _no_bar(factory, args, kwargs):
    return factory(*args, **{**kwargs, "disable": True})


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Within: what the libraries print while a model is loaded, exported and quantized is only what goes wrong.
    transformers' progress bars (loading, saving weights) are off; the loggers of the exporter, its optimizer and
    the quantizer print ERROR and above, unless a level was set on them (`TORCH_LOGS=+onnx` sets torch.onnx's); the
    quantizer's advice on the root logger is dropped; the libraries' deprecation notices to one another
    (`FutureWarning`, `DeprecationWarning` raised outside this package) and the exporter's note on dynamic axes
    shared by several inputs are not shown. Exceptions propagate as they are. All restored after, the root logger's
    handlers included (`logging.warning`, as the quantizer calls it, gives a root logger without handlers one); not
    thread-safe (as `warnings.catch_warnings`)."""
    from transformers.utils import logging as transformers_logging

    loggers = [logging.getLogger(name) for name in _NOTE_LOGGERS]
    levels = [logger.level for logger in loggers]
    root = logging.getLogger()
    root_handlers = list(root.handlers)
    notes = _QuantizerNotes()
    previous_hook = transformers_logging.set_tqdm_hook(_no_bar)
    try:
        for logger in loggers:
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.ERROR)
        root.addFilter(notes)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"(?!modeling_crab\b)")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(?!modeling_crab\b)")
            # the exporter names each dynamic axis once and warns about the inputs that share it (attention masks)
            warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
            yield
    finally:
        if not root_handlers:
            for handler in list(root.handlers):
                root.removeHandler(handler)
        root.removeFilter(notes)
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        transformers_logging.set_tqdm_hook(previous_hook)


@torch.library.custom_op("crab::masked_bigru", mutates_args=())
def masked_bigru(
    x: torch.Tensor, lengths: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor, hidden_size: int
) -> torch.Tensor:
    """(B, T, H), lengths (B,) -> (B, T, 2h): a 1-layer bidirectional GRU reading each row to its length (zeros
    after it), with ONNX `GRU`'s weights `w` (2, 3h, H), `r` (2, 3h, h), `b` (2, 6h). A marker for export only: in
    PyTorch the model computes this with `CrabUnimodalBlock.recurrence`."""
    raise RuntimeError("crab::masked_bigru is an export marker; run the model itself in PyTorch")


@masked_bigru.register_fake
def _(x, lengths, w, r, b, hidden_size):
    return x.new_empty(x.shape[0], x.shape[1], 2 * hidden_size)


def _onnx_masked_bigru(x, lengths, w, r, b, hidden_size: int):
    """`crab::masked_bigru` as ONNX `GRU` (`linear_before_reset=1` is PyTorch's formula for the new gate)."""
    from onnxscript import opset18 as op

    y, _ = op.GRU(
        op.Transpose(x, perm=[1, 0, 2]),  # (T, B, H)
        w,
        r,
        b,
        op.Cast(lengths, to=6),  # int32
        direction="bidirectional",
        hidden_size=hidden_size,
        linear_before_reset=1,
    )  # (T, 2, B, h); zeros past each row's length
    y = op.Transpose(y, perm=[2, 0, 1, 3])  # (B, T, 2, h)
    return op.Reshape(y, op.Concat(op.Shape(y, start=0, end=2), op.Constant(value_ints=[-1]), axis=0))


def _onnx_gru_weights(gru: nn.GRU) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """nn.GRU's parameters as ONNX `GRU` inputs W (2, 3h, H), R (2, 3h, h), B (2, 6h): directions stacked
    (forward, reverse) and gates reordered from PyTorch's (r, z, n) to ONNX's (z, r, h). Computed on the
    parameters, so the exported graph holds them as constants."""
    h = gru.hidden_size

    def zrh(tensor: torch.Tensor) -> torch.Tensor:
        return torch.cat([tensor[h : 2 * h], tensor[:h], tensor[2 * h :]])

    def stacked(name: str) -> torch.Tensor:
        return torch.stack([zrh(getattr(gru, f"{name}_l0")), zrh(getattr(gru, f"{name}_l0_reverse"))])

    bias = torch.cat([stacked("bias_ih"), stacked("bias_hh")], dim=1)
    return stacked("weight_ih"), stacked("weight_hh"), bias


def _marker_recurrence(block: nn.Module):
    """A `recurrence(x, mask)` for `block` that calls the export marker (every row full length without a mask)."""
    gru = block.gru

    def recurrence(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int32, device=x.device)
        else:
            lengths = mask.sum(dim=1).to(torch.int32)
        return torch.ops.crab.masked_bigru(x, lengths, *_onnx_gru_weights(gru), gru.hidden_size)

    return recurrence


@contextmanager
def _exportable(model: nn.Module) -> Iterator[None]:
    """Within: each unimodal block's `recurrence` calls the export marker. Restored after, whatever happens
    (including an instance override such as `run_in_fp32_under_autocast`'s)."""
    from .modeling_crab import CrabUnimodalBlock

    blocks = [module for module in model.modules() if isinstance(module, CrabUnimodalBlock)]
    saved = [vars(block).get("recurrence") for block in blocks]
    for block in blocks:
        block.recurrence = _marker_recurrence(block)
    try:
        yield
    finally:
        for block, recurrence in zip(blocks, saved):
            if recurrence is None:
                del block.recurrence
            else:
                block.recurrence = recurrence


def graph_outputs(config) -> list[str]:
    """The graph's outputs for a model with this config, one per output head (`OutputHead.output`): `logits` where
    it has classes, `attributes` where it has emotional attributes (`config.attribute_names`)."""
    return [head.output for head in heads_of(config)]


class _GraphOutputs(nn.Module):
    """The four processor tensors -> the model's `graph_outputs`: logits (B, C) and/or attributes (B, A)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.names = graph_outputs(model.config)

    def forward(self, input_values, attention_mask, input_ids, text_attention_mask):
        output = self.model(
            input_values=input_values,
            attention_mask=attention_mask,
            input_ids=input_ids,
            text_attention_mask=text_attention_mask,
            output_csl_embeddings=False,
        )
        return tuple(getattr(output, name) for name in self.names)


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = OPSET) -> Path:
    """Write `model` (a `CrabForEmotionClassification`; its CSL legs are not used) as ONNX to `path`: inputs
    `INPUT_NAMES` with dynamic batch, samples and tokens, outputs `graph_outputs(model.config)` (`logits` (B, C),
    `attributes` (B, A)). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model).eval()
    batch, samples = (
        torch.export.Dim("batch"),
        torch.export.Dim("samples", min=min_audio_samples(model.config.audio_config)),
    )
    tokens = torch.export.Dim("tokens", min=2)
    example = _example_inputs(model)
    dynamic_shapes = {
        "input_values": {0: batch, 1: samples},
        "attention_mask": {0: batch, 1: samples},
        "input_ids": {0: batch, 1: tokens},
        "text_attention_mask": {0: batch, 1: tokens},
    }
    with torch.no_grad(), _exportable(model), quiet_libraries():
        graph = _GraphOutputs(model).eval()  # a new module is in training mode; the graph is the eval one
        program = torch.onnx.export(
            graph,
            tuple(example[name] for name in INPUT_NAMES),
            input_names=list(INPUT_NAMES),
            output_names=graph.names,
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            dynamo=True,
            custom_translation_table={torch.ops.crab.masked_bigru.default: _onnx_masked_bigru},
            optimize=True,
            verbose=False,
        )
        program.save(str(path))
    return path


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    quantize: bool = True,
    revision: str | None = None,
    opset: int = OPSET,
) -> list[Path]:
    """Export a Crab model (an export folder, train.py's `--output_dir`, or a Hub repo id) to `onnx/model.onnx` and,
    with `quantize`, `onnx/model_quantized.onnx` (int8), in `out_dir` (default: the checkpoint's own folder).
    A new `out_dir` also gets the inference export (safetensors, config, processor), so it serves both runtimes, as
    a Hub repo does. Returns the ONNX files.

    The `onnx` extra is checked before anything is read or written (`check_onnx_extra`). Nothing is left half-made:
    the graphs are written into a hidden folder beside `out_dir/onnx` and take its place once whole, and a new
    `out_dir` is built whole beside its place the same way; a failure or an interrupt removes what the export wrote
    (and the folders it created). Earlier graphs serve until the new ones are in place (where the export also
    rewrites the weights of an existing `out_dir`, the pipeline refuses them from then on). `onnx/` holds this
    export's files only: the graphs and `source.json`, the fingerprint of the weights beside them
    (`weights_fingerprint`) and the graphs written, which the pipeline checks before it serves a graph."""
    check_onnx_extra()
    from .export import inference_folder
    from .modeling_crab import CrabForEmotionClassification
    from .processing_crab import CrabProcessor

    source = inference_folder(checkpoint)
    local = source.is_dir()
    if local and not (source / "config.json").is_file():
        raise FileNotFoundError(
            f"'{checkpoint}' has no config.json; pass an export folder, train.py's --output_dir or a Hub repo id"
        )
    if out_dir is None and not local:
        raise ValueError(f"'{checkpoint}' is not a local folder; pass an output folder to export the Hub model into")
    out = source if out_dir is None else Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"'{out}' is a file; pass a folder to export into")
    with quiet_libraries():
        model = CrabForEmotionClassification.from_pretrained(str(source), revision=revision).eval()
        processor = None
        if out.resolve() != source.resolve():
            processor = CrabProcessor.from_pretrained(str(source), revision=revision)
        return _write_export(model, processor, out, quantize, opset)


def _write_export(model: nn.Module, processor, out: Path, quantize: bool, opset: int) -> list[Path]:
    """`export_checkpoint`'s writing: the graphs, `source.json` and, with a `processor`, the inference export, into
    `out`, each new folder built whole in a hidden folder beside its place (`_scratch_folder`), then moved there."""
    from .export import export_for_inference

    new = not out.exists()
    created = [folder for folder in (out.parent, *out.parent.parents) if not folder.exists()] if new else []
    scratch = None
    try:
        if new:
            out.parent.mkdir(parents=True, exist_ok=True)
            scratch = building = _scratch_folder(out, "partial")
            graphs = building / ONNX_FOLDER
            graphs.mkdir()
        else:
            building = out
            scratch = graphs = _scratch_folder(out / ONNX_FOLDER, "partial")
        written = [export_onnx(model, graphs / MODEL_FILE, opset)]
        if quantize:
            written.append(quantize_onnx(written[0], graphs / QUANTIZED_FILE))
        if processor is not None:
            export_for_inference(model, processor, building)
        weights = building / WEIGHTS_FILE
        source = {
            "weights": weights_fingerprint(weights) if weights.is_file() else None,
            "graphs": [f"{ONNX_FOLDER}/{path.name}" for path in written],
        }
        (graphs / ONNX_SOURCE_NAME).write_text(json.dumps(source, indent=2) + "\n")
        if new:
            building.rename(out)
        else:
            _replace_folder(graphs, out / ONNX_FOLDER)
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        for folder in created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return [out / ONNX_FOLDER / path.name for path in written]


def _scratch_folder(place: Path, kind: str) -> Path:
    """A new, empty hidden folder beside `place` (`.onnx.partial-1a2b3c4d` for `onnx`), on its file system."""
    while True:
        folder = place.with_name(f".{place.name}.{kind}-{secrets.token_hex(4)}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def _replace_folder(folder: Path, place: Path) -> None:
    """Move `folder` to `place`; an earlier folder there stays in place until the move and is removed after it."""
    if not place.exists():
        folder.rename(place)
        return
    earlier = place.with_name(f".{place.name}.old-{secrets.token_hex(4)}")
    place.rename(earlier)
    try:
        folder.rename(place)
    except BaseException:
        earlier.rename(place)
        raise
    shutil.rmtree(earlier, ignore_errors=True)


def _example_inputs(model: nn.Module) -> dict[str, torch.Tensor]:
    """A padded batch of two, for tracing: rows of different lengths so no size is specialised to a constant."""
    config = model.config.text_config
    generator = torch.Generator().manual_seed(0)
    samples = 8 * min_audio_samples(model.config.audio_config)
    input_values = torch.randn(2, samples, generator=generator) * 0.1
    attention_mask = torch.ones(2, samples, dtype=torch.long)
    attention_mask[1, samples * 2 // 3 :] = 0
    input_ids = torch.randint(3, config.vocab_size, (2, 7), generator=generator)
    input_ids[:, 0], input_ids[0, -1], input_ids[1, 4] = config.bos_token_id, config.eos_token_id, config.eos_token_id
    input_ids[1, 5:] = config.pad_token_id
    text_attention_mask = (input_ids != config.pad_token_id).long()
    return {
        "input_values": input_values,
        "attention_mask": attention_mask,
        "input_ids": input_ids,
        "text_attention_mask": text_attention_mask,
    }


def quantize_onnx(path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """int8 dynamic quantization of the linear layers (MatMul/Gemm weights; activations quantized per call):
    onnxruntime's quantizer. The convolutions (the speech CNN) and the GRUs stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_path = Path(out_path)
    with quiet_libraries():
        quantize_dynamic(Path(path), out_path, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    return out_path


__all__ = [
    "OPSET",
    "ONNX_EXTRA",
    "check_onnx_extra",
    "quiet_libraries",
    "ONNX_FOLDER",
    "MODEL_FILE",
    "QUANTIZED_FILE",
    "export_checkpoint",
    "export_onnx",
    "graph_outputs",
    "quantize_onnx",
    "OnnxCrabSession",
]
