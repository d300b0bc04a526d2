"""Evaluation metrics of the paper: WAR (accuracy), UAR, macro-F1, weighted-F1 and per-class recall; for emotional
attributes, those of the MSP-Podcast challenges: the concordance correlation coefficient (CCC, the challenges'
score), Pearson's correlation and the mean absolute error, per attribute, on the 0-1 scale.

Computed with scikit-learn, which works offline (`evaluate.load` fetches metric scripts from the Hub). Every metric
runs over ALL classes of the label set (`labels=range(C)`, `zero_division=0`): a class absent from the split
counts as recall 0 in UAR and F1 0 in macro-F1, it is never dropped. One exception, beside them: `macro_f1_present`
is sklearn's default `f1_score(average="macro")`, over the classes present in the split's labels or predictions, by
which the released code keeps its best dev epoch (`--recipe release` selects by it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score
from transformers import EvalPrediction

from ..losses import concordance_correlation


def classification_metrics(
    label_ids: Sequence[int] | np.ndarray, predicted_ids: Sequence[int] | np.ndarray, label_names: Sequence[str]
) -> dict[str, float]:
    """`war`, `uar`, `macro_f1`, `weighted_f1` and `recall_<class>` for every class of `label_names`, and
    `macro_f1_present`: the macro-F1 over the classes present in the labels or the predictions only (sklearn's
    default), which differs from `macro_f1` where a class is neither."""
    y_true, y_pred = np.asarray(label_ids), np.asarray(predicted_ids)
    classes = list(range(len(label_names)))
    present = [c for c in classes if c in y_true or c in y_pred]
    recalls = recall_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    metrics = {
        "war": float(accuracy_score(y_true, y_pred)),
        "uar": float(np.mean(recalls)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "macro_f1_present": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=classes, average="weighted", zero_division=0)),
    }
    metrics.update({f"recall_{name}": float(recall) for name, recall in zip(label_names, recalls)})
    return metrics


def attribute_metrics(
    targets: np.ndarray, predictions: np.ndarray, attribute_names: Sequence[str]
) -> dict[str, float]:
    """`ccc_<a>`, `pearson_<a>` and `mae_<a>` for every attribute of (N, A) `targets` and `predictions`, over the rows
    that have the attribute (NaN targets are left out), and `ccc_mean` over the attributes. An attribute with fewer
    than two labelled rows gets no metrics. Pearson's r of a constant prediction is reported as 0."""
    targets, predictions = np.asarray(targets, dtype=np.float64), np.asarray(predictions, dtype=np.float64)
    metrics: dict[str, float] = {}
    cccs = []
    for a, name in enumerate(attribute_names):
        labelled = ~np.isnan(targets[:, a])
        if labelled.sum() < 2:
            continue
        y, x = targets[labelled, a], predictions[labelled, a]
        ccc = float(concordance_correlation(torch.from_numpy(x), torch.from_numpy(y)))
        constant = np.ptp(x) == 0 or np.ptp(y) == 0
        metrics[f"ccc_{name}"] = ccc
        metrics[f"pearson_{name}"] = 0.0 if constant else float(np.corrcoef(x, y)[0, 1])
        metrics[f"mae_{name}"] = float(np.abs(x - y).mean())
        cccs.append(ccc)
    if cccs:
        metrics["ccc_mean"] = float(np.mean(cccs))
    return metrics


class SplitPredictions(NamedTuple):
    """A `Trainer` prediction taken apart: class logits (N, C) and labels (N,) (-100: none), attributes (N, A) and
    their labels (N, A) (NaN: none); the attribute parts are None for a categories-only model, the class parts
    have C = 0 for an attributes-only one."""

    logits: np.ndarray
    labels: np.ndarray | None
    attributes: np.ndarray | None = None
    attribute_labels: np.ndarray | None = None


def split_predictions(predictions, label_ids) -> SplitPredictions:
    """`CrabTrainer.prediction_step`'s outputs, gathered: logits alone (categories only) or `(logits, attributes)`,
    with `labels` or `(labels, attribute_labels)`."""
    if not isinstance(predictions, (tuple, list)):
        return SplitPredictions(predictions, label_ids)
    labels, attribute_labels = label_ids if label_ids is not None else (None, None)
    return SplitPredictions(predictions[0], labels, predictions[1], attribute_labels)


def build_compute_metrics(
    label_names: Sequence[str], attribute_names: Sequence[str] = ()
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `Trainer` `compute_metrics` over the label set `label_names` (logits (N, C) -> argmax) and the attributes
    `attribute_names` (`attribute_metrics`)."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        split = split_predictions(prediction.predictions, prediction.label_ids)
        metrics = {}
        if label_names:
            metrics.update(classification_metrics(split.labels, np.argmax(split.logits, axis=-1), label_names))
        if attribute_names:
            metrics.update(attribute_metrics(split.attribute_labels, split.attributes, attribute_names))
        return metrics

    return compute_metrics


def confusion(label_ids: Sequence[int], predicted_ids: Sequence[int], num_labels: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class, over all classes of the label set."""
    return confusion_matrix(label_ids, predicted_ids, labels=list(range(num_labels)))


def summary_table(
    results: dict[str, dict[str, float]], label_names: Sequence[str], attribute_names: Sequence[str] = ()
) -> str:
    """A plain-text table: metrics (rows) by split (columns), from `{"dev": {"war": ...}, "test": {...}}`. The
    macro-F1 over the present classes only has a row where it differs from the one over all classes."""
    rows = []
    if label_names:
        rows += [("WAR", "war"), ("UAR", "uar"), ("macro-F1", "macro_f1")]
        if any("macro_f1_present" in s and s["macro_f1_present"] != s["macro_f1"] for s in results.values()):
            rows.append(("macro-F1, present classes", "macro_f1_present"))
        rows.append(("weighted-F1", "weighted_f1"))
        rows += [(f"recall {name}", f"recall_{name}") for name in label_names]
    for name in attribute_names:
        rows += [
            (f"CCC {name}", f"ccc_{name}"),
            (f"Pearson {name}", f"pearson_{name}"),
            (f"MAE {name}", f"mae_{name}"),
        ]
    if len(attribute_names) > 1:
        rows.append(("CCC mean", "ccc_mean"))
    splits = list(results)
    table = [["metric", *splits]]
    for title, key in rows:
        table.append([title, *(f"{results[s][key]:.4f}" if key in results[s] else "-" for s in splits)])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


__all__ = [
    "classification_metrics",
    "attribute_metrics",
    "SplitPredictions",
    "split_predictions",
    "build_compute_metrics",
    "confusion",
    "summary_table",
]
