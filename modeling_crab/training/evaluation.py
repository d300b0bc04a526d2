"""The end of a run: every evaluated split's predictions file, and for each labelled split each output head's metrics,
figures (confusion matrix, attribute plot) and the warnings a reader of the results needs (a split predicted as one
class): `heads.OutputHead.metrics`, `evaluate`."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

from ..heads import OutputHead
from .feature_cache import CachedFeatures
from .metrics import head_predictions

logger = logging.getLogger("crab.train")


def write_predictions(trainer, predictions: list[tuple], dataset, path: Path) -> None:
    """`id,<each head's columns>` for every utterance of a split, in the dataset's order: `prediction,<score per
    class>` for a model with classes, `<attribute>...` for one with attributes (`OutputHead.csv_columns`).
    `predictions` is `metrics.head_predictions`' `(head, predictions, labels)` list."""
    columns = [column for head, _, _ in predictions for column in head.csv_columns()]
    values = [head.csv_rows(scores) for head, scores, _ in predictions]  # per head: one list per utterance
    ids = dataset.ids if isinstance(dataset, CachedFeatures) else [u.id for u in dataset.utterances]
    if trainer.is_world_process_zero():
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", *columns])
            for i, utterance_id in enumerate(ids):
                writer.writerow([utterance_id, *(value for head_rows in values for value in head_rows[i])])


def best_step(state) -> int | None:
    """The step of the checkpoint `load_best_model_at_end` kept, or None without model selection."""
    if getattr(state, "best_global_step", None):
        return state.best_global_step
    checkpoint = state.best_model_checkpoint
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else None


def evaluate_splits(
    trainer,
    datasets: dict,
    splits: dict[str, str],
    heads: Sequence[OutputHead],
    output_dir: Path,
    test_batch_size: int | None = None,
    test_has_labels: bool = True,
) -> tuple[dict[str, float], dict[str, dict[str, float]], list[str]]:
    """Predict the dev split and the test split (`datasets` and `splits` by role): `predictions_<split>.csv` for
    each, and for each labelled one every output head's metrics and figures (`heads`: `heads.heads_of(model.config)`).
    Returns the trainer's metrics (`eval_*`, `test_*`), the summary table's metrics per split name, and the warnings
    to show under the table."""
    results: dict[str, float] = {}
    per_split: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    for role in ("eval", "test"):
        if role not in datasets:
            continue
        name = splits[role]
        batch_size = test_batch_size if role == "test" else None
        prediction = trainer.predict(datasets[role], metric_key_prefix=role, batch_size=batch_size)
        predictions = head_predictions(heads, prediction.predictions, prediction.label_ids)
        write_predictions(trainer, predictions, datasets[role], output_dir / f"predictions_{name}.csv")
        if role == "test" and not test_has_labels:  # hidden labels (MSP-Podcast Test3): predictions only
            continue
        results.update(prediction.metrics)
        per_split[name] = {}
        for head, scores, labels in predictions:
            metrics = head.metrics(scores, labels)
            per_split[name].update(metrics)
            for note in head.evaluate(name, scores, labels, metrics, output_dir, trainer.is_world_process_zero()):
                notes.append(note)
                logger.warning(note)
    return results, per_split, notes
