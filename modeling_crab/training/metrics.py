"""Evaluation metrics of the paper: WAR (accuracy), UAR, macro-F1, weighted-F1 and per-class recall.

Computed with scikit-learn, which works offline (`evaluate.load` fetches metric scripts from the Hub). Every metric
runs over ALL classes of the label set (`labels=range(C)`, `zero_division=0`): a class absent from the split
counts as recall 0 in UAR and F1 0 in macro-F1, it is never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score
from transformers import EvalPrediction


def classification_metrics(
    label_ids: Sequence[int] | np.ndarray, predicted_ids: Sequence[int] | np.ndarray, label_names: Sequence[str]
) -> dict[str, float]:
    """`war`, `uar`, `macro_f1`, `weighted_f1` and `recall_<class>` for every class of `label_names`."""
    y_true, y_pred = np.asarray(label_ids), np.asarray(predicted_ids)
    classes = list(range(len(label_names)))
    recalls = recall_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    metrics = {
        "war": float(accuracy_score(y_true, y_pred)),
        "uar": float(np.mean(recalls)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=classes, average="weighted", zero_division=0)),
    }
    metrics.update({f"recall_{name}": float(recall) for name, recall in zip(label_names, recalls)})
    return metrics


def build_compute_metrics(label_names: Sequence[str]) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `Trainer` `compute_metrics` over the label set `label_names` (logits (N, C) -> argmax)."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return classification_metrics(prediction.label_ids, np.argmax(logits, axis=-1), label_names)

    return compute_metrics


def confusion(label_ids: Sequence[int], predicted_ids: Sequence[int], num_labels: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class, over all classes of the label set."""
    return confusion_matrix(label_ids, predicted_ids, labels=list(range(num_labels)))


def summary_table(results: dict[str, dict[str, float]], label_names: Sequence[str]) -> str:
    """A plain-text table: metrics (rows) by split (columns), from `{"dev": {"war": ...}, "test": {...}}`."""
    rows = [("WAR", "war"), ("UAR", "uar"), ("macro-F1", "macro_f1"), ("weighted-F1", "weighted_f1")]
    rows += [(f"recall {name}", f"recall_{name}") for name in label_names]
    splits = list(results)
    table = [["metric", *splits]]
    for title, key in rows:
        table.append([title, *(f"{results[s][key]:.4f}" if key in results[s] else "-" for s in splits)])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


__all__ = ["classification_metrics", "build_compute_metrics", "confusion", "summary_table"]
