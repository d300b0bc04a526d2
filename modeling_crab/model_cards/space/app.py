"""Crab speech emotion recognition demo (a Gradio Space): upload or record speech, type or transcribe what was said.

Settings (Space variables): CRAB_MODEL (model repo or local dir), CRAB_REVISION (pin a commit), CRAB_ASR_MODEL
(speech recognizer for empty transcripts). Runs locally too: `CRAB_MODEL=outputs/x/inference python app.py`.
"""

from __future__ import annotations

import os

import gradio as gr
from transformers import pipeline

MODEL_ID = os.environ.get("CRAB_MODEL", "__CRAB_MODEL_ID__")
REVISION = os.environ.get("CRAB_REVISION") or None
ASR_MODEL = os.environ.get("CRAB_ASR_MODEL", "openai/whisper-large-v3-turbo")

classifier = pipeline(
    "speech-emotion-recognition", model=MODEL_ID, revision=REVISION, trust_remote_code=True, asr_model=ASR_MODEL
)
LABELS = list(classifier.model.config.id2label.values())
AUDIO_ONLY = getattr(classifier.model.config, "modality_dropout", 0.0) > 0


def classify(audio_path: str | None, transcript: str, transcribe: bool):
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
    scores = {s["label"]: s["score"] for s in result["aggregate"]}
    windows = [
        [w["start"], w["end"], w["scores"][0]["label"], round(w["scores"][0]["score"], 3)] for w in result["windows"]
    ]
    return scores, result["text"], windows


with gr.Blocks(title="Crab speech emotion recognition") as demo:
    gr.Markdown(
        f"# Crab: speech emotion recognition\nModel [`{MODEL_ID}`](https://huggingface.co/{MODEL_ID}) "
        f"recognises {', '.join(LABELS)} from speech and its transcript."
    )
    with gr.Row():
        with gr.Column():
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech")
            transcript = gr.Textbox(label="Transcript", placeholder="What was said (leave empty to transcribe)")
            transcribe = gr.Checkbox(value=True, label=f"Transcribe with {ASR_MODEL} when the transcript is empty")
            submit = gr.Button("Classify", variant="primary")
        with gr.Column():
            emotions = gr.Label(label="Emotion", num_top_classes=len(LABELS), elem_id="emotion")
            used_text = gr.Textbox(label="Transcript used", interactive=False)
            window_table = gr.Dataframe(
                headers=["start (s)", "end (s)", "emotion", "score"], label="Windows of long recordings"
            )
    submit.click(classify, inputs=[audio, transcript, transcribe], outputs=[emotions, used_text, window_table])

if __name__ == "__main__":
    demo.launch()
