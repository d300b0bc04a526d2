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

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score
from transformers import EvalPrediction

from ..heads import OutputHead, heads_named, unpack_predictions
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


def head_predictions(heads: Sequence[OutputHead], predictions, label_ids) -> list[tuple]:
    """`CrabTrainer.prediction_step`'s outputs, gathered -> `(head, predictions (N, K), labels)` for each head."""
    return unpack_predictions(heads, predictions, label_ids)


def build_compute_metrics(
    label_names: Sequence[str] = (), attribute_names: Sequence[str] = (), heads: Sequence[OutputHead] | None = None
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `Trainer` `compute_metrics`: each output head's metrics (`OutputHead.metrics`), of `heads`
    (`heads.heads_of(model.config)`) or of the heads named by the label set `label_names` (logits (N, C) -> argmax)
    and the attributes `attribute_names` (`attribute_metrics`)."""
    if heads is None:
        heads = heads_named(classes=label_names, attributes=attribute_names)

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        metrics = {}
        for head, predictions, labels in head_predictions(heads, prediction.predictions, prediction.label_ids):
            metrics.update(head.metrics(predictions, labels))
        return metrics

    return compute_metrics


def confusion(label_ids: Sequence[int], predicted_ids: Sequence[int], num_labels: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class, over all classes of the label set."""
    return confusion_matrix(label_ids, predicted_ids, labels=list(range(num_labels)))


def summary_table(
    results: dict[str, dict[str, float]],
    label_names: Sequence[str] = (),
    attribute_names: Sequence[str] = (),
    heads: Sequence[OutputHead] | None = None,
) -> str:
    """A plain-text table: metrics (rows, each head's `OutputHead.summary_rows`) by split (columns), from
    `{"dev": {"war": ...}, "test": {...}}`, for `heads` or the heads named by `label_names` and `attribute_names`.
    The macro-F1 over the present classes only has a row where it differs from the one over all classes."""
    if heads is None:
        heads = heads_named(classes=label_names, attributes=attribute_names)
    rows = [row for head in heads for row in head.summary_rows(results)]
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
    "head_predictions",
    "build_compute_metrics",
    "confusion",
    "summary_table",
]
