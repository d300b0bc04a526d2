"""Figures written at the end of training: the confusion matrix and the training curves (matplotlib, Agg)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion_matrix(
    matrix: np.ndarray, label_names: Sequence[str], path: str | os.PathLike, title: str = "Confusion matrix"
) -> None:
    """Row-normalised (C, C) confusion matrix (rows: true class), each cell annotated with its count."""
    matrix = np.asarray(matrix)
    row_totals = matrix.sum(axis=1, keepdims=True)
    recall = np.divide(matrix, row_totals, out=np.zeros(matrix.shape, dtype=float), where=row_totals > 0)
    size = 1.6 + 0.7 * len(label_names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(label_names)):
        for j in range(len(label_names)):
            color = "white" if recall[i, j] > 0.5 else "black"
            ax.text(j, i, f"{matrix[i, j]}\n{recall[i, j]:.2f}", ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="recall")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_curves(log_history: list[dict], path: str | os.PathLike) -> None:
    """Left: training `loss`, `ce_loss`, `mlcs_loss` and `eval_loss` by step. Right: dev WAR/UAR/macro-F1."""
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("loss", "-"), ("ce_loss", "--"), ("mlcs_loss", ":"), ("eval_loss", "o-")):
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
        if points:
            steps, values = zip(*points)
            loss_ax.plot(steps, values, style, label=key)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("training")
    loss_ax.legend()
    for key in ("eval_war", "eval_uar", "eval_macro_f1"):
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry]
        if points:
            steps, values = zip(*points)
            metric_ax.plot(steps, values, "o-", label=key.removeprefix("eval_"))
    metric_ax.set_xlabel("step")
    metric_ax.set_ylim(0.0, 1.0)
    metric_ax.set_title("dev")
    metric_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["plot_confusion_matrix", "plot_training_curves"]
