"""Helpers of the bad-input tests: audio made and written on the spot, scores read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import LABELS

from modeling_crab.manifest import ManifestError, load_manifest
from modeling_crab.training.data import scan_manifest

SR = 16000


def noise(seconds: float, rate: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    shape = (int(seconds * rate),) if channels == 1 else (int(seconds * rate), channels)
    return (np.random.default_rng(seed).standard_normal(shape) * 0.1).astype(np.float32)


def write(path: Path, samples: np.ndarray, rate: int = SR, subtype: str = "PCM_16") -> str:
    sf.write(str(path), samples, rate, subtype=subtype)
    return str(path)


def truncate(path: Path, out: Path, keep_fraction: float = 0.5) -> str:
    """`out`: `path` cut mid-sample, so the header promises more frames than the file holds."""
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * keep_fraction) | 1])
    return str(out)


def scores(result: list[dict]) -> np.ndarray:
    by_label = {s["label"]: s["score"] for s in result}
    return np.array([by_label[LABELS[i]] for i in range(len(LABELS))])


def direct(crab, audio: np.ndarray, text: str, rate: int) -> np.ndarray:
    """The model's probabilities for one utterance, without the pipeline."""
    model, processor, _, _ = crab
    batch = processor(audio=[audio], text=[text], sampling_rate=rate, max_duration_s=None)
    with torch.no_grad():
        return model(**batch).logits.softmax(-1)[0].numpy()


def manifest(tmp_path: Path, rows: list[str], header: str = "id,audio,text,label,split") -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def scan_problems(path: Path, labels=("sad", "happy"), **kwargs) -> str:
    with pytest.raises(ManifestError) as error:
        scan_manifest(load_manifest(path), list(labels), num_workers=1, **kwargs)
    return str(error.value)


def predict(crab, *args: str) -> list[str]:
    return ["predict", *args, "--model", str(crab[3]), "--device", "cpu", "--json"]
