"""Bad input to the encoder cache (`train.py --encoder_cache`): each case is handled as docs/bad_input.md says or
stopped by an error that names the input and the fix. Every test here is a row of that table, under the same name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_crab import CrabForEmotionClassification

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # many small forward passes (conftest)


# ---- Encoder cache (train.py --encoder_cache)
@pytest.fixture
def encoder_inputs(tiny_config, tiny_processor):
    """A tiny model and one collated batch of three utterances (with ids) for the encoder cache."""
    from modeling_crab.training import CrabDataCollator

    torch.manual_seed(0)
    model = CrabForEmotionClassification(tiny_config).eval()
    rng = np.random.default_rng(3)
    items = [
        {"audio": (0.1 * rng.standard_normal(n)).astype(np.float32), "text": "i miss her", "label": i, "id": f"u{i}"}
        for i, n in enumerate((6000, 9000, 12000))
    ]
    return model, CrabDataCollator(tiny_processor), items


def test_encoder_cache_for_other_encoders_or_data(encoder_inputs, tmp_path):
    from modeling_crab.training.feature_cache import FeatureCacheError, cache_key, encode_dataset, encoder_fingerprint

    model, collator, items = encoder_inputs
    encoders = encoder_fingerprint(model)
    encode_dataset(model, items, collator, tmp_path, cache_key(encoders, "settings"))
    with pytest.raises(FeatureCacheError, match="written for other encoders, processor settings or utterances"):
        encode_dataset(model, items, collator, tmp_path, cache_key(encoders, "other settings"))
    with torch.no_grad():
        model.crab.text_encoder.encoder.layer[0].output.dense.weight[0, 0] += 1e-3  # any weight change counts
    assert encoder_fingerprint(model) != encoders
    with pytest.raises(FeatureCacheError, match="pass another --encoder_cache folder, or delete this one"):
        encode_dataset(model, items, collator, tmp_path, cache_key(encoder_fingerprint(model), "settings"))


def test_encoder_cache_unfinished(encoder_inputs, tmp_path):
    from modeling_crab.training.feature_cache import CachedFeatures, FeatureCacheError, cache_encoder_outputs

    model, collator, items = encoder_inputs

    def batches_then_a_crash():
        yield {**collator(items[:1]), "ids": ["u0"]}
        raise OSError("clip u1 cannot be read")

    with pytest.raises(OSError, match="u1"):
        cache_encoder_outputs(model, batches_then_a_crash(), tmp_path, shard_bytes=1)
    with pytest.raises(FeatureCacheError, match="is unfinished .index.partial.json.; write it with encode_dataset"):
        CachedFeatures(tmp_path)


def test_encoder_cache_duplicate_ids(encoder_inputs, tmp_path):
    from modeling_crab.training.feature_cache import FeatureCacheError, cache_encoder_outputs

    model, collator, items = encoder_inputs
    with pytest.raises(FeatureCacheError, match="utterance id 'same' is cached twice; ids must be unique in a split"):
        cache_encoder_outputs(model, [{**collator(items[:2]), "ids": ["same", "same"]}], tmp_path)


def test_encoder_cache_in_an_unwritable_place(encoder_inputs, tmp_path):
    from modeling_crab.training.feature_cache import FeatureCacheError, encode_dataset

    model, collator, items = encoder_inputs
    (tmp_path / "a-file").write_text("")
    reads = []
    with pytest.raises(
        FeatureCacheError,
        match="cannot write the encoder cache in '.*a-file/cache' .*; pass a folder you can write to",
    ):
        encode_dataset(model, _Counting(items, reads), collator, tmp_path / "a-file" / "cache")
    assert reads == []  # refused before any audio was read


class _Counting(list):
    """A dataset (a list of items) that records which items were read."""

    def __init__(self, items, reads):
        super().__init__(items)
        self.reads = reads

    def __getitem__(self, i):
        self.reads.append(i)
        return super().__getitem__(i)
