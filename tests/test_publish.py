"""push_to_hub.py: what it would upload (export, card, handler), the card's metadata, the Endpoints handler's
contract, and a clear failure offline that keeps the export."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_user import hub_user_env, push_to_hub_main, run_as_hub_user
from huggingface_hub import ModelCard
from safetensors import safe_open

from modeling_crab import CrabForEmotionClassification, export_for_inference, save_with_code
from modeling_crab.publish import DATASETS, render_model_card

ROOT = Path(__file__).resolve().parent.parent
EVAL_RESULTS = {  # what train.py writes (values with 4 decimals, as the card rounds them)
    "eval_loss": 1.234,
    "eval_war": 0.6125,
    "eval_uar": 0.5875,
    "eval_macro_f1": 0.5512,
    "eval_weighted_f1": 0.6033,
    "test_war": 0.6001,
    "test_uar": 0.5702,
    "test_runtime": 3.2,
}


@pytest.fixture
def training_output(tiny_config, tiny_processor, tmp_path):
    """What train.py leaves: eval_results.json and the inference export in inference/."""
    torch.manual_seed(0)
    output_dir = tmp_path / "outputs"
    export_for_inference(CrabForEmotionClassification(tiny_config).eval(), tiny_processor, output_dir / "inference")
    (output_dir / "eval_results.json").write_text(json.dumps(EVAL_RESULTS))
    return output_dir


@pytest.fixture
def staged(training_output, tmp_path):
    dry_run = tmp_path / "preview"
    argv = [str(training_output), "--repo-id", "me/crab-iemocap", "--dataset", "iemocap", "--space", "me/crab-demo"]
    assert push_to_hub_main([*argv, "--dry-run", str(dry_run)]) == 0
    return dry_run


def test_dry_run_writes_exactly_the_upload(staged):
    model_files = {p.name for p in (staged / "model").iterdir()}
    code = {"configuration_crab.py", "modeling_crab.py", "processing_crab.py", "pipeline_crab.py", "losses.py"}
    code |= {"audio.py", "wavlm_attention.py", "attributes.py", "heads.py", "options.py", "text.py"}
    code |= {"feature_extraction_crab.py"}
    assert model_files == code | {
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "handler.py",
        "requirements.txt",
        "eval_results.json",
    }
    with safe_open(staged / "model" / "model.safetensors", "pt") as weights:
        assert not any("csl_legs" in key for key in weights.keys())
    assert {p.name for p in (staged / "space").iterdir()} == {"app.py", "requirements.txt", "README.md"}
    assert 'os.environ.get("CRAB_MODEL", "me/crab-iemocap")' in (staged / "space" / "app.py").read_text()
    space_card = ModelCard.load(staged / "space" / "README.md")
    assert space_card.data.sdk == "gradio" and space_card.data.models == ["me/crab-iemocap"]


def test_card_metadata_matches_eval_results(staged):
    card = ModelCard.load(staged / "model" / "README.md")
    config = json.loads((staged / "model" / "config.json").read_text())
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "audio-classification"
    assert config["audio_encoder_name"] is None and card.data.base_model is None  # random encoders: nothing to name
    assert "a randomly initialised wavlm-architecture speech encoder (2 layers, 64 wide)" in card.text
    assert card.data.license == "other"  # the weights follow the training data's licence, not the code's MIT
    assert "The weights follow IEMOCAP's licence agreement with USC (research use)." in card.text
    types = {r.metric_name: r.metric_type for r in card.data.eval_results}
    assert types["Macro F1"] != types["Weighted F1"]  # a leaderboard must not take one F1 for the other
    reported = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert {r.dataset_type for r in card.data.eval_results} == {"iemocap"}
    assert {r.task_type for r in card.data.eval_results} == {"audio-classification"}
    assert reported == {
        ("validation", "WAR (accuracy)"): EVAL_RESULTS["eval_war"],
        ("validation", "UAR (unweighted average recall)"): EVAL_RESULTS["eval_uar"],
        ("validation", "Macro F1"): EVAL_RESULTS["eval_macro_f1"],
        ("validation", "Weighted F1"): EVAL_RESULTS["eval_weighted_f1"],
        ("test", "WAR (accuracy)"): EVAL_RESULTS["test_war"],
        ("test", "UAR (unweighted average recall)"): EVAL_RESULTS["test_uar"],
    }
    assert json.loads((staged / "model" / "eval_results.json").read_text()) == EVAL_RESULTS
    assert 'revision="<commit hash>"' in card.text and "me/crab-iemocap" in card.text
    assert "| test | 0.6001 | 0.5702 |" in card.text  # the results table says the same as the metadata


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_dataset_template_renders(dataset, tiny_config):
    config = tiny_config.to_dict()
    card = render_model_card(config, EVAL_RESULTS, "me/crab", dataset=dataset, license="other")
    assert "${" not in card.content
    reloaded = ModelCard(card.content)
    assert reloaded.data.license == "other" and len(reloaded.data.eval_results) == 6
    assert {r.dataset_split for r in reloaded.data.eval_results} == set(DATASETS[dataset].splits.values())


def test_the_card_names_pretrained_encoders_as_base_models_and_the_demo_as_synthetic_mit(tiny_config):
    pretrained = {**tiny_config.to_dict(), "audio_encoder_name": "microsoft/wavlm-large"}
    pretrained["text_encoder_name"] = "roberta-large"
    card = render_model_card(pretrained, EVAL_RESULTS, "me/crab", dataset="meld")
    assert card.data.base_model == ["microsoft/wavlm-large", "roberta-large"]
    assert "[microsoft/wavlm-large](https://huggingface.co/microsoft/wavlm-large) speech encoder" in card.text
    assert "Contrastive Representation" not in card.text  # Crab is a name, not an acronym the paper spells out
    demo = render_model_card(tiny_config.to_dict(), EVAL_RESULTS, "me/crab-demo", dataset="demo")
    assert demo.data.license == "mit" and demo.data.base_model is None
    assert "Nothing here is human speech" in demo.text
    assert render_model_card(pretrained, EVAL_RESULTS, "me/crab", "iemocap", license="cc-by-4.0").data.license == (
        "cc-by-4.0"
    )


def test_the_demo_output_publishes_with_dataset_demo(training_output, tmp_path):
    argv = [str(training_output), "--repo-id", "me/crab-demo", "--dataset", "demo", "--dry-run", str(tmp_path / "p")]
    assert push_to_hub_main(argv) == 0
    assert ModelCard.load(tmp_path / "p" / "model" / "README.md").data.license == "mit"


def test_the_card_says_which_recipe_and_padding_the_model_was_trained_with(tiny_config):
    released = {**tiny_config.to_dict(), "mask_padding": False}
    results = {**EVAL_RESULTS, "recipe": "release", "text_padding": "max_length", "mask_padding": False}
    text = " ".join(render_model_card(released, results, "me/crab").text.split())
    assert "the `release` training recipe (the authors' released training loop)" in text
    assert "padded to 128 tokens" in text and "does not mask padding" in text and "one window at a time" in text
    ours = {**EVAL_RESULTS, "recipe": "crab", "text_padding": "longest", "mask_padding": True}
    text = " ".join(render_model_card(tiny_config.to_dict(), ours, "me/crab").text.split())
    assert "the `crab` training recipe" in text and "the longest transcript of each batch" in text
    assert "do not depend on what it is batched with" in text
    text = " ".join(render_model_card(tiny_config.to_dict(), EVAL_RESULTS, "me/crab").text.split())
    assert "does not name" in text  # results written before recipes were recorded


def test_a_training_checkpoint_is_exported_without_the_legs(tiny_config, tiny_processor, tmp_path):
    output_dir = tmp_path / "outputs"  # only the training model (with its CSL legs) and no inference/ folder
    save_with_code(CrabForEmotionClassification(tiny_config), output_dir)
    tiny_processor.save_pretrained(output_dir)
    assert push_to_hub_main([str(output_dir), "--repo-id", "me/x", "--dry-run", str(tmp_path / "preview")]) == 0
    with safe_open(tmp_path / "preview" / "model" / "model.safetensors", "pt") as weights:
        assert not any("csl_legs" in key for key in weights.keys())
    card = ModelCard.load(tmp_path / "preview" / "model" / "README.md")
    assert card.data.eval_results is None and "No evaluation results" in card.text


def test_dry_run_refuses_a_folder_with_files(training_output, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty; pass a new or empty folder"):
        push_to_hub_main([str(training_output), "--repo-id", "me/x", "--dry-run", str(tmp_path / "busy")])


@pytest.mark.parametrize(
    "network",
    [{"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_not_a_real_token"}, {"HF_HUB_OFFLINE": "1"}],
    ids=["closed-port", "offline-mode"],
)
def test_offline_push_fails_clearly_and_keeps_the_export(training_output, tmp_path, network):
    env = hub_user_env(tmp_path, **network)
    if "HF_HUB_OFFLINE" not in network:
        del env["HF_HUB_OFFLINE"]  # really try to reach the (closed) endpoint
    done = subprocess.run(
        [sys.executable, str(ROOT / "push_to_hub.py"), str(training_output), "--repo-id", "me/crab-iemocap"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    staged = training_output / "hub_upload" / "model"
    assert "could not upload to the model repo 'me/crab-iemocap'" in done.stderr
    assert f"The export is kept in '{staged}'" in done.stderr
    assert (staged / "model.safetensors").is_file() and (staged / "README.md").is_file()


# -- Inference Endpoints handler ----------------------------------------------------------------------------------
def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((samples * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


HANDLER_REQUESTS = """
import base64, json, sys
sys.path.insert(0, sys.argv[1])  # the endpoint imports handler.py from the repository root
from handler import EndpointHandler
handler = EndpointHandler(path=sys.argv[1])
requests = json.load(open(sys.argv[2]))
requests["raw_body"]["inputs"] = base64.b64decode(requests["raw_body"]["inputs"])  # audio/wav body -> bytes
responses = {}
for name, request in requests.items():
    try:
        responses[name] = handler(request)
        json.dumps(responses[name])  # what the endpoint serialises
    except ValueError as error:
        responses[name] = {"error": str(error)}
json.dump(responses, open(OUT, "w"))
"""


def test_endpoint_handler_contract(staged, tmp_path):
    rng = np.random.default_rng(0)
    wav = base64.b64encode(wav_bytes(rng.uniform(-0.3, 0.3, 12000), 8000)).decode()
    samples = (rng.standard_normal(16000) * 0.1).tolist()
    requests = {
        "base64": {"inputs": wav, "parameters": {"text": "that is wonderful news", "top_k": 2}},
        "data_url": {"inputs": "data:audio/wav;base64," + wav, "parameters": {"text": "that is wonderful news"}},
        "samples": {"inputs": samples, "parameters": {"text": "i miss her", "sampling_rate": 16000}},
        "raw_body": {"inputs": wav, "parameters": {"text": "that is wonderful news"}},
        "windows": {"inputs": wav, "parameters": {"text": "hello", "return_windows": True}},
        "no_inputs": {"audio": wav},
        "no_rate": {"inputs": samples, "parameters": {"text": "i miss her"}},
        "not_base64": {"inputs": "definitely not audio!", "parameters": {"text": "x"}},
        "unknown_parameter": {"inputs": wav, "parameters": {"text": "x", "temperature": 2}},
    }
    (tmp_path / "requests.json").write_text(json.dumps(requests))
    out = run_as_hub_user(HANDLER_REQUESTS, tmp_path, staged / "model", tmp_path / "requests.json")

    top2 = out["base64"]
    assert isinstance(top2, list) and len(top2) == 2 and top2[0]["score"] >= top2[1]["score"]
    assert {s["label"] for s in top2} <= {"angry", "happy", "neutral", "sad"}
    assert out["data_url"][:2] == top2 and out["raw_body"] == out["data_url"]
    assert len(out["samples"]) == 4 and sum(s["score"] for s in out["samples"]) == pytest.approx(1.0, abs=1e-5)
    assert set(out["windows"][0]) == {"aggregate", "windows", "text"}
    assert "send {'inputs'" in out["no_inputs"]["error"]
    assert "parameters.sampling_rate" in out["no_rate"]["error"]
    assert "not base64 audio" in out["not_base64"]["error"]
    assert "unknown parameters ['temperature']" in out["unknown_parameter"]["error"]


@pytest.mark.slow
def test_the_installed_package_carries_every_publishing_template(tmp_path):
    """publish.py reads its templates from the package, so a wheel (an installed copy, not a clone) must hold all of
    them: the card, every dataset section, the handler and the Space."""
    import shutil
    import zipfile

    from modeling_crab.publish import MODEL_CARDS

    source = tmp_path / "source"  # a clean copy: setuptools' build/ in a clone may hold files of older builds
    shutil.copytree(ROOT / "modeling_crab", source / "modeling_crab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, source / name)
    wheel_dir = tmp_path / "wheel"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(source)]
    subprocess.run(pip_wheel, check=True, capture_output=True)
    (wheel,) = wheel_dir.glob("*.whl")
    packaged = {name for name in zipfile.ZipFile(wheel).namelist() if "/model_cards/" in name}
    templates = {
        "modeling_crab/" + path.relative_to(MODEL_CARDS.parent).as_posix()
        for path in MODEL_CARDS.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {f"modeling_crab/model_cards/{name}.md" for name in DATASETS} <= templates
    assert templates <= packaged


ATTRIBUTE_RESULTS = {  # what train.py writes for a joint model: the classes' metrics and each attribute's
    **EVAL_RESULTS,
    **{
        f"{split}_{metric}_{attribute}": value
        for split, base in (("eval", 0.5), ("test", 0.4))
        for attribute, shift in (("arousal", 0.1), ("valence", 0.0), ("dominance", 0.05))
        for metric, value in (("ccc", base + shift), ("pearson", base + shift + 0.02), ("mae", 0.1 + shift))
    },
    "eval_ccc_mean": 0.55,
    "test_ccc_mean": 0.45,
}


def test_a_joint_model_publishes_its_attribute_results_scale_and_answers(tiny_tokenizer, tmp_path):
    """model-index: CCC, Pearson r and MAE per attribute (and the mean CCC) under the attribute regression task, beside
    the classes' results; the card's table says the same and states the 0-1 scale; the Endpoints handler answers
    the attributes."""
    from attribute_models import ATTRIBUTES, export_attribute_model

    export_attribute_model(tiny_tokenizer, tmp_path / "outputs" / "inference")
    (tmp_path / "outputs" / "eval_results.json").write_text(json.dumps(ATTRIBUTE_RESULTS))
    staged = tmp_path / "preview"
    argv = [str(tmp_path / "outputs"), "--repo-id", "me/crab-msp", "--dataset", "msp_podcast", "--dry-run"]
    assert push_to_hub_main([*argv, str(staged)]) == 0
    card = ModelCard.load(staged / "model" / "README.md")
    regression = [r for r in card.data.eval_results if r.task_type != "audio-classification"]
    assert {r.task_type for r in regression} == {"emotion-attribute-regression"}
    reported = {(r.dataset_split, r.metric_type, r.metric_config): r.metric_value for r in regression}
    assert reported[("test1", "ccc", "arousal")] == round(ATTRIBUTE_RESULTS["test_ccc_arousal"], 4)
    assert reported[("development", "pearsonr", "valence")] == round(ATTRIBUTE_RESULTS["eval_pearson_valence"], 4)
    assert reported[("test1", "mae", "dominance")] == round(ATTRIBUTE_RESULTS["test_mae_dominance"], 4)
    assert reported[("test1", "ccc", "mean")] == 0.45 and len(reported) == 2 * (3 * len(ATTRIBUTES) + 1)
    assert len(card.data.eval_results) - len(regression) == 6  # the classes' WAR, UAR, F1s as before
    text = " ".join(card.text.split())
    assert "| split | attribute | CCC | Pearson r | MAE |" in card.text
    assert "| test1 | arousal | 0.5 | 0.52 | 0.2 |" in card.text and "| test1 | mean | 0.45 | - | - |" in card.text
    assert "Labels: `angry`, `happy`, `neutral`, `sad`." in card.text
    assert "`arousal`, `valence`, `dominance`, each predicted on a 0-1 scale" in text
    assert "MSP-Podcast's 1-7 ratings as (x - 1) / 6, IEMOCAP's 1-5 ratings as (x - 1) / 4" in text

    wav = base64.b64encode(wav_bytes(np.random.default_rng(0).uniform(-0.3, 0.3, 12000), 8000)).decode()
    requests = {
        "answer": {"inputs": wav, "parameters": {"text": "that is wonderful news", "top_k": 1}},
        "windows": {"inputs": wav, "parameters": {"text": "hello", "return_windows": True}},
    }
    (tmp_path / "requests.json").write_text(json.dumps(requests | {"raw_body": requests["answer"]}))
    out = run_as_hub_user(HANDLER_REQUESTS, tmp_path, staged / "model", tmp_path / "requests.json")
    (answer,) = out["answer"]
    assert list(answer["attributes"]) == ATTRIBUTES and len(answer["labels"]) == 1
    assert list(out["windows"][0]["aggregate"]["attributes"]) == ATTRIBUTES


def test_a_categories_only_card_says_nothing_of_attributes(tiny_config):
    card = render_model_card(tiny_config.to_dict(), ATTRIBUTE_RESULTS, "me/crab", dataset="iemocap")
    assert {r.task_type for r in card.data.eval_results} == {"audio-classification"}
    assert "attribute" not in card.text.lower() and "Labels: `angry`, `happy`, `neutral`, `sad`." in card.text
