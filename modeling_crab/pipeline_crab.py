"""The `speech-emotion-recognition` pipeline: speech (+ transcript) -> emotion scores (and emotional attributes).

Travels with every checkpoint (`export.py` copies this file and names it in `config.json`'s `custom_pipelines`), so
this works where the Crab package is not installed:

    pipe = pipeline("speech-emotion-recognition", model="user/crab-iemocap", trust_remote_code=True)
    pipe("speech.wav", text="I can't believe you did that")          # [{"label": "angry", "score": 0.71}, ...]
    pipe(["a.wav", {"raw": waveform, "sampling_rate": 8000}], text=["first transcript", "second"])
    pipe("speech.wav")                           # no transcript: Whisper transcribes it (`asr_model=` to change)
    pipe("speech.wav", text="")                  # audio only, for models trained with modality dropout
    pipe("long.wav", text="...", return_windows=True)  # {"aggregate": [...], "windows": [{start, end, scores}]}
    pipe(files, text=transcripts, batch_size=64, precision="bf16")  # GPU throughput: batched, bf16 autocast
    pipe(files, text=transcripts, batch_size=64, pad_to_buckets=True)  # batches padded to the trained buckets
    pipe(waveforms_b_by_n, text=transcripts)     # a 2-D array or tensor (B, N) is B recordings, as in the processor
    pipe("speech.wav", text="...", backend="onnx")  # onnxruntime on the export's onnx/ graph ("onnx-int8": int8)

The answer for one input depends on what the model predicts:
    classes only (no `config.attribute_names`, every checkpoint saved before attributes existed):
        [{"label": "angry", "score": 0.71}, ...]                     # ranked, best first; `top_k` keeps the best k
    emotional attributes (`config.attribute_names`), with or without classes:
        {"labels": [{"label": "angry", "score": 0.71}, ...],         # as above; [] for an attributes-only model
         "attributes": {"arousal": 0.71, "valence": 0.33, "dominance": 0.58}}  # config order, `top_k` ignores them
Attributes lie on the manifests' 0-1 scale (0 lowest, 1 highest; MSP-Podcast's 1-7 ratings map as (x - 1) / 6,
IEMOCAP's 1-5 as (x - 1) / 4). A list of inputs gets a list of answers. With `return_windows=True` an input's answer
is `{"aggregate": <the answer above>, "windows": [{"start", "end", "text", "scores"[, "attributes"]}], "text"}`.

Audio longer than the training crop (the processor's `max_duration_s`, 12 s) is cut into equal windows of at most
that length rather than truncated; each window is classified and the aggregate is the mean of the window
probabilities, and of the window attributes, weighted by window duration (`duration_weighted_mean`). A transcript you
pass goes with every window (truncated at the processor's `max_text_length` tokens); an automatic transcript is split
between windows by its timestamps.

Files are read by `audio.read_audio`, which travels with this file. Only torch, transformers, numpy and the standard
library are imported at module level: transformers refuses remote code whose imports are not installed
(`soundfile`, for non-WAV files, is imported by name when `read_audio` needs it).
"""

from __future__ import annotations

import importlib
import json
import math
import numbers
import os
import warnings

import numpy as np
import torch
from transformers import Pipeline, PreTrainedModel
from transformers.utils import logging as hf_logging

from .audio import MIN_AUDIO_S, as_waveform_list, check_sampling_rate, crop_length, mono_float32, read_audio, resample
from .configuration_crab import min_audio_samples
from .heads import answer, heads_of, window_answer
from .shape_buckets import ShapeBuckets
from .text import check_transcript, clean_transcript

PIPELINE_TASK = "speech-emotion-recognition"
# config.json `custom_pipelines`: what `pipeline(PIPELINE_TASK, model=..., trust_remote_code=True)` loads; every
# `save_pretrained` of a Crab model writes it, with this file
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {
        "impl": "pipeline_crab.CrabEmotionPipeline",
        "pt": ["AutoModelForAudioClassification"],
        "type": "multimodal",
    }
}
DEFAULT_ASR_MODEL = "openai/whisper-large-v3-turbo"
WHISPER_MAX_S = 30.0
# backend -> the graph `crab export-onnx` writes beside the safetensors (None: the PyTorch model)
BACKENDS = {"pytorch": None, "onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_quantized.onnx"}
# beside the graphs: the fingerprint of the weights they were exported from (`weights_fingerprint`)
ONNX_SOURCE = "onnx/source.json"
WEIGHTS_FILE = "model.safetensors"


def weights_fingerprint(path: str | os.PathLike) -> str:
    """A fingerprint of a weights file's contents, read in part: its size, its safetensors header (every tensor's
    name, dtype, shape and offsets) and 64 blocks of 64 KiB spread over it. Weights trained further, or another
    model's, differ in it; a copy of the same file does not. A second or so for the large model's 1.3 GB would be a
    full hash; this reads 4 MiB."""
    import hashlib

    digest, size = hashlib.sha256(), os.path.getsize(path)
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        header = handle.read(8)
        digest.update(header + handle.read(min(int.from_bytes(header, "little"), 1 << 24)))
        block = 1 << 16
        for i in range(64):
            handle.seek(max(0, (size - block) * i // 63))
            digest.update(handle.read(block))
    return digest.hexdigest()


def _check_graph_source(graph: str, source: str | None, weights: str | None, fix: str) -> None:
    """A graph answers only for the weights it was exported from: one exported before the model was trained further
    or exported again, or one `crab export-onnx` did not write this time (an int8 graph left from an earlier export,
    or graphs a Hub repo kept from an earlier upload), is refused naming the command that brings it up to date
    (`fix`). `source`: the `onnx/source.json` beside it (None where there is none); `weights`: the model's
    `model.safetensors` (None where the weights are in another form, sharded: nothing to compare with)."""
    if weights is None or not os.path.isfile(weights):
        return
    try:
        with open(source) as handle:
            recorded = json.load(handle)
    except (OSError, TypeError, ValueError):
        recorded = {}
    if not isinstance(recorded, dict):
        recorded = {}
    filename = "/".join(graph.replace(os.sep, "/").split("/")[-2:])  # onnx/model.onnx
    if recorded.get("weights") != weights_fingerprint(weights) or filename not in recorded.get("graphs", [filename]):
        raise FileNotFoundError(
            f"'{graph}' was not exported from the weights in '{weights}' (the model was trained or exported again "
            f"since, or the graph is left from an earlier export); {fix}"
        )


def _is_waveform_and_rate(item) -> bool:
    """A `(waveform, sampling_rate)` pair, as torchaudio.load and librosa.load return them."""
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[1], numbers.Integral)
        and not isinstance(item[1], bool)
        and isinstance(item[0], (np.ndarray, torch.Tensor, list))
        and (item[0].numel() if isinstance(item[0], torch.Tensor) else np.size(item[0])) > 2
    )


def _is_iterable_batch(inputs) -> bool:
    """A generator or another iterable of recordings that is not itself one (a path, bytes, an array, a dict)."""
    one = (str, bytes, bytearray, memoryview, os.PathLike, dict, list, tuple, np.ndarray, torch.Tensor)
    return not isinstance(inputs, one) and not hasattr(inputs, "read") and hasattr(inputs, "__iter__")


def speech_recognizer(asr_model=None, device=None):
    """A callable speech recognizer (audio dict -> {"text", "chunks"}) for missing transcripts: `asr_model` a model
    name or path (None: `DEFAULT_ASR_MODEL`) or a model, loaded as a transformers ASR pipeline on `device`, or a
    pipeline or other callable, used as it is. A recognizer that cannot load is a `RuntimeError` saying what to pass
    instead."""
    asr_model = DEFAULT_ASR_MODEL if asr_model is None else asr_model
    if isinstance(asr_model, (str, os.PathLike, PreTrainedModel)):
        from transformers import pipeline

        try:
            return pipeline("automatic-speech-recognition", model=asr_model, device=device)
        except Exception as error:
            raise RuntimeError(
                f"could not load the speech recognizer '{getattr(asr_model, 'name_or_path', asr_model)}' to "
                f"transcribe audio without a transcript ({error}); pass text=..., or asr_model= a local "
                "model or a built ASR pipeline"
            ) from error
    if not callable(asr_model):
        raise TypeError(f"asr_model is {type(asr_model).__name__}; pass a model name, a model or a pipeline")
    return asr_model


def transcribe(asr, waveform: np.ndarray, sampling_rate: int, spans: list) -> tuple[str, list[str]]:
    """A recording's transcript by `asr` (`speech_recognizer`), and with several windows (`spans`: (start, end) in
    seconds), each window's: the words whose timestamps fall in it (the whole transcript where there are none)."""
    audio = {"raw": waveform, "sampling_rate": sampling_rate}
    kwargs = {}
    if len(spans) > 1:
        kwargs["return_timestamps"] = True
    if spans[-1][1] > WHISPER_MAX_S:
        kwargs["chunk_length_s"] = WHISPER_MAX_S
    try:
        result = asr(audio, **kwargs)
    except (TypeError, ValueError):
        if not kwargs:
            raise
        result = asr(audio)
    result = {"text": result} if isinstance(result, str) else result
    text = result["text"].strip()
    chunks = result.get("chunks") or []
    if len(spans) == 1 or not chunks or any(None in tuple(c.get("timestamp", (None,))) for c in chunks):
        return text, [text] * len(spans)
    window_texts = []
    for start, end in spans:
        words = [c["text"].strip() for c in chunks if start <= sum(c["timestamp"]) / 2 < end]
        window_texts.append(" ".join(w for w in words if w) or text)
    return text, window_texts


class OnnxCrabSession:
    """An onnxruntime session over an exported Crab graph, called like the model on the processor's output:
    `session(**processor(...)) -> {"logits": (B, C), "attributes": (B, A)}`, float32 numpy arrays named as the
    model's outputs (a graph has `logits` when the model has classes, `attributes` when it has attributes). Needs
    `onnxruntime` (the `onnx` extra)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        try:
            onnxruntime = importlib.import_module("onnxruntime")
        except ImportError:
            raise ImportError("the ONNX backend needs onnxruntime: pip install onnxruntime") from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.path = str(path)
        self.session = onnxruntime.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        # a graph that ignores an input (an unmasked head ignores the padding masks) has dropped it
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, **inputs) -> dict[str, np.ndarray]:
        feed = {}
        for name in self.input_names:
            if inputs.get(name) is None:
                raise ValueError(f"the ONNX graph needs '{name}' from the processor (audio= and text=)")
            value = inputs[name]
            value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            feed[name] = value.astype(np.float32 if name == "input_values" else np.int64, copy=False)
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))


def _check_whole_number(name: str, value, meaning: str) -> None:
    """None, or an int >= 1 (not a bool, not a float)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r}; pass a whole number >= 1 ({meaning})")


def duration_weighted_mean(values: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """(windows, K) window outputs -> (K,): their mean weighted by the windows' `durations` (windows,). How a long
    recording's windows become one answer, probabilities and attributes alike."""
    return (values * durations[:, None]).sum(axis=0) / durations.sum()


def window_bounds(num_samples: int, max_samples: int | None) -> list[tuple[int, int]]:
    """Split `num_samples` into the fewest equal windows of at most `max_samples` (no short leftover window)."""
    if not max_samples or num_samples <= max_samples:
        return [(0, num_samples)]
    edges = np.linspace(0, num_samples, math.ceil(num_samples / max_samples) + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


class CrabEmotionPipeline(Pipeline):
    """Emotion recognition from speech and its transcript. See the module docstring for usage.

    Answer per input: the ranked list of `{"label", "score"}` for a model with classes only; for a model with
    emotional attributes, `{"labels": [ranked list, or [] without classes], "attributes": {name: value on the 0-1
    scale, in `config.attribute_names` order}}`.

    Call arguments (also accepted when building the pipeline):
        text: the transcript, or one per audio for a batch. `None` transcribes with `asr_model`; `""` classifies
            from audio alone (meant for models trained with modality dropout).
        sampling_rate: rate of waveforms passed as arrays without one (default: the model's, 16 kHz).
        top_k: how many labels to return, best first; `None` returns all (their scores sum to 1). It does not
            apply to attributes: a model with attributes always answers all of them.
        chunk_length_s: window length for long audio; `None` uses the training crop (`max_duration_s`), `0`
            classifies the whole recording in one pass.
        return_windows: return `{"aggregate", "windows", "text"}` instead of the aggregate answer; each window
            has its `scores` (ranked labels) and, for a model with attributes, its `attributes`.
        asr_model: a speech-recognition model name/path, a built ASR pipeline or model, for missing transcripts.
        batch_size: windows per forward pass (windows are batched longest first; answers keep the input order).
            Models trained without padding masks (`config.mask_padding=False`, the release recipe) see one window
            per pass, as in the released test protocol: padding would change their scores.
        backend: `"pytorch"` (default), `"onnx"` or `"onnx-int8"`: onnxruntime on the graph `crab export-onnx`
            wrote beside the weights (`onnx/model.onnx`, `onnx/model_quantized.onnx`; from the Hub, downloaded at the
            model's revision). Same processor, windows and answers; needs `onnxruntime`. CPU only, fp32 precision.
        precision: `"fp32"` (default) or `"bf16"`: bf16 autocast, with the speech CNN and the GRUs in fp32
            (`config.fp32_under_autocast`); probabilities within about 1.5e-2 of fp32; pays for batches on GPUs (at batch 1 its weight casts
            cost more than they save: bench/RESULTS.md).
        pad_to_buckets: pad each batch of windows to a shape bucket, so that a compiled model (static shapes, CUDA
            graphs) sees a handful of shapes: `True` for the buckets the model was trained with (the processor's
            `shape_buckets`), or `{"audio": [16 kHz samples, ...], "text": [tokens, ...]}` (a list: audio only).
            The same scores as without (the head masks the padding), to float rounding. Unset: each batch is padded
            to its longest window.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("the speech-emotion-recognition pipeline needs the Crab processor; pass processor=")
        tokenizer = self.processor.tokenizer
        if len(tokenizer) <= len(set(tokenizer.all_special_ids)):  # built without its vocabulary files
            raise ValueError(
                f"the model's tokenizer has no vocabulary (only its {len(tokenizer)} special tokens), so every "
                "transcript would be read as empty: the model folder lacks tokenizer.json (or vocab.json and "
                "merges.txt); copy or export the model again"
            )
        self.model.eval()
        self._asr_cache: dict = {}
        self._onnx_sessions: dict[str, OnnxCrabSession] = {}

    def _sanitize_parameters(
        self,
        sampling_rate=None,
        top_k=None,
        chunk_length_s=None,
        return_windows=None,
        asr_model=None,
        precision=None,
        backend=None,
        pad_to_buckets=None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)} for the speech-emotion-recognition pipeline")
        if precision not in (None, "fp32", "bf16"):
            raise ValueError(f"precision={precision!r}; use 'fp32' or 'bf16'")
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}; use one of {', '.join(map(repr, BACKENDS))}")
        _check_whole_number("top_k", top_k, "how many labels to return; None returns all")
        if chunk_length_s is not None and (
            isinstance(chunk_length_s, bool)
            or not isinstance(chunk_length_s, (int, float))
            or not (math.isfinite(chunk_length_s) and chunk_length_s >= 0)
        ):
            raise ValueError(
                f"chunk_length_s={chunk_length_s!r}; pass a window length in seconds, 0 for one pass over the whole "
                "recording, or None for the training crop"
            )
        if return_windows is not None and not isinstance(return_windows, bool):
            raise TypeError(f"return_windows={return_windows!r}; pass True or False")
        if pad_to_buckets is not None and not isinstance(pad_to_buckets, bool):
            pad_to_buckets = ShapeBuckets.of(pad_to_buckets)  # checked before any audio is read
        preprocess = {"sampling_rate": sampling_rate, "chunk_length_s": chunk_length_s, "asr_model": asr_model}
        forward = {"precision": precision, "backend": backend, "pad_to_buckets": pad_to_buckets}
        postprocess = {"top_k": top_k, "return_windows": return_windows}
        # only what was given, so that call arguments override those given when the pipeline was built
        preprocess = {key: value for key, value in preprocess.items() if value is not None}
        forward = {key: value for key, value in forward.items() if value is not None}
        postprocess = {key: value for key, value in postprocess.items() if value is not None}
        return preprocess, forward, postprocess

    def __call__(self, inputs, text: str | list[str] | None = None, **kwargs):
        """Classify one recording (-> its answer: the ranked `{"label", "score"}` list, or `{"labels",
        "attributes"}` for a model with attributes) or a list of them (-> a list of answers).

        Safe to call from several threads at once: a call keeps its state in local variables.
        """
        batch_size = kwargs.pop("batch_size", None)
        _check_whole_number("batch_size", batch_size, "windows per forward pass")
        batch_size = batch_size or self._batch_size or 1
        kwargs.pop("num_workers", None)
        preprocess, forward, postprocess = self._sanitize_parameters(**kwargs)
        preprocess = {**self._preprocess_params, **preprocess}
        forward = {**self._forward_params, **forward}
        postprocess = {**self._postprocess_params, **postprocess}

        # a list of numbers (numpy scalars too) is one waveform, a (waveform, sampling rate) pair one recording; any
        # other list, tuple or iterable (a generator) is a batch; a bare 2-D array or tensor is a batch (B, N), as in
        # the processor (`as_waveform_list`)
        if _is_waveform_and_rate(inputs):
            inputs = {"raw": inputs[0], "sampling_rate": inputs[1]}
        elif _is_iterable_batch(inputs):
            inputs = list(inputs)
        batch_array = isinstance(inputs, (np.ndarray, torch.Tensor)) and inputs.ndim == 2
        single = not batch_array and (
            not isinstance(inputs, (list, tuple)) or (len(inputs) > 0 and isinstance(inputs[0], numbers.Number))
        )
        items = as_waveform_list(inputs) if batch_array else [inputs] if single else list(inputs)
        items = [{"raw": i[0], "sampling_rate": i[1]} if _is_waveform_and_rate(i) else i for i in items]
        if not items:
            return []
        texts = self._pair_transcripts(items, text, single)
        prepared = [
            self.preprocess(item, text=t, name=self._name(item, i), **preprocess)
            for i, (item, t) in enumerate(zip(items, texts))
        ]

        outputs = self.score_recordings(prepared, batch_size, forward, postprocess, progress=True)
        return outputs[0] if single else outputs

    def score_recordings(
        self, prepared: list[dict], batch_size: int, forward_params: dict, postprocess_params: dict, progress=False
    ) -> list:
        """Recordings as `add_transcripts` gives them -> each one's answer (`postprocess`), their windows scored
        together (`score_windows`). What `__call__` and `crab annotate` answer with."""
        windows = [w for p in prepared for w in zip(p["waveforms"], p["window_texts"], p["window_names"])]
        scores = self.score_windows(windows, batch_size, forward_params, progress)
        outputs, offset = [], 0
        for p in prepared:
            count = len(p["waveforms"])
            window_outputs = {key: values[offset : offset + count] for key, values in scores.items()}
            outputs.append(self.postprocess({**p, **window_outputs}, **postprocess_params))
            offset += count
        return outputs

    def score_windows(self, windows: list, batch_size: int, forward_params: dict, progress: bool = False) -> dict:
        """`(waveform, transcript, name)` windows (16 kHz) -> each output head's window scores by `scores_key`,
        `(windows, K)` numpy arrays in the windows' order. The windows of any number of recordings go through the
        model longest first in batches of `batch_size` (little padding to compute; the head masks it); transcripts
        are padded as in training (the processor's saved `text_padding`). `forward_params`: `precision`, `backend`,
        `pad_to_buckets` (each batch padded to a shape bucket: the processor's `pad_to_buckets=`)."""
        forward_params = dict(forward_params)
        pad_to_buckets = forward_params.pop("pad_to_buckets", None)
        if not getattr(self.model.config, "mask_padding", True):
            if pad_to_buckets not in (None, False):
                raise ValueError(
                    "pad_to_buckets pads windows, and this model's head does not mask padding (config.mask_padding="
                    "False, the release recipe), so padding would change its scores; leave pad_to_buckets unset"
                )
            batch_size = 1  # an unmasked head computes another function on padded audio: one window at a time
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i][0]))
        scores = {head.scores_key: [] for head in heads_of(self.model.config)}  # each head's (windows, K) batches
        starts = range(0, len(windows), batch_size)
        if progress and len(starts) > 1:  # long audio, or many files: progress on a terminal, quiet elsewhere
            starts = hf_logging.tqdm(starts, desc="classifying windows", unit="batch", disable=None)
        for start in starts:
            chunk = [windows[i] for i in order[start : start + batch_size]]
            model_inputs = self.processor(
                audio=[w for w, _, _ in chunk],
                text=[t for _, t, _ in chunk],
                sampling_rate=self.processor.sampling_rate,
                max_duration_s=None,
                return_tensors="pt",
                names=[n for _, _, n in chunk],
                **({} if pad_to_buckets is None else {"pad_to_buckets": pad_to_buckets}),
            )
            chunk_outputs = {
                k: v for k, v in self.forward(dict(model_inputs), **forward_params).items() if v is not None
            }
            finite = torch.stack([torch.isfinite(v).all(dim=-1) for v in chunk_outputs.values()]).all(dim=0)
            if not finite.all():  # a last guard: never a NaN score
                bad = [n for (_, _, n), ok in zip(chunk, finite) if not ok]
                raise ValueError(
                    f"{', '.join(bad)} gave non-finite scores (the model overflowed on this audio); check that it is "
                    "speech at a normal level (float audio lies in [-1, 1])"
                )
            for key, value in chunk_outputs.items():
                scores[key].append(value)
        input_order = np.argsort(order)
        return {key: torch.cat(values).numpy()[input_order] for key, values in scores.items() if values}

    # -- stages ---------------------------------------------------------------------------------------------------
    def preprocess(self, inputs, text=None, name="audio", sampling_rate=None, chunk_length_s=None, asr_model=None):
        """One recording -> its windows (16 kHz waveforms), their time spans and the transcript of each."""
        if text is not None:
            check_transcript(text, f"the transcript of {name}")  # the processor's check, before any audio is read
        recording = self.read_windows(inputs, name, sampling_rate, chunk_length_s)
        return self.add_transcripts(recording, text, name, asr_model)

    def read_windows(self, inputs, name="audio", sampling_rate=None, chunk_length_s=None) -> dict:
        """One recording -> `{"waveforms", "spans"}`: its windows (16 kHz waveforms) and their spans in seconds. The
        audio half of `preprocess`, which needs neither the model nor a speech recognizer (`crab annotate` runs it in
        DataLoader workers)."""
        waveform, rate = self._load_audio(inputs, sampling_rate, name)
        target = self.processor.sampling_rate
        if rate != target:
            waveform = resample(waveform, rate, target)
        if waveform.size < round(MIN_AUDIO_S * target):
            raise ValueError(
                f"{name} is {waveform.size / target * 1000:.0f} ms long; pass at least {MIN_AUDIO_S * 1000:.0f} ms of "
                "speech"
            )
        if waveform.size < self._min_samples():
            raise ValueError(
                f"{name} is {waveform.size / target * 1000:.0f} ms long, shorter than one frame of this model's "
                f"speech encoder; pass at least {self._min_samples() / target * 1000:.0f} ms of speech"
            )
        if chunk_length_s is None:
            chunk_length_s = self.processor.max_duration_s
        bounds = window_bounds(len(waveform), crop_length(chunk_length_s or None, target))
        return {
            "waveforms": [waveform[start:end] for start, end in bounds],
            "spans": [(start / target, end / target) for start, end in bounds],
        }

    def add_transcripts(self, recording: dict, text: str | None, name="audio", asr_model=None) -> dict:
        """`read_windows`' windows + the recording's transcript (`None`: transcribed by `asr_model`, split between
        the windows by its timestamps) -> the input of `score_windows` and `postprocess`: adds `window_texts`,
        `window_names` and `text`."""
        spans = recording["spans"]
        if text is not None and not clean_transcript(text):
            text = ""  # nothing visible: the empty transcript (audio only)
        if text is None:
            text, window_texts = self._transcribe(np.concatenate(recording["waveforms"]), spans, asr_model)
        else:
            if text == "" and not getattr(self.model.config, "modality_dropout", 0.0):
                warnings.warn(
                    f"{name}: an empty transcript asks for audio-only prediction, but this model was trained "
                    "without modality dropout; pass the transcript, or text=None to transcribe it",
                    stacklevel=4,
                )
            window_texts = [text] * len(spans)
            self._warn_if_cut(text, name, len(spans))
        names = [name] if len(spans) == 1 else [f"{name} ({start:.2f}-{end:.2f} s)" for start, end in spans]
        return {**recording, "window_texts": window_texts, "window_names": names, "text": text}

    def _warn_if_cut(self, text: str, name: str, n_windows: int) -> None:
        """A transcript longer than the processor's `max_text_length` tokens is cut to its first ones, as in
        training; the caller is told, with what the model reads of it."""
        limit = self.processor.max_text_length
        (length,) = self.processor.transcript_lengths([text])
        if length <= limit:
            return
        windows = f"; each of its {n_windows} windows gets those same tokens" if n_windows > 1 else ""
        warnings.warn(
            f"the transcript of {name} is {length} tokens, and the model reads only its first {limit} (the "
            f"processor's max_text_length, as in training){windows}. Pass each clip with its own transcript, or "
            "text=None to transcribe each window",
            stacklevel=5,
        )

    def _forward(self, model_inputs, precision: str = "fp32", backend: str = "pytorch"):
        """A batch of windows -> each output head's window scores (`OutputHead.scores`) by its `scores_key`:
        `probabilities` (windows, C), `attributes` (windows, A)."""
        heads = heads_of(self.model.config)
        if BACKENDS[backend] is not None:
            if precision != "fp32":
                raise ValueError(f"precision={precision!r} is for the PyTorch backend; backend={backend!r} runs fp32")
            outputs = self._onnx_session(backend)(**model_inputs)
            predictions = {head.scores_key: outputs.get(head.output) for head in heads}
            predictions = {key: torch.from_numpy(value) for key, value in predictions.items() if value is not None}
        else:
            dtype = next(self.model.parameters()).dtype
            model_inputs["input_values"] = model_inputs["input_values"].to(dtype)
            device_type = model_inputs["input_values"].device.type
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                output = self.model(**model_inputs)
            # code saved before a head existed (an old export's own model class) has no output for it
            predictions = {head.scores_key: getattr(output, head.output, None) for head in heads}
        return {
            head.scores_key: head.scores(predictions[head.scores_key])
            for head in heads
            if predictions.get(head.scores_key) is not None
        }

    def postprocess(self, model_outputs, top_k=None, return_windows=False):
        """Each output head's window scores (windows, K), by `scores_key` -> the answer (`heads.answer`); the aggregate
        is their duration-weighted mean over the windows."""
        heads = [head for head in heads_of(self.model.config) if model_outputs.get(head.scores_key) is not None]
        spans = model_outputs["spans"]
        durations = np.array([end - start for start, end in spans])
        aggregate = {
            head.scores_key: duration_weighted_mean(model_outputs[head.scores_key], durations) for head in heads
        }
        result = answer(heads, aggregate, top_k)
        if not return_windows:
            return result
        windows = []
        for i, ((start, end), text) in enumerate(zip(spans, model_outputs["window_texts"])):
            window_scores = {head.scores_key: model_outputs[head.scores_key][i] for head in heads}
            window = {"start": round(start, 3), "end": round(end, 3), "text": text}
            windows.append({**window, **window_answer(heads, window_scores, top_k)})
        return {"aggregate": result, "windows": windows, "text": model_outputs["text"]}

    # -- helpers --------------------------------------------------------------------------------------------------
    def _onnx_session(self, backend: str) -> OnnxCrabSession:
        """The onnxruntime session of `backend`, opened on first use: the graph in the model's own folder, or
        downloaded from its Hub repo at the revision the model was loaded from."""
        if backend not in self._onnx_sessions:
            source, filename = self.model.config._name_or_path, BACKENDS[backend]
            if os.path.isdir(source):
                path = os.path.join(source, filename)
                if not os.path.isfile(path):
                    raise FileNotFoundError(
                        f"'{source}' has no {filename} for backend={backend!r}; run: crab export-onnx {source}"
                    )
                recorded, weights = os.path.join(source, ONNX_SOURCE), os.path.join(source, WEIGHTS_FILE)
                fix = f"run: crab export-onnx {source}"
            else:
                from transformers.utils import cached_file

                revision = getattr(self.model.config, "_commit_hash", None)
                try:
                    path = cached_file(source, filename, revision=revision)
                except Exception as error:
                    raise FileNotFoundError(
                        f"cannot get {filename} of '{source}' for backend={backend!r} ({error}); the repo needs the "
                        "ONNX graphs (crab export-onnx, then push_to_hub.py --onnx)"
                    ) from None
                found = {
                    name: cached_file(
                        source,
                        name,
                        revision=revision,
                        _raise_exceptions_for_missing_entries=False,
                        _raise_exceptions_for_connection_errors=False,
                    )
                    for name in (ONNX_SOURCE, WEIGHTS_FILE)
                }
                recorded, weights = found[ONNX_SOURCE], found[WEIGHTS_FILE]
                fix = (
                    f"'{source}' was uploaded again without new graphs: push it with push_to_hub.py --onnx, or use the "
                    "pytorch backend"
                )
            _check_graph_source(path, recorded, weights, fix)
            self._onnx_sessions.setdefault(backend, OnnxCrabSession(path))
        return self._onnx_sessions[backend]

    def _min_samples(self) -> int:
        return min_audio_samples(self.model.config.audio_config)

    @staticmethod
    def _name(item, index: int) -> str:
        return f"audio file '{item}'" if isinstance(item, (str, os.PathLike)) else f"audio {index}"

    @staticmethod
    def _pair_transcripts(items: list, text, single: bool) -> list:
        if isinstance(text, (list, tuple)) and single and len(text) == 1:
            text = text[0]  # one recording, its one transcript in a list
        if isinstance(text, (list, tuple)):
            if single or len(text) != len(items):
                raise ValueError(f"got {len(items)} audio input(s) but {len(text)} transcripts; pass one per audio")
            return list(text)
        if text is not None and text != "" and not single:
            raise ValueError(f"got {len(items)} audio inputs but one transcript string; pass text=[...] per audio")
        return [item.get("text", text) if isinstance(item, dict) else text for item in items]

    def _load_audio(self, inputs, sampling_rate, name: str) -> tuple[np.ndarray, int]:
        target = self.processor.sampling_rate
        if isinstance(inputs, (bytearray, memoryview)):  # the bytes of an audio file, not 8-bit samples
            inputs = bytes(inputs)
        elif hasattr(inputs, "read") and not isinstance(inputs, (np.ndarray, torch.Tensor)):  # a file object, BytesIO
            data = inputs.read()
            if isinstance(data, str):
                raise TypeError(
                    f"{name} is a file opened in text mode; open it with open(path, 'rb'), or pass the path"
                )
            inputs = bytes(data)
        if isinstance(inputs, (str, os.PathLike, bytes)):
            return read_audio(inputs, name if isinstance(inputs, (str, os.PathLike)) else None, target)
        if isinstance(inputs, dict):  # {'raw'|'array', 'sampling_rate'}, or a datasets Audio value
            array = inputs.get("raw", inputs.get("array"))
            if array is None and (inputs.get("bytes") or inputs.get("path")):  # datasets Audio(decode=False)
                data, path = inputs.get("bytes"), inputs.get("path")
                if data:
                    return read_audio(bytes(data), f"{name} (bytes of '{path}')", target)
                return read_audio(path, name, target)
            rate = inputs.get("sampling_rate")
            if array is None or rate is None:
                raise ValueError(
                    f"{name} is a dict with keys {sorted(inputs)}; pass {{'raw': array, 'sampling_rate': sr}} or a "
                    "datasets audio value ({'array', 'sampling_rate'} or {'path', 'bytes'})"
                )
            inputs, sampling_rate = array, rate
        waveform = mono_float32(inputs, name)  # the processor's checks of an array
        rate = self.processor.sampling_rate if sampling_rate is None else check_sampling_rate(sampling_rate, name)
        return waveform, rate

    def _asr(self, asr_model):
        """The speech recognizer for `asr_model` (`speech_recognizer`), loaded once per pipeline."""
        key = DEFAULT_ASR_MODEL if asr_model is None else asr_model
        key = key if isinstance(key, str) else id(key)
        if key not in self._asr_cache:
            self._asr_cache[key] = speech_recognizer(asr_model, self.device)
        return self._asr_cache[key]

    def _transcribe(self, waveform: np.ndarray, spans: list, asr_model) -> tuple[str, list[str]]:
        return transcribe(self._asr(asr_model), waveform, self.processor.sampling_rate, spans)
