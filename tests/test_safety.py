"""Safe checkpoints: exports hold safetensors and JSON, never pickles; loading never unpickles a planted file; the
code that travels with a checkpoint only defines things when imported (no file writes, network, threads or
subprocesses); the docs tell Hub users to pin the code they run with `revision=`."""

from __future__ import annotations

import contextlib
import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from hub_user import run_as_hub_user
from safetensors import safe_open
from transformers import AutoModelForAudioClassification, AutoProcessor, pipeline

from modeling_crab import CrabForEmotionClassification, export_for_inference, save_with_code

ROOT = Path(__file__).resolve().parents[1]
PICKLE_FILES = ("pytorch_model.bin", "training_args.bin", "optimizer.pt", "rng_state.pth")


class Payload:
    """Unpickling this creates `marker`: proof that a pickle was loaded without `weights_only`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def plant(path: Path, marker: Path, legacy: bool = False) -> None:
    """A malicious pickle at `path`: `torch.save`'s zip format, or a bare pickle (torch's legacy format)."""
    if legacy:
        path.write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save({"classifier.out_proj.weight": Payload(marker)}, path)


@pytest.fixture
def checkpoints(tiny_config, tiny_processor, tmp_path):
    """An inference export and a training checkpoint (`save_with_code`, CSL legs kept) of one tiny model."""
    torch.manual_seed(0)
    model = CrabForEmotionClassification(tiny_config).eval()
    export = export_for_inference(model, tiny_processor, tmp_path / "export")
    save_with_code(model, tmp_path / "training")
    return model, {"export": export, "training": tmp_path / "training"}


def is_pickle(path: Path) -> bool:
    head = path.read_bytes()[:4]
    return head[:1] == b"\x80" or head == b"PK\x03\x04"  # pickle protocol >= 2, or torch.save's zip


@pytest.mark.parametrize("kind", ["export", "training"])
def test_checkpoints_hold_safetensors_and_text_only(checkpoints, kind):
    folder = checkpoints[1][kind]
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".py", ".txt", ".md"}, files
    assert not [p.name for p in files if is_pickle(p)]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert [p.name for p in weights] == ["model.safetensors"]
    with safe_open(weights[0], "pt") as tensors:
        assert len(list(tensors.keys())) > 0
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())  # plain JSON, nothing else


@pytest.mark.parametrize("kind", ["export", "training"])
@pytest.mark.parametrize("planted", PICKLE_FILES)
def test_loading_ignores_planted_pickles(checkpoints, kind, planted, tmp_path, monkeypatch):
    model, folders = checkpoints
    folder, marker = folders[kind], tmp_path / f"unpickled-{kind}-{planted}"
    plant(folder / planted, marker)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append((a, k)) or real_load(*a, **k))

    loaded = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
    local = CrabForEmotionClassification.from_pretrained(folder).eval()
    if kind == "export":
        AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        pipeline("speech-emotion-recognition", model=str(folder), trust_remote_code=True, device="cpu")

    assert not marker.exists() and loads == []  # safetensors preferred: the pickle is never opened
    expected = {k: v for k, v in model.state_dict().items() if kind == "training" or "csl_legs" not in k}
    for candidate in (loaded, local):
        state = candidate.state_dict()
        assert set(state) == set(expected)
        for name, tensor in expected.items():
            torch.testing.assert_close(state[name], tensor, msg=name)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_a_pickle_in_place_of_safetensors_is_refused(checkpoints, legacy, tmp_path):
    """Refused in Crab's words (`UnsafeWeightsError`, an `UnpicklingError` as torch's own refusal is): the file,
    why, and the way out; never torch's advice to load it with `weights_only=False`."""
    folder, marker = checkpoints[1]["export"], tmp_path / "unpickled"
    (folder / "model.safetensors").unlink()
    plant(folder / "pytorch_model.bin", marker, legacy=legacy)
    said = f"'{folder / 'pytorch_model.bin'}' is a pickle holding Python objects"
    for load in (
        lambda: AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True),
        lambda: CrabForEmotionClassification.from_pretrained(folder, use_safetensors=False),
    ):
        with pytest.raises(pickle.UnpicklingError) as refused:
            load()
        assert type(refused.value).__name__ == "UnsafeWeightsError"
        assert said in str(refused.value) and "save_pretrained" in str(refused.value)
        assert "weights_only" not in str(refused.value)
    with pytest.raises(OSError, match="safetensors"):
        CrabForEmotionClassification.from_pretrained(folder, use_safetensors=True)
    assert not marker.exists()
    with contextlib.suppress(RuntimeError):  # the legacy format fails after the payload has run
        torch.load(folder / "pytorch_model.bin", weights_only=False)  # the control: unpickled, the payload does run
    assert marker.exists()


def test_an_encoder_whose_weights_are_a_pickle_is_refused(tiny_config, tmp_path):
    """`from_pretrained_encoders` (train.py's start from WavLM and RoBERTa checkpoints): a local encoder folder whose
    weights are a pickle that would run code is refused naming its file; the payload never runs."""
    from transformers import RobertaModel, WavLMModel

    from modeling_crab.modeling_crab import UnsafeWeightsError

    marker = tmp_path / "unpickled"
    for planted in ("audio", "text"):
        folders = {"audio": tmp_path / planted / "wavlm", "text": tmp_path / planted / "roberta"}
        WavLMModel(tiny_config.audio_config).save_pretrained(folders["audio"])
        RobertaModel(tiny_config.text_config).save_pretrained(folders["text"])
        (folders[planted] / "model.safetensors").unlink()
        plant(folders[planted] / "pytorch_model.bin", marker)
        refused = f"'{folders[planted] / 'pytorch_model.bin'}' is a pickle holding"
        with pytest.raises(UnsafeWeightsError, match=re.escape(refused)):
            CrabForEmotionClassification.from_pretrained_encoders(
                str(folders["audio"]), str(folders["text"]), num_labels=4
            )
    assert not marker.exists()


# Runs in a fresh interpreter where `modeling_crab` cannot be imported. First the way transformers loads remote
# code (`get_class_from_dynamic_module` copies the files into the modules cache and imports them); then every one
# of those modules is dropped and imported again with file writes, sockets, subprocesses and threads refused and
# recorded (audit hooks see every `open`, not only `builtins.open`), the checkpoint and cache folders read-only.
AUDITED_IMPORT = """
import _thread, importlib, json, os, socket, stat, sys, threading
import numpy, torch, transformers
from transformers.dynamic_module_utils import get_class_from_dynamic_module

checkpoint = sys.argv[1]
auto_map = json.load(open(os.path.join(checkpoint, "config.json")))["auto_map"]
references = sorted({*auto_map.values(), "processing_crab.CrabProcessor", "pipeline_crab.CrabEmotionPipeline",
                     "losses.mlcs_loss"})
warm = [get_class_from_dynamic_module(reference, checkpoint) for reference in references]
cache = os.path.realpath(os.environ["HF_MODULES_CACHE"])
modules = sorted(name for name, module in sys.modules.items()
                 if os.path.realpath(getattr(module, "__file__", None) or "/").startswith(cache)
                 and not name.endswith("__init__") and os.path.basename(module.__file__) != "__init__.py")
for folder in (checkpoint, cache):
    for root, dirs, files in os.walk(folder):
        for entry in dirs + files:
            path = os.path.join(root, entry)
            os.chmod(path, os.stat(path).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
for name in modules:
    del sys.modules[name]

events, auditing = [], [False]
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
REFUSED = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link", "os.truncate", "os.chmod",
           "os.chown", "os.utime", "os.system", "os.exec", "os.spawn", "os.fork", "os.posix_spawn", "os.kill",
           "shutil.", "socket.", "subprocess.", "urllib.", "http.", "ftplib.", "smtplib.", "webbrowser.")

def refuse(what):
    events.append(what)
    raise PermissionError(f"refused while importing Crab remote code: {what}")

def audit(event, args):
    if not auditing[0]:
        return
    if event == "open":
        path, mode, flags = args
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE_FLAGS:
            refuse(f"open {path!r} mode={mode!r}")
    elif event.startswith(REFUSED):
        refuse(f"{event} {args!r:.120}")

sys.addaudithook(audit)
socket.socket.connect = lambda *a, **k: refuse("socket.connect")
socket.create_connection = lambda *a, **k: refuse("socket.create_connection")
start_thread = _thread.start_new_thread
_thread.start_new_thread = threading._start_new_thread = lambda *a, **k: refuse("thread")
threads = threading.active_count()
auditing[0] = True
try:
    imported = {name: importlib.import_module(name) for name in modules}
finally:
    auditing[0] = False
    _thread.start_new_thread = threading._start_new_thread = start_thread
defined = {
    name.rsplit(".", 1)[-1]: sorted(k for k, v in vars(m).items() if getattr(v, "__module__", None) == name
                                    and isinstance(v, type))
    for name, m in imported.items()
}
json.dump({"events": events, "new_threads": threading.active_count() - threads, "defined": defined,
           "warm": [w.__name__ for w in warm]}, open(OUT, "w"))
"""


def test_remote_code_only_defines_things_at_import(checkpoints, tmp_path):
    export = checkpoints[1]["export"]
    result = run_as_hub_user(AUDITED_IMPORT, tmp_path, export, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    assert result["events"] == [] and result["new_threads"] == 0
    assert set(result["warm"]) >= {"CrabConfig", "CrabModel", "CrabForEmotionClassification", "CrabProcessor"}
    defined = result["defined"]
    assert {p.stem for p in export.glob("*.py")} == set(defined)  # every travelling file was imported and audited
    assert "CrabConfig" in defined["configuration_crab"] and "CrabProcessor" in defined["processing_crab"]
    assert {"CrabModel", "CrabForEmotionClassification"} <= set(defined["modeling_crab"])
    assert "CrabEmotionPipeline" in defined["pipeline_crab"]


def test_docs_tell_hub_users_to_pin_a_revision():
    readme = (ROOT / "README.md").read_text()
    assert "trust_remote_code=True, revision=" in readme
    card = (ROOT / "modeling_crab" / "model_cards" / "card.md").read_text()
    assert card.count("revision=") >= 2 and "commit" in card
