"""Shape buckets: a few padded lengths, so that batches of any length come in a handful of shapes.

A compiled model with static shapes (`torch.compile(dynamic=False)`, CUDA graphs through `mode="reduce-overhead"`)
needs one graph per input shape, and padding each batch to its longest clip makes almost every batch a new shape.
Bucketing pads a batch instead to the smallest of K lengths that holds its longest clip (and its transcripts to the
smallest of K token lengths that holds the longest transcript). The extra padding is masked like any other
(`CrabConfig.mask_padding=True`: the same outputs and gradients, to float rounding), so it costs compute only.

- `choose_buckets(lengths, count)`: at most `count` lengths covering every length, with the least padding (an exact
  dynamic programme over the distinct lengths);
- `bucket_length(longest, buckets)`: the length a batch whose longest item is `longest` is padded to;
- `ShapeBuckets`: a model's audio buckets (16 kHz samples) and text buckets (tokens), as `CrabProcessor` takes them
  per call (`processor(..., pad_to_buckets=...)`) and saves them (`processor.shape_buckets`, set by
  `train.py --shape_buckets K`);
- `padding_overhead(batches, buckets)`: what bucketing costs over some batches, against padding each to its longest.

Travels with checkpoints (the processor imports it): numpy and the standard library only.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# The steps bucket lengths are chosen on: 20 ms of 16 kHz audio (one WavLM frame: a finer step only lengthens the
# speech CNN's input, never its output by a frame), 8 tokens (the multiple tensor cores like).
AUDIO_MULTIPLE = 320
TEXT_MULTIPLE = 8
# More distinct lengths than this (whole recordings, uncropped) are bucketed on this many of them, spread over the
# quantiles: the cost stays exact, the choice close to optimal, the programme small (M x M integers per bucket).
MAX_CANDIDATES = 1024
_UNREACHABLE = np.iinfo(np.int64).max // 4  # a cost no choice has; two of them still add up without overflow


def check_bucket_count(count, name: str = "shape_buckets") -> None:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"{name}={count!r}; pass a whole number of buckets >= 1")


def check_bucket_lengths(lengths, name: str = "bucket_lengths", unit: str = "samples") -> tuple[int, ...] | None:
    """None, or a non-empty list of whole numbers >= 1 -> those lengths, sorted, each once."""
    if lengths is None:
        return None
    if isinstance(lengths, (str, bytes)) or not isinstance(lengths, Iterable):
        raise TypeError(f"{name}={lengths!r}; pass a list of padded lengths in {unit}, or None")
    lengths = list(lengths)
    if not lengths:
        raise ValueError(f"{name}=[]; pass at least one padded length in {unit}, or None")
    bad = [v for v in lengths if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1]
    if bad:
        raise ValueError(f"{name}={lengths!r}: {bad[0]!r} is not a length; pass whole numbers of {unit} >= 1")
    return tuple(sorted({int(v) for v in lengths}))


def bucket_length(longest: int, buckets: Sequence[int] | None) -> int:
    """The smallest of the (sorted) `buckets` that holds `longest`; `longest` itself where none does (a batch longer
    than every bucket pads to its longest) or there are no buckets."""
    if not buckets:
        return longest
    i = bisect.bisect_left(buckets, longest)
    return buckets[i] if i < len(buckets) else longest


def choose_buckets(lengths: Iterable[int], count: int, multiple_of: int = 1, longest: int = 0) -> list[int]:
    """At most `count` bucket lengths, multiples of `multiple_of`, that cover every one of `lengths` (the largest is
    the longest, or `longest` where that is more: items that are not in the histogram but must fit, rounded up) and
    pad least: they minimise the sum over `lengths` of `bucket_length(l) - l`, the padding of each item padded to its
    own bucket (with length-grouped batches, close to a batch's). Exact: a dynamic programme over the distinct
    lengths rounded up to `multiple_of` (over `MAX_CANDIDATES` of them spread over the quantiles where there are
    more). Deterministic; fewer buckets where there are fewer distinct lengths."""
    check_bucket_count(count, "count")
    check_bucket_count(multiple_of, "multiple_of")
    lengths = np.sort(np.fromiter((int(v) for v in lengths), dtype=np.int64))
    if lengths.size == 0:
        raise ValueError("no lengths to choose buckets from; pass the lengths of the items the batches will hold")
    if lengths[0] < 1:
        raise ValueError(f"a length of {lengths[0]}; pass the items' lengths, each >= 1")
    rounded = -(-lengths // multiple_of) * multiple_of
    top = max(int(rounded[-1]), -(-int(longest) // multiple_of) * multiple_of)
    candidates = np.unique(np.append(rounded, top))
    if candidates.size > MAX_CANDIDATES:
        picks = np.linspace(0, rounded.size - 1, MAX_CANDIDATES).round().astype(np.int64)
        candidates = np.unique(np.append(rounded[picks], top))
    # a bucket c_j holds the lengths in (c_{j-1}, c_j]; a length rounds up to at most c_j exactly when it is <= c_j
    counts = np.concatenate([[0], np.searchsorted(lengths, candidates, side="right")])  # (M + 1,)
    sums = np.concatenate([[0], np.cumsum(lengths)])[counts]  # (M + 1,)
    m = candidates.size
    first = np.arange(m)[:, None]  # the group's first candidate (a), its bucket's candidate (j): (M, M) costs
    cost = candidates[None, :] * (counts[1:][None, :] - counts[first]) - (sums[1:][None, :] - sums[first])
    cost = np.where(first <= np.arange(m)[None, :], cost, _UNREACHABLE)
    best, choices = cost[0], []  # best[j]: least padding of the lengths <= c_j in k buckets, the last c_j
    for _ in range(min(count, m) - 1):
        total = best[:-1, None] + cost[1:]  # (M - 1, M): the previous k buckets end at c_{a-1}, the next is c_j
        previous = total.argmin(axis=0)  # a - 1
        best = np.minimum(total[previous, np.arange(m)], _UNREACHABLE)
        choices.append(previous)
    chosen, j = [int(candidates[-1])], m - 1
    for previous in reversed(choices):
        j = int(previous[j])
        chosen.append(int(candidates[j]))
    return sorted(chosen)


def padding_overhead(batches: Iterable[Sequence[int]], buckets: Sequence[int] | None) -> float:
    """The items each batch computes when padded to its bucket, over those padded to its longest, minus 1: what
    bucketing `batches` (each a sequence of item lengths) costs, 0.03 for 3% more."""
    longest = bucketed = 0
    for batch in batches:
        if len(batch):
            top = max(batch)
            longest += top * len(batch)
            bucketed += bucket_length(top, buckets) * len(batch)
    return bucketed / longest - 1 if longest else 0.0


@dataclass(frozen=True)
class ShapeBuckets:
    """The padded lengths of a model's batches: `audio` in samples at the model's rate (16 kHz), `text` in tokens
    (`<s>` and `</s>` included). None: that modality pads to its batch's longest. A batch longer than every bucket
    pads to its longest."""

    audio: tuple[int, ...] | None = None
    text: tuple[int, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "audio", check_bucket_lengths(self.audio, "shape_buckets['audio']", "16 kHz samples"))
        object.__setattr__(self, "text", check_bucket_lengths(self.text, "shape_buckets['text']", "tokens"))

    @classmethod
    def of(cls, value) -> ShapeBuckets:
        """A `ShapeBuckets`; a dict `{"audio": [...], "text": [...]}` (as saved); a list of audio lengths."""
        if isinstance(value, ShapeBuckets):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"audio", "text"})
            if unknown:
                raise ValueError(f"shape_buckets has keys {unknown}; pass {{'audio': [samples], 'text': [tokens]}}")
            return cls(value.get("audio"), value.get("text"))
        if isinstance(value, (list, tuple, np.ndarray)):
            return cls(audio=value)
        raise TypeError(
            f"shape_buckets={value!r}; pass {{'audio': [samples, ...], 'text': [tokens, ...]}}, a list of audio "
            "lengths in 16 kHz samples, or a ShapeBuckets"
        )

    def to_dict(self) -> dict:
        return {
            "audio": None if self.audio is None else list(self.audio),
            "text": None if self.text is None else list(self.text),
        }

    def describe(self, sampling_rate: int = 16_000) -> str:
        """`audio 2.10 4.02 12.00 s, text 16 32 64 tokens`: the buckets, for a log line."""
        parts = []
        if self.audio:
            parts.append("audio " + " ".join(f"{n / sampling_rate:.2f}" for n in self.audio) + " s")
        if self.text:
            parts.append("text " + " ".join(str(n) for n in self.text) + " tokens")
        return ", ".join(parts) or "none"


__all__ = [
    "AUDIO_MULTIPLE",
    "TEXT_MULTIPLE",
    "ShapeBuckets",
    "bucket_length",
    "check_bucket_count",
    "check_bucket_lengths",
    "choose_buckets",
    "padding_overhead",
]
