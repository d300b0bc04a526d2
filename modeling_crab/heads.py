"""Output heads: what a Crab model predicts, each head named once, with everything the code does with its output.

    head            output (B, K)                                objective term        metrics
    ClassHead       `logits` over `config.id2label`              class-weighted CE     WAR, UAR, F1s, recall per class
    AttributeHead   `attributes`, `config.attribute_names`, 0-1  mean_a (1 - CCC_a)    CCC, Pearson r, MAE per attribute

A head class names its layer (the model attribute holding it, its state-dict prefix), its output field (also the ONNX
graph's output name), its labels' batch key, its objective term and that term's weight, its metrics and their
summary-table rows, its predictions-file columns, its evaluation figures, its part of the pipeline's answer and of
`crab predict`'s table, and its model-card entries. `heads_of(config)` gives a model's heads in `HEADS` order; the
model, the objective, the trainer, the metrics, the evaluation, the pipeline, the ONNX export, the CLI and the model
card iterate over them. A new head is a class here, appended to `HEADS`, and its layer in the model.

Travels with checkpoints (the model and the pipeline import it): torch, numpy and the standard library only. The
training-side parts (metrics with scikit-learn, figures with matplotlib) import `training` on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .attributes import ATTRIBUTE_RANGE


def _training(module: str):
    """`modeling_crab.training.<module>`, imported when a training-side method first needs it."""
    return importlib.import_module(f"{__package__}.training.{module}")


def _read(config, key: str, default=None):
    """`config.<key>` of a config object, or `config[key]` of a `config.json` dict."""
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


class OutputHead:
    """One output of a Crab model, bound to its names (classes or attributes, in output order)."""

    name: str  # the head's key in `heads_named`
    output: str  # the model's output field, and the ONNX graph's output
    layer: str  # the model attribute holding its layer: its state-dict prefix
    label_key: str  # its labels: a `forward` argument and a batch key
    loss_name: str  # its objective term: a `CrabClassifierOutput` field, logged beside `loss`
    answer_key: str  # its part of the pipeline's answer (`{"labels": ..., "attributes": ...}`)
    window_key: str  # its part of a window of the answer, and of `crab predict --json`
    scores_key: str  # its window scores (`scores`) between the pipeline's stages
    card_task: tuple[str, str]  # the model card's model-index (task type, task name) of its results
    blank_label: float  # the label of a row without one
    cli_header: str  # the heading of its column in `crab predict`'s table
    headline: tuple[str, str]  # its one dev metric: (metric key, name), what a model is compared and selected by
    initial_bias: float | None = None  # the output layer's starting bias (None: the model's initialisation)

    def __init__(self, names: Sequence[str]):
        self.names = list(names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.names})"

    @classmethod
    def names_in(cls, config) -> list[str]:
        """The head's names in a config object or a `config.json` dict; [] where the model has no such head."""
        raise NotImplementedError

    @classmethod
    def of(cls, config) -> OutputHead | None:
        names = cls.names_in(config)
        return cls(names) if names else None

    # -- the model ------------------------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        """Outputs of its layer."""
        return len(self.names)

    def loss(self, prediction: torch.Tensor, labels: torch.Tensor, config) -> torch.Tensor | None:
        """Its objective term, unweighted, in fp32; None where the batch gives it nothing to learn from."""
        raise NotImplementedError

    @staticmethod
    def loss_weight(config) -> float:
        return 1.0

    def contrast_labels(self, labels: torch.Tensor | None, config) -> torch.Tensor | None:
        """The MLCS positives' labels (B,) when this is the model's first head; None: no MLCS term."""
        return None

    def blank_labels(self, prediction: torch.Tensor) -> torch.Tensor:
        """Labels for a batch without any, shaped as this head's labels."""
        raise NotImplementedError

    # -- predictions ----------------------------------------------------------------------------------------------
    def scores(self, prediction: torch.Tensor) -> torch.Tensor:
        """(B, K) outputs -> what a window answers, float32: the class probabilities, the attributes."""
        return prediction.float()

    def answer(self, scores: np.ndarray, top_k: int | None):
        """(K,) scores -> this head's part of one answer."""
        raise NotImplementedError

    @staticmethod
    def empty_answer():
        """Its part of the answer of a model without this head; None: no part."""
        return None

    @staticmethod
    def cli_text(part, top_only: bool = False) -> str | None:
        """Its part of `crab predict`'s line for one file (or window, `top_only`); None where it has nothing."""
        raise NotImplementedError

    def columns(self, part) -> dict[str, Any]:
        """Its part of one answer (or window) -> its columns of a `crab annotate` row, named as in the predictions
        files (`csv_columns`); `None` (a recording without an answer) -> the same columns, empty."""
        raise NotImplementedError

    # -- training and evaluation ----------------------------------------------------------------------------------
    def metrics(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def summary_rows(self, results: Mapping[str, Mapping[str, float]]) -> list[tuple[str, str]]:
        """(title, metric key) rows of the summary table, given every split's metrics."""
        raise NotImplementedError

    def csv_columns(self) -> list[str]:
        raise NotImplementedError

    def csv_rows(self, predictions: np.ndarray) -> list[list]:
        """(N, K) predictions -> each row's values under `csv_columns`."""
        raise NotImplementedError

    def evaluate(
        self, split: str, predictions: np.ndarray, labels: np.ndarray, metrics: dict, output_dir, write: bool
    ) -> list[str]:
        """A labelled split's figures (written when `write`) and the warnings a reader of its results needs."""
        return []

    # -- the model card -------------------------------------------------------------------------------------------
    def model_index(self, results: Mapping[str, float], prefix: str) -> list[dict]:
        """`EvalResult` fields (task, metric, value, ...) of one split's results (`<prefix>_<metric>` keys)."""
        raise NotImplementedError

    @staticmethod
    def results_table(entries: list) -> str | None:
        """The card's table of this head's `EvalResult` entries (all its entries, every split)."""
        raise NotImplementedError

    def card_paragraph(self, heads: Sequence[OutputHead]) -> str:
        """What the card says this head answers."""
        raise NotImplementedError

    # what the card, the Space and the snippets say of it, and of a model without it
    card_targets: str  # what its training data gives it ("emotion labels")
    card_answered: str  # its part of the pipeline's answer, described
    card_averaged: str  # what the pipeline averages over a long recording's windows
    card_absent: str = ""  # what the card says of a model without this head ("": nothing)
    card_limits: str = ""  # what the card's limitations add for a model with it
    options: tuple[str, ...] = ()  # the pipeline's (and the Endpoints handler's) parameters that act on it alone

    @staticmethod
    def metrics_note(names: set[str]) -> str | None:
        """What its metrics in the results tables (their display `names`) are; None: nothing to say."""
        raise NotImplementedError

    def example_scores(self) -> np.ndarray:
        """Illustrative window scores (`scores`) for the card's example answers."""
        raise NotImplementedError

    def example_options(self) -> dict[str, Any]:
        """Values of its `options` for the card's example request."""
        return {}

    def mlcs_off(self, config) -> str | None:
        """Why this head, where it supplies the MLCS positives (a model's first), supplies none; None: it does."""
        return None

    def pipeline_note(self, heads: Sequence[OutputHead]) -> str | None:
        """Its line of the card's pipeline notes, if any."""
        return None

    def auto_lines(self) -> list[str]:
        """The Auto-class snippet's lines that read its part from `outputs`, into a variable named `answer_key`."""
        raise NotImplementedError

    def space_parts(self) -> list[str]:
        """What the Space shows of it."""
        raise NotImplementedError


# the classes' metrics: summary-table rows, model-index (type, display name) and their `metric_args`
CLASS_SUMMARY = (("WAR", "war"), ("UAR", "uar"), ("macro-F1", "macro_f1"))
CLASS_CARD_METRICS = {
    "war": ("accuracy", "WAR (accuracy)"),
    "uar": ("recall", "UAR (unweighted average recall)"),
    "macro_f1": ("f1_macro", "Macro F1"),  # distinct types: a leaderboard must not take one F1 for the other
    "weighted_f1": ("f1_weighted", "Weighted F1"),
}
CLASS_METRIC_NOTES = {  # the card's words for the classes' metrics, by their display names
    "WAR (accuracy)": "WAR is accuracy",
    "UAR (unweighted average recall)": "UAR the recall averaged over the classes",
    "Macro F1": "macro F1 the F1 averaged over the classes",
    "Weighted F1": "weighted F1 the F1 averaged with each class weighted by its share of the clips",
}
CLASS_METRIC_ARGS = {"macro_f1": {"average": "macro"}, "weighted_f1": {"average": "weighted"}}
CLASSIFICATION_TASK = ("audio-classification", "Speech emotion recognition")  # model-index (task type, task name)


class ClassHead(OutputHead):
    """The classifier over `config.id2label`: logits (B, C), class-weighted cross-entropy (`config.class_weights`,
    label smoothing `config.label_smoothing`), the paper's metrics, ranked `{"label", "score"}` answers."""

    name = "classes"
    output = "logits"
    layer = "classifier"
    label_key = "labels"
    loss_name = "ce_loss"
    answer_key = "labels"
    window_key = "scores"
    scores_key = "probabilities"
    card_task = CLASSIFICATION_TASK
    blank_label = -100
    cli_header = f"{'emotion':<10}  score  others"
    headline = ("uar", "UAR")

    @classmethod
    def names_in(cls, config) -> list[str]:
        id2label = _read(config, "id2label") or {}
        return [id2label[key] for key in sorted(id2label, key=int)]

    def loss(self, prediction, labels, config):
        weights = _read(config, "class_weights")
        weights = None if weights is None else prediction.new_tensor(weights, dtype=torch.float32)
        return F.cross_entropy(prediction.float(), labels, weight=weights, label_smoothing=config.label_smoothing)

    def contrast_labels(self, labels, config):
        return labels

    def blank_labels(self, prediction):
        return torch.full((len(prediction),), self.blank_label, dtype=torch.long, device=prediction.device)

    def scores(self, prediction):
        return prediction.float().softmax(dim=-1)

    def answer(self, scores, top_k):
        order = np.argsort(-scores, kind="stable")[: top_k or None]
        return [{"label": self.names[int(i)], "score": float(scores[i])} for i in order]

    @staticmethod
    def empty_answer():
        return []  # `"labels": []` in the answer of a model without classes

    @staticmethod
    def cli_text(part, top_only=False):
        if not part:
            return None
        best, *others = part
        if top_only:
            return f"{best['label']} {best['score']:.3f}"
        rest = "  ".join(f"{s['label']} {s['score']:.3f}" for s in others)
        return f"{best['label']:<10}  {best['score']:.3f}  {rest}".rstrip()

    def columns(self, part):
        """`prediction` (the best class), then every class's probability in the config's order (None: no answer)."""
        scores = {entry["label"]: entry["score"] for entry in part or []}
        return {"prediction": part[0]["label"] if part else None, **{name: scores.get(name) for name in self.names}}

    def metrics(self, predictions, labels):
        return _training("metrics").classification_metrics(labels, np.argmax(predictions, axis=-1), self.names)

    def summary_rows(self, results):
        rows = list(CLASS_SUMMARY)
        if any("macro_f1_present" in s and s["macro_f1_present"] != s["macro_f1"] for s in results.values()):
            rows.append(("macro-F1, present classes", "macro_f1_present"))
        rows.append(("weighted-F1", "weighted_f1"))
        return rows + [(f"recall {name}", f"recall_{name}") for name in self.names]

    def csv_columns(self):
        return ["prediction", *self.names]

    def csv_rows(self, predictions):
        rows = torch.from_numpy(predictions).float().softmax(dim=-1).tolist()
        return [[self.names[max(range(len(row)), key=row.__getitem__)], *row] for row in rows]

    def evaluate(self, split, predictions, labels, metrics, output_dir, write):
        predicted = predictions.argmax(axis=-1)
        notes = []
        classes = set(predicted.tolist())
        if len(classes) == 1 and len(self.names) > 1 and len(predicted) > 1:
            notes.append(
                f"warning: every {split} clip is predicted '{self.names[classes.pop()]}': the model learned the class "
                "prior only. Check the learning rates (--tiny models need the tiny preset's), the epochs and the labels"
            )
        if write:
            matrix = _training("metrics").confusion(labels, predicted, len(self.names))
            _training("plots").plot_confusion_matrix(
                matrix, self.names, output_dir / f"confusion_matrix_{split}.png", f"{split} split"
            )
        return notes

    def model_index(self, results, prefix):
        return [
            {
                "task": self.card_task,
                "metric": metric,
                "value": results[f"{prefix}_{suffix}"],
                "metric_args": CLASS_METRIC_ARGS.get(suffix),
            }
            for suffix, metric in CLASS_CARD_METRICS.items()
            if results.get(f"{prefix}_{suffix}") is not None
        ]

    @staticmethod
    def results_table(entries):
        """A split x metric table."""
        splits = list(dict.fromkeys(e.dataset_split for e in entries))
        names = list(dict.fromkeys(e.metric_name for e in entries))
        value = {(e.dataset_split, e.metric_name): e.metric_value for e in entries}
        rows = ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for split in splits:
            rows.append(f"| {split} | " + " | ".join(f"{value.get((split, n), '-')}" for n in names) + " |")
        return "\n".join(rows)

    def card_paragraph(self, heads):
        return f"Labels: {', '.join(f'`{label}`' for label in self.names)}."

    card_targets = "emotion labels"
    card_answered = "every label with its probability, best first"
    card_averaged = "probabilities"
    card_absent = "this model has no classes"
    card_limits = ', and on emotions outside its label set, which it cannot answer "none of these" to'
    options = ("top_k",)

    @staticmethod
    def metrics_note(names):
        said = [text for name, text in CLASS_METRIC_NOTES.items() if name in names]
        return ", ".join(said) + "." if said else None

    def example_scores(self):
        """Probabilities summing to 1 and falling in label order (0.71 for the first)."""
        rest = 0.5 ** np.arange(1, self.width)
        rest = (0.29 * rest / rest.sum()).round(2) if self.width > 1 else rest
        return np.concatenate([[1.0 - rest.sum()], rest]).round(2)

    def example_options(self):
        return {"top_k": min(3, self.width)}

    def pipeline_note(self, heads):
        others = " (the other outputs are always answered whole)" if len(heads) > 1 else ""
        return f"- **Fewer labels**: `top_k=2` keeps the best two labels{others}."

    def auto_lines(self):
        return [
            "probabilities = outputs.logits.softmax(-1)[0]  # logits: (batch, classes)",
            f"{self.answer_key} = {{model.config.id2label[i]: round(p.item(), 3) for i, p in enumerate(probabilities)}}",
        ]

    def space_parts(self):
        return [f"the probability of each of its labels ({words(self.names)})"]


# the attributes' metrics: `<metric>_<attribute>` keys -> model-index (type, display name); `ccc_mean` averages the CCCs
ATTRIBUTE_TASK = ("emotion-attribute-regression", "Speech emotion attribute regression")
ATTRIBUTE_CARD_METRICS = {"ccc": ("ccc", "CCC"), "pearson": ("pearsonr", "Pearson r"), "mae": ("mae", "MAE")}
ATTRIBUTE_SUMMARY = {"ccc": "CCC", "pearson": "Pearson", "mae": "MAE"}
ATTRIBUTE_MEAN = "mean"  # `<split>_ccc_mean`: the CCC averaged over the attributes
ATTRIBUTE_CARD_SECTION = (
    "Emotional attributes: {names}, each predicted on a 0-1 scale (0 = lowest, 1 = highest). Corpus ratings map "
    "onto it linearly: MSP-Podcast's 1-7 ratings as (x - 1) / 6, IEMOCAP's 1-5 ratings as (x - 1) / 4 (a prediction "
    "p reads back as 1 + 6p or 1 + 4p)."
)


class AttributeHead(OutputHead):
    """The regressor of `config.attribute_names` on the 0-1 scale (`attributes.ATTRIBUTE_RANGE`): attributes (B, A),
    `config.attribute_loss_weight` x mean_a (1 - CCC_a) over each attribute's labelled rows (NaN: none), the MSP-Podcast
    challenges' metrics, `{name: value}` answers. In an attributes-only model MLCS positives share the bins of every
    attribute (`config.attribute_contrast_bins`)."""

    name = "attributes"
    output = "attributes"
    layer = "regressor"
    label_key = "attribute_labels"
    loss_name = "attribute_loss"
    answer_key = "attributes"
    window_key = "attributes"
    scores_key = "attributes"
    card_task = ATTRIBUTE_TASK
    blank_label = float("nan")
    initial_bias = sum(ATTRIBUTE_RANGE) / 2  # start at the scale's middle
    cli_header = "attributes"
    headline = ("ccc_mean", "mean CCC")

    @classmethod
    def names_in(cls, config) -> list[str]:
        return list(_read(config, "attribute_names") or [])

    def loss(self, prediction, labels, config):
        from .losses import concordance_loss

        return concordance_loss(prediction.float(), labels.float())

    @staticmethod
    def loss_weight(config) -> float:
        return config.attribute_loss_weight

    def contrast_labels(self, labels, config):
        if labels is None or config.attribute_contrast_bins <= 0:
            return None
        from .losses import attribute_bins

        return attribute_bins(labels, config.attribute_contrast_bins)

    def blank_labels(self, prediction):
        return torch.full_like(prediction.float(), self.blank_label)

    def answer(self, scores, top_k):
        return {name: float(value) for name, value in zip(self.names, scores)}

    @staticmethod
    def cli_text(part, top_only=False):
        if part is None:
            return None
        return "  ".join(f"{name} {value:.3f}" for name, value in part.items())

    def columns(self, part):
        return {name: (part or {}).get(name) for name in self.names}

    def metrics(self, predictions, labels):
        return _training("metrics").attribute_metrics(labels, predictions, self.names)

    def summary_rows(self, results):
        rows = [
            (f"{title} {name}", f"{key}_{name}") for name in self.names for key, title in ATTRIBUTE_SUMMARY.items()
        ]
        return rows + ([("CCC mean", "ccc_mean")] if len(self.names) > 1 else [])

    def csv_columns(self):
        return list(self.names)

    def csv_rows(self, predictions):
        return predictions.tolist()

    def evaluate(self, split, predictions, labels, metrics, output_dir, write):
        if write:
            _training("plots").plot_attributes(
                labels, predictions, self.names, output_dir / f"attributes_{split}.png", f"{split} split", metrics
            )
        return []

    def model_index(self, results, prefix):
        entries = [
            {
                "task": self.card_task,
                "metric": (metric_type, f"{title} {name}"),
                "value": results[f"{prefix}_{suffix}_{name}"],
                "metric_config": name,
            }
            for name in self.names
            for suffix, (metric_type, title) in ATTRIBUTE_CARD_METRICS.items()
            if results.get(f"{prefix}_{suffix}_{name}") is not None
        ]
        mean = results.get(f"{prefix}_ccc_{ATTRIBUTE_MEAN}")
        if mean is not None:
            metric = (ATTRIBUTE_CARD_METRICS["ccc"][0], "CCC (mean over attributes)")
            entries.append({"task": self.card_task, "metric": metric, "value": mean, "metric_config": ATTRIBUTE_MEAN})
        return entries

    @staticmethod
    def results_table(entries):
        """A (split, attribute) x (CCC, Pearson r, MAE) table."""
        names = [name for _, name in ATTRIBUTE_CARD_METRICS.values()]
        kind = {metric_type: name for metric_type, name in ATTRIBUTE_CARD_METRICS.values()}
        value = {(e.dataset_split, e.metric_config, kind[e.metric_type]): e.metric_value for e in entries}
        rows = ["| split | attribute | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        for split, attribute in dict.fromkeys((e.dataset_split, e.metric_config) for e in entries):
            cells = " | ".join(f"{value.get((split, attribute, n), '-')}" for n in names)
            rows.append(f"| {split} | {attribute} | {cells} |")
        return "\n".join(rows)

    def card_paragraph(self, heads):
        return ATTRIBUTE_CARD_SECTION.format(names=", ".join(f"`{name}`" for name in self.names))

    card_targets = "attribute ratings"
    card_answered = "every attribute, in the order above"
    card_averaged = "attributes"

    @staticmethod
    def metrics_note(names):
        return (
            "CCC is the concordance correlation coefficient of predicted and rated attributes, Pearson r their "
            "correlation and MAE their mean absolute difference on the 0-1 scale; `mean` is the CCC averaged over the "
            "attributes."
        )

    def example_scores(self):
        """0.7, 0.6, 0.5, ..."""
        return np.array([0.7 - 0.1 * (i % 5) for i in range(self.width)]).round(2)

    def mlcs_off(self, config):
        if _read(config, "attribute_contrast_bins", 3) <= 0:
            return "`attribute_contrast_bins: 0`, with no classes to contrast"
        return None

    def auto_lines(self):
        return [
            "# attributes: (batch, attributes) on the 0-1 scale, in config.attribute_names order",
            f"{self.answer_key} = dict(zip(model.config.attribute_names, outputs.attributes[0].tolist()))",
        ]

    def space_parts(self):
        parts = [f"its ratings of {words(self.names)} on the 0-1 scale"]
        if {"valence", "arousal"} <= set(self.names):
            parts.append("the recording's point on the valence-arousal plane")
        return parts


# Every head a Crab model can have, in output order: the order of the trainer's predictions, the predictions file's
# columns, the answer's parts, the graph's outputs and the card's tables. The first of a model's heads supplies the
# MLCS positives.
HEADS: list[type[OutputHead]] = [ClassHead, AttributeHead]


def words(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c': names in the card's and the Space's sentences."""
    return " and ".join(filter(None, [", ".join(items[:-1]), items[-1]])) if items else ""


def heads_of(config) -> list[OutputHead]:
    """The heads of a model with this config (a config object or a `config.json` dict), in `HEADS` order."""
    return [head for head in (kind.of(config) for kind in HEADS) if head is not None]


def heads_named(**names: Sequence[str]) -> list[OutputHead]:
    """Heads from their names by head: `heads_named(classes=["angry", ...], attributes=["arousal", ...])`; a head
    without names is left out."""
    unknown = set(names) - {kind.name for kind in HEADS}
    if unknown:
        raise ValueError(f"no output head named {sorted(unknown)}; the heads are {[kind.name for kind in HEADS]}")
    return [kind(names[kind.name]) for kind in HEADS if names.get(kind.name)]


def pack_predictions(heads: Sequence[OutputHead], outputs, inputs: Mapping[str, torch.Tensor]):
    """`CrabTrainer.prediction_step`'s predictions and labels from a model's `outputs` and its batch `inputs`: a model
    with only the first of `HEADS` (the classes) gives its logits (B, C) and labels (B,) as they are (None without
    labels); any other gives a tuple of one entry per head of `HEADS`, in its order, predictions and labels alike: a
    head the model lacks gives (B, 0) predictions, a label the batch lacks the head's blank (-100, NaN)."""
    if [type(head) for head in heads] == HEADS[:1]:
        return getattr(outputs, HEADS[0].output).detach(), inputs.get(HEADS[0].label_key)
    present = {type(head) for head in heads}
    reference = getattr(outputs, heads[0].output)
    predictions, labels = [], []
    for kind in HEADS:
        prediction = getattr(outputs, kind.output, None) if kind in present else None
        prediction = reference.new_zeros((len(reference), 0)) if prediction is None else prediction.detach()
        prediction = prediction.float()
        predictions.append(prediction)
        label = inputs.get(kind.label_key) if kind in present else None
        labels.append(kind([]).blank_labels(prediction) if label is None else label)
    return tuple(predictions), tuple(labels)


def unpack_predictions(heads: Sequence[OutputHead], predictions, label_ids) -> list[tuple]:
    """`pack_predictions`' layout, gathered over a split (numpy) -> `(head, predictions (N, K), labels)` for each of
    `heads`."""
    if not isinstance(predictions, (tuple, list)):  # a model with the first head only
        return [(heads[0], predictions, label_ids)]
    label_ids = (None,) * len(predictions) if label_ids is None else label_ids
    by_kind = dict(zip(HEADS, zip(predictions, label_ids)))
    return [(head, *by_kind[type(head)]) for head in heads]


def answer(heads: Sequence[OutputHead], scores: Mapping[str, np.ndarray], top_k: int | None = None):
    """One input's pipeline answer from each head's (K,) `scores` (by `scores_key`): the first head's part alone when
    a model has only the first of `HEADS` (the classes: the ranked labels); else `{answer_key: part}` for every head,
    the `empty_answer` of a head the model lacks where it has one (`"labels": []`)."""
    parts = _parts(heads, scores, top_k, "answer_key")
    if [type(head) for head in heads] == HEADS[:1]:
        return parts[HEADS[0].answer_key]
    return parts


def answer_parts(result) -> dict:
    """A pipeline answer (`answer`) -> `{answer_key: part}` for every head it holds: the ranked list of a
    classes-only model is the first head's part."""
    return result if isinstance(result, dict) else {HEADS[0].answer_key: result}


def window_answer(heads: Sequence[OutputHead], scores: Mapping[str, np.ndarray], top_k: int | None = None) -> dict:
    """A window's parts of the answer: `{window_key: part}` (`"scores"`: the ranked labels, `[]` without classes;
    `"attributes"` where the model has them)."""
    return _parts(heads, scores, top_k, "window_key")


def _parts(heads, scores, top_k, key: str) -> dict:
    by_kind = {type(head): head for head in heads}
    parts = {}
    for kind in HEADS:
        part = by_kind[kind].answer(scores[kind.scores_key], top_k) if kind in by_kind else kind.empty_answer()
        if part is not None:
            parts[getattr(kind, key)] = part
    return parts


__all__ = [
    "OutputHead",
    "ClassHead",
    "AttributeHead",
    "HEADS",
    "heads_of",
    "heads_named",
    "pack_predictions",
    "unpack_predictions",
    "answer",
    "answer_parts",
    "window_answer",
]
