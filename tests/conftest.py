"""Offline fixtures: tiny random encoders and a tokenizer trained on the spot. Nothing comes from the Hub."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2FeatureExtractor, pipeline

from modeling_crab import CrabProcessor
from modeling_crab.training.tiny import build_tiny_tokenizer, tiny_crab_config

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one process per core, each with one intra-op thread
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The slow tests first (a stable sort): with `pytest -n`, each worker starts on a long one and the short ones
    fill in around them, instead of one long test running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


LABELS = {0: "angry", 1: "happy", 2: "neutral", 3: "sad"}
SENTENCES = [
    "this is absolutely unacceptable",
    "that is wonderful news",
    "i am going to the station at five",
    "i miss her so much",
    "we talked about it yesterday",
]


@pytest.fixture(params=["cpu", "cuda"])
def device(request, monkeypatch) -> torch.device:
    """Both devices where there is a GPU (a lent GPU machine); CPU alone elsewhere, as in CI. On CUDA, convolutions
    run in true fp32: cuDNN's default TF32 rounds them to 10 mantissa bits, and the fp32 comparisons of the tests
    (gradients of the speech CNN, summed over thousands of samples) are meant for fp32 arithmetic."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if request.param == "cuda":
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    return torch.device(request.param)


@pytest.fixture(scope="module")
def one_intra_op_thread():
    """For modules of many small forward passes (or several threads of them): one intra-op thread is faster and
    immune to a busy machine's oversubscription. Use with `pytestmark = pytest.mark.usefixtures(...)`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer(SENTENCES, vocab_size=400)


@pytest.fixture
def tiny_config(tiny_tokenizer):
    config = tiny_crab_config(num_labels=len(LABELS), id2label=LABELS, vocab_size=len(tiny_tokenizer))
    config.audio_config.mask_time_prob = 0.0
    return config


@pytest.fixture
def tiny_processor(tiny_tokenizer):
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )
    return CrabProcessor(feature_extractor, tiny_tokenizer, max_duration_s=12.0, max_text_length=32)


@pytest.fixture
def tiny_batch(tiny_processor):
    """Four utterances of different lengths and transcripts, padded: the case masking must get right."""
    rng = np.random.default_rng(0)
    waveforms = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 9000, 12500, 4000)]
    batch = tiny_processor(audio=waveforms, text=SENTENCES[:4], sampling_rate=16000, return_tensors="pt")
    batch["labels"] = torch.tensor([0, 1, 1, 3])
    return batch


CROP_S = 2.0  # the exported test model's processor crop: longer audio is classified in windows


@pytest.fixture(scope="module")
def tiny_export(tiny_tokenizer, tmp_path_factory):
    """`(model, processor, export folder)`: a tiny random Crab model (eval mode), its processor (2 s crop, global
    waveform statistics) and its inference export. One per test module: tests may change the model's config and
    restore it."""
    from modeling_crab import CrabForEmotionClassification, export_for_inference

    config = tiny_crab_config(num_labels=len(LABELS), id2label=LABELS, vocab_size=len(tiny_tokenizer))
    config.audio_config.mask_time_prob = 0.0
    torch.manual_seed(0)
    model = CrabForEmotionClassification(config).eval()
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, return_attention_mask=True)
    processor = CrabProcessor(extractor, tiny_tokenizer, max_duration_s=CROP_S, max_text_length=32)
    processor.set_waveform_stats(0.0, 0.3)
    checkpoint = export_for_inference(model, processor, tmp_path_factory.mktemp("crab") / "inference")
    return model, processor, checkpoint


@pytest.fixture(scope="module")
def crab(tiny_export):
    """For the bad-input tests (`*_bad_input.py`): A tiny random model, its processor (2 s crop, global statistics), a pipeline over them and their export."""
    model, processor, checkpoint = tiny_export
    pipe = pipeline("speech-emotion-recognition", model=model, processor=processor, device="cpu")
    return model, processor, pipe, checkpoint


@pytest.fixture(scope="module")
def resumable_run(tmp_path_factory):
    """A manifest and a finished 4-step run that saved a checkpoint at every step."""
    from training_helpers import run_argv, train_main, write_corpus

    root = tmp_path_factory.mktemp("resumable")
    manifest = write_corpus(root / "corpus", {"train": 1, "dev": 1})
    train_main(run_argv(manifest, root / "run"))
    return manifest, root / "run"


@pytest.fixture(scope="session", autouse=True)
def onnx_graphs_made_once(tmp_path_factory):
    """torch.onnx's export of a tiny Crab takes some 20 s on 2 cores, and the suite exports the same few models (the
    `tiny_export` of each module, the documented commands' model) again and again. Here `onnx_export.export_onnx` and
    `quantize_onnx` run once per input: keyed on everything the graph is made from (the config, every weight, the
    opset; for int8, the fp32 graph's bytes), later calls copy the graph the first one wrote. The export code runs
    for every distinct model, and a test that changes a weight gets a new export. Shared by `pytest -n` workers."""
    import hashlib
    import shutil
    import uuid

    from modeling_crab import onnx_export

    root = tmp_path_factory.getbasetemp()
    cache = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "onnx-graphs"
    cache.mkdir(exist_ok=True)

    def cached(make, key: str, path, *args):
        entry, path = cache / key, Path(path)
        if not entry.is_dir():
            made = make(*args, path)
            scratch = cache / f".{key}.{uuid.uuid4().hex}"
            scratch.mkdir()
            for file in path.parent.glob(f"{path.name}*"):  # the graph and any external data beside it
                shutil.copy(file, scratch / file.name.replace(path.name, "graph", 1))
            try:
                scratch.rename(entry)
            except OSError:  # another worker put the same graph there first
                shutil.rmtree(scratch)
            return made
        path.parent.mkdir(parents=True, exist_ok=True)
        for file in entry.iterdir():
            shutil.copy(file, path.parent / file.name.replace("graph", path.name, 1))
        return path

    export, quantize = onnx_export.export_onnx, onnx_export.quantize_onnx

    def export_onnx(model, path, opset=onnx_export.OPSET):
        digest = hashlib.sha256(f"{opset}{getattr(model, 'module', model).config.to_json_string()}".encode())
        for name, tensor in getattr(model, "module", model).state_dict().items():
            digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
        return cached(lambda p: export(model, p, opset), f"fp32-{digest.hexdigest()}", path)

    def quantize_onnx(path, out_path):
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return cached(lambda p: quantize(path, p), f"int8-{digest}", out_path)

    patch = pytest.MonkeyPatch()
    patch.setattr(onnx_export, "export_onnx", export_onnx)
    patch.setattr(onnx_export, "quantize_onnx", quantize_onnx)
    yield
    patch.undo()


@pytest.fixture
def alone_among_process_groups(tmp_path_factory):
    """For tests that start several processes joined by torch.distributed: one such test at a time across
    `pytest -n` workers (a lock file shared by the workers), so that their process groups never meet on a port."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    lock = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "process-groups.lock"
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
        fcntl.flock(handle, fcntl.LOCK_UN)
