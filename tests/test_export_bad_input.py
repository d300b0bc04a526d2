"""Bad input to checkpoints saved again or pushed: each case is handled as docs/bad_input.md says or stopped by an
error that names the input and the fix. Every test here is a row of that table, under the same name."""

from __future__ import annotations

import json

import pytest
from bad_input import SR, noise, write
from transformers import pipeline

from modeling_crab.cli import main

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # many small forward passes (conftest)


# ---- Checkpoints that keep working
RESAVE_AND_PUSH = """
import shutil, sys
import numpy as np
import transformers.utils.hub as hub
from transformers import AutoModelForAudioClassification, AutoProcessor, pipeline

source, resaved, pushed = sys.argv[1:4]
model = AutoModelForAudioClassification.from_pretrained(source, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
model.save_pretrained(resaved)
processor.save_pretrained(resaved)


class Repo:  # push_to_hub, offline: the folder it would upload is copied to `pushed`
    repo_id = "user/crab"


hub.hf_api = lambda: type("Api", (), {"create_repo": lambda self, *a, **k: Repo()})()
hub.create_and_tag_model_card = lambda *a, **k: type("Card", (), {"save": lambda self, path: None})()
hub.PushToHubMixin._upload_modified_files = lambda self, folder, *a, **k: shutil.copytree(
    folder, pushed, dirs_exist_ok=True
)
model.push_to_hub("user/crab")
processor.push_to_hub("user/crab")

audio = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
scores = {}
for name, folder in (("source", source), ("resaved", resaved), ("pushed", pushed)):
    pipe = pipeline("speech-emotion-recognition", model=folder, trust_remote_code=True, device="cpu")
    scores[name] = {s["label"]: s["score"] for s in pipe(audio, text="i miss her")}
try:
    pipeline("audio-classification", model=source, trust_remote_code=True, device="cpu")(audio)
    generic = "worked"
except ValueError as error:
    generic = str(error)
import json
json.dump({"scores": scores, "generic": generic}, open(OUT, "w"))
"""


def test_checkpoint_saved_again_or_pushed_keeps_working(crab, tmp_path):
    """Loaded with trust_remote_code where the package is not installed, then saved again and pushed: both keep
    the pipeline code, and classify like the original; the generic audio-classification pipeline names the task
    and text=."""
    from hub_user import run_as_hub_user

    _, _, _, checkpoint = crab
    resaved, pushed = tmp_path / "resaved", tmp_path / "pushed"
    result = run_as_hub_user(RESAVE_AND_PUSH, tmp_path, checkpoint, resaved, pushed)
    for folder in (resaved, pushed):
        assert (folder / "pipeline_crab.py").is_file() and (folder / "processing_crab.py").is_file()
        config = json.loads((folder / "config.json").read_text())
        assert "speech-emotion-recognition" in config["custom_pipelines"]
    for name in ("resaved", "pushed"):
        assert result["scores"][name] == pytest.approx(result["scores"]["source"], abs=1e-6)
    assert "pipeline('speech-emotion-recognition'" in result["generic"] and "text=" in result["generic"]


def test_model_called_without_a_transcript(crab):
    model, processor, _, _ = crab
    batch = processor(audio=[noise(0.5)], sampling_rate=SR)
    with pytest.raises(ValueError, match=r"no input_ids.*speech-emotion-recognition.*text="):
        model(input_values=batch["input_values"], attention_mask=batch["attention_mask"])


def test_train_output_folder_loads_with_the_pipeline_and_the_cli(resumable_run, tmp_path, capsys):
    """train.py's top-level output folder (what --push_to_hub uploads) is a whole checkpoint too."""
    _, run = resumable_run
    pipe = pipeline("speech-emotion-recognition", model=str(run), trust_remote_code=True, device="cpu")
    assert len(pipe(noise(0.5), text="i miss her")) == 4
    audio = write(tmp_path / "a.wav", noise(0.5))
    assert main(["predict", audio, "--text", "i miss her", "--model", str(run), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["scores"]) == 4


@pytest.mark.slow  # real ONNX exports (some 20 s each of torch.onnx on 2 cores)
def test_onnx_graphs_outlived_by_their_weights(tiny_export, tmp_path):
    """An ONNX graph answers only for the weights it was exported from: after the model is exported again (a
    resumed or longer run re-exports inference/), or an int8 graph is left from an earlier export that
    `crab export-onnx --no-int8` did not rewrite, `backend="onnx"` refuses it naming the command, never answers with
    the old graph's scores."""
    import shutil

    import torch

    from modeling_crab import export_for_inference
    from modeling_crab.onnx_export import export_checkpoint

    model, processor, checkpoint = tiny_export
    folder = tmp_path / "inference"
    shutil.copytree(checkpoint, folder)
    export_checkpoint(folder, quantize=False)
    audio = noise(1.0)
    pipe = pipeline("speech-emotion-recognition", model=str(folder), trust_remote_code=True, device="cpu")
    assert pipe(audio, text="hi", backend="onnx")  # its own weights: served

    planted = folder / "onnx" / "model_quantized.onnx"  # an int8 graph this export did not write
    shutil.copy(folder / "onnx" / "model.onnx", planted)
    with pytest.raises(FileNotFoundError, match=r"model_quantized.onnx' was not exported from the weights in .*run: "):
        pipe(audio, text="hi", backend="onnx-int8")

    changed = type(model)(model.config).eval()  # trained further: other weights, exported over the same folder
    with torch.no_grad():
        for parameter in changed.parameters():
            parameter.add_(0.01)
    export_for_inference(changed, processor, folder)
    pipe = pipeline("speech-emotion-recognition", model=str(folder), trust_remote_code=True, device="cpu")
    with pytest.raises(FileNotFoundError, match=rf"model.onnx' was not exported .*run: crab export-onnx {folder}"):
        pipe(audio, text="hi", backend="onnx")
    export_checkpoint(folder, quantize=False)  # the command it names brings the graph up to date
    assert not planted.exists()
    assert pipe(audio, text="hi", backend="onnx")


@pytest.mark.slow  # real ONNX exports (some 20 s each of torch.onnx on 2 cores)
def test_hub_onnx_graphs_outlived_by_their_weights(tiny_export, tmp_path, monkeypatch):
    """A Hub repo's graphs answer only for the weights beside them at the same revision: graphs kept from an earlier
    upload (the model pushed again without --onnx) are refused naming the fix; and push_to_hub.py's upload deletes,
    in its one commit, the graphs, code modules and weight shards of the repo that the new upload does not hold,
    never other files of the repo."""
    import shutil

    import torch
    import transformers.utils
    from huggingface_hub.utils import filter_repo_objects

    from modeling_crab import export_for_inference
    from modeling_crab.onnx_export import export_checkpoint
    from modeling_crab.publish import REPLACED_FILES

    model, processor, checkpoint = tiny_export
    repo = tmp_path / "repo"  # the Hub repo's files at one revision, served by cached_file
    shutil.copytree(checkpoint, repo)
    export_checkpoint(repo, quantize=False)

    def cached_file(repo_id, filename, **kwargs):
        assert repo_id == "user/crab"
        if (repo / filename).is_file():
            return str(repo / filename)
        if kwargs.get("_raise_exceptions_for_missing_entries", True):
            raise OSError(f"user/crab does not appear to have a file named {filename}")
        return None

    monkeypatch.setattr(transformers.utils, "cached_file", cached_file)
    pipe = pipeline("speech-emotion-recognition", model=str(repo), trust_remote_code=True, device="cpu")
    pipe.model.config._name_or_path = "user/crab"  # loaded from the Hub: graphs come through cached_file
    audio = noise(1.0)
    assert pipe(audio, text="hi", backend="onnx")  # its own weights: served

    changed = type(model)(model.config).eval()  # pushed again, trained further, without --onnx: the old graphs stay
    with torch.no_grad():
        for parameter in changed.parameters():
            parameter.add_(0.01)
    export_for_inference(changed, processor, repo)
    pipe = pipeline("speech-emotion-recognition", model=str(repo), trust_remote_code=True, device="cpu")
    pipe.model.config._name_or_path = "user/crab"
    with pytest.raises(FileNotFoundError, match=r"model.onnx' was not exported from the weights in .*push_to_hub.py"):
        pipe(audio, text="hi", backend="onnx")
    (repo / "onnx" / "source.json").unlink()  # graphs uploaded before their source was recorded: refused too
    pipe = pipeline("speech-emotion-recognition", model=str(repo), trust_remote_code=True, device="cpu")
    pipe.model.config._name_or_path = "user/crab"
    with pytest.raises(FileNotFoundError, match=r"model.onnx' was not exported from the weights"):
        pipe(audio, text="hi", backend="onnx")

    remote = ["onnx/model.onnx", "onnx/model_quantized.onnx", "old_module.py", "model-00001-of-00002.safetensors"]
    remote += ["README.md", "samples/angry.wav", ".gitattributes", "modeling_crab.py", "model.safetensors"]
    uploaded = {"modeling_crab.py", "model.safetensors", "README.md", "config.json"}
    deleted = [f for f in filter_repo_objects(remote, allow_patterns=REPLACED_FILES["model"]) if f not in uploaded]
    assert sorted(deleted) == sorted(remote[:4])


@pytest.mark.parametrize(
    "results", ['{"eval_uar": 0.5, "eval_w', "", "[0.5]", "\udcff"], ids=["cut", "empty", "list", "bad-bytes"]
)
def test_push_to_hub_with_its_eval_results_cut_short(tiny_export, tmp_path, results):
    """eval_results.json (written whole by train.py) cut short, emptied or replaced: push_to_hub.py stops in one line
    naming the file and the way out, before anything is staged or uploaded."""
    import shutil

    from hub_user import push_to_hub_main

    output_dir = tmp_path / "outputs"
    shutil.copytree(tiny_export[2], output_dir / "inference")
    (output_dir / "eval_results.json").write_bytes(results.encode("utf-8", "surrogateescape"))
    with pytest.raises(SystemExit) as stopped:
        push_to_hub_main([str(output_dir), "--repo-id", "me/crab", "--dry-run", str(tmp_path / "preview")])
    message = str(stopped.value.code)
    assert message.startswith(f"push_to_hub.py: '{output_dir / 'eval_results.json'}' is not the results train.py")
    assert "--resume_from_checkpoint last" in message and "delete the file to publish without results" in message
    assert not (tmp_path / "preview").exists()
