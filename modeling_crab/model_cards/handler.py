"""Inference Endpoints handler for a Crab model repository (copied to the repo root by push_to_hub.py).

Request (JSON):  {"inputs": "<base64 audio file>" | [float samples], "parameters": {"text": "...",
                  "sampling_rate": 16000, "top_k": 3, "return_windows": false, "chunk_length_s": 12}}
    sampling_rate: the rate of a list of samples (required with one). Optional: text, the transcript (left out, the
    pipeline transcribes the audio with Whisper); top_k, how many labels to return, best first; return_windows, also
    each window's answer; chunk_length_s, the window length for long audio.
Request (audio/wav, audio/flac, ... body): the endpoint passes {"inputs": <bytes>}; Whisper transcribes the audio.
Response: the pipeline's answer for the recording, in a list, as the model's README.md shows it for that model:
    classes only (no `config.attribute_names`): the ranked labels, best first, are the list:
        [{"label": "angry", "score": 0.71}, ...]
    classes and emotional attributes (0-1 scale, `config.attribute_names` order; `top_k` applies to the labels):
        [{"labels": [{"label": "angry", "score": 0.71}, ...], "attributes": {"arousal": 0.71, ...}}]
    attributes only (no classes):
        [{"labels": [], "attributes": {"arousal": 0.71, ...}}]
    return_windows: [{"aggregate": <the answer>, "windows": [{"start", "end", "text", "scores"[, "attributes"]}],
        "text"}], a window's `scores` being its ranked labels ([] without classes).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from transformers import pipeline

PARAMETERS = ("text", "sampling_rate", "top_k", "return_windows", "chunk_length_s")


class EndpointHandler:
    def __init__(self, path: str = "") -> None:
        self.classifier = pipeline("speech-emotion-recognition", model=path or ".", trust_remote_code=True)

    def __call__(self, data: dict[str, Any]) -> list:
        if "inputs" not in data:
            raise ValueError(
                f"the request has keys {sorted(data)}; send {{'inputs': <base64 audio>, 'parameters': {{...}}}}"
            )
        parameters = dict(data.get("parameters") or {})
        unknown = sorted(set(parameters) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; use {list(PARAMETERS)}")
        text = parameters.pop("text", None)
        sampling_rate = parameters.pop("sampling_rate", None)
        audio = decode_audio(data["inputs"], sampling_rate)
        result = self.classifier(audio, text=text, **parameters)
        return result if isinstance(result, list) else [result]


def decode_audio(inputs: Any, sampling_rate: int | None) -> bytes | dict:
    """bytes of an audio file, a base64 string of one (optionally a data: URL), or a list of float samples."""
    if isinstance(inputs, (bytes, bytearray)):
        return bytes(inputs)
    if isinstance(inputs, str):
        encoded = inputs.split(",", 1)[1] if inputs.startswith("data:") else inputs
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"'inputs' is a string but not base64 audio ({error}); base64-encode the file") from None
    if isinstance(inputs, list) and inputs and all(isinstance(x, (int, float)) for x in inputs):
        if sampling_rate is None:
            raise ValueError("'inputs' is a list of samples; give their rate in parameters.sampling_rate")
        return {"raw": np.asarray(inputs, dtype=np.float32), "sampling_rate": int(sampling_rate)}
    raise ValueError(f"'inputs' is {type(inputs).__name__}; send base64 audio file bytes or a list of float samples")
