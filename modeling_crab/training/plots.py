"""Figures written at the end of training: the confusion matrix, the training curves and, for a model with
emotional attributes, predictions against labels (matplotlib, Agg)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..losses import objective_terms  # noqa: E402


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
TERM_STYLES = ("--", ":", "-.")  # the objective's terms, in `losses.objective_terms` order
ATTRIBUTE_MARKERS = ("D", "v", "P", "X", "*")  # the attributes' CCC curves, in `eval_ccc_<name>` order


def plot_training_curves(log_history: list[dict], path: str | os.PathLike, best_step: int | None = None) -> None:
    """`training_curves_figure`, saved to `path`."""
    fig = training_curves_figure(log_history, best_step)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def training_curves_figure(log_history: list[dict], best_step: int | None = None):
    """Left: training `loss`, its terms (`ce_loss`, `mlcs_loss`, `attribute_loss`, ...) and `eval_loss` by step. Right: dev
    WAR/UAR/macro-F1 and each attribute's CCC. A vertical line marks `best_step`, the checkpoint kept at the end
    (`trainer.state.best_global_step`)."""
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    terms = zip(objective_terms(), itertools.cycle(TERM_STYLES))  # ce_loss, mlcs_loss, each other head's term
    losses = (("loss", "-"), *terms, ("eval_loss", "o-"))
    for key, style in losses:
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
        if points:
            steps, values = zip(*points)
            loss_ax.plot(steps, values, style, label=key)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("training")
    ccc_keys = sorted(
        {key for entry in log_history for key in entry if key.startswith("eval_ccc_")} - {"eval_ccc_mean"}
    )
    styles = {**METRIC_STYLES}
    for key, marker in zip(ccc_keys, ATTRIBUTE_MARKERS):
        styles[key] = {"marker": marker, "linestyle": "-", "markersize": 5}
    lowest = 0.0
    for key, style in styles.items():
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry]
        if points:
            steps, values = zip(*points)
            lowest = min(lowest, *values)
            metric_ax.plot(steps, values, label=key.removeprefix("eval_").replace("_", " "), **style)
    metric_ax.set_xlabel("step")
    metric_ax.set_ylim(max(-1.0, lowest - 0.05) if lowest < 0 else 0.0, 1.0)  # CCC can be negative
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


def plot_attributes(
    targets: np.ndarray,
    predictions: np.ndarray,
    attribute_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "attributes",
    metrics: dict[str, float] | None = None,
) -> None:
    """(N, A) predicted attributes against their labels: the valence-arousal plane when the model has both (each
    clip's label and its prediction, joined by a line), then one predicted-vs-label panel per attribute with the
    identity line and its CCC from `metrics` (`metrics.attribute_metrics`' `ccc_<name>`). Rows without a label (NaN)
    are left out."""
    targets, predictions = np.asarray(targets, dtype=float), np.asarray(predictions, dtype=float)
    names = list(attribute_names)
    plane = "valence" in names and "arousal" in names
    panels = len(names) + plane
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.8), squeeze=False)
    axes = list(axes[0])
    if plane:
        v, a = names.index("valence"), names.index("arousal")
        rows = ~np.isnan(targets[:, [v, a]]).any(axis=1)
        ax = axes.pop(0)
        for (tv, ta), (pv, pa) in zip(targets[rows][:, [v, a]], predictions[rows][:, [v, a]]):
            ax.plot([tv, pv], [ta, pa], color="lightgrey", linewidth=0.6, zorder=1)
        ax.scatter(targets[rows, v], targets[rows, a], s=12, color="grey", label="label", zorder=2)
        ax.scatter(predictions[rows, v], predictions[rows, a], s=12, color="tab:red", label="prediction", zorder=3)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="valence", ylabel="arousal", title=f"{title}: valence-arousal")
        ax.legend(fontsize=7, loc="lower right")
    for i, (ax, name) in enumerate(zip(axes, names)):
        rows = ~np.isnan(targets[:, i])
        y, x = targets[rows, i], predictions[rows, i]
        ax.plot([0, 1], [0, 1], color="lightgrey", linewidth=1)
        ax.scatter(y, x, s=10, color="tab:blue")
        ccc = (metrics or {}).get(f"ccc_{name}")
        heading = name if ccc is None else f"{name} (CCC {ccc:.2f})"
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"{name} label", ylabel="prediction", title=heading)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["plot_confusion_matrix", "plot_training_curves", "training_curves_figure", "plot_attributes"]
