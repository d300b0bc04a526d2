"""The Gradio Space classifies an uploaded recording in a real (headless Chromium) browser, with the app running
where this package is not installed, on a tiny exported checkpoint."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_user import NO_CRAB_PACKAGE, hub_user_env

from modeling_crab import CrabForEmotionClassification, export_for_inference

APP = Path(__file__).resolve().parent.parent / "modeling_crab" / "model_cards" / "space" / "app.py"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LABELS = ("angry", "happy", "neutral", "sad")


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed and could not be: apt-get install -y chromium (Debian)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the Space app exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the Space app did not answer at {url} in {timeout_s} s:\n{log.read_text()[-4000:]}")


@pytest.mark.slow
def test_space_classifies_an_uploaded_recording(tiny_config, tiny_processor, tmp_path):
    pytest.importorskip("gradio", reason="the Space test needs the `space` extra: pip install -e '.[space]'")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[space]' (playwright)")
    executable = chromium_path()

    torch.manual_seed(0)
    checkpoint = export_for_inference(CrabForEmotionClassification(tiny_config).eval(), tiny_processor, tmp_path / "m")
    recording = tmp_path / "hello.wav"
    with wave.open(str(recording), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes((np.random.default_rng(0).uniform(-0.3, 0.3, 24000) * 32767).astype("<i2").tobytes())

    launcher = tmp_path / "space.py"
    launcher.write_text(NO_CRAB_PACKAGE + f"import runpy\nrunpy.run_path({str(APP)!r}, run_name='__main__')\n")
    port = free_port()
    env = hub_user_env(
        tmp_path,
        CRAB_MODEL=str(checkpoint),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
    )
    log = tmp_path / "space.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, str(launcher)], cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_serving(url, server, log)
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.goto(url, wait_until="domcontentloaded", timeout=120_000)
                page.locator("input[type=file]").first.set_input_files(str(recording))
                page.get_by_label("Transcript", exact=True).fill("that is wonderful news")
                page.get_by_role("button", name="Classify").click()
                try:
                    page.wait_for_function(
                        "/\\b(angry|happy|neutral|sad)\\b/.test(document.querySelector('#emotion')?.innerText ?? '')",
                        timeout=120_000,
                    )
                finally:
                    page.screenshot(path=str(tmp_path / "space.png"), full_page=True)
                shown = page.locator("#emotion").inner_text()
                used = page.get_by_label("Transcript used").input_value()
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    assert sum(label in shown for label in LABELS) == len(LABELS), shown  # a bar per label
    assert "%" in shown and used == "that is wonderful news"


def run_app(checkpoint: Path, monkeypatch) -> dict:
    """The Space's module namespace (pipeline built, interface defined, not launched) on `checkpoint`."""
    import runpy

    pytest.importorskip("gradio", reason="the Space test needs the `space` extra: pip install -e '.[space]'")
    monkeypatch.setenv("CRAB_MODEL", str(checkpoint))
    return runpy.run_path(str(APP), run_name="space_app")


def recording(path: Path, seconds: float) -> str:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        samples = np.random.default_rng(0).uniform(-0.3, 0.3, int(16000 * seconds))
        wav.writeframes((samples * 32767).astype("<i2").tobytes())
    return str(path)


@pytest.mark.parametrize("id2label", [dict(enumerate(LABELS)), {}], ids=["joint", "attributes-only"])
def test_the_space_shows_the_attributes_and_the_valence_arousal_point(id2label, tiny_tokenizer, tmp_path, monkeypatch):
    from attribute_models import ATTRIBUTES, export_attribute_model

    _, _, checkpoint = export_attribute_model(tiny_tokenizer, tmp_path / "m", id2label)
    app = run_app(checkpoint, monkeypatch)
    audio = recording(tmp_path / "hello.wav", 3.0)  # two windows of the 2 s crop
    scores, used, windows, attribute_text, point = app["classify"](audio, "that is wonderful news", False)
    expected = app["classifier"](audio, text="that is wonderful news")
    assert used == "that is wonderful news" and set(scores) == set(id2label.values())
    assert attribute_text.split()[::2] == ATTRIBUTES
    assert [float(v) for v in attribute_text.split()[1::2]] == [
        round(expected["attributes"][a], 2) for a in ATTRIBUTES
    ]
    assert list(point.columns) == ["valence", "arousal"] and len(point) == 1
    assert point.iloc[0].to_dict() == {axis: expected["attributes"][axis] for axis in ("valence", "arousal")}
    assert len(windows) == 2 and all(len(row) == len(app["WINDOW_HEADERS"]) for row in windows)
    assert app["WINDOW_HEADERS"][-3:] == ATTRIBUTES and app["PLANE"]


def test_the_space_of_a_categories_only_model_shows_labels_alone(tiny_config, tiny_processor, tmp_path, monkeypatch):
    torch.manual_seed(0)
    checkpoint = export_for_inference(CrabForEmotionClassification(tiny_config).eval(), tiny_processor, tmp_path / "m")
    app = run_app(checkpoint, monkeypatch)
    scores, _, windows, attribute_text, point = app["classify"](recording(tmp_path / "a.wav", 1.5), "hello", False)
    assert set(scores) == set(LABELS) and sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert attribute_text == "" and point.empty and not app["PLANE"] and not app["ATTRIBUTES"]
    assert app["WINDOW_HEADERS"] == ["start (s)", "end (s)", "emotion", "score"] and len(windows[0]) == 4
