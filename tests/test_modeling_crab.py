"""The Crab model: shapes, masking, the released numerics, CSL legs and parameter counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from modeling_crab import MLCS_TAPS, CrabConfig, CrabForEmotionClassification, CrabModel
from modeling_crab.losses import mlcs_loss
from modeling_crab.wavlm_attention import wavlm_attention_implementation


def _model(config, **overrides) -> CrabForEmotionClassification:
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return CrabForEmotionClassification(config).eval()


def _inputs(batch):
    return {k: batch[k] for k in ("input_values", "attention_mask", "input_ids", "text_attention_mask")}


def _unpadded(batch, i):
    n, length = int(batch["attention_mask"][i].sum()), int(batch["text_attention_mask"][i].sum())
    return {
        "input_values": batch["input_values"][i : i + 1, :n],
        "attention_mask": batch["attention_mask"][i : i + 1, :n],
        "input_ids": batch["input_ids"][i : i + 1, :length],
        "text_attention_mask": batch["text_attention_mask"][i : i + 1, :length],
    }


def test_batched_equals_one_by_one_with_masking(tiny_config, tiny_batch):
    model = _model(tiny_config)
    with torch.no_grad():
        batched = model(**_inputs(tiny_batch), output_csl_embeddings=True)
        singles = [model(**_unpadded(tiny_batch, i), output_csl_embeddings=True) for i in range(4)]
    torch.testing.assert_close(batched.logits, torch.cat([s.logits for s in singles]), atol=1e-5, rtol=1e-4)
    for tap in MLCS_TAPS:
        expected = torch.cat([s.csl_embeddings[tap] for s in singles])
        torch.testing.assert_close(batched.csl_embeddings[tap], expected, atol=1e-5, rtol=1e-4)


def _released_head_logits(model: CrabForEmotionClassification, inputs) -> tuple[torch.Tensor, dict]:
    """The released head, written out directly: no packing, no key masks, pooling and means over padding, and
    `nn.MultiheadAttention` for the cross-modal attention."""
    crab = model.crab
    speech = crab.audio_encoder(inputs["input_values"], attention_mask=inputs["attention_mask"]).last_hidden_state
    text = crab.text_encoder(inputs["input_ids"], attention_mask=inputs["text_attention_mask"]).last_hidden_state

    def unimodal(block, x):
        projected = block.layer_norm(block.projection(x))
        return projected, block.gru(projected)[0]

    def cross(block, q, kv):  # the released layer itself, with our block's weights
        released = torch.nn.MultiheadAttention(q.shape[-1], num_heads=1, batch_first=True).eval()
        released.load_state_dict(block.attention.state_dict())
        return q + released(q, kv, kv, need_weights=False)[0]

    def pool(block, x):
        return (block.score(x).softmax(dim=1) * x).sum(dim=1)

    a_proj, a_gru = unimodal(crab.audio_unimodal, speech)
    t_proj, t_gru = unimodal(crab.text_unimodal, text)
    a_pool = pool(crab.audio_pooling, cross(crab.audio_cross, a_gru, t_gru))
    t_pool = pool(crab.text_pooling, cross(crab.text_cross, t_gru, a_gru))
    classifier = model.classifier
    fusion = classifier.dense(classifier.layer_norm(torch.cat([a_pool, t_pool], dim=-1)))
    logits = classifier.out_proj(F.relu(fusion))
    taps = {
        "audio_unimodal": a_proj.mean(1),
        "text_unimodal": t_proj.mean(1),
        "audio_pooled": a_pool,
        "text_pooled": t_pool,
        "fusion": fusion,
    }
    return logits, {tap: leg(taps[tap]) for tap, leg in model.csl_legs.items()}


def test_mask_padding_false_reproduces_the_released_head(tiny_config, tiny_batch):
    model = _model(tiny_config, mask_padding=False)
    with torch.no_grad():
        ours = model(**_inputs(tiny_batch), output_csl_embeddings=True)
        reference_logits, reference_csl = _released_head_logits(model, _inputs(tiny_batch))
    torch.testing.assert_close(ours.logits, reference_logits, atol=1e-6, rtol=1e-5)
    for tap in MLCS_TAPS:
        torch.testing.assert_close(ours.csl_embeddings[tap], reference_csl[tap], atol=1e-6, rtol=1e-5)
    labels = tiny_batch["labels"]
    torch.testing.assert_close(
        mlcs_loss(ours.csl_embeddings, labels), mlcs_loss(reference_csl, labels), atol=1e-6, rtol=1e-5
    )
    # and on a padded batch the released numerics differ from per-utterance forwards, which is why masking exists
    with torch.no_grad():
        single = model(**_unpadded(tiny_batch, 3)).logits
    assert not torch.allclose(ours.logits[3:4], single, atol=1e-4)


def test_csl_embeddings_in_training_only(tiny_config, tiny_batch):
    model = _model(tiny_config)
    model.train()
    out = model(**_inputs(tiny_batch), labels=tiny_batch["labels"])
    assert set(out.csl_embeddings) == set(MLCS_TAPS)
    assert all(e.shape == (4, tiny_config.contrastive_dim) for e in out.csl_embeddings.values())
    assert out.loss is not None and out.loss.ndim == 0
    model.eval()
    assert model(**_inputs(tiny_batch)).csl_embeddings is None


def test_every_parameter_gets_a_gradient_from_the_full_objective(tiny_config, tiny_batch):
    model = _model(tiny_config)
    model.train()
    model.freeze_feature_encoder()
    out = model(**_inputs(tiny_batch), labels=tiny_batch["labels"])  # the full objective: CE + alpha * MLCS
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.mlcs_loss is not None
    torch.testing.assert_close(out.loss, out.ce_loss + tiny_config.mlcs_weight * out.mlcs_loss, atol=0, rtol=0)
    frozen = {id(p) for p in model.crab.audio_encoder.feature_extractor.parameters()}
    assert all(not p.requires_grad for p in model.crab.audio_encoder.feature_extractor.parameters())
    # WavLM's masked_spec_embed is only used when time masking fires. The pooling scores' bias is added to every
    # score alike and the softmax over time cancels it: its gradient is zero up to rounding, so it needs a grad only.
    missing = [
        name
        for name, p in model.named_parameters()
        if id(p) not in frozen
        and "masked_spec_embed" not in name
        and (p.grad is None or not (p.grad.abs().sum() > 0 or name.endswith("pooling.score.bias")))
    ]
    assert missing == []


def test_mlcs_taps_subset_builds_only_those_legs(tiny_config, tiny_batch):
    model = _model(tiny_config, mlcs_taps=["fusion", "audio_pooled"])
    assert set(model.csl_legs) == {"fusion", "audio_pooled"}
    out = model(**_inputs(tiny_batch), output_csl_embeddings=True)
    assert set(out.csl_embeddings) == {"fusion", "audio_pooled"}


def test_post_gru_tap_reads_the_gru_output(tiny_config, tiny_batch):
    model = _model(tiny_config, unimodal_tap="post_gru")
    h = tiny_config.fusion_hidden_size
    assert model.csl_legs["audio_unimodal"].dense.in_features == 2 * h
    with torch.no_grad():
        features = model.crab(**_inputs(tiny_batch))
    assert features.audio_unimodal.shape == (4, 2 * h)


def test_model_without_legs_refuses_csl_embeddings(tiny_config, tiny_batch):
    model = _model(tiny_config, use_csl_legs=False)
    assert model.csl_legs is None
    model.train()
    assert model(**_inputs(tiny_batch)).csl_embeddings is None
    with pytest.raises(ValueError, match="no CSL legs"):
        model(**_inputs(tiny_batch), output_csl_embeddings=True)


def test_parameter_groups_partition_the_model(tiny_config):
    model = _model(tiny_config)
    encoder = {id(p) for p in model.encoder_parameters()}
    head = {id(p) for p in model.head_parameters()}
    assert encoder and head and not encoder & head
    assert encoder | head == {id(p) for p in model.parameters()}
    assert {id(p) for p in model.classifier.parameters()} <= head


def test_paper_sized_parameter_counts():
    """Head of 16,811,530 parameters for large encoders and 8 classes; the CSL legs add 2,626,048 in training."""
    config = CrabConfig(id2label={i: str(i) for i in range(8)}, label2id={str(i): i for i in range(8)})
    with torch.device("meta"):
        model = CrabForEmotionClassification(config)
    legs = sum(p.numel() for p in model.csl_legs.parameters())
    head = sum(p.numel() for p in model.head_parameters()) - legs
    assert (head, legs) == (16_811_530, 2_626_048)
    assert config.audio_config.hidden_size == config.text_config.hidden_size == 1024


def test_the_tiny_speech_encoder_hears_loudness(tiny_config):
    """The CNN layer-norms each frame over its channels; only its bias keeps a clip and the same clip 12 dB louder
    apart (without one the tiny model cannot hear how loud a voice is, a main cue of anger and sadness)."""
    cnn = _model(tiny_config).crab.audio_encoder.feature_extractor
    clip = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        quiet, loud = cnn(0.25 * clip), cnn(clip)
    assert (loud - quiet).abs().mean() > 0.05 * quiet.abs().mean()
    tiny_config.audio_config.conv_bias = False
    cnn = _model(tiny_config).crab.audio_encoder.feature_extractor
    with torch.no_grad():
        torch.testing.assert_close(cnn(0.25 * clip), cnn(clip), atol=1e-3, rtol=1e-3)


def test_group_norm_encoders_get_no_attention_mask(tiny_config, tiny_batch):
    tiny_config.audio_config.feat_extract_norm = "group"
    tiny_config.audio_config.do_stable_layer_norm = False
    model = _model(tiny_config)
    seen = {}
    model.crab.audio_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True
    )
    with torch.no_grad():
        out = model(**_inputs(tiny_batch))
    assert "attention_mask" not in seen
    assert torch.isfinite(out.logits).all()


def test_crab_model_gives_the_pooled_embedding(tiny_config, tiny_batch):
    torch.manual_seed(0)
    model = CrabModel(tiny_config).eval()
    with torch.no_grad():
        out = model(**_inputs(tiny_batch))
    h = tiny_config.fusion_hidden_size
    assert out.pooled_output.shape == (4, 4 * h)
    assert out.audio_frame_mask.shape[:1] == (4,) and out.audio_frame_mask.dtype == torch.bool
    # the shortest utterance has the fewest real frames
    assert out.audio_frame_mask.sum(1).argmin().item() == 3


def test_from_pretrained_encoders_loads_local_encoder_weights(tiny_config, tmp_path):
    audio_dir, text_dir = tmp_path / "speech", tmp_path / "text"
    torch.manual_seed(1)
    AutoModel.from_config(tiny_config.audio_config).save_pretrained(audio_dir)
    text = AutoModel.from_config(tiny_config.text_config, add_pooling_layer=False)
    text.save_pretrained(text_dir)
    model = CrabForEmotionClassification.from_pretrained_encoders(
        str(audio_dir),
        str(text_dir),
        audio_config_overrides={"layerdrop": 0.0},
        fusion_hidden_size=32,
        id2label={0: "a", 1: "b"},
        label2id={"a": 0, "b": 1},
    )
    assert model.config.audio_encoder_name == str(audio_dir) and model.config.audio_config.layerdrop == 0.0
    saved = AutoModel.from_pretrained(audio_dir).state_dict()
    for name, tensor in model.crab.audio_encoder.state_dict().items():
        torch.testing.assert_close(tensor, saved[name])
    torch.testing.assert_close(
        model.crab.text_encoder.embeddings.word_embeddings.weight, text.embeddings.word_embeddings.weight
    )
    assert model.crab.text_encoder.pooler is None


def test_modality_dropout_gives_the_empty_transcript_in_training_only(tiny_config, tiny_batch, tiny_processor):
    model = _model(tiny_config, modality_dropout=0.999)
    ids, mask = model.drop_transcripts(tiny_batch["input_ids"], tiny_batch["text_attention_mask"])
    empty = tiny_processor(text=[""])
    width = int(empty["text_attention_mask"].sum())
    assert torch.equal(ids[:, :width], empty["input_ids"].expand(4, -1))
    assert mask.sum(1).tolist() == [width] * 4
    assert (ids[:, width:] == tiny_processor.tokenizer.pad_token_id).all()
    with torch.no_grad():  # eval mode never drops
        kept = model(**_inputs(tiny_batch)).logits
        model.config.modality_dropout = 0.0
        torch.testing.assert_close(model(**_inputs(tiny_batch)).logits, kept)
    with pytest.raises(ValueError, match="modality_dropout"):
        CrabConfig(modality_dropout=1.0)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config, tiny_batch):
    grads = []
    for checkpointing in (False, True):
        model = _model(tiny_config, use_csl_legs=False)
        model.train()
        for module in model.modules():  # deterministic: no dropout anywhere
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            for name in ("dropout", "dropout_prob", "attention_dropout"):
                if isinstance(getattr(module, name, None), float):
                    setattr(module, name, 0.0)
        if checkpointing:  # the name transformers 5.24 calls it by; 5.17 has only the older one
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
            for encoder in (model.crab.audio_encoder, model.crab.text_encoder):
                flags = [m.gradient_checkpointing for m in encoder.modules() if hasattr(m, "gradient_checkpointing")]
                assert flags and all(flags)
        model(**_inputs(tiny_batch), labels=tiny_batch["labels"]).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_audio_shorter_than_one_frame_is_named(tiny_config, tiny_processor):
    model = _model(tiny_config)
    batch = tiny_processor(audio=[torch.randn(10).numpy()], text=["hi"], sampling_rate=16000)
    with pytest.raises(ValueError, match="10 samples"):
        model(**_inputs(batch))


def test_sdpa_audio_attention_is_the_same_function(tiny_config, tiny_batch):
    assert tiny_config.audio_attention == "sdpa"  # the default: same function, fused kernels
    sdpa = _model(tiny_config)
    eager = _model(tiny_config, audio_attention="eager")
    assert wavlm_attention_implementation(sdpa) == "sdpa" and wavlm_attention_implementation(eager) == "eager"
    sdpa.load_state_dict(eager.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(
            sdpa(**_inputs(tiny_batch)).logits, eager(**_inputs(tiny_batch)).logits, atol=1e-5, rtol=1e-4
        )
    with pytest.raises(ValueError, match="audio_attention"):
        CrabConfig(audio_attention="flash")


def _dtype_seen_by(module: torch.nn.Module, seen: list) -> None:
    def record(module, args, output):
        output = output[0] if isinstance(output, tuple) else output
        seen.append(output.data.dtype)  # a tensor or a PackedSequence

    module.register_forward_hook(record)


@pytest.mark.parametrize("fp32_parts", [["feature_encoder", "gru"], []])
def test_fp32_under_autocast_keeps_the_cnn_and_grus_in_fp32(tiny_config, tiny_batch, fp32_parts, monkeypatch):
    """bf16 autocast (CPU here; the same switch on CUDA): the listed parts compute in fp32, the rest in bf16, and
    the logits stay within 1e-2 (relative) of fp32."""
    model = _model(tiny_config, fp32_under_autocast=fp32_parts)
    cnn_dtypes = []
    _dtype_seen_by(model.crab.audio_encoder.feature_extractor, cnn_dtypes)
    with torch.no_grad():
        reference = model(**_inputs(tiny_batch)).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(**_inputs(tiny_batch)).logits
    expected = torch.float32 if fp32_parts else torch.bfloat16
    assert cnn_dtypes == [torch.float32, expected]
    from modeling_crab.modeling_crab import CrabUnimodalBlock

    recurrence_dtypes = []  # what the GRUs compute in
    block, recurrence = model.crab.audio_unimodal, CrabUnimodalBlock.recurrence

    def recording(self, x, mask):
        if self is block:
            recurrence_dtypes.append(x.dtype)
        return recurrence(self, x, mask)

    monkeypatch.setattr(CrabUnimodalBlock, "recurrence", recording)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(**_inputs(tiny_batch))
    assert recurrence_dtypes == [torch.float32 if fp32_parts else torch.bfloat16]
    assert low.dtype == torch.bfloat16
    assert ((low.float() - reference).abs().max() / reference.abs().max()).item() < 1e-2
    if fp32_parts:  # outside autocast nothing changes
        copy = _model(tiny_config, fp32_under_autocast=[])
        with torch.no_grad():
            torch.testing.assert_close(copy(**_inputs(tiny_batch)).logits, reference, atol=0, rtol=0)
    with pytest.raises(ValueError, match="fp32_under_autocast"):
        CrabConfig(fp32_under_autocast=["classifier"])


def test_precomputed_encoder_outputs_replace_the_encoders(tiny_config, tiny_batch):
    """The encoders' outputs (`encode`, or the cache's 0/1 masks) through `encoder_outputs` or the head-level
    `CrabModel.forward_head` give the same logits as waveforms and ids; missing either input is an error."""
    model = _model(tiny_config)
    inputs = _inputs(tiny_batch)
    with torch.no_grad():
        reference = model(**inputs)
        encoded = model.crab.encode(**inputs)
        as_cached = {**encoded, "frame_mask": encoded["frame_mask"].long(), "token_mask": encoded["token_mask"].long()}
        from_encoded = model(encoder_outputs=encoded).logits
        from_cache = model(encoder_outputs=as_cached).logits
        head = model.crab.forward_head(**as_cached)
    for logits in (from_encoded, from_cache):
        torch.testing.assert_close(logits, reference.logits, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(head.pooled_output, model.crab(**inputs).pooled_output, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="no input_values"):
        model(input_ids=inputs["input_ids"], text_attention_mask=inputs["text_attention_mask"])
    with pytest.raises(ValueError, match="no input_ids"):
        model(input_values=inputs["input_values"], attention_mask=inputs["attention_mask"])


def test_modality_dropout_on_text_features_uses_the_empty_transcript(tiny_config, tiny_batch):
    """With precomputed text features a dropped row becomes the frozen encoder's output for `<s></s>`: the same
    logits as dropping the transcript from the token ids, with the same random draw."""
    model = _model(tiny_config, modality_dropout=0.5, classifier_dropout=0.0, cross_attention_dropout=0.0)
    inputs = _inputs(tiny_batch)
    with torch.no_grad():
        encoded = model.crab.encode(**inputs)
    model.train()
    model.crab.audio_encoder.eval()  # no SpecAugment / encoder dropout: compare the head only
    model.crab.text_encoder.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        from_ids = model(**inputs)
        torch.manual_seed(0)
        from_features = model(encoder_outputs=encoded)
        torch.manual_seed(0)
        dropped = torch.rand(len(inputs["input_ids"])) < 0.5
    assert 0 < dropped.sum() < len(inputs["input_ids"])  # the seed drops some rows and keeps others
    torch.testing.assert_close(from_features.logits, from_ids.logits, atol=1e-5, rtol=1e-4)


def test_run_in_fp32_under_autocast():
    from modeling_crab.modeling_crab import run_in_fp32_under_autocast

    linear = torch.nn.Linear(4, 4)
    x = torch.randn(2, 3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x).dtype == torch.bfloat16
        run_in_fp32_under_autocast(linear)
        assert linear(x.bfloat16()).dtype == torch.float32
    torch.testing.assert_close(linear(x), x @ linear.weight.T + linear.bias)
    assert list(linear.state_dict()) == ["weight", "bias"]


def test_unimodal_recurrence_equals_packed_sequences(tiny_config):
    """In CPU training the masked bidirectional GRU runs direction by direction over the padded batch; outputs and
    gradients equal the packed-sequence computation (what runs on CUDA and without gradients), padding gives 0."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from modeling_crab.modeling_crab import CrabUnimodalBlock

    torch.manual_seed(0)
    block = CrabUnimodalBlock(24, 16)
    lengths = torch.tensor([9, 4, 7, 1])
    mask = torch.arange(9)[None] < lengths[:, None]
    x = torch.randn(4, 9, 16, requires_grad=True)

    split = block.recurrence(x, mask)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    reference = pad_packed_sequence(block.gru(packed)[0], batch_first=True, total_length=9)[0]
    torch.testing.assert_close(split, reference, atol=1e-6, rtol=1e-5)
    assert split[~mask].abs().max() == 0
    with torch.no_grad():  # packed
        torch.testing.assert_close(block.recurrence(x, mask), split.detach(), atol=1e-6, rtol=1e-5)
    weights = [x, *block.gru.parameters()]
    for got, expected in zip(
        torch.autograd.grad(split.square().sum(), weights), torch.autograd.grad(reference.square().sum(), weights)
    ):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_class_weights_live_in_the_config_and_weight_the_loss(tiny_config, tiny_batch, tmp_path):
    """`config.class_weights` (None in configs saved before it existed: plain CE) weights the CE term of the loss the
    model returns, and travels in config.json."""
    model = _model(tiny_config)
    with torch.no_grad():
        plain = model(**_inputs(tiny_batch), labels=tiny_batch["labels"])
        model.config.class_weights = [0.5, 2.0, 1.0, 3.0]
        weighted = model(**_inputs(tiny_batch), labels=tiny_batch["labels"])
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0])
    torch.testing.assert_close(plain.loss, F.cross_entropy(plain.logits, tiny_batch["labels"]), atol=0, rtol=0)
    expected = F.cross_entropy(weighted.logits, tiny_batch["labels"], weight=weights)
    torch.testing.assert_close(weighted.loss, expected, atol=0, rtol=0)
    assert weighted.mlcs_loss is None and weighted.csl_embeddings is None  # eval mode: no MLCS term
    model.config.save_pretrained(tmp_path)
    assert CrabConfig.from_pretrained(tmp_path).class_weights == [0.5, 2.0, 1.0, 3.0]
    saved = CrabConfig.from_pretrained(tmp_path).to_dict()
    old = CrabConfig.from_dict({k: v for k, v in saved.items() if k not in ("class_weights", "mlcs_gather")})
    assert old.class_weights is None and old.mlcs_gather is False
    with pytest.raises(ValueError, match="class_weights has 2 entries for 4 labels"):
        CrabConfig(id2label=tiny_config.id2label, class_weights=[1.0, 2.0])


ATTRIBUTES = ["arousal", "valence", "dominance"]


def test_attribute_regressor_is_batched_as_one_by_one(tiny_config, tiny_batch):
    """A joint model: logits (B, C) and attributes (B, A) from the pooled embedding; padding changes neither."""
    model = _model(tiny_config, attribute_names=ATTRIBUTES)
    with torch.no_grad():
        batched = model(**_inputs(tiny_batch))
        singles = [model(**_unpadded(tiny_batch, i)) for i in range(4)]
    assert batched.logits.shape == (4, tiny_config.num_labels) and batched.attributes.shape == (4, 3)
    torch.testing.assert_close(batched.attributes, torch.cat([s.attributes for s in singles]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched.logits, torch.cat([s.logits for s in singles]), atol=1e-5, rtol=1e-4)
    # a fresh regressor starts at the middle of the 0-1 scale
    assert torch.equal(model.regressor.out_proj.bias, torch.full((3,), 0.5))


def test_attribute_labels_give_the_attribute_term_and_rows_without_them_are_masked(tiny_config, tiny_batch):
    model = _model(tiny_config, attribute_names=ATTRIBUTES).train()
    targets = torch.tensor([[0.9, 0.2, 0.8], [0.1, 0.3, float("nan")], [0.5, 0.5, 0.5], [0.7, 0.9, 0.6]])
    out = model(**tiny_batch, attribute_labels=targets)
    assert out.attribute_loss is not None and torch.isfinite(out.loss)
    torch.testing.assert_close(
        out.loss,
        out.ce_loss + out.attribute_loss * tiny_config.attribute_loss_weight + tiny_config.mlcs_weight * out.mlcs_loss,
    )
    out.loss.backward()
    assert all(p.grad is not None for p in model.regressor.parameters())


def test_an_attributes_only_model_has_no_classifier(tiny_config, tiny_batch):
    config = CrabConfig.from_dict(
        {**tiny_config.to_dict(), "id2label": {}, "label2id": {}, "attribute_names": ATTRIBUTES}
    )
    assert config.num_labels == 0
    model = _model(config)
    assert model.classifier is None and not any(name.startswith("classifier.") for name in model.state_dict())
    with torch.no_grad():
        out = model(**_inputs(tiny_batch))
    assert out.logits is None and out.attributes.shape == (4, 3)
    model.train()
    targets = torch.rand(4, 3)
    out = model(**_inputs(tiny_batch), attribute_labels=targets)
    assert out.ce_loss is None and out.attribute_loss is not None
    out.loss.backward()  # the fusion CSL reads the regressor's hidden layer
    assert model.csl_legs["fusion"].dense.weight.grad is not None
    with pytest.raises(ValueError, match="needs classes"):
        CrabConfig.from_dict({**tiny_config.to_dict(), "id2label": {}, "label2id": {}})


def test_a_model_without_attributes_is_unchanged(tiny_config, tiny_batch, tmp_path):
    """Categories only (every checkpoint saved before attributes): no regressor, no attributes, the same keys; a
    config.json without `attribute_names` loads as categories only."""
    model = _model(tiny_config)
    assert model.regressor is None and not any(name.startswith("regressor.") for name in model.state_dict())
    with torch.no_grad():
        out = model(**_inputs(tiny_batch))
    assert out.attributes is None and "attributes" not in out
    model.save_pretrained(tmp_path)
    import json

    saved = json.loads((tmp_path / "config.json").read_text())
    for key in ("attribute_names", "attribute_loss_weight", "attribute_contrast_bins"):
        saved.pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    reloaded = CrabForEmotionClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.attribute_names == [] and reloaded.regressor is None
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**_inputs(tiny_batch)).logits, out.logits)


# ---- transformers' output conventions: hidden states, attentions, tuples, strict keywords


def test_output_hidden_states_returns_every_stream(tiny_config, tiny_batch):
    """`output_hidden_states` (argument or config) returns each encoder's own hidden states (embeddings + one per
    layer, as the encoder alone returns them) and the head's three blocks per stream; nothing without it."""
    model = _model(tiny_config)
    inputs = _inputs(tiny_batch)
    h, layers = tiny_config.fusion_hidden_size, tiny_config.audio_config.num_hidden_layers
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        plain = model(**inputs)
        speech_alone = model.crab.audio_encoder(
            inputs["input_values"], attention_mask=inputs["attention_mask"], output_hidden_states=True
        )
    frames, tokens = out.audio_head_hidden_states[0].shape[1], inputs["input_ids"].shape[1]
    assert len(out.audio_encoder_hidden_states) == layers + 1
    for got, expected in zip(out.audio_encoder_hidden_states, speech_alone.hidden_states):
        torch.testing.assert_close(got, expected)
    assert len(out.text_encoder_hidden_states) == tiny_config.text_config.num_hidden_layers + 1
    assert out.text_encoder_hidden_states[-1].shape == (4, tokens, tiny_config.text_config.hidden_size)
    assert [s.shape for s in out.audio_head_hidden_states] == [(4, frames, h), (4, frames, 2 * h), (4, frames, 2 * h)]
    assert [s.shape for s in out.text_head_hidden_states] == [(4, tokens, h), (4, tokens, 2 * h), (4, tokens, 2 * h)]
    torch.testing.assert_close(out.logits, plain.logits)
    assert plain.audio_encoder_hidden_states is None and plain.text_head_hidden_states is None
    model.config.output_hidden_states = True  # or from the config
    with torch.no_grad():
        via_config = model.crab(**inputs)
    assert len(via_config.text_encoder_hidden_states) == layers + 1
    torch.testing.assert_close(via_config.audio_head_hidden_states[-1], via_config.audio_hidden_states)


def test_output_attentions_needs_eager_attention(tiny_config, tiny_batch, tmp_path):
    """Fused (SDPA) attention returns no weights: asked for them, the model refuses with transformers' error naming
    the fix. Eager (`attn_implementation="eager"` at load, `set_attn_implementation`, or `output_attentions` in the
    config) returns every encoder layer's and both cross-modal blocks' weights, and the same logits."""
    model = _model(tiny_config)
    inputs = _inputs(tiny_batch)
    with pytest.raises(ValueError, match=r"output_attentions=True .* attn_implementation=\"eager\""):
        model(**inputs, output_attentions=True)
    with torch.no_grad():
        fused = model(**inputs).logits
    model.save_pretrained(tmp_path)
    eager = CrabForEmotionClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert wavlm_attention_implementation(eager) == "eager"
    with torch.no_grad():
        out = eager(**inputs, output_attentions=True)
    torch.testing.assert_close(out.logits, fused, atol=1e-5, rtol=1e-4)
    heads = tiny_config.audio_config.num_attention_heads
    frames, tokens = out.cross_attentions[0].shape[2], inputs["input_ids"].shape[1]
    assert [a.shape for a in out.audio_encoder_attentions] == [(4, heads, frames, frames)] * 2
    assert [a.shape for a in out.text_encoder_attentions] == [(4, heads, tokens, tokens)] * 2
    speech_to_text, text_to_speech = out.cross_attentions
    assert speech_to_text.shape == (4, 1, frames, tokens) and text_to_speech.shape == (4, 1, tokens, frames)
    torch.testing.assert_close(speech_to_text.sum(-1), torch.ones(4, 1, frames))
    padded = ~tiny_batch["text_attention_mask"].bool()
    assert speech_to_text.masked_select(padded[:, None, None, :]).abs().max() == 0  # no weight on pad tokens
    with torch.no_grad():  # precomputed encoder outputs: only the head's attention runs
        head_only = eager(encoder_outputs=eager.crab.encode(**inputs), output_attentions=True)
    assert head_only.audio_encoder_attentions is None and len(head_only.cross_attentions) == 2
    assert CrabForEmotionClassification.from_pretrained(tmp_path, output_attentions=True)(**inputs).cross_attentions
    model.set_attn_implementation("eager")
    assert wavlm_attention_implementation(model) == "eager"
    assert len(model(**inputs, output_attentions=True).text_encoder_attentions) == 2


def test_set_attn_implementation_switches_every_attention(tiny_config, tiny_batch):
    """`set_attn_implementation` sets the head's and the text encoder's attention, and WavLM's follows: eager with
    "eager", `config.audio_attention` otherwise. The function is the same either way."""
    from modeling_crab.wavlm_attention import sdpa_reproduces_upstream

    model = _model(tiny_config)
    crab = model.crab
    fused_wavlm = "sdpa" if sdpa_reproduces_upstream() else "eager"
    assert (crab.config._attn_implementation, crab.text_encoder.config._attn_implementation) == ("sdpa", "sdpa")
    assert wavlm_attention_implementation(model) == fused_wavlm
    with torch.no_grad():
        fused = model(**_inputs(tiny_batch)).logits
        model.set_attn_implementation("eager")
        kinds = {crab.config._attn_implementation, crab.text_encoder.config._attn_implementation}
        assert kinds == {"eager"} and wavlm_attention_implementation(model) == "eager"
        torch.testing.assert_close(model(**_inputs(tiny_batch)).logits, fused, atol=1e-5, rtol=1e-4)
        model.set_attn_implementation("sdpa")
    assert wavlm_attention_implementation(model) == fused_wavlm


def test_return_dict_false_returns_the_tuple(tiny_config, tiny_batch):
    """`return_dict=False` (argument or config) returns `to_tuple()`: the set fields in their order, loss first."""
    model = _model(tiny_config)
    inputs = {**_inputs(tiny_batch), "labels": tiny_batch["labels"]}
    with torch.no_grad():
        as_dict = model(**inputs)
        as_tuple = model(**inputs, return_dict=False)
        features = model.crab(**_inputs(tiny_batch), return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict.to_tuple())
    loss, logits = as_tuple[:2]
    torch.testing.assert_close(loss, as_dict.loss)
    torch.testing.assert_close(logits, as_dict.logits)
    assert isinstance(features, tuple) and features[0].shape == (4, 4 * tiny_config.fusion_hidden_size)
    model.config.return_dict = False
    with torch.no_grad():
        assert isinstance(model(**inputs), tuple)
        assert isinstance(model(**inputs, return_dict=True), type(as_dict))


def test_unknown_keywords_are_refused(tiny_config, tiny_batch):
    """A misspelt input is an error, not silently ignored."""
    model = _model(tiny_config)
    inputs = _inputs(tiny_batch)
    mask = inputs.pop("attention_mask")
    with pytest.raises(TypeError, match="unexpected keyword argument 'atention_mask'"):
        model(**inputs, atention_mask=mask)
    with pytest.raises(TypeError, match="unexpected keyword argument 'label'"):
        model(**inputs, attention_mask=mask, label=tiny_batch["labels"])
    with pytest.raises(TypeError, match="unexpected keyword argument 'atention_mask'"):
        model.crab(**inputs, atention_mask=mask)


# ---- the cross-modal attention: nn.MultiheadAttention's parameters and function, servable by offload hooks


def test_cross_attention_has_the_released_layers_parameters_and_init(tiny_config):
    """The same state dict keys as `nn.MultiheadAttention` (so released checkpoints load as they are), and
    `head_init="pytorch"` gives it the same weights as `nn.MultiheadAttention`'s own initialisation."""
    from modeling_crab.modeling_crab import CrabCrossAttention, _pytorch_default_init

    width = 2 * tiny_config.fusion_hidden_size
    released = torch.nn.MultiheadAttention(width, num_heads=1, dropout=0.5, batch_first=True)
    ours = CrabCrossAttention(tiny_config, width)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in released.state_dict().items()}
    torch.manual_seed(3)
    released.out_proj.reset_parameters()  # what nn.MultiheadAttention's constructor does, in its order
    released._reset_parameters()
    torch.manual_seed(3)
    _pytorch_default_init(ours.out_proj)  # the order `_init_weights` visits them: children first
    _pytorch_default_init(ours)
    for name, tensor in released.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], tensor, atol=0, rtol=0, msg=name)
    model = _model(tiny_config, head_init="normal")  # both head inits start the attention as PyTorch does
    attention = model.crab.audio_cross.attention
    xavier = (6 / sum(attention.in_proj_weight.shape)) ** 0.5
    assert attention.in_proj_weight.abs().max() <= xavier and not attention.in_proj_bias.any()


def test_disk_offloaded_head_gives_the_same_logits(tiny_config, tiny_batch, tmp_path):
    """`from_pretrained(device_map=..., offload_folder=...)` with the head and the text encoder on disk (accelerate
    loads each layer's weights when that layer runs): the same logits as a normal load. WavLM stays on the execution
    device: its attention layers read their child layers' weights directly (transformers' eager one passes them to
    `F.multi_head_attention_forward`), which the hooks cannot serve."""
    model = _model(tiny_config)
    model.save_pretrained(tmp_path / "saved")
    from safetensors import safe_open

    with safe_open(tmp_path / "saved" / "model.safetensors", "pt") as saved:
        keys = set(saved.keys())
    assert {f"crab.audio_cross.attention.{name}" for name in ("in_proj_weight", "in_proj_bias")} <= keys
    assert {"crab.text_cross.attention.out_proj.weight", "crab.text_cross.attention.out_proj.bias"} <= keys
    on_disk = ["text_encoder", "text_unimodal", "audio_cross", "text_cross", "audio_pooling", "text_pooling"]
    device_map = {"crab.audio_encoder": "cpu", "crab.audio_unimodal": "cpu", "classifier": "disk", "csl_legs": "disk"}
    device_map.update({f"crab.{name}": "disk" for name in on_disk})
    offloaded = CrabForEmotionClassification.from_pretrained(
        tmp_path / "saved", device_map=device_map, offload_folder=tmp_path / "offload"
    ).eval()
    assert offloaded.hf_device_map["crab.audio_cross"] == "disk"
    assert offloaded.crab.audio_cross.attention.out_proj.weight.device.type == "meta"  # served by the hook
    with torch.no_grad():
        expected = model(**_inputs(tiny_batch)).logits
        torch.testing.assert_close(offloaded(**_inputs(tiny_batch)).logits, expected, atol=1e-6, rtol=1e-5)
