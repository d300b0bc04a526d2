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


# dev metrics: distinct markers and line styles, hollow large markers under small filled ones, so that curves that
# coincide (WAR = UAR on balanced data) stay visible
METRIC_STYLES = {
    "eval_war": {"marker": "o", "linestyle": "-", "markersize": 9, "markerfacecolor": "none"},
    "eval_uar": {"marker": "s", "linestyle": "--", "markersize": 5},
    "eval_macro_f1": {"marker": "^", "linestyle": ":", "markersize": 5},
}


def plot_training_curves(log_history: list[dict], path: str | os.PathLike, best_step: int | None = None) -> None:
    """`training_curves_figure`, saved to `path`."""
    fig = training_curves_figure(log_history, best_step)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def training_curves_figure(log_history: list[dict], best_step: int | None = None):
    """Left: training `loss`, `ce_loss`, `mlcs_loss` and `eval_loss` by step. Right: dev WAR/UAR/macro-F1. A
    vertical line marks `best_step`, the checkpoint kept at the end (`trainer.state.best_global_step`)."""
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("loss", "-"), ("ce_loss", "--"), ("mlcs_loss", ":"), ("eval_loss", "o-")):
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
        if points:
            steps, values = zip(*points)
            loss_ax.plot(steps, values, style, label=key)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("training")
    for key, style in METRIC_STYLES.items():
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry]
        if points:
            steps, values = zip(*points)
            metric_ax.plot(steps, values, label=key.removeprefix("eval_").replace("_", "-"), **style)
    metric_ax.set_xlabel("step")
    metric_ax.set_ylim(0.0, 1.0)
    metric_ax.set_title("dev")
    if best_step is not None:
        for ax in (loss_ax, metric_ax):
            ax.axvline(
                best_step, color="grey", linewidth=1, linestyle="-.", label=f"best checkpoint (step {best_step})"
            )
    for ax in (loss_ax, metric_ax):
        if ax.get_legend_handles_labels()[0]:  # an empty log draws no curve: no legend, no matplotlib warning
            ax.legend()
    fig.tight_layout()
    return fig


__all__ = ["plot_confusion_matrix", "plot_training_curves", "training_curves_figure"]
