"""Crab speech emotion recognition demo (a Gradio Space): upload or record speech, type or transcribe what was said.

Shows the emotion scores of a model with classes and, for a model with emotional attributes, their values on the 0-1
scale and the recording's point on the valence-arousal plane.

Settings (Space variables): CRAB_MODEL (model repo or local dir), CRAB_REVISION (pin a commit), CRAB_ASR_MODEL
(speech recognizer for empty transcripts). Runs locally too: `CRAB_MODEL=outputs/x/inference python app.py`.
"""

from __future__ import annotations

import os

import gradio as gr
import pandas as pd  # a dependency of gradio: the valence-arousal plot's data
from transformers import pipeline

MODEL_ID = os.environ.get("CRAB_MODEL", "__CRAB_MODEL_ID__")
REVISION = os.environ.get("CRAB_REVISION") or None
ASR_MODEL = os.environ.get("CRAB_ASR_MODEL", "openai/whisper-large-v3-turbo")

classifier = pipeline(
    "speech-emotion-recognition", model=MODEL_ID, revision=REVISION, trust_remote_code=True, asr_model=ASR_MODEL
)
LABELS = list(classifier.model.config.id2label.values())
ATTRIBUTES = list(getattr(classifier.model.config, "attribute_names", None) or [])  # the 0-1 scale
PLANE = {"valence", "arousal"} <= set(ATTRIBUTES)
AUDIO_ONLY = getattr(classifier.model.config, "modality_dropout", 0.0) > 0
WINDOW_HEADERS = ["start (s)", "end (s)", *(["emotion", "score"] if LABELS else []), *ATTRIBUTES]


def classify(audio_path: str | None, transcript: str, transcribe: bool):
    """-> (label scores, transcript used, window rows, attributes as text, the valence-arousal point)."""
    if not audio_path:
        raise gr.Error("Upload or record some speech first.")
    transcript = (transcript or "").strip()
    if transcript:
        text = transcript
    elif transcribe:
        text = None  # the pipeline transcribes it
    elif AUDIO_ONLY:
        text = ""
    else:
        raise gr.Error("Type what was said, or tick 'Transcribe' to have the speech recognizer do it.")
    result = classifier(audio_path, text=text, return_windows=True)
    # the answer: ranked labels, or {"labels", "attributes"} for a model with attributes
    answer = result["aggregate"] if ATTRIBUTES else {"labels": result["aggregate"], "attributes": {}}
    scores = {s["label"]: s["score"] for s in answer["labels"]}
    windows = []
    for w in result["windows"]:
        top = [w["scores"][0]["label"], round(w["scores"][0]["score"], 3)] if LABELS else []
        windows.append([w["start"], w["end"], *top, *(round(w["attributes"][a], 3) for a in ATTRIBUTES)])
    attributes = answer["attributes"]
    attribute_text = "  ".join(f"{name} {value:.2f}" for name, value in attributes.items())
    point = pd.DataFrame({axis: [attributes[axis]] for axis in ("valence", "arousal")} if PLANE else {})
    return scores, result["text"], windows, attribute_text, point


def describe() -> str:
    predicts = [f"recognises {', '.join(LABELS)}"] if LABELS else []
    if ATTRIBUTES:
        predicts.append(f"rates {', '.join(ATTRIBUTES)} from 0 (lowest) to 1 (highest)")
    return " and ".join(predicts)


with gr.Blocks(title="Crab speech emotion recognition") as demo:
    gr.Markdown(
        f"# Crab: speech emotion recognition\nModel [`{MODEL_ID}`](https://huggingface.co/{MODEL_ID}) "
        f"{describe()} from speech and its transcript."
    )
    with gr.Row():
        with gr.Column():
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech")
            transcript = gr.Textbox(label="Transcript", placeholder="What was said (leave empty to transcribe)")
            transcribe = gr.Checkbox(value=True, label=f"Transcribe with {ASR_MODEL} when the transcript is empty")
            submit = gr.Button("Classify", variant="primary")
        with gr.Column():
            emotions = gr.Label(
                label="Emotion", num_top_classes=len(LABELS) or None, elem_id="emotion", visible=bool(LABELS)
            )
            attribute_values = gr.Textbox(
                label="Attributes (0-1)", interactive=False, elem_id="attributes", visible=bool(ATTRIBUTES)
            )
            plane = gr.ScatterPlot(
                x="valence",
                y="arousal",
                x_lim=[0, 1],
                y_lim=[0, 1],
                label="Valence-arousal plane",
                elem_id="plane",
                visible=PLANE,
            )
            used_text = gr.Textbox(label="Transcript used", interactive=False)
            window_table = gr.Dataframe(headers=WINDOW_HEADERS, label="Windows of long recordings")
    submit.click(
        classify,
        inputs=[audio, transcript, transcribe],
        outputs=[emotions, used_text, window_table, attribute_values, plane],
    )

if __name__ == "__main__":
    demo.launch()
