"""Shape buckets (`modeling_crab/shape_buckets.py`): the choice of a few padded lengths from a length histogram, the
processor padding each batch to its bucket, and the promise that makes bucketing safe: a masked model gives the same
loss, gradients and scores with the extra padding as without, to float rounding."""

from __future__ import annotations

import itertools
import json
import logging
import warnings

import numpy as np
import pytest
import torch
from conftest import SENTENCES
from training_helpers import tiny_datasets, train_main, write_corpus
from transformers import pipeline

from modeling_crab import CrabForEmotionClassification
from modeling_crab.shape_buckets import (
    MAX_CANDIDATES,
    ShapeBuckets,
    bucket_length,
    choose_buckets,
    padding_overhead,
)
from modeling_crab.training.collator import CrabDataCollator, choose_shape_buckets

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # many small forward passes (conftest)


def tone(n: int) -> np.ndarray:
    return (0.1 * np.sin(np.arange(n) / 7)).astype(np.float32)


def padding(lengths, buckets) -> int:
    """The padding of each length padded to its own bucket: what `choose_buckets` minimises."""
    return sum(bucket_length(n, buckets) - n for n in lengths)


# ---- the choice ---------------------------------------------------------------------------------------------------
def test_buckets_cover_every_length_and_pad_least():
    """At most K buckets, the longest length covered, and no other choice of at most K lengths (multiples of the
    step, the largest covering the longest) pads less: checked against every such choice on small histograms."""
    rng = np.random.default_rng(0)
    for _ in range(150):
        lengths = rng.integers(1, 60, rng.integers(1, 25)).tolist()
        count, step = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        buckets = choose_buckets(lengths, count, multiple_of=step)
        assert len(buckets) <= count and buckets == sorted(set(buckets)) and buckets[-1] >= max(lengths)
        assert all(b % step == 0 for b in buckets)
        candidates = sorted({-(-n // step) * step for n in lengths})
        least = min(
            padding(lengths, choice)
            for k in range(1, min(count, len(candidates)) + 1)
            for choice in itertools.combinations(candidates, k)
            if choice[-1] == candidates[-1]
        )
        assert padding(lengths, buckets) == least


def test_more_buckets_pad_less_than_one_and_the_choice_is_deterministic():
    lengths = (np.random.default_rng(1).uniform(1, 12, 2000) * 16000).astype(int).tolist()
    one, eight = choose_buckets(lengths, 1, 320), choose_buckets(lengths, 8, 320)
    assert len(eight) == 8 and padding(lengths, eight) < padding(lengths, one) / 4
    assert choose_buckets(list(reversed(lengths)), 8, 320) == eight  # order of the lengths does not matter


@pytest.mark.parametrize(
    "lengths, count, expected",
    [
        ([12345], 4, [12480]),  # one clip: one bucket, rounded up to the step
        ([16000] * 50, 3, [16000]),  # all equal
        ([640, 1280, 1920], 8, [640, 1280, 1920]),  # more buckets asked than distinct lengths: one each, no padding
    ],
)
def test_edge_cases(lengths, count, expected):
    assert choose_buckets(lengths, count, multiple_of=320) == expected


def test_the_largest_bucket_can_be_asked_to_hold_a_longer_item():
    """Clips outside the histogram that must still fit (the dev split's): the largest bucket grows to hold them, the
    others are chosen as before for the histogram."""
    lengths = [1000, 1100, 2000, 2100, 3000]
    assert choose_buckets(lengths, 3, 100) == [1100, 2100, 3000]
    assert choose_buckets(lengths, 3, 100, longest=3550) == [1100, 2100, 3600]
    assert choose_buckets(lengths, 3, 100, longest=20) == [1100, 2100, 3000]


def test_many_distinct_lengths_are_bucketed_on_quantiles_and_still_covered():
    lengths = (np.random.default_rng(2).lognormal(1.2, 0.6, 20000) * 16000).astype(int)  # uncropped, in samples
    assert len(np.unique(lengths)) > MAX_CANDIDATES
    buckets = choose_buckets(lengths, 6)
    assert len(buckets) == 6 and buckets[-1] == lengths.max()
    assert padding(lengths, buckets) < padding(lengths, choose_buckets(lengths, 3))
    exact = choose_buckets(lengths, 6, 320)  # 784 distinct 20 ms steps: every one a candidate
    assert padding(lengths, buckets) < 1.05 * padding(lengths, exact)  # the quantiles' choice is about as good


@pytest.mark.parametrize("count", [0, -2, 1.5, True, "4"])
def test_a_bad_count_is_one_clear_error(count):
    with pytest.raises(ValueError, match=r"count=.*; pass a whole number of buckets >= 1"):
        choose_buckets([16000, 32000], count)


def test_no_lengths_or_an_empty_one_is_refused():
    with pytest.raises(ValueError, match="no lengths to choose buckets from"):
        choose_buckets([], 2)
    with pytest.raises(ValueError, match="a length of 0"):
        choose_buckets([0, 5], 2)


def test_a_batch_longer_than_every_bucket_pads_to_its_longest():
    assert [bucket_length(n, (100, 200)) for n in (1, 100, 101, 200, 201)] == [100, 100, 200, 200, 201]
    assert bucket_length(57, None) == 57
    assert padding_overhead([[90, 80], [150]], (100, 200)) == pytest.approx((2 * 100 + 200) / (2 * 90 + 150) - 1)


# ---- the processor pads to the bucket ------------------------------------------------------------------------------
def test_the_processor_pads_each_modality_to_its_bucket(tiny_processor):
    waveforms = [np.full(n, 0.1, np.float32) + np.linspace(0, 0.1, n, dtype=np.float32) for n in (9000, 4000)]
    plain = tiny_processor(audio=waveforms, text=SENTENCES[:2], sampling_rate=16000)
    tokens = plain["input_ids"].shape[1]
    buckets = {"audio": [8000, 12000, 32000], "text": [tokens - 1, tokens + 3, tokens + 10]}
    bucketed = tiny_processor(audio=waveforms, text=SENTENCES[:2], sampling_rate=16000, pad_to_buckets=buckets)
    assert bucketed["input_values"].shape == (2, 12000) and bucketed["input_ids"].shape == (2, tokens + 3)
    for key in ("input_values", "attention_mask", "input_ids", "text_attention_mask"):  # the extra is padding
        width = plain[key].shape[1]
        torch.testing.assert_close(bucketed[key][:, :width], plain[key])
    assert (bucketed["attention_mask"][:, 9000:] == 0).all() and (
        bucketed["text_attention_mask"][:, width:] == 0
    ).all()
    assert (bucketed["input_ids"][:, width:] == tiny_processor.tokenizer.pad_token_id).all()
    longer = tiny_processor(audio=[tone(40000)], text="x", sampling_rate=16000, pad_to_buckets=buckets)
    assert longer["input_values"].shape == (1, 40000)  # beyond every bucket: to its longest
    with pytest.raises(ValueError, match="pass one of them"):
        tiny_processor.feature_extractor(waveforms, sampling_rate=16000, padding="max_length", pad_to_buckets=[16000])


def test_the_saved_buckets_travel_with_the_processor(tiny_processor, tmp_path):
    from modeling_crab import CrabProcessor

    with pytest.raises(ValueError, match="has none .*trained without --shape_buckets"):
        tiny_processor(audio=[tone(4000)], text="x", pad_to_buckets=True)
    tiny_processor.shape_buckets = ShapeBuckets(audio=[16000, 8000], text=[16])
    tiny_processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["shape_buckets"] == {
        "audio": [8000, 16000],
        "text": [16],
    }
    loaded = CrabProcessor.from_pretrained(tmp_path)
    assert loaded.shape_buckets == ShapeBuckets((8000, 16000), (16,))
    batch = loaded(audio=[tone(5000)], text="x", sampling_rate=16000, pad_to_buckets=True)
    assert batch["input_values"].shape == (1, 8000) and batch["input_ids"].shape == (1, 16)
    assert loaded(audio=[tone(5000)], text="x", sampling_rate=16000)["input_values"].shape == (
        1,
        5000,
    )  # saved, not applied unless asked


@pytest.mark.parametrize(
    "value, message",
    [
        ({"audio": [0]}, r"shape_buckets\['audio'\]=\[0\]: 0 is not a length"),
        ({"text": []}, r"shape_buckets\['text'\]=\[\]; pass at least one"),
        ({"audio": [1600.5]}, "1600.5 is not a length"),
        ({"audios": [16000]}, r"keys \['audios'\]"),
        ("16000", "pass {'audio'"),
    ],
)
def test_bad_buckets_are_refused_naming_them(tiny_processor, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tiny_processor(audio=[tone(4000)], text="x", pad_to_buckets=value)


# ---- same loss and gradients in training ---------------------------------------------------------------------------
def _without_dropout(config):
    """Dropout draws one random number per element, so its masks depend on the padded shape: off, so that the two
    batches compute the same function (train mode otherwise: CSL legs, MLCS, the training GRU path)."""
    for part in (config, config.audio_config, config.text_config):
        for key, value in list(vars(part).items()):
            if ("dropout" in key or key == "layerdrop") and isinstance(value, float):
                setattr(part, key, 0.0)
    return config


def test_bucketed_training_batches_give_the_same_loss_and_gradients(tiny_config, tiny_processor):
    torch.manual_seed(0)
    model = CrabForEmotionClassification(_without_dropout(tiny_config)).train()
    rng = np.random.default_rng(3)
    features = [
        {"audio": rng.standard_normal(n).astype(np.float32) * 0.1, "text": text, "label": label}
        for n, text, label in zip((16000, 9000, 12500, 4000), SENTENCES, (0, 1, 1, 3))
    ]
    plain = CrabDataCollator(tiny_processor)(features)
    tokens = plain["input_ids"].shape[1]
    buckets = ShapeBuckets(audio=[6400, 19200, 32000], text=[tokens + 5, 2 * tokens + 8])
    bucketed = CrabDataCollator(tiny_processor, shape_buckets=buckets)(features)
    assert plain["input_values"].shape[1] == 16000 and bucketed["input_values"].shape[1] == 19200
    assert bucketed["input_ids"].shape[1] == tokens + 5

    def loss_and_gradients(batch):
        model.zero_grad()
        output = model(**batch, output_csl_embeddings=True)
        output.loss.backward()
        return output, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    expected, expected_grads = loss_and_gradients(plain)
    got, grads = loss_and_gradients(bucketed)
    assert got.mlcs_loss > 0  # the whole objective, contrastive term included
    for key in ("loss", "ce_loss", "mlcs_loss", "logits"):
        torch.testing.assert_close(getattr(got, key), getattr(expected, key), atol=1e-5, rtol=1e-4)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-5, rtol=1e-3, msg=name)


# ---- same scores in batched inference ------------------------------------------------------------------------------
def test_the_pipeline_gives_the_same_scores_bucketed(tiny_export):
    model, processor, _ = tiny_export
    pipe = pipeline("speech-emotion-recognition", model=model, processor=processor, device="cpu")
    rng = np.random.default_rng(4)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (4000, 30000, 9000, 20000, 6000)]
    texts = ["i miss her so much", "that is wonderful news", "we talked about it yesterday", "okay", "i am going"]
    buckets = {"audio": [8000, 12000, 24000], "text": [8, 16, 32]}
    shapes = []
    hook = model.register_forward_hook(
        lambda module, args, kwargs, out: shapes.append(
            (kwargs["input_values"].shape[1], kwargs["input_ids"].shape[1])
        ),
        with_kwargs=True,
    )
    try:
        plain = pipe(clips, text=texts, batch_size=2)
        shapes.clear()
        bucketed = pipe(clips, text=texts, batch_size=2, pad_to_buckets=buckets)
    finally:
        hook.remove()
    # longest first: (30000, 20000), (9000, 6000), (4000,) samples; 30000 is longer than every bucket
    assert [audio for audio, _ in shapes] == [30000, 12000, 8000]
    assert all(tokens in (8, 16, 32) for _, tokens in shapes)
    for got, expected in zip(bucketed, plain):
        assert [s["label"] for s in got] == [s["label"] for s in expected]
        np.testing.assert_allclose([s["score"] for s in got], [s["score"] for s in expected], atol=1e-5)


def test_the_pipeline_uses_the_trained_buckets_when_asked_and_refuses_an_unmasked_head(tiny_export):
    model, processor, _ = tiny_export
    pipe = pipeline("speech-emotion-recognition", model=model, processor=processor, device="cpu")
    audio = np.random.default_rng(5).standard_normal(5000).astype(np.float32) * 0.1
    with pytest.raises(ValueError, match="trained without --shape_buckets"):
        pipe(audio, text="okay", pad_to_buckets=True)
    with pytest.raises(ValueError, match=r"shape_buckets\['audio'\]"):
        pipe(audio, text="okay", pad_to_buckets=[0])
    processor.shape_buckets = {"audio": [8000], "text": [16]}
    try:
        answer = pipe(audio, text="okay", pad_to_buckets=True)
        assert [s["score"] for s in answer] == pytest.approx([s["score"] for s in pipe(audio, text="okay")], abs=1e-5)
        model.config.mask_padding = False
        with pytest.raises(ValueError, match="does not mask padding"):
            pipe(audio, text="okay", pad_to_buckets=True)
    finally:
        processor.shape_buckets, model.config.mask_padding = None, True


# ---- train.py --shape_buckets ---------------------------------------------------------------------------------------
def test_training_buckets_come_from_the_training_split_and_report_their_cost(tmp_path, tiny_processor):
    manifest = write_corpus(tmp_path / "corpus", {"train": 4, "dev": 1})
    train, dev, _ = tiny_datasets(manifest, max_duration_s=1.0)
    buckets, line = choose_shape_buckets(train, tiny_processor, 3, range(len(train)), batch_size=4, evaluated=[dev])
    cropped = [min(n, 16000) for n in train.lengths]
    assert len(buckets.audio) == 3 and buckets.audio[-1] >= max(cropped + [min(n, 16000) for n in dev.lengths])
    assert buckets.audio[-1] <= 16000 + 320  # the crop, rounded up to a 20 ms step
    assert buckets.text and len(buckets.text) <= 3
    batches = [cropped[i : i + 4] for i in range(0, len(cropped), 4)]
    assert line.startswith("--shape_buckets 3: audio ") and " tokens; batches padded to their bucket hold " in line
    assert f"{padding_overhead(batches, buckets.audio):.1%} more audio samples" in line
    assert "than padded to their longest (4 batches of 4, one epoch of the training split)" in line

    from modeling_crab.training.augment import WaveformAugmentation

    train.augmentation = WaveformAugmentation(speed_factors=[0.9, 1.0, 1.1])  # a slowed clip is longer
    slowed, _ = choose_shape_buckets(train, tiny_processor, 3)
    assert slowed.audio[-1] >= min(16000, max(round(n / 0.9) for n in cropped))
    tiny_processor.text_padding = "max_length"  # transcripts already take one shape
    assert choose_shape_buckets(train, tiny_processor, 3)[0].text is None


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--shape_buckets", "0"], "--shape_buckets 0: pass a whole number of buckets >= 1"),
        (["--shape_buckets", "-3"], "--shape_buckets -3: pass a whole number of buckets >= 1"),
        (["--shape_buckets", "4", "--mask_padding", "false"], "--shape_buckets pads batches further"),
        (["--shape_buckets", "4", "--encoder_cache", "cache"], "drop one of them"),
    ],
)
def test_bad_shape_buckets_flags_are_one_line_errors(flags, message, capsys):
    from modeling_crab.training.arguments import parse_arguments

    with pytest.raises(SystemExit) as stop:
        parse_arguments(["--manifest", "m.csv", "--tiny", *flags])
    assert stop.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow  # a tiny train.py run with evaluation and export: about 6 s on 2 cores
def test_train_py_shape_buckets_pads_every_batch_to_a_bucket_and_saves_them(tmp_path, caplog, monkeypatch):
    manifest = write_corpus(tmp_path / "corpus", {"train": 2, "dev": 1})
    out = tmp_path / "out"
    shapes = []
    original = CrabDataCollator.__call__

    def recording(self, features):
        batch = original(self, features)
        shapes.append((batch["input_values"].shape[1], batch["input_ids"].shape[1]))
        return batch

    monkeypatch.setattr(CrabDataCollator, "__call__", recording)
    argv = ["--manifest", str(manifest), "--tiny", "--output_dir", str(out), "--max_steps", "2"]
    with caplog.at_level(logging.INFO, logger="crab.train"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_main([*argv, "--per_device_train_batch_size", "2", "--disable_tqdm", "True", "--shape_buckets", "2"])
    saved = json.loads((out / "inference" / "processor_config.json").read_text())["shape_buckets"]
    assert len(saved["audio"]) <= 2 and len(saved["text"]) <= 2
    assert shapes and all(audio in saved["audio"] and tokens in saved["text"] for audio, tokens in shapes)  # dev too
    assert sum("--shape_buckets 2: audio" in r.getMessage() for r in caplog.records) == 1
