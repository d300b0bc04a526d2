"""Checkpoints: the inference export loads through the Auto classes where this package cannot be imported."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from modeling_crab import CrabForEmotionClassification, export_for_inference, save_with_code

ALLOWED_TOP_LEVEL = {"torch", "transformers", "numpy"} | set(sys.stdlib_module_names)

# Runs in a fresh interpreter, outside the repository, with `import modeling_crab` made impossible: what a Hub
# user has. The checkpoint must bring its own code.
HUB_USER = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class NoCrabPackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "modeling_crab" or name.startswith("modeling_crab."):
                raise ImportError("the modeling_crab package is not installed here")
    sys.meta_path.insert(0, NoCrabPackage())
    import numpy as np, torch
    from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification, AutoProcessor
    checkpoint, inputs_path, out_path = sys.argv[1:4]
    try:
        import modeling_crab
        raise SystemExit("modeling_crab was importable")
    except ImportError:
        pass
    config = AutoConfig.from_pretrained(checkpoint, trust_remote_code=True)
    classifier = AutoModelForAudioClassification.from_pretrained(checkpoint, trust_remote_code=True).eval()
    embedder = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    data = np.load(inputs_path)
    audio = [data["a0"], data["a1"]]
    batch = processor(audio=audio, text=["that is wonderful news", "we talked about it"], sampling_rate=22050)
    with torch.no_grad():
        output = classifier(**batch)
        pooled = embedder(**batch).pooled_output
    logits, attributes = output.logits, output.attributes
    json.dump({
        "config_class": type(config).__name__,
        "classifier_class": type(classifier).__name__,
        "embedder_class": type(embedder).__name__,
        "processor_class": type(processor).__name__,
        "has_legs": classifier.csl_legs is not None,
        "num_parameters": sum(p.numel() for p in classifier.parameters()),
        "normalization": processor.normalization,
        "logits": None if logits is None else logits.tolist(),
        "attributes": None if attributes is None else attributes.tolist(),
        "attribute_names": config.attribute_names,
        "pooled": pooled.tolist(),
        "input_values": batch["input_values"].tolist(),
    }, open(out_path, "w"))
    """
)


def _run_as_hub_user(checkpoint: Path, tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    inputs = tmp_path / "inputs.npz"
    np.savez(
        inputs, a0=rng.standard_normal(22050).astype(np.float32), a1=rng.standard_normal(11025).astype(np.float32)
    )
    script, out = tmp_path / "hub_user.py", tmp_path / "hub_user.json"
    script.write_text(HUB_USER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules_cache"))
    done = subprocess.run(
        [sys.executable, str(script), str(checkpoint), str(inputs), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text()), np.load(inputs)


def test_inference_export_round_trip_without_the_package(tiny_config, tiny_processor, tmp_path):
    torch.manual_seed(0)
    model = CrabForEmotionClassification(tiny_config).eval()
    tiny_processor.set_waveform_stats(0.0, 0.5)
    checkpoint = export_for_inference(model, tiny_processor, tmp_path / "inference")
    assert model.csl_legs is not None and model.config.use_csl_legs  # the live model keeps its legs

    loaded, inputs = _run_as_hub_user(checkpoint, tmp_path)
    assert loaded["config_class"] == "CrabConfig" and loaded["processor_class"] == "CrabProcessor"
    assert (loaded["classifier_class"], loaded["embedder_class"]) == ("CrabForEmotionClassification", "CrabModel")
    assert loaded["has_legs"] is False and loaded["normalization"] == "global"
    legs = sum(p.numel() for p in model.csl_legs.parameters())
    assert loaded["num_parameters"] == sum(p.numel() for p in model.parameters()) - legs

    batch = tiny_processor(
        audio=[inputs["a0"], inputs["a1"]], text=["that is wonderful news", "we talked about it"], sampling_rate=22050
    )
    np.testing.assert_allclose(loaded["input_values"], batch["input_values"].numpy(), atol=1e-6)
    with torch.no_grad():
        expected = model(**batch)
        pooled = model.crab(**batch).pooled_output
    np.testing.assert_allclose(loaded["logits"], expected.logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(loaded["pooled"], pooled.numpy(), atol=1e-5)
    assert loaded["attributes"] is None and loaded["attribute_names"] == []


def test_attribute_regressor_is_exported_and_loads_with_the_auto_classes(tiny_tokenizer, tmp_path):
    """A joint model (classes + attributes): the export keeps the regressor (drops only the CSL legs), and a Hub
    user's `AutoModelForAudioClassification` gives the same attributes and logits."""
    from attribute_models import ATTRIBUTES, export_attribute_model

    model, processor, checkpoint = export_attribute_model(tiny_tokenizer, tmp_path / "inference")
    with safe_open(checkpoint / "model.safetensors", "pt") as weights:
        keys = list(weights.keys())
    assert any(key.startswith("regressor.") for key in keys) and not any("csl_legs" in key for key in keys)

    loaded, inputs = _run_as_hub_user(checkpoint, tmp_path)
    assert loaded["attribute_names"] == ATTRIBUTES and loaded["has_legs"] is False
    batch = processor(
        audio=[inputs["a0"], inputs["a1"]], text=["that is wonderful news", "we talked about it"], sampling_rate=22050
    )
    with torch.no_grad():
        expected = model(**batch)
    np.testing.assert_allclose(loaded["attributes"], expected.attributes.numpy(), atol=1e-5)
    np.testing.assert_allclose(loaded["logits"], expected.logits.numpy(), atol=1e-5)


def test_a_checkpoint_saved_before_attributes_answers_as_before(tiny_export, tmp_path):
    """config.json without `attribute_names` (and the other attribute fields): a categories-only model, and the
    pipeline answers the ranked label list, as before attributes existed."""
    import shutil

    from transformers import AutoModelForAudioClassification, pipeline

    model, processor, export = tiny_export
    checkpoint = tmp_path / "old"
    shutil.copytree(export, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    for key in ("attribute_names", "attribute_loss_weight", "attribute_contrast_bins"):
        config.pop(key)
    (checkpoint / "config.json").write_text(json.dumps(config))

    loaded = AutoModelForAudioClassification.from_pretrained(checkpoint, trust_remote_code=True).eval()
    assert loaded.config.attribute_names == [] and loaded.regressor is None
    audio = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    batch = processor(audio=[audio], text=["that is wonderful news"], sampling_rate=16000)
    with torch.no_grad():
        output, expected = loaded(**batch), model(**batch)
    assert output.attributes is None
    torch.testing.assert_close(output.logits, expected.logits, rtol=0, atol=1e-6)
    answer = pipeline("speech-emotion-recognition", model=str(checkpoint), trust_remote_code=True, device="cpu")(
        audio, text="that is wonderful news"
    )
    assert isinstance(answer, list) and [set(s) for s in answer] == [{"label", "score"}] * len(answer)
    probabilities = expected.logits.softmax(-1)[0]
    assert {s["label"]: s["score"] for s in answer} == pytest.approx(
        {model.config.id2label[i]: p.item() for i, p in enumerate(probabilities)}, abs=1e-6
    )


def test_export_files(tiny_config, tiny_processor, tmp_path):
    model = CrabForEmotionClassification(tiny_config)
    checkpoint = export_for_inference(model, tiny_processor, tmp_path / "inference")
    names = {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_crab.py", "modeling_crab.py", "losses.py"} <= names
    assert {"processing_crab.py", "audio.py", "wavlm_attention.py", "attributes.py", "shape_buckets.py"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in names)
    with safe_open(checkpoint / "model.safetensors", "pt") as weights:
        keys = list(weights.keys())
    assert keys and not any("csl_legs" in key for key in keys)
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "crab" and config["use_csl_legs"] is False
    assert config["auto_map"] == {
        "AutoConfig": "configuration_crab.CrabConfig",
        "AutoModel": "modeling_crab.CrabModel",
        "AutoModelForAudioClassification": "modeling_crab.CrabForEmotionClassification",
    }
    assert config["id2label"] == {str(k): v for k, v in tiny_config.id2label.items()}
    processor_config = json.loads((checkpoint / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_crab.CrabProcessor"


def test_travelling_code_imports_only_torch_transformers_numpy_and_stdlib(tiny_config, tiny_processor, tmp_path):
    checkpoint = export_for_inference(CrabForEmotionClassification(tiny_config), tiny_processor, tmp_path / "ckpt")
    local_modules = {p.stem for p in checkpoint.glob("*.py")}
    for path in checkpoint.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level > 1:
                    raise AssertionError(f"{path.name} uses a multi-dot relative import")
                if node.level == 1:
                    assert (node.module or "").split(".")[0] in local_modules, f"{path.name}: .{node.module}"
                    continue
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert set(roots) <= ALLOWED_TOP_LEVEL, f"{path.name} imports {roots}"


def test_training_checkpoint_keeps_the_legs(tiny_config, tmp_path):
    from transformers import AutoModelForAudioClassification

    torch.manual_seed(0)
    model = CrabForEmotionClassification(tiny_config)
    save_with_code(model, tmp_path / "train_ckpt")
    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path / "train_ckpt", trust_remote_code=True)
    assert loaded.csl_legs is not None and set(loaded.csl_legs) == set(model.csl_legs)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
