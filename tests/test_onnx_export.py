"""ONNX export and onnxruntime inference: the same scores as PyTorch, batched or one by one, and the int8 graph's
cost measured against fp32; `crab export-onnx`'s output, and what it leaves when the onnx extra is missing or an
export fails midway."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from attribute_models import ATTRIBUTES, export_attribute_model
from conftest import SENTENCES

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed: pip install -e '.[onnx]'")

from modeling_crab import CrabForEmotionClassification, CrabProcessor  # noqa: E402
from modeling_crab.cli import main  # noqa: E402
from modeling_crab.configuration_crab import min_audio_samples  # noqa: E402
from modeling_crab.onnx_export import (  # noqa: E402
    MODEL_FILE,
    ONNX_FOLDER,
    QUANTIZED_FILE,
    OnnxCrabSession,
    export_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def served() -> dict[str, Path]:
    """`{"folder": ...}` once the module's one `crab export-onnx` into a new folder has run: run by the test of what
    the command prints (first in the module, under capfd), else by `exported`."""
    return {}


def export_into_a_new_folder(tiny_export, tmp_path_factory) -> Path:
    """`crab export-onnx` of the tiny export into a new folder; the folder."""
    _, _, checkpoint = tiny_export
    out = tmp_path_factory.mktemp("onnx-export") / "served"
    assert main(["export-onnx", str(checkpoint.parent), str(out)]) == 0  # train.py's --output_dir holds inference/
    return out


@pytest.fixture(scope="module")
def exported(tiny_export, tmp_path_factory, served):
    """(model, processor, fp32 session, int8 session, files): the tiny export through `crab export-onnx` into a new
    folder, once per module."""
    model, processor, _ = tiny_export
    if "folder" not in served:
        served["folder"] = export_into_a_new_folder(tiny_export, tmp_path_factory)
    files = [served["folder"] / ONNX_FOLDER / MODEL_FILE, served["folder"] / ONNX_FOLDER / QUANTIZED_FILE]
    return model, processor, OnnxCrabSession(files[0]), OnnxCrabSession(files[1]), files


@pytest.mark.slow  # serves graphs of a real export (some 20 s of torch.onnx on 2 cores)
def test_export_onnx_prints_the_graphs_it_wrote_and_how_to_serve_them(
    tiny_export, tmp_path_factory, served, capfd, recwarn
):
    """A user sees the files and the command that serves them: no progress bars, no notes of the exporter, its
    optimizer or the quantizer, no warnings (the model is exported in eval mode); no scratch folder is left."""
    out = export_into_a_new_folder(tiny_export, tmp_path_factory)
    served.setdefault("folder", out)
    printed = capfd.readouterr()
    graphs = [out / ONNX_FOLDER / MODEL_FILE, out / ONNX_FOLDER / QUANTIZED_FILE]
    assert printed.out.splitlines() == [
        *(f"{graph}  ({graph.stat().st_size / 1e6:.1f} MB)" for graph in graphs),
        f'use them: crab predict FILE --text "..." --model {shlex.quote(str(out))} --backend onnx-int8 (or '
        "--backend onnx, fp32)",
    ]
    assert printed.err == ""
    assert [f"{w.category.__name__}: {w.message}" for w in recwarn] == []
    assert os.listdir(out.parent) == [out.name]
    assert sorted(os.listdir(out / ONNX_FOLDER)) == sorted([MODEL_FILE, QUANTIZED_FILE, "source.json"])


def varied_inputs(model, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Clips from the CNN's one-frame minimum to 3 s, one silent-ish, transcripts short, long and empty."""
    rng = np.random.default_rng(seed)
    shortest = min_audio_samples(model.config.audio_config)
    lengths = [shortest, shortest + 1, 7_919, 16_000, 48_000]
    waveforms = [
        rng.standard_normal(n).astype(np.float32) * scale for n, scale in zip(lengths, (0.3, 0.1, 1e-3, 0.1, 0.5))
    ]
    texts = ["", SENTENCES[0], SENTENCES[2] * 3, SENTENCES[3], SENTENCES[1]]
    return waveforms, texts


def torch_logits(model, batch) -> np.ndarray:
    with torch.no_grad():
        return model(**batch).logits.numpy()


@pytest.mark.slow  # serves graphs of a real export (some 20 s of torch.onnx on 2 cores)
def test_onnx_scores_equal_pytorch_batched_and_one_by_one(exported):
    model, processor, session, _, _ = exported
    waveforms, texts = varied_inputs(model)
    batch = processor(audio=waveforms, text=texts, sampling_rate=16000, max_duration_s=None, return_tensors="pt")
    np.testing.assert_allclose(session(**batch)["logits"], torch_logits(model, batch), atol=1e-4, rtol=0)
    for waveform, text in zip(waveforms, texts):
        one = processor(audio=[waveform], text=[text], sampling_rate=16000, max_duration_s=None, return_tensors="pt")
        np.testing.assert_allclose(session(**one)["logits"], torch_logits(model, one), atol=1e-4, rtol=0)


@pytest.mark.slow  # serves graphs of a real export (some 20 s of torch.onnx on 2 cores)
def test_a_padded_batch_scores_as_its_rows_alone(exported):
    model, processor, session, _, _ = exported
    waveforms, texts = varied_inputs(model, seed=1)
    batch = processor(audio=waveforms, text=texts, sampling_rate=16000, max_duration_s=None, return_tensors="np")
    alone = [
        session(**processor(audio=[w], text=[t], sampling_rate=16000, max_duration_s=None, return_tensors="np"))
        for w, t in zip(waveforms, texts)
    ]
    assert list(session(**batch)) == ["logits"]  # a categories-only model's graph has no attributes output
    np.testing.assert_allclose(
        session(**batch)["logits"], np.concatenate([a["logits"] for a in alone]), atol=1e-5, rtol=0
    )


@pytest.mark.slow  # serves graphs of a real export (some 20 s of torch.onnx on 2 cores)
def test_int8_stores_the_linear_weights_in_int8_and_stays_close_to_fp32(exported):
    import onnx

    model, processor, session, quantized, files = exported
    encoder_linears = [
        module for module in model.crab.modules() if isinstance(module, torch.nn.Linear) and module.weight.shape[0] > 1
    ]
    int8 = [i for i in onnx.load(str(files[1])).graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8) >= len(encoder_linears) - 4  # all but the cross-attention projections (MHA splits them)
    waveforms, texts = varied_inputs(model, seed=2)
    batch = processor(audio=waveforms, text=texts, sampling_rate=16000, max_duration_s=None, return_tensors="np")
    fp32_scores = torch.from_numpy(session(**batch)["logits"]).softmax(-1)
    int8_scores = torch.from_numpy(quantized(**batch)["logits"]).softmax(-1)
    assert (fp32_scores - int8_scores).abs().max() < 2e-2


def test_export_leaves_the_pytorch_model_as_it_was(tiny_config, tiny_batch):
    """During export each GRU calls the ONNX marker; afterwards every block computes as before, its own overrides
    (the fp32-under-autocast one) included."""
    from modeling_crab.modeling_crab import CrabUnimodalBlock
    from modeling_crab.onnx_export import _exportable

    tiny_config.fp32_under_autocast = ["gru"]
    model = CrabForEmotionClassification(tiny_config).eval()
    inputs = {k: v for k, v in tiny_batch.items() if k != "labels"}
    blocks = [m for m in model.modules() if isinstance(m, CrabUnimodalBlock)]
    before = [vars(block).get("recurrence") for block in blocks]
    expected = torch_logits(model, inputs)
    with _exportable(model):
        with pytest.raises(RuntimeError, match="export marker"):
            torch_logits(model, inputs)
    assert [vars(block).get("recurrence") for block in blocks] == before and before[0] is not None
    np.testing.assert_array_equal(torch_logits(model, inputs), expected)


@pytest.mark.slow  # serves graphs of a real export (some 20 s of torch.onnx on 2 cores)
def test_a_new_folder_serves_both_runtimes(exported, tmp_path, capsys):
    model, processor, _, _, files = exported
    folder = files[0].parent.parent
    assert {f.name for f in files} == {MODEL_FILE, QUANTIZED_FILE} and files[0].parent.name == ONNX_FOLDER
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert CrabProcessor.from_pretrained(folder).max_duration_s == processor.max_duration_s
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        export_checkpoint(tmp_path)
    with pytest.raises(SystemExit):
        main(["export-onnx", str(tmp_path / "missing")])
    assert "CHECKPOINT" in capsys.readouterr().err


@pytest.mark.slow  # serves graphs of a real export (some 20 s of torch.onnx on 2 cores)
def test_the_session_names_a_missing_input(exported):
    _, processor, session, _, _ = exported
    audio_only = processor(audio=[np.zeros(8000, np.float32) + 0.1], sampling_rate=16000, return_tensors="np")
    audio_only.pop("input_ids", None)
    with pytest.raises(ValueError, match="needs 'input_ids'"):
        session(**audio_only)


@pytest.mark.slow  # serves graphs of a real export (some 20 s of torch.onnx on 2 cores)
def test_the_pipeline_and_crab_predict_serve_the_onnx_graphs(exported, tmp_path, capsys):
    """backend='onnx' gives the PyTorch answers (long audio in the same windows); onnx-int8 stays close."""
    from transformers import pipeline

    folder = exported[4][0].parent.parent
    classify = pipeline("speech-emotion-recognition", model=str(folder), trust_remote_code=True, device="cpu")
    rng = np.random.default_rng(3)
    long_audio = rng.standard_normal(16000 * 5).astype(np.float32) * 0.1  # 5 s: three windows of the 2 s crop
    inputs = [long_audio, {"raw": rng.standard_normal(12000).astype(np.float32) * 0.1, "sampling_rate": 16000}]
    texts = [SENTENCES[0], ""]
    reference = classify(inputs, text=texts, return_windows=True)
    onnx = classify(inputs, text=texts, return_windows=True, backend="onnx")
    int8 = classify(inputs, text=texts, backend="onnx-int8")
    for ref, got, quantized in zip(reference, onnx, int8):
        assert [w["start"] for w in got["windows"]] == [w["start"] for w in ref["windows"]]
        ref_scores = {s["label"]: s["score"] for s in ref["aggregate"]}
        assert max(abs(s["score"] - ref_scores[s["label"]]) for s in got["aggregate"]) < 1e-5
        assert max(abs(s["score"] - ref_scores[s["label"]]) for s in quantized) < 2e-2
    with pytest.raises(ValueError, match="runs fp32"):
        classify(long_audio, text="x", backend="onnx", precision="bf16")
    with pytest.raises(ValueError, match="backend='tensorrt'"):
        classify(long_audio, text="x", backend="tensorrt")

    wav = tmp_path / "clip.wav"
    import soundfile as sf

    sf.write(wav, long_audio, 16000)
    assert (
        main(["predict", str(wav), "--text", SENTENCES[0], "--model", str(folder), "--backend", "onnx", "--json"]) == 0
    )
    printed = json.loads(capsys.readouterr().out)[0]["scores"]
    ref_scores = {s["label"]: s["score"] for s in reference[0]["aggregate"]}
    assert max(abs(s["score"] - ref_scores[s["label"]]) for s in printed) < 1e-5


PROJECT = re.search(r'^name = "([^"]+)"', (Path(__file__).parents[1] / "pyproject.toml").read_text(), re.M)[1]


@pytest.mark.parametrize("module", ["onnx", "onnxscript", "onnxruntime"])
def test_without_the_onnx_extra_export_onnx_stops_before_it_writes_anything(
    module, tiny_export, tmp_path, monkeypatch, capsys
):
    """Any of the extra's packages missing: one line naming it and the install line, exit 1, before any folder is
    made (no onnx/ in the checkpoint, no OUT_DIR nor its parents)."""
    _, _, checkpoint = tiny_export
    monkeypatch.setitem(sys.modules, module, None)  # as where it is not installed: `import module` fails
    expected = (
        f"crab: error: the ONNX export needs {module}, which is not installed; install the onnx extra: "
        f"pip install '{PROJECT}[onnx]'\n"
    )
    for out_dir in ([], [str(tmp_path / "new" / "served")]):
        assert main(["export-onnx", str(checkpoint), *out_dir]) == 1
        printed = capsys.readouterr()
        assert (printed.out, printed.err) == ("", expected)
    assert not (checkpoint / ONNX_FOLDER).exists() and not [p for p in checkpoint.iterdir() if p.name[0] == "."]
    assert list(tmp_path.iterdir()) == []


def files_in(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones included), by relative path: its contents."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def fake_steps(monkeypatch, failure: str | None, graph: Path) -> None:
    """The export's slow steps replaced: the exporter writes (a copy of) `graph`, the quantizer a copy of its input;
    `failure` makes one of them, or the fingerprint written last, fail midway."""
    from modeling_crab import onnx_export

    def export(model, path, opset):
        if failure == "exporter":
            raise RuntimeError("the exporter failed")
        if failure == "disk full":
            Path(path).write_bytes(graph.read_bytes()[:1000])
            raise OSError(errno.ENOSPC, "No space left on device")
        shutil.copyfile(graph, path)
        return Path(path)

    def quantize(path, out_path):
        if failure == "quantizer":
            raise RuntimeError("the quantizer failed")
        if failure == "Ctrl-C":
            raise KeyboardInterrupt
        shutil.copyfile(path, out_path)
        return Path(out_path)

    def fingerprint(path):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(onnx_export, "export_onnx", export)
    monkeypatch.setattr(onnx_export, "quantize_onnx", quantize)
    if failure == "fingerprint":
        monkeypatch.setattr(onnx_export, "weights_fingerprint", fingerprint)


FAILURES = {
    "exporter": (1, "crab: error: the exporter failed"),
    "disk full": (1, "crab: error: [Errno 28] No space left on device"),
    "quantizer": (1, "crab: error: the quantizer failed"),
    "Ctrl-C": (130, "crab: interrupted"),
    "fingerprint": (1, "crab: error: [Errno 5] Input/output error"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_an_export_that_fails_midway_leaves_the_earlier_graphs_serving(
    failure, exported, tmp_path, monkeypatch, capsys
):
    """An export over earlier graphs that fails or is interrupted midway leaves the folder as it was: no scratch
    folder, the earlier graphs and their source.json, which the pipeline still serves."""
    from transformers import pipeline

    folder = tmp_path / "served"
    shutil.copytree(exported[4][0].parent.parent, folder)
    before = files_in(folder)
    fake_steps(monkeypatch, failure, exported[4][0])
    assert main(["export-onnx", str(folder)]) == FAILURES[failure][0]
    printed = capsys.readouterr()
    assert (printed.out, printed.err) == ("", FAILURES[failure][1] + "\n")
    assert files_in(folder) == before and sorted(os.listdir(folder)) == sorted(os.listdir(exported[4][0].parents[1]))
    monkeypatch.undo()
    classify = pipeline("speech-emotion-recognition", model=str(folder), trust_remote_code=True, device="cpu")
    audio = np.random.default_rng(6).standard_normal(12000).astype(np.float32) * 0.1
    expected = classify(audio, text=SENTENCES[0])
    for backend, tolerance in (("onnx", 1e-5), ("onnx-int8", 2e-2)):
        got = {s["label"]: s["score"] for s in classify(audio, text=SENTENCES[0], backend=backend)}
        assert max(abs(got[s["label"]] - s["score"]) for s in expected) < tolerance


@pytest.mark.parametrize("failure", ["exporter", "fingerprint"])
def test_an_export_into_a_new_folder_that_fails_leaves_no_folder(
    failure, tiny_export, exported, tmp_path, monkeypatch, capsys
):
    """A failure before anything is written, or after the graphs and the model are (the fingerprint, last):
    neither OUT_DIR nor the parents the export made are left."""
    _, _, checkpoint = tiny_export
    fake_steps(monkeypatch, failure, exported[4][0])
    assert main(["export-onnx", str(checkpoint), str(tmp_path / "new" / "served")]) == 1
    assert capsys.readouterr().err == FAILURES[failure][1] + "\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # serves graphs of a real export (some 20 s of torch.onnx on 2 cores)
def test_a_new_export_replaces_the_earlier_graphs_whole(exported, tmp_path, monkeypatch, capsys):
    """The new graphs take the onnx/ folder's place whole: an int8 graph this export did not write (--no-int8) is
    gone, source.json names the graphs written, and no scratch folder is left."""
    folder = tmp_path / "served"
    shutil.copytree(exported[4][0].parents[1], folder)
    stale = folder / ONNX_FOLDER / "stale.onnx"
    stale.write_bytes(b"from an earlier export")
    fake_steps(monkeypatch, None, exported[4][0])
    assert main(["export-onnx", str(folder), "--no-int8"]) == 0
    model = shlex.quote(str(folder))
    assert capsys.readouterr().out.splitlines()[-1] == (
        f'use it: crab predict FILE --text "..." --model {model} --backend onnx'
    )
    assert sorted(os.listdir(folder / ONNX_FOLDER)) == [MODEL_FILE, "source.json"]
    assert json.loads((folder / ONNX_FOLDER / "source.json").read_text())["graphs"] == [f"{ONNX_FOLDER}/{MODEL_FILE}"]
    assert sorted(os.listdir(folder)) == sorted(os.listdir(exported[4][0].parents[1]))


def test_the_demo_environment_has_what_the_steps_after_the_demo_need():
    """README's "After the demo" runs in the environment scripts/demo.sh makes: where it exports or serves ONNX
    graphs, the demo installs the onnx extra."""
    root = Path(__file__).parents[1]
    after = re.split(r"\n#{2,} ", (root / "README.md").read_text().split("### After the demo", 1)[1])[0]
    extras = re.search(r'\. scripts/venv\.sh "([^"]*)"', (root / "scripts" / "demo.sh").read_text())[1].split(",")
    if "crab export-onnx" in after or "--backend onnx" in after:
        assert "onnx" in extras


@pytest.fixture(scope="module", params=["joint", "attributes-only"])
def attribute_graphs(request, tiny_tokenizer, tmp_path_factory):
    """(model, processor, export folder with onnx/ fp32 and int8 graphs) of a model with attributes, with classes
    ("joint") or without."""
    id2label = {} if request.param == "attributes-only" else {0: "angry", 1: "happy", 2: "neutral", 3: "sad"}
    folder = tmp_path_factory.mktemp("attribute-onnx") / "inference"
    model, processor, folder = export_attribute_model(tiny_tokenizer, folder, id2label)
    export_checkpoint(folder)
    return model, processor, folder


@pytest.mark.slow  # serves graphs of a real export (some 20 s of torch.onnx on 2 cores)
def test_attribute_graphs_match_pytorch_batched_and_int8_stays_close(attribute_graphs):
    model, processor, folder = attribute_graphs
    session = OnnxCrabSession(folder / ONNX_FOLDER / MODEL_FILE)
    quantized = OnnxCrabSession(folder / ONNX_FOLDER / QUANTIZED_FILE)
    waveforms, texts = varied_inputs(model, seed=4)
    batch = processor(audio=waveforms, text=texts, sampling_rate=16000, max_duration_s=None, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch)
    got = session(**batch)
    assert list(got) == (["logits", "attributes"] if model.config.num_labels else ["attributes"])
    assert got["attributes"].shape == (len(waveforms), len(ATTRIBUTES))
    np.testing.assert_allclose(got["attributes"], expected.attributes.numpy(), atol=1e-4, rtol=0)
    if model.config.num_labels:
        np.testing.assert_allclose(got["logits"], expected.logits.numpy(), atol=1e-4, rtol=0)
    assert np.abs(quantized(**batch)["attributes"] - got["attributes"]).max() < 2e-2


@pytest.mark.slow  # serves graphs of a real export (some 20 s of torch.onnx on 2 cores)
def test_the_pipeline_serves_attributes_from_the_onnx_graphs(attribute_graphs):
    from transformers import pipeline

    _, _, folder = attribute_graphs
    classify = pipeline("speech-emotion-recognition", model=str(folder), trust_remote_code=True, device="cpu")
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal(16000 * 5).astype(np.float32) * 0.1, rng.standard_normal(12000).astype(np.float32)]
    texts = [SENTENCES[0], SENTENCES[1]]
    reference = classify(inputs, text=texts, batch_size=2)
    for backend, tolerance in (("onnx", 1e-5), ("onnx-int8", 2e-2)):
        for ref, got in zip(reference, classify(inputs, text=texts, batch_size=2, backend=backend)):
            assert list(got["attributes"]) == ATTRIBUTES and len(got["labels"]) == len(ref["labels"])
            assert max(abs(got["attributes"][a] - ref["attributes"][a]) for a in ATTRIBUTES) < tolerance


def test_a_model_without_onnx_graphs_says_how_to_make_them(tiny_export):
    from transformers import pipeline

    _, _, checkpoint = tiny_export
    if (checkpoint / ONNX_FOLDER).exists():
        pytest.skip("this module's export already has graphs")
    classify = pipeline("speech-emotion-recognition", model=str(checkpoint), trust_remote_code=True, device="cpu")
    with pytest.raises(FileNotFoundError, match="crab export-onnx"):
        classify(np.full(8000, 0.1, np.float32), text="x", backend="onnx")


@pytest.mark.slow
def test_push_to_hub_publishes_the_onnx_graphs_with_the_card_saying_how_to_use_them(tiny_export, tmp_path):
    from hub_user import push_to_hub_main

    _, _, checkpoint = tiny_export
    staged = tmp_path / "staged"
    assert push_to_hub_main([str(checkpoint.parent), "--repo-id", "you/crab", "--onnx", "--dry-run", str(staged)]) == 0
    model_repo = staged / "model"
    assert (model_repo / ONNX_FOLDER / MODEL_FILE).is_file() and (model_repo / ONNX_FOLDER / QUANTIZED_FILE).is_file()
    card = (model_repo / "README.md").read_text()
    assert 'backend="onnx"' in card and "onnx/model_quantized.onnx" in card
    without = tmp_path / "without"
    assert push_to_hub_main([str(checkpoint.parent), "--repo-id", "you/crab", "--dry-run", str(without)]) == 0
    assert (
        not (without / "model" / ONNX_FOLDER).exists()
        and "backend=" not in (without / "model" / "README.md").read_text()
    )
