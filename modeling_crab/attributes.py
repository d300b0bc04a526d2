"""Emotional attributes: their usual names and the one scale every manifest, model and metric uses.

Corpora rate attributes on their own scales (MSP-Podcast 1-7, IEMOCAP 1-5); the recipes map them linearly onto
`ATTRIBUTE_RANGE` with `to_attribute_scale`, so models trained on any of them predict on the same scale. Standard
library only: it travels with checkpoints (the model's regressor starts at the scale's middle) and recipes import it.
"""

from __future__ import annotations

ATTRIBUTE_NAMES: tuple[str, ...] = ("arousal", "valence", "dominance")  # the corpora's dimensional labels
ATTRIBUTE_RANGE: tuple[float, float] = (0.0, 1.0)  # the one scale of every attribute column


def to_attribute_scale(value: float, low: float, high: float) -> float:
    """A rating on a corpus's own `low`-`high` scale (MSP-Podcast 1-7, IEMOCAP 1-5) mapped linearly onto
    `ATTRIBUTE_RANGE`: `low` -> 0, `high` -> 1, the scale's midpoint -> 0.5."""
    if not high > low:
        raise ValueError(f"an attribute scale needs low < high, got {low}-{high}")
    bottom, top = ATTRIBUTE_RANGE
    return bottom + (float(value) - low) / (high - low) * (top - bottom)


def attribute_list(names: str | None) -> list[str]:
    """A comma-separated list of attribute names (train.py's `--attributes`) as a list; "none" or empty: none."""
    listed = [name.strip() for name in (names or "").split(",") if name.strip()]
    return [] if listed in ([], ["none"]) else listed


__all__ = ["ATTRIBUTE_NAMES", "ATTRIBUTE_RANGE", "attribute_list", "to_attribute_scale"]
