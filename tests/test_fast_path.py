"""Fast paths compute the same function: SDPA WavLM attention vs transformers' eager WavLM (outputs, gradients, Crab
logits and MLCS), and the frozen-encoder mode's head on cached encoder outputs vs the full model."""

from __future__ import annotations

import ast
import copy
import inspect

import numpy as np
import pytest
import torch
from conftest import SENTENCES
from transformers import WavLMModel

from modeling_crab import CrabForEmotionClassification
from modeling_crab.losses import mlcs_loss
from modeling_crab.training.feature_cache import CachedFeatures, cache_encoder_outputs, collate_cached
from modeling_crab.wavlm_attention import (
    WavLMSdpaAttention,
    set_wavlm_attention,
    wavlm_attention_implementation,
)

NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0}
# Large checkpoints: layer-norm CNN + pre-LN transformer; base checkpoints: group-norm CNN + post-LN transformer.
VARIANTS = {
    "stable_layer_norm": {"feat_extract_norm": "layer", "do_stable_layer_norm": True},
    # without a CNN bias, as in base checkpoints: the group norm would cancel it (its gradient is rounding noise)
    "post_layer_norm": {"feat_extract_norm": "group", "do_stable_layer_norm": False, "conv_bias": False},
}


def _wavlm_config(tiny_config, variant: str):
    audio_config = copy.deepcopy(tiny_config.audio_config)
    for key, value in {**VARIANTS[variant], **NO_DROPOUT, "num_hidden_layers": 3, "num_attention_heads": 4}.items():
        setattr(audio_config, key, value)
    return audio_config


def _perturb_gates(model: torch.nn.Module) -> None:
    """Random init leaves gru_rel_pos_const at 1; spread it so the gate differs per head."""
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "gru_rel_pos_const"):
                module.gru_rel_pos_const.uniform_(0.5, 1.5)


def _padded_audio() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    lengths = (16000, 9000, 12500, 4000)
    waveforms = torch.randn(len(lengths), max(lengths), generator=generator)
    attention_mask = (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()
    return waveforms * attention_mask, attention_mask


def _assert_grads_close(eager: torch.nn.Module, sdpa: torch.nn.Module) -> None:
    for (name, p_eager), p_sdpa in zip(eager.named_parameters(), sdpa.parameters()):
        if p_eager.grad is None:
            assert p_sdpa.grad is None, name
            continue
        scale = max(p_eager.grad.abs().max().item(), 1.0)
        torch.testing.assert_close(p_sdpa.grad, p_eager.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


@pytest.fixture(params=[None, True], ids=["plain_mask", "aligned_mask"])
def mask_alignment(request, monkeypatch):
    """Also run the CUDA layout (mask rows allocated 16-aligned, then sliced) on CPU."""
    monkeypatch.setattr(WavLMSdpaAttention, "align_mask_rows", request.param)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_sdpa_wavlm_equals_eager(tiny_config, variant, training, mask_alignment, device):
    torch.manual_seed(0)
    eager = WavLMModel(_wavlm_config(tiny_config, variant)).train(training).to(device)
    _perturb_gates(eager)
    sdpa = set_wavlm_attention(copy.deepcopy(eager), "sdpa")
    waveforms, attention_mask = (t.to(device) for t in _padded_audio())

    out_eager = eager(waveforms, attention_mask=attention_mask).last_hidden_state
    out_sdpa = sdpa(waveforms, attention_mask=attention_mask).last_hidden_state
    torch.testing.assert_close(out_sdpa, out_eager, atol=1e-5, rtol=1e-5)

    target = torch.randn_like(out_eager)
    (out_eager * target).sum().backward()
    (out_sdpa * target).sum().backward()
    _assert_grads_close(eager, sdpa)


def test_sdpa_wavlm_without_attention_mask(tiny_config, mask_alignment):
    """Base checkpoints (group norm) get no attention mask: the key-padding branch is skipped."""
    torch.manual_seed(0)
    eager = WavLMModel(_wavlm_config(tiny_config, "post_layer_norm")).eval()
    sdpa = set_wavlm_attention(copy.deepcopy(eager), "sdpa")
    waveforms, _ = _padded_audio()
    with torch.no_grad():
        torch.testing.assert_close(
            sdpa(waveforms).last_hidden_state, eager(waveforms).last_hidden_state, atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_crab_logits_and_mlcs_equal_with_sdpa_wavlm(tiny_config, tiny_batch, variant):
    for key, value in {**VARIANTS[variant], **NO_DROPOUT}.items():
        setattr(tiny_config.audio_config, key, value)
    tiny_config.text_config.hidden_dropout_prob = tiny_config.text_config.attention_probs_dropout_prob = 0.0
    tiny_config.cross_attention_dropout = tiny_config.classifier_dropout = 0.0
    tiny_config.audio_attention = "eager"
    torch.manual_seed(0)
    eager = CrabForEmotionClassification(tiny_config).train()
    _perturb_gates(eager)
    sdpa = set_wavlm_attention(copy.deepcopy(eager), "sdpa")
    assert wavlm_attention_implementation(eager) == "eager" and wavlm_attention_implementation(sdpa) == "sdpa"
    inputs = {k: tiny_batch[k] for k in ("input_values", "attention_mask", "input_ids", "text_attention_mask")}

    outputs = []
    for model in (eager, sdpa):
        out = model(**inputs)
        loss = mlcs_loss(out.csl_embeddings, tiny_batch["labels"])
        (loss + out.logits.square().mean()).backward()
        outputs.append((out.logits, loss))
    (logits_eager, loss_eager), (logits_sdpa, loss_sdpa) = outputs
    torch.testing.assert_close(logits_sdpa, logits_eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_sdpa, loss_eager, atol=1e-5, rtol=1e-5)
    _assert_grads_close(eager, sdpa)


def test_enable_and_disable_swap_every_layer_and_keep_the_weights(tiny_config):
    tiny_config.audio_attention = "eager"
    model = CrabForEmotionClassification(tiny_config)
    keys = list(model.state_dict())
    assert wavlm_attention_implementation(model) == "eager"
    set_wavlm_attention(model.crab.audio_encoder, "sdpa")
    layers = model.crab.audio_encoder.encoder.layers
    assert all(isinstance(layer.attention, WavLMSdpaAttention) for layer in layers)
    assert wavlm_attention_implementation(model) == "sdpa"
    assert list(model.state_dict()) == keys
    set_wavlm_attention(model, "eager")
    assert wavlm_attention_implementation(model) == "eager"
    with pytest.raises(ValueError, match="holds no WavLMAttention"):
        set_wavlm_attention(model.crab.text_encoder, "sdpa")
    set_wavlm_attention(model.crab.text_encoder, "sdpa", strict=False)  # a config switch on a non-WavLM encoder


def test_the_installed_transformers_wavlm_attention_is_the_reproduced_code():
    """A fresh install's default path is the fused attention: the installed transformers' WavLM attention code is
    one the SDPA attention reproduces. When a transformers release changes it, this fails here, not for a user: run
    this file on that release and, if the eager/SDPA comparisons above pass, add its fingerprint to
    REPRODUCED_UPSTREAM."""
    import transformers

    from modeling_crab import wavlm_attention

    fingerprint = wavlm_attention.upstream_fingerprint()
    assert wavlm_attention.sdpa_reproduces_upstream(), (
        f"transformers {transformers.__version__}'s WavLM attention has fingerprint {fingerprint}, not in "
        f"REPRODUCED_UPSTREAM {wavlm_attention.REPRODUCED_UPSTREAM}"
    )


def test_the_upstream_fingerprint_follows_the_computation_not_the_spelling():
    """Annotations, docstrings, comments and formatting leave the fingerprint alone; a changed line of the
    attention or of the layers calling it changes it, as does a function gone."""
    from transformers.models.wavlm import modeling_wavlm

    from modeling_crab.wavlm_attention import upstream_fingerprint

    source = inspect.getsource(modeling_wavlm)
    original = upstream_fingerprint(source)
    respelled = (
        source.replace("hidden_states: torch.Tensor", "hidden_states: 'torch.FloatTensor'")
        .replace("hidden_states: torch.FloatTensor", "hidden_states: 'torch.Tensor'")
        .replace(
            "        attn_residual = hidden_states\n", "        # a comment\n        attn_residual = (hidden_states)\n"
        )
    )
    assert respelled != source and upstream_fingerprint(respelled) == original
    changed_layer = source.replace(
        "        attn_residual = hidden_states\n", "        attn_residual = 2 * hidden_states\n", 1
    )
    assert changed_layer != source and upstream_fingerprint(changed_layer) != original
    tree = ast.parse(source)
    attention = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "WavLMAttention")
    attention.body = [n for n in attention.body if getattr(n, "name", None) != "torch_multi_head_self_attention"]
    assert upstream_fingerprint(ast.unparse(tree)) != original


def test_a_changed_upstream_attention_falls_back_to_eager_attention(tiny_config, monkeypatch, caplog):
    """The SDPA attention replaces a private transformers class: on a release whose WavLM attention code differs
    from the reproduced code, a model asking for it warns once, naming the release, and keeps transformers' own
    attention (the same function)."""
    import transformers

    from modeling_crab import wavlm_attention

    torch.manual_seed(0)
    sdpa = CrabForEmotionClassification(tiny_config)  # built while the code is the reproduced one
    assert wavlm_attention_implementation(sdpa) == "sdpa"
    monkeypatch.setattr(transformers, "__version__", "5.99.0")
    monkeypatch.setattr(wavlm_attention, "_installed_fingerprint", lambda: "0123456789abcdef")
    wavlm_attention._warn_changed.cache_clear()
    with caplog.at_level("WARNING", logger=wavlm_attention.__name__):
        model = CrabForEmotionClassification(tiny_config)  # audio_attention="sdpa", the default
        set_wavlm_attention(sdpa, "sdpa")  # an SDPA model asked again: back to eager
    assert tiny_config.audio_attention == "sdpa"
    assert wavlm_attention_implementation(model) == wavlm_attention_implementation(sdpa) == "eager"
    messages = [record.getMessage() for record in caplog.records if record.name == wavlm_attention.__name__]
    assert len(messages) == 1, messages
    assert "transformers 5.99.0" in messages[0] and "0123456789abcdef" in messages[0] and "eager" in messages[0]
    wavlm_attention._warn_changed.cache_clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_head_on_cached_encoder_outputs_equals_the_full_model(tiny_config, tiny_batch, tmp_path, dtype):
    """Frozen-encoder mode: encode once, then the forward runs the head alone on the cached features."""
    torch.manual_seed(0)
    model = CrabForEmotionClassification(tiny_config).eval()
    inputs = {k: tiny_batch[k] for k in ("input_values", "attention_mask", "input_ids", "text_attention_mask")}
    with torch.no_grad():
        expected = model(**inputs, output_csl_embeddings=True)

    batches = [{**inputs, "labels": tiny_batch["labels"], "ids": ["a", "b", "c", "d"]}]
    assert cache_encoder_outputs(model, batches, tmp_path, dtype=dtype) == 4
    dataset = CachedFeatures(tmp_path)
    reordered = collate_cached([dataset[i] for i in (3, 1, 0, 2)])  # other batch, other padding
    features = {k: v for k, v in reordered.items() if k != "labels"}
    encoder_calls = []
    for encoder in (model.crab.audio_encoder, model.crab.text_encoder):
        encoder.register_forward_hook(lambda *args: encoder_calls.append(1))
    with torch.no_grad():
        cached = model(**features, output_csl_embeddings=True)
    assert not encoder_calls
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    order = [3, 1, 0, 2]
    torch.testing.assert_close(cached.logits, expected.logits[order], atol=tolerance, rtol=tolerance)
    for tap, embedding in cached.csl_embeddings.items():
        torch.testing.assert_close(embedding, expected.csl_embeddings[tap][order], atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(reordered["labels"], tiny_batch["labels"][order])


@pytest.mark.slow  # a minute of torch.compile on 2 cores
def test_compile_regions_computes_the_same_function_and_keeps_the_state_dict(tiny_config, tiny_batch):
    """Regional compilation (aot_eager here: dynamo + AOTAutograd without code generation, fast on CPU): same
    logits and gradients as eager, the same state-dict keys, and other lengths run without error (dynamic)."""
    inputs = {k: tiny_batch[k] for k in ("input_values", "attention_mask", "input_ids", "text_attention_mask")}
    eager = CrabForEmotionClassification(tiny_config).train()
    eager.crab.audio_encoder.config.layerdrop = 0.0
    compiled = copy.deepcopy(eager)
    keys = list(compiled.state_dict())
    compiled.compile_regions(backend="aot_eager")
    assert list(compiled.state_dict()) == keys
    losses = []
    for model in (eager, compiled):
        torch.manual_seed(0)  # the same dropout masks
        loss = model(**inputs, labels=tiny_batch["labels"], output_csl_embeddings=True).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
    _assert_grads_close(eager, compiled)
    shorter = {
        **inputs,
        "input_values": inputs["input_values"][:, :8000],
        "attention_mask": inputs["attention_mask"][:, :8000],
    }
    compiled.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(**shorter).logits, eager.eval()(**shorter).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # a minute of compiling on 2 cores
def test_compiled_regions_do_not_recompile(tiny_config, tiny_processor):
    """Regional compilation reuses its graphs. After a warm-up of each variant a region has (training and
    evaluation; a batch of one clip, of several padded ones, of several of equal length, whose all-ones masks
    transformers drops), a sweep of batches of 1-8 clips of 1-12 s with transcripts of 1-30 words, in both modes,
    compiles nothing more, and no region falls back to eager (PyTorch gives up compiling a function after
    `recompile_limit` variants, silently). The first batch ties nothing together by chance: two clips as WavLM has
    two heads here (no duck sizing). The first speech layer, which computes WavLM's position bias, is a kind of
    region of its own. aot_eager: dynamo's and AOTAutograd's guards, which decide recompilation, without code
    generation (inductor on this CPU compiles the same graphs, in 15 minutes)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = CrabForEmotionClassification(tiny_config)
    compiled = copy.deepcopy(eager)
    compiled.compile_regions(backend="aot_eager")
    assert {"audio_first_layer", "audio_layer", "text_layer", "cross", "pooling", "classifier"} <= set(
        compiled.compiled_region_kinds
    )
    assert compiled.compiled_region_kinds["audio_first_layer"] == 1
    rng = np.random.default_rng(0)
    words = " ".join(SENTENCES).split()

    def batch(size, equal=False, word_counts=None):
        seconds = np.full(size, rng.uniform(1, 12)) if equal else rng.uniform(1, 12, size)
        audio = [rng.standard_normal(int(s * 16000)).astype(np.float32) * 0.1 for s in seconds]
        word_counts = [rng.integers(1, 31)] * size if equal else word_counts or rng.integers(1, 31, size)
        text = [" ".join(words[:count]) for count in word_counts]  # beyond 32 tokens: cut, unpadded
        return dict(tiny_processor(audio=audio, text=text, sampling_rate=16000, return_tensors="pt"))

    def run(training, inputs):
        if training:
            compiled.train()(**inputs, labels=torch.zeros(len(inputs["input_ids"]), dtype=torch.long)).loss.backward()
        else:
            with torch.no_grad():
                logits = compiled.eval()(**inputs).logits
            torch.testing.assert_close(logits, eager.eval()(**inputs).logits, atol=1e-4, rtol=1e-4)

    for size, equal in [(2, False), (2, True), (1, False)]:  # the warm-up: every variant once
        for training in (True, False):
            run(training, batch(size, equal, word_counts=[2, 8][:size]))
    graphs = counters["stats"]["unique_graphs"]
    sweep = [(3, False), (8, False), (1, False), (4, True), (5, False), (6, False), (3, True), (4, False)]
    for i, (size, equal) in enumerate(sweep):
        run(i % 2 == 0, batch(size, equal))
        run(i % 2 == 1, batch(size, equal))
    assert counters["stats"]["unique_graphs"] == graphs, "a batch recompiled"
    assert counters["frames"]["ok"] == counters["frames"]["total"], "a region fell back to eager"


def test_bf16_autocast_stays_within_1e_2_of_fp32(tiny_config, tiny_batch, device):
    """The GPU training default (bf16 autocast; CNN, GRUs and losses in fp32): logits and the MLCS objective
    within 1e-2 (relative) of fp32, on the same weights and batch."""
    torch.manual_seed(0)
    model = CrabForEmotionClassification(tiny_config).eval().to(device)
    _perturb_gates(model)
    inputs = {
        k: tiny_batch[k].to(device) for k in ("input_values", "attention_mask", "input_ids", "text_attention_mask")
    }
    labels = tiny_batch["labels"].to(device)
    results = []
    for low_precision in (False, True):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=low_precision):
            out = model(**inputs, labels=labels, output_csl_embeddings=True)
            loss = out.loss
        results.append((out.logits.float(), loss.float()))
    (logits, loss), (logits_bf16, loss_bf16) = results
    assert ((logits_bf16 - logits).abs().max() / logits.abs().max()).item() < 1e-2
    assert (abs(loss_bf16 - loss) / abs(loss)).item() < 1e-2


def test_masked_gru_is_the_same_on_every_device_and_path(tiny_config, device):
    """Packed sequences (CUDA, and without gradients) and the direction-by-direction CPU training path give the
    same outputs and gradients."""
    from modeling_crab.modeling_crab import CrabUnimodalBlock

    torch.manual_seed(0)
    block = CrabUnimodalBlock(24, 16)
    mask = torch.arange(9)[None] < torch.tensor([9, 4, 7, 2])[:, None]
    x = torch.randn(4, 9, 16)
    reference_input = x.clone().requires_grad_()
    reference = block.recurrence(reference_input, mask)  # CPU with gradients: by direction
    reference.square().sum().backward()

    moved = copy.deepcopy(block).to(device)
    moved_input = x.to(device).requires_grad_()
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # cuDNN's GRU: full fp32, as on the CPU
        output = moved.recurrence(moved_input, mask.to(device))
        output.square().sum().backward()
    torch.testing.assert_close(output.cpu(), reference, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(moved_input.grad.cpu(), reference_input.grad, atol=1e-5, rtol=1e-4)
    for (name, p), q in zip(block.gru.named_parameters(), moved.gru.parameters()):
        torch.testing.assert_close(q.grad.cpu(), p.grad, atol=1e-5, rtol=1e-4, msg=name)
