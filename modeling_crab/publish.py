"""Publishing to the Hub: stage an inference export with its model card and Endpoints handler (and a demo Space),
then upload. Used by `push_to_hub.py`; nothing here travels with a checkpoint.

The templates live in the repository's `model_cards/`: `card.md` (shared), one training-data section per dataset
(`iemocap.md`, `meld.md`, `msp_podcast.md`, `generic.md`), `handler.py`, `requirements.txt` and `space/`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from .processing_crab import TRAINING_CROP_S

MODEL_CARDS = Path(__file__).resolve().parent.parent / "model_cards"
METRICS = {  # eval_results.json suffix -> (model-index metric type, display name)
    "war": ("accuracy", "WAR (accuracy)"),
    "uar": ("recall", "UAR (unweighted average recall)"),
    "macro_f1": ("f1", "Macro F1"),
    "weighted_f1": ("f1", "Weighted F1"),
}
DEFAULT_GRADIO_VERSION = "6.31.0"


@dataclass(frozen=True)
class DatasetCard:
    name: str  # model-index dataset name
    type: str  # model-index dataset type
    summary: str  # "trained on ..." in the limitations
    splits: dict[str, str] = field(default_factory=lambda: {"eval": "validation", "test": "test"})


DATASETS = {
    "iemocap": DatasetCard("IEMOCAP", "iemocap", "IEMOCAP, acted American English dialogues by 10 actors"),
    "meld": DatasetCard("MELD", "meld", "MELD, English dialogue from the TV series Friends"),
    "msp_podcast": DatasetCard(
        "MSP-Podcast 2.0",
        "msp-podcast",
        "MSP-Podcast 2.0, natural English podcast speech",
        {"eval": "development", "test": "test1"},
    ),
    "generic": DatasetCard("a custom dataset", "custom", "a custom dataset"),
}


def eval_results_to_model_index(results: dict[str, float], dataset: str) -> list[EvalResult]:
    """`{"eval_war": 0.7, "test_uar": ...}` -> model-index entries (other keys, such as `eval_loss`, are skipped)."""
    info = DATASETS[dataset]
    entries = []
    for prefix, split in info.splits.items():
        for suffix, (metric_type, metric_name) in METRICS.items():
            value = results.get(f"{prefix}_{suffix}")
            if value is None:
                continue
            entries.append(
                EvalResult(
                    task_type="audio-classification",
                    task_name="Speech emotion recognition",
                    dataset_type=info.type,
                    dataset_name=info.name,
                    dataset_split=split,
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=round(float(value), 4),
                )
            )
    return entries


def _results_table(entries: list[EvalResult]) -> str:
    if not entries:
        return "No evaluation results were found next to this checkpoint (`eval_results.json`)."
    splits = list(dict.fromkeys(e.dataset_split for e in entries))
    names = list(dict.fromkeys(e.metric_name for e in entries))
    value = {(e.dataset_split, e.metric_name): e.metric_value for e in entries}
    rows = ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for split in splits:
        rows.append(f"| {split} | " + " | ".join(f"{value.get((split, n), '-')}" for n in names) + " |")
    return "\n".join(rows)


def training_setup(config: dict, eval_results: dict, text_padding: str | None) -> str:
    """One paragraph: the recipe (from `eval_results.json`) and the padding the model was trained with."""
    recipe = eval_results.get("recipe")
    text_padding = eval_results.get("text_padding", text_padding)
    named = f"the `{recipe}` training recipe" if recipe else "a training recipe that `eval_results.json` does not name"
    if recipe == "release":
        named += " (the authors' released training loop)"
    padded = "to 128 tokens" if text_padding == "max_length" else "to the longest transcript of each batch"
    if config.get("mask_padding", True):
        return (
            f"Trained with {named}. Transcripts were padded {padded}; the head masks padded frames and tokens, so a "
            "clip's scores do not depend on what it is batched with."
        )
    return (
        f"Trained with {named}. Transcripts were padded {padded} and the head does not mask padding "
        "(`mask_padding: false`), so its scores depend on padding: the saved processor pads transcripts the same "
        "way, and the pipeline classifies one window at a time (no audio padding), as the model was evaluated."
    )


def render_model_card(
    config: dict,
    eval_results: dict[str, float],
    repo_id: str,
    dataset: str = "generic",
    license: str = "mit",
    max_duration_s: float | None = TRAINING_CROP_S,
    text_padding: str | None = None,
) -> ModelCard:
    """The model card: metadata (both encoders as `base_model`, `model-index` results) and the body from the
    templates. `config` is the checkpoint's `config.json`; `eval_results` the training's `eval_results.json`
    (its `recipe` and `text_padding` say how the model was trained; `text_padding` is the saved processor's)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset '{dataset}' has no card template; choose one of {sorted(DATASETS)}")
    info = DATASETS[dataset]
    entries = eval_results_to_model_index(eval_results, dataset)
    model_name = repo_id.split("/")[-1]
    data = ModelCardData(
        model_name=model_name,
        base_model=[config["audio_encoder_name"], config["text_encoder_name"]],
        library_name="transformers",
        pipeline_tag="audio-classification",
        license=license,
        language=["en"],
        tags=["speech-emotion-recognition", "emotion-recognition", "multimodal", "crab", "custom_code"],
        eval_results=entries or None,
    )
    labels = [config["id2label"][key] for key in sorted(config["id2label"], key=int)]
    values = {
        "title": f"Crab speech emotion recognition ({info.name})" if dataset != "generic" else model_name,
        "repo_id": repo_id,
        "audio_encoder": config["audio_encoder_name"],
        "text_encoder": config["text_encoder_name"],
        "labels": ", ".join(f"`{label}`" for label in labels),
        "results_table": _results_table(entries),
        "dataset_name": info.name,
        "training_summary": info.summary,
        "max_duration": f"{max_duration_s or 0:g}",
        "training_setup": training_setup(config, eval_results, text_padding),
    }
    values["dataset_section"] = Template(_template(f"{dataset}.md")).substitute(values).strip()
    body = Template(_template("card.md")).substitute(values)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _template(name: str) -> str:
    path = MODEL_CARDS / name
    if not path.is_file():
        raise FileNotFoundError(f"template '{path}' is missing; run push_to_hub.py from a clone of the repository")
    return path.read_text(encoding="utf-8")


def find_checkpoint(output_dir: Path) -> tuple[Path, dict[str, float]]:
    """A training output dir (or its `inference/`) -> the checkpoint to export and the training's eval results."""
    output_dir = Path(output_dir)
    candidates = [output_dir / "inference", output_dir]
    checkpoint = next((c for c in candidates if (c / "config.json").is_file()), None)
    if checkpoint is None:
        raise FileNotFoundError(
            f"'{output_dir}' has no config.json, nor an inference/ folder with one; pass train.py's --output_dir"
        )
    results_path = next(
        (p for p in (output_dir / "eval_results.json", output_dir.parent / "eval_results.json") if p.is_file()), None
    )
    return checkpoint, (json.loads(results_path.read_text()) if results_path else {})


def stage_model_repo(output_dir: Path, out_dir: Path, repo_id: str, dataset: str = "generic", license: str = "mit"):
    """Write to `out_dir` exactly what goes to the model repo: the inference export (no CSL legs), README.md,
    handler.py, requirements.txt and eval_results.json."""
    from .export import export_for_inference
    from .modeling_crab import CrabForEmotionClassification
    from .processing_crab import CrabProcessor

    checkpoint, eval_results = find_checkpoint(output_dir)
    model = CrabForEmotionClassification.from_pretrained(checkpoint)
    try:
        processor = CrabProcessor.from_pretrained(checkpoint, trust_remote_code=True)  # our own export
    except OSError as error:
        raise FileNotFoundError(
            f"'{checkpoint}' has no saved CrabProcessor ({error}); save the processor there"
        ) from None
    export_for_inference(model, processor, out_dir)
    config = json.loads((out_dir / "config.json").read_text())
    card = render_model_card(
        config, eval_results, repo_id, dataset, license, processor.max_duration_s, processor.text_padding
    )
    card.save(out_dir / "README.md")
    for name in ("handler.py", "requirements.txt"):
        shutil.copyfile(MODEL_CARDS / name, out_dir / name)
    if eval_results:
        (out_dir / "eval_results.json").write_text(json.dumps(eval_results, indent=2) + "\n")
    return out_dir


def stage_space(out_dir: Path, model_repo_id: str, gradio_version: str | None = None) -> Path:
    """Write to `out_dir` the Gradio Space: app.py (pointing at `model_repo_id`), requirements.txt and README.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if gradio_version is None:
        try:
            from importlib.metadata import version

            gradio_version = version("gradio")
        except Exception:
            gradio_version = DEFAULT_GRADIO_VERSION
    app = _template("space/app.py")
    (out_dir / "app.py").write_text(app.replace("__CRAB_MODEL_ID__", model_repo_id))
    shutil.copyfile(MODEL_CARDS / "space" / "requirements.txt", out_dir / "requirements.txt")
    readme = Template(_template("space/README.md")).substitute(
        title=f"Crab emotion demo, {model_repo_id.split('/')[-1]}",
        gradio_version=gradio_version,
        model_id=model_repo_id,
    )
    (out_dir / "README.md").write_text(readme)
    return out_dir


def upload(folder: Path, repo_id: str, repo_type: str = "model", private: bool = False, token: str | None = None):
    """Create `repo_id` if needed and upload `folder` as one commit; returns the `CommitInfo`."""
    api = HfApi(token=token)
    extra = {"space_sdk": "gradio"} if repo_type == "space" else {}
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **extra)
    return api.upload_folder(
        repo_id=repo_id, folder_path=folder, repo_type=repo_type, commit_message="Upload Crab with push_to_hub.py"
    )


__all__ = [
    "DATASETS",
    "eval_results_to_model_index",
    "render_model_card",
    "find_checkpoint",
    "stage_model_repo",
    "stage_space",
    "upload",
]
