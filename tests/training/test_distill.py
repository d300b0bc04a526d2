"""Distillation (`training/distill.py`, `crab distill`): the soft-target terms against their formulas, the students
the presets build from a teacher, the teacher's outputs computed once, and a whole tiny distillation whose student
loads like any Crab."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from training_helpers import write_corpus

from modeling_crab import CrabForEmotionClassification, CrabProcessor, export_for_inference
from modeling_crab.configuration_crab import min_audio_samples
from modeling_crab.losses import (
    concordance_loss,
    crab_objective,
    distillation_objective,
    similarity_preserving_loss,
    soft_label_loss,
)
from modeling_crab.training.distill import build_student, copy_from_teacher, layer_map, student_config
from modeling_crab.training.tiny import build_tiny_tokenizer, tiny_crab_config

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def _kl_by_hand(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> float:
    """T^2 * mean over rows of sum_c p_t log(p_t / p_s), softmaxes at temperature T, in float64."""
    total = 0.0
    for s_row, t_row in zip(student.double().tolist(), teacher.double().tolist()):
        p_s = [math.exp(v / temperature) for v in s_row]
        p_t = [math.exp(v / temperature) for v in t_row]
        p_s, p_t = [p / sum(p_s) for p in p_s], [p / sum(p_t) for p in p_t]
        total += sum(t * math.log(t / s) for s, t in zip(p_s, p_t))
    return temperature**2 * total / len(student)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_soft_label_loss_is_hintons_kl_scaled_by_t_squared(temperature):
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 4), 3 * torch.randn(5, 4)
    got = soft_label_loss(student, teacher, temperature)
    assert got.item() == pytest.approx(_kl_by_hand(student, teacher, temperature), rel=1e-5)


def test_soft_label_loss_is_zero_for_the_teachers_logits_and_keeps_its_gradient_scale():
    torch.manual_seed(1)
    teacher = torch.randn(6, 4)
    assert soft_label_loss(teacher.clone(), teacher, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    # for small logits the softened KL falls as 1/T^2: the T^2 factor keeps the term (and its gradients) on one scale
    student = 0.01 * torch.randn(6, 4)
    small = 0.01 * teacher
    at_2, at_8 = soft_label_loss(student, small, 2.0), soft_label_loss(student, small, 8.0)
    assert at_8.item() == pytest.approx(at_2.item(), rel=0.05)  # the KL alone: 16 times smaller at T = 8


def test_distillation_objective_mixes_the_terms_with_labels_only_where_rows_have_them(tiny_config):
    torch.manual_seed(2)
    tiny_config.attribute_names = ["arousal"]
    tiny_config.distillation = {"temperature": 2.0, "soft_weight": 0.5, "attribute_weight": 3.0, "label_weight": 2.0}
    outputs = SimpleNamespace(logits=torch.randn(4, 4), attributes=torch.rand(4, 1), csl_embeddings=None)
    teacher = {"teacher_logits": torch.randn(4, 4), "teacher_attributes": torch.rand(4, 1)}
    labels = torch.tensor([2, -100, 0, 3])  # the second row is unlabelled audio
    attribute_labels = torch.tensor([[0.2], [float("nan")], [0.9], [0.5]])
    objective = distillation_objective(
        outputs, teacher, {"labels": labels, "attribute_labels": attribute_labels}, tiny_config
    )

    rows = labels >= 0
    hard = crab_objective(
        outputs.logits[rows], labels[rows], None, tiny_config, outputs.attributes[rows], attribute_labels[rows]
    )
    soft = soft_label_loss(outputs.logits, teacher["teacher_logits"], 2.0)
    matched = concordance_loss(outputs.attributes, teacher["teacher_attributes"])
    torch.testing.assert_close(objective.loss, 2.0 * hard.loss + 0.5 * soft + 3.0 * matched)
    torch.testing.assert_close(objective.soft_loss, soft)
    torch.testing.assert_close(objective.ce_loss, hard.ce_loss)

    unlabelled = distillation_objective(outputs, teacher, {"labels": torch.full((4,), -100)}, tiny_config)
    assert unlabelled.ce_loss is None
    torch.testing.assert_close(unlabelled.loss, 0.5 * soft + 3.0 * matched)
    assert unlabelled.embedding_loss is None  # embedding_weight 0 (the default): no embedding term

    outputs.pooled_output, teacher["teacher_embedding"] = torch.randn(4, 8), torch.randn(4, 16)
    tiny_config.distillation["embedding_weight"] = 4.0
    embedded = distillation_objective(outputs, teacher, {"labels": torch.full((4,), -100)}, tiny_config)
    alike = similarity_preserving_loss(outputs.pooled_output, teacher["teacher_embedding"])
    torch.testing.assert_close(embedded.embedding_loss, alike)
    torch.testing.assert_close(embedded.loss, 0.5 * soft + 3.0 * matched + 4.0 * alike)


def test_similarity_preserving_loss_is_tung_and_moris_and_ignores_rotation_and_scale():
    torch.manual_seed(3)
    student, teacher = torch.randn(6, 5), torch.randn(6, 9)

    def by_hand(a: np.ndarray, b: np.ndarray) -> float:
        def normalised_gram(x):
            g = x @ x.T
            return g / np.linalg.norm(g, axis=1, keepdims=True)

        return float(((normalised_gram(a) - normalised_gram(b)) ** 2).sum() / len(a) ** 2)

    got = similarity_preserving_loss(student, teacher)
    assert got.item() == pytest.approx(by_hand(student.double().numpy(), teacher.double().numpy()), rel=1e-5)
    rotation, _ = torch.linalg.qr(torch.randn(9, 9))
    assert similarity_preserving_loss(3.0 * teacher @ rotation, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert got.item() > 0.01
    student.requires_grad_(True)
    similarity_preserving_loss(student, teacher).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_layer_map_spaces_the_teachers_layers_evenly_keeping_first_and_last():
    assert layer_map(6, 12) == [0, 2, 4, 7, 9, 11]  # DistilBERT's layers of BERT-base
    assert layer_map(3, 12) == [0, 6, 11]
    assert layer_map(2, 4) == [0, 3]
    assert layer_map(1, 2) == [0]


@pytest.fixture
def teacher(tiny_config):
    """A tiny teacher with 4 text layers (and its attributes), random weights."""
    tiny_config.text_config.num_hidden_layers = 4
    tiny_config.attribute_names = ["arousal", "valence"]
    torch.manual_seed(3)
    return CrabForEmotionClassification(tiny_config).eval()


@pytest.mark.parametrize("preset", ["small", "tiny"])
def test_a_student_is_smaller_and_starts_from_the_teachers_text_layers(teacher, preset):
    from modeling_crab.training.distill import inference_parameters

    student = build_student(teacher, preset, "teacher-dir")
    record = student.config.distillation
    assert record["teacher"] == "teacher-dir" and record["student"] == preset
    assert record["student_parameters"] == inference_parameters(student) < inference_parameters(teacher)
    assert student.config.id2label == teacher.config.id2label
    assert student.config.attribute_names == teacher.config.attribute_names
    speech, teacher_speech = student.config.audio_config, teacher.config.audio_config
    assert max(speech.conv_dim) < max(teacher_speech.conv_dim)
    assert speech.conv_stride == teacher_speech.conv_stride  # the same frames: the same shortest clip
    assert min_audio_samples(speech) == min_audio_samples(teacher_speech)
    assert speech.hidden_size % speech.num_attention_heads == 0

    mapped = {"small": [0, 3], "tiny": [0]}[preset]
    assert record["text_layers_from_teacher"] == mapped
    for i, source in enumerate(mapped):
        copied = student.crab.text_encoder.encoder.layer[i].state_dict()
        original = teacher.crab.text_encoder.encoder.layer[source].state_dict()
        assert copied.keys() == original.keys()
        for name in copied:
            torch.testing.assert_close(copied[name], original[name], rtol=0, atol=0)
    embeddings = student.crab.text_encoder.embeddings.word_embeddings.weight
    torch.testing.assert_close(embeddings, teacher.crab.text_encoder.embeddings.word_embeddings.weight, rtol=0, atol=0)


def test_a_narrower_speech_encoder_records_no_copied_layers(teacher):
    """WavLM layers of another width share only their per-head gate with the teacher's: that is no copied layer."""
    student = build_student(teacher, "small", "teacher-dir")
    assert student.config.audio_config.hidden_size < teacher.config.audio_config.hidden_size
    assert student.config.distillation["speech_layers_from_teacher"] is None
    as_wide = CrabForEmotionClassification(student_config(teacher.config, {"speech": {"num_hidden_layers": 0.5}}))
    assert copy_from_teacher(as_wide, teacher)["speech"] == layer_map(
        as_wide.config.audio_config.num_hidden_layers, teacher.config.audio_config.num_hidden_layers
    )


def test_a_student_of_the_demo_also_learns_from_further_demo_clips_of_other_voices(tmp_path, tiny_config):
    """No --manifest: as many further demo clips as the demo corpus has, unlabelled, of other voices than its own;
    an --unlabelled_manifest replaces them, and a run on a manifest of its own gets none."""
    from dataclasses import replace

    from modeling_crab.manifest import read_manifest
    from modeling_crab.recipes.demo import generate_demo_corpus
    from modeling_crab.training.arguments import parse_arguments
    from modeling_crab.training.distill import unlabelled_rows

    tiny_config.save_pretrained(tmp_path / "student_init")
    arguments = parse_arguments(["--teacher", "t", "--output_dir", str(tmp_path / "out")])
    arguments = arguments._replace(model=replace(arguments.model, model_name_or_path=str(tmp_path / "student_init")))
    labels = ["angry", "happy", "neutral", "sad"]
    rows, lengths = unlabelled_rows(arguments, labels, demo_clips=12)
    assert len(rows) == len(lengths) == 12
    assert all(u.label == "" and u.split == "unlabelled" and u.id.startswith("unlabelled0:") for u in rows)
    demo = read_manifest(generate_demo_corpus(tmp_path / "demo", n_per_class=3))
    further = read_manifest(tmp_path / "out" / "demo_unlabelled" / "manifest.csv")
    demo_audio = {(tmp_path / "demo" / r["audio"]).read_bytes() for r in demo}
    assert not demo_audio & {(tmp_path / "out" / "demo_unlabelled" / r["audio"]).read_bytes() for r in further}

    extra = write_corpus(tmp_path / "more", {"more": 2}, seed=5)
    given = arguments._replace(distillation=replace(arguments.distillation, unlabelled_manifest=[str(extra)]))
    assert {u.id.split(":")[0] for u in unlabelled_rows(given, labels, demo_clips=12)[0]} == {"unlabelled0"}
    assert len(unlabelled_rows(given, labels, demo_clips=12)[0]) == len(read_manifest(extra))
    own = arguments._replace(data=replace(arguments.data, manifest=str(extra)))
    assert unlabelled_rows(own, labels, demo_clips=12) == ([], {})


def test_unlabelled_audio_without_a_transcript_is_transcribed_once(tmp_path, tiny_config, monkeypatch):
    """A folder of audio files and a manifest without a text column: each clip is transcribed by --asr_model as the
    student reads it (its first --max_duration_s seconds), once (a second run reads the transcripts kept in
    output_dir); rows with a transcript keep theirs; with --empty_transcripts audio_only nothing is transcribed."""
    from dataclasses import replace

    from training_helpers import WORDS, write_tone

    from modeling_crab import pipeline_crab
    from modeling_crab.manifest import ManifestError, read_manifest
    from modeling_crab.training import run
    from modeling_crab.training.arguments import parse_arguments
    from modeling_crab.training.distill import unlabelled_rows

    heard, loaded = [], []

    def recognizer(audio, **kwargs):  # a stand-in for the pipeline's Whisper: says how much audio it heard
        heard.append(len(audio["raw"]))
        return {"text": f"  {len(audio['raw'])} samples at {audio['sampling_rate']} "}

    monkeypatch.setattr(
        pipeline_crab, "speech_recognizer", lambda name, device=None: loaded.append(name) or recognizer
    )
    monkeypatch.setattr(run, "check_model_sources", lambda sources, fixes=None: None)  # the stand-in needs no Hub
    tiny_config.save_pretrained(tmp_path / "student_init")
    with_text = write_corpus(tmp_path / "more", {"more": 1}, seed=5)
    without_text = tmp_path / "more" / "no_text.csv"
    without_text.write_text("id,audio\n" + "".join(f"{r['id']},{r['audio']}\n" for r in read_manifest(with_text)[:2]))
    folder = tmp_path / "recordings"
    write_tone(folder / "call" / "short.wav", 220.0, 0.6)
    write_tone(folder / "long.wav", 220.0, 1.5)
    (folder / "notes.txt").write_text("not audio")

    def rows_of(*flags, sources=(with_text, without_text, folder)):
        argv = ["--teacher", "t", "--output_dir", str(tmp_path / "out"), "--max_duration_s", "1.0", *flags]
        arguments = parse_arguments(argv + ["--unlabelled_manifest", *map(str, sources)])
        model = replace(arguments.model, model_name_or_path=str(tmp_path / "student_init"))
        return unlabelled_rows(arguments._replace(model=model), ["angry", "happy", "neutral", "sad"])[0]

    rows = rows_of("--asr_model", "my-recognizer")
    texts = {u.id: u.text for u in rows}
    assert [texts[f"unlabelled0:more_{label}_0"] for label in WORDS] == list(WORDS.values())  # kept
    assert texts["unlabelled2:call/short.wav"] == "9600 samples at 16000"
    assert texts["unlabelled2:long.wav"] == "16000 samples at 16000"  # the first second, as the student reads it
    manifest_rows = [u for u in rows if u.id.startswith("unlabelled1:")]
    assert len(manifest_rows) == 2 and all(u.text.endswith("samples at 16000") for u in manifest_rows)
    assert loaded == ["my-recognizer"] and len(heard) == 4 and len(rows) == 8

    heard.clear(), loaded.clear()
    assert rows_of("--asr_model", "my-recognizer") == rows and heard == loaded == []  # read back, not transcribed
    kept = tmp_path / "out" / "unlabelled_transcripts.jsonl"
    kept.write_text(kept.read_text()[:-10])  # a run stopped while writing its last transcript
    assert rows_of("--asr_model", "my-recognizer") == rows and len(heard) == 1  # that one clip again
    heard.clear(), loaded.clear()
    assert rows_of("--asr_model", "my-recognizer") == rows and heard == loaded == []
    rows = rows_of("--asr_model", "another-recognizer")  # another recognizer's transcripts are its own
    assert loaded == ["another-recognizer"] and len(heard) == 4

    heard.clear(), loaded.clear()
    with pytest.warns(UserWarning, match="4 row.s. have an empty transcript"):
        audio_only = {u.id: u.text for u in rows_of("--empty_transcripts", "audio_only")}
    assert audio_only["unlabelled2:long.wav"] == "" and heard == loaded == []

    files = rows_of("--asr_model", "my-recognizer", sources=[folder / "long.wav", folder / "call" / "short.wav"])
    assert [(u.id, u.text) for u in files] == [  # audio files named one by one (a shell's calls/*.wav)
        (f"unlabelled0:{folder / 'long.wav'}", "16000 samples at 16000"),
        (f"unlabelled1:{folder / 'call' / 'short.wav'}", "9600 samples at 16000"),
    ]

    broken = tmp_path / "broken"  # a clip that cannot be read is not transcribed; the scan names it
    write_tone(broken / "fine.wav", 220.0, 0.5)
    (broken / "cut.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    with pytest.raises(ManifestError, match="cut.wav"):
        rows_of(sources=[broken])
    assert heard == [8000]


def test_tensors_of_another_shape_are_not_copied(teacher):
    """A student as wide as the teacher copies its head too; a narrower one keeps its own random head."""
    same_width = CrabForEmotionClassification(student_config(teacher.config, {"text": {"num_hidden_layers": 0.5}}))
    copy_from_teacher(same_width, teacher)
    torch.testing.assert_close(same_width.classifier.state_dict(), teacher.classifier.state_dict(), rtol=0, atol=0)
    narrow = CrabForEmotionClassification(student_config(teacher.config, {"head": {"fusion_hidden_size": 0.5}}))
    before = {k: v.clone() for k, v in narrow.classifier.state_dict().items()}
    copy_from_teacher(narrow, teacher)
    torch.testing.assert_close(narrow.classifier.state_dict(), before, rtol=0, atol=0)


def test_the_teachers_outputs_are_computed_once(teacher, tiny_processor, tmp_path, monkeypatch):
    from training_helpers import tiny_datasets

    from modeling_crab.training.distill import cache_teacher_outputs

    train, dev, _ = tiny_datasets(write_corpus(tmp_path / "corpus", {"train": 1, "dev": 1}))
    tokenizer = tiny_processor.tokenizer
    teacher.config.text_config.vocab_size = len(tokenizer)
    training = SimpleNamespace(
        device=torch.device("cpu"), per_device_eval_batch_size=2, dataloader_num_workers=0, main_process_first=_nothing
    )
    encoded = []
    original = teacher.crab.encode
    monkeypatch.setattr(teacher.crab, "encode", lambda *a, **k: encoded.append(len(a[0])) or original(*a, **k))

    first = cache_teacher_outputs(teacher, tiny_processor, {"train": train, "dev": dev}, tmp_path / "cache", training)
    assert sum(encoded) == len(train) + len(dev) == 8
    item = first["train"][0]
    assert item["teacher_logits"].shape == (4,) and item["teacher_attributes"].shape == (2,)
    assert item["teacher_embedding"].shape == (4 * teacher.config.fusion_hidden_size,)
    with torch.no_grad():  # the cached outputs are the teacher's for the clip as the student reads it
        batch = tiny_processor(audio=[train[0]["audio"]], text=[train[0]["text"]], sampling_rate=16000)
        expected = teacher(**batch)
    cached = first["train"][first["train"].ids.index(train[0]["id"])]
    torch.testing.assert_close(cached["teacher_logits"], expected.logits[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(cached["teacher_embedding"], expected.pooled_output[0], atol=1e-5, rtol=0)

    encoded.clear()
    again = cache_teacher_outputs(teacher, tiny_processor, {"train": train, "dev": dev}, tmp_path / "cache", training)
    assert encoded == []  # read, not computed
    torch.testing.assert_close(again["train"][0]["teacher_logits"], item["teacher_logits"])


class _nothing:
    def __init__(self, desc=""):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _save_teacher(folder, texts, attributes: bool) -> None:
    """A tiny random Crab over the corpus's classes, exported as train.py exports (its processor with a tokenizer
    learnt from `texts`)."""
    from training_helpers import LABELS
    from transformers import Wav2Vec2FeatureExtractor

    tokenizer = build_tiny_tokenizer(texts, vocab_size=400)
    config = tiny_crab_config(
        len(LABELS),
        dict(enumerate(LABELS)),
        vocab_size=len(tokenizer),
        attribute_names=["arousal", "valence", "dominance"] if attributes else None,
    )
    torch.manual_seed(0)
    model = CrabForEmotionClassification(config).eval()
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    export_for_inference(model, CrabProcessor(extractor, tokenizer), folder)


@pytest.mark.slow  # a teacher, two corpora, the teacher's outputs, training, evaluation and export: about 30 s
def test_a_tiny_distillation_gives_a_student_that_loads_like_any_crab(tmp_path):
    from tiny_whisper import build_tiny_whisper
    from transformers import AutoModel, pipeline

    from modeling_crab.cli import main
    from modeling_crab.training.feature_cache import CachedFeatures

    manifest = write_corpus(tmp_path / "corpus", {"train": 2, "dev": 1, "test": 1}, attributes=True)
    extra = write_corpus(tmp_path / "more", {"more": 2}, seed=5)  # no labels needed: the teacher labels them
    recordings = write_corpus(tmp_path / "recordings", {"calls": 1}, seed=7).parent / "wavs"  # audio alone
    build_tiny_whisper(tmp_path / "whisper")  # a real transformers speech recognizer transcribes them
    teacher = tmp_path / "teacher"
    _save_teacher(teacher, ["i hate this", "what a great day", "the bus is late", "i miss her"], attributes=True)
    out = tmp_path / "student"
    flags = ["--max_steps", "2", "--disable_tqdm", "True", "--dataloader_num_workers", "0", "--tiny"]
    code = main(
        ["distill", str(teacher), "--manifest", str(manifest), "--output_dir", str(out), "--student", "tiny",
         "--unlabelled_manifest", str(extra), str(recordings), "--asr_model", str(tmp_path / "whisper"),
         "--distill_embedding_weight", "2", "--logging_steps", "1", *flags]
    )  # fmt: skip
    assert code == 0
    import json

    results = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= results["eval_teacher_agreement"] <= 1.0 and 0.0 <= results["test_teacher_agreement"] <= 1.0
    assert "teacher_test_uar" in results and "teacher_eval_ccc_arousal" in results
    record = json.loads((out / "inference" / "config.json").read_text())["distillation"]
    assert record["teacher"] == str(teacher) and record["student"] == "tiny"
    assert record["embedding_weight"] == 2.0
    logged = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any(entry.get("embedding_loss", 0) > 0 for entry in logged)  # the term was computed in training
    assert (out / "teacher_outputs" / "train+unlabelled" / "index.json").is_file()
    transcripts = [json.loads(line) for line in (out / "unlabelled_transcripts.jsonl").read_text().splitlines()]
    assert len(transcripts) == 4 and all(entry["text"] for entry in transcripts)
    labelled_by_teacher = CachedFeatures(out / "teacher_outputs" / "train+unlabelled").ids
    assert len(labelled_by_teacher) == 8 + 8 + 4 and "unlabelled1:calls_sad_0.wav" in labelled_by_teacher

    classify = pipeline("speech-emotion-recognition", model=str(out / "inference"), trust_remote_code=True)
    answer = classify(str(manifest.parent / "wavs" / "test_sad_0.wav"), text="i miss her")
    assert {label["label"] for label in answer["labels"]} == {"angry", "happy", "neutral", "sad"}
    assert set(answer["attributes"]) == {"arousal", "valence", "dominance"}
    embedder = AutoModel.from_pretrained(str(out / "inference"), trust_remote_code=True)
    assert embedder.config.distillation["student"] == "tiny"
    assert np.isfinite(results["eval_uar"])


def test_train_py_with_teacher_is_the_same_run_as_crab_distill():
    """`crab distill T --student tiny` forwards to train.py's arguments: the distill preset over the recipe, the
    teacher and student set, no demo preset (the student's classes are the teacher's)."""
    from modeling_crab.training.arguments import parse_arguments, preset_names

    assert preset_names("crab", False, None, teacher="t") == ["crab", "distill", "tiny"]
    assert preset_names("crab", False, "m.csv", teacher="t") == ["crab", "distill"]
    arguments = parse_arguments(["--teacher", "t", "--student", "tiny", "--manifest", "m.csv"])
    assert arguments.distillation.teacher == "t" and arguments.distillation.student == "tiny"
    assert arguments.training.output_dir == "outputs/student"
    assert arguments.model.freeze_feature_encoder is False and not arguments.model.frozen_baseline


def test_the_card_names_the_teacher_the_size_and_the_agreement(teacher):
    from modeling_crab.publish import render_model_card

    config = build_student(teacher, "small", "you/crab-demo").config.to_dict()
    results = {"eval_uar": 0.8, "test_uar": 0.79, "eval_teacher_agreement": 0.9375, "test_teacher_agreement": 0.9167}
    card = str(render_model_card(config, results, "you/crab-demo-small", dataset="demo"))
    size = config["distillation"]
    assert (
        f"Distilled from `you/crab-demo` (the `small` student: {size['student_parameters']:,} parameters against the "
        f"teacher's {size['teacher_parameters']:,}); its top class is the teacher's on 93.8% of the dev clips and "
        "91.7% of the test clips."
    ) in " ".join(card.split())
