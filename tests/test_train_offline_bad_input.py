"""Bad input to `train.py` on a machine that cannot get its models from the Hub: the encoders or checkpoint it names
are stopped in one line naming them and the fixes, at once (no retries), and models in the Hub cache still load.
Every test here is a row of docs/bad_input.md, under the same name."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from training_helpers import write_corpus

ROOT = Path(__file__).resolve().parents[1]
# each case is a new train.py process (huggingface_hub reads its endpoint and offline mode at import), some 6-8 s
pytestmark = pytest.mark.slow
CLOSED_PORT = "http://127.0.0.1:9"  # the discard port: nothing listens, so every connection is refused at once
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CONFIGS = {  # config.json alone: what the run reads before any audio or weights
    "microsoft/wavlm-large": {"model_type": "wavlm"},
    "roberta-large": {"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1},
}
# huggingface_hub's backoff sleeps 1 + 2 + 4 + 8 + 8 s before it gives up on a file it cannot reach
RETRY_SLEEP_S = 23
READ_BOTH = "--max_text_length 600: the text encoder (roberta) reads at most 512 tokens"  # the check after the read


class _Hub(BaseHTTPRequestHandler):
    """A Hub holding the `CONFIGS` (`/<repo>/resolve/main/config.json`) and answering for any other repo as
    huggingface.co answers for one that does not exist."""

    def do_HEAD(self, body: bool = False):
        repo, _, file = self.path.lstrip("/").partition("/resolve/main/")
        if repo not in CONFIGS or file != "config.json":
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = json.dumps(CONFIGS[repo]).encode()
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self):
        self.do_HEAD(body=True)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub():
    """The address of a `_Hub` on this machine."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def startup_s():
    """Seconds this machine takes to start train.py's interpreter and import the training stack (a busy machine
    takes longer): the time limits below are on top of it."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", "import train, modeling_crab.training.run"], cwd=ROOT, check=True)
    return time.monotonic() - start


def _warm_cache(cache: Path, repos) -> None:
    """The Hub cache's layout (`models--org--name/snapshots/<commit>/config.json`, `refs/main`) holding the configs
    of `repos`, as a run that downloaded them leaves it."""
    for repo in repos:
        folder = cache / f"models--{repo.replace('/', '--')}"
        (folder / "snapshots" / COMMIT).mkdir(parents=True)
        (folder / "snapshots" / COMMIT / "config.json").write_text(json.dumps(CONFIGS[repo]))
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(COMMIT)


@pytest.mark.parametrize(
    "where, extra, named",
    [
        pytest.param(  # no network: the Hub's address cannot be reached
            "no network",
            [],
            (
                "--audio_encoder 'microsoft/wavlm-large' and --text_encoder 'roberta-large': not local folders, not in "
                "the Hub cache ({cache}), and the Hub (http://127.0.0.1:9) cannot be reached from here (",
                "refused); pass --tiny for a CPU trial with tiny random encoders, or local model folders "
                "(--audio_encoder DIR --text_encoder DIR), or run once where the Hub can be reached",
            ),
            id="no network",
        ),
        pytest.param(
            "offline mode",
            [],
            "--audio_encoder 'microsoft/wavlm-large' and --text_encoder 'roberta-large': not local folders, not in the "
            "Hub cache ({cache}), and HF_HUB_OFFLINE=1 keeps this run off the Hub; pass --tiny for a CPU trial with "
            "tiny random encoders, or local model folders (--audio_encoder DIR --text_encoder DIR), or unset "
            "HF_HUB_OFFLINE to download them",
            id="offline mode",
        ),
        pytest.param(  # the Hub has the text encoder, not the speech encoder asked for
            "online",
            ["--audio_encoder", "nobody-here/no-such-model"],
            "--audio_encoder 'nobody-here/no-such-model': not a local folder, and the Hub ({hub}) has no such repo (a "
            "private one needs `hf auth login`); pass a Hub repo id or --tiny for a CPU trial",
            id="no such repo",
        ),
        pytest.param(
            "no network",
            ["--model_name_or_path", "someone/crab-iemocap"],
            (
                "--model_name_or_path 'someone/crab-iemocap': not a local folder, not in the Hub cache ({cache}), and "
                "the Hub (http://127.0.0.1:9) cannot be reached from here (",
                "refused); pass a local checkpoint folder (--model_name_or_path DIR, a train.py output_dir), or --tiny "
                "without --model_name_or_path for a CPU trial",
            ),
            id="checkpoint offline",
        ),
        pytest.param(
            "no network",
            ["--audio_encoder", "{tmp}/wavlm"],
            "--audio_encoder '{tmp}/wavlm': the folder has no config.json; pass a model's folder (what save_pretrained "
            "writes: its config.json and weights), a Hub repo id, or --tiny for a CPU trial",
            id="folder without config.json",
        ),
        pytest.param(
            "no network",
            ["--text_encoder", "{tmp}/models/roberta"],
            "--text_encoder '{tmp}/models/roberta': no such folder, and not a Hub repo id; pass a model's folder",
            id="no such folder",
        ),
        # models the run can get: their configs are read (the check that follows the read speaks), offline at once
        pytest.param("cached, offline mode", ["--max_text_length", "600"], READ_BOTH, id="cached, offline mode"),
        pytest.param("cached, no network", ["--max_text_length", "600"], READ_BOTH, id="cached, no network"),
        pytest.param("online", ["--max_text_length", "600"], READ_BOTH, id="online, not cached"),
    ],
)
def test_train_encoders_the_hub_cannot_give(tmp_path, hub, startup_s, where, extra, named):
    """No network, offline mode with an empty cache, a repo the Hub does not have, a checkpoint to fine-tune offline, a
    folder without config.json or none at all: exit 2 with one line naming the models and the fixes, before any audio
    is read and without huggingface_hub's retries. Models in the Hub cache are read from it offline as before, and a
    Hub that has them serves them."""
    manifest = write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1})
    cache = tmp_path / "hub"
    cache.mkdir()
    (tmp_path / "wavlm").mkdir()  # a folder, but no model's
    if where.startswith("cached"):
        _warm_cache(cache, CONFIGS)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_CACHE=str(cache))  # nothing of this machine's own
    env["HF_ENDPOINT"] = hub if where == "online" else CLOSED_PORT
    if where.endswith("offline mode"):
        env["HF_HUB_OFFLINE"] = "1"
    argv = ["--manifest", str(manifest), "--output_dir", str(tmp_path / "out")]
    argv += [arg.format(tmp=tmp_path) for arg in extra]

    start = time.monotonic()
    done = subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start

    errors = [line for line in done.stderr.splitlines() if line.startswith("train.py: error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-3000:]
    assert errors[0] == done.stderr.strip().splitlines()[-1]
    for part in (named,) if isinstance(named, str) else named:
        assert part.format(cache=cache, hub=hub, tmp=tmp_path) in errors[0]
    assert "Traceback" not in done.stderr and "Retrying" not in done.stderr
    assert seconds < startup_s + RETRY_SLEEP_S / 2, f"{seconds:.1f} s (startup {startup_s:.1f} s)"
