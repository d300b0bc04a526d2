"""push_to_hub.py: what it would upload (export, card, handler), the card's metadata, the Endpoints handler's
contract, and a clear failure offline that keeps the export."""

from __future__ import annotations

import ast
import base64
import io
import json
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from attribute_models import ATTRIBUTES, LABELS
from hub_user import hub_user_env, push_to_hub_main, run_as_hub_user
from huggingface_hub import ModelCard
from safetensors import safe_open
from transformers import Wav2Vec2FeatureExtractor

from modeling_crab import CrabForEmotionClassification, CrabProcessor, export_for_inference, save_with_code
from modeling_crab.publish import DATASETS, ProcessorSettings, render_model_card
from modeling_crab.training.tiny import tiny_crab_config

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
    code |= {"feature_extraction_crab.py", "shape_buckets.py"}
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


# -- the card of each kind of model: what it answers, as the handler and the usage snippets do ---------------------
# kind -> (classes, attributes, --dataset, eval_results.json): classes only, classes + attributes, attributes only
KINDS = {
    "classes": (LABELS, [], "iemocap", EVAL_RESULTS),
    "joint": (LABELS, ATTRIBUTES, "msp_podcast", ATTRIBUTE_RESULTS),
    "attributes": ({}, ATTRIBUTES, "msp_podcast", ATTRIBUTE_RESULTS),  # its classes' metrics are not its own
}
CROP_S = 2.0  # the staged models' training crop
SPEECH_S = 1.5  # speech.wav: shorter than the crop, so the pipeline and the Auto classes see the same audio
TRANSCRIPT = "I can't believe you did that."  # the card's snippets'

HUB_USER = """
import base64, contextlib, importlib.util, io, json, os, sys
plan = json.load(open(sys.argv[1]))
results = {}
for kind, job in plan.items():
    spec = importlib.util.spec_from_file_location("handler_" + kind, os.path.join(job["model"], "handler.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # as the endpoint does: handler.py from the repository root
    handler = module.EndpointHandler(path=job["model"])
    out = {"handler": {name: handler(request) for name, request in job["requests"].items()}}
    for name, code in job["snippets"].items():  # the card's code blocks as written, in the folder with speech.wav
        namespace = {}
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            exec(code, namespace)
        kept = ("answer", "answers", "labels", "attributes")
        out[name] = {key: namespace[key] for key in kept if key in namespace} | {"printed": printed.getvalue()}
    results[kind] = out
json.dump(results, open(OUT, "w"))
"""


def export_model(tokenizer, folder: Path, id2label: dict, attribute_names: list[str]) -> Path:
    """A tiny random model with these classes and attributes and its processor (a `CROP_S` crop, global statistics),
    exported for inference."""
    config = tiny_crab_config(len(id2label), id2label, vocab_size=len(tokenizer), attribute_names=attribute_names)
    config.audio_config.mask_time_prob = 0.0
    torch.manual_seed(0)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, return_attention_mask=True)
    processor = CrabProcessor(extractor, tokenizer, max_duration_s=CROP_S, max_text_length=32)
    processor.set_waveform_stats(0.0, 0.3)
    return export_for_inference(CrabForEmotionClassification(config).eval(), processor, folder)


def code_blocks(card_text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card_text, flags=re.DOTALL)


def parse_example(text: str, json_style: bool = False):
    """An example answer of the card or the handler's docstring, its lists and dicts cut short with `...`."""
    text = text.replace(", ...", "")
    return json.loads(text) if json_style else ast.literal_eval(text)


def shape(value):
    """The structure of an answer: its keys and the types of its values; a dict of floats (the attributes) and a list
    (the ranked labels) by their items' kind, whatever their number."""
    if isinstance(value, dict):
        if value and all(isinstance(item, float) for item in value.values()):
            return "{name: float}"
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def names_in(answer) -> tuple[list[str], list[str]]:
    """(the labels, the attribute names) of one answer."""
    labels = answer if isinstance(answer, list) else answer["labels"]
    attributes = {} if isinstance(answer, list) else answer["attributes"]
    return [item["label"] for item in labels], list(attributes)


@pytest.fixture(scope="module")
def published(tiny_tokenizer, tmp_path_factory):
    """kind -> (the folder push_to_hub.py --dry-run wrote, with its Space; what a Hub user gets from it in a fresh
    interpreter without the Crab package: the Endpoints handler's responses and the card's two code blocks run as
    written, the repo id replaced by the staged folder)."""
    root = tmp_path_factory.mktemp("published")
    samples = np.random.default_rng(0).uniform(-0.3, 0.3, round(SPEECH_S * 16000))
    (root / "speech.wav").write_bytes(wav_bytes(samples, 16000))
    audio = base64.b64encode((root / "speech.wav").read_bytes()).decode()
    staged, plan = {}, {}
    for kind, (id2label, attributes, dataset, results) in KINDS.items():
        output_dir = root / kind / "outputs"
        export_model(tiny_tokenizer, output_dir / "inference", id2label, attributes)
        (output_dir / "eval_results.json").write_text(json.dumps(results))
        repo_id, dry_run = f"me/crab-{kind}", root / kind / "preview"
        argv = [str(output_dir), "--repo-id", repo_id, "--dataset", dataset, "--space", f"me/demo-{kind}"]
        assert push_to_hub_main([*argv, "--dry-run", str(dry_run)]) == 0
        staged[kind] = dry_run
        card = (dry_run / "model" / "README.md").read_text()
        local = json.dumps(str(dry_run / "model"))
        pipeline_code, auto_code = (block.replace(f'"{repo_id}"', local) for block in code_blocks(card))
        plan[kind] = {
            "model": str(dry_run / "model"),
            "snippets": {"pipeline_snippet": pipeline_code, "auto_snippet": auto_code},
            "requests": {
                "answer": {"inputs": audio, "parameters": {"text": TRANSCRIPT}},
                "top_1": {"inputs": audio, "parameters": {"text": TRANSCRIPT, "top_k": 1}},
                "windows": {
                    "inputs": audio,
                    "parameters": {"text": "hello", "return_windows": True, "chunk_length_s": SPEECH_S / 2},
                },
            },
        }
    (root / "plan.json").write_text(json.dumps(plan))
    out = run_as_hub_user(HUB_USER, root, root / "plan.json")
    return {kind: (staged[kind], out[kind]) for kind in KINDS}


def answered(kind: str, response: list):
    """The pipeline's answer for the recording in the handler's `response`: the list itself for a model with classes
    only, its one item for a model with attributes."""
    return response if kind == "classes" else response[0]


def label_scores(answer) -> dict[str, float]:
    return {item["label"]: item["score"] for item in (answer if isinstance(answer, list) else answer["labels"])}


@pytest.mark.parametrize("kind", KINDS)
def test_the_card_shows_the_answer_the_handler_returns(published, kind):
    """The card's example answers (in its outputs paragraph, its pipeline snippet and its Endpoints contract) have the
    structure, the labels and the attributes of what the staged model's handler returns; so does the handler's
    docstring, and the card's window keys are those of the handler's windows."""
    staged, out = published[kind]
    card = (staged / "model" / "README.md").read_text()
    labels, attributes = list(KINDS[kind][0].values()), KINDS[kind][1]
    response = out["handler"]["answer"]
    answer = answered(kind, response)
    assert sorted(names_in(answer)[0]) == sorted(labels) and names_in(answer)[1] == attributes

    in_card = parse_example(re.search(r"the response is `(.+?)`, the pipeline's answer", card)[1], json_style=True)
    in_snippet = parse_example(re.search(r"print\(answer\)  # e\.g\. (.+)", card)[1])
    in_outputs = parse_example(re.search(r"the pipeline answers[^`]*`(.+?)`", card)[1], json_style=True)
    assert shape(in_card) == shape(response)
    assert shape(in_snippet) == shape(in_outputs) == shape(answer) == shape(out["pipeline_snippet"]["answer"])
    for example in (answered(kind, in_card), in_snippet, in_outputs):
        shown_labels, shown_attributes = names_in(example)
        assert shown_labels == labels[: len(shown_labels)] and bool(shown_labels) == bool(labels)
        assert shown_attributes == attributes

    keys = re.search(r'"windows": \[\{(.+?)\}\]', card)[1]
    (windows,) = out["handler"]["windows"]
    assert len(windows["windows"]) == 2 and shape(windows["aggregate"]) == shape(answer)
    assert [key.strip('" ') for key in keys.split(",")] == list(windows["windows"][0])

    handler_doc = (staged / "model" / "handler.py").read_text().split('"""')[1]
    documented = {
        "classes": '[{"label": "angry", "score": 0.71}, ...]',
        "joint": '[{"labels": [{"label": "angry", "score": 0.71}, ...], "attributes": {"arousal": 0.71, ...}}]',
        "attributes": '[{"labels": [], "attributes": {"arousal": 0.71, ...}}]',
    }[kind]
    assert documented in handler_doc and shape(parse_example(documented, json_style=True)) == shape(response)


@pytest.mark.parametrize("kind", KINDS)
def test_the_card_snippets_run_as_written_against_the_staged_model(published, kind):
    """The card's pipeline and Auto-class snippets, run offline without the Crab package: the pipeline answers as the
    handler does, and the Auto classes' scores are the pipeline's for a clip within the training crop."""
    _, out = published[kind]
    labels, attributes = list(KINDS[kind][0].values()), KINDS[kind][1]
    pipe, auto = out["pipeline_snippet"], out["auto_snippet"]
    handler = answered(kind, out["handler"]["answer"])  # the same recording and transcript
    assert label_scores(pipe["answer"]) == pytest.approx(label_scores(handler), abs=1e-6)
    if attributes:
        assert pipe["answer"]["attributes"] == pytest.approx(handler["attributes"], abs=1e-6)
    assert len(pipe["answers"]) == 2 and all(shape(a) == shape(pipe["answer"]) for a in pipe["answers"])
    assert str(pipe["answer"]) in pipe["printed"]
    best = list(label_scores(pipe["answer"]))[:1]
    assert list(label_scores(answered(kind, out["handler"]["top_1"]))) == best  # top_k: the best label
    if labels:
        assert list(auto["labels"]) == labels
        assert auto["labels"] == pytest.approx(label_scores(pipe["answer"]), abs=1e-3)
    else:
        assert "labels" not in auto and label_scores(pipe["answer"]) == {}
    if attributes:
        assert list(auto["attributes"]) == attributes
        assert auto["attributes"] == pytest.approx(pipe["answer"]["attributes"], abs=1e-5)
    else:
        assert "attributes" not in auto


# what a card may say only of a model with classes, and only of one with attributes
CLASS_CLAIMS = (
    "Labels:",
    "best first",
    "top_k",
    '"label"',
    "'label'",
    "probabilit",
    "softmax",
    "id2label",
    "accuracy",
)
ATTRIBUTE_CLAIMS = ("attribute", "0-1 scale", '"arousal"', "'arousal'", "valence-arousal")


@pytest.mark.parametrize("kind", KINDS)
def test_a_card_claims_nothing_of_the_other_kinds_of_model(published, kind):
    """The model card and the Space's card say only what this kind of model answers: no attributes for a model with
    classes only; no ranked labels, probabilities or accuracy for one with attributes only."""
    staged, _ = published[kind]
    card = ModelCard.load(staged / "model" / "README.md")
    space = " ".join((staged / "space" / "README.md").read_text().split())
    labels, attributes = list(KINDS[kind][0].values()), KINDS[kind][1]
    text = " ".join(card.text.split())
    said_of_classes = [claim for claim in CLASS_CLAIMS if claim in text]
    said_of_attributes = [claim for claim in ATTRIBUTE_CLAIMS if claim in text.lower()]
    assert bool(said_of_classes) == bool(labels), said_of_classes
    assert bool(said_of_attributes) == bool(attributes), said_of_attributes
    tasks = {"audio-classification"} if labels else set()
    tasks |= {"emotion-attribute-regression"} if attributes else set()
    assert {r.task_type for r in card.data.eval_results} == tasks
    assert ("the probability of each of its labels (angry, happy, neutral and sad)" in space) == bool(labels)
    assert ("its ratings of arousal, valence and dominance on the 0-1 scale" in space) == bool(attributes)
    assert ("valence-arousal plane" in space) == bool(attributes)
    assert f"longer than the {CROP_S:g} s training crop are scored window by window" in space


def test_a_joint_model_publishes_its_attribute_results_scale_and_answers(published):
    """model-index: CCC, Pearson r and MAE per attribute (and the mean CCC) under the attribute regression task, beside
    the classes' results; the card's table says the same and states the 0-1 scale; the Endpoints handler answers
    the attributes."""
    staged, out = published["joint"]
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
    assert "WAR is accuracy" in text and "CCC is the concordance correlation coefficient" in text
    (top_1,) = out["handler"]["top_1"]
    assert list(top_1["attributes"]) == ATTRIBUTES and len(top_1["labels"]) == 1


def test_a_categories_only_card_says_nothing_of_attributes(tiny_config):
    card = render_model_card(tiny_config.to_dict(), ATTRIBUTE_RESULTS, "me/crab", dataset="iemocap")
    assert {r.task_type for r in card.data.eval_results} == {"audio-classification"}
    assert "attribute" not in card.text.lower() and "Labels: `angry`, `happy`, `neutral`, `sad`." in card.text


def test_an_attributes_only_card_has_no_results_of_classes(tiny_tokenizer):
    config = tiny_crab_config(0, {}, vocab_size=len(tiny_tokenizer), attribute_names=ATTRIBUTES).to_dict()
    card = render_model_card(config, EVAL_RESULTS, "me/crab", dataset="msp_podcast")
    assert card.data.eval_results is None and "holds no validation or test metrics of this model's" in card.text
    assert "WAR is accuracy" not in card.text


# -- the card's statements that follow the model's settings --------------------------------------------------------
def card_text(config: dict, **settings) -> str:
    processor = ProcessorSettings(**settings.pop("processor", {}))
    return " ".join(render_model_card(config, {}, "me/crab", processor=processor, **settings).text.split())


def test_the_card_states_the_saved_processor_settings(tiny_config):
    config = tiny_config.to_dict()
    text = card_text(config, processor={"max_duration_s": 2.0, "normalization": "global", "max_text_length": 32})
    assert "crops it to its first 2 s" in text and "longer than the 2 s training crop are cut into equal" in text
    assert "with the statistics of the training audio" in text and "truncates the transcript at 32 tokens." in text
    assert "(resampled to 16 kHz)" in text
    whole = {"max_duration_s": None, "normalization": "utterance", "max_text_length": 64, "text_padding": "max_length"}
    text = card_text(config, processor={**whole, "sampling_rate": 8000})
    assert "training crop" not in text and "keeps the whole recording" in text and "scores each in one pass" in text
    assert "zero mean and unit variance" in text and "at 64 tokens, padding shorter ones to that length" in text
    assert "Transcripts were padded to 64 tokens" in text and "(resampled to 8 kHz)" in text
    assert "leaves its level as it is" in card_text(config, processor={"normalization": "none"})
    assert "normalis" not in card_text(config)  # a processor the card was not told about


def test_the_card_states_the_head_settings(tiny_config, tiny_tokenizer):
    config = tiny_config.to_dict()
    text = card_text(config)
    assert "trained with Multi Layer Contrastive Supervision" in text and "batch_size=64" in text
    assert "keeps the speech CNN and the GRUs in fp32 (scores within about 1.5e-2 of fp32)" in text
    assert 'text=""' not in text and "one-by-one" not in text and "onnx" not in text
    assert "without its Multi Layer Contrastive Supervision term (`mlcs_weight: 0`)" in card_text(
        {**config, "mlcs_weight": 0.0}
    )
    attributes_only = tiny_crab_config(0, {}, vocab_size=len(tiny_tokenizer), attribute_names=ATTRIBUTES).to_dict()
    assert "trained with Multi Layer" in card_text(attributes_only)
    assert "(`attribute_contrast_bins: 0`" in card_text({**attributes_only, "attribute_contrast_bins": 0})
    text = card_text({**config, "fp32_under_autocast": ["gru"]})
    assert "keeps the GRUs in fp32." in text and "1.5e-2" not in text
    text = card_text({**config, "modality_dropout": 0.3})
    assert 'or speech alone (`text=""`' in text and "30% of its training transcripts" in text

    masked = card_text(config, onnx=True)
    assert "padded batches score as one-by-one calls" in masked and "outputs `logits`;" in masked
    unmasked = card_text({**config, "mask_padding": False}, onnx=True)
    assert "one-by-one" not in unmasked and "batch_size=64" not in unmasked
    assert "one window per forward pass whatever `batch_size` says" in unmasked
    assert "outputs `logits` and `attributes`" in card_text({**config, "attribute_names": ATTRIBUTES}, onnx=True)


def test_the_card_states_the_training_data_language_and_who_labelled_it(tiny_config):
    config = tiny_config.to_dict()
    generic = render_model_card(config, {}, "me/crab", dataset="generic")
    assert generic.data.language is None and "transcripts in the language of its training data" in generic.text
    assert "utterances with transcripts and their emotion labels." in " ".join(generic.text.split())
    meld = render_model_card(config, {}, "me/crab", dataset="meld")
    assert meld.data.language == ["en"] and "expects English transcripts" in meld.text
    assert "judgements of annotators" in meld.text
    demo = " ".join(render_model_card(config, {}, "me/crab", dataset="demo").text.split())
    assert "annotators" not in demo and "set by its generator, not judged by listeners" in demo


# -- push_to_hub.py says where it writes ---------------------------------------------------------------------------
def test_push_to_hub_names_the_folders_it_writes(training_output, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [str(training_output), "--repo-id", "me/crab-demo", "--dataset", "demo", "--dry-run", "preview/"]
    assert push_to_hub_main([*argv, "--space", "me/crab-space"]) == 0
    printed = capsys.readouterr().out
    assert "the model repo me/crab-demo would receive the files in 'preview/model'" in printed
    assert "the Space me/crab-space would receive the files in 'preview/space'" in printed
    assert (tmp_path / "preview" / "model" / "README.md").is_file() and (tmp_path / "preview" / "space").is_dir()
    assert {p.name for p in (tmp_path / "preview").iterdir()} == {"model", "space"}

    assert push_to_hub_main([*argv[:-1], "alone"]) == 0
    printed = capsys.readouterr().out
    assert "'alone/model'" in printed and "Space" not in printed and not (tmp_path / "alone" / "space").exists()

    with pytest.raises(SystemExit):
        push_to_hub_main(["--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert "--dry-run preview/ # writes the model repo to preview/model/, the Space to preview/space/" in usage
    assert (
        "write the model repo to DIR/model/ (and, with --space, the Space to DIR/space/) and upload nothing" in usage
    )
    assert "OUTPUT_DIR/hub_upload/model/" in usage and "OUTPUT_DIR/hub_upload/space/" in usage
