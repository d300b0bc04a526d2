"""Threads sharing one pipeline, or one processor, get exactly the answers of sequential calls.

A fast tokenizer keeps its truncation and padding settings in shared state, so concurrent calls with different
settings used to mix them up (wrong `input_ids`, silently); the processor now serialises tokenisation.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import SENTENCES
from transformers import pipeline

from modeling_crab import CrabForEmotionClassification, export_for_inference

THREADS = 4


def run_together(job, arguments: list) -> list:
    """`job(argument)` for every argument, `THREADS` at a time, started together."""
    barrier = threading.Barrier(THREADS)

    def synchronised(argument):
        barrier.wait(timeout=60)
        return job(argument)

    assert len(arguments) % THREADS == 0
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(synchronised, arguments))


pytestmark = [
    pytest.mark.usefixtures("one_intra_op_thread"),  # many small forward passes (conftest)
    # transcripts over the pipeline's 24 tokens, on purpose: concurrent truncation is what is tested
    pytest.mark.filterwarnings("ignore:the transcript of audio .* tokens, and the model reads only:UserWarning"),
]


@pytest.fixture(scope="module")
def shared_pipeline(tiny_tokenizer, tmp_path_factory):
    """The pipeline a Hub user builds from an exported checkpoint (remote code), shared by every thread."""
    from transformers import Wav2Vec2FeatureExtractor

    from modeling_crab import CrabProcessor
    from modeling_crab.training.tiny import tiny_crab_config

    config = tiny_crab_config(num_labels=4, id2label=dict(enumerate("abcd")), vocab_size=len(tiny_tokenizer))
    config.audio_config.mask_time_prob = 0.0
    torch.manual_seed(0)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, return_attention_mask=True)
    processor = CrabProcessor(extractor, tiny_tokenizer, max_duration_s=1.5, max_text_length=24)
    processor.set_waveform_stats(0.0, 0.2)
    export = export_for_inference(CrabForEmotionClassification(config), processor, tmp_path_factory.mktemp("c") / "e")
    return pipeline("speech-emotion-recognition", model=str(export), trust_remote_code=True, device="cpu")


def requests(count: int) -> list[dict]:
    """Different recordings (rates, lengths: one to three windows), transcripts and call options."""
    rng = np.random.default_rng(0)
    calls = []
    for i in range(count):
        rate = (16000, 8000, 22050)[i % 3]
        audio = (rng.standard_normal(int(rate * (0.5 + 0.6 * (i % 4)))) * 0.1).astype(np.float32)
        calls.append(
            {
                "inputs": {"raw": audio, "sampling_rate": rate},
                "text": SENTENCES[i % len(SENTENCES)] * (1 + i % 4),  # some longer than 24 tokens
                "top_k": None if i % 2 else 2,
                "return_windows": bool(i % 3 == 0),
            }
        )
    return calls


def test_threads_sharing_a_pipeline_get_the_sequential_answers(shared_pipeline):
    calls = requests(8)

    def classify(call):
        return shared_pipeline(dict(call["inputs"]), **{k: v for k, v in call.items() if k != "inputs"})

    sequential = [classify(call) for call in calls]
    for _ in range(2):
        assert run_together(classify, calls) == sequential


def test_threads_sharing_a_pipeline_with_batches(shared_pipeline):
    calls = requests(8)
    batches = [calls[i : i + 2] for i in range(0, 8, 2)]

    def classify(batch):
        return shared_pipeline([dict(c["inputs"]) for c in batch], text=[c["text"] for c in batch], batch_size=3)

    sequential = [classify(batch) for batch in batches]
    assert run_together(classify, batches) == sequential


def test_threads_sharing_a_processor_get_the_sequential_batches(shared_pipeline):
    """Each call asks for its own truncation and padding: exactly what the shared tokenizer state used to mix up."""
    processor = shared_pipeline.processor
    rng = np.random.default_rng(1)
    calls = [
        {
            "audio": [rng.standard_normal(4000 + 3000 * (i % 4)).astype(np.float32) for _ in range(2)],
            "text": [SENTENCES[i % 5] * (1 + i % 3), SENTENCES[(i + 2) % 5]],
            "sampling_rate": (16000, 8000)[i % 2],
            "text_kwargs": {"padding": "max_length" if i % 2 else True, "max_length": (8, 16, 24, 40)[i % 4]},
            "return_tensors": "np",
        }
        for i in range(16)
    ]

    def process(call):
        batch = processor(**call)
        return {key: value.tolist() for key, value in batch.items()}

    sequential = [process(call) for call in calls]
    for _ in range(3):
        assert run_together(process, calls) == sequential


def test_threads_sharing_a_pipeline_that_transcribes(shared_pipeline):
    """Without a transcript the pipeline asks its speech recognizer (here a stand-in), cached across threads."""

    def recognizer(audio, **kwargs):
        return {"text": SENTENCES[len(audio["raw"]) % len(SENTENCES)]}

    calls = [dict(call["inputs"]) for call in requests(8)]

    def classify(inputs):
        return shared_pipeline(dict(inputs), asr_model=recognizer, return_windows=True)

    sequential = [classify(inputs) for inputs in calls]
    assert {result["text"] for result in sequential} <= set(SENTENCES)
    assert run_together(classify, calls) == sequential
