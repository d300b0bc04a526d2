"""Properties that hold for every input, checked with hypothesis over random lengths, sampling rates, dtypes,
channel layouts and batch compositions: the processor (shapes, masks, finiteness, resampled length) and the MPCL /
SupCon losses (finite, permutation- and scale-invariant, finite gradients without positives, MPCL = SupCon x
(tau_base / tau) x (anchors with a positive / B))."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import Wav2Vec2FeatureExtractor

from modeling_crab import CrabProcessor
from modeling_crab.losses import mlcs_loss, multi_positive_contrastive_loss, supcon_loss

SR = 16000
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

rates = st.one_of(st.sampled_from([8000, 11025, 16000, 22050, 32000, 44100, 48000]), st.integers(8000, 48000))
dtypes = st.sampled_from(["float32", "float64", "int16", "int32"])
layouts = st.sampled_from(["mono", "samples-first", "channels-first"])
transcripts = st.one_of(
    st.text(max_size=60),  # any Unicode, empty and whitespace-only included
    st.lists(st.sampled_from("that is wonderful news i miss her so much".split()), max_size=80).map(" ".join),
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Hundreds of tiny tensor ops: one intra-op thread is fastest, and immune to a busy machine's oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def processor(tiny_tokenizer):
    """Utterance normalisation and a 1 s crop, so that long inputs get cropped without costing much."""
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, return_attention_mask=True)
    return CrabProcessor(extractor, tiny_tokenizer, max_duration_s=1.0, max_text_length=24)


@pytest.fixture(scope="module")
def raw_processor(processor):
    """The same, without normalisation: what comes out is the resampled, cropped waveform itself."""
    return CrabProcessor(processor.feature_extractor, processor.tokenizer, max_duration_s=1.0, normalization="none")


def make_audio(seed: int, num_samples: int, dtype: str, layout: str, channels: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    samples = rng.uniform(-0.9, 0.9, (num_samples, channels if layout != "mono" else 1))
    if dtype.startswith("int"):
        samples = np.round(samples * np.iinfo(dtype).max)
    samples = samples.astype(dtype)
    if layout == "mono":
        return samples[:, 0]
    return samples if layout == "samples-first" else np.ascontiguousarray(samples.T)


def expected_length(num_samples: int, rate: int, crop_s: float | None) -> int:
    resampled = num_samples if rate == SR else math.ceil(num_samples * SR / rate)
    return resampled if crop_s is None else min(resampled, round(crop_s * SR))


# -- processor ----------------------------------------------------------------------------------------------------
@FAST
@given(
    rate=rates,
    lengths=st.lists(st.floats(0.05, 1.6), min_size=1, max_size=4),
    dtype=dtypes,
    layout=layouts,
    channels=st.sampled_from([2, 6]),
    texts=st.lists(transcripts, min_size=4, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_processor_batches_are_consistent_and_finite(processor, rate, lengths, dtype, layout, channels, texts, seed):
    sizes = [max(int(seconds * rate), 8) for seconds in lengths]
    audio = [make_audio(seed + i, n, dtype, layout, channels) for i, n in enumerate(sizes)]
    texts = texts[: len(audio)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short random int clip may round to silence: a warning, not a failure
        batch = processor(audio=audio, text=texts, sampling_rate=rate)
    lengths_out = [expected_length(n, rate, processor.max_duration_s) for n in sizes]
    values, mask = batch["input_values"], batch["attention_mask"]
    assert values.shape == mask.shape == (len(audio), max(lengths_out))
    assert values.dtype == torch.float32 and torch.isfinite(values).all()
    assert mask.sum(dim=1).tolist() == lengths_out
    for row, n in enumerate(lengths_out):
        assert mask[row, :n].all() and (values[row, n:] == 0).all()

    ids, text_mask = batch["input_ids"], batch["text_attention_mask"]
    assert ids.shape == text_mask.shape and ids.shape[0] == len(audio) and ids.shape[1] <= processor.max_text_length
    tokenizer = processor.tokenizer
    for row, text in enumerate(texts):
        count = int(text_mask[row].sum())
        assert ids[row, 0] == tokenizer.bos_token_id and ids[row, count - 1] == tokenizer.eos_token_id
        assert (ids[row, count:] == tokenizer.pad_token_id).all()
        if not text.strip():
            assert count == 2  # whitespace only: the empty transcript


@FAST
@given(rate=rates, seconds=st.floats(0.3, 2.5), dtype=dtypes, seed=st.integers(0, 2**16))
def test_cropping_first_equals_resampling_the_whole_recording(raw_processor, rate, seconds, dtype, seed):
    """The processor reads only the input that the kept second depends on: same values as resampling it all."""
    audio = make_audio(seed, int(seconds * rate), dtype, "mono", 1)
    cropped = raw_processor(audio=audio, sampling_rate=rate)["input_values"][0]
    whole = raw_processor(audio=audio, sampling_rate=rate, max_duration_s=None)["input_values"][0]
    assert len(cropped) == expected_length(len(audio), rate, 1.0)
    np.testing.assert_allclose(cropped.numpy(), whole[: len(cropped)].numpy(), atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(rate=rates, frequency=st.floats(100.0, 3000.0))
def test_resampling_keeps_a_tone_at_any_rate(rate, frequency):
    from modeling_crab.audio import resample

    t = np.arange(int(0.5 * rate)) / rate
    out = resample((0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), rate, SR)
    assert len(out) == math.ceil(len(t) * SR / rate)
    ideal = 0.5 * np.sin(2 * np.pi * frequency * np.arange(len(out)) / SR)
    assert np.abs(out - ideal)[200:-200].max() < 1e-2  # away from the edges' zero padding


# -- losses -------------------------------------------------------------------------------------------------------
def embeddings_and_labels(batch_size: int, dim: int, num_classes: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch_size, dim, generator=generator, dtype=torch.float64)
    labels = torch.randint(num_classes, (batch_size,), generator=generator)
    return embeddings, labels


batches = st.tuples(st.integers(1, 24), st.integers(2, 16), st.integers(1, 6), st.integers(0, 2**16))
temperatures = st.floats(0.05, 1.0)


@settings(max_examples=40, deadline=None)
@given(batch=batches, temperature=temperatures)
def test_losses_are_finite_and_non_negative(batch, temperature):
    embeddings, labels = embeddings_and_labels(*batch)
    embeddings[0] = 0.0  # a zero embedding normalises to zero, not NaN
    for loss_fn in (multi_positive_contrastive_loss, supcon_loss):
        loss = loss_fn(embeddings, labels, temperature)
        assert torch.isfinite(loss) and loss >= 0


@settings(max_examples=40, deadline=None)
@given(batch=batches, temperature=temperatures, seed=st.integers(0, 2**16))
def test_losses_are_permutation_invariant(batch, temperature, seed):
    embeddings, labels = embeddings_and_labels(*batch)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    for loss_fn in (multi_positive_contrastive_loss, supcon_loss):
        torch.testing.assert_close(
            loss_fn(embeddings[order], labels[order], temperature), loss_fn(embeddings, labels, temperature)
        )


@settings(max_examples=40, deadline=None)
@given(batch=batches, temperature=temperatures, log_scale=st.floats(-3.0, 3.0), per_row=st.booleans())
def test_losses_are_invariant_to_embedding_scale(batch, temperature, log_scale, per_row):
    embeddings, labels = embeddings_and_labels(*batch)
    scale = 10.0**log_scale
    if per_row:  # each embedding is L2-normalised, so any positive per-row scale drops out
        scale = scale * torch.rand(len(labels), 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        scale = scale + 1e-3
    for loss_fn in (multi_positive_contrastive_loss, supcon_loss):
        torch.testing.assert_close(
            loss_fn(embeddings * scale, labels, temperature),
            loss_fn(embeddings, labels, temperature),
            rtol=1e-4,
            atol=1e-5,
        )


@settings(max_examples=30, deadline=None)
@given(batch_size=st.integers(1, 16), dim=st.integers(2, 16), temperature=temperatures, seed=st.integers(0, 2**16))
def test_gradients_are_finite_when_no_anchor_has_a_positive(batch_size, dim, temperature, seed):
    embeddings = torch.randn(batch_size, dim, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    labels = torch.arange(batch_size)  # every label once: no positives anywhere
    for loss_fn in (multi_positive_contrastive_loss, supcon_loss):
        loss = loss_fn(embeddings, labels, temperature)
        (gradient,) = torch.autograd.grad(loss, embeddings)
        assert loss.item() == 0.0 and torch.isfinite(gradient).all()
    taps = {"fusion": embeddings, "audio_pooled": embeddings * 2}
    (gradient,) = torch.autograd.grad(mlcs_loss(taps, labels, temperature), embeddings)
    assert torch.isfinite(gradient).all()


@settings(max_examples=30, deadline=None)
@given(batch=batches, temperature=temperatures)
def test_gradients_are_finite_with_positives(batch, temperature):
    embeddings, labels = embeddings_and_labels(*batch)
    embeddings = embeddings.float().requires_grad_(True)
    for loss_fn in (multi_positive_contrastive_loss, supcon_loss):
        (gradient,) = torch.autograd.grad(loss_fn(embeddings, labels, temperature), embeddings)
        assert torch.isfinite(gradient).all()


@settings(max_examples=40, deadline=None)
@given(batch=batches, temperature=temperatures, base_temperature=st.floats(0.03, 0.5))
def test_mpcl_is_supcon_rescaled(batch, temperature, base_temperature):
    """MPCL = SupCon x (tau_base / tau) x (anchors with a positive / B): the same per-anchor terms, a different mean."""
    embeddings, labels = embeddings_and_labels(*batch)
    counts = torch.bincount(labels)
    with_positive = int((counts[labels] > 1).sum())
    mpcl = multi_positive_contrastive_loss(embeddings, labels, temperature)
    supcon = supcon_loss(embeddings, labels, temperature, base_temperature)
    expected = supcon * (base_temperature / temperature) * (with_positive / len(labels))
    torch.testing.assert_close(mpcl, expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(batch=batches, temperature=temperatures, loss_type=st.sampled_from(["mpcl", "supcon"]))
def test_mlcs_is_the_mean_over_taps(batch, temperature, loss_type):
    embeddings, labels = embeddings_and_labels(*batch)
    taps = {"fusion": embeddings, "text_pooled": embeddings.flip(0), "audio_pooled": embeddings**2}
    loss_fn = multi_positive_contrastive_loss if loss_type == "mpcl" else supcon_loss
    expected = torch.stack([loss_fn(e, labels, temperature) for e in taps.values()]).mean()
    torch.testing.assert_close(mlcs_loss(taps, labels, temperature, loss_type), expected)
